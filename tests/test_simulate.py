"""The virtual experiment: determinism, photon scaling, consistency with `forward`, probe modes,
scan patterns, object ranges, position errors and input checks."""
from __future__ import annotations

import time

import numpy as np
import pytest

import cuptycho
from cuptycho import geometry
from cuptycho import simulate as sim

WAVELENGTH = 1.24e-10

# A cheap far-field case with every random stream in use.
NOISY = dict(jitter=1.0, position_error=1.5, read_noise=2.0, n_probe_modes=2)


def _rel_gram(modes):
    """Off-diagonal of the normalised Gram matrix |<m_i, m_j>| / (|m_i| |m_j|)."""
    flat = modes.reshape(modes.shape[0], -1).astype(np.complex128)
    norms = np.linalg.norm(flat, axis=1)
    gram = np.abs(flat.conj() @ flat.T) / np.outer(norms, norms)
    return gram - np.diag(np.diag(gram))


def _nearest_neighbour(pos):
    d = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return d.min(axis=1)


# --------------------------------------------------------------------------- determinism

def test_same_seed_gives_identical_arrays():
    a = sim.preset("small_farfield", **NOISY, seed=3)
    b = sim.preset("small_farfield", **NOISY, seed=3)
    for name in ("obj", "probe", "positions", "positions_start", "data", "intensity_clean"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_different_seed_gives_different_data():
    a = sim.preset("small_farfield", **NOISY, seed=3)
    b = sim.preset("small_farfield", **NOISY, seed=4)
    assert not np.array_equal(a.data, b.data)
    assert not np.array_equal(a.positions, b.positions)          # jitter
    assert not np.array_equal(a.positions_start - a.positions, b.positions_start - b.positions)


def test_changing_one_option_leaves_other_randomness_alone():
    base = sim.preset("small_farfield", **NOISY)
    other = sim.preset("small_farfield", **{**NOISY, "read_noise": 0.0, "photons": 1e4, "n_probe_modes": 3})
    np.testing.assert_array_equal(base.positions, other.positions)
    np.testing.assert_array_equal(base.positions_start, other.positions_start)
    # the streams are independent, not copies: jitter and start-position error are uncorrelated
    jitter = base.positions - sim.raster_scan(7, 7, base.step) - base.positions.min(0)
    error = base.positions_start - base.positions
    assert abs(np.corrcoef(jitter.ravel(), error.ravel())[0, 1]) < 0.5
    more_error = sim.preset("small_farfield", **{**NOISY, "position_error": 1.0})
    np.testing.assert_allclose(base.positions - base.positions.min(0),      # only the margin moved
                               more_error.positions - more_error.positions.min(0), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- photons and forward consistency

@pytest.mark.parametrize("photons", [1e3, 1e6, 1e9])
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_photon_count_sets_the_brightest_pattern(photons, dtype):
    e = sim.preset("small_farfield", photons=photons, dtype=dtype)
    totals = e.intensity_clean.astype(np.float64).sum(axis=(-2, -1))
    rtol = 1e-5 if dtype == np.complex64 else 1e-12
    np.testing.assert_allclose(totals.max(), photons, rtol=rtol)
    assert totals.min() < 0.999 * photons             # not every pattern is the brightest
    # Poisson counts: integers, and their grand total agrees with the expectation.
    assert e.data.dtype == np.float32
    np.testing.assert_array_equal(e.data, np.rint(e.data))
    expected = totals.sum()
    assert abs(e.data.astype(np.float64).sum() - expected) < 5 * np.sqrt(expected) + 1
    assert not np.array_equal(e.data, e.intensity_clean.astype(np.float32))


@pytest.mark.parametrize("dtype, rtol", [(np.complex64, 1e-5), (np.complex128, 1e-12)])
@pytest.mark.parametrize("name, extra", [
    ("small_farfield", {}),
    ("small_farfield", {"n_probe_modes": 3, "n_object_modes": 2, "scan": "rings", "scan_size": 2}),
    ("small_nearfield", {}),
    ("small_nearfield", {"propagator": "fresnel", "padding": 4, "n_probe_modes": 2}),
])
def test_clean_intensity_is_forward_of_the_stored_truth(dtype, rtol, name, extra):
    e = sim.preset(name, dtype=dtype, **extra)
    assert e.obj.dtype == dtype and e.probe.dtype == dtype
    assert e.positions.dtype == np.float64 and e.positions_start.dtype == np.float64
    assert e.intensity_clean.dtype == np.finfo(dtype).dtype
    model = cuptycho.forward(e.obj, e.probe, e.positions, **e.forward_kwargs())
    scale = np.abs(model).max()
    np.testing.assert_allclose(e.intensity_clean, model, rtol=rtol, atol=rtol * scale)
    # the truth is not trivially consistent: a slightly wrong probe does not reproduce the data
    wrong = cuptycho.forward(e.obj, e.probe * np.asarray(1.01, dtype), e.positions, **e.forward_kwargs())
    assert not np.allclose(e.intensity_clean, wrong, rtol=rtol, atol=rtol * scale)


def test_no_photons_gives_noise_free_float_data():
    e = sim.preset("small_farfield", photons=None)
    assert e.photons is None and e.data.dtype == np.float32
    np.testing.assert_array_equal(e.data, e.intensity_clean.astype(np.float32))
    assert not np.array_equal(e.data, np.rint(e.data))


def test_read_noise_is_rounded_and_clipped():
    quiet = sim.preset("small_farfield", photons=1e4)
    noisy = sim.preset("small_farfield", photons=1e4, read_noise=5.0)
    assert noisy.data.min() >= 0
    np.testing.assert_array_equal(noisy.data, np.rint(noisy.data))
    extra = noisy.data.astype(np.float64) - quiet.data          # same Poisson stream in both
    dark = quiet.data > 50                                       # away from the clip at zero
    assert 4.0 < extra[dark].std() < 6.0


def test_preset_is_fast():
    sim.preset("small_farfield")                                # first call pays the imports
    t = time.perf_counter()
    sim.preset("small_farfield")
    assert time.perf_counter() - t < 1.0


# --------------------------------------------------------------------------- probes

@pytest.mark.parametrize("n_modes, fractions", [(1, None), (3, None), (4, (0.5, 0.3, 0.15, 0.05))])
def test_probe_modes_are_orthogonal_with_requested_power(n_modes, fractions):
    probe = sim.probe_focused((48, 40), width=9.0, defocus=2e-3, wavelength=WAVELENGTH, pixel_size=5e-8)
    modes = sim.probe_modes(probe, n_modes, power_fractions=fractions, seed=1)
    assert modes.shape == (n_modes, 48, 40) and modes.dtype == np.complex128
    assert _rel_gram(modes).max(initial=0.0) < 1e-10
    expected = sim.default_power_fractions(n_modes) if fractions is None else np.array(fractions)
    total = np.sum(np.abs(probe) ** 2)
    np.testing.assert_allclose(np.sum(np.abs(modes) ** 2, axis=(-2, -1)) / total, expected, rtol=1e-10)
    # mode 0 has the probe's shape
    np.testing.assert_allclose(modes[0], probe * np.sqrt(expected[0]), rtol=0, atol=1e-12 * np.abs(probe).max())


def test_probe_modes_keep_single_precision_and_differ_by_seed():
    probe = sim.probe_from_images((32, 32), envelope=12.0, dtype=np.complex64)
    a = sim.probe_modes(probe, 3, seed=0)
    assert a.dtype == np.complex64
    assert _rel_gram(a).max() < 1e-5
    assert not np.allclose(a[1:], sim.probe_modes(probe, 3, seed=1)[1:])
    np.testing.assert_allclose(sim.default_power_fractions(3), [0.80645161, 0.16129032, 0.03225806], rtol=1e-6)


@pytest.mark.parametrize("fractions, match", [
    ((0.7, 0.2), "sum to 1"),
    ((0.5, 0.3, 0.2), "one entry per mode"),
    ((1.1, -0.1), ">= 0"),
])
def test_probe_modes_reject_bad_fractions(fractions, match):
    probe = sim.probe_focused(16, width=5.0)
    with pytest.raises(ValueError, match="power_fractions") as err:
        sim.probe_modes(probe, 2, power_fractions=fractions)
    assert match in str(err.value)


@pytest.mark.parametrize("z", [0.0, 2e-4, 1e-3, -5e-4])
def test_aperture_probe_conserves_power(z):
    shape, pix = (96, 80), (6e-8, 5e-8)
    radius = 1.2e-6
    probe = sim.probe_aperture(shape, radius=radius, z=z, wavelength=WAVELENGTH, pixel_size=pix)
    bare = sim.probe_aperture(shape, radius=radius, z=0.0, wavelength=WAVELENGTH, pixel_size=pix)
    assert probe.shape == shape and probe.dtype == np.complex128
    n_inside = np.count_nonzero(np.abs(bare) > 0.5)
    assert n_inside > 500
    p_in, p_out = float(n_inside), float(np.sum(np.abs(probe) ** 2))
    assert abs(p_out - p_in) <= 1e-10 * p_in
    if z != 0:                                            # propagation really changed the field
        assert np.abs(probe - bare).max() > 0.1


def test_aperture_probe_checks():
    with pytest.raises(ValueError, match="radius"):
        sim.probe_aperture(32, radius=0.0, z=0.0, wavelength=WAVELENGTH, pixel_size=5e-8)
    with pytest.raises(ValueError, match="pixel_size"):
        sim.probe_aperture(32, radius=1e-6, z=0.0, wavelength=WAVELENGTH, pixel_size=-5e-8)
    point = sim.probe_aperture(32, radius=1e-9, z=0.0, wavelength=WAVELENGTH, pixel_size=5e-8)
    assert np.count_nonzero(np.abs(point) > 0.5) == 1 and abs(point[16, 16]) == pytest.approx(1.0)


def test_focused_probe_width_and_defocus_phase():
    p = sim.probe_focused((64, 64), width=16.0)
    intensity = np.abs(p) ** 2
    assert intensity[32, 32] == pytest.approx(1.0)
    assert intensity[32, 32 + 8] == pytest.approx(0.5) and intensity[32 - 8, 32] == pytest.approx(0.5)
    assert sim.probe_diameter(p) == pytest.approx(16.0, rel=0.05)
    d = sim.probe_focused((64, 64), width=16.0, defocus=4e-3, wavelength=WAVELENGTH, pixel_size=(5e-8, 4e-8))
    np.testing.assert_allclose(np.abs(d), np.abs(p), rtol=1e-12)
    r2 = (3 * 5e-8) ** 2 + (2 * 4e-8) ** 2                 # pixel (35, 34) relative to the centre
    assert np.angle(d[35, 34] / d[32, 32]) == pytest.approx(np.pi * r2 / (WAVELENGTH * 4e-3), rel=1e-9)
    with pytest.raises(ValueError, match="defocus"):
        sim.probe_focused(64, width=16.0, defocus=1e-3)


def test_probe_models_name_their_units():
    """simulate's probe functions keep their keywords; the models in `probes` say pixels or metres."""
    from cuptycho import probes
    kw = dict(z=2e-4, wavelength=WAVELENGTH, pixel_size=(6e-8, 5e-8))
    np.testing.assert_array_equal(sim.probe_aperture(48, radius=1e-6, **kw), probes.aperture_m(48, radius_m=1e-6, **kw))
    kw = dict(wavelength=WAVELENGTH, pixel_size=5e-8)
    np.testing.assert_array_equal(sim.probe_focused(32, width=6.0, defocus=1e-3, **kw),
                                  probes.focused(32, width_px=6.0, defocus_m=1e-3, **kw))
    np.testing.assert_array_equal(sim.probe_from_images(32, envelope=8.0), probes.from_images(32, envelope_px=8.0))
    assert sim.probe_modes is probes.modes and sim.probe_diameter is probes.diameter_px
    with pytest.raises(ValueError, match="width"):
        sim.probe_focused(32, width=0.0)


def test_simulation_modules_use_no_private_names_of_other_modules():
    import ast
    import importlib
    import inspect
    names = ("simulate", "probes", "scans", "objects", "images", "initial")
    for name in names:
        module = importlib.import_module(f"cuptycho.{name}")
        tree = ast.parse(inspect.getsource(module))
        imported = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                    and node.level == 1 and node.module is None for a in node.names}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                assert not any(a.name.startswith("_") for a in node.names), (name, ast.dump(node))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in imported:
                assert not node.attr.startswith("_"), (name, node.value.id, node.attr)


# --------------------------------------------------------------------------- scans

def test_overlap_to_step():
    assert sim.step_from_overlap(20.0, 0.75) == pytest.approx(5.0)
    assert sim.step_from_overlap(12.0, 0.0) == pytest.approx(12.0)
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="overlap"):
            sim.step_from_overlap(20.0, bad)
    with pytest.raises(ValueError, match="probe_diameter"):
        sim.step_from_overlap(0.0, 0.5)


