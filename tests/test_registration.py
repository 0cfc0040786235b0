"""Subpixel registration: known shifts, sign convention, batching, even/odd sizes, CuPy."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import gpu
from scipy import ndimage

from cuptycho import registration


SHAPES = [(64, 64), (63, 65), (48, 51)]


def smooth_complex(rng, shape, width=0.08):
    """Random complex image, Gaussian low-pass (1/e^2 radius ~ width cycles/pixel), periodic."""
    z = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    return np.fft.ifft2(np.fft.fft2(z) * np.exp(-(fy**2 + fx**2) / (2 * width**2)))


def periodic_distance(a, b, shape):
    """|a - b| per axis, modulo the image size (shifts are periodic)."""
    n = np.asarray(shape, dtype=float)
    d = np.asarray(a) - np.asarray(b)
    return np.abs(d - n * np.round(d / n))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["complex", "real"])
def test_recovers_subpixel_shifts(shape, kind):
    rng = np.random.default_rng([*shape, kind == "real"])
    ref = smooth_complex(rng, shape)
    if kind == "real":
        ref = ref.real
    shifts = rng.uniform(-10, 10, size=(6, 2))
    moving = registration.fourier_shift(ref, shifts)
    assert moving.shape == (6, *shape)
    assert np.isrealobj(moving) == (kind == "real")
    moving = moving + 1e-3 * np.std(ref) * rng.standard_normal(moving.shape)   # a little noise
    found = registration.register_shift(ref, moving, upsample=100)
    assert found.shape == (6, 2) and found.dtype == np.float64
    np.testing.assert_array_less(np.abs(found - shifts), 0.02)


@pytest.mark.parametrize("shape", SHAPES)
def test_integer_shifts_exact_and_sign_matches_roll(shape):
    rng = np.random.default_rng(1)
    ref = smooth_complex(rng, shape)
    for s in [(3, -7), (0, 0), (-10, 9), (1, 0)]:
        moving = np.roll(ref, s, axis=(0, 1))                 # moving[y] = ref[y - s]
        assert np.array_equal(registration.register_shift(ref, moving), np.asarray(s, float))
        assert np.array_equal(registration.register_shift(ref, moving, upsample=1), np.asarray(s, float))
        np.testing.assert_allclose(registration.fourier_shift(ref, s), moving, atol=1e-12)


@pytest.mark.parametrize("shape", [(32, 32), (31, 33)])
@pytest.mark.parametrize("kind", ["complex", "real"])
def test_grid_shifts_exact_on_white_noise(shape, kind):
    """Shifts on the 1/upsample grid come back exactly, Nyquist content included (real even
    images: fourier_shift's cos(pi s) Nyquist term must not bias the refined peak)."""
    rng = np.random.default_rng(8)
    ref = rng.standard_normal(shape) + (1j * rng.standard_normal(shape) if kind == "complex" else 0)
    shifts = np.array([[1.37, -2.81], [0.5, 4.25], [-3.99, 0.01]])
    found = registration.register_shift(ref, registration.fourier_shift(ref, shifts))
    np.testing.assert_allclose(found, shifts, atol=1e-9)


def test_sign_independent_of_fourier_shift():
    """Spline-interpolated shift (scipy.ndimage, output[o] = input[o - s]) gives +s."""
    rng = np.random.default_rng(2)
    ref = ndimage.gaussian_filter(rng.standard_normal((64, 64)), 3, mode="wrap")
    for s in [(2.3, -1.7), (-0.4, 6.25)]:
        moving = ndimage.shift(ref, s, order=3, mode="grid-wrap")
        np.testing.assert_array_less(np.abs(registration.register_shift(ref, moving) - s), 0.02)


@pytest.mark.parametrize("shape", [(64, 64), (63, 65)])
def test_shifts_past_half_size_wrap(shape):
    rng = np.random.default_rng(3)
    ref = smooth_complex(rng, shape)
    shifts = np.array([[40.3, -33.55], [31.8, 32.6], [-45.2, 20.0]])
    found = registration.register_shift(ref, registration.fourier_shift(ref, shifts))
    n = np.asarray(shape, float)
    assert np.all(found >= -n / 2) and np.all(found < n / 2)
    np.testing.assert_array_less(periodic_distance(found, shifts, shape), 0.02)


def test_fourier_shift_roundtrip_and_dtypes():
    rng = np.random.default_rng(4)
    ref = smooth_complex(rng, (40, 37))
    s = np.array([[2.37, -4.11], [0.5, 0.5]])
    there = registration.fourier_shift(ref, s)
    back = registration.fourier_shift(there, -s)
    np.testing.assert_allclose(back, np.broadcast_to(ref, back.shape), atol=1e-12)
    assert registration.fourier_shift(ref.astype(np.complex64), (1.5, 0)).dtype == np.complex64
    assert registration.fourier_shift(ref.real.astype(np.float32), (1.5, 0)).dtype == np.float32
    with pytest.raises(ValueError):
        registration.fourier_shift(ref, (1.0, 2.0, 3.0))


def test_batch_equals_per_item_and_broadcasting():
    rng = np.random.default_rng(5)
    ref = np.stack([smooth_complex(rng, (32, 33)) for _ in range(3)])          # (3, H, W)
    shifts = rng.uniform(-6, 6, size=(2, 3, 2))
    moving = registration.fourier_shift(ref, shifts)                           # (2, 3, H, W)
    moving = moving + 0.05 * np.std(ref) * rng.standard_normal(moving.shape)
    found, err, phase = registration.register_shift(ref, moving, return_error=True)
    assert found.shape == (2, 3, 2) and err.shape == (2, 3) and phase.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            one, e1, p1 = registration.register_shift(ref[j], moving[i, j], return_error=True)
            np.testing.assert_allclose(found[i, j], one, atol=1e-12)
            np.testing.assert_allclose([err[i, j], phase[i, j]], [e1, p1], atol=1e-9)
    np.testing.assert_array_less(np.abs(found - shifts), 0.05)


def test_error_and_global_phase():
    rng = np.random.default_rng(6)
    ref = smooth_complex(rng, (48, 48))
    moving = 2.5 * np.exp(0.7j) * registration.fourier_shift(ref, (1.25, -3.5))   # on the 0.01 grid
    s, err, phase = registration.register_shift(ref, moving, return_error=True)
    np.testing.assert_allclose(s, [1.25, -3.5], atol=1e-12)
    assert err < 1e-6
    assert abs(phase - 0.7) < 1e-6
    other = smooth_complex(rng, (48, 48))
    _, err_other, _ = registration.register_shift(ref, other, return_error=True)
    assert err_other > 0.5


def test_bad_inputs():
    a = np.zeros((8, 8))
    with pytest.raises(ValueError):
        registration.register_shift(a, np.zeros((8, 9)))
    with pytest.raises(ValueError):
        registration.register_shift(np.zeros(8), np.zeros(8))
    with pytest.raises(ValueError):
        registration.register_shift(np.zeros((2, 8, 8)), np.zeros((3, 8, 8)))
    with pytest.raises(ValueError):
        registration.register_shift(a, a, upsample=0.5)


@gpu
def test_cupy_matches_numpy():
    import cupy

    rng = np.random.default_rng(7)
    ref = smooth_complex(rng, (63, 64))
    shifts = rng.uniform(-10, 10, size=(200, 2))
    moving = registration.fourier_shift(ref, shifts)
    for dtype in (np.complex128, np.complex64):
        d_ref, d_mov = cupy.asarray(ref.astype(dtype)), cupy.asarray(moving.astype(dtype))
        d_moved = registration.fourier_shift(d_ref, cupy.asarray(shifts))
        assert isinstance(d_moved, cupy.ndarray) and d_moved.dtype == dtype
        found = registration.register_shift(d_ref, d_mov)
        assert isinstance(found, cupy.ndarray) and found.dtype == cupy.float64
        np.testing.assert_array_less(np.abs(found.get() - shifts), 0.02)
        host = registration.register_shift(ref.astype(dtype), moving.astype(dtype))
        np.testing.assert_allclose(found.get(), host, atol=0.011)   # at most one grid step apart
