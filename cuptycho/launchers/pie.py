"""Launcher of kernels/pie.cu: the regularised PIE update step, in place, on NumPy or CuPy arrays.

Reference twin: `cuptycho.reference.pie_update` (returns the new param).
"""
from __future__ import annotations

import math

from ..backend import array_module
from ._core import REAL, field_dtype, i64, launch, require


def pie_update(param, grad, weight, weight_max, *, step, alpha, rel_floor=1e-8):
    """param += step * grad / max((1 - alpha) weight + alpha weight_max, rel_floor weight_max), in place.

    Parameters
    ----------
    param : (..., *plane) complex64 | complex128, C-contiguous; updated in place and returned.
    grad : same shape and dtype as param.
    weight : (*plane) real dtype of param, the last weight.ndim axes of param; shared by every
        leading index (mode).
    weight_max : (1,) real, max(weight) (left on the device: no synchronisation).
    step, alpha, rel_floor : numbers; alpha in [0, 1], rel_floor >= 0. Where the denominator is
        zero param is left unchanged.
    """
    dtype = field_dtype("param", param)
    real = REAL[dtype]
    require("param", param, dtype)
    require("grad", grad, dtype, param.shape)
    require("weight", weight, real)
    require("weight_max", weight_max, real, (1,))
    if weight.ndim > param.ndim or tuple(param.shape[param.ndim - weight.ndim:]) != tuple(weight.shape):
        raise ValueError(f"weight {tuple(weight.shape)} must match the last axes of param {tuple(param.shape)}")
    xp = array_module(param)
    if any(array_module(a) is not xp for a in (grad, weight, weight_max)):
        raise ValueError("param, grad, weight and weight_max must all be NumPy arrays or all CuPy arrays")
    if not (0.0 <= float(alpha) <= 1.0):
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
    if not math.isfinite(float(step)):
        raise ValueError(f"step must be finite, got {step!r}")
    if not (float(rel_floor) >= 0 and math.isfinite(float(rel_floor))):
        raise ValueError(f"rel_floor must be finite and >= 0, got {rel_floor!r}")
    t = real.type
    launch("pie", "pie_update", dtype,
           (param, grad, weight, weight_max, i64(param.size), i64(max(weight.size, 1)),
            i64(max(weight.shape[-1], 1) if weight.ndim else 1), t(step), t(alpha), t(rel_floor)), elements=param.size)
    return param
