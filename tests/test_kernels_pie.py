"""kernels/pie.cu against the NumPy reference (cuptycho.reference.pie_update), on every device."""
from __future__ import annotations

import numpy as np
import pytest
from checks import random_complex
from conftest import assert_kernel_close, to_device, to_host

from cuptycho import reference
from cuptycho.launchers.pie import pie_update

DTYPES = [np.complex64, np.complex128]


def case(rng, shape, plane_ndim, dtype):
    param, grad = random_complex(rng, shape, dtype), random_complex(rng, shape, dtype)
    real = reference.real_dtype(dtype)
    weight = rng.uniform(0, 3, shape[len(shape) - plane_ndim:]).astype(real)
    weight.reshape(-1)[::5] = 0                      # unlit pixels: only the alpha * max term is left
    return param, grad, weight, np.array([weight.max()], real)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("shape, plane_ndim", [((3, 17, 13), 2), ((2, 9, 11), 3), ((31,), 1)])
def test_pie_update_matches_reference(device, dtype, alpha, shape, plane_ndim):
    rng = np.random.default_rng(4)
    param, grad, weight, wmax = case(rng, shape, plane_ndim, dtype)
    expected = reference.pie_update(param, grad, weight, wmax, step=-0.7, alpha=alpha, rel_floor=1e-3)
    d_param, d_grad, d_weight, d_wmax = to_device(device, param.copy(), grad, weight, wmax)
    out = pie_update(d_param, d_grad, d_weight, d_wmax, step=-0.7, alpha=alpha, rel_floor=1e-3)
    assert out is d_param
    # the displacement, so a wrong update cannot hide below |param|
    assert_kernel_close(to_host(out) - param, expected - param, dtype)
    assert np.abs(expected - param).max() > 0.1


def test_pie_update_formula_by_hand():
    """One element per case, written out: the reference itself is right."""
    param = np.array([[1 + 1j, 2, 0, 5]], np.complex128)
    grad = np.array([[1j, 2, 4, 1]], np.complex128)
    weight = np.array([4.0, 1.0, 0.0, 0.0])
    out = reference.pie_update(param, grad, weight, np.array([4.0]), step=2.0, alpha=0.25)
    d = np.array([4.0, 0.75 * 1 + 1, 1.0, 1.0])            # (1 - a) w + a max
    np.testing.assert_allclose(out, param + 2.0 * grad / d)
    # alpha = 0 and an unlit pixel: the floor, not a division by zero
    out = reference.pie_update(param, grad, weight, np.array([4.0]), step=1.0, alpha=0.0, rel_floor=0.5)
    np.testing.assert_allclose(out[0, 2:], param[0, 2:] + grad[0, 2:] / 2.0)
    # nothing lit at all: unchanged, no NaN
    out = reference.pie_update(param, grad, np.zeros(4), np.array([0.0]), step=1.0, alpha=0.5)
    np.testing.assert_array_equal(out, param)


def test_pie_update_leaves_unlit_params_alone(device):
    param = np.ones((2, 4, 4), np.complex64)
    grad = np.full((2, 4, 4), 1 + 1j, np.complex64)
    weight, wmax = np.zeros((4, 4), np.float32), np.zeros(1, np.float32)
    d_param, *rest = to_device(device, param.copy(), grad, weight, wmax)
    pie_update(d_param, *rest, step=1.0, alpha=0.0)
    np.testing.assert_array_equal(to_host(d_param), param)


@pytest.mark.parametrize("bad, message", [
    (dict(weight=np.ones((5, 4), np.float32)), r"weight \(5, 4\) must match the last axes"),
    (dict(weight=np.ones((4, 4))), "weight must have dtype float32"),
    (dict(weight_max=np.ones(2, np.float32)), r"weight_max must have shape \(1,\)"),
    (dict(grad=np.ones((2, 4, 4), np.complex128)), "grad must have dtype complex64"),
    (dict(alpha=1.5), r"alpha must lie in \[0, 1\]"),
    (dict(step=np.nan), "step must be finite"),
])
def test_pie_update_rejects_bad_arguments(bad, message):
    args = dict(param=np.ones((2, 4, 4), np.complex64), grad=np.ones((2, 4, 4), np.complex64),
                weight=np.ones((4, 4), np.float32), weight_max=np.ones(1, np.float32), step=1.0, alpha=0.5)
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        pie_update(args.pop("param"), args.pop("grad"), args.pop("weight"), args.pop("weight_max"), **args)
