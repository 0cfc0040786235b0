"""Regularisers: finite-difference gradients (float64), hand-counted values, weight, validation."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from checks import assert_gradient, random_complex
from conftest import gpu
from cuptycho.regularisers import AdaptiveTV, AmplitudeRange, ProbePower


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


def region_mask(shape=(7, 9)):
    m = np.zeros(shape)
    m[1:5, 2:8] = 1.0
    m[3, 4] = 0.5                                   # real weights, not only 0/1
    return m


def check_grad(reg, x, rng):
    d = random_complex(rng, x.shape)
    _, g = reg.value_and_grad(x)
    assert g.shape == x.shape and g.dtype == x.dtype
    assert_gradient(lambda z: reg.value(z), g, x, d, rtol=1e-6)


def tv_loops(obj, p, q, eps, mask=None, reduction="mean"):
    """The TV definition written out pixel by pixel (independent of the vectorised code)."""
    Mo, H, W = obj.shape
    mask = np.ones((H, W)) if mask is None else mask
    total, count = 0.0, 0.0
    for m, i, j in itertools.product(range(Mo), range(H - 1), range(W - 1)):
        ax = np.sqrt(abs(obj[m, i, j + 1] - obj[m, i, j]) ** 2 + eps**2)
        ay = np.sqrt(abs(obj[m, i + 1, j] - obj[m, i, j]) ** 2 + eps**2)
        total += mask[i, j] * (ax**p + ay**p) ** (q / p)
        count += mask[i, j]
    return total / count if reduction == "mean" else total


# ------------------------------------------------------------------ AdaptiveTV

@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("eps", [1e-3, 1.0])
@pytest.mark.parametrize("q", ["p", 0.5])
@pytest.mark.parametrize("p", [1.0, 1.5, 2.0])
def test_tv_gradient(rng, p, q, eps, masked):
    q = p if q == "p" else q
    obj = random_complex(rng, (2, 7, 9))
    mask = region_mask() if masked else None
    reg = AdaptiveTV(p=p, q=q, eps=eps, mask=mask, weight=1.3)
    check_grad(reg, obj, rng)


@pytest.mark.parametrize("p, q", [(1.0, 1.0), (2.0, 1.0), (1.5, 0.5)])
def test_tv_gradient_sum_reduction_near_flat(rng, p, q):
    """Differences of the order of eps (piecewise-constant object plus weak noise), sum reduction."""
    obj = np.ones((3, 8, 8), complex)
    obj[:, :, 4:] = 0.5 * np.exp(0.7j)
    obj += 1e-2 * random_complex(rng, obj.shape)
    reg = AdaptiveTV(p=p, q=q, eps=1e-2, reduction="sum")
    check_grad(reg, obj, rng)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("p, q", [(1.0, 1.0), (1.5, 0.5), (2.0, 2.0)])
def test_tv_matches_pixel_loop(rng, p, q, masked, reduction):
    obj = random_complex(rng, (2, 7, 9))
    mask = region_mask() if masked else None
    reg = AdaptiveTV(p=p, q=q, eps=0.1, mask=mask, reduction=reduction)
    assert reg.value(obj) == pytest.approx(tv_loops(obj, p, q, 0.1, mask, reduction), rel=1e-12)


@pytest.mark.parametrize("p, q", [(1.0, 1.0), (1.5, 1.5), (2.0, 1.0), (2.0, 0.5)])
@pytest.mark.parametrize("eps", [1e-6, 0.3])
def test_tv_constant_object(p, q, eps):
    Mo, H, W = 3, 6, 5
    obj = np.full((Mo, H, W), 0.8 * np.exp(1.1j))
    per_term = 2 ** (q / p) * eps**q                # (eps^p + eps^p)^(q/p)
    v, g = AdaptiveTV(p=p, q=q, eps=eps).value_and_grad(obj)
    assert v == pytest.approx(per_term, rel=1e-12)
    assert np.all(g == 0)
    v_sum = AdaptiveTV(p=p, q=q, eps=eps, reduction="sum").value(obj)
    assert v_sum == pytest.approx(Mo * (H - 1) * (W - 1) * per_term, rel=1e-12)


@pytest.mark.parametrize("p, q", [(1.0, 1.0), (2.0, 1.0), (1.5, 0.5)])
def test_tv_step_edge_hand_count(p, q):
    """Vertical edge between columns c-1 and c: H-1 edge terms, (H-1)(W-2) flat terms."""
    H, W, c, eps = 6, 8, 3, 0.05
    a, b = 1.0, 0.2 * np.exp(0.5j)
    obj = np.full((1, H, W), a, complex)
    obj[:, :, c:] = b
    flat = (2 * eps**p) ** (q / p)
    edge = ((abs(b - a) ** 2 + eps**2) ** (p / 2) + eps**p) ** (q / p)
    expected_sum = (H - 1) * edge + (H - 1) * (W - 2) * flat
    assert AdaptiveTV(p=p, q=q, eps=eps, reduction="sum").value(obj) == pytest.approx(expected_sum, rel=1e-12)
    expected_mean = expected_sum / ((H - 1) * (W - 1))
    assert AdaptiveTV(p=p, q=q, eps=eps).value(obj) == pytest.approx(expected_mean, rel=1e-12)
    # the same edge turned by 90 degrees (a horizontal edge in a (W, H) object): same counts
    assert AdaptiveTV(p=p, q=q, eps=eps, reduction="sum").value(
        np.ascontiguousarray(obj.transpose(0, 2, 1))) == pytest.approx(expected_sum, rel=1e-12)


def test_tv_mask_restricts_penalty(rng):
    """Changes outside the masked region (and its +1 neighbours) leave the value unchanged."""
    obj = random_complex(rng, (2, 7, 9))
    mask = np.zeros((7, 9), bool)
    mask[1:4, 2:5] = True
    reg = AdaptiveTV(p=1.0, q=1.0, eps=1e-3, mask=mask)
    other = obj.copy()
    other[:, 5:, :] = 0                              # rows >= 5 are not neighbours of rows 1..3
    other[:, :, 6:] = 0
    assert reg.value(other) == pytest.approx(reg.value(obj), rel=1e-14)
    _, g = reg.value_and_grad(obj)
    assert np.all(g[:, 5:, :] == 0) and np.all(g[:, :, 6:] == 0)


def test_tv_global_phase_invariance(rng):
    obj = random_complex(rng, (2, 7, 9))
    reg = AdaptiveTV(p=1.5, q=0.5, eps=0.01)
    assert reg.value(obj * np.exp(2.3j)) == pytest.approx(reg.value(obj), rel=1e-12)


# ------------------------------------------------------------------ AmplitudeRange

def straddling_object(rng, low, high, shape=(2, 6, 7)):
    """Amplitudes below, inside and above [low, high], none within 0.05 of a bound."""
    amp = rng.choice([0.5 * low, 0.5 * (low + high), high + 0.7], size=shape) + 0.02 * rng.random(shape)
    return amp * np.exp(1j * rng.uniform(-np.pi, np.pi, shape))


@pytest.mark.parametrize("low, high", [(0.3, 1.0), (0.0, 1.0), (0.2, np.inf), (0.5, 0.5)])
def test_amplitude_range_gradient(rng, low, high):
    obj = straddling_object(rng, low, high if np.isfinite(high) else 1.0)
    check_grad(AmplitudeRange(low, high, weight=0.7), obj, rng)


def test_amplitude_range_values():
    reg = AmplitudeRange(0.25, 1.0)
    inside = np.array([0.25, 0.5j, 1.0, -0.6 + 0.3j])
    v, g = reg.value_and_grad(inside)
    assert v == 0 and np.all(g == 0)
    x = np.array([1.5j, 0.1, 0.0, 0.5])               # over by 0.5, under by 0.15 and 0.25, inside
    assert reg.value(x) == pytest.approx(0.5**2 + 0.15**2 + 0.25**2, rel=1e-12)


def test_amplitude_range_gradient_at_zero_is_zero():
    x = np.zeros((1, 3, 3), np.complex128)
    x[0, 1, 1] = 0.1
    v, g = AmplitudeRange(0.5, 1.0).value_and_grad(x)
    assert np.all(np.isfinite(g))
    assert np.all(g[x == 0] == 0)
    assert v == pytest.approx(8 * 0.25 + 0.4**2)
    assert g[0, 1, 1] == pytest.approx(2 * (-0.4))    # 2 (|O| - low) O/|O|, O real positive


# ------------------------------------------------------------------ ProbePower

@pytest.mark.parametrize("scale", [0.5, 1.7])
def test_probe_power_gradient(rng, scale):
    probe = random_complex(rng, (3, 8, 8))
    target = scale * np.sum(np.abs(probe) ** 2)
    check_grad(ProbePower(target, weight=2.5), probe, rng)


def test_probe_power_zero_at_target(rng):
    probe = random_complex(rng, (2, 8, 8))
    v, g = ProbePower(float(np.sum(np.abs(probe) ** 2))).value_and_grad(probe)
    assert v == pytest.approx(0, abs=1e-24)
    assert np.max(np.abs(g)) < 1e-12 * np.max(np.abs(probe))
    assert ProbePower(0.5 * float(np.sum(np.abs(probe) ** 2))).value(probe) == pytest.approx(1.0)


# ------------------------------------------------------------------ shared behaviour

def all_regularisers(rng):
    obj = random_complex(rng, (2, 7, 9))
    probe = random_complex(rng, (2, 6, 6))
    return [
        (AdaptiveTV(p=1.5, q=0.5, eps=0.05), obj),
        (AdaptiveTV(p=1.0, q=1.0, eps=0.05, mask=region_mask(), reduction="sum"), obj),
        (AmplitudeRange(0.6, 1.2), obj),
        (ProbePower(30.0), probe),
    ]


def test_weight_scales_linearly(rng):
    for reg, x in all_regularisers(rng):
        reg.weight = 1.0
        v1, g1 = reg.value_and_grad(x)
        assert v1 > 0 and reg.value(x, weighted=False) == v1
        reg.weight = 3.5
        v, g = reg.value_and_grad(x)
        assert v == pytest.approx(3.5 * v1, rel=1e-14)
        np.testing.assert_allclose(g, 3.5 * g1, rtol=1e-14, atol=0)
        assert reg.value(x) == pytest.approx(3.5 * v1, rel=1e-14)
        assert reg.value(x, weighted=False) == pytest.approx(v1, rel=1e-14)
        reg.weight = 0
        v0, g0 = reg.value_and_grad(x)
        assert v0 == 0 and np.all(g0 == 0)


@pytest.mark.parametrize("make, name", [
    (lambda: AdaptiveTV(p=0), "p"),
    (lambda: AdaptiveTV(p=-1), "p"),
    (lambda: AdaptiveTV(q=0), "q"),
    (lambda: AdaptiveTV(q=np.nan), "q"),
    (lambda: AdaptiveTV(eps=0), "eps"),
    (lambda: AdaptiveTV(eps=np.inf), "eps"),
    (lambda: AdaptiveTV(eps="small"), "eps"),
    (lambda: AdaptiveTV(weight=-1), "weight"),
    (lambda: AdaptiveTV(reduction="max"), "reduction"),
    (lambda: AdaptiveTV(mask=np.ones(5)), "mask"),
    (lambda: AdaptiveTV(mask=-np.ones((4, 4))), "mask"),
    (lambda: AdaptiveTV(mask=np.ones((4, 4), complex)), "mask"),
    (lambda: AdaptiveTV(mask=np.pad(np.zeros((3, 3)), ((0, 1), (0, 1)), constant_values=1)), "mask"),
    (lambda: AmplitudeRange(-0.1, 1.0), "low"),
    (lambda: AmplitudeRange(0.5, 0.4), "high"),
    (lambda: AmplitudeRange(0.0, np.nan), "high"),
    (lambda: AmplitudeRange(weight=np.inf), "weight"),
    (lambda: ProbePower(0), "target"),
    (lambda: ProbePower(-3.0), "target"),
    (lambda: ProbePower(1.0, weight=-2), "weight"),
])
def test_bad_parameters(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_bad_inputs_and_weight_setter(rng):
    reg = AdaptiveTV()
    with pytest.raises(ValueError, match="obj"):
        reg.value(random_complex(rng, (7, 9)))         # needs (Mo, H, W)
    with pytest.raises(ValueError, match="obj"):
        reg.value(np.ones((1, 5, 5), int))
    with pytest.raises(ValueError, match="obj"):
        reg.value(np.ones((1, 1, 5), complex))
    with pytest.raises(ValueError, match="mask"):
        AdaptiveTV(mask=np.ones((4, 4))).value(random_complex(rng, (1, 5, 5)))
    with pytest.raises(ValueError, match="weight"):
        reg.weight = -0.5
    with pytest.raises(ValueError, match="weight"):
        reg.weight = np.nan
    reg.weight = 2
    assert reg.weight == 2.0
    with pytest.raises(ValueError, match="probe"):
        ProbePower(1.0).value([1.0, 2.0])


def test_complex64_matches_complex128(rng):
    for reg, x in all_regularisers(rng):
        v64, g64 = reg.value_and_grad(x)
        v32, g32 = reg.value_and_grad(x.astype(np.complex64))
        assert g32.dtype == np.complex64
        assert v32 == pytest.approx(v64, rel=1e-5)
        np.testing.assert_allclose(g32, g64, rtol=1e-5, atol=1e-5 * np.max(np.abs(g64)))


def test_real_input_gets_ordinary_derivative(rng):
    x = rng.standard_normal((2, 6, 7)) + 1.5
    for reg in (AdaptiveTV(p=1.5, q=0.5, eps=0.05), AmplitudeRange(1.0, 2.0), ProbePower(80.0)):
        _, g = reg.value_and_grad(x)
        assert g.dtype == np.float64
        assert_gradient(lambda z: reg.value(z), g, x, rng.standard_normal(x.shape))


@gpu
def test_cupy_matches_numpy(rng):
    import cupy

    for reg, x in all_regularisers(rng):
        for dtype in (np.complex64, np.complex128):
            xh = x.astype(dtype)
            v, g = reg.value_and_grad(xh)
            vd, gd = reg.value_and_grad(cupy.asarray(xh))
            assert isinstance(gd, cupy.ndarray) and gd.dtype == dtype
            tol = 1e-5 if dtype == np.complex64 else 1e-12
            assert vd == pytest.approx(v, rel=tol)
            np.testing.assert_allclose(gd.get(), g, rtol=tol, atol=tol * np.max(np.abs(g)))
