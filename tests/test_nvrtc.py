"""Every kernel file compiles under NVRTC, as the cuda backend compiles it, on a machine without a GPU.

The cuda backend hands `_build.source_text(path)` and `_build.nvrtc_options()` to CuPy, whose
compile step needs a device; cuptycho._nvrtc drives NVRTC directly with the same text and
options, so CI (no GPU) catches a kernel that g++ accepts but NVRTC rejects. The PTX entry
points must be exactly the extern "C" symbols that the CPU build of the same file exports:
the two builds of one source expose one calling convention.
"""
from __future__ import annotations

import functools
import importlib.metadata
import shutil
import subprocess

import pytest

from cuptycho import _build, _nvrtc
from cuptycho._build import KernelBuildError


def _nvrtc_skip_reason() -> str | None:
    """Why to skip: only when the nvrtc extra's packages are absent. Installed but unusable fails."""
    ok, why = _nvrtc.available()
    if ok:
        return None
    missing = []
    for dist in ("cuda-bindings", "nvidia-cuda-nvrtc-cu12"):
        try:
            importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist)
    if not missing:
        return None  # the tests then fail with KernelBuildError("NVRTC is not available: ...")
    return (f"{' and '.join(missing)} not installed (pip install 'cuptycho[nvrtc]'; the test extra "
            f"installs them where wheels exist): {why}")


NVRTC_SKIP = _nvrtc_skip_reason()
needs_nvrtc = pytest.mark.skipif(NVRTC_SKIP is not None, reason=str(NVRTC_SKIP))

ARCHS = ["sm_80", "sm_90"]
SOURCES = _build.sources()


@pytest.fixture(scope="module")
def cpu_exports(tmp_path_factory):
    """path -> the extern "C" functions that the CPU build of that file alone exports."""
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not on PATH: cannot list the CPU library's symbols")
    outdir = tmp_path_factory.mktemp("cpu-exports")

    @functools.cache
    def exports(path) -> frozenset[str]:
        out = outdir / f"{path.stem}.so"  # the CPU library's flags, one file per library
        cmd = [_build.compiler(), *_build.CXXFLAGS, f"-I{_build.kernel_dir()}", str(path), "-o", str(out)]
        run = subprocess.run(cmd, capture_output=True, text=True)
        assert run.returncode == 0, f"{' '.join(cmd)}\n{run.stderr}"
        run = subprocess.run([nm, "-D", "-P", "--defined-only", str(out)], capture_output=True, text=True,
                             check=True)
        # `name type value size`; T = a global function in .text; unmangled = extern "C".
        return frozenset(name for name, kind, *_ in (line.split() for line in run.stdout.splitlines())
                         if kind == "T" and not name.startswith("_Z"))

    return exports


@needs_nvrtc
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("path", SOURCES, ids=[p.name for p in SOURCES])
def test_kernel_compiles_under_nvrtc(path, arch, cpu_exports):
    ptx = _nvrtc.compile_ptx(path, arch)
    assert f".target {arch}".encode() in ptx
    entries = set(_nvrtc.ptx_entries(ptx))
    expected = cpu_exports(path)
    assert expected, f"{path.name}: the CPU build exports no extern \"C\" entry"
    assert entries == expected, (f"{path.name} ({arch}): PTX entries and CPU exports differ: "
                                 f"GPU only {sorted(entries - expected)}, CPU only {sorted(expected - entries)}")
    assert all(name.endswith(("_f32", "_f64")) for name in entries), sorted(entries)


@needs_nvrtc
def test_complex_values_move_as_one_load_on_the_gpu():
    """cplx is aligned to its size on the GPU: NVRTC loads and stores a complex as one vector (v2) access,
    and the exit-wave kernels, which read and write only complex arrays, make no scalar float access."""
    import re

    ptx = _nvrtc.compile_ptx(_build.kernel_dir() / "exitwave.cu", "sm_90").decode()
    assert re.search(r"ld\.global(\.nc)?\.v2\.f32", ptx) and re.search(r"st\.global\.v2\.f64", ptx)
    assert not re.search(r"(ld|st)\.global(\.nc)?\.f32", ptx)


@needs_nvrtc
def test_cubin_for_a_real_architecture():
    cubin = _nvrtc.compile_cubin(_build.kernel_dir() / "sampling.cu", "sm_90")
    assert cubin[:4] == b"\x7fELF"


@needs_nvrtc
def test_broken_kernel_raises_with_the_nvrtc_log(tmp_path):
    """A syntax error surfaces as KernelBuildError naming the file and line (via the #line directive)."""
    lines = (_build.kernel_dir() / "sampling.cu").read_text().splitlines(keepends=True)
    # just after the #include of the header: file scope, outside any macro or function
    at = next(i for i, line in enumerate(lines) if line.startswith("#include")) + 1
    lines.insert(at, "int cpt_broken_ = ;\n")
    broken = tmp_path / "broken_sampling.cu"
    broken.write_text("".join(lines))
    with pytest.raises(KernelBuildError) as info:
        _nvrtc.compile_ptx(broken, "sm_90")  # includes common.cuh through nvrtc_options()' -I
    message = str(info.value)
    assert f"{broken}({at + 1}): error" in message, message
    assert "cpt_broken_" in message, message
    assert "NVRTC_ERROR_COMPILATION" in message, message


@pytest.fixture
def kernel_copy(tmp_path, monkeypatch):
    """A copy of kernels/ made the kernel directory, with _build's digest cache cleared around it."""
    copy = tmp_path / "kernels"
    shutil.copytree(_build.kernel_dir(), copy)
    monkeypatch.setenv("CUPTYCHO_KERNEL_DIR", str(copy))
    _build.source_digest.cache_clear()
    yield copy
    _build.source_digest.cache_clear()  # monkeypatch restores the environment after this


def _digest_define(options):
    (define,) = [o for o in options if o.startswith("-DCPT_SRC_DIGEST=")]
    return define


HEADERS = sorted(p.name for p in _build.kernel_dir().glob("*.cuh"))


@pytest.mark.parametrize("header", HEADERS)
def test_header_edit_changes_the_nvrtc_options(kernel_copy, header):
    """CuPy's cache key covers the source text and options only, not -I headers: the digest define must
    move when any shared header changes (common.cuh, bilinear.cuh, ...)."""
    before = _build.nvrtc_options()
    assert f"-I{kernel_copy}" in before
    with open(kernel_copy / header, "a") as fh:
        fh.write("\n// an edit to the shared header\n")
    _build.source_digest.cache_clear()
    after = _build.nvrtc_options()
    assert _digest_define(after) != _digest_define(before)
    assert [o for o in after if not o.startswith("-DCPT_SRC_DIGEST=")] == \
           [o for o in before if not o.startswith("-DCPT_SRC_DIGEST=")]
