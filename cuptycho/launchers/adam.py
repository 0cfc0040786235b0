"""Launcher of kernels/adam.cu: one fused, in-place Adam step on NumPy or CuPy arrays.

State layout: a real parameter of shape S (float32 | float64) has moments m, v of shape S and
its dtype. A complex parameter of shape S (complex64 | complex128) is optimised as its
interleaved reals (MATH.md "Adam on complex parameters"): m and v have shape S + (2,) and the
matching real dtype, [..., 0] holding the real-part moments and [..., 1] the imaginary-part
moments. That is `real_view(param)`'s shape, the memory layout of the complex array itself
(torch.view_as_real's convention), so the kernel sees four real arrays of equal length and
nothing is copied. `adam_state(param)` allocates zeroed moments in this layout.

Reference twin: `cuptycho.reference.adam_step` (returns the new (param, m, v)).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..backend import array_module
from ._core import REAL, i64, launch, require

REAL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def real_view(a):
    """`a` as real numbers without a copy: complex (S) -> (*S, 2) real, real arrays unchanged."""
    if a.dtype in REAL:
        if not a.flags.c_contiguous:
            raise ValueError("a complex array must be C-contiguous to be viewed as interleaved reals")
        return a.reshape(-1).view(REAL[a.dtype]).reshape(tuple(a.shape) + (2,))
    return a


def _param_dtype(param):
    if param.dtype not in REAL and param.dtype not in REAL_DTYPES:
        raise ValueError(f"param must be float32, float64, complex64 or complex128, got {param.dtype}")
    return param.dtype


def adam_state(param):
    """Zeroed first and second moments (m, v) for `param`, in the layout of `real_view(param)`."""
    _param_dtype(param)
    xp = array_module(param)
    shape = tuple(param.shape) + ((2,) if param.dtype in REAL else ())
    dtype = REAL.get(param.dtype, param.dtype)
    return xp.zeros(shape, dtype), xp.zeros(shape, dtype)


def _address(a):
    return a.ctypes.data if isinstance(a, np.ndarray) else a.data.ptr


def _require_distinct(arrays):
    """The kernel's pointers are __restrict__: no two of param, grad, m, v may overlap."""
    spans = sorted((_address(a), _address(a) + a.nbytes, name) for name, a in arrays.items() if a.nbytes)
    for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
        if start < end:
            raise ValueError(f"{first} and {second} must not share memory")


def adam_step(param, grad, m, v, *, step, lr, betas=(0.9, 0.999), eps=1e-8):
    """One Adam step (PyTorch's formulation), in place on `param`, `m` and `v`; returns `param`.

    m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;  param <- param - lr (m/bias1) / (sqrt(v/bias2) + eps)
    with bias1 = 1 - b1^step, bias2 = 1 - b2^step (computed here in double).

    Parameters
    ----------
    param : (S) float32 | float64 | complex64 | complex128, C-contiguous; updated in place.
    grad : (S) same dtype as param. For complex param, grad = dL/dRe + i dL/dIm (MATH.md).
    m, v : (S) or, for complex param, (*S, 2) real dtype of param; updated in place. Start from
        `adam_state(param)`.
    step : int >= 1, the number of this step (1 for the first).
    lr : float, learning rate (finite).
    betas : (beta1, beta2), each in [0, 1).
    eps : float >= 0, added to the root of the corrected second moment.
    """
    dtype = _param_dtype(param)
    rdtype = REAL.get(dtype, dtype)
    require("param", param, dtype)
    require("grad", grad, dtype, param.shape)
    state_shape = tuple(param.shape) + ((2,) if dtype in REAL else ())
    require("m", m, rdtype, state_shape)
    require("v", v, rdtype, state_shape)
    xp = array_module(param, grad, m, v)
    if any(array_module(a) is not xp for a in (param, grad, m, v)):
        raise ValueError("param, grad, m and v must all be NumPy arrays or all CuPy arrays")
    _require_distinct(dict(param=param, grad=grad, m=m, v=v))
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 1:
        raise ValueError(f"step must be an integer >= 1, got {step!r}")
    beta1, beta2 = (float(b) for b in betas)
    if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
        raise ValueError(f"betas must lie in [0, 1), got {tuple(betas)}")
    if not math.isfinite(float(lr)):
        raise ValueError(f"lr must be finite, got {lr!r}")
    if not (eps >= 0 and math.isfinite(float(eps))):
        raise ValueError(f"eps must be finite and >= 0, got {eps!r}")
    bias1, bias2 = 1.0 - beta1 ** int(step), 1.0 - beta2 ** int(step)
    real = rdtype.type
    args = (real_view(param), real_view(grad), m, v, i64(m.size),
            real(lr), real(beta1), real(beta2), real(eps), real(bias1), real(bias2))
    launch("adam", "adam_step", rdtype, args, elements=m.size)
    return param
