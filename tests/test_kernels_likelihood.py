"""kernels/likelihood.cu in the model's raw-FFT pipeline, against the NumPy model on every device.

(The kernel against its twin reference.likelihood on the same buffer: test_kernels_twins.py.)

The kernel sees the propagated waves as the raw FFT pipeline leaves them: far field, the raw
(unnormalised) FFT of the exit waves, unshifted (the kernel folds fftshift into its indices);
near field, the padded propagated field (the crop is folded into its indices). Its output
buffer, pushed back through the raw inverse FFT (far field) or the propagator's adjoint (near
field), must reproduce the reference G_psi = A^H (2 w l' Psi / J).
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.fft as sfft
from checks import random_complex
from conftest import assert_kernel_close, to_device, to_host

from cuptycho import reference
from cuptycho.launchers import likelihood as lk
from cuptycho.launchers import propagate as pr

DTYPES = [np.complex64, np.complex128]
# (name, propagator kind, window shape, padding)
GEOMETRIES = [
    ("farfield-even", "farfield", (12, 10), (0, 0)),
    ("farfield-odd", "farfield", (11, 9), (0, 0)),
    ("near-even-padded", "angular_spectrum", (12, 10), (3, 2)),
    ("near-odd-padded", "fresnel", (11, 9), (2, 3)),
]
NEAR = dict(z=2e-5, wavelength=1e-10, pixel_size=1e-8)


def case(dtype, kind, shape, padding, mask_kind, n_pos=5, mo=2, k=2, seed=0):
    """Model, propagator, photon-count data with zeros, and a mask with zeros."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    real = reference.real_dtype(dtype)
    obj = (1 + 0.3 * random_complex(rng, (mo, ny + 6, nx + 7))).astype(dtype)
    probe = 3 * random_complex(rng, (k, ny, nx), dtype)
    pos = rng.uniform(0, 1, (n_pos, 2)) * (6, 7)
    prop = reference.make_propagator(kind, shape, padding=padding, dtype=dtype,
                                     **({} if kind == "farfield" else NEAR))
    truth = (obj * np.exp(0.2j * rng.standard_normal(obj.shape))).astype(dtype)
    data = rng.poisson(reference.forward(truth, probe, pos, prop).astype(np.float64)).astype(real)
    data[:, 0, :3] = 0                                   # zeros whatever the draw (weighted's d = 0 branch)
    mshape = (ny, nx) if mask_kind == "2d" else (n_pos, ny, nx)
    mask = (rng.uniform(size=mshape) > 0.2).astype(real)
    return obj, probe, pos, prop, data, mask


def fft_raw(x):
    """Unnormalised forward FFT over the last two axes, in x's precision (scipy keeps complex64)."""
    return np.ascontiguousarray(sfft.fft2(x, axes=(-2, -1)))


def ifft_raw(x):
    """Unnormalised inverse FFT (no 1/n), in x's precision."""
    return np.ascontiguousarray(sfft.ifft2(x, axes=(-2, -1), norm="forward"))


def exit_waves(obj, probe, pos):
    return reference.exitwave_fwd(obj, probe, pos)


def reference_grad_far(prop, psi, data, mask, loss):
    """(spectrum or None, G_Psi = 2 w l'(I, d) Psi / J) on the unitary propagated waves, as in loss_and_grad."""
    spectrum = prop.spectrum(psi) if prop.depends_on_z else None
    psi_far = prop.fwd(psi, spectrum) if prop.depends_on_z else prop.fwd(psi)
    return spectrum, reference.likelihood(psi_far, data, mask, loss=loss, n_total=psi.shape[0])[1]


def work_buffer(prop, psi):
    """What the FFT pipeline hands the kernel: (J, Mo*K, buf_ny, buf_nx) in psi's dtype."""
    j, mo, k, ny, nx = psi.shape
    if isinstance(prop, reference.FarField):
        buf = fft_raw(psi)                                             # unshifted
    else:
        buf = reference.ifft2(prop.spectrum(psi))                      # padded, before the crop
    return np.ascontiguousarray(buf.astype(psi.dtype).reshape(j, mo * k, *buf.shape[-2:]))


def prop_buffer_shape(prop, shape):
    return shape if isinstance(prop, reference.FarField) else prop.h.shape


