"""The NumPy reference: adjoints (dot tests), gradients (finite differences), conventions."""
from __future__ import annotations

import numpy as np
import pytest

import cuptycho
from cuptycho import reference
from checks import DOT_TOL, assert_adjoint, assert_gradient, random_complex
from conftest import gpu

DTYPES = [np.complex64, np.complex128]

# Near-field geometry with a transfer function whose phase varies by several radians over the
# band yet stays sampled: 100 nm pixels, 0.1 nm X-rays, z below N dx^2 / lambda.
WAVELENGTH = 1e-10
PIXEL = 1e-7
Z = 4e-4

# (propagator, padding) combinations exercised by every law below
PROPAGATION = {
    "farfield": dict(propagator="farfield"),
    "angular_spectrum": dict(propagator="angular_spectrum", z=Z, wavelength=WAVELENGTH, pixel_size=PIXEL),
    "angular_spectrum_padded": dict(propagator="angular_spectrum", z=Z, wavelength=WAVELENGTH,
                                    pixel_size=(PIXEL, 1.3 * PIXEL), padding=(3, 2)),
    "fresnel": dict(propagator="fresnel", z=Z, wavelength=WAVELENGTH, pixel_size=PIXEL, padding=2),
}


def make_propagator(name, shape, dtype, **override):
    kw = {**PROPAGATION[name], **override}
    kind = kw.pop("propagator")
    if "pixel_size" in kw:
        kw["pixel_size"] = cuptycho.geometry.pixel_pair(kw["pixel_size"])
    if "padding" in kw:
        kw["padding"] = np.broadcast_to(kw["padding"], 2)
    return reference.make_propagator(kind, shape, dtype=dtype, **kw)


def fractional_positions(rng, n, limit):
    """Positions whose fractions stay in [0.2, 0.8]: away from the kinks at integers."""
    whole = rng.integers(0, np.asarray(limit), size=(n, 2))
    return whole + rng.uniform(0.2, 0.8, size=(n, 2))


# --------------------------------------------------------------------------- adjoints

@pytest.mark.parametrize("dtype", DTYPES)
def test_patch_adjoint(dtype):
    rng = np.random.default_rng(1)
    obj_shape, patch = (2, 23, 19), (8, 7)
    pos = fractional_positions(rng, 9, (23 - 8, 19 - 7))
    pos[0] = (0, 0)                     # exact crop at the corner
    pos[1] = (23 - 8, 19 - 7)           # exact crop at the far edge (clamped taps)
    x = random_complex(rng, obj_shape, dtype)
    y = random_complex(rng, (9, 2, *patch), dtype)
    assert_adjoint(lambda o: reference.patch_fwd(o, pos, patch),
                   lambda p: reference.patch_adj(p, pos, obj_shape), x, y, DOT_TOL[np.dtype(dtype)])


