"""Starting guesses: probes from far- and near-field data, aperture, flat object, probe scale."""
from __future__ import annotations

import numpy as np
import pytest

import cuptycho
from cuptycho import initial, simulate

# The flat-object model of a probe from the data reproduces the mean pattern by construction
# (|F P0|^2 = m in the far field; A A^H = 1 for the unpadded near-field propagator); what is
# left is float32 rounding of the FFTs and sums (measured 3e-7 relative L2), so 1e-5.
EXACT_TOL = 1e-5


def rel_l2(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(np.asarray(b, np.float64)))


def centre_of_mass(probe):
    i = (np.abs(probe.astype(np.complex128)) ** 2).reshape(-1, *probe.shape[-2:]).sum(axis=0)
    y, x = np.indices(i.shape)
    return np.array([(i * y).sum(), (i * x).sum()]) / i.sum()


def flat_model(exp, probe):
    """Modelled intensities of `probe` on a flat unit object at the true positions."""
    obj = initial.object_ones(exp.obj.shape[-2:], 1, probe.dtype)
    return cuptycho.forward(obj, probe, exp.positions, **exp.forward_kwargs())


@pytest.fixture(scope="module")
def farfield():
    return simulate.preset("small_farfield")


@pytest.fixture(scope="module")
def nearfield():
    return simulate.preset("small_nearfield")


# --------------------------------------------------------------------------- far field

def test_farfield_probe_reproduces_mean_pattern(farfield):
    probe = initial.probe_from_data(farfield.data)
    assert probe.shape == (1, 64, 64) and probe.dtype == np.complex64
    mean = farfield.data.astype(np.float64).mean(axis=0)
    assert rel_l2(flat_model(farfield, probe).mean(axis=0), mean) < EXACT_TOL
    # total power = total counts of the mean pattern (Parseval), centred on (Ny//2, Nx//2)
    np.testing.assert_allclose((np.abs(probe.astype(np.complex128)) ** 2).sum(), mean.sum(), rtol=EXACT_TOL)
    np.testing.assert_allclose(centre_of_mass(probe), [32, 32], atol=1e-3)
    # the forward keywords of an experiment are accepted as they are
    same = initial.probe_from_data(farfield.data, **farfield.forward_kwargs())
    np.testing.assert_array_equal(same, probe)


@pytest.mark.parametrize("per_pattern", [False, True])
def test_farfield_probe_with_mask(farfield, per_pattern):
    data = farfield.data.copy()
    mask = np.ones((64, 64), bool)
    mask[29:36, 29:36] = False                 # beamstop
    mask[:, 50] = False                        # dead column
    data[:, ~mask] = 1e9                       # garbage under the mask must not matter
    if per_pattern:
        mask = np.broadcast_to(mask, data.shape).copy()
        mask[::2, 10, :] = False               # a row missing in every other pattern only
    probe = initial.probe_from_data(data, mask=mask)
    model = flat_model(farfield, probe)[0].astype(np.float64)
    valid = mask.any(axis=0) if per_pattern else mask
    w = np.broadcast_to(mask, data.shape)
    expected = np.where(w, farfield.data, 0).sum(axis=0) / np.maximum(w.sum(axis=0), 1)
    assert rel_l2(model[valid], expected[valid]) < EXACT_TOL
    np.testing.assert_allclose(model[~valid], expected[valid].mean(), rtol=EXACT_TOL)


def test_farfield_probe_modes(farfield):
    probe = initial.probe_from_data(farfield.data, 3, seed=4)
    assert probe.shape == (3, 64, 64)
    p = probe.astype(np.complex128).reshape(3, -1)
    power = np.sum(np.abs(p) ** 2, axis=1)
    total = farfield.data.astype(np.float64).mean(axis=0).sum()
    np.testing.assert_allclose(power.sum(), total, rtol=EXACT_TOL)
    # mode 0 keeps 95 %, the extra modes 5 % together (2:1), and the modes are orthogonal
    np.testing.assert_allclose(power / total, [0.95, 0.05 * 2 / 3, 0.05 / 3], rtol=1e-5)
    gram = np.abs(p.conj() @ p.T) / np.sqrt(np.outer(power, power))
    np.testing.assert_array_less(gram[~np.eye(3, dtype=bool)], 1e-5)
    # mode 0 is the single-mode guess, scaled
    single = initial.probe_from_data(farfield.data)[0]
    np.testing.assert_allclose(probe[0], single * np.sqrt(0.95), rtol=0, atol=1e-5 * np.abs(single).max())
    # seeded: the same seed gives the same modes, another seed others
    np.testing.assert_array_equal(initial.probe_from_data(farfield.data, 3, seed=4), probe)
    assert not np.allclose(initial.probe_from_data(farfield.data, 3, seed=5)[1], probe[1])
    other = initial.probe_from_data(farfield.data, 2, mode_power=0.2)
    np.testing.assert_allclose(np.sum(np.abs(other[1].astype(np.complex128)) ** 2) / total, 0.2, rtol=1e-5)


