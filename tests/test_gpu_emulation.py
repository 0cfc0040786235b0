"""The emulated GPU (tests/gpu_emulation) holds CuPy's and CUDA's rules, so the cuda tests it runs mean
something: wrong launches fail, block-level code needs its barriers, host and device arrays do not mix.
On a machine with a real GPU the emulation is not installed and these tests skip; the suites' rerun on
the cuda backend (the last test) then runs on the real GPU."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import EMULATED_GPU, NO_EMULATION_REASON, gpu

emulated = pytest.mark.skipif(not EMULATED_GPU, reason=f"the GPU emulation is not in use: {NO_EMULATION_REASON}")
pytestmark = gpu

REDUCE = r'''
extern "C" __global__ void block_sum(const double* x, long long n, double* out) {
  __shared__ double s[256];
  double acc = 0;
  for (long long i = threadIdx.x; i < n; i += blockDim.x) acc += x[i];
  s[threadIdx.x] = acc;
  BARRIER
  for (unsigned h = blockDim.x / 2; h > 0; h >>= 1) {
    if (threadIdx.x < h) s[threadIdx.x] += s[threadIdx.x + h];
    BARRIER
  }
  if (threadIdx.x == 0) out[blockIdx.x] = s[0];
}
extern "C" __global__ void early_exit(double* out) {
  if (threadIdx.x >= 32) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}
extern "C" __global__ void scale(float* x, long long n, float a) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)blockDim.x * gridDim.x)
    x[i] *= a;
}
extern "C" __global__ void count(double* total, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)blockDim.x * gridDim.x)
    atomicAdd(total, 1.0);
}
'''


def module(barrier="__syncthreads();"):
    import cupy

    return cupy.RawModule(code=REDUCE.replace("BARRIER", barrier), options=("-std=c++17",))


@emulated
def test_a_block_reduction_needs_its_barriers():
    """Threads of a block are switched at __syncthreads and run in a scrambled order between barriers: the
    tree sum is exact with its barriers and wrong without them, as it may be on a GPU."""
    import cupy

    x = np.arange(1000, dtype=np.float64)
    out = cupy.zeros(3, np.float64)
    module().get_function("block_sum")((3,), (256,), (cupy.asarray(x), np.int64(x.size), out))
    np.testing.assert_array_equal(out.get(), [x.sum()] * 3)
    module(barrier="").get_function("block_sum")((3,), (256,), (cupy.asarray(x), np.int64(x.size), out))
    assert not np.allclose(out.get(), x.sum())


@emulated
def test_a_barrier_some_threads_skip_is_reported():
    import cupy

    with pytest.raises(RuntimeError, match="__syncthreads reached by 32 threads of block 0 while 224 had returned"):
        module().get_function("early_exit")((1,), (256,), (cupy.zeros(256, np.float64),))


@emulated
def test_blocks_run_concurrently_and_atomics_add_up():
    import cupy

    total = cupy.zeros(1, np.float64)
    module().get_function("count")((8,), (256,), (total, np.int64(100_000)))
    assert float(total[0]) == 100_000


@emulated
@pytest.mark.parametrize("args, message", [
    (lambda x: (x, np.int64(4)), "scale takes 3 arguments (NVRTC's PTX), got 2"),
    (lambda x: (x, np.int64(4), np.float64(2)), "argument 2: a 8-byte float (float64) where the PTX parameter is .f32"),
    (lambda x: (x, np.int64(4), 2.0), "argument 2: a 8-byte float (float) where the PTX parameter is .f32"),
    (lambda x: (x, np.int32(4), np.float32(2)), "argument 1: a 4-byte int (int32) where the PTX parameter is .u64"),
    (lambda x: (x, 4, np.float32(2)), None),                              # CuPy passes a Python int as int64
    (lambda x: (x, x, np.float32(2)), "argument 1: kind 'p' (ndarray) where the kernel's parameter is 'q'"),
    (lambda x: (np.int64(0), np.int64(4), np.float32(2)), None),        # a null pointer by value
    (lambda x: (x.get(), np.int64(4), np.float32(2)), "Unsupported type <class 'numpy.ndarray'>"),
])
def test_every_launch_is_checked_against_the_kernels_parameters(args, message):
    """CuPy launches whatever it is given; the emulation refuses what NVRTC's PTX or the C++ signature says
    the kernel does not take, so a launcher that passes a wrong scalar kind or count fails its tests."""
    import cupy

    from gpu_emulation.kernels import LaunchError

    x = cupy.asarray(np.ones(4, np.float32))
    kernel = module().get_function("scale")
    if message is None:
        if isinstance(args(x)[0], np.int64):
            return                                         # a null pointer is accepted; it would not be run
        kernel((1,), (256,), args(x))
        np.testing.assert_array_equal(x.get(), 2)
    else:
        with pytest.raises(LaunchError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
            kernel((1,), (256,), args(x))


@emulated
def test_a_product_launcher_with_a_wrong_scalar_kind_fails(monkeypatch):
    """The cuda path's own launches go through the check: a launcher that passed a float64 where a kernel
    takes float fails."""
    import cupy

    from cuptycho.launchers import _core, pie
    from gpu_emulation.kernels import LaunchError

    real = _core.launch

    def wrong(concern, name, dtype, args, **kw):
        return real(concern, name, dtype, [np.float64(a) if isinstance(a, np.float32) else a for a in args], **kw)

    args = (cupy.ones(16, np.complex64), cupy.ones(16, np.complex64), cupy.ones(16, np.float32),
            cupy.ones(1, np.float32))
    pie.pie_update(*args, step=1.0, alpha=1.0)                  # the launcher as it is
    monkeypatch.setattr(pie, "launch", wrong)
    with pytest.raises(LaunchError, match=r"pie_update_f32 argument 7: a 8-byte float .* \.f32"):
        pie.pie_update(*args, step=1.0, alpha=1.0)


@emulated
def test_device_arrays_keep_cupys_rules():
    import cupy

    a = cupy.asarray(np.arange(6.0))
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(a)
    with pytest.raises(TypeError, match="Unsupported type"):
        a + np.ones(6)
    with pytest.raises(TypeError, match="Unsupported type"):
        cupy.maximum(a, np.ones(6))
    total = a.sum()
    assert isinstance(total, cupy.ndarray) and total.shape == () and float(total) == 15
    assert isinstance(np.sum(a), cupy.ndarray)                # NumPy functions dispatch to the device
    assert cupy.fft.fft2(cupy.ones((4, 4), np.complex64)).dtype == np.complex64
    a[...] = np.arange(6.0)[::-1]                                # a host array copied into the whole array
    np.testing.assert_array_equal(cupy.asnumpy(a), [5, 4, 3, 2, 1, 0])
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for fill"):
        a[1:3] = np.zeros(2)                                     # but not into part of it


@emulated
def test_device_memory_is_counted():
    import cupy

    pool = cupy.get_default_memory_pool()
    before = pool.used_bytes()
    pool.reset_high_water()
    a = cupy.zeros((1000, 1000), np.complex64)
    assert pool.used_bytes() - before == a.nbytes
    del a
    assert pool.used_bytes() == before and pool.high_water() - before == 8_000_000


def test_the_engine_pie_and_api_suites_pass_on_the_cuda_backend():
    """tests/test_engine.py, test_pie.py and test_api.py again, every run on the cuda backend (the emulated
    GPU here, a real one where there is one). The emulated GPU leaves out the long reconstructions (~200 s
    of its ~250 s; a sequential engine's thousands of small launches): they launch the same kernels as the
    short tests, whose results are checked exactly, and run on the CPU and on a real GPU."""
    root = Path(__file__).resolve().parent
    env = {**os.environ, "CUPTYCHO_TEST_BACKEND": "cuda"}
    select = ["-m", "not long_reconstruction"] if EMULATED_GPU else []
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *select,
                           *(str(root / f) for f in ("test_api.py", "test_engine.py", "test_pie.py"))],
                          env=env, capture_output=True, text=True, cwd=root.parent)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]


@emulated
def test_a_sequential_pie_epoch_on_the_gpu_returns_to_the_host_a_fixed_number_of_times():
    """The loss of every position stays on the device, summed there; the per-epoch loss record works in chunks
    of bytes rather than of the engine's batch of one; the positions go up once per epoch and after each
    registration. Transfers per epoch, either way, do not grow with the number of positions (there were ~3
    to the host and 1 to the device per position)."""
    from cuptycho import Config, Group, create, simulate
    from gpu_emulation import device_array

    counts = []
    for scan in ((5, 5), (7, 7)):
        exp = simulate.preset("small_farfield", seed=1, scan_size=scan, position_error=2.0)
        ds = exp.dataset()
        ds.probe = exp.probe
        rec = create(ds, Config(engine="mpie", epochs=2, backend="cuda", probe=Group(enabled=True),
                                positions=Group(lr=0.2, start_epoch=1)))
        rec.run(until=1)
        before = dict(device_array.transfers)
        rec.run(until=2)
        counts.append({k: device_array.transfers[k] - before[k] for k in before})
    assert counts[0] == counts[1] and counts[1]["to_host"] <= 16 and counts[1]["to_device"] <= 16, counts


@emulated
def test_row_sums_are_the_same_on_every_run():
    """The likelihoods' loss and scale rows and spectrum_adj's dz rows are block sums in a fixed order (no
    atomics): two launches on the same input agree bit for bit, whatever order the threads run in."""
    import cupy

    from cuptycho.launchers import likelihood as lk
    from cuptycho.launchers import propagate as pr

    rng = np.random.default_rng(0)
    n_pos, modes, ny, nx = 3, 2, 40, 300                # rows wider than a block: threads stride the columns
    waves = (rng.standard_normal((n_pos, modes, ny, nx)) + 1j * rng.standard_normal((n_pos, modes, ny, nx)))
    waves = waves.astype(np.complex64)
    data = rng.poisson(2.0, (n_pos, ny, nx)).astype(np.float32)
    mask = np.ones((ny, nx), np.float32)
    scale = np.full(n_pos, 1.1, np.float32)
    runs = []
    for _ in range(2):
        w = cupy.asarray(waves)
        loss_rows, scale_rows, _ = lk.detector_likelihood(w, cupy.asarray(data), cupy.asarray(mask),
                                                          cupy.asarray(scale), None, loss="poisson", n_total=n_pos,
                                                          grads=("scale",))
        g = cupy.asarray(waves.reshape(-1, ny, nx))
        h = cupy.asarray(np.exp(1j * rng.uniform(0, 1, (ny, nx))).astype(np.complex64) if not runs else runs[0][3])
        kz = cupy.asarray(np.linspace(0, 1, ny * nx).reshape(ny, nx))
        dz_rows = pr.spectrum_adj(g, h, kz=kz, spectrum=cupy.asarray(waves.reshape(-1, ny, nx)))
        runs.append((loss_rows.get(), scale_rows.get(), dz_rows.get(), h.get(), w.get(), g.get()))
    for first, second in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(first, second)


def test_patch_adj_is_the_same_on_every_run():
    """The GPU object gradient is a gather per object tile (one writer per pixel, patches in index order): two
    launches agree bit for bit whatever order the threads and blocks run in (with atomics they differ)."""
    import cupy

    from cuptycho.launchers import sampling

    rng = np.random.default_rng(1)
    patch, obj_shape, n_pos = (40, 36), (2, 120, 110), 50
    pos = rng.uniform(0, 1, (n_pos, 2)) * (np.array(obj_shape[1:]) - patch)
    grad = (rng.standard_normal((n_pos, 2, *patch)) + 1j * rng.standard_normal((n_pos, 2, *patch))).astype(np.complex64)
    runs = [sampling.patch_adj(cupy.asarray(grad), cupy.asarray(pos), obj_shape).get() for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])
