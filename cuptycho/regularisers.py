"""Regularisers added to the data loss: adaptive total variation, amplitude range, probe power.

Every regulariser is a small object with

- ``value_and_grad(x) -> (value, grad)``: ``value`` a Python float, ``grad`` an array of the
  shape, dtype and array module (NumPy or CuPy) of ``x``, in the Wirtinger convention of
  MATH.md, ``grad = dR/dRe(x) + i dR/dIm(x)``, so that a step ``dx`` changes the value by
  ``Re(vdot(grad, dx))``. Real floating inputs get the ordinary derivative (the same formulas).
- ``value(x, weighted=True) -> float``: the value alone (``weighted=False`` leaves out
  ``weight``, which is what an engine needs to rescale the term against the data loss).
- ``weight``: a settable non-negative attribute multiplying value and gradient. The engine may
  change it every epoch (e.g. to keep a fixed ratio to the data term).

Constructor parameters are validated (ValueError naming the parameter). Inputs are checked for
dtype and number of dimensions only: a finiteness check would cost a reduction (and a device
synchronisation on the GPU) per call. Values are accumulated in float64 whatever the input
precision; gradients are computed in the precision of the input.
"""
from __future__ import annotations

import math

import numpy as np

from .backend import array_module

__all__ = ["Regulariser", "AdaptiveTV", "AmplitudeRange", "ProbePower"]


# ------------------------------------------------------------------ helpers