def test_probe_from_data_crop_and_dtypes(farfield):
    data = farfield.data
    probe = initial.probe_from_data(data, shape=(48, 40))
    assert probe.shape == (1, 48, 40)
    cropped = data[:, 32 - 24:32 + 24, 32 - 20:32 + 20]
    np.testing.assert_allclose(probe, initial.probe_from_data(cropped), rtol=0, atol=1e-6 * np.abs(probe).max())
    assert initial.probe_from_data(data.astype(np.float64)).dtype == np.complex128
    assert initial.probe_from_data(data.astype(np.uint32)).dtype == np.complex64
    assert initial.probe_from_data(data, dtype=np.complex128).dtype == np.complex128
    # a single (mean) pattern is accepted
    np.testing.assert_allclose(initial.probe_from_data(data.mean(axis=0)), initial.probe_from_data(data),
                               rtol=0, atol=1e-6 * np.abs(probe).max())


# --------------------------------------------------------------------------- near field

def test_nearfield_probe(nearfield):
    mean = nearfield.data.astype(np.float64).mean(axis=0)
    # without z: the recorded amplitude with zero phase, the power of the mean pattern
    probe = initial.probe_from_data(nearfield.data, propagator="angular_spectrum")
    assert probe.shape == (1, 64, 64) and probe.dtype == np.complex64
    np.testing.assert_allclose(probe[0].real, np.sqrt(mean), rtol=1e-6)
    assert np.all(probe.imag == 0)
    model = flat_model(nearfield, probe).mean(axis=0)
    np.testing.assert_allclose(model.sum(), mean.sum(), rtol=EXACT_TOL)         # unitary propagation
    # with the experiment's z: propagated back, so the flat-object model gives the mean pattern
    back = initial.probe_from_data(nearfield.data, **nearfield.forward_kwargs())
    assert rel_l2(flat_model(nearfield, back).mean(axis=0), mean) < EXACT_TOL
    assert rel_l2(model, mean) > 0.1                                           # (the difference z makes)
    fresnel = initial.probe_from_data(nearfield.data, propagator="fresnel", z=nearfield.z,
                                      wavelength=nearfield.wavelength, pixel_size=nearfield.pixel_size)
    assert fresnel.shape == (1, 64, 64)


# --------------------------------------------------------------------------- aperture and flat object

def test_probe_aperture():
    probe = initial.probe_aperture((32, 30), 6.0)
    assert probe.shape == (1, 32, 30) and probe.dtype == np.complex64
    y, x = np.indices((32, 30))
    disk = (y - 16) ** 2 + (x - 15) ** 2 <= 36
    np.testing.assert_array_equal(probe[0], disk.astype(np.complex64))
    phased = initial.probe_aperture((32, 30), 6.0, defocus_phase=2.0, dtype=np.complex128)
    np.testing.assert_allclose(np.abs(phased[0]), disk, atol=1e-15)
    np.testing.assert_allclose(np.angle(phased[0, 16, 21]), 2.0, rtol=1e-12)    # r = radius: the rim phase
    np.testing.assert_allclose(np.angle(phased[0, 16 + 3, 15]), 2.0 * 9 / 36, rtol=1e-12)
    modes = initial.probe_aperture(32, 6.0, 3)
    assert modes.shape == (3, 32, 32)
    m = modes.astype(np.complex128).reshape(3, -1)
    gram = np.abs(m.conj() @ m.T)
    np.testing.assert_array_less(gram[~np.eye(3, dtype=bool)], 1e-5 * gram.max())
    np.testing.assert_allclose(np.diag(gram).sum(), (np.abs(initial.probe_aperture(32, 6.0)) ** 2).sum(), rtol=1e-6)


