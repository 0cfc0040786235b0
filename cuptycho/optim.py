"""Optimisers. `adam_reference` is the NumPy oracle of the fused Adam kernel (kernels/adam.cu).

Adam on complex parameters (MATH.md): a complex number is two real numbers for the optimiser,
so the moments are kept per real component. The state of a complex parameter of shape S has
shape S + (2,): [..., 0] for the real part, [..., 1] for the imaginary part (the layout of
`cuptycho.launchers.adam.adam_state`).
"""
from __future__ import annotations

import numpy as np


def adam_reference(param, grad, m, v, *, step, lr, betas=(0.9, 0.999), eps=1e-8):
    """One Adam step (PyTorch's formulation), computed in float64; returns new (param, m, v).

    param, grad : (S) real or complex NumPy arrays (grad = dL/dRe + i dL/dIm for complex).
    m, v : (S) for real param, (*S, 2) for complex param, the real dtype of param.
    The results have the dtypes of the inputs. Nothing is modified in place.
    """
    param, grad = np.asarray(param), np.asarray(grad)
    is_complex = np.iscomplexobj(param)
    if is_complex:                       # each complex number is the pair (real part, imaginary part)
        p = np.stack([param.real, param.imag], axis=-1).astype(np.float64)
        g = np.stack([grad.real, grad.imag], axis=-1).astype(np.float64)
    else:
        p, g = param.astype(np.float64), grad.astype(np.float64)
    b1, b2 = betas
    m_new = b1 * np.asarray(m, np.float64) + (1 - b1) * g
    v_new = b2 * np.asarray(v, np.float64) + (1 - b2) * g**2
    m_hat = m_new / (1 - b1**step)
    v_hat = v_new / (1 - b2**step)
    p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    p_new = p[..., 0] + 1j * p[..., 1] if is_complex else p
    return p_new.astype(param.dtype), m_new.astype(np.asarray(m).dtype), v_new.astype(np.asarray(v).dtype)
