"""Compile kernels/*.cu with NVRTC directly, without CuPy and without a GPU.

The cuda backend compiles each kernel file through ``cupy.RawModule``, but CuPy's compile path
asks the device for its architecture, so it cannot run on a machine without a GPU (CI, the
development machines). NVRTC itself needs no device. This module drives it through
``cuda.bindings.nvrtc`` (the ``cuda-bindings`` package) with the same program text
(`_build.source_text`) and the same options (`_build.nvrtc_options`) as the cuda backend, plus
an explicit ``--gpu-architecture``. CI uses it to prove that every kernel compiles under NVRTC
(tests/test_nvrtc.py); install it with ``pip install 'cuptycho[nvrtc]'``.

Finding libnvrtc: cuda-bindings does not link NVRTC; on first use it loads the shared library
through ``cuda.pathfinder``, which looks first in the ``nvidia-cuda-nvrtc-cu12`` wheel in
site-packages, then in a conda environment, then wherever the system loader finds it, then
under $CUDA_HOME / $CUDA_PATH. No GPU, driver or CUDA toolkit is needed.

cuda.bindings conventions: every call returns a tuple whose first item is an ``nvrtcResult``
and whose other items are the outputs (``nvrtcCompileProgram`` returns ``(result,)``); output
buffers are preallocated ``bytes`` of the size the matching ``...Size`` call reported,
including the terminating NUL.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from cuptycho import _build
from cuptycho._build import KernelBuildError

_ENTRY = re.compile(r"^\s*(?:\.visible\s+|\.weak\s+)?\.entry\s+([A-Za-z_$][\w$]*)", re.MULTILINE)


def _nvrtc():
    from cuda.bindings import nvrtc  # deferred: an optional dependency (the nvrtc extra)

    return nvrtc


def available() -> tuple[bool, str]:
    """(True, "") when NVRTC can be loaded and called here, else (False, why)."""
    try:
        nvrtc = _nvrtc()
    except ImportError as err:
        return False, f"cuda-bindings is not installed (pip install 'cuptycho[nvrtc]'): {err}"
    try:
        result, _major, _minor = nvrtc.nvrtcVersion()
    except Exception as err:  # cuda.pathfinder.DynamicLibNotFoundError, or RuntimeError from dlopen
        return False, (f"libnvrtc could not be loaded ({type(err).__name__}: {err}); "
                       "install nvidia-cuda-nvrtc-cu12 (pip install 'cuptycho[nvrtc]')")
    if result != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        return False, f"nvrtcVersion failed: {result!r}"
    return True, ""


def version() -> tuple[int, int]:
    """(major, minor) of the libnvrtc that was loaded."""
    major, minor = _check(_nvrtc().nvrtcVersion(), "nvrtcVersion")
    return int(major), int(minor)


def library_path() -> str:
    """Absolute path of the libnvrtc that cuda-bindings loads (as located by cuda.pathfinder)."""
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib
    except ImportError:  # cuda-bindings < 12.9.1 located the library itself
        return "unknown (cuda.pathfinder is not installed)"
    return load_nvidia_dynamic_lib("nvrtc").abs_path


def _check(ret, what: str, prog=None, context: str = ""):
    """Raise KernelBuildError unless `ret`'s result is NVRTC_SUCCESS; return its outputs."""
    nvrtc = _nvrtc()
    result, *outputs = ret
    if result != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        log = _log(prog) if prog is not None else ""
        _, name = nvrtc.nvrtcGetErrorString(result)
        name = name.decode() if isinstance(name, bytes) else str(name)
        raise KernelBuildError(f"{what} failed ({name}){context}" + (f":\n{log}" if log else ""))
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


def _log(prog) -> str:
    nvrtc = _nvrtc()
    result, size = nvrtc.nvrtcGetProgramLogSize(prog)
    if result != nvrtc.nvrtcResult.NVRTC_SUCCESS or size <= 1:
        return ""
    buf = b" " * size
    (result,) = nvrtc.nvrtcGetProgramLog(prog, buf)
    return buf.rstrip(b"\0").decode(errors="replace").strip()