def test_raster_counts_and_step():
    pos = sim.raster_scan(5, 7, 3.5)
    assert pos.shape == (35, 2) and pos.dtype == np.float64
    np.testing.assert_allclose(pos.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.diff(np.unique(pos[:, 0])), 3.5)
    np.testing.assert_allclose(np.diff(np.unique(pos[:, 1])), 3.5)
    assert len(np.unique(pos[:, 0])) == 5 and len(np.unique(pos[:, 1])) == 7
    np.testing.assert_allclose(pos[1] - pos[0], [0.0, 3.5])     # x fast
    np.testing.assert_allclose(np.diff(np.unique(sim.raster_scan(3, 4, (2.0, 5.0))[:, 1])), 5.0)


def test_raster_jitter_rms():
    pos = sim.raster_scan(40, 40, 4.0, jitter=0.8, seed=2)
    d = pos - sim.raster_scan(40, 40, 4.0)
    rms = np.sqrt(np.mean(np.sum(d**2, axis=1)))
    assert rms == pytest.approx(0.8, rel=0.05)
    np.testing.assert_array_equal(pos, sim.raster_scan(40, 40, 4.0, jitter=0.8, seed=2))


@pytest.mark.parametrize("n, step", [(30, 3.0), (100, 5.0), (400, 7.5)])
def test_fermat_spiral_spacing(n, step):
    pos = sim.fermat_spiral(n, step)
    assert pos.shape == (n, 2)
    np.testing.assert_array_equal(pos[0], [0.0, 0.0])
    nn = _nearest_neighbour(pos)
    assert nn.mean() == pytest.approx(step, rel=0.2)
    assert nn.min() > 0.5 * step                          # no clustering
    assert len(np.unique(np.round(np.hypot(*pos.T), 9))) == n     # one point per radius