def _positive(name, v, *, allow_zero=False, allow_inf=False):
    """`v` as a float, checked to be > 0 (>= 0 with allow_zero), finite unless allow_inf."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {v!r}") from None
    if math.isnan(f) or (math.isinf(f) and not allow_inf):
        raise ValueError(f"{name} must be finite, got {v!r}")
    if f < 0 or (f == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'non-negative' if allow_zero else 'positive'}, got {v!r}")
    return f


def _check_array(name, x, ndim=None):
    """The array module of `x`, after checking it is a floating/complex array of `ndim` dims."""
    xp = array_module(x)
    if not hasattr(x, "dtype") or x.dtype.kind not in "fc":
        raise ValueError(f"{name} must be a floating or complex array, got "
                         f"{getattr(x, 'dtype', type(x).__name__)}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    return xp


def _real_dtype(x):
    return np.empty(0, dtype=x.dtype).real.dtype


def _sum64(xp, a):
    """sum(a) accumulated in float64, as a Python float."""
    return float(xp.sum(a, dtype=xp.float64))


class Regulariser:
    """Base class: holds the validated, settable `weight`; subclasses implement `_evaluate`.

    ``_evaluate(x, need_grad)`` returns the unweighted value (float) and, when `need_grad`,
    the unweighted gradient (else None).
    """

    def __init__(self, weight=1.0):
        self.weight = weight

    @property
    def weight(self) -> float:
        """Non-negative scale of value and gradient (settable)."""
        return self._weight

    @weight.setter
    def weight(self, w):
        self._weight = _positive("weight", w, allow_zero=True)

    def value(self, x, weighted=True) -> float:
        """The regulariser at `x` (times `weight` unless ``weighted=False``)."""
        v, _ = self._evaluate(x, need_grad=False)
        return self._weight * v if weighted else v

    def value_and_grad(self, x):
        """(weight * R(x), weight * grad R(x)); grad in the Wirtinger convention, like `x`."""
        v, g = self._evaluate(x, need_grad=True)
        w = self._weight
        if w != 1.0:
            g *= g.real.dtype.type(w)
        return w * v, g

    def _evaluate(self, x, need_grad):          # pragma: no cover - abstract
        raise NotImplementedError


# ------------------------------------------------------------------ adaptive total variation

class AdaptiveTV(Regulariser):
    r"""Adaptive (p, q) total variation of the object, as used by DAP.

    Source: L. Wu, S. Yoo, Y. S. Chu, X. Huang, I. K. Robinson, "Dose-efficient automatic
    differentiation for ptychographic reconstruction", Optica 11(6), 821-830 (2024), eq. 6.
    The paper's text was not available to us; the definition below follows a public JAX
    implementation that cites that paper for its ``create_tv_reg(p, q, epsilon)`` (smoothed
    absolute differences, inner power p, outer power q/p, mean over pixels). It has not been
    checked against eq. 6 itself.

    With forward differences on the object O (Mo, H, W),

        Dx[m, i, j] = O[m, i, j+1] - O[m, i, j],    Dy[m, i, j] = O[m, i+1, j] - O[m, i, j],

    taken on the interior grid 0 <= i < H-1, 0 <= j < W-1 (where both exist), and the smoothed
    modulus |z|_eps = sqrt(|z|^2 + eps^2),

        R(O) = (1/N) sum_{m, i, j} w[i, j] (|Dx[m,i,j]|_eps^p + |Dy[m,i,j]|_eps^p)^(q/p),

    with N = Mo * sum_{i<H-1, j<W-1} w[i, j] for ``reduction="mean"`` (the cited form, w = 1)
    or N = 1 for ``reduction="sum"``. The differences act on the complex field (not on
    amplitude and phase separately). p = q = 1 is (smoothed) anisotropic TV, p = 2, q = 1
    isotropic TV; q < 1 penalises strong edges less than weak ones (edge preserving, not
    convex), p = q = 2 is a quadratic smoothness prior. The last row and column enter only as
    the "+1" neighbour of the interior differences: differences along the last row and the last
    column are not penalised (as in the cited implementation).

    The Wirtinger gradient, with A = |Dx|_eps^p, B = |Dy|_eps^p, T = A + B:

        c[m, i, j]  = (w / N) q T^(q/p - 1)
        gx = c A / |Dx|_eps^2 * Dx,     gy = c B / |Dy|_eps^2 * Dy
        grad O = Dx^H gx + Dy^H gy      (adjoints of the forward differences)

    Parameters
    ----------
    p : float > 0
        Inner power applied to the smoothed modulus of each difference.
    q : float > 0
        Outer power: each pixel contributes T^(q/p).
    eps : float > 0
        Smoothing of the modulus (makes R differentiable at zero differences). A constant
        object gives R = 2^(q/p) eps^q per term.
    weight : float >= 0
        Scale of value and gradient (settable attribute).
    mask : (H, W) bool or real >= 0, optional
        Restricts (weights) the penalty: the term at pixel (i, j) is multiplied by mask[i, j]
        (the last row and column of the mask are unused). May be a NumPy array when the object
        is a CuPy array. Not part of the cited definition.
    reduction : {"mean", "sum"}
        "mean" (default, as cited) divides by Mo times the (masked) number of interior
        pixels; "sum" does not.

    Notes
    -----
    Memory: a handful of real and complex temporaries of shape (Mo, H-1, W-1). eps^2 is formed
    in the precision of the object: for complex64 keep eps above ~1e-18 (eps^2 must not
    underflow, or zero differences divide by zero when p < 2).
    """

    def __init__(self, p=2.0, q=1.0, eps=1e-6, weight=1.0, mask=None, reduction="mean"):
        super().__init__(weight)
        self.p = _positive("p", p)
        self.q = _positive("q", q)
        self.eps = _positive("eps", eps)
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction
        self._mask = None if mask is None else self._check_mask(mask)
        self._mask_cache = {}

    @property
    def mask(self):
        """(H, W) float64 NumPy array of the penalty weights, or None (read-only: make a new
        regulariser to change it)."""
        return self._mask

    @staticmethod
    def _check_mask(mask):
        """`mask` as a validated float64 host (NumPy) array."""
        if hasattr(mask, "get") and not isinstance(mask, np.ndarray):
            mask = mask.get()                     # CuPy -> host; moved to the object's device on use
        mask = np.asarray(mask)
        if mask.dtype.kind not in "biuf":
            raise ValueError(f"mask must be boolean or real, got dtype {mask.dtype}")
        if mask.ndim != 2 or mask.shape[0] < 2 or mask.shape[1] < 2:
            raise ValueError(f"mask must have shape (H, W) with H, W >= 2, got {mask.shape}")
        m = mask.astype(np.float64)
        if not np.all(np.isfinite(m)):
            raise ValueError("mask contains NaN or Inf")
        if np.any(m < 0):
            raise ValueError("mask weights must be non-negative")
        if not np.any(m[:-1, :-1] > 0):
            raise ValueError("mask selects no interior pixel (mask[:-1, :-1] is all zero)")
        return m

    def _interior_mask(self, xp, shape, rdtype):
        """(mask[:-1, :-1] as `rdtype` in `xp`, its float64 sum), cached per module and dtype."""
        if self.mask.shape != tuple(shape[-2:]):
            raise ValueError(f"mask has shape {self.mask.shape} but obj has shape (Mo, H, W) = "
                             f"{tuple(shape)}")
        key = (xp.__name__, np.dtype(rdtype).str)
        if key not in self._mask_cache:
            inner = self.mask[:-1, :-1]
            self._mask_cache[key] = (xp.asarray(inner, dtype=rdtype), float(inner.sum()))
        return self._mask_cache[key]

    def _evaluate(self, obj, need_grad):
        xp = _check_array("obj", obj, ndim=3)
        Mo, H, W = obj.shape
        if H < 2 or W < 2:
            raise ValueError(f"obj must be at least 2 x 2 pixels, got shape {tuple(obj.shape)}")
        rdtype = _real_dtype(obj)
        t = rdtype.type
        p, q, e2 = self.p, self.q, t(self.eps) ** 2

        o = obj[:, :-1, :-1]
        dx = obj[:, :-1, 1:] - o
        dy = obj[:, 1:, :-1] - o
        ux = (dx.real * dx.real + dx.imag * dx.imag + e2) if dx.dtype.kind == "c" else dx * dx + e2
        uy = (dy.real * dy.real + dy.imag * dy.imag + e2) if dy.dtype.kind == "c" else dy * dy + e2
        a = ux ** t(p / 2)                       # |Dx|_eps^p
        b = uy ** t(p / 2)
        s = a + b
        f = s if q == p else s ** t(q / p)       # per-pixel term T^(q/p)

        if self.mask is None:
            msk, count = None, (H - 1) * (W - 1)
            total = _sum64(xp, f)
        else:
            msk, count = self._interior_mask(xp, obj.shape, rdtype)
            total = _sum64(xp, f * msk)
        norm = Mo * count if self.reduction == "mean" else 1.0
        value = total / norm
        if not need_grad:
            return value, None

        c = t(q / norm) if q == p else (f / s) * t(q / norm)    # (q/N) T^(q/p - 1)
        if msk is not None:
            c = c * msk
        gx = (c if p == 2 else c * (a / ux)) * dx                # A / |Dx|_eps^2 = u^(p/2 - 1)
        gy = (c if p == 2 else c * (b / uy)) * dy
        g = xp.zeros_like(obj)
        g[:, :-1, 1:] += gx
        g[:, 1:, :-1] += gy
        g[:, :-1, :-1] -= gx + gy
        return value, g


# ------------------------------------------------------------------ amplitude range

class AmplitudeRange(Regulariser):
    r"""Quadratic penalty on amplitudes outside [low, high].

        R(O) = sum over all elements of relu(|O| - high)^2 + relu(low - |O|)^2

    Zero for every element with low <= |O| <= high. Gradient (Wirtinger):

        grad O = 2 (relu(|O| - high) - relu(low - |O|)) O / |O|,   defined as 0 where O = 0

    (R is not differentiable at O = 0 when low > 0: |O| has a cone there.)

    Parameters
    ----------
    low : float >= 0
        Lower amplitude bound (0 disables the lower penalty).
    high : float >= low, may be ``inf``
        Upper amplitude bound (``inf`` disables the upper penalty).
    weight : float >= 0
        Scale of value and gradient (settable attribute).

    Notes
    -----
    Applies to an array of any shape, typically the object (Mo, H, W) (e.g. low = 0, high = 1
    for a passive transmission object).
    """

    def __init__(self, low=0.0, high=1.0, weight=1.0):
        super().__init__(weight)
        self.low = _positive("low", low, allow_zero=True)
        self.high = _positive("high", high, allow_zero=True, allow_inf=True)
        if self.high < self.low:
            raise ValueError(f"high must be >= low, got low={low!r}, high={high!r}")

    def _evaluate(self, x, need_grad):
        xp = _check_array("x", x)
        t = _real_dtype(x).type
        amp = xp.abs(x)
        over = xp.maximum(amp - t(self.high), t(0)) if math.isfinite(self.high) else None
        under = xp.maximum(t(self.low) - amp, t(0)) if self.low > 0 else None
        value = 0.0
        if over is not None:
            value += _sum64(xp, over * over)
        if under is not None:
            value += _sum64(xp, under * under)
        if not need_grad:
            return value, None
        d = xp.zeros_like(amp)                   # dR/d|O| / 2
        if over is not None:
            d += over
        if under is not None:
            d -= under
        safe = xp.where(amp > 0, amp, t(1))      # O = 0 -> the product below is 0
        return value, (t(2) * d / safe) * x


# ------------------------------------------------------------------ probe power

class ProbePower(Regulariser):
    r"""Keeps the total probe power near a target.

        R(P) = (sum |P|^2 / target - 1)^2,    grad P = (4 / target) (sum |P|^2 / target - 1) P

    Parameters
    ----------
    target : float > 0
        Expected total probe power sum_{k, y, x} |P|^2 (e.g. estimated from the data).
    weight : float >= 0
        Scale of value and gradient (settable attribute).

    Notes
    -----
    Applies to the probe (K, Ny, Nx); any shape is accepted, the sum runs over all elements
    (all modes).
    """

    def __init__(self, target, weight=1.0):
        super().__init__(weight)
        self.target = _positive("target", target)

    def _evaluate(self, probe, need_grad):
        xp = _check_array("probe", probe)
        t = _real_dtype(probe).type
        if probe.dtype.kind == "c":
            power = _sum64(xp, probe.real * probe.real + probe.imag * probe.imag)
        else:
            power = _sum64(xp, probe * probe)
        r = power / self.target - 1.0
        if not need_grad:
            return r * r, None
        return r * r, probe * t(4.0 * r / self.target)