def options(arch: str) -> list[str]:
    """The options compile_ptx passes: the cuda backend's, plus the target architecture."""
    return [*_build.nvrtc_options(), f"--gpu-architecture={arch}"]


def _compile(source_path, arch: str, want_cubin: bool) -> tuple[bytes, bytes | None]:
    path = Path(source_path)
    return _compile_text(_build.source_text(path), str(path), options(arch), want_cubin)


def _compile_text(text: str, name: str, opts: list[str], want_cubin: bool) -> tuple[bytes, bytes | None]:
    ok, why = available()
    if not ok:
        raise KernelBuildError(f"NVRTC is not available: {why}")
    nvrtc = _nvrtc()
    context = f" for {name} (options {' '.join(opts)})"
    prog = _check(nvrtc.nvrtcCreateProgram(text.encode(), name.encode(), 0, [], []),
                  "nvrtcCreateProgram", context=context)
    try:
        _check(nvrtc.nvrtcCompileProgram(prog, len(opts), [o.encode() for o in opts]),
               "NVRTC compilation", prog, context)
        size = _check(nvrtc.nvrtcGetPTXSize(prog), "nvrtcGetPTXSize", prog, context)
        ptx = b" " * size
        _check(nvrtc.nvrtcGetPTX(prog, ptx), "nvrtcGetPTX", prog, context)
        cubin = None
        if want_cubin:
            size = _check(nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize", prog, context)
            if size == 0:  # a virtual architecture (compute_XX) produces PTX only
                raise KernelBuildError(f"no cubin{context}: pass a real architecture (sm_XX)")
            cubin = b" " * size
            _check(nvrtc.nvrtcGetCUBIN(prog, cubin), "nvrtcGetCUBIN", prog, context)
        return ptx.rstrip(b"\0"), cubin
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def compile_ptx_text(text: str, name: str, opts, arch: str = "sm_90") -> bytes:
    """PTX of a program given as text (what ``cupy.RawModule(code=...)`` compiles), with options `opts`
    plus ``--gpu-architecture=arch``; `name` names it in the compiler log."""
    return _compile_text(text, name, [*opts, f"--gpu-architecture={arch}"], want_cubin=False)[0]


def compile_ptx(source_path, arch: str = "sm_90") -> bytes:
    """PTX of one kernel file, compiled by NVRTC as the cuda backend compiles it.

    Parameters
    ----------
    source_path : path of a kernels/*.cu file; it is also the NVRTC program name, so the
        compiler log names it.
    arch : NVRTC target, ``sm_XX`` or ``compute_XX``.

    Raises
    ------
    KernelBuildError
        NVRTC is missing, or it rejected the source (the message carries the NVRTC log).
    """
    return _compile(source_path, arch, want_cubin=False)[0]


def compile_cubin(source_path, arch: str = "sm_90") -> bytes:
    """Cubin (ELF) of one kernel file for the real architecture `arch` (``sm_XX``); see compile_ptx."""
    return _compile(source_path, arch, want_cubin=True)[1]


def ptx_entries(ptx: bytes | str) -> list[str]:
    """Names of the kernel entry points (``.entry``) in a PTX module, sorted."""
    text = ptx.decode() if isinstance(ptx, bytes) else ptx
    return sorted(_ENTRY.findall(text))


def main(argv=None) -> int:
    """`python -m cuptycho._nvrtc [ARCH ...]`: compile every kernel file and list its entries."""
    archs = list(argv if argv is not None else sys.argv[1:]) or ["sm_90"]
    ok, why = available()
    if not ok:
        print(why, file=sys.stderr)
        return 2
    print(f"NVRTC {'.'.join(map(str, version()))} from {library_path()}")
    for path in _build.sources():
        for arch in archs:
            names = ptx_entries(compile_ptx(path, arch))
            print(f"{path.name} {arch}: {len(names)} entries: {' '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
