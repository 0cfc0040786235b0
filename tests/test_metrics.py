"""Reconstruction metrics: limits (identical / independent), invariances, ramps, positions, z."""
from __future__ import annotations

import numpy as np
import pytest

from cuptycho import metrics, registration


def smooth_object(rng, shape=(128, 128), width=0.06):
    """Band-limited complex test object with amplitude and phase structure (periodic)."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    g = np.exp(-(fy**2 + fx**2) / (2 * width**2))

    def field():
        f = np.fft.ifft2(np.fft.fft2(rng.standard_normal(shape)) * g).real
        return f / np.std(f)

    return (1.0 + 0.3 * field()) * np.exp(1j * 0.8 * field())


def noise(rng, shape=(128, 128)):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def test_identical_images_score_one(rng):
    obj = smooth_object(rng)
    assert metrics.correlation(obj, obj) == pytest.approx(1.0, abs=1e-12)
    assert metrics.correlation(obj, obj, shift=False) == pytest.approx(1.0, abs=1e-12)
    assert metrics.cpcc(obj, obj) == pytest.approx(1.0, abs=1e-12)
    assert metrics.ssim(obj, obj) == pytest.approx(1.0, abs=1e-12)
    assert metrics.ssim(obj, obj, part="phase") == pytest.approx(1.0, abs=1e-12)
    mask = np.zeros(obj.shape, bool)
    mask[20:100, 30:110] = True
    assert metrics.correlation(obj, obj, mask=mask) == pytest.approx(1.0, abs=1e-12)
    assert metrics.ssim(obj, obj, mask=mask) == pytest.approx(1.0, abs=1e-12)


def test_shifted_phase_offset_copy(rng):
    truth = smooth_object(rng)
    est = 1.7 * np.exp(2.1j) * registration.fourier_shift(truth, (2.37, -1.61))
    mask = np.zeros(truth.shape, bool)
    mask[16:112, 16:112] = True
    with_shift = metrics.correlation(est, truth, mask=mask)
    without = metrics.correlation(est, truth, mask=mask, shift=False)
    assert with_shift > 0.999
    assert without < 0.9
    aligned, s = metrics.align(est, truth, mask=mask)
    np.testing.assert_allclose(s, [2.37, -1.61], atol=0.01)
    # up to the real scale 1.7 the aligned estimate is the truth, phase included
    assert np.abs(np.angle(np.sum(np.conj(truth[mask]) * aligned[mask]))) < 1e-9
    np.testing.assert_allclose(aligned[mask] / 1.7, truth[mask], atol=0.05)
    # SSIM improves with registration and with phase-offset removal
    assert metrics.ssim(est / 1.7, truth, part="phase", shift=True) > 0.99
    assert metrics.ssim(est / 1.7, truth, part="phase") < 0.9


def test_correlation_of_independent_images_is_small(rng):
    a, b = noise(rng), noise(rng)
    assert metrics.correlation(a, b) < 0.1
    assert metrics.correlation(a, b, shift=False) < 0.1
    assert metrics.cpcc(a, b) < 0.1


def test_cpcc_invariant_to_complex_scale_and_offset(rng):
    a = smooth_object(rng)
    b = a + 0.3 * noise(rng)
    ref = metrics.cpcc(a, b)
    assert 0.2 < ref < 0.99
    c = (0.3 - 2.0j) * b + (5.0 + 4.0j)
    assert metrics.cpcc(a, c) == pytest.approx(ref, rel=1e-12)
    assert metrics.cpcc((1.5j) * a - 7.0, c) == pytest.approx(ref, rel=1e-12)
    # the plain correlation coefficient is not offset invariant (cpcc's point)
    assert abs(metrics.correlation(a, c, shift=False) - ref) > 0.01


def test_frc_limits(rng):
    obj = smooth_object(rng)
    freq, frc = metrics.fourier_ring_correlation(obj, obj)
    assert freq[0] == 0 and freq[-1] == pytest.approx(0.5) and freq.shape == frc.shape == (65,)
    np.testing.assert_allclose(frc, 1.0, atol=1e-12)
    freq, frc = metrics.fourier_ring_correlation(noise(rng), noise(rng))
    assert np.mean(np.abs(frc)) < 0.2
    # real images: signed FRC, 1 for identical
    r = obj.real
    np.testing.assert_allclose(metrics.fourier_ring_correlation(r, r, rings=20)[1], 1.0, atol=1e-12)


def test_frc_resolution_finds_the_crossing(rng):
    # identical low frequencies, independent noise above |f| = 0.2 => crossing near 0.2
    shape = (128, 128)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    low = np.hypot(fy, fx) < 0.2
    common = np.fft.fft2(noise(rng, shape))
    a = np.fft.ifft2(np.where(low, common, np.fft.fft2(noise(rng, shape))))
    b = np.fft.ifft2(np.where(low, common, np.fft.fft2(noise(rng, shape))))
    freq, frc, counts = metrics.fourier_ring_correlation(a, b, return_counts=True)
    for thr in ("1/7", "half-bit"):
        f = metrics.frc_resolution(freq, frc, thr, counts=counts)
        assert 0.18 < f < 0.215, (thr, f)
    assert abs(metrics.frc_resolution(freq, frc, "half-bit") - f) < 0.01   # approximate counts
    assert np.isnan(metrics.frc_resolution(freq, np.ones_like(freq)))
    with pytest.raises(ValueError):
        metrics.frc_resolution(freq, frc, "full-bit")


def test_remove_phase_ramp_with_heavy_wrapping(rng):
    shape = (96, 80)
    y, x = np.indices(shape)
    amp = 1.0 + 0.5 * rng.random(shape)
    ramp = 0.4 + 0.9 * y - 2.3 * x                     # wraps ~ 45 times along x
    image = amp * np.exp(1j * ramp)
    corrected, (offset, sy, sx) = metrics.remove_phase_ramp(image, return_params=True)
    assert np.max(np.abs(np.angle(corrected))) < 1e-6
    np.testing.assert_allclose(np.abs(corrected), amp, rtol=1e-12)
    np.testing.assert_allclose([offset, sy, sx], [0.4, 0.9, -2.3], atol=1e-9)
    # relative to a reference with its own structured phase, with a mask
    ref = smooth_object(rng, shape)
    mask = np.zeros(shape, bool)
    mask[10:80, 5:70] = True
    out = metrics.remove_phase_ramp(ref * np.exp(1j * ramp), mask=mask, reference=ref)
    assert np.max(np.abs(np.angle(out * np.conj(ref)))) < 1e-6


def test_position_errors():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 100, size=(50, 2))
    offset = np.array([3.0, -4.0])
    e = metrics.position_errors(truth + offset, truth)
    assert e["rms"] == pytest.approx(0.0, abs=1e-12) and e["max"] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(e["mean_offset"], offset)
    e = metrics.position_errors(truth + offset, truth, remove_offset=False)
    assert e["rms"] == pytest.approx(5.0) and e["median"] == pytest.approx(5.0) and e["max"] == pytest.approx(5.0)
    jitter = rng.normal(0, 0.3, size=truth.shape)
    jitter -= np.median(jitter, axis=0)
    e = metrics.position_errors(truth + offset + jitter, truth)
    assert e["rms"] == pytest.approx(np.sqrt(np.mean(np.sum(jitter**2, axis=1))))
    np.testing.assert_allclose(e["offset"], offset)
    # a few positions stuck far off do not move the others' errors (a mean offset would)
    stuck = truth + offset
    stuck[:3] += 20.0
    e = metrics.position_errors(stuck, truth)
    assert e["median"] == pytest.approx(0.0, abs=1e-12) and e["max"] == pytest.approx(np.hypot(20, 20))


def test_z_error():
    e = metrics.z_error(1.02e-3, 1.0e-3)
    assert e["absolute"] == pytest.approx(2e-5) and e["relative"] == pytest.approx(0.02)
    assert e["error"] == pytest.approx(2e-5)


def test_bad_inputs_raise(rng):
    a = smooth_object(rng, (32, 32))
    nan = a.copy()
    nan[3, 4] = np.nan
    with pytest.raises(ValueError, match="same shape"):
        metrics.correlation(a, a[:, :31])
    with pytest.raises(ValueError, match="NaN"):
        metrics.correlation(nan, a)
    with pytest.raises(ValueError, match="NaN"):
        metrics.cpcc(a, nan)
    with pytest.raises(ValueError):
        metrics.ssim(a, a, part="real")
    with pytest.raises(ValueError, match="mask"):
        metrics.correlation(a, a, mask=np.zeros((32, 32), bool))
    with pytest.raises(ValueError, match="mask"):
        metrics.correlation(a, a, mask=np.ones((31, 32), bool))
    with pytest.raises(ValueError, match="zero energy"):
        metrics.correlation(np.zeros_like(a), a)
    with pytest.raises(ValueError):
        metrics.fourier_ring_correlation(a, a[:31])
    with pytest.raises(ValueError):
        metrics.remove_phase_ramp(nan)
    with pytest.raises(ValueError):
        metrics.position_errors(np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError):
        metrics.position_errors(np.full((5, 2), np.inf), np.zeros((5, 2)))
    with pytest.raises(ValueError):
        metrics.z_error(np.nan, 1.0)
    with pytest.raises(ValueError, match="constant"):
        metrics.ssim(np.abs(a), np.ones((32, 32)))


@pytest.mark.parametrize("border", ["flat", "noise", "ramp"])
def test_registration_uses_the_masked_region_not_the_unlit_border(border):
    """Was: whole-image registration locked onto a reconstruction's unlit region (noise, a phase ramp)
    and reported 0.04-0.1 for an object that matches to 0.99 where it is lit."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    n = 200
    smooth = lambda width: gaussian_filter(rng.standard_normal((n, n)), width)          # noqa: E731
    truth = 1 + 5 * (smooth(2) + 1j * smooth(2))
    yy, xx = np.mgrid[:n, :n]
    lit = (np.abs(yy - 100) < 25) & (np.abs(xx - 100) < 25)
    outside = {"flat": np.ones((n, n)), "ramp": 3 * np.exp(0.3j * xx),
               "noise": 20 * (smooth(4) + 1j * smooth(4))}[border]
    estimate = np.where(lit, 0.8 * np.exp(0.4j) * registration.fourier_shift(truth, np.array([1.3, -0.7])), outside)
    _, shift = metrics.align(estimate, truth, mask=lit)
    np.testing.assert_allclose(shift, [1.3, -0.7], atol=0.03)
    assert metrics.correlation(estimate, truth, mask=lit) > 0.85


@pytest.mark.parametrize("chunk_bytes", [1, 3 * 16 * 8 * 8, 64 * 2 ** 20])
def test_illuminated_sums_the_probe_power_over_the_scan_in_bounded_chunks(monkeypatch, rng, chunk_bytes):
    """The scan's patches were formed all at once (10 GB at 10k x 256^2); now a chunk at a time."""
    monkeypatch.setattr(metrics, "ILLUMINATED_CHUNK_BYTES", chunk_bytes)
    probe = rng.standard_normal((2, 8, 8)) + 1j * rng.standard_normal((2, 8, 8))
    positions = rng.integers(0, 12, (11, 2)).astype(np.float64)       # integer: an exact crop each
    power = np.sum(np.abs(probe) ** 2, axis=0)
    expected = np.zeros((20, 20))
    for y, x in positions.astype(int):
        expected[y:y + 8, x:x + 8] += power
    for fraction in (0.1, 0.5):
        np.testing.assert_array_equal(metrics.illuminated(probe, positions, (20, 20), fraction),
                                      expected >= fraction * expected.max())
