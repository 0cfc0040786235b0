"""kernels/exitwave.cu against the NumPy reference, with and without padding, and its adjoint law."""
from __future__ import annotations

import numpy as np
import pytest
from checks import DOT_TOL, assert_adjoint, random_complex
from conftest import assert_kernel_close, to_device, to_host

from cuptycho import reference
from cuptycho.launchers import exitwave

DTYPES = [np.complex64, np.complex128]
PADDINGS = [(0, 0), (3, 2)]


def case(dtype, seed=0, n_obj=2, n_probe=3, patch=(10, 7), n_pos=6):
    rng = np.random.default_rng(seed)
    obj = random_complex(rng, (n_obj, 29, 23), dtype)
    probe = random_complex(rng, (n_probe, *patch), dtype)
    pos = rng.uniform(0, 1, size=(n_pos, 2)) * (np.array(obj.shape[1:]) - patch)
    pos[0] = (np.array(obj.shape[1:]) - patch)          # far edge
    return obj, probe, pos


def window(buf, padding, patch):
    py, px = padding
    return buf[..., py:py + patch[0], px:px + patch[1]]


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_exitwave_fwd_matches_reference(device, dtype, padding):
    obj, probe, pos = case(dtype)
    out = to_host(exitwave.exitwave_fwd(*to_device(device, obj, probe, pos), padding=padding))
    expected = reference.exitwave_fwd(probe, reference.patch_fwd(obj, pos, probe.shape[-2:]))
    assert_kernel_close(window(out, padding, probe.shape[-2:]), expected, dtype)
    outside = out.copy()
    window(outside, padding, probe.shape[-2:])[...] = 0
    assert not np.any(outside)                            # the padding is zero


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_exitwave_adj_matches_reference(device, dtype, padding):
    obj, probe, pos = case(dtype, seed=1)
    rng = np.random.default_rng(2)
    buf_shape = (*pos.shape[:1], obj.shape[0], probe.shape[0],
                 probe.shape[1] + 2 * padding[0], probe.shape[2] + 2 * padding[1])
    grad_waves = random_complex(rng, buf_shape, dtype)      # junk in the padding must be ignored
    g_patch, g_probe = exitwave.exitwave_adj(*to_device(device, obj, probe, pos, grad_waves), padding=padding)
    g_psi = window(grad_waves, padding, probe.shape[-2:])
    patches = reference.patch_fwd(obj, pos, probe.shape[-2:])
    assert_kernel_close(g_patch, reference.exitwave_adj_obj(probe, g_psi), dtype)
    assert_kernel_close(g_probe, reference.exitwave_adj_probe(patches, g_psi), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_exitwave_adjoint_in_the_probe(device, dtype):
    obj, probe, pos = case(dtype, seed=3)
    rng = np.random.default_rng(4)
    d_obj, d_pos = to_device(device, obj, pos)
    y = random_complex(rng, (len(pos), obj.shape[0], *probe.shape), dtype)
    d_probe = to_device(device, probe)                  # the probe adjoint does not read the probe

    def adj(g):
        return to_host(exitwave.exitwave_adj(d_obj, d_probe, d_pos, to_device(device, g))[1])

    assert_adjoint(lambda p: to_host(exitwave.exitwave_fwd(d_obj, to_device(device, p), d_pos)), adj,
                   probe, y, DOT_TOL[np.dtype(dtype)])


def test_probe_gradient_accumulates():
    obj, probe, pos = case(np.complex128, seed=5)
    grad_waves = random_complex(np.random.default_rng(6), (len(pos), 2, 3, 10, 7))
    _, once = exitwave.exitwave_adj(obj, probe, pos, grad_waves)
    _, twice = exitwave.exitwave_adj(obj, probe, pos, grad_waves, grad_probe=once.copy())
    np.testing.assert_allclose(twice, 2 * once, rtol=1e-14)
