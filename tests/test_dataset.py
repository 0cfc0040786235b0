"""cuptycho.Dataset: geometry derivations, unit conversions, position signs and preprocessing."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from cuptycho import Dataset
from cuptycho import preprocess as P
from cuptycho import units as U

PETRA_ENERGY_J = 2.0280385e-15          # the PETRA III P25 file's source_1/energy
PETRA_WAVELENGTH = 9.7949e-11           # its source_1/wavelength


def patterns(n=6, shape=(16, 16), seed=0):
    rng = np.random.default_rng(seed)
    return rng.poisson(50.0, size=(n, *shape)).astype(np.float32)


def grid(n=6, step=3.0):
    return np.array([[step * (j // 3), step * (j % 3)] for j in range(n)], dtype=np.float64)


# --------------------------------------------------------------------------- units and geometry

def test_energy_and_wavelength_convert_both_ways():
    wl = U.energy_to_wavelength(PETRA_ENERGY_J)
    assert wl == pytest.approx(PETRA_WAVELENGTH, rel=1e-4)
    assert U.wavelength_to_energy(wl) == pytest.approx(PETRA_ENERGY_J, rel=1e-12)
    assert U.joule_to_ev(PETRA_ENERGY_J) == pytest.approx(12658, rel=1e-4)          # 12.658 keV
    assert U.ev_to_joule(U.joule_to_ev(PETRA_ENERGY_J)) == pytest.approx(PETRA_ENERGY_J, rel=1e-12)
    with pytest.raises(ValueError, match="energy"):
        U.energy_to_wavelength(-1.0)


def test_fresnel_scaling_of_the_petra_geometry():
    # focus 3.65 mm upstream of the sample, detector 1.12 m downstream, 55 um pixels
    m, z_eff, px = U.fresnel_scaling(3.65e-3, 1.12, 55e-6)
    assert m == pytest.approx((3.65e-3 + 1.12) / 3.65e-3) and m == pytest.approx(307.849, rel=1e-5)
    assert z_eff == pytest.approx(3.65e-3 * 1.12 / (3.65e-3 + 1.12)) and z_eff == pytest.approx(3.6381e-3, rel=1e-4)
    assert px[0] == px[1] == pytest.approx(55e-6 / m) and px[0] == pytest.approx(178.66e-9, rel=1e-4)


def test_from_measurement_far_field_derives_pixel_size_and_positions():
    data = patterns(shape=(16, 20))
    pm = grid() * 1e-8
    ds = Dataset.from_measurement(data, energy=PETRA_ENERGY_J, detector_distance=2.0, detector_pixel_size=75e-6,
                                  positions_m=pm)
    wl = U.energy_to_wavelength(PETRA_ENERGY_J)
    assert ds.pixel_size == pytest.approx((wl * 2.0 / (16 * 75e-6), wl * 2.0 / (20 * 75e-6)))
    assert ds.propagator == "farfield" and ds.z is None and ds.geometry_kind == "farfield"
    assert ds.energy == pytest.approx(PETRA_ENERGY_J) and ds.magnification is None
    # pixels = metres / pixel size, shifted so the scan starts at the margin
    np.testing.assert_allclose(ds.positions - ds.positions[0], (pm - pm[0]) / np.asarray(ds.pixel_size), rtol=1e-12)
    assert ds.positions.min() == ds.margin
    same = Dataset.from_measurement(data, wavelength=wl, detector_distance=2.0, detector_pixel_size=75e-6,
                                    positions_m=pm)
    np.testing.assert_allclose(same.positions, ds.positions)
    assert ds.derived_sampling()[0] == pytest.approx(ds.pixel_size)


def test_from_measurement_near_field_with_and_without_focus():
    data = patterns()
    pm = grid() * 1e-7
    par = Dataset.from_measurement(data, wavelength=1e-10, detector_distance=0.05, detector_pixel_size=1e-6,
                                   geometry_kind="nearfield", positions_m=pm)
    assert par.propagator == "angular_spectrum" and par.z == pytest.approx(0.05)
    assert par.pixel_size == pytest.approx((1e-6, 1e-6)) and par.magnification == 1.0
    cone = Dataset.from_measurement(data, wavelength=1e-10, detector_distance=1.12, detector_pixel_size=55e-6,
                                    geometry_kind="nearfield", focus_distance=3.65e-3, positions_m=pm,
                                    propagator="fresnel")
    m = (3.65e-3 + 1.12) / 3.65e-3
    assert cone.magnification == pytest.approx(m) and cone.effective_distance == pytest.approx(1.12 / m)
    assert cone.z == pytest.approx(1.12 / m) and cone.pixel_size == pytest.approx((55e-6 / m,) * 2)
    assert cone.forward_kwargs()["z"] == pytest.approx(1.12 / m) and cone.forward_kwargs(z=1.0)["z"] == 1.0


@pytest.mark.parametrize("kwargs, match", [
    ({"wavelength": 1e-10, "energy": 1e-15}, "exactly one"),
    ({}, "exactly one"),
    ({"wavelength": 1e-10, "positions_m": None}, "positions"),
    ({"wavelength": 1e-10, "focus_distance": 1e-3}, "focus_distance"),
    ({"wavelength": 1e-10, "detector_distance": -1.0}, "detector_distance"),
    ({"wavelength": 1e-10, "geometry_kind": "sideways"}, "geometry_kind"),
])
def test_from_measurement_rejects_inconsistent_input(kwargs, match):
    base = {"detector_distance": 1.0, "detector_pixel_size": 55e-6, "positions_m": grid() * 1e-7}
    with pytest.raises(ValueError, match=match):
        Dataset.from_measurement(patterns(), **{**base, **kwargs})


def test_geometry_kind_must_match_the_propagator():
    with pytest.raises(ValueError, match="geometry_kind"):
        Dataset(patterns(), grid(), geometry_kind="nearfield")
    with pytest.raises(ValueError, match="focus_distance"):
        Dataset(patterns(), grid(), focus_distance=1e-3)
    with pytest.raises(ValueError, match="positions_m"):
        Dataset(patterns(), grid(), positions_m=np.zeros((5, 2)))


def test_cxi_translations_to_positions_signs():
    t = np.array([[1e-6, 2e-6, 0.0], [-3e-6, 5e-6, 0.0]])           # sample translations (x, y, z)
    # default basis (cdtools, PETRA file): rows along -y, columns along -x -> positions = (t_y, t_x)
    np.testing.assert_allclose(U.translations_to_positions(t), t[:, [1, 0]])
    # rows along +y and columns along +x: the probe moves by -t relative to the sample
    np.testing.assert_allclose(U.translations_to_positions(t, [[0, 1], [1, 0], [0, 0]]), -t[:, [1, 0]])
    # a (2, 3) basis is the transpose of the (3, 2) one; magnitudes do not matter
    basis = np.array([[0, -55e-6], [-55e-6, 0], [0, 0]])
    np.testing.assert_allclose(U.translations_to_positions(t, basis.T), U.translations_to_positions(t, basis))
    np.testing.assert_allclose(U.positions_to_translations(U.translations_to_positions(t, basis), basis), t,
                               atol=1e-20)
    with pytest.raises(ValueError, match="orthogonal"):
        U.translations_to_positions(t, [[1, 1], [0, 0.5], [0, 0]])


def test_existing_behaviour_is_kept():
    ds = Dataset(patterns(), grid() + 100.0)
    assert ds.positions.min(axis=0).tolist() == [4.0, 4.0] and ds.obj_shape == (3 + 16 + 9, 6 + 16 + 9)
    assert ds.forward_kwargs() == {"propagator": "farfield"}
    assert ds.n_patterns == 6 and ds.patch_shape == (16, 16)
    with pytest.raises(ValueError, match="negative"):
        Dataset(patterns() - 100, grid())


# --------------------------------------------------------------------------- preprocessing

def test_clip_negative_warns_with_the_count_and_is_never_silent():
    a = np.array([[[-1.0, 2.0], [-3.0, 4.0]]], dtype=np.float32)
    with pytest.warns(P.NegativeCountsWarning, match=r"2 negative value\(s\) \(min -3\)"):
        out = P.clip_negative(a)
    assert out.tolist() == [[[0.0, 2.0], [0.0, 4.0]]] and a[0, 0, 0] == -1      # pure
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert P.clip_negative(np.abs(a)) is not None                           # nothing to clip: no warning


def test_subtract_dark_array_and_dataset():
    data = patterns()
    dark = np.stack([np.full((16, 16), 49.0), np.full((16, 16), 51.0)])         # mean 50
    n_neg = int(np.sum(data < 50))
    with pytest.warns(P.NegativeCountsWarning, match=f"{n_neg} negative"):
        out = P.subtract_dark(data, dark)
    np.testing.assert_allclose(out, np.maximum(data - 50, 0))
    raw = P.subtract_dark(data, dark[0], clip=False)
    assert raw.min() < 0 and raw.dtype == np.float32
    ds = Dataset(data, grid())
    with pytest.warns(P.NegativeCountsWarning, match=f"{n_neg} negative"):
        ds2 = P.subtract_dark(ds, dark)
    np.testing.assert_allclose(ds2.data, np.maximum(data - 50, 0))
    np.testing.assert_array_equal(ds.data, data)                                 # pure
    with pytest.raises(ValueError, match="shape"):
        P.subtract_dark(data, np.zeros((8, 8)))


def test_fftshift_patterns_centres_the_zero_frequency_for_odd_and_even_sizes():
    for shape in ((8, 8), (7, 9)):
        a = np.zeros((2, *shape), dtype=np.float32)
        a[:, 0, 0] = 1
        c = P.fftshift_patterns(a)
        assert np.unravel_index(np.argmax(c[0]), shape) == (shape[0] // 2, shape[1] // 2)
        np.testing.assert_array_equal(P.ifftshift_patterns(c), a)
    mask = np.ones((8, 8))
    mask[0, 0] = 0
    ds = P.fftshift_patterns(Dataset(patterns(shape=(8, 8)), grid(), mask=mask))
    assert ds.mask[4, 4] == 0 and ds.mask.sum() == 63


def test_crop_centred_explicit_and_on_the_beam():
    data = np.zeros((6, 16, 16), dtype=np.float32)
    data[:, 9, 6] = 100                                  # beam off centre at (9, 6)
    assert P.crop(data, 8).shape == (6, 8, 8)
    np.testing.assert_array_equal(P.crop(data, 8), data[:, 4:12, 4:12])
    assert P.find_centre(data, "mass") == (9, 6) == P.find_centre(data, "max")
    c = P.crop(data, (6, 8), center="mass")
    assert np.unravel_index(np.argmax(c[0]), c.shape[1:]) == (3, 4)               # beam at the new centre
    np.testing.assert_array_equal(P.crop(data, 4, center=(2, 2)), data[:, 0:4, 0:4])
    with pytest.raises(ValueError, match="does not fit"):
        P.crop(data, 8, center=(1, 1))


def test_crop_updates_far_field_sampling_and_keeps_near_field_sampling():
    data = patterns(shape=(16, 16))
    pm = grid() * 1e-8
    ff = Dataset.from_measurement(data, wavelength=1e-10, detector_distance=1.0, detector_pixel_size=50e-6,
                                  positions_m=pm, mask=np.ones((16, 16)), probe=np.ones((1, 16, 16), np.complex64))
    c = P.crop(ff, 8)
    assert c.pixel_size == pytest.approx(tuple(2 * np.asarray(ff.pixel_size)))   # lambda z / (N p), N halved
    np.testing.assert_allclose(c.positions - c.positions.min(0), (ff.positions - ff.positions.min(0)) / 2)
    assert c.mask.shape == (8, 8) and c.probe is None and c.patch_shape == (8, 8)
    nf = Dataset.from_measurement(data, wavelength=1e-10, detector_distance=1.0, detector_pixel_size=50e-6,
                                  geometry_kind="nearfield", focus_distance=0.01, positions_m=pm)
    c = P.crop(nf, 8)
    assert c.pixel_size == pytest.approx(nf.pixel_size) and c.z == pytest.approx(nf.z)
    np.testing.assert_allclose(c.positions, nf.positions)


def test_bin_patterns_sums_blocks_and_updates_the_geometry():
    data = patterns(shape=(16, 16))
    b = P.bin_patterns(data, 2)
    np.testing.assert_allclose(b, data.reshape(6, 8, 2, 8, 2).sum(axis=(2, 4)))
    assert P.bin_patterns(patterns(shape=(9, 9)), 2).shape == (6, 4, 4)           # edges dropped
    mask = np.ones((16, 16))
    mask[3, 3] = 0
    pm = grid() * 1e-7
    ff = Dataset.from_measurement(data, wavelength=1e-10, detector_distance=1.0, detector_pixel_size=50e-6,
                                  positions_m=pm, mask=mask)
    fb = P.bin_patterns(ff, 2)
    assert fb.mask[1, 1] == 0 and fb.mask.sum() == 63                             # conservative binning
    assert fb.detector_pixel_size == pytest.approx((100e-6, 100e-6))
    assert fb.pixel_size == pytest.approx(ff.pixel_size)                           # N p unchanged
    np.testing.assert_allclose(fb.positions, ff.positions)
    nf = Dataset(data, grid(), propagator="angular_spectrum", z=1e-3, wavelength=1e-10, pixel_size=1e-7)
    nb = P.bin_patterns(nf, 2)
    assert nb.pixel_size == pytest.approx((2e-7, 2e-7)) and nb.z == nf.z         # near field: dx grows
    np.testing.assert_allclose(nb.positions - nb.positions.min(0), (nf.positions - nf.positions.min(0)) / 2)


def test_mask_pixels_bad_and_saturated():
    data = patterns()
    data[2, 5, 5] = 1e6
    w = P.mask_pixels(data, bad=[(0, 1)], saturation=1e5)
    assert w.shape == (6, 16, 16) and w[2, 5, 5] == 0 and w[1, 5, 5] == 1 and np.all(w[:, 0, 1] == 0)
    g = P.mask_pixels(data, saturation=1e5, per_frame=False)
    assert g.shape == (16, 16) and g[5, 5] == 0 and g.sum() == 255
    bad = np.zeros((16, 16), bool)
    bad[7, 7] = True
    ds = P.mask_pixels(Dataset(data, grid(), mask=np.ones((16, 16)) * (np.arange(16) != 0)), bad=bad)
    assert ds.mask[7, 7] == 0 and np.all(ds.mask[:, 0] == 0) and ds.mask.sum() == 16 * 15 - 1
    with pytest.raises(ValueError, match="inside"):
        P.mask_pixels(data, bad=[(20, 0)])


def test_describe_names_the_geometry():
    ds = Dataset.from_measurement(patterns(), energy=PETRA_ENERGY_J, detector_distance=1.12, detector_pixel_size=55e-6,
                                  geometry_kind="nearfield", focus_distance=3.65e-3, positions_m=grid() * 1e-7)
    text = ds.describe()
    assert "magnification 307.8" in text and "12.658 keV" in text and "effective distance 0.00363" in text


def test_the_shift_that_places_the_scan_inside_a_derived_object_is_exposed():
    """Positions were shifted by the margin without a word: the offset is now a field and in describe()."""
    data = np.ones((3, 8, 8), dtype=np.float32)
    given = np.array([[-5.0, 10.0], [0.0, 12.5], [3.0, 20.0]])
    ds = Dataset(data, given, margin=4)
    assert ds.position_offset == (9.0, -6.0)
    np.testing.assert_array_equal(ds.positions, given + ds.position_offset)
    assert "positions shifted by (9, -6) px so the scan starts 4 px inside the object" in ds.describe()
    kept = Dataset(data, given + np.array([5.0, 0.0]), obj_shape=(20, 36))
    assert kept.position_offset is None and "shifted" not in kept.describe()
    np.testing.assert_array_equal(kept.positions, given + np.array([5.0, 0.0]))
