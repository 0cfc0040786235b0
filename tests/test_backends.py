"""`forward` and `loss_and_grad` on the compiled backends agree with the NumPy reference."""
from __future__ import annotations

import numpy as np
import pytest
from checks import random_complex
from conftest import KERNEL_TOL, gpu, to_host

import cuptycho
from cuptycho import fft, model, reference, validation

PROPAGATION = {
    "farfield": dict(propagator="farfield"),
    "angular_spectrum_padded": dict(propagator="angular_spectrum", z=4e-4, wavelength=1e-10,
                                    pixel_size=(1e-7, 1.3e-7), padding=(3, 2)),
    "fresnel": dict(propagator="fresnel", z=4e-4, wavelength=1e-10, pixel_size=1e-7),
}
BACKENDS = ["cpu", pytest.param("cuda", marks=gpu)]


def problem(dtype, shape=(12, 9), n_pos=7, seed=0, per_pattern_mask=False):
    rng = np.random.default_rng(seed)
    obj = (1 + 0.3 * random_complex(rng, (2, 30, 26))).astype(dtype)
    probe = random_complex(rng, (3, *shape), dtype)
    pos = rng.uniform(0, 1, size=(n_pos, 2)) * (np.array(obj.shape[1:]) - shape)
    data = rng.poisson(20 * rng.uniform(size=(n_pos, *shape))).astype(np.float64)
    mask_shape = (n_pos, *shape) if per_pattern_mask else shape
    mask = (rng.uniform(size=mask_shape) > 0.2).astype(np.float64)
    return obj, probe, pos, data, mask


def assert_same(actual, expected, dtype, what):
    tol = 10 * KERNEL_TOL[np.dtype(dtype)]      # a whole chain of kernels and FFTs, each at ~1 ulp
    actual, expected = to_host(actual), np.asarray(expected)
    err = np.linalg.norm(actual - expected) / np.linalg.norm(expected)
    assert err <= tol, (what, err)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", PROPAGATION)
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_forward_matches_reference(backend, name, dtype):
    obj, probe, pos, _, _ = problem(dtype, shape=(11, 8))         # odd size: the fftshift folding
    kw = PROPAGATION[name]
    expected = cuptycho.forward(obj, probe, pos, backend="numpy", **kw)
    actual = cuptycho.forward(obj, probe, pos, backend=backend, **kw)
    assert type(actual) is np.ndarray and actual.dtype == expected.dtype
    assert_same(actual, expected, dtype, "intensities")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", reference.LOSSES)
@pytest.mark.parametrize("name", PROPAGATION)
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_loss_and_grad_matches_reference(backend, loss, name, dtype):
    obj, probe, pos, data, mask = problem(dtype, per_pattern_mask=(loss == "weighted"))
    kw = dict(loss=loss, mask=mask, **PROPAGATION[name])
    v_ref, g_ref = cuptycho.loss_and_grad(obj, probe, pos, data, backend="numpy", **kw)
    value, grads = cuptycho.loss_and_grad(obj, probe, pos, data, backend=backend, **kw)
    np.testing.assert_allclose(value, v_ref, rtol=10 * KERNEL_TOL[np.dtype(dtype)])
    assert grads.keys() == g_ref.keys()
    for key in g_ref:
        assert_same(grads[key], g_ref[key], dtype, key)


@pytest.mark.parametrize("library", ["fftw", "scipy"])
@pytest.mark.parametrize("chunk_bytes", [1, 5000, 1 << 30])
def test_chunks_and_fft_libraries_give_the_same_result(monkeypatch, library, chunk_bytes):
    """One position per chunk, a few per chunk, everything in one: the same loss and gradients."""
    if library == "fftw" and fft._pyfftw() is None:
        pytest.skip("pyFFTW is not installed (the 'fftw' extra)")
    monkeypatch.setenv("CUPTYCHO_FFT", library)
    monkeypatch.setattr(model, "CHUNK_BYTES", chunk_bytes)
    obj, probe, pos, data, mask = problem(np.complex128, n_pos=9)
    kw = dict(loss="poisson", mask=mask, **PROPAGATION["angular_spectrum_padded"])
    v_ref, g_ref = cuptycho.loss_and_grad(obj, probe, pos, data, backend="numpy", **kw)
    value, grads = cuptycho.loss_and_grad(obj, probe, pos, data, backend="cpu", **kw)
    np.testing.assert_allclose(value, v_ref, rtol=1e-11)
    for key in g_ref:
        assert_same(grads[key], g_ref[key], np.complex128, key)


