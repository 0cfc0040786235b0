"""Find, compile and cache the kernels in kernels/*.cu for the CPU (host C++ with OpenMP) and the GPU (NVRTC).

CPU: every .cu file is compiled as C++ into one shared library, cached under the user cache
directory as ``kernels-<digest>.so`` where the digest covers all kernel sources, the flags, the
compiler's version and the CPU (the build uses -march=native). A library is loaded into the process
and run, so the cache is guarded (`cpu_library`):

- the folder is created 0700, and one that belongs to another user or that group/others can write
  to is refused (KernelBuildError naming the folder and the fix);
- the library's sha256 is stored beside it (``kernels-<digest>.so.sha256``, ``sha256sum -c`` format)
  and checked before every load: a library without it, not matching it (truncated, empty, replaced),
  not a regular file, not this user's or writable by others is rebuilt, never loaded;
- the library and its digest are each written to a temporary file and renamed into place, one
  builder at a time per library (a lock file where flock works), so concurrent processes never load
  a half-written file; a crash's stray temporary files are removed by a later build;
- the compiler runs in its own process group with a parent-death signal, and SIGINT / SIGTERM / SIGHUP
  during the compile end the compiler and remove the temporary file before the process ends.

GPU: one CuPy RawModule per .cu file, compiled by NVRTC with `nvrtc_options()`. CuPy keys its
disk cache on the source text and the options only, not on headers pulled in with -I, so the
options carry -DCPT_SRC_DIGEST=<digest of all sources>: an edit to common.cuh recompiles.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

from .atomic import atomic_path

CXXFLAGS = ("-x", "c++", "-std=c++17", "-O3", "-march=native", "-fno-math-errno", "-fopenmp", "-fPIC", "-shared")


class KernelBuildError(RuntimeError):
    """The host compiler or NVRTC rejected the kernel sources (the message carries its log)."""


def kernel_dir() -> Path:
    """$CUPTYCHO_KERNEL_DIR, else the copy packaged in the wheel, else <repository>/kernels."""
    env = os.environ.get("CUPTYCHO_KERNEL_DIR")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parent
    candidates += [here / "_kernels", here.parent / "kernels"]
    for path in candidates:
        if (path / "common.cuh").is_file():
            return path
    raise KernelBuildError(f"kernel sources not found in {[str(c) for c in candidates]}")


def sources() -> list[Path]:
    """The kernel translation units, one per concern, sorted by name."""
    return sorted(kernel_dir().glob("*.cu"))


@functools.cache
def source_digest() -> str:
    """sha256 over the names and contents of every kernels/*.cu and *.cuh file."""
    h = hashlib.sha256()
    paths = [*kernel_dir().glob("*.cu"), *kernel_dir().glob("*.cuh")]
    for path in sorted(paths):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def compiler() -> str:
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        raise KernelBuildError(f"no C++ compiler: {cxx!r} is not on PATH (set CXX to one)")
    return cxx


@functools.cache
def _compiler_version(cxx: str) -> str:
    return subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout


def _cpu_fingerprint() -> str:
    """The CPU features -march=native sees, so a cache shared between machines never mixes builds."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return platform.machine() + flags


def cache_dir() -> Path:
    base = os.environ.get("CUPTYCHO_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cuptycho")
    return Path(base)


def cpu_library_path() -> Path:
    cxx = compiler()
    key = hashlib.sha256("\0".join([source_digest(), " ".join(CXXFLAGS), _compiler_version(cxx),
                                    _cpu_fingerprint()]).encode()).hexdigest()[:24]
    return cache_dir() / f"kernels-{key}.so"


def digest_path(library: Path) -> Path:
    """Where the sha256 of `library` is kept: beside it, ``<name>.sha256``."""
    return library.with_name(library.name + ".sha256")


STALE_TEMPORARY_S = 3600    # a compile takes a minute at most: an older temporary file is a crash's leftover
_MISSING = "it does not exist"


def private_cache_folder(folder: Path) -> Path:
    """`folder`, created 0700 when missing, after checking that no other user can write into it.

    The library in it is loaded into the process and run, and its name is predictable, so a folder
    another user can write to (or owns) lets them plant code. Such a folder is refused with an error
    that says how to fix it, rather than swapped for another private folder: a silent move would hide
    the misconfiguration (a lab-wide CUPTYCHO_CACHE_DIR, a folder made 0777 under `umask 000` by an
    older cuptycho) and would either recompile in every process (a temporary folder) or need a second
    location with the same questions; the fix is one command.
    """
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(folder, 0o700)
            os.chmod(folder, 0o700)              # mkdir's mode passes through the umask
        except FileExistsError:
            pass
        st = os.stat(folder)
    except OSError as err:
        raise KernelBuildError(f"cannot create the kernel cache folder {folder}: {err.strerror or err} "
                               "(set CUPTYCHO_CACHE_DIR to a folder you can write)") from err
    if not stat.S_ISDIR(st.st_mode):
        raise KernelBuildError(f"the kernel cache folder {folder} is not a folder "
                               "(remove it or set CUPTYCHO_CACHE_DIR to another folder)")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise KernelBuildError(
            f"refusing the kernel cache folder {folder}: it belongs to uid {st.st_uid}, not to you "
            f"(uid {os.getuid()}), and cuptycho loads and runs the library in it; set CUPTYCHO_CACHE_DIR "
            "to a folder of your own")
    if os.name == "posix" and st.st_mode & 0o022:
        raise KernelBuildError(
            f"refusing the kernel cache folder {folder}: group or others can write to it "
            f"(mode {stat.S_IMODE(st.st_mode):04o}), so they could plant the library cuptycho loads and "
            f"runs; run `chmod 700 {folder}` or set CUPTYCHO_CACHE_DIR to a private folder")
    return folder


def _sha256_of(fh) -> str:
    h = hashlib.sha256()
    for block in iter(lambda: fh.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()


def _not_private(st: os.stat_result) -> str:
    """"" when the file of `st` is this user's and no one else can write it, else why not."""
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"it belongs to uid {st.st_uid}, not to you (uid {os.getuid()})"
    if os.name == "posix" and st.st_mode & 0o022:
        return f"group or others can write to it (mode {stat.S_IMODE(st.st_mode):04o})"
    return ""


def _read_digest(library: Path) -> tuple[str, str]:
    """(the sha256 recorded for `library`, "") or ("", what is wrong with its digest file)."""
    path = digest_path(library)
    try:
        with open(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb") as fh:
            problem = _not_private(os.fstat(fh.fileno()))
            fields = fh.read(4096).decode("ascii", errors="replace").split()
    except OSError as err:
        return "", f"its digest file {path.name} cannot be read ({err.strerror or err})"
    if problem:
        return "", f"its digest file {path.name}: {problem}"
    # `<hex>  <name>` as sha256sum writes it (and as compile_cpu does): the name stops a digest file renamed
    # from another library; a bare `<hex>` is accepted too (the name is optional in that format)
    named = fields[1:] in ([], [library.name], ["*" + library.name])
    if not 1 <= len(fields) <= 2 or len(fields[0]) != 64 or not named:
        return "", f"its digest file {path.name} is not `<sha256>  {library.name}`"
    return fields[0].lower(), ""


def library_problem(library: Path) -> str:
    """"" when `library` may be loaded, else what is wrong with it (`_MISSING` when it does not exist).

    May be loaded: a regular file of this user's that no one else can write, whose sha256 is the one in
    its digest file (also this user's). The digest catches corruption (a truncated library is a bus error
    on load, an empty one an OSError); the owner and mode checks, with the folder's, keep other users'
    files out (whoever can write the folder could write a matching digest too).
    """
    try:
        fd = os.open(library, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return _MISSING
    except OSError as err:
        return f"it cannot be opened ({err.strerror or err})"
    with open(fd, "rb") as fh:                   # hash the very file whose owner and mode were checked
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return "it is not a regular file"
        problem = _not_private(st)
        if problem:
            return problem
        expected, problem = _read_digest(library)
        if problem:
            return problem
        actual = _sha256_of(fh)
    if actual != expected:
        return (f"its sha256 {actual[:16]}... is not the {expected[:16]}... recorded in "
                f"{digest_path(library).name} ({st.st_size} bytes: truncated or replaced)")
    return ""


@contextlib.contextmanager
def _build_lock(library: Path):
    """One builder of `library` at a time: a second process waits here, then finds the first one's build.

    Where flock is missing or fails (some network file systems) builds run side by side, which is still
    safe: each writes its own temporary files and renames them into place, the last rename wins.
    """
    try:
        import fcntl
    except ImportError:                          # not POSIX
        yield
        return
    try:
        fd = os.open(library.with_name(f".{library.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)       # released by the kernel if this process dies
        yield
    finally:
        os.close(fd)


def _remove_stale_temporaries(folder: Path) -> None:
    """Delete leftover temporary files of killed builds (``.kernels-*.tmp`` older than an hour)."""
    now = time.time()
    for tmp in folder.glob(".kernels-*.tmp"):
        with contextlib.suppress(OSError):
            if now - tmp.lstat().st_mtime > STALE_TEMPORARY_S:
                tmp.unlink()


class _Interrupted(BaseException):
    """A signal ended the compile (BaseException: no `except Exception` on the way may swallow it)."""


def _linux_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl   # resolved here: the child only calls it
    except (OSError, AttributeError):
        return None


def _compiler_preexec():
    """Child setup: its own process group, so one killpg reaches the driver and its cc1plus, as and ld;
    on Linux also a parent-death signal, so it ends with a Python killed by SIGKILL (which no handler sees)."""
    if os.name != "posix":
        return None
    prctl, parent = _linux_prctl(), os.getpid()
    pr_set_pdeathsig = 1

    def preexec():
        os.setpgid(0, 0)
        if prctl is not None:
            prctl(pr_set_pdeathsig, int(signal.SIGTERM))   # SIGTERM: gcc's driver deletes its temporaries
            if os.getppid() != parent:                     # the parent died before prctl took effect
                os._exit(1)

    return preexec


def _signal_compiler(proc: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signum)          # the group is the driver's pid (setpgid in the child)
        else:
            proc.kill()


def _end_compiler(proc: subprocess.Popen) -> None:
    """Stop the compiler's whole group: SIGTERM (gcc cleans up), SIGKILL for what is left after 5 s."""
    if proc.returncode is None:
        _signal_compiler(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    if hasattr(signal, "SIGKILL"):
        _signal_compiler(proc, signal.SIGKILL)   # stragglers of the group; no-op when it is empty
    proc.wait()


class _CompileGuard:
    """While active (in the main thread), a signal whose action is to end the process (SIGTERM, SIGHUP,
    SIGINT without Python's handler) ends the compiler first: the handler kills the compiler's group and
    the compile unwinds, deleting its temporary file; on exit the signal is sent again with its default
    action, so the process ends with the usual status. Signals with a Python handler (KeyboardInterrupt,
    cuptycho.run's stop-after-this-epoch) are left alone: an exception they raise ends the compiler too.
    """

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, name))

    def __init__(self):
        self.previous: dict[int, object] = {}
        self.proc: subprocess.Popen | None = None
        self.received: int | None = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                if signal.getsignal(signum) == signal.SIG_DFL:
                    self.previous[signum] = signal.signal(signum, self._handler)
        return self

    def _handler(self, signum, frame):
        # no exception from here: it would land at an arbitrary line; the compile checks `received`
        self.received = signum
        if self.proc is not None:
            _signal_compiler(self.proc, signal.SIGTERM)

    def run(self, cmd: list[str]) -> tuple[int, str]:
        """Run the compiler; (exit status, its output). Raises _Interrupted when a signal stopped it."""
        if self.received is not None:
            raise _Interrupted(self.received)
        with tempfile.TemporaryFile() as log:    # not a pipe: nothing to drain when it is killed
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    preexec_fn=_compiler_preexec())
            self.proc = proc
            try:
                if self.received is not None:    # came between the check above and self.proc
                    _signal_compiler(proc, signal.SIGTERM)
                proc.wait()
            finally:
                self.proc = None
                if proc.returncode is None or self.received is not None:
                    _end_compiler(proc)
            if self.received is not None:
                raise _Interrupted(self.received)
            log.seek(0)
            return proc.returncode, log.read().decode(errors="replace")

    def __exit__(self, kind, err, tb):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        if self.received is not None:
            signal.raise_signal(self.received)   # default action: the process ends here
            raise KernelBuildError(f"compiling the CPU kernels was interrupted by signal {self.received}")
        return False


def compile_cpu(output: Path) -> None:
    """Compile every kernel source into the shared library `output`, then write its digest beside it.

    Both are written to temporary files and renamed into place (library first), so a reader never
    sees a half-written file, and a library whose digest is not there yet is simply not loaded.
    """
    cxx = compiler()
    folder = private_cache_folder(output.parent)
    _remove_stale_temporaries(folder)
    try:
        with _CompileGuard() as guard:
            with atomic_path(output, overwrite=True) as tmp:   # concurrent builds: the last rename wins
                cmd = [cxx, *CXXFLAGS, f"-I{kernel_dir()}", *map(str, sources()), "-o", str(tmp)]
                returncode, log = guard.run(cmd)
                if returncode != 0:
                    raise KernelBuildError(f"compiling the CPU kernels into {output} failed:\n{' '.join(cmd)}\n{log}")
                os.chmod(tmp, 0o700)     # the linker makes it 0777 & ~umask: never writable by others
                with open(tmp, "rb") as fh:
                    digest = _sha256_of(fh)
            with atomic_path(digest_path(output), overwrite=True) as tmp:
                tmp.write_text(f"{digest}  {output.name}\n")
                os.chmod(tmp, 0o600)
    except OSError as err:                       # a full disk, a read-only cache, a compiler that cannot start
        raise KernelBuildError(f"building the CPU kernel library {output} failed: {err}") from err


def ensure_cpu_library() -> Path:
    """The path of a CPU library that passes `library_problem`, (re)building it when needed.

    A library that exists but fails the check is rebuilt with a warning (it was truncated, replaced or
    left by another user), so a damaged cache heals instead of crashing or falling back to NumPy.
    """
    path = cpu_library_path()
    private_cache_folder(path.parent)
    if not library_problem(path):
        return path
    with _build_lock(path):
        problem = library_problem(path)          # another process may have built it while we waited
        if problem:
            compile_cpu(path)
            rebuilt_because, problem = problem, library_problem(path)
            if problem:
                raise KernelBuildError(f"the CPU kernel library {path} fails its check right after the build: "
                                       f"{problem}")
            if rebuilt_because != _MISSING:      # said after healing: a warning turned into an error cannot stop it
                warnings.warn(f"cuptycho: rebuilt the CPU kernel library {path}: the cached copy was not loaded, "
                              f"{rebuilt_because}", RuntimeWarning, stacklevel=3)
    return path


@functools.cache
def cpu_library() -> ctypes.CDLL:
    """The CPU build of all kernels, compiled on first use and cached on disk (checked before each load).

    Unless the user chose otherwise, OpenMP's idle threads sleep instead of spinning: the kernels
    alternate with FFTW's own threads, and spinning OpenMP workers starved them (measured: the FFT
    stage of a gradient step ran 2x slower, and 10x with many small chunks, on 2 cores). libgomp
    reads the setting when it loads, which is here unless another module loaded it first.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    path = ensure_cpu_library()
    try:
        return ctypes.CDLL(str(path))
    except OSError as err:
        raise KernelBuildError(f"cannot load the CPU kernel library {path}: {err}") from err


def cpu_available() -> tuple[bool, str]:
    """(True, "") when the CPU kernels load, else (False, why)."""
    try:
        cpu_library()
        return True, ""
    except (KernelBuildError, OSError) as err:
        return False, str(err)


def nvrtc_options() -> tuple[str, ...]:
    """NVRTC options of the cuda backend (the architecture is added by CuPy or by the CI compile test)."""
    return ("-std=c++17", f"-I{kernel_dir()}", f"-DCPT_SRC_DIGEST={source_digest()[:16]}")


def line_directive(path) -> str:
    """`#line 1 "<path>"` with forward slashes: a Windows path's backslashes would be escape sequences
    (NVRTC rejects ``\\U`` in ``C:\\Users``)."""
    return f'#line 1 "{os.fspath(path).replace(chr(92), "/")}"\n'


def source_text(path: Path) -> str:
    """Kernel source with a #line directive so compiler messages name the real file."""
    return line_directive(path) + path.read_text()


@functools.cache
def cuda_module(concern: str, device_id: int):
    """The CuPy RawModule of kernels/<concern>.cu on device `device_id` (compiled lazily by CuPy)."""
    import cupy

    with cupy.cuda.Device(device_id):
        return cupy.RawModule(code=source_text(kernel_dir() / f"{concern}.cu"), options=nvrtc_options())


def main(argv=None) -> int:
    """`python -m cuptycho._build`: compile the CPU kernels now and print where the library is."""
    print(ensure_cpu_library())
    return 0


if __name__ == "__main__":
    sys.exit(main())