@pytest.mark.parametrize("n_rings", [0, 1, 4])
def test_concentric_rings(n_rings):
    step = 2.5
    pos = sim.concentric_rings(n_rings, step)
    counts = [int(round(2 * np.pi * r)) for r in range(1, n_rings + 1)]
    assert pos.shape == (1 + sum(counts), 2)
    np.testing.assert_array_equal(pos[0], [0.0, 0.0])
    radius = np.hypot(pos[:, 0], pos[:, 1])
    ring = np.rint(radius / step)
    np.testing.assert_allclose(radius, ring * step, atol=1e-12)
    assert [int(np.sum(ring == r)) for r in range(1, n_rings + 1)] == counts
    if n_rings:
        outer = pos[ring == n_rings]
        np.testing.assert_allclose(np.hypot(*(outer - np.roll(outer, 1, axis=0)).T),
                                   2 * n_rings * step * np.sin(np.pi / counts[-1]), rtol=1e-12)
        assert _nearest_neighbour(pos).mean() == pytest.approx(step, rel=0.2)


def test_simulate_uses_step_from_overlap():
    e = sim.preset("small_farfield", jitter=0.0, overlap=0.6)
    diameter = sim.probe_diameter(sim.probe_focused(64, width=16.0))
    assert e.step == pytest.approx(diameter * 0.4)
    np.testing.assert_allclose(np.diff(np.unique(np.round(e.positions[:, 1], 9))), e.step, rtol=1e-9)
    assert sim.preset("small_farfield", step=3.0).step == 3.0


