"""Find, compile and cache the kernels in kernels/*.cu for the CPU (host C++ with OpenMP) and the GPU (NVRTC).

CPU: every .cu file is compiled as C++ into one shared library, cached under the user cache
directory as ``kernels-<digest>.so`` where the digest covers all kernel sources, the flags, the
compiler's version and the CPU (the build uses -march=native). The library is written to a
temporary file and renamed into place, so concurrent processes never load a half-written file.

GPU: one CuPy RawModule per .cu file, compiled by NVRTC with `nvrtc_options()`. CuPy keys its
disk cache on the source text and the options only, not on headers pulled in with -I, so the
options carry -DCPT_SRC_DIGEST=<digest of all sources>: an edit to common.cuh recompiles.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
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


def compile_cpu(output: Path) -> None:
    """Compile every kernel source into the shared library `output` (atomically)."""
    cxx = compiler()
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output, overwrite=True) as tmp:       # concurrent builds: the last rename wins
        cmd = [cxx, *CXXFLAGS, f"-I{kernel_dir()}", *map(str, sources()), "-o", str(tmp)]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            raise KernelBuildError(f"compiling the CPU kernels failed:\n{' '.join(cmd)}\n{run.stderr}")


@functools.cache
def cpu_library() -> ctypes.CDLL:
    """The CPU build of all kernels, compiled on first use and cached on disk.

    Unless the user chose otherwise, OpenMP's idle threads sleep instead of spinning: the kernels
    alternate with FFTW's own threads, and spinning OpenMP workers starved them (measured: the FFT
    stage of a gradient step ran 2x slower, and 10x with many small chunks, on 2 cores). libgomp
    reads the setting when it loads, which is here unless another module loaded it first.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    path = cpu_library_path()
    if not path.exists():
        compile_cpu(path)
    return ctypes.CDLL(str(path))


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


def source_text(path: Path) -> str:
    """Kernel source with a #line directive so compiler messages name the real file."""
    return f'#line 1 "{path}"\n' + path.read_text()


@functools.cache
def cuda_module(concern: str, device_id: int):
    """The CuPy RawModule of kernels/<concern>.cu on device `device_id` (compiled lazily by CuPy)."""
    import cupy

    with cupy.cuda.Device(device_id):
        return cupy.RawModule(code=source_text(kernel_dir() / f"{concern}.cu"), options=nvrtc_options())


def main(argv=None) -> int:
    """`python -m cuptycho._build`: compile the CPU kernels now and print where the library is."""
    path = cpu_library_path()
    if not path.exists():
        compile_cpu(path)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
