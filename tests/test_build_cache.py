"""The CPU kernel cache (cuptycho._build): what it loads, what it refuses, and how a compile ends.

Issue 11: a truncated cached library was a bus error on every run and an empty one a permanent
fallback to NumPy (item 5); a library planted in a shared cache folder was loaded and run (item 6);
SIGTERM during the first compile left the compiler running and a temporary file behind (item 9).

A real compile takes seconds to a minute, so most tests copy one good library into a temporary cache
and replace the compiler with a copy of that library (`fake_compiler`); the tests that need a real
compiler start one compile each (two builders share one compile through the build lock).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cuptycho import _build, backend
from cuptycho._build import KernelBuildError

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
posix_only = pytest.mark.skipif(os.name != "posix", reason="owner and mode checks are POSIX")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def good_library() -> bytes:
    """The bytes of a working CPU library (the one in the user's cache, built there if needed)."""
    ok, why = _build.cpu_available()
    if not ok:
        pytest.skip(f"the CPU kernels do not build here: {why}")
    return _build.cpu_library_path().read_bytes()


@pytest.fixture(scope="module")
def planted_library(tmp_path_factory) -> Path:
    """A shared library whose constructor writes the file named by $CPT_PLANTED_MARKER when it is loaded."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the planted library")
    folder = tmp_path_factory.mktemp("planted")
    src = folder / "planted.c"
    src.write_text('#include <stdio.h>\n#include <stdlib.h>\n'
                   '__attribute__((constructor)) static void planted(void) {\n'
                   '    const char *path = getenv("CPT_PLANTED_MARKER");\n'
                   '    FILE *fh = path ? fopen(path, "w") : NULL;\n'
                   '    if (fh) { fputs("ran", fh); fclose(fh); }\n}\n')
    out = folder / "planted.so"
    subprocess.run([cc, "-shared", "-fPIC", str(src), "-o", str(out)], check=True, capture_output=True)
    return out


@pytest.fixture
def marker(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "planted-code-ran"
    monkeypatch.setenv("CPT_PLANTED_MARKER", str(path))
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh cache folder (not created yet) made the kernel cache; cpu_library forgets its library around it."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("CUPTYCHO_CACHE_DIR", str(folder))
    _build.cpu_library.cache_clear()
    yield folder
    _build.cpu_library.cache_clear()


@pytest.fixture
def fake_compiler(monkeypatch, good_library) -> list[Path]:
    """The compiler replaced by a copy of the good library (created 0777 & ~umask, as the linker does);
    returns the list of outputs it wrote."""
    outputs = []

    def run(self, cmd):
        out = Path(cmd[cmd.index("-o") + 1])
        out.unlink(missing_ok=True)
        with open(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o777), "wb") as fh:
            fh.write(good_library)
        outputs.append(out)
        return 0, ""

    monkeypatch.setattr(_build._CompileGuard, "run", run)
    return outputs


def _plant(folder: Path, data: bytes, digest: str | None, folder_mode: int = 0o700) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, folder_mode)
    library = _build.cpu_library_path()
    assert library.parent == folder
    library.write_bytes(data)
    os.chmod(library, 0o700)
    if digest is not None:
        library.with_name(library.name + ".sha256").write_text(f"{digest}  {library.name}\n")
    return library


def _assert_healed(library: Path, good: bytes) -> None:
    assert library.read_bytes() == good
    assert _build.library_problem(library) == ""
    assert not list(library.parent.glob(".*.tmp")), list(library.parent.iterdir())


# --- item 5: a damaged library is rebuilt, never loaded ---------------------------------------------------

LOAD_WITH_FAKE_COMPILER = """
import sys
from pathlib import Path
from cuptycho import _build
good = Path(sys.argv[1]).read_bytes()
def run(self, cmd):                      # the compiler's output without compiling: the good library
    Path(cmd[cmd.index("-o") + 1]).write_bytes(good)
    return 0, ""
if hasattr(_build, "_CompileGuard"):
    _build._CompileGuard.run = run
print(_build.cpu_available())
"""


@pytest.mark.parametrize("damage", ["truncated, digest of the whole", "truncated, no digest", "empty, no digest"])
def test_damaged_library_is_rebuilt_not_loaded(damage, cache, good_library, tmp_path):
    """In a subprocess: loading a truncated library was a bus error (exit -7) that took the process down."""
    data = b"" if damage.startswith("empty") else good_library[: len(good_library) // 2]
    digest = _sha256(good_library) if "whole" in damage else None
    library = _plant(cache, data, digest)
    good = tmp_path / "good.so"
    good.write_bytes(good_library)
    run = subprocess.run([sys.executable, "-c", LOAD_WITH_FAKE_COMPILER, str(good)], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "CUPTYCHO_CACHE_DIR": str(cache)})
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    assert run.stdout.strip() == "(True, '')", run.stdout + run.stderr
    assert "rebuilt the CPU kernel library" in run.stderr, run.stderr
    _assert_healed(library, good_library)


def test_empty_library_heals_instead_of_falling_back_to_numpy(cache, good_library, fake_compiler):
    """An empty library made the cpu backend unavailable for good ('file too short'); now it is rebuilt."""
    library = _plant(cache, b"", None)
    with pytest.warns(RuntimeWarning, match="rebuilt the CPU kernel library"):
        assert backend.resolve("cpu") == "cpu"
    assert fake_compiler == [fake_compiler[0]] and fake_compiler[0].parent == cache
    _assert_healed(library, good_library)


@pytest.mark.parametrize("digest_line", ["{hex}  {name}", "{hex} *{name}", "{hex}"])
def test_intact_library_is_loaded_without_a_build(digest_line, cache, good_library, fake_compiler):
    """sha256sum's text and binary lines, and a bare digest (the name is optional in that format)."""
    library = _plant(cache, good_library, None)
    line = digest_line.format(hex=_sha256(good_library), name=library.name)
    library.with_name(library.name + ".sha256").write_text(line + "\n")
    assert _build.cpu_available() == (True, "")
    assert fake_compiler == []
    assert library.read_bytes() == good_library


def test_library_that_loads_badly_is_one_clear_error(cache, fake_compiler):
    """A library that passes its checks but that the loader rejects: KernelBuildError naming the file."""
    library = _plant(cache, b"not an ELF file", _sha256(b"not an ELF file"))
    ok, why = _build.cpu_available()
    assert not ok
    assert why.startswith(f"cannot load the CPU kernel library {library}:"), why
    assert fake_compiler == []


def test_compiler_failure_is_one_clear_error(cache, tmp_path, monkeypatch):
    """The compiler's exit status and log, and the library it was building, in one KernelBuildError."""
    fake = tmp_path / "bin" / "broken-c++"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'broken-c++: error: no kernels today' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    with pytest.raises(KernelBuildError) as info:
        _build.cpu_library()
    message = str(info.value)
    assert f"compiling the CPU kernels into {_build.cpu_library_path()} failed" in message, message
    assert "no kernels today" in message, message
    with pytest.raises(ValueError, match="backend 'cpu' is not available: compiling the CPU kernels"):
        backend.resolve("cpu")
    assert not list(cache.glob("kernels-*")) and not list(cache.glob(".*.tmp")), list(cache.iterdir())


# --- item 6: nothing another user could have written is loaded --------------------------------------------

@posix_only
def test_library_planted_in_a_shared_folder_is_refused(cache, planted_library, marker):
    """A world-writable cache folder (what `umask 000` made) and a planted library with a matching digest."""
    data = planted_library.read_bytes()
    _plant(cache, data, _sha256(data), folder_mode=0o777)
    ok, why = _build.cpu_available()
    assert not ok
    assert why.startswith(f"refusing the kernel cache folder {cache}: group or others can write to it"), why
    assert f"chmod 700 {cache}" in why and "CUPTYCHO_CACHE_DIR" in why, why
    assert not marker.exists(), "the planted library was loaded and its code ran"
    with pytest.raises(ValueError, match="refusing the kernel cache folder"):
        backend.resolve("cpu")
    if not backend.gpu_status()[0]:              # auto falls back to NumPy, saying why and how to fix it
        with pytest.warns(RuntimeWarning, match=f"refusing the kernel cache folder {cache}.*chmod 700"):
            assert backend.resolve("auto") == "numpy"
    assert not marker.exists()


@posix_only
def test_folder_of_another_user_is_refused(cache, planted_library, marker, monkeypatch):
    data = planted_library.read_bytes()
    _plant(cache, data, _sha256(data))
    me = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: me + 1)          # the folder (and library) now belong to someone else
    with pytest.raises(KernelBuildError) as info:
        _build.cpu_library()
    message = str(info.value)
    assert message.startswith(f"refusing the kernel cache folder {cache}: it belongs to uid {me}, not to you"), message
    assert "CUPTYCHO_CACHE_DIR" in message
    assert not marker.exists(), "the planted library was loaded and its code ran"


