"""kernels/propagate.cu against reference.TransferFunctionPropagator, and its adjoint law, on every device.

The kernels act on raw (unnormalised) FFT buffers of the padded grid with h = H_z / n; the FFTs,
zero padding and crop are done here in NumPy, as the pipeline does them with its FFT library.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.fft as sfft
from checks import DOT_TOL, assert_adjoint, random_complex
from conftest import assert_kernel_close, to_device, to_host

from cuptycho import reference
from cuptycho.launchers import propagate as pr

DTYPES = [np.complex64, np.complex128]
# (kind, shape, padding): odd and even grids, with and without padding
CASES = [("angular_spectrum", (12, 10), (3, 2)), ("fresnel", (11, 9), (2, 3)), ("angular_spectrum", (9, 12), (0, 0))]
IDS = ["asm-even-padded", "fresnel-odd-padded", "asm-unpadded"]


def setup(dtype, kind, shape, padding, batch=(3, 2, 2), seed=0):
    """Propagator, its kernel arguments (h / n, kz) and random exit waves / gradients (batch..., Ny, Nx)."""
    rng = np.random.default_rng(seed)
    prop = reference.make_propagator(kind, shape, z=2e-5, wavelength=1e-10, pixel_size=1e-8,
                                     padding=padding, dtype=dtype)
    h = np.ascontiguousarray((prop.h.astype(np.complex128) / prop.h.size).astype(dtype))
    psi = random_complex(rng, (*batch, *shape), dtype)
    grad = random_complex(rng, (*batch, *shape), dtype)
    return prop, h, psi, grad


def fft_raw(x):
    """Unnormalised forward FFT over the last two axes, in x's precision (scipy keeps complex64)."""
    return np.ascontiguousarray(sfft.fft2(x, axes=(-2, -1)))


def ifft_raw(x):
    """Unnormalised inverse FFT (no 1/n), in x's precision."""
    return np.ascontiguousarray(sfft.ifft2(x, axes=(-2, -1), norm="forward"))


def kernel_fwd(device, prop, h, psi, keep_spectrum=False):
    """Crop(IFFT_raw(spectrum_fwd(FFT_raw(Pad psi), h / n))) and the stored spectrum."""
    x = to_device(device, fft_raw(prop._pad(psi)))
    spectrum = to_device(device, np.zeros_like(to_host(x))) if keep_spectrum else None
    assert pr.spectrum_fwd(x, to_device(device, h), spectrum_out=spectrum) is x
    out = prop._crop(ifft_raw(to_host(x)))
    return (out, to_host(spectrum)) if keep_spectrum else out


def kernel_adj(device, prop, h, grad, spectrum=None):
    """Crop(IFFT_raw(spectrum_adj(FFT_raw(Pad grad), h / n))) and dz_rows."""
    g = to_device(device, fft_raw(prop._pad(grad)))
    d_spec = None if spectrum is None else to_device(device, spectrum)
    dz_rows = pr.spectrum_adj(g, to_device(device, h), to_device(device, prop.kz), spectrum=d_spec)
    return prop._crop(ifft_raw(to_host(g))), (None if dz_rows is None else to_host(dz_rows))


