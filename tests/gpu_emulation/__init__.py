"""GPU semantics without a GPU, for the test suite: the `cuda` backend run on this machine.

cuptycho's cuda backend is CuPy plus NVRTC-compiled kernels. Where no GPU is lent (CI, most
development machines), `install()` puts a strict CuPy stand-in (site/cupy) first on sys.path:
- kernels are compiled by NVRTC as on a GPU, and their GPU branches (`#if CPT_GPU`) run on the
  host over the launch's real grid and block, threads of a block as fibers with real barriers,
  blocks concurrent with real atomics (cuda_emulation.h, cuda_emulation_runtime.h);
- every launch's arguments are checked against NVRTC's PTX parameter list and the entry's C++
  parameter kinds (kernels.py);
- arrays refuse implicit conversion to NumPy and mixing with NumPy arrays, reductions stay on
  the device, and device memory is counted (device_array.py).

What it cannot tell: speed, warp-level behaviour (no warp primitives are used), memory ordering
beyond barriers and atomics, cuFFT's own rounding, and the real device's memory limit.

The emulated device answers only while `enable(True)`: tests/conftest.py turns it on for tests
marked `gpu` and off for the rest, so `backend="auto"` still means the CPU everywhere else.
Set CUPTYCHO_GPU_EMULATION=0 to skip the GPU tests instead.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

SITE = Path(__file__).resolve().parent / "site"
_state = {"installed": False, "enabled": False}


def available() -> tuple[bool, str]:
    """(True, "") when the emulation can run here: a host C++ compiler and NVRTC, else (False, why)."""
    if os.environ.get("CUPTYCHO_GPU_EMULATION", "1") == "0":
        return False, "CUPTYCHO_GPU_EMULATION=0"
    if not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")):
        return False, "no host C++ compiler for the GPU emulation"
    from cuptycho import _nvrtc

    ok, why = _nvrtc.available()
    return (True, "") if ok else (False, f"the GPU emulation needs NVRTC: {why}")


def install() -> None:
    """Make `import cupy` / `import cupyx` the stand-in (replacing a real CuPy that found no GPU)."""
    if _state["installed"]:
        return
    for name in [m for m in sys.modules if m == "cupy" or m.startswith(("cupy.", "cupyx"))]:
        del sys.modules[name]
    sys.path.insert(0, str(SITE))
    import cupy

    assert getattr(cupy, "EMULATED", False), cupy.__file__
    _state["installed"] = True
    from cuptycho import backend

    backend.cupy_module.cache_clear()
    backend.gpu_status.cache_clear()


def enabled() -> bool:
    return _state["enabled"]


def enable(on: bool) -> None:
    """Let the emulated device answer (on) or behave like a machine without a GPU (off)."""
    if on == _state["enabled"]:
        return
    _state["enabled"] = on
    from cuptycho import backend

    backend.gpu_status.cache_clear()