# --------------------------------------------------------------------------- objects

@pytest.mark.parametrize("magnitude, phase", [("camera", "astronaut"), ("logo", "horse"), ("moon", "coffee")])
def test_object_amplitude_and_phase_span_the_ranges(magnitude, phase):
    amp_range, ph_range = (0.3, 0.9), (-1.0, 2.0)
    obj = sim.object_from_images((50, 70), magnitude=magnitude, phase=phase, amplitude_range=amp_range,
                                 phase_range=ph_range)
    assert obj.shape == (50, 70) and obj.dtype == np.complex128
    amp, ph = np.abs(obj), np.angle(obj)
    assert amp.min() == pytest.approx(0.3, abs=1e-12) and amp.max() == pytest.approx(0.9, abs=1e-12)
    assert ph.min() == pytest.approx(-1.0, abs=1e-12) and ph.max() == pytest.approx(2.0, abs=1e-12)
    assert np.std(amp) > 0.02 and np.std(ph) > 0.05


def test_object_from_arrays_and_flat_parts():
    ramp = np.linspace(0, 5, 30)[None, :] * np.ones((20, 1))
    obj = sim.object_from_images((20, 30), magnitude=ramp, phase=None, dtype=np.complex64)
    assert obj.dtype == np.complex64
    np.testing.assert_allclose(np.abs(obj[0]), np.linspace(0.5, 1.0, 30), rtol=1e-6)
    np.testing.assert_array_equal(np.angle(obj), 0.0)
    pure_phase = sim.object_from_images((20, 30), magnitude=None, phase="camera")
    np.testing.assert_allclose(np.abs(pure_phase), 1.0, rtol=1e-14)