def geometry_kwargs(prop, shape):
    """shift / padding / intensity_scale of the kernel for this propagator (raw FFTs)."""
    ny, nx = shape
    if isinstance(prop, reference.FarField):
        return dict(shift=(ny // 2, nx // 2), intensity_scale=1.0 / (ny * nx))
    return dict(padding=prop.padding)


def run_likelihood(device, prop, buf, data, mask, loss, shape):
    d_buf, d_data, d_mask = to_device(device, buf, data, mask)
    rows = lk.likelihood(d_buf, d_data, d_mask, loss=loss, n_total=data.shape[0], **geometry_kwargs(prop, shape))
    return to_host(rows), to_host(d_buf)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=[g[0] for g in GEOMETRIES])
@pytest.mark.parametrize("mask_kind", ["2d", "per-pattern"])
@pytest.mark.parametrize("loss", reference.LOSSES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_likelihood_matches_reference(device, dtype, loss, mask_kind, geometry):
    _, kind, shape, padding = geometry
    obj, probe, pos, prop, data, mask = case(dtype, kind, shape, padding, mask_kind)
    psi = exit_waves(obj, probe, pos)
    j, mo, k, ny, nx = psi.shape
    buf = work_buffer(prop, psi).reshape(j, mo, k, *prop_buffer_shape(prop, shape))   # (J, Mo, K, ...) as the model
    rows, out = run_likelihood(device, prop, buf, data, mask, loss, shape)

    value, _ = reference.loss_and_grad(obj, probe, pos, data, mask, loss, prop)
    assert rows.shape == (j, ny) and rows.dtype == np.float64
    assert_kernel_close(np.array(rows.sum() / j), np.array(value), dtype)

    _, grad_far = reference_grad_far(prop, psi, data, mask, loss)
    expected = prop.adj(grad_far)                                       # reference G_psi
    out = out.reshape(j, mo, k, *out.shape[-2:])
    if isinstance(prop, reference.FarField):
        grad_psi = ifft_raw(out)
    else:
        py, px = padding
        outside = np.ones(out.shape[-2:], bool)
        outside[py:py + ny, px:px + nx] = False
        assert not np.any(out[..., outside]), "buffer pixels outside the window must be zero"
        grad_psi = prop.adj(np.ascontiguousarray(out[..., py:py + ny, px:px + nx]))
    assert_kernel_close(grad_psi, expected, dtype)


@pytest.mark.parametrize("loss", reference.LOSSES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_near_field_pipeline_reproduces_reference_gradients(device, dtype, loss):
    """raw FFT -> spectrum_fwd -> raw IFFT -> likelihood -> raw FFT -> spectrum_adj -> raw IFFT -> crop
    gives the reference loss, G_psi and dL/dz (z through both kernels' scaling conventions)."""
    obj, probe, pos, prop, data, mask = case(dtype, "angular_spectrum", (12, 10), (3, 2), "per-pattern", seed=1)
    psi = exit_waves(obj, probe, pos)
    j, mo, k, ny, nx = psi.shape
    (py, px), n = prop.padding, prop.h.size
    h = to_device(device, np.ascontiguousarray((prop.h.astype(np.complex128) / n).astype(dtype)))
    kz = to_device(device, prop.kz)

    buf = to_device(device, fft_raw(prop._pad(psi)).reshape(j, mo * k, *prop.h.shape))
    spectrum = to_device(device, np.empty_like(to_host(buf)))
    pr.spectrum_fwd(buf, h, spectrum_out=spectrum)
    buf = to_device(device, ifft_raw(to_host(buf)))
    rows = lk.likelihood(buf, *to_device(device, data, mask), loss=loss, n_total=j, padding=(py, px))
    buf = to_device(device, fft_raw(to_host(buf)))
    dz_rows = pr.spectrum_adj(buf, h, kz, spectrum=spectrum)
    grad_psi = ifft_raw(to_host(buf)).reshape(j, mo, k, *prop.h.shape)[..., py:py + ny, px:px + nx]

    value, grads = reference.loss_and_grad(obj, probe, pos, data, mask, loss, prop)
    ref_spectrum, grad_far = reference_grad_far(prop, psi, data, mask, loss)
    expected, dz = prop.adj_and_dz(grad_far, ref_spectrum)
    assert_kernel_close(np.array(dz), np.array(grads["z"]), np.complex128)   # the helper is loss_and_grad's
    assert_kernel_close(np.array(to_host(rows).sum() / j), np.array(value), dtype)
    assert_kernel_close(grad_psi, expected, dtype)
    assert_kernel_close(np.array(to_host(dz_rows).sum()), np.array(dz), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_rows_accumulate_and_chunks_add_up(device, dtype):
    """Two chunks of one batch (n_total = J) give the batch's loss and G_Psi; a given loss_rows accumulates."""
    obj, probe, pos, prop, data, mask = case(dtype, "farfield", (12, 10), (0, 0), "per-pattern")
    psi = exit_waves(obj, probe, pos)
    j = psi.shape[0]
    buf = work_buffer(prop, psi)
    kw = dict(loss="poisson", n_total=j, shift=(6, 5), intensity_scale=1 / 120)
    whole_buf = to_device(device, buf.copy())
    whole = to_host(lk.likelihood(whole_buf, *to_device(device, data, mask), **kw))
    parts = []
    for sl in (slice(0, 2), slice(2, j)):
        part_buf = to_device(device, buf[sl].copy())               # the kernel writes in place
        rows = lk.likelihood(part_buf, *to_device(device, data[sl].copy(), mask[sl].copy()), **kw)
        parts.append((to_host(rows), to_host(part_buf)))
    assert_kernel_close(np.concatenate([p[0] for p in parts]), whole, dtype)
    assert_kernel_close(np.concatenate([p[1] for p in parts]), to_host(whole_buf), dtype)

    again_buf = to_device(device, buf.copy())
    rows = to_device(device, whole.copy())
    out = lk.likelihood(again_buf, *to_device(device, data, mask), rows, **kw)
    assert out is rows
    assert_kernel_close(out, 2 * whole, dtype)


def test_weighted_loss_without_data_is_intensity(device):
    """d = 0 everywhere: weighted loss = sum I, gradient factor 1 (the d > 0 branch never taken)."""
    rng = np.random.default_rng(4)
    waves = random_complex(rng, (2, 3, 6, 5))
    data, mask = np.zeros((2, 6, 5)), np.ones((6, 5))
    d_waves = to_device(device, waves.copy())
    rows = lk.likelihood(d_waves, *to_device(device, data, mask), loss="weighted", n_total=2)
    assert_kernel_close(rows, (np.abs(waves) ** 2).sum(axis=(1, 3)), np.complex128)
    assert_kernel_close(d_waves, waves, np.complex128)        # grad_scale 2/2 times l' = 1


def poisson_deviance(i, d, eps):
    """(d + eps) g(x), g(x) = x - log1p(x), x = (i - d)/(d + eps), in float64 with no cancellation.

    The kernel's own split is not reused: a power series for |x| < 0.1, log1p beyond (x >= -0.5),
    and log of (i + eps)/(d + eps) near x = -1, where 1 + x has lost its digits."""
    i, d = np.asarray(i, np.float64), np.asarray(d, np.float64)
    de = d + eps
    x = (i - d) / de
    xs = np.clip(x, -0.1, 0.1)
    series = sum((-xs) ** k / k for k in range(2, 31))                 # |x| < 0.1: < 1e-18 of g left out
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(np.abs(x) < 0.1, series,
                     np.where(x < -0.5, x - np.log((i + eps) / de), x - np.log1p(np.maximum(x, -0.5))))
    return de * g


# per-pixel relative accuracy of the poisson value (measured: 6.5e-7 and 1.3e-15; float's worst
# where I/d' ~ 0.7 or 1.4, from the rounding of I'/d' itself)
POISSON_RTOL = {np.complex64: 2e-6, np.complex128: 1e-13}


@pytest.mark.parametrize("dtype", DTYPES)
def test_poisson_value_is_precise_per_pixel(device, dtype):
    """Each pixel's poisson loss, from I << d to I >> d and at I = d, against an independent float64
    deviance, to a relative accuracy near the field's epsilon (the terms I' - d' log I' + d' log d' - d'
    cancel to O(1) from O(d log d)): >= 0, and exactly 0 at I = d."""
    rng = np.random.default_rng(7)
    real = reference.real_dtype(dtype)
    counts = np.concatenate([np.zeros(30), rng.integers(1, 4, 100), rng.poisson(100, 200), rng.poisson(1e4, 100),
                             np.full(30, 1e6)])
    d = np.repeat(counts, 30).astype(real)
    n = d.size
    ratio = np.concatenate([np.exp(rng.uniform(-30, 20, n // 3)),                         # far from the data
                            rng.uniform(0.3, 3, n // 3),                                 # across u ~ 0.7 and 1.4
                            1 + rng.standard_normal(n - 2 * (n // 3)) * 10.0 ** rng.uniform(-7, -1, n - 2 * (n // 3))])
    amp = np.sqrt(np.maximum(d.astype(np.float64), 1e-3) * ratio).astype(real)
    amp[::97] = np.sqrt(d[::97])                                      # I = d exactly where sqrt(d) is exact
    i = amp * amp                                                     # the kernel's I: one mode, real, scale 1
    exact = i == d
    assert np.count_nonzero(exact) > 50
    waves = to_device(device, amp.astype(dtype).reshape(n, 1, 1, 1))   # one 1x1 pattern per pixel
    rows = to_host(lk.likelihood(waves, *to_device(device, d.reshape(n, 1, 1), np.ones((1, 1), real)),
                                 loss="poisson", n_total=1))[:, 0]
    truth = poisson_deviance(i, d, float(real.type(reference.EPS)))
    np.testing.assert_allclose(rows, truth, rtol=POISSON_RTOL[dtype], atol=0)
    assert np.all(rows >= 0) and np.all(rows[exact] == 0)


@pytest.mark.parametrize("bad, message", [
    (dict(data=np.zeros((3, 6, 5), np.float32)), "data must have dtype float64"),
    (dict(data=np.zeros((2, 6, 5))), "data must have shape (3, 6, 5)"),
    (dict(mask=np.ones((5, 6))), "mask must have shape (6, 5)"),
    (dict(mask=np.ones((2, 6, 5))), "mask must have shape (3, 6, 5)"),
    (dict(waves=np.zeros((3, 2, 8, 7), np.complex128)[..., ::-1]), "waves must be C-contiguous"),
    (dict(waves=np.zeros((3, 2, 8, 7), np.float64)), "waves must be complex64 or complex128"),
    (dict(padding=(3, 1)), "does not fit the buffer"),
    (dict(shift=(6, 0)), "shift (6, 0) must lie in"),
    (dict(loss="l1"), "loss must be one of"),
    (dict(n_total=0), "n_total must be positive"),
    (dict(loss_rows=np.zeros((3, 5))), "loss_rows must have 3 * 6 elements"),
    (dict(loss_rows=np.zeros((3, 6), np.float32)), "loss_rows must have dtype float64"),
    (dict(waves=np.zeros((8, 7), np.complex128)), "waves must have shape (J, *modes, buf_ny, buf_nx)"),
])
def test_launcher_rejects_bad_arguments(bad, message):
    args = {**dict(waves=np.zeros((3, 2, 8, 7), np.complex128), data=np.zeros((3, 6, 5)), mask=np.ones((6, 5)),
                   loss="gaussian", n_total=3, padding=(1, 1)), **bad}
    with pytest.raises(ValueError, match=re.escape(message)):
        lk.likelihood(**args)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=[g[0] for g in GEOMETRIES])
@pytest.mark.parametrize("dtype", DTYPES)
def test_intensity_matches_reference(device, dtype, geometry):
    """The forward-only entry: modelled intensities in detector order, waves untouched."""
    _, kind, shape, padding = geometry
    obj, probe, pos, prop, _, _ = case(dtype, kind, shape, padding, "2d")
    psi = exit_waves(obj, probe, pos)
    buf = work_buffer(prop, psi).reshape(*psi.shape[:3], *prop_buffer_shape(prop, shape))
    d_buf = to_device(device, buf.copy())
    out = lk.intensity(d_buf, **geometry_kwargs(prop, shape))
    expected = reference.forward(obj, probe, pos, prop)
    assert out.dtype == expected.dtype
    assert_kernel_close(out, expected, dtype)
    assert np.array_equal(to_host(d_buf), buf)
    given = to_device(device, np.full(expected.shape, np.nan, expected.dtype))
    assert lk.intensity(d_buf, given, **geometry_kwargs(prop, shape)) is given
    assert_kernel_close(given, expected, dtype)


def test_intensity_launcher_rejects_bad_arguments():
    waves = np.zeros((3, 2, 8, 7), np.complex64)
    with pytest.raises(ValueError, match=re.escape("out must have dtype float32")):
        lk.intensity(waves, np.zeros((3, 8, 7)))
    with pytest.raises(ValueError, match=re.escape("out must have shape (3, 6, 5)")):
        lk.intensity(waves, np.zeros((2, 6, 5), np.float32), padding=(1, 1))
    with pytest.raises(ValueError, match=re.escape("does not fit the buffer")):
        lk.intensity(waves, padding=(-1, 0))