def test_aperture_guess_is_the_pixel_aperture_model():
    """initial.probe_aperture (radius in pixels) is probes.aperture_px, the disk of simulate's aperture (metres)."""
    from cuptycho import probes
    guess = initial.probe_aperture((24, 25), 5.5, defocus_phase=1.5, dtype=np.complex128)
    np.testing.assert_array_equal(guess[0], probes.aperture_px((24, 25), 5.5, defocus_phase=1.5))
    # the same disk in metres: radius 5.5 pixels of 40 nm, not propagated
    bare = simulate.probe_aperture((24, 25), radius=5.5 * 4e-8, z=0.0, wavelength=1e-10, pixel_size=4e-8)
    np.testing.assert_array_equal(np.abs(bare) > 0.5, probes.aperture_px((24, 25), 5.5) == 1)
    with pytest.raises(ValueError, match="radius_px"):
        initial.probe_aperture(16, -1.0)


def test_initial_does_not_depend_on_simulate():
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(initial))
    imported = {a.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for a in node.names} | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(name and "simulate" in name for name in imported)


def test_object_ones():
    obj = initial.object_ones((40, 50))
    assert obj.shape == (1, 40, 50) and obj.dtype == np.complex64 and np.all(obj == 1)
    obj = initial.object_ones(40, 3, np.complex128, seed=2)
    assert obj.shape == (3, 40, 40) and obj.dtype == np.complex128 and np.all(obj[0] == 1)
    rms = np.sqrt(np.mean(np.abs(obj[1:]) ** 2))
    assert 0.9e-2 < rms < 1.1e-2
    np.testing.assert_array_equal(initial.object_ones(40, 3, np.complex128, seed=2), obj)
    assert not np.allclose(initial.object_ones(40, 3, np.complex128, seed=3)[1], obj[1])


# --------------------------------------------------------------------------- probe scale

@pytest.mark.parametrize("use_mask", [False, True])
def test_fit_probe_scale_exact_multiple(farfield, use_mask):
    obj = farfield.obj.astype(np.complex128)
    probe = farfield.probe.astype(np.complex128)
    kwargs = farfield.forward_kwargs()
    data = 7.3 * cuptycho.forward(obj, probe, farfield.positions, **kwargs)
    mask = None
    if use_mask:
        mask = np.ones((64, 64), bool)
        mask[30:34, 30:34] = False
        data[:, ~mask] = 0.0                               # masked pixels disagree, and must not count
    fitted = initial.fit_probe_scale(obj, probe, farfield.positions, data, mask, **kwargs)
    assert fitted.shape == probe.shape and fitted.dtype == probe.dtype
    predicted = cuptycho.forward(obj, fitted, farfield.positions, **kwargs)
    w = np.ones((64, 64)) if mask is None else mask
    np.testing.assert_allclose((w * predicted).sum(), (w * data).sum(), rtol=1e-6)
    np.testing.assert_allclose(fitted, probe * np.sqrt(7.3), rtol=1e-12)


def test_fit_probe_scale_is_least_squares(farfield):
    # noisy data, a probe from the data and a flat object: s I - d is orthogonal to I after the fit
    probe = initial.probe_from_data(farfield.data)
    obj = initial.object_ones(farfield.obj.shape[-2:])
    fitted = initial.fit_probe_scale(obj, 0.01 * probe, farfield.positions, farfield.data,
                                     **farfield.forward_kwargs())
    i = cuptycho.forward(obj, fitted, farfield.positions, **farfield.forward_kwargs()).astype(np.float64)
    d = farfield.data.astype(np.float64)
    assert abs(np.sum(i * (i - d))) < 1e-5 * np.sum(i * i)
    # 2-D probes keep their shape
    assert initial.fit_probe_scale(obj, probe[0], farfield.positions, farfield.data).shape == (64, 64)


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, match", [
    (dict(data=-np.ones((2, 8, 8))), "negative"),
    (dict(data=np.ones(8)), "shape"),
    (dict(data=np.ones((2, 8, 8), complex)), "real"),
    (dict(data=np.ones((2, 8, 8)), n_modes=0), "n_modes"),
    (dict(data=np.ones((2, 8, 8)), n_modes=65), "n_modes"),
    (dict(data=np.ones((2, 8, 8)), propagator="nearfield"), "propagator"),
    (dict(data=np.ones((2, 8, 8)), shape=(9, 8)), "shape"),
    (dict(data=np.ones((2, 8, 8)), mask=np.ones((7, 8))), "mask"),
    (dict(data=np.ones((2, 8, 8)), mask=np.zeros((8, 8))), "no valid pixel"),
    (dict(data=np.zeros((2, 8, 8))), "zero"),
    (dict(data=np.ones((2, 8, 8)), n_modes=2, mode_power=1.0), "mode_power"),
    (dict(data=np.ones((2, 8, 8)), n_modes=2, mode_power=0.0), "mode_power"),
    (dict(data=np.ones((2, 8, 8)), dtype=np.float32), "dtype"),
    (dict(data=np.ones((2, 8, 8)), z=1e-3), "z is only used"),
    (dict(data=np.ones((2, 8, 8)), propagator="angular_spectrum", padding=2), "padding"),
    (dict(data=np.ones((2, 8, 8)), propagator="angular_spectrum", z=1e-3), "wavelength"),
    (dict(data=np.ones((2, 8, 8)), propagator="fresnel", z=1e-3, wavelength=1e-10, pixel_size=1e-8,
          shape=(6, 6)), "full pattern shape"),
])
def test_probe_from_data_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        initial.probe_from_data(**kwargs)