def test_unknown_image_lists_the_allowed_names():
    with pytest.raises(ValueError, match="magnitude") as err:
        sim.object_from_images(32, magnitude="lena")
    assert "camera" in str(err.value) and "astronaut" in str(err.value)
    with pytest.raises(ValueError, match="phase"):
        sim.object_from_images(32, phase=np.ones((3, 3, 3)))


def test_simulated_object_in_range_and_modes():
    e = sim.preset("small_farfield", amplitude_range=(0.2, 0.8), phase_range=(-0.5, 0.5))
    amp, ph = np.abs(e.obj[0]), np.angle(e.obj[0])
    assert amp.min() >= 0.2 - 1e-6 and amp.max() <= 0.8 + 1e-6 and amp.max() - amp.min() > 0.59
    assert ph.min() >= -0.5 - 1e-6 and ph.max() <= 0.5 + 1e-6
    modes = sim.object_modes(e.obj[0].astype(np.complex128), 3, shift=1.0, seed=0)
    fractions = np.sum(np.abs(modes) ** 2, axis=(-2, -1)) / np.sum(np.abs(e.obj[0].astype(np.complex128)) ** 2)
    np.testing.assert_allclose(fractions, sim.default_power_fractions(3), rtol=0.02)
    assert not np.allclose(modes[1] / np.sqrt(fractions[1]), modes[0] / np.sqrt(fractions[0]), atol=1e-3)


