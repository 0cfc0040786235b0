"""`backend.gpu_status` asks a device that answers to compile and run a kernel and an FFT: a pip-only CuPy
without libnvrtc / libcufft would otherwise be picked by backend 'auto' and fail at the first launch.
Checked here with a stand-in for the cupy module (no GPU in CI): a missing device, a device that
runs, and one whose NVRTC or cuFFT fails."""
from __future__ import annotations

import types
from pathlib import PureWindowsPath

import numpy as np
import pytest

from cuptycho import _build, backend


def fake_cupy(*, devices=1, nvrtc_error=None, cufft_error=None):
    def raw_kernel(code, name):
        if nvrtc_error:
            raise nvrtc_error
        assert "cuptycho_probe" in code and name == "cuptycho_probe"
        return lambda grid, block, args: None

    def fft2(a):
        if cufft_error:
            raise cufft_error
        return np.fft.fft2(a)

    device = types.SimpleNamespace(compute_capability="90", synchronize=lambda: None)
    cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: devices),
                                 Device=lambda i: device)
    return types.SimpleNamespace(cuda=cuda, RawKernel=raw_kernel, fft=types.SimpleNamespace(fft2=fft2),
                                 zeros=np.zeros, float32=np.float32, complex64=np.complex64,
                                 get_array_module=lambda *a: np)


@pytest.fixture
def with_cupy(monkeypatch):
    def install(module):
        monkeypatch.setattr(backend, "cupy_module", lambda: module)
        backend.gpu_status.cache_clear()
    yield install
    backend.gpu_status.cache_clear()


def test_a_device_that_compiles_and_transforms_is_usable(with_cupy):
    with_cupy(fake_cupy())
    assert backend.gpu_status() == (True, "")


def test_no_device_is_said_without_a_warning_and_auto_takes_the_cpu(with_cupy, recwarn):
    with_cupy(fake_cupy(devices=0))
    assert backend.gpu_status() == (False, "CuPy found no CUDA device")
    if _build.cpu_available()[0]:
        assert backend.resolve("auto") == "cpu"
        assert not [w for w in recwarn if "GPU" in str(w.message)]


@pytest.mark.parametrize("broken", ["nvrtc", "cufft"])
def test_a_device_without_nvrtc_or_cufft_is_refused_naming_the_fix(with_cupy, broken):
    error = RuntimeError("libnvrtc.so.12: cannot open shared object file" if broken == "nvrtc"
                         else "cuFFT: libcufft.so.11 not found")
    with_cupy(fake_cupy(**{f"{broken}_error": error}))
    ok, why = backend.gpu_status()
    assert not ok and why.startswith(backend.GPU_BROKEN) and str(error) in why and "cupy-cuda12x[ctk]" in why
    with pytest.raises(ValueError, match=r"backend 'cuda' is not available: a CUDA device answers but"):
        backend.resolve("cuda")
    if _build.cpu_available()[0]:
        with pytest.warns(RuntimeWarning, match=r"backend 'auto' does not use the GPU: a CUDA device answers"):
            assert backend.resolve("auto") == "cpu"


def test_kernel_line_directives_use_forward_slashes():
    """A Windows path's backslashes were escape sequences to NVRTC (\\U in C:\\Users)."""
    assert _build.line_directive(PureWindowsPath(r"C:\Users\me\kernels\a.cu")) == '#line 1 "C:/Users/me/kernels/a.cu"\n'
    assert _build.source_text(_build.kernel_dir() / "likelihood.cu").startswith(
        f'#line 1 "{_build.kernel_dir() / "likelihood.cu"}"\n')


