"""The emulated GPU's kernel modules: a program's text (what ``cupy.RawModule`` gets) compiled twice.

1. By NVRTC, as on a GPU: the compile must succeed, and its PTX gives each entry's parameter list,
   against which every launch's arguments are checked (count, and size and integer/float class of
   each), as CuPy itself does not.
2. By the host compiler with cuda_emulation.h forced in front, so that the kernels' GPU branches run
   here over the launch's real grid and block (cuda_emulation_runtime.h). Each entry also reports
   its C++ parameter kinds, which tell a pointer from a 64-bit integer (PTX has .u64 for both).

Built libraries are cached by the digest of everything that goes into them.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from . import device_array

HERE = Path(__file__).resolve().parent
HEADERS = (HERE / "cuda_emulation.h", HERE / "cuda_emulation_runtime.h")
CXXFLAGS = ("-x", "c++", "-std=c++17", "-O2", "-fopenmp", "-fPIC", "-shared", "-fno-math-errno")

_ENTRY = re.compile(r"\.entry\s+([A-Za-z_$][\w$]*)\s*\(([^)]*)\)", re.MULTILINE)
_PARAM = re.compile(r"\.param\s+(?:\.align\s+\d+\s+)?\.([a-z]\d+)")
# PTX parameter type -> (bytes, "int" | "float")
_PTX_KIND = {f"{p}{b}": (b // 8, "float" if p == "f" else "int") for p in "usbf" for b in (8, 16, 32, 64)}


class LaunchError(TypeError):
    """A launch whose arguments do not match the kernel's parameters (CuPy would launch it anyway)."""


def ptx_signatures(ptx: bytes | str) -> dict[str, list[str]]:
    """{entry: [PTX parameter type, ...]} of a PTX module."""
    text = ptx.decode() if isinstance(ptx, bytes) else ptx
    return {name: _PARAM.findall(params) for name, params in _ENTRY.findall(text)}


def cache_dir() -> Path:
    folder = os.environ.get("CUPTYCHO_EMULATION_CACHE") or os.path.join(
        tempfile.gettempdir(), f"cuptycho-gpu-emulation-{os.getuid()}")
    path = Path(folder)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def host_options(options) -> list[str]:
    """The NVRTC options the host compiler understands too (include folders, macros); the rest (the
    architecture, NVRTC-only switches) say nothing about the host build."""
    return [o for o in options if o.startswith(("-I", "-D", "-U"))]


