"""The public API's input checks: one ValueError naming the argument, before any arithmetic."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import cuptycho
from checks import random_complex
from conftest import ENGINE_BACKEND, HAS_GPU


@pytest.fixture
def good():
    rng = np.random.default_rng(0)
    return dict(obj=random_complex(rng, (1, 20, 20)), probe=random_complex(rng, (2, 8, 8)),
                positions=rng.uniform(0, 12, size=(3, 2)), data=rng.uniform(0, 5, size=(3, 8, 8)))


def call(good, **over):
    args = {**good, **over}
    obj, probe, pos, data = (args.pop(k) for k in ("obj", "probe", "positions", "data"))
    return cuptycho.loss_and_grad(obj, probe, pos, data, **args)


def test_good_input_runs_and_keeps_the_callers_shapes(good):
    value, grads = call(good, obj=good["obj"][0], probe=good["probe"][0])
    assert np.isfinite(value) and value > 0
    assert grads["object"].shape == (20, 20) and grads["probe"].shape == (8, 8)
    assert grads["positions"].shape == (3, 2) and "z" not in grads
    assert cuptycho.forward(good["obj"], good["probe"], good["positions"]).shape == (3, 8, 8)


def test_positions_on_the_far_edge_are_valid(good):
    call(good, positions=np.array([[12.0, 12.0], [0.0, 0.0], [12.0, 0.5]]))


BAD = [
    (dict(obj=np.ones((20, 20))), "obj must be complex64 or complex128"),
    (dict(obj=np.ones((1, 1, 20, 20), np.complex128)), "obj must have shape"),
    (dict(probe=np.ones((2, 8, 8), np.complex64)), "probe has dtype complex64 but obj has dtype complex128"),
    (dict(obj=np.full((20, 20), np.nan, np.complex128)), "obj contains NaN or Inf"),
    (dict(probe=np.full((8, 8), np.inf, np.complex128)), "probe contains NaN or Inf"),
    (dict(positions=np.zeros((3, 3))), "positions must have shape (J, 2)"),
    (dict(positions=np.zeros((3, 2), np.complex128)), "positions must be real"),
    (dict(positions=np.array([[0.0, 0.0], [np.nan, 1.0], [1.0, 1.0]])), "positions contains NaN"),
    (dict(positions=np.array([[0.0, 0.0], [12.5, 1.0], [1.0, 1.0]])), "positions[1] = (12.5, 1) puts the patch outside"),
    (dict(positions=np.array([[0.0, -0.1], [1.0, 1.0], [1.0, 1.0]])), "positions[0]"),
    (dict(obj=np.ones((8, 20), np.complex128)), "must be larger than the probe"),
    (dict(data=np.ones((4, 8, 8))), "data must have shape (3, 8, 8)"),
    (dict(data=-np.ones((3, 8, 8))), "data has 192 negative value(s)"),
    (dict(data=np.full((3, 8, 8), np.nan)), "data contains NaN"),
    (dict(data=np.ones((3, 8, 8), np.complex64)), "data must be real"),
    (dict(mask=np.ones((7, 8))), "mask must have shape (8, 8) or (3, 8, 8)"),
    (dict(mask=-np.ones((8, 8))), "mask weights must be >= 0"),
    (dict(loss="l1"), "loss must be one of"),
    (dict(propagator="fraunhofer"), "propagator must be one of"),
    (dict(propagator="farfield", z=1.0), "z is only used by"),
    (dict(propagator="farfield", padding=4), "padding is only used by"),
    (dict(propagator="fresnel", wavelength=1e-10, pixel_size=1e-8), "needs z"),
    (dict(propagator="fresnel", z=1e-3, pixel_size=1e-8), "needs wavelength"),
    (dict(propagator="fresnel", z=1e-3, wavelength=1e-10), "needs pixel_size"),
    (dict(propagator="fresnel", z=np.nan, wavelength=1e-10, pixel_size=1e-8), "z must be a finite real scalar"),
    (dict(propagator="fresnel", z=1e-3, wavelength=-1e-10, pixel_size=1e-8), "wavelength must be positive"),
    (dict(propagator="fresnel", z=1e-3, wavelength=1e-10, pixel_size=(1e-8, 0)), "pixel_size must be positive"),
    (dict(propagator="fresnel", z=1e-3, wavelength=1e-10, pixel_size=1e-8, padding=-1), "padding must be"),
    (dict(backend="gpu"), "backend must be one of"),
]
if not HAS_GPU and ENGINE_BACKEND != "cuda":          # no GPU answers in this test
    BAD.append((dict(backend="cuda"), "backend 'cuda' is not available"))


@pytest.mark.parametrize("over, message", BAD, ids=[m for _, m in BAD])
def test_bad_input_names_the_problem(good, over, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call(good, **over)


def test_undersampled_angular_spectrum_warns(good):
    kw = dict(propagator="angular_spectrum", wavelength=1e-10, pixel_size=1e-8)
    with pytest.warns(RuntimeWarning, match="undersampled; increase padding"):
        call(good, z=1e-4, **kw)                     # N dx^2 / lambda = 8e-6 m
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        call(good, z=1e-6, **kw)
        call(good, z=1e-4, padding=60, **kw)         # padded to 128 px: 1.28e-4 m