class DeviceArray:
    """A stand-in for a CuPy array: no implicit conversion to NumPy (like CuPy), `.get()` copies to the host."""

    def __init__(self, a):
        self._a = np.asarray(a)
        self.shape, self.ndim, self.dtype = self._a.shape, self._a.ndim, self._a.dtype

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()`")

    def get(self):
        return self._a.copy()


def test_a_dataset_from_device_arrays_comes_to_the_host_at_its_boundary(monkeypatch):
    """np.asarray on CuPy data, positions or masks raised deep inside the Dataset and the engine."""
    from cuptycho import Dataset

    device = types.SimpleNamespace(get_array_module=lambda *arrays: device if any(
        isinstance(a, DeviceArray) for a in arrays) else np)
    monkeypatch.setattr(backend, "cupy_module", lambda: device)
    rng = np.random.default_rng(0)
    data, positions = rng.poisson(5.0, (4, 8, 8)).astype(np.float32), rng.uniform(0, 6, (4, 2))
    mask = np.ones((8, 8), np.float32)
    ds = Dataset(DeviceArray(data), DeviceArray(positions), mask=DeviceArray(mask), obj_shape=(20, 20))
    assert type(ds.data) is np.ndarray and type(ds.positions) is np.ndarray and type(ds.mask) is np.ndarray
    np.testing.assert_array_equal(ds.data, data)
    np.testing.assert_array_equal(ds.positions, positions)
    measured = Dataset.from_measurement(DeviceArray(data), energy=1.6e-15, detector_distance=2.0,
                                        detector_pixel_size=75e-6, positions_m=DeviceArray(positions * 5e-8))
    np.testing.assert_array_equal(measured.data, data)


def test_device_caches_are_kept_per_gpu(monkeypatch):
    """FFT plans, scratch buffers and transfer functions were cached per shape only: after
    `cupy.cuda.Device(1).use()` a run got device 0's buffers."""
    from cuptycho import fft, model

    current = {"id": 0}
    monkeypatch.setattr(backend, "device_id", lambda device: current["id"] if device == "cuda" else 0)
    monkeypatch.setattr(fft, "CupyPlan", lambda shape, dtype: object())          # no GPU here: a token per plan
    fft._plan.cache_clear()
    model._device_transfer.cache_clear()
    gpu_xp = type("DeviceNamespace", (), {"asarray": staticmethod(np.asarray)})()   # a cupy stand-in (hashable)
    transfer = ("angular_spectrum", (8, 8), 1e-3, 1e-10, (5e-8, 5e-8), np.complex64)
    first = fft.plan("cuda", "cufft", (2, 8, 8), np.complex64), model._transfer(gpu_xp, *transfer)
    assert fft.plan("cuda", "cufft", (2, 8, 8), np.complex64) is first[0]
    assert model._transfer(gpu_xp, *transfer) is first[1]
    current["id"] = 1
    assert fft.plan("cuda", "cufft", (2, 8, 8), np.complex64) is not first[0]
    assert model._transfer(gpu_xp, *transfer) is not first[1]
    current["id"] = 0
    assert fft.plan("cuda", "cufft", (2, 8, 8), np.complex64) is first[0]
    fft._plan.cache_clear()
    model._device_transfer.cache_clear()


def test_gpu_chunks_are_bounded_by_bytes_and_by_fft_plan_elements(monkeypatch):
    """A GPU chunk held the whole batch: 10k x 3 modes x 256^2 complex64 is a 15.7 GB buffer and a
    1.97e9-element batched FFT (the plan counts in 32 bits)."""
    from cuptycho import model

    per_position = 3 * 256 * 256                                   # elements: modes x pixels
    chunk = model.chunk_size("cuda", 10_000, per_position * 8, per_position)
    assert chunk * per_position * 8 <= model.GPU_CHUNK_BYTES and chunk * per_position <= model.FFT_PLAN_ELEMENTS
    assert chunk == model.GPU_CHUNK_BYTES // (per_position * 8)     # 1365 at the 2 GiB default
    monkeypatch.setattr(model, "GPU_CHUNK_BYTES", 1 << 40)
    assert model.chunk_size("cuda", 20_000, per_position * 8, per_position) == model.FFT_PLAN_ELEMENTS // per_position
    assert model.chunk_size("cuda", 64, per_position * 8, per_position) == 64               # a small batch: whole
    assert model.chunk_size("cuda", 5, 1 << 45, 1 << 40) == 1                                 # never zero


def test_plan_and_scratch_caches_are_bounded_by_bytes():
    """A growing batch pinned one full buffer per batch shape for the process's life."""
    from cuptycho import fft

    made = []
    cache = fft.BufferCache(lambda n: made.append(n) or np.zeros(n, np.uint8), lambda a: a.nbytes, limit_bytes=100)
    a = cache(40)
    assert cache(40) is a and made == [40]                 # a hit makes nothing
    cache(50)
    assert cache.bytes == 90 and len(cache.items) == 2
    cache(30)                                              # 120 > 100: the least recently used (40) goes
    assert list(cache.items) == [(50,), (30,)] and cache.bytes == 80
    cache(50)                                              # a hit moves it to the back
    cache(500)                                             # larger than the limit: it stays alone
    assert list(cache.items) == [(500,)] and cache.bytes == 500
    cache.cache_clear()
    assert cache.bytes == 0 and not cache.items
    assert isinstance(fft._plan, fft.BufferCache) and fft._plan.limit == fft.CACHE_BYTES