def build(code: str, options, entries) -> Path:
    """The shared library of `code` with the emulation's launch and signature exports for `entries`."""
    text = (code + '\n#line 1 "cuda_emulation_entries"\n#include "cuda_emulation_runtime.h"\n'
            + "".join(f"CPT_EMU_ENTRY({name})\n" for name in entries))
    cxx = os.environ.get("CXX") or shutil.which("g++") or "c++"
    cmd = [cxx, *CXXFLAGS, "-include", str(HEADERS[0]), f"-I{HERE}", *host_options(options)]
    digest = hashlib.sha256("\0".join([text, *cmd, *(h.read_text() for h in HEADERS)]).encode()).hexdigest()
    # the included kernel headers count too: hash every file of the include folders the program names
    for opt in host_options(options):
        if opt.startswith("-I") and Path(opt[2:]).is_dir():
            for f in sorted(Path(opt[2:]).glob("*.cuh")):
                digest = hashlib.sha256((digest + f.read_text()).encode()).hexdigest()
    library = cache_dir() / f"emulated-{digest[:24]}.so"
    if library.exists():
        return library
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        source, out = Path(tmp) / "module.cu", Path(tmp) / "module.so"
        source.write_text(text)
        proc = subprocess.run([*cmd, str(source), "-o", str(out)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"the emulated GPU build failed ({' '.join(cmd)}):\n{proc.stderr}")
        os.replace(out, library)
    return library


_CTYPE = {"q": ctypes.c_longlong, "Q": ctypes.c_ulonglong, "i": ctypes.c_int, "I": ctypes.c_uint,
          "f": ctypes.c_float, "d": ctypes.c_double, "b": ctypes.c_bool}
# NumPy scalar type -> (C++ kind letter, (bytes, class) as PTX sees it)
_SCALAR = {np.int64: ("q", (8, "int")), np.uint64: ("Q", (8, "int")), np.int32: ("i", (4, "int")),
           np.uint32: ("I", (4, "int")), np.float32: ("f", (4, "float")), np.float64: ("d", (8, "float")),
           np.bool_: ("b", (1, "int"))}
# Python scalars as CuPy marshals them
_PYTHON = {bool: np.bool_, int: np.int64, float: np.float64}


def _arg_kind(value):
    """(ctypes value, kind letter as in the C++ signature, (bytes, class) as in PTX) of one launch argument,
    marshalled as CuPy does: device arrays by pointer, NumPy scalars by their type, Python int / float /
    bool as int64 / float64 / bool."""
    if type(value) is device_array.ndarray:
        return ctypes.c_void_p(value._a.ctypes.data), "p", (8, "int")
    if isinstance(value, np.ndarray):
        raise LaunchError(f"Unsupported type {type(value)}")
    kind = type(value)
    if kind in _PYTHON:
        value = _PYTHON[kind](value)
        kind = type(value)
    if kind not in _SCALAR:
        raise LaunchError(f"Unsupported type {type(value)}" if not isinstance(value, np.generic) else
                          f"kernel argument of dtype {value.dtype} is not supported by the emulation")
    letter, ptx = _SCALAR[kind]
    return _CTYPE[letter](value.item()), letter, ptx


def _cpp_accepts(letter_wanted, letter_given, value) -> bool:
    if letter_wanted == letter_given:
        return True
    # a null pointer by value (np.uint64(0), what the launchers pass for an absent optional array)
    return letter_wanted == "p" and letter_given in "qQ" and value.value == 0


class Module:
    """A compiled program: its entries' PTX and C++ signatures and the host library that runs them."""

    def __init__(self, code: str, options=(), name: str = "cuptycho_module"):
        from cuptycho import _nvrtc

        options = tuple(options)
        ptx = _nvrtc.compile_ptx_text(code, name, [o for o in options if not o.startswith("--gpu-architecture")])
        self.ptx = ptx
        self.signatures = ptx_signatures(ptx)
        self.library = ctypes.CDLL(str(build(code, options, sorted(self.signatures))))
        self.library.cpt_emu_error.restype = ctypes.c_char_p

    def get_function(self, name: str) -> "Kernel":
        if name not in self.signatures:
            raise RuntimeError(f"no kernel named {name!r} in the module (it has {sorted(self.signatures)})")
        return Kernel(self, name)


class Kernel:
    """One entry of a Module, launched as ``kernel(grid, block, args)`` like a ``cupy.RawKernel``."""

    def __init__(self, module: Module, name: str):
        self.module, self.name = module, name
        self.ptx_params = module.signatures[name]
        lib = module.library
        signature = getattr(lib, f"cpt_emu_signature_{name}")
        signature.restype = ctypes.c_char_p
        self.cpp_params = signature().decode()
        self._launch = getattr(lib, f"cpt_emu_launch_{name}")
        self._launch.restype = ctypes.c_int
        self.launches = 0

    def __call__(self, grid, block, args, shared_mem=0, stream=None, **_):
        grid, block = _one_dimension(grid, "grid"), _one_dimension(block, "block")
        if not isinstance(args, (tuple, list)):
            raise LaunchError(f"kernel arguments must be a tuple, got {type(args).__name__}")
        if len(args) != len(self.ptx_params):
            raise LaunchError(f"{self.name} takes {len(self.ptx_params)} arguments (NVRTC's PTX), got {len(args)}")
        values = []
        for i, (arg, ptx_type, cpp) in enumerate(zip(args, self.ptx_params, self.cpp_params)):
            value, letter, kind = _arg_kind(arg)
            if _PTX_KIND.get(ptx_type) != kind:
                raise LaunchError(f"{self.name} argument {i}: a {kind[0]}-byte {kind[1]} "
                                  f"({type(arg).__name__}) where the PTX parameter is .{ptx_type}")
            if not _cpp_accepts(cpp, letter, value):
                raise LaunchError(f"{self.name} argument {i}: kind {letter!r} ({type(arg).__name__}) where the "
                                  f"kernel's parameter is {cpp!r} (p pointer, q long long, f float, d double)")
            values.append(value)
        pointers = (ctypes.c_void_p * max(1, len(values)))(*[ctypes.addressof(v) for v in values])
        self.launches += 1
        if self._launch(ctypes.c_uint(grid), ctypes.c_uint(block), pointers) != 0:
            message = self.module.library.cpt_emu_error().decode()
            self.module.library.cpt_emu_clear_error()
            raise RuntimeError(f"{self.name}: {message}")


def _one_dimension(dims, what) -> int:
    dims = (dims,) if isinstance(dims, (int, np.integer)) else tuple(dims)
    if not 1 <= len(dims) <= 3 or any(int(d) != 1 for d in dims[1:]):
        raise NotImplementedError(f"the emulation runs one-dimensional launches; {what} {dims}")
    return int(dims[0])