@posix_only
@pytest.mark.parametrize("planted", ["no digest", "another user's file", "group-writable file"])
def test_library_planted_in_a_private_folder_is_rebuilt(planted, cache, planted_library, marker, good_library,
                                                        fake_compiler):
    data = planted_library.read_bytes()
    library = _plant(cache, data, None if planted == "no digest" else _sha256(data))
    if planted == "another user's file":
        if not IS_ROOT:
            pytest.skip("giving the file to another user needs root")
        os.chown(library, os.getuid() + 1, -1)
    elif planted == "group-writable file":
        os.chmod(library, 0o777)
    with pytest.warns(RuntimeWarning, match="rebuilt the CPU kernel library"):
        assert _build.cpu_available() == (True, "")
    assert not marker.exists(), "the planted library was loaded and its code ran"
    assert len(fake_compiler) == 1
    _assert_healed(library, good_library)
    st = library.stat()
    assert st.st_uid == os.getuid() and not st.st_mode & 0o022, oct(st.st_mode)


@posix_only
@pytest.mark.parametrize("digest_file", ["names another library", "writable by others", "a symlink"])
def test_digest_file_that_cannot_be_trusted_means_a_rebuild(digest_file, cache, good_library, fake_compiler):
    """The digest vouches for the library only if it is this user's and names this library (a digest
    renamed from another library's would vouch for a library renamed from it)."""
    library = _plant(cache, good_library, _sha256(good_library))
    digest = library.with_name(library.name + ".sha256")
    if digest_file == "names another library":
        digest.write_text(f"{_sha256(good_library)}  kernels-0123456789abcdef01234567.so\n")
    elif digest_file == "writable by others":
        os.chmod(digest, 0o666)
    else:
        real = cache / "elsewhere.sha256"
        digest.rename(real)
        digest.symlink_to(real)
    with pytest.warns(RuntimeWarning, match=f"rebuilt the CPU kernel library .*{digest.name}"):
        assert _build.cpu_available() == (True, "")
    assert len(fake_compiler) == 1
    _assert_healed(library, good_library)