@pytest.mark.parametrize("padding", [(0, 0), (2, 1)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_exitwave_adjoints(dtype, padding):
    """exitwave_adj is the adjoint of exitwave_fwd in the probe, and (through patch_adj) in the object."""
    rng = np.random.default_rng(2)
    obj = random_complex(rng, (2, 13, 11), dtype)
    probe = random_complex(rng, (3, 6, 5), dtype)
    pos = fractional_positions(rng, 4, (13 - 6, 11 - 5))
    y = random_complex(rng, (4, 2, 3, 6 + 2 * padding[0], 5 + 2 * padding[1]), dtype)
    tol = DOT_TOL[np.dtype(dtype)]
    assert_adjoint(lambda p: reference.exitwave_fwd(obj, p, pos, padding),
                   lambda g: reference.exitwave_adj(obj, probe, pos, g, padding)[1], probe, y, tol)
    assert_adjoint(lambda o: reference.exitwave_fwd(o, probe, pos, padding),
                   lambda g: reference.patch_adj(reference.exitwave_adj(obj, probe, pos, g, padding)[0], pos,
                                                 obj.shape), obj, y, tol)


@pytest.mark.parametrize("shape", [(8, 8), (7, 10)])
@pytest.mark.parametrize("name", PROPAGATION)
@pytest.mark.parametrize("dtype", DTYPES)
def test_propagator_adjoint(dtype, name, shape):
    rng = np.random.default_rng(3)
    prop = make_propagator(name, shape, dtype)
    x = random_complex(rng, (2, 3, *shape), dtype)
    y = random_complex(rng, (2, 3, *shape), dtype)
    assert_adjoint(prop.fwd, prop.adj, x, y, DOT_TOL[np.dtype(dtype)])


@pytest.mark.parametrize("name", ["farfield", "angular_spectrum", "fresnel"])
@pytest.mark.parametrize("shape", [(16, 16), (9, 12)])
def test_unpadded_propagators_conserve_energy(name, shape):
    rng = np.random.default_rng(4)
    prop = make_propagator(name, shape, np.complex128, padding=0)
    psi = random_complex(rng, (3, *shape))
    out = prop.fwd(psi)
    np.testing.assert_allclose(np.linalg.norm(out), np.linalg.norm(psi), rtol=1e-13)
    np.testing.assert_allclose(prop.adj(out), psi, rtol=0, atol=1e-13 * np.abs(psi).max())


def test_evanescent_waves_are_dropped():
    """Pixels finer than lambda / 2 carry evanescent frequencies: the transfer function zeroes them."""
    prop = reference.make_propagator("angular_spectrum", (16, 16), z=1e-6, wavelength=1e-6,
                                     pixel_size=(2e-7, 2e-7))
    f2 = cuptycho.geometry.frequency_squared((16, 16), 2e-7)
    assert np.all(prop.h[f2 >= 1e12] == 0) and np.all(np.abs(prop.h[f2 < 1e12]) > 0.999)


# --------------------------------------------------------------------------- conventions

def test_integer_positions_crop_exactly_including_the_far_edge():
    rng = np.random.default_rng(5)
    obj = random_complex(rng, (2, 12, 11))
    pos = np.array([[0.0, 0.0], [3.0, 2.0], [12 - 5, 11 - 4]])
    patches = reference.patch_fwd(obj, pos, (5, 4))
    for j, (y, x) in enumerate(pos.astype(int)):
        np.testing.assert_array_equal(patches[j], obj[:, y:y + 5, x:x + 4])


def test_half_pixel_shift_averages_neighbours():
    obj = np.arange(30, dtype=np.complex128).reshape(1, 5, 6)
    patch = reference.patch_fwd(obj, np.array([[1.5, 2.25]]), (2, 2))[0, 0]
    expected = 0.5 * (obj[0, 1:3] + obj[0, 2:4])
    expected = 0.75 * expected[:, 2:4] + 0.25 * expected[:, 3:5]
    np.testing.assert_allclose(patch, expected, rtol=1e-15)


@pytest.mark.parametrize("shape", [(8, 8), (7, 9)])
def test_farfield_puts_zero_frequency_at_the_centre(shape):
    flat = np.ones(shape, dtype=np.complex128)
    out = reference.FarField().fwd(flat)
    peak = np.unravel_index(np.argmax(np.abs(out)), shape)
    assert peak == (shape[0] // 2, shape[1] // 2)
    np.testing.assert_allclose(abs(out[peak]) ** 2, np.prod(shape), rtol=1e-14)


def test_mixed_state_intensity_is_the_incoherent_sum():
    rng = np.random.default_rng(6)
    obj = random_complex(rng, (2, 14, 14))
    probe = random_complex(rng, (3, 8, 8))
    pos = fractional_positions(rng, 4, (6, 6))
    total = cuptycho.forward(obj, probe, pos)
    parts = sum(cuptycho.forward(obj[m], probe[k], pos) for m in range(2) for k in range(3))
    np.testing.assert_allclose(total, parts, rtol=1e-12)


@pytest.mark.parametrize("loss", reference.LOSSES)
@pytest.mark.parametrize("name", PROPAGATION)
def test_loss_and_gradient_vanish_at_the_truth(loss, name):
    rng = np.random.default_rng(7)
    obj = random_complex(rng, (1, 14, 14))
    probe = random_complex(rng, (2, 8, 8))
    pos = fractional_positions(rng, 4, (6, 6))
    kw = PROPAGATION[name]
    data = cuptycho.forward(obj, probe, pos, **kw)
    value, grads = cuptycho.loss_and_grad(obj, probe, pos, data, loss=loss, **kw)
    assert abs(value) <= 1e-9 * data.sum() / len(pos)
    # the gradient at the truth is zero; compare against its size one step away
    _, away = cuptycho.loss_and_grad(obj * 1.1, probe, pos, data, loss=loss, **kw)
    for key in grads:
        assert np.linalg.norm(grads[key]) <= 1e-6 * np.linalg.norm(away[key]), key


def test_poisson_loss_is_non_negative():
    rng = np.random.default_rng(8)
    obj = random_complex(rng, (1, 14, 14))
    probe = random_complex(rng, (1, 8, 8))
    pos = fractional_positions(rng, 4, (6, 6))
    data = rng.poisson(cuptycho.forward(obj, probe, pos)).astype(np.float64)
    terms = reference.loss_terms("poisson", rng.uniform(0, 50, data.shape), data)
    assert terms.min() >= -1e-12 * data.max()


@pytest.mark.parametrize("loss", reference.LOSSES)
def test_single_and_double_precision_agree(loss):
    rng = np.random.default_rng(9)
    obj = random_complex(rng, (2, 20, 20))
    probe = random_complex(rng, (2, 8, 8))
    pos = fractional_positions(rng, 6, (12, 12))
    data = np.round(cuptycho.forward(obj * 0.9, probe, pos))
    kw = PROPAGATION["angular_spectrum_padded"]
    v64, g64 = cuptycho.loss_and_grad(obj, probe, pos, data, loss=loss, **kw)
    v32, g32 = cuptycho.loss_and_grad(obj.astype(np.complex64), probe.astype(np.complex64), pos,
                                      data.astype(np.float32), loss=loss, **kw)
    np.testing.assert_allclose(v32, v64, rtol=1e-4)
    assert g32["object"].dtype == np.complex64 and g32["positions"].dtype == np.float64
    for key in g64:
        err = np.linalg.norm(np.asarray(g32[key]) - g64[key]) / np.linalg.norm(g64[key])
        assert err < 1e-3, (key, err)


# --------------------------------------------------------------------------- finite differences

@pytest.fixture(scope="module")
def problem():
    """Two object modes, two probe modes, overlapping fractional positions, a masked detector."""
    rng = np.random.default_rng(10)
    obj = random_complex(rng, (2, 17, 16)) * 0.5 + 1.0
    probe = random_complex(rng, (2, 8, 8))
    pos = fractional_positions(rng, 5, (9, 8))
    mask = rng.uniform(size=(5, 8, 8)) > 0.15
    return rng, obj, probe, pos, mask


def _data_for(loss, obj, probe, pos, kw, rng):
    """Data from a perturbed model (so the loss is away from its minimum), with zeros for `weighted`."""
    truth = cuptycho.forward(obj * (1 + 0.2 * rng.standard_normal(obj.shape)), probe, pos, **kw)
    data = rng.poisson(truth).astype(np.float64)
    data[0, :2, :3] = 0
    return data


PARAMETERS = ["object", "object_mode_1", "probe_mode_0", "probe_mode_1", "positions", "z"]


@pytest.mark.parametrize("backend", ["numpy", "cpu", pytest.param("cuda", marks=gpu)])
@pytest.mark.parametrize("name, parameter", [(n, p) for n in PROPAGATION for p in PARAMETERS
                                             if p != "z" or "z" in PROPAGATION[n]])
@pytest.mark.parametrize("loss", reference.LOSSES)
def test_gradients_match_finite_differences(problem, loss, name, parameter, backend):
    rng, obj, probe, pos, mask = problem
    kw = {**PROPAGATION[name], "backend": backend}
    data = _data_for(loss, obj, probe, pos, PROPAGATION[name], rng)

    def run(o=obj, p=probe, x=pos, **over):
        return cuptycho.loss_and_grad(o, p, x, data, loss=loss, mask=mask, **{**kw, **over})

    _, grads = run()
    if parameter.startswith("object"):
        d = random_complex(rng, obj.shape)
        if parameter == "object_mode_1":
            d[0] = 0
        assert_gradient(lambda o: run(o=o)[0], grads["object"], obj, d)
    elif parameter.startswith("probe"):
        d = np.zeros_like(probe)
        k = int(parameter[-1])
        d[k] = random_complex(rng, probe.shape[1:])
        assert_gradient(lambda p: run(p=p)[0], grads["probe"], probe, d)
    elif parameter == "positions":
        assert_gradient(lambda x: run(x=x)[0], grads["positions"], pos, rng.standard_normal(pos.shape))
    else:
        assert_gradient(lambda z: run(z=float(z))[0], grads["z"], np.float64(kw["z"]), np.float64(1.0))


DETECTOR_PARAMETERS = ["scale", "background", "background_per_pattern", "object", "probe_mode_1", "positions", "z"]


@pytest.mark.parametrize("backend", ["numpy", "cpu", pytest.param("cuda", marks=gpu)])
@pytest.mark.parametrize("name, parameter", [(n, p) for n in PROPAGATION for p in DETECTOR_PARAMETERS
                                             if p != "z" or "z" in PROPAGATION[n]])
@pytest.mark.parametrize("loss", reference.LOSSES)
def test_detector_model_gradients_match_finite_differences(problem, loss, name, parameter, backend):
    """I = scale_j I_coh + background: the gradients in scale and background (one map, or one per
    pattern), and those of the other groups through the scaled model."""
    rng, obj, probe, pos, mask = problem
    kw = {**PROPAGATION[name], "backend": backend}
    data = _data_for(loss, obj, probe, pos, PROPAGATION[name], rng)
    n = len(pos)
    scale = rng.uniform(0.6, 1.4, n)
    shape = data.shape if parameter == "background_per_pattern" else data.shape[1:]
    background = rng.uniform(0.5, 3.0, shape) * data.mean()

    def run(o=obj, p=probe, x=pos, s=scale, b=background, **over):
        return cuptycho.loss_and_grad(o, p, x, data, loss=loss, mask=mask, scale=s, background=b, **{**kw, **over})

    _, grads = run()
    if parameter == "scale":
        assert grads["scale"].shape == (n,)
        assert_gradient(lambda s: run(s=s)[0], grads["scale"], scale, rng.standard_normal(n))
    elif parameter.startswith("background"):
        assert grads["background"].shape == background.shape
        assert_gradient(lambda b: run(b=b)[0], grads["background"], background, rng.standard_normal(shape))
    elif parameter == "object":
        assert_gradient(lambda o: run(o=o)[0], grads["object"], obj, random_complex(rng, obj.shape))
    elif parameter == "probe_mode_1":
        d = np.zeros_like(probe)
        d[1] = random_complex(rng, probe.shape[1:])
        assert_gradient(lambda p: run(p=p)[0], grads["probe"], probe, d)
    elif parameter == "positions":
        assert_gradient(lambda x: run(x=x)[0], grads["positions"], pos, rng.standard_normal(pos.shape))
    else:
        assert_gradient(lambda z: run(z=float(z))[0], grads["z"], np.float64(kw["z"]), np.float64(1.0))


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_detector_model_defaults_are_the_plain_model(problem, backend):
    """scale 1 and background 0 give the plain model's loss and gradients; forward adds them as documented."""
    rng, obj, probe, pos, mask = problem
    data = _data_for("poisson", obj, probe, pos, {}, rng)
    plain, g_plain = cuptycho.loss_and_grad(obj, probe, pos, data, loss="poisson", mask=mask, backend=backend)
    same, g_same = cuptycho.loss_and_grad(obj, probe, pos, data, loss="poisson", mask=mask, backend=backend,
                                          scale=np.ones(len(pos)), background=np.zeros(data.shape[1:]))
    assert same == pytest.approx(plain, rel=1e-12)
    for key in g_plain:
        np.testing.assert_allclose(g_same[key], g_plain[key], rtol=1e-10, atol=1e-14 * np.abs(g_plain[key]).max())
    scale, background = rng.uniform(0.5, 2, len(pos)), rng.uniform(0, 5, data.shape)
    model = cuptycho.forward(obj, probe, pos, backend=backend)
    np.testing.assert_allclose(cuptycho.forward(obj, probe, pos, scale=scale, background=background, backend=backend),
                               scale[:, None, None] * model + background, rtol=1e-12)


@pytest.mark.parametrize("bad, message", [
    (dict(scale=np.ones(4)), "scale must have shape (5,)"),
    (dict(scale=-np.ones(5)), "scale must be > 0"),
    (dict(scale=np.full(5, np.nan)), "scale"),
    (dict(background=np.ones((3, 8))), "background must have shape (8, 8) or (5, 8, 8)"),
    (dict(background=-np.ones((8, 8))), "background must be >= 0"),
    (dict(background=np.full((8, 8), np.inf)), "background"),
])
def test_bad_detector_model_is_named(problem, bad, message):
    rng, obj, probe, pos, mask = problem
    data = np.ones((5, 8, 8))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cuptycho.loss_and_grad(obj, probe, pos, data, backend="numpy", **bad)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("name", [n for n in PROPAGATION if "z" in PROPAGATION[n]])
@pytest.mark.parametrize("loss", ["gaussian", "poisson"])
def test_the_z_gradient_along_a_geometry_direction_matches_finite_differences(problem, loss, name, backend):
    """z_direction = (dz, ds): the derivative of the loss as z moves by dz t and the pixel size by the factor
    (1 + ds t) together (the focus distance moves both), from one pass; ds alone and both at once."""
    from cuptycho import ops, validation

    rng, obj, probe, pos, mask = problem
    data = _data_for(loss, obj, probe, pos, PROPAGATION[name], rng)
    kw = {k: v for k, v in PROPAGATION[name].items() if k != "propagator"}
    prop = validation.propagation(PROPAGATION[name]["propagator"], kw["z"], kw["wavelength"], kw["pixel_size"],
                                  kw.get("padding", 0))
    device = cuptycho.backend.resolve(backend)
    w = np.asarray(mask, dtype=np.float64)

    def loss_at(t, direction):
        z = prop["z"] + direction[0] * t
        pixel = tuple(p * (1 + direction[1] * t) for p in prop["pixel_size"])
        value, grads = ops.evaluate(device, obj, probe, pos, data, w, loss=loss,
                                    propagator=PROPAGATION[name]["propagator"], z=z, wavelength=prop["wavelength"],
                                    pixel_size=pixel, padding=prop["padding"], z_direction=direction)
        return value, grads["z"]

    for direction in ((0.0, 1.0), (0.3 * prop["z"], -0.7)):
        _, analytic = loss_at(0.0, direction)
        # x = 1 + t: the finite-difference step is relative to |x|
        assert_gradient(lambda x: loss_at(float(x) - 1.0, direction)[0], analytic, np.float64(1.0), np.float64(1.0))