@pytest.mark.parametrize("kind, shape, padding", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_spectrum_fwd_matches_reference(device, dtype, kind, shape, padding):
    prop, h, psi, _ = setup(dtype, kind, shape, padding)
    out, spectrum = kernel_fwd(device, prop, h, psi, keep_spectrum=True)
    assert out.dtype == dtype and spectrum.dtype == dtype
    assert_kernel_close(out, prop.fwd(psi), dtype)
    # the stored raw-FFT spectrum is the unitary one divided by sqrt(n)
    assert_kernel_close(spectrum, prop.spectrum(psi) / np.sqrt(prop.h.size), dtype)
    assert_kernel_close(kernel_fwd(device, prop, h, psi), prop.fwd(psi), dtype)   # without spectrum_out


@pytest.mark.parametrize("kind, shape, padding", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_spectrum_adj_and_dz_match_reference(device, dtype, kind, shape, padding):
    prop, h, psi, grad = setup(dtype, kind, shape, padding)
    _, spectrum = kernel_fwd(device, prop, h, psi, keep_spectrum=True)
    out, dz_rows = kernel_adj(device, prop, h, grad, spectrum)
    ref_spectrum = prop.spectrum(psi)
    expected, dz = prop.adj_and_dz(grad, ref_spectrum)
    assert_kernel_close(out, expected, dtype)
    assert dz_rows.shape == (*psi.shape[:-2], prop.h.shape[0]) and dz_rows.dtype == np.float64
    assert_kernel_close(np.array(dz_rows.sum()), np.array(dz), dtype)
    # without a spectrum: the same multiply, no dz
    out2, none = kernel_adj(device, prop, h, grad)
    assert none is None
    assert_kernel_close(out2, expected, dtype)


def test_dz_rows_accumulate(device):
    prop, h, psi, grad = setup(np.complex128, "fresnel", (11, 9), (2, 3), batch=(4,))
    _, spectrum = kernel_fwd(device, prop, h, psi, keep_spectrum=True)
    g = fft_raw(prop._pad(grad))
    d_h, d_kz, d_spec = to_device(device, h, prop.kz, spectrum)
    first = to_host(pr.spectrum_adj(to_device(device, g.copy()), d_h, d_kz, spectrum=d_spec))
    rows = to_device(device, first.reshape(2, -1).copy())          # any layout with the right size
    assert pr.spectrum_adj(to_device(device, g.copy()), d_h, d_kz, spectrum=d_spec, dz_rows=rows) is rows
    assert_kernel_close(rows, 2 * first.reshape(2, -1), np.complex128)


@pytest.mark.parametrize("kind, shape, padding", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_propagator_adjoint(device, dtype, kind, shape, padding):
    prop, h, psi, grad = setup(dtype, kind, shape, padding, seed=5)
    assert_adjoint(lambda x: kernel_fwd(device, prop, h, x).astype(dtype),
                   lambda y: kernel_adj(device, prop, h, y)[0].astype(dtype),
                   psi, grad, DOT_TOL[np.dtype(dtype)])


@pytest.mark.parametrize("bad, message", [
    (dict(x=np.zeros((2, 8, 7), np.complex64)), "h must have dtype complex64"),
    (dict(h=np.zeros((7, 8), np.complex128)), "h must have shape (8, 7)"),
    (dict(x=np.zeros((2, 8, 14), np.complex128)[..., ::2]), "x must be C-contiguous"),
    (dict(x=np.zeros((8,), np.complex128)), "x must have at least 2 dimensions"),
    (dict(spectrum_out=np.zeros((2, 8, 7), np.complex64)), "spectrum_out must have dtype complex128"),
    (dict(spectrum_out=np.zeros((1, 8, 7), np.complex128)), "spectrum_out must have shape (2, 8, 7)"),
])
def test_fwd_launcher_rejects_bad_arguments(bad, message):
    args = {**dict(x=np.zeros((2, 8, 7), np.complex128), h=np.zeros((8, 7), np.complex128)), **bad}
    with pytest.raises(ValueError, match=re.escape(message)):
        pr.spectrum_fwd(**args)


@pytest.mark.parametrize("bad, message", [
    (dict(kz=np.zeros((8, 7), np.float32)), "kz must have dtype float64"),
    (dict(kz=None), "kz is required with a spectrum"),
    (dict(spectrum=np.zeros((2, 7, 8), np.complex128)), "spectrum must have shape (2, 8, 7)"),
    (dict(dz_rows=np.zeros(15)), "dz_rows must have 2 * 8 elements"),
    (dict(dz_rows=np.zeros((2, 8), np.float32)), "dz_rows must have dtype float64"),
])
def test_adj_launcher_rejects_bad_arguments(bad, message):
    args = {**dict(g=np.zeros((2, 8, 7), np.complex128), h=np.zeros((8, 7), np.complex128),
                   kz=np.zeros((8, 7)), spectrum=np.zeros((2, 8, 7), np.complex128)), **bad}
    with pytest.raises(ValueError, match=re.escape(message)):
        pr.spectrum_adj(**args)