@posix_only
def test_cache_and_files_are_private_under_umask_000(cache, good_library, fake_compiler):
    previous = os.umask(0)
    try:
        assert _build.cpu_available() == (True, "")
    finally:
        os.umask(previous)
    library = _build.cpu_library_path()
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    for path in (library, _build.digest_path(library)):
        assert not path.stat().st_mode & 0o077, f"{path.name}: {stat.S_IMODE(path.stat().st_mode):04o}"
    _assert_healed(library, good_library)


def test_stale_temporary_files_are_removed_by_the_next_build(cache, fake_compiler):
    cache.mkdir(mode=0o700)
    name = _build.cpu_library_path().name
    stale, fresh = cache / f".{name}.stale.tmp", cache / f".{name}.inflight.tmp"
    for path in (stale, fresh):
        path.write_bytes(b"half a library")
    hours_ago = time.time() - 2 * _build.STALE_TEMPORARY_S
    os.utime(stale, (hours_ago, hours_ago))
    assert _build.cpu_available() == (True, "")
    assert not stale.exists()
    assert fresh.exists(), "a recent temporary file may be another process's build in progress"


def test_digest_file_checks_with_sha256sum(cache, fake_compiler):
    """The digest is in `sha256sum` format, so `sha256sum -c` in the cache folder verifies the library."""
    assert _build.cpu_available() == (True, "")
    library = _build.cpu_library_path()
    assert _build.digest_path(library).read_text() == f"{_sha256(library.read_bytes())}  {library.name}\n"
    if shutil.which("sha256sum"):
        subprocess.run(["sha256sum", "--quiet", "-c", _build.digest_path(library).name], cwd=cache, check=True)


