"""The wheel ships the kernel sources (kernels/ -> cuptycho/_kernels) and nothing built from them.

pyproject.toml force-includes kernels/ into the wheel. force-include copies the folder as it is
on disk, without .gitignore or exclude patterns, so a build folder or object file left in
kernels/ would be shipped: these tests catch that as well as a missing source.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ROOT / "kernels"
PACKAGED = "cuptycho/_kernels/"
# what may live in kernels/: the kernel sources, the shared header, the C API header and the
# CMake project that builds the C libraries (its build folder goes elsewhere: build/kernels)
SOURCE_SUFFIXES = (".cu", ".cuh", ".h")
SOURCE_NAMES = ("CMakeLists.txt",)


def _is_source(name: str) -> bool:
    return name.endswith(SOURCE_SUFFIXES) or name in SOURCE_NAMES


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if not (ROOT / "pyproject.toml").is_file() or not KERNELS.is_dir():
        pytest.skip(f"not a source checkout: no pyproject.toml and kernels/ in {ROOT}")
    if importlib.util.find_spec("hatchling") is None:
        pytest.skip("hatchling is not installed (it is in the test extra): cannot build the wheel offline")
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
           "--disable-pip-version-check", "-q", "-w", str(out), str(ROOT)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"{' '.join(cmd)}\n{run.stdout}\n{run.stderr}"
    (path,) = out.glob("cuptycho-*.whl")
    return path


def test_wheel_ships_every_kernel_source(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        expected = ["common.cuh", *sorted(p.name for p in KERNELS.glob("*.cu"))]
        assert len(expected) > 1, f"no kernels/*.cu in {KERNELS}"
        for name in expected:
            assert PACKAGED + name in names, f"{name} is missing from {wheel.name}"
            assert zf.read(PACKAGED + name) == (KERNELS / name).read_bytes(), f"{name} differs in the wheel"


def test_wheel_ships_no_build_artefacts(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    packaged = [n[len(PACKAGED):] for n in names if n.startswith(PACKAGED)]
    strays = [n for n in packaged if "/" in n or not _is_source(n)]
    assert not strays, (f"kernels/ holds files that are not sources and were force-included into the "
                        f"wheel: {strays}; move build output out of kernels/ (e.g. build/kernels)")
    on_disk = sorted(p.name for p in KERNELS.iterdir() if p.is_file() and _is_source(p.name))
    assert sorted(packaged) == on_disk
    binaries = [n for n in names if n.endswith((".so", ".o", ".a", ".dll", ".pyd", ".ptx", ".cubin", ".fatbin",
                                                ".pyc"))]
    assert not binaries, binaries


def test_installed_package_finds_its_kernel_copy(wheel, tmp_path):
    """Unpacked as pip would install it, cuptycho._build.kernel_dir() resolves to cuptycho/_kernels."""
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp_path / "site")
    env = {k: v for k, v in os.environ.items() if k != "CUPTYCHO_KERNEL_DIR"}
    env["PYTHONPATH"] = str(tmp_path / "site")  # ahead of the editable install's path entry
    code = ("import cuptycho._build as b; print(b.__file__); print(b.kernel_dir()); "
            "print(' '.join(p.name for p in b.sources()))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    module, kdir, sources = run.stdout.splitlines()
    site = (tmp_path / "site").resolve()
    assert Path(module).resolve().is_relative_to(site), module
    assert Path(kdir).resolve() == site / "cuptycho" / "_kernels"
    assert sources.split() == sorted(p.name for p in KERNELS.glob("*.cu"))