# --------------------------------------------------------------------------- positions, geometry

def test_position_error_rms_and_validity():
    e = sim.preset("small_farfield", shape=32, probe_options={"width": 8.0}, scan_size=(20, 20), photons=None,
                   position_error=2.0)
    err = e.positions_start - e.positions
    assert np.sqrt(np.mean(np.sum(err**2, axis=1))) == pytest.approx(2.0, rel=0.1)
    ny, nx = e.probe.shape[-2:]
    h, w = e.obj.shape[-2:]
    assert e.positions.min() >= 2.0 - 1e-12
    assert np.all(e.positions <= [h - ny - 2, w - nx - 2])
    assert np.all(e.positions_start >= 0) and np.all(e.positions_start <= [h - ny, w - nx])
    cuptycho.forward(e.obj, e.probe, e.positions_start, **e.forward_kwargs())   # valid for the model


def test_large_position_error_is_clipped_into_the_object():
    # 2000 patterns at one point, each at the edge of the scan in every direction: with the margin of
    # 2 + ceil(3 sigma) a few start positions (~0.1 % per side) still fall outside and are clipped.
    e = sim.preset("small_farfield", shape=16, probe_options={"width": 4.0}, scan=np.zeros((2000, 2)),
                   position_error=40.0, photons=None)
    ny, nx = e.probe.shape[-2:]
    h, w = e.obj.shape[-2:]
    start = e.positions_start
    assert np.all(start >= 0) and np.all(start <= [h - ny, w - nx])
    assert np.any(start == 0) and np.any(start == [h - ny, w - nx])
    cuptycho.forward(e.obj, e.probe, start, **e.forward_kwargs())


@pytest.mark.parametrize("scan, size", [("raster", 4), ("fermat", 40), ("rings", 3)])
def test_every_scan_fits_the_object(scan, size):
    e = sim.preset("small_farfield", scan=scan, scan_size=size, jitter=2.0, photons=None)
    ny, nx = e.probe.shape[-2:]
    h, w = e.obj.shape[-2:]
    assert np.all(e.positions >= 2) and np.all(e.positions <= [h - ny - 2, w - nx - 2])
    assert e.positions.min(axis=0) == pytest.approx([2.0, 2.0])


def test_geometry_and_forward_kwargs():
    e = sim.preset("small_farfield")
    expected = geometry.farfield_pixel_size(WAVELENGTH, 2.0, 75e-6, (64, 64))
    assert e.pixel_size == pytest.approx(expected) and e.z is None and e.z_start is None
    assert e.forward_kwargs() == {"propagator": "farfield", "z": None, "wavelength": WAVELENGTH,
                                  "pixel_size": e.pixel_size, "padding": 0}
    n = sim.preset("small_nearfield", z_error=0.05)
    assert n.z == 1e-3 and n.z_start == pytest.approx(1.05e-3) and n.pixel_size == (5e-8, 5e-8)
    assert n.forward_kwargs(start=True)["z"] == n.z_start
    g = sim.Geometry(WAVELENGTH, 3e-4, 4e-8, (32, 48), "fresnel")
    assert g.pixel_size == (4e-8, 4e-8) and g.z == 3e-4
    with pytest.raises(ValueError, match="wavelength"):
        sim.Geometry(-1.0, 2.0, 75e-6, 64)
    with pytest.raises(ValueError, match="propagator"):
        sim.Geometry(WAVELENGTH, 2.0, 75e-6, 64, "nearfield")