@pytest.mark.parametrize("call, match", [
    (lambda: initial.probe_aperture((16, 16), 0.0), "radius_px"),
    (lambda: initial.probe_aperture((16, 16), 4.0, 0), "n_modes"),
    (lambda: initial.probe_aperture((16, 1.5), 4.0), "shape"),
    (lambda: initial.probe_aperture((16, 16), 4.0, defocus_phase=np.inf), "defocus_phase"),
    (lambda: initial.probe_aperture((16, 16), 0.1, 2), "independent"),    # one lit pixel: no second mode
    (lambda: initial.object_ones((16, 16), dtype=np.float64), "dtype"),
    (lambda: initial.object_ones((16, 16), 0), "n_modes"),
    (lambda: initial.object_ones((16, 16), 2, seed=-1), "seed"),
])
def test_guess_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_fit_probe_scale_errors(farfield):
    obj = initial.object_ones(farfield.obj.shape[-2:])
    probe = initial.probe_from_data(farfield.data)
    with pytest.raises(ValueError, match="no intensity"):
        initial.fit_probe_scale(obj, 0 * probe, farfield.positions, farfield.data)
    with pytest.raises(ValueError, match="data must have shape"):
        initial.fit_probe_scale(obj, probe, farfield.positions, farfield.data[:3])
    with pytest.raises(ValueError, match="mask"):
        initial.fit_probe_scale(obj, probe, farfield.positions, farfield.data, np.ones((3, 3)))


# --------------------------------------------------------------------------- add_modes

@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_add_modes_keeps_given_modes(dtype):
    given = simulate.probe_modes(simulate.probe_focused((32, 32), width=8.0), 2).astype(dtype)
    out = initial.add_modes(given, 5, mode_power=0.1, seed=1)
    assert out.shape == (5, 32, 32) and out.dtype == dtype
    tol = 1e-5 if dtype == np.complex64 else 1e-12
    np.testing.assert_allclose(out[:2], given * np.sqrt(0.9), rtol=0, atol=tol * np.abs(given).max())
    m = out.astype(np.complex128).reshape(5, -1)
    power = np.sum(np.abs(m) ** 2, axis=1)
    gram = np.abs(m.conj() @ m.T) / np.sqrt(np.outer(power, power))
    np.testing.assert_array_less(gram[~np.eye(5, dtype=bool)], 10 * tol)
    total = np.sum(np.abs(given.astype(np.complex128)) ** 2)
    np.testing.assert_allclose(power.sum(), total, rtol=10 * tol)
    np.testing.assert_allclose(power[2:] / total, 0.1 * np.array([4, 2, 1]) / 7, rtol=10 * tol)
    # as many modes as given: unchanged; a 2-D probe is one mode
    np.testing.assert_array_equal(initial.add_modes(given, 2), given)
    assert initial.add_modes(given[0], 3).shape == (3, 32, 32)
    with pytest.raises(ValueError, match="n_modes"):
        initial.add_modes(given, 1)
    with pytest.raises(ValueError, match="probe"):
        initial.add_modes(np.abs(given), 3)