def test_auto_picks_a_compiled_backend():
    assert cuptycho.backend.resolve("auto") in ("cpu", "cuda")


@gpu
@pytest.mark.parametrize("name", PROPAGATION)
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_cuda_matches_cpu(name, dtype):
    """The two builds of the same kernel sources agree with each other (device arrays in, device arrays out)."""
    import cupy

    obj, probe, pos, data, mask = problem(dtype, seed=4)
    kw = dict(loss="gaussian", mask=mask, **PROPAGATION[name])
    v_cpu, g_cpu = cuptycho.loss_and_grad(obj, probe, pos, data, backend="cpu", **kw)
    d_args = [cupy.asarray(a) for a in (obj, probe, pos, data)]
    v_gpu, g_gpu = cuptycho.loss_and_grad(*d_args, backend="cuda", **{**kw, "mask": cupy.asarray(mask)})
    assert isinstance(g_gpu["object"], cupy.ndarray)
    np.testing.assert_allclose(v_gpu, v_cpu, rtol=10 * KERNEL_TOL[np.dtype(dtype)])
    for key in g_cpu:
        assert_same(g_gpu[key], g_cpu[key], dtype, key)


@pytest.mark.parametrize("name", ["farfield", "angular_spectrum_padded"])
def test_unwanted_gradients_are_skipped_and_the_rest_unchanged(name):
    obj, probe, pos, data, mask = problem(np.complex128)
    prop = PROPAGATION[name]
    kw = dict(loss="gaussian", propagator=prop["propagator"],
              **validation.propagation(prop["propagator"], prop.get("z"), prop.get("wavelength"),
                                       prop.get("pixel_size"), prop.get("padding", 0)))
    d_all = model.loss_and_grad("cpu", obj, probe, pos, data, mask, **kw)
    d_few = model.loss_and_grad("cpu", obj, probe, pos, data, mask, wanted=frozenset({"object", "probe"}), **kw)
    assert set(d_few[1]) == {"object", "probe"} and d_few[0] == d_all[0]
    for key in ("object", "probe"):
        np.testing.assert_array_equal(d_few[1][key], d_all[1][key])


def test_cpu_launches_refuse_arguments_without_a_c_type_or_of_another_kind():
    """The CPU library's argument types are fixed by an entry's first call: a Python float (no C type) or an
    array where a scalar went before is a TypeError, never a silent conversion."""
    from cuptycho.launchers import _core

    x = np.ones(4, np.float32)
    _core.launch("adam", "adam_step", np.float32, (x, x, x, x, np.int64(4), np.float32(0.1), np.float32(0.9),
                                                    np.float32(0.999), np.float32(1e-8), np.float32(1.0),
                                                    np.float32(1.0)))
    with pytest.raises(TypeError, match="has no C type"):
        _core.launch("adam", "adam_step", np.float32, (x, x, x, x, np.int64(4), 0.1, np.float32(0.9),
                                                        np.float32(0.999), np.float32(1e-8), np.float32(1.0),
                                                        np.float32(1.0)))
    with pytest.raises(TypeError, match="differ from an earlier call"):
        _core.launch("adam", "adam_step", np.float32, (x, x, x, x, x, np.float32(0.1), np.float32(0.9),
                                                        np.float32(0.999), np.float32(1e-8), np.float32(1.0),
                                                        np.float32(1.0)))
