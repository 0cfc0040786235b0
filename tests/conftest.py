"""Shared fixtures: the devices kernels run on, with GPU cases skipped (and saying why) without one."""
from __future__ import annotations

import os

import numpy as np
import pytest

import gpu_emulation
from cuptycho import backend

HAS_GPU, NO_GPU_REASON = backend.gpu_status()      # a real GPU
# Without one, the tests marked `gpu` run on the emulated GPU (tests/gpu_emulation: the kernels' GPU
# branches on the host behind a strict CuPy stand-in); the emulated device answers during those tests only.
EMULATED_GPU, NO_EMULATION_REASON = (False, "") if HAS_GPU else gpu_emulation.available()
if EMULATED_GPU:
    gpu_emulation.install()
gpu = pytest.mark.gpu
# The backend the engine, PIE and API suites run on: "cpu", or "cuda" when tests/test_gpu_emulation.py
# reruns those suites on the GPU (real or emulated; then the emulated device answers in every test).
ENGINE_BACKEND = os.environ.get("CUPTYCHO_TEST_BACKEND", "cpu")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: runs the cuda backend (a real GPU, else the emulated one)")
    config.addinivalue_line("markers", "long_reconstruction: a reconstruction of hundreds of epochs to a quality "
                                       "threshold; the emulated GPU's rerun of the engine suites leaves it out")


def pytest_runtest_setup(item):
    wants_gpu = item.get_closest_marker("gpu") is not None
    if wants_gpu and not (HAS_GPU or EMULATED_GPU):
        pytest.skip(f"needs a CUDA device ({NO_GPU_REASON}) or the GPU emulation ({NO_EMULATION_REASON})")
    if EMULATED_GPU:
        gpu_emulation.enable(wants_gpu or ENGINE_BACKEND == "cuda")

# kernel tolerance per field dtype (STYLE.md): rtol and atol relative to the reference's max |value|
KERNEL_TOL = {np.dtype(np.complex64): 1e-5, np.dtype(np.complex128): 1e-12}


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=gpu)])
def device(request):
    """'cpu' (the OpenMP build of kernels/*.cu) or 'cuda' (the NVRTC build through CuPy)."""
    return request.param


def to_device(device, *arrays):
    if device == "cpu":
        return arrays if len(arrays) > 1 else arrays[0]
    import cupy

    out = tuple(cupy.asarray(a) for a in arrays)
    return out if len(out) > 1 else out[0]


def to_host(a):
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def assert_kernel_close(actual, expected, field_dtype, rtol_scale=1.0):
    """Kernel output against the reference: rtol = atol/max|ref| = tol of the field dtype."""
    tol = KERNEL_TOL[np.dtype(field_dtype)] * rtol_scale
    actual, expected = to_host(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * max(np.abs(expected).max(), 1e-300))


@pytest.fixture(scope="module")
def farfield_known_probe():
    """The small far-field simulation as a Dataset that carries the true probe (module-scoped)."""
    from cuptycho import simulate

    exp = simulate.preset("small_farfield", seed=1)
    ds = exp.dataset()
    ds.probe = exp.probe
    return ds