# --- real compiles: concurrent builders, and a signal during the compile (item 9) --------------------------

def _need_a_compiler():
    try:
        _build.compiler()
    except KernelBuildError as err:
        pytest.skip(str(err))


BUILD_UNDER_UMASK_000 = "import os, sys; os.umask(0); from cuptycho import _build; sys.exit(_build.main())"


@posix_only
def test_two_builders_at_once_both_get_a_valid_private_library(tmp_path):
    """Two processes start the first build together under `umask 000`: both end with the same valid library,
    the folder is 0700 and nothing in it is writable by others (it was all 0777)."""
    _need_a_compiler()
    cache = tmp_path / "shared" / "cache"
    env = {**os.environ, "CUPTYCHO_CACHE_DIR": str(cache)}
    procs = [subprocess.Popen([sys.executable, "-c", BUILD_UNDER_UMASK_000], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err
    (library,) = {Path(out.strip()) for out, _ in outs}
    assert library.parent == cache
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    for path in cache.iterdir():
        assert not path.stat().st_mode & 0o022, f"{path.name}: {stat.S_IMODE(path.stat().st_mode):04o}"
    assert _build.library_problem(library) == ""
    assert not list(cache.glob(".*.tmp"))


def _processes() -> dict[int, tuple[str, str, int, int]]:
    """pid -> (name, state, parent pid, process group) of every process, from /proc."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1: text.rindex(")")]
        state, ppid, pgrp = text[text.rindex(")") + 2:].split()[:3]
        out[int(entry)] = (name, state, int(ppid), int(pgrp))
    return out


def _descendants(pid: int, table) -> set[int]:
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, (_, _, ppid, _) in table.items() if ppid in frontier} - found
        found |= frontier
    return found


COMPILE_THEN_WAIT = """
import signal, sys
signal.signal(signal.SIGTERM, signal.SIG_DFL)
signal.signal(signal.SIGINT, signal.default_int_handler)   # as in an interactive Python (not ignored)
from cuptycho import _build
_build.cpu_library()
print("built")
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_the_compile_ends_the_compiler_and_leaves_no_temporary(signum, tmp_path):
    """The signal comes while cc1plus runs: the Python process ends with the usual status (killed by the
    signal), no process of the compile survives it, and the cache holds no temporary file."""
    _need_a_compiler()
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", COMPILE_THEN_WAIT], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "CUPTYCHO_CACHE_DIR": str(cache)})
    compile_pids, deadline = set(), time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        table = _processes()
        compile_pids = _descendants(proc.pid, table)
        if any(table[p][0].startswith("cc1") for p in compile_pids if p in table):
            break
        time.sleep(0.02)
    else:
        proc.kill()
        pytest.fail(f"no cc1/cc1plus started under the build (exit {proc.poll()}): {proc.communicate()}")
    assert list(cache.glob(".*.tmp")), "the build writes to a temporary file in the cache"
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signum, f"exit {proc.returncode}\n{out}\n{err}"
    names = {p: table[p][0] for p in compile_pids if p in table}
    groups = {table[p][3] for p in compile_pids if p in table} - {os.getpgrp()}
    survivors = {}
    for _ in range(10):                           # the build ended them before exiting: a short grace only
        now = _processes()
        survivors = {p: now[p] for p in now if now[p][1] != "Z"
                     and ((p in names and now[p][0] == names[p]) or now[p][3] in groups)}
        if not survivors:
            break
        time.sleep(0.05)
    assert not survivors, f"compiler processes outlived the build: {survivors}"
    assert not list(cache.glob(".*.tmp")), list(cache.iterdir())
