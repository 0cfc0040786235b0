"""The C ABI: kernels/CMakeLists.txt builds and installs the library, examples/c runs against it,
and kernels/cuptycho_kernels.h declares exactly the exported entries, with their exact types.

Needs cmake, a C and a C++ compiler (and nm for the export lists); each test says which tool it
skipped for. The CUDA library is built too when nvcc is on PATH (no GPU needed).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cuptycho import _build

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "kernels"
HEADER = KERNELS / "cuptycho_kernels.h"
EXAMPLE = ROOT / "examples" / "c" / "gather_scatter.c"
CC = os.environ.get("CC", "cc")
CXX = os.environ.get("CXX", "c++")


def need(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} on PATH")


def run(cmd, **kw):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def header_declarations() -> set[str]:
    """Names of the functions cuptycho_kernels.h declares (comments and preprocessor lines removed)."""
    text = re.sub(r"/\*.*?\*/", "", HEADER.read_text(), flags=re.S)
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    text = text.replace('extern "C" {', "").replace("}", "};")
    names = set()
    for statement in text.split(";"):
        if "(" in statement and "typedef" not in statement:
            names.add(re.search(r"(\w+)\s*\(", statement).group(1))
    return names


def exported_entries(library: Path) -> set[str]:
    """C entries a shared library defines (dynamic symbol table, text symbols, no reserved names)."""
    out = run(["nm", "-D", "--defined-only", library]).stdout
    return {f[2] for f in (line.split() for line in out.splitlines())
            if len(f) == 3 and f[1] == "T" and not f[2].startswith("_")}


def build_and_install(source_dir, build_dir, prefix, *options, target=None):
    run(["cmake", "-S", source_dir, "-B", build_dir, f"-DCMAKE_INSTALL_PREFIX={prefix}", *options])
    run(["cmake", "--build", build_dir, "--parallel", str(os.cpu_count() or 2),
         *(["--target", target] if target else [])])


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The CPU library built with CMake and installed into a temporary prefix."""
    need("cmake", CC, CXX)
    tmp = tmp_path_factory.mktemp("cmake")
    prefix = tmp / "prefix"
    build_and_install(KERNELS, tmp / "build", prefix)
    run(["cmake", "--install", tmp / "build"])
    return prefix


def test_installed_library_runs_the_c_example(installed):
    lib = installed / "lib"
    if not (lib / "libcuptycho_kernels.so").exists():    # GNUInstallDirs may pick lib64
        lib = installed / "lib64"
    assert (installed / "include" / "cuptycho_kernels.h").is_file()
    assert (lib / "cmake" / "cuptycho_kernels" / "cuptycho_kernelsConfig.cmake").is_file()
    exe = installed / "gather_scatter"
    run([CC, "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-O2", f"-I{installed / 'include'}",
         EXAMPLE, f"-L{lib}", "-lcuptycho_kernels", f"-Wl,-rpath,{lib}", "-lm", "-o", exe])
    proc = subprocess.run([exe], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ": ok" in proc.stdout, proc.stdout


def test_cmake_library_exports_what_the_header_declares(installed):
    need("nm")
    lib = next(installed.glob("lib*/libcuptycho_kernels.so"))
    assert exported_entries(lib) == header_declarations()


def test_header_declares_every_entry_of_the_python_build():
    """The library cuptycho._build loads (what ctypes calls) and the header list the same entries,
    so adding a kernel without documenting it in the header fails here."""
    need("nm")
    ok, why = _build.cpu_available()
    if not ok:
        pytest.skip(f"the CPU kernels do not build here: {why}")
    exported = exported_entries(_build.cpu_library_path())
    declared = header_declarations()
    assert exported, "no entries found in the CPU library"
    assert not exported - declared, f"exported but not declared in {HEADER.name}: {sorted(exported - declared)}"
    assert not declared - exported, f"declared in {HEADER.name} but not exported: {sorted(declared - exported)}"


@pytest.mark.parametrize("compiler, flags", [(CC, ["-x", "c", "-std=c99"]), (CXX, ["-x", "c++", "-std=c++17"])])
def test_header_is_plain_c99_and_cxx(compiler, flags, tmp_path):
    need(compiler)
    run([compiler, *flags, "-pedantic", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", HEADER])


def test_header_declarations_match_the_definitions(tmp_path):
    """Each kernels/*.cu compiled as C++ after the header, with cpt_complex64/128 = cplx<float/double>:
    a declaration whose types differ from the extern "C" definition is a compile error
    ("conflicting declaration of C function")."""
    need(CXX)

    def check(source):
        unit = tmp_path / f"{source.stem}_abi.cpp"
        unit.write_text('#include "common.cuh"\n'
                        "typedef cplx<float> cpt_complex64;\n"
                        "typedef cplx<double> cpt_complex128;\n"
                        "#define CPT_CUSTOM_COMPLEX\n"
                        '#include "cuptycho_kernels.h"\n'
                        f'#include "{source.name}"\n'
                        # the loss codes of the header are the kernel's (when it names them)
                        + ("static_assert(CPT_LOSS_GAUSSIAN == CPT_GAUSSIAN && CPT_LOSS_POISSON == CPT_POISSON &&"
                           " CPT_LOSS_INTENSITY == CPT_INTENSITY && CPT_LOSS_WEIGHTED == CPT_WEIGHTED, \"\");\n"
                           if "CPT_WEIGHTED" in source.read_text() else ""))
        return subprocess.run([CXX, "-x", "c++", "-std=c++17", "-fopenmp", "-fsyntax-only", f"-I{KERNELS}", unit],
                              capture_output=True, text=True)

    sources = _build.sources()
    with ThreadPoolExecutor() as pool:
        results = list(pool.map(check, sources))
    errors = [f"{s.name}:\n{r.stderr}" for s, r in zip(sources, results) if r.returncode != 0]
    assert not errors, "\n".join(errors)


def test_cuda_library_builds(tmp_path):
    """CUPTYCHO_CUDA=ON configures, compiles every kernel with nvcc (sm_80, sm_90) and exports the
    header's entries as kernels. No GPU is needed."""
    need("cmake", "nvcc", "nm", CXX)
    build = tmp_path / "build"
    run(["cmake", "-S", KERNELS, "-B", build, "-DCUPTYCHO_CUDA=ON"])

    def flags():                                # compile flags: Makefile or Ninja generator
        return "".join(p.read_text() for p in [*build.rglob("flags.make"), *build.glob("build.ninja")])

    assert "sm_80" in flags() and "sm_90" in flags()             # the default architectures
    # compile for sm_90 only: the second architecture doubles the time and checks nothing new here
    build_and_install(KERNELS, build, tmp_path / "prefix", "-DCMAKE_CUDA_ARCHITECTURES=90",
                      target="cuptycho_kernels_cuda")
    assert "sm_80" not in flags()
    assert exported_entries(tmp_path / "build" / "libcuptycho_kernels_cuda.so") == header_declarations()