def test_module_names_and_unknown_preset():
    import types

    from cuptycho.simulate import PRESETS, preset, simulate
    assert isinstance(sim, types.ModuleType) and sim.simulate is simulate and sim.preset is preset
    assert sim.PRESETS is PRESETS and set(PRESETS) == {"small_farfield", "small_nearfield"}
    assert all(hasattr(sim, name) for name in sim.__all__)
    with pytest.raises(ValueError, match="preset"):
        sim.preset("huge")


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, match", [
    ({"photons": -10.0}, "photons"),
    ({"photons": 0}, "photons"),
    ({"overlap": 1.0}, "overlap"),
    ({"overlap": -0.2}, "overlap"),
    ({"scan": "zigzag"}, "scan"),
    ({"probe": "laser"}, "probe"),
    ({"probe_options": {"colour": 1}}, "probe_options"),
    ({"propagator": "nearfield"}, "propagator"),
    ({"dtype": np.float32}, "dtype"),
    ({"z": 1e-3}, "z"),
    ({"padding": 2}, "padding"),
    ({"z_error": 0.1}, "z_error"),
    ({"photons": None, "read_noise": 1.0}, "read_noise"),
    ({"read_noise": -1.0}, "read_noise"),
    ({"position_error": -1.0}, "position_error"),
    ({"jitter": -0.5}, "jitter"),
    ({"seed": -1}, "seed"),
    ({"n_probe_modes": 0}, "n_probe_modes"),
    ({"n_object_modes": 1.5}, "n_object_modes"),
    ({"n_probe_modes": 2, "power_fractions": (0.5, 0.4)}, "power_fractions"),
    ({"step": -3.0}, "step"),
    ({"scan_size": (0, 3)}, "scan_size"),
    ({"amplitude_range": (0.9, 0.1)}, "amplitude_range"),
    ({"magnitude": "nope"}, "magnitude"),
    ({"shape": 1}, "shape"),
    ({"probe": np.ones((8, 8), np.complex64), "shape": 64}, "shape"),
    ({"probe": np.ones((2, 8, 8), np.complex64)}, "probe"),
    ({"probe": np.ones((8, 8))}, "probe"),
    ({"step": "big"}, "step"),
])
def test_bad_simulate_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sim.preset("small_farfield", **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"z": None}, "z"),
    ({"pixel_size": None}, "pixel_size"),
    ({"detector_distance": 2.0}, "detector_distance"),
    ({"z_error": -1.0}, "z_error"),
])
def test_bad_nearfield_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sim.preset("small_nearfield", **kwargs)


def test_bad_scan_arguments():
    with pytest.raises(ValueError, match="jitter"):
        sim.raster_scan(3, 3, 1.0, jitter=-1.0)
    with pytest.raises(ValueError, match="n"):
        sim.fermat_spiral(0, 2.0)
    with pytest.raises(ValueError, match="step"):
        sim.concentric_rings(2, 0.0)
    with pytest.raises(ValueError, match="n_rings"):
        sim.concentric_rings(-1, 1.0)


def test_composed_pieces_feed_simulate():
    """Arrays built with the small functions go straight into simulate."""
    e0 = sim.preset("small_farfield", photons=None)
    probe = sim.probe_aperture(64, radius=8 * e0.pixel_size[0], z=5e-5, wavelength=WAVELENGTH,
                               pixel_size=e0.pixel_size)
    rings = sim.concentric_rings(2, 4.0)
    e = sim.preset("small_farfield", probe=probe, scan=rings + 100.0, jitter=0.0, photons=None, probe_options=None)
    np.testing.assert_allclose(e.probe[0], probe.astype(np.complex64), rtol=1e-6)
    np.testing.assert_allclose(e.positions - e.positions[0], rings - rings[0], atol=1e-12)
    assert sim.probe_diameter(probe) == pytest.approx(16.0, rel=0.1)
    kind = sim.preset("small_farfield", probe="aperture", probe_options={"radius": 8 * e0.pixel_size[0]})
    assert kind.probe.shape == (1, 64, 64) and kind.step == pytest.approx(0.3 * sim.probe_diameter(kind.probe))
