"""NumPy archives: cuptycho's .npz and tike's .npz(.bz2), the shared Siemens star, bad input."""
from __future__ import annotations

import bz2
from pathlib import Path

import numpy as np
import pytest

from cuptycho import Dataset
from cuptycho import io as cio

DATA = Path(__file__).parents[1] / "../shared/data"
TIKE = DATA / "tike_velociprobe_siemens_star" / "siemens-star-small.npz.bz2"
needs_tike = pytest.mark.skipif(not TIKE.exists(), reason=f"shared dataset not available: {TIKE} is absent "
                                                          "(a user's checkout has no ../shared/data)")


def far_field(n=6, shape=(9, 8), seed=0):
    rng = np.random.default_rng(seed)
    data = rng.poisson(10.0, size=(n, *shape)).astype(np.float32)
    probe = (rng.standard_normal((1, *shape)) + 1j * rng.standard_normal((1, *shape))).astype(np.complex64)
    return Dataset(data, rng.uniform(0, 30, (n, 2)), probe=probe, mask=(rng.random(shape) > 0.1).astype(np.float32))


@pytest.mark.parametrize("name", ["d.npz", "d.npz.bz2"])
def test_npz_round_trip(tmp_path, name):
    ds = Dataset.from_measurement(far_field().data, energy=1.2e-15, detector_distance=3.0, detector_pixel_size=75e-6,
                                  positions_m=far_field().positions * 1e-8, probe=far_field().probe,
                                  mask=far_field().mask)
    path = cio.write_npz(tmp_path / name, ds)
    back = cio.load(path)
    np.testing.assert_array_equal(back.data, ds.data)
    np.testing.assert_array_equal(back.positions, ds.positions)
    np.testing.assert_array_equal(back.positions_m, ds.positions_m)
    np.testing.assert_array_equal(back.mask, ds.mask)
    np.testing.assert_array_equal(back.probe, ds.probe)
    assert back.pixel_size == pytest.approx(ds.pixel_size, rel=1e-14) and back.wavelength == ds.wavelength
    assert (back.obj_shape, back.propagator, back.detector_distance) == (ds.obj_shape, ds.propagator, 3.0)
    with np.load(path if name.endswith(".npz") else bz2.open(path), allow_pickle=False) as z:
        assert {"data", "positions", "positions_m", "mask", "probe", "wavelength", "detector_distance",
                "detector_pixel_size", "pixel_size", "propagator", "geometry_kind"} <= set(z.files)


def test_npz_round_trip_near_field_without_detector_quantities(tmp_path):
    ds = Dataset(far_field().data, far_field().positions, propagator="fresnel", z=2e-3, wavelength=1e-10,
                 pixel_size=(5e-8, 6e-8), padding=(2, 3))
    back = cio.load(cio.write_npz(tmp_path / "n.npz", ds, compress=False))
    assert (back.propagator, back.z, back.wavelength, back.padding) == ("fresnel", 2e-3, 1e-10, (2, 3))
    assert back.pixel_size == (5e-8, 6e-8) and back.geometry_kind == "nearfield"
    np.testing.assert_array_equal(back.positions, ds.positions)


@pytest.mark.parametrize("name", ["t.npz", "t.npz.bz2"])
def test_tike_round_trip(tmp_path, name):
    ds = far_field()
    path = cio.write_tike(tmp_path / name, ds)
    with np.load(path if name.endswith(".npz") else bz2.open(path), allow_pickle=False) as z:
        assert z["data"].shape == (1, 6, 9, 8) and z["scan"].shape == (1, 6, 2)
        assert z["probe"].shape == (1, 1, 1, 1, 9, 8)
        np.testing.assert_array_equal(z["data"][0], np.fft.ifftshift(ds.data, axes=(-2, -1)))  # [0, 0] layout
    back = cio.load(path)
    np.testing.assert_array_equal(back.data, ds.data)                   # un-shifted back (odd size too)
    np.testing.assert_allclose(back.positions, ds.positions, atol=2e-6)  # float32 scan
    np.testing.assert_array_equal(back.probe, ds.probe)


@needs_tike
def test_shared_siemens_star_is_centred_on_reading():
    ds = cio.load(TIKE)
    assert ds.data.shape == (516, 128, 128) and ds.propagator == "farfield"
    assert ds.probe.shape == (1, 128, 128) and ds.probe.dtype == np.complex64
    # the file's scan spans about -164 ... 168 object pixels (its README); shifted to start at the margin
    extent = ds.positions.max(axis=0) - ds.positions.min(axis=0)
    assert 325 < extent[0] < 338 and 325 < extent[1] < 335 and ds.positions.min() == ds.margin
    assert ds.data.max() == 963 and np.all(ds.data == np.round(ds.data))          # photon counts 0 ... 963
    centre = np.array([64, 64])
    mean = ds.data.mean(axis=0)
    peak = np.array(np.unravel_index(np.argmax(mean), mean.shape))
    raw = np.fft.ifftshift(mean)                                  # the layout stored in the file
    raw_peak = np.array(np.unravel_index(np.argmax(raw), mean.shape))
    # the beam (a zone-plate donut, hence not exactly the centre pixel) is near the centre once
    # un-shifted, and near a corner as stored
    assert np.linalg.norm(peak - centre) < 32 and np.linalg.norm(raw_peak - centre) > 64
    yy, xx = np.indices(mean.shape)
    com = np.array([(mean * yy).sum(), (mean * xx).sum()]) / mean.sum()
    assert np.linalg.norm(com - centre) < 4
    inner = (np.hypot(yy - 64, xx - 64) < 40)
    assert mean[inner].sum() > 0.9 * mean.sum()


def test_bad_npz_input(tmp_path):
    ds = far_field()
    good = cio.write_npz(tmp_path / "g.npz", ds)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(cio.DataError, match=r"cut\.npz: not a readable NumPy archive"):
        cio.load(cut)
    bad_bz2 = tmp_path / "b.npz.bz2"
    bad_bz2.write_bytes(bz2.compress(b"0123456789" * 100)[:60])
    with pytest.raises(cio.DataError, match=r"b\.npz\.bz2: not a readable NumPy archive"):
        cio.load(bad_bz2)
    np.savez(tmp_path / "nodata.npz", positions=ds.positions)
    with pytest.raises(cio.DataError, match=r"nodata\.npz: missing key 'data'"):
        cio.load(tmp_path / "nodata.npz")
    np.savez(tmp_path / "nopos.npz", data=ds.data)
    with pytest.raises(cio.DataError, match=r"nopos\.npz: missing key 'positions'"):
        cio.load(tmp_path / "nopos.npz")
    np.savez(tmp_path / "count.npz", data=ds.data, scan=ds.positions[None, :-1])
    with pytest.raises(cio.DataError, match=r"count\.npz: 6 patterns but 'positions' has shape \(5, 2\)"):
        cio.load(tmp_path / "count.npz")
    nan = ds.data.copy()
    nan[[1, 4]] = np.nan
    np.savez(tmp_path / "nan.npz", data=nan, positions=ds.positions)
    with pytest.raises(cio.DataError, match=r"nan\.npz: 2 frame\(s\) contain NaN or Inf values \(frame 1, 4\)"):
        cio.load(tmp_path / "nan.npz")
