"""CXI input and output: round trips, the PETRA III file's own metadata, results, bad input."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from cuptycho import Dataset
from cuptycho import preprocess as P
from cuptycho import io as cio

DATA = Path(__file__).parents[1] / "../shared/data"
PETRA = DATA / "petra3_p25_nearfield" / "PETRAIII_P25_Near_Field_Ptycho.cxi"
needs_petra = pytest.mark.skipif(not PETRA.exists(), reason=f"shared dataset not available: {PETRA} is absent "
                                                            "(a user's checkout has no ../shared/data)")


def measurement(n=7, shape=(12, 14), kind="farfield", seed=0, **kw):
    rng = np.random.default_rng(seed)
    data = rng.poisson(30.0, size=(n, *shape)).astype(np.float32)
    pm = rng.uniform(-2e-7, 2e-7, size=(n, 2))
    mask = np.ones(shape, dtype=np.float32)
    mask[2, 3] = 0
    probe = (rng.standard_normal((2, *shape)) + 1j * rng.standard_normal((2, *shape))).astype(np.complex64)
    extra = {"focus_distance": 2e-3} if kind == "nearfield" else {}
    return Dataset.from_measurement(data, energy=1.6e-15, detector_distance=1.5, detector_pixel_size=(75e-6, 55e-6),
                                    geometry_kind=kind, positions_m=pm, mask=mask, probe=probe, **extra, **kw)


def assert_same(a: Dataset, b: Dataset):
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.positions_m, b.positions_m, rtol=1e-12, atol=1e-20)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.probe, b.probe)
    for name in ("propagator", "geometry_kind", "obj_shape", "margin"):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("wavelength", "detector_distance", "focus_distance", "z"):
        va, vb = getattr(a, name), getattr(b, name)
        assert (va is None and vb is None) or va == pytest.approx(vb, rel=1e-12), name
    assert a.pixel_size == pytest.approx(b.pixel_size, rel=1e-12)
    assert a.detector_pixel_size == pytest.approx(b.detector_pixel_size, rel=1e-12)


@pytest.mark.parametrize("kind", ["farfield", "nearfield"])
def test_cxi_round_trip(tmp_path, kind):
    ds = measurement(kind=kind)
    path = cio.write_cxi(tmp_path / "m.cxi", ds)
    back = cio.read_cxi(path)
    assert_same(ds, back)
    with h5py.File(path) as f:                                       # the CXI layout others read
        assert f["cxi_version"][()] == 160
        assert f["entry_1/data_1/data"].shape == (7, 12, 14)
        assert f["entry_1/sample_1/geometry_1/translation"].shape == (7, 3)
        assert f["entry_1/instrument_1/detector_1/mask"].dtype == np.uint32
        assert f["entry_1/instrument_1/detector_1/mask"][2, 3] == 1
        assert f["entry_1/instrument_1/detector_1/x_pixel_size"][()] == 55e-6
        assert f["entry_1/instrument_1/source_1/energy"][()] == pytest.approx(1.6e-15)


def test_cxi_translations_are_read_with_the_spec_sign_and_pynx_layout(tmp_path):
    ds = measurement()
    path = cio.write_cxi(tmp_path / "m.cxi", ds)
    with h5py.File(path, "a") as f:                                   # a file other programs wrote
        del f["entry_1/cuptycho"]
        t = f["entry_1/sample_1/geometry_1/translation"][()]
    spec = cio.read_cxi(path)
    # default basis: positions_m = (t_y, t_x); pixels are metres over the sample pixel size
    np.testing.assert_allclose(spec.positions_m, t[:, [1, 0]], rtol=1e-12)
    np.testing.assert_allclose(spec.positions, ds.positions, atol=1e-9)
    with h5py.File(path, "a") as f:                                   # PyNX writes (3, N), in microns here
        del f["entry_1/sample_1/geometry_1/translation"]
        d = f.create_dataset("entry_1/sample_1/geometry_1/translation", data=t.T * 1e6)
        d.attrs["units"] = "um"
    pynx = cio.read_cxi(path)
    np.testing.assert_allclose(pynx.positions_m, spec.positions_m, rtol=1e-12)
    np.testing.assert_allclose(pynx.positions, spec.positions, atol=1e-9)


def test_cxi_mask_bits(tmp_path):
    ds = measurement()
    path = cio.write_cxi(tmp_path / "m.cxi", ds)
    with h5py.File(path, "a") as f:
        del f["entry_1/cuptycho/weights"]
        m = f["entry_1/instrument_1/detector_1/mask"]
        bits = m[()]
        bits[0, 0] = 0x2                                              # another kind of bad pixel
        m[...] = bits
    assert cio.read_cxi(path).mask[0, 0] == 0                         # nonzero = bad
    only_invalid = cio.read_cxi(path, mask_bits=0x1)
    assert only_invalid.mask[0, 0] == 1 and only_invalid.mask[2, 3] == 0


def test_cxi_streams_in_slabs_and_preprocesses_like_the_dataset_functions(tmp_path):
    ds = measurement(n=9, shape=(16, 16))
    path = cio.write_cxi(tmp_path / "m.cxi", ds)
    small = cio.read_cxi(path, chunk_bytes=3 * 16 * 16 * 4)          # 3 frames per slab
    np.testing.assert_array_equal(small.data, ds.data)
    read = cio.read_cxi(path, crop=8, bin=2, chunk_bytes=2 * 16 * 16 * 4)
    ref = P.bin_patterns(P.crop(ds, 8), 2)
    np.testing.assert_allclose(read.data, ref.data)
    np.testing.assert_array_equal(read.mask, ref.mask)
    assert read.pixel_size == pytest.approx(ref.pixel_size) and read.detector_pixel_size == pytest.approx(
        ref.detector_pixel_size)
    np.testing.assert_allclose(read.positions, ref.positions, atol=1e-9)
    sub = cio.read_cxi(path, frames=[7, 2, 3])
    np.testing.assert_array_equal(sub.data, ds.data[[7, 2, 3]])
    np.testing.assert_allclose(sub.positions_m, ds.positions_m[[7, 2, 3]])


def test_result_is_written_the_way_ptychodus_writes_products(tmp_path):
    ds = measurement()
    rng = np.random.default_rng(3)
    result = {"object": (rng.standard_normal((1, 40, 41)) + 1j).astype(np.complex64),
              "probe": ds.probe, "positions": ds.positions + 0.25, "z": None,
              "history": [{"epoch": 0, "loss": 3.0}, {"epoch": 1, "loss": 2.0}],
              "events": [], "timings": {"total": 1.5}, "config": {"epochs": 2, "loss": "gaussian"}, "device": "cpu"}
    path = cio.write_result(tmp_path / "r.cxi", result, ds)
    with h5py.File(path) as f:
        assert f["entry_1/image_1/data"].shape == (1, 2, 12, 14)
        assert f["entry_1/image_1/data"].attrs["axes"] == "coherent:incoherent:y:x"
        assert f["entry_1/image_2/data"].shape == (1, 40, 41)
        assert f["entry_1/image_2/image_size"][0] == pytest.approx(41 * ds.pixel_size[1])
        assert f["entry_1/instrument_1/source_1/illumination"].shape == (1, 2, 12, 14)
        assert f["entry_1/sample_1/geometry_1/translation"].shape == (7, 3)
        np.testing.assert_allclose(f["entry_1/ptychodus/loss_values"][()], [3.0, 2.0])
        assert f["entry_1/process_1/program"][()] == b"cuptycho"
    back = cio.read_result(path)
    np.testing.assert_array_equal(back.object, result["object"])
    np.testing.assert_array_equal(back.probe, result["probe"])
    np.testing.assert_array_equal(back.positions, result["positions"])
    assert back.history == result["history"] and back.config == result["config"] and back.z is None
    assert back.timings == {"total": 1.5} and back.device == "cpu"
    with pytest.raises(FileExistsError, match="overwrite"):
        cio.write_result(path, result, ds)


# --------------------------------------------------------------------------- the PETRA III file

@needs_petra
def test_petra_metadata_and_translations():
    ds = cio.read_cxi(PETRA)
    with h5py.File(PETRA) as f:
        t = f["entry_1/sample_1/geometry_1/translation"][()].astype(np.float64)
        assert f["entry_1/instrument_1/detector_1/data"].shape == (200, 100, 100)
    assert ds.data.shape == (200, 100, 100) and ds.data.dtype == np.float32
    assert ds.detector_pixel_size == pytest.approx((55e-6, 55e-6), rel=1e-6)
    assert ds.detector_distance == pytest.approx(1.12, rel=1e-6)
    assert ds.wavelength == pytest.approx(9.7949e-11, rel=1e-4)        # h c / E from the energy in joules
    assert ds.energy_ev == pytest.approx(12658, rel=1e-4)
    assert int((ds.mask == 0).sum()) == 5
    # basis [[0, -p], [-p, 0], [0, 0]]: rows along -y, columns along -x -> positions_m = (t_y, t_x)
    np.testing.assert_allclose(ds.positions_m, t[:, [1, 0]], rtol=1e-12)
    assert ds.positions_m[:, 1].min() == pytest.approx(-62.8e-6, abs=0.1e-6)     # x -62.8 ... -42.7 um
    assert ds.positions_m[:, 0].max() == pytest.approx(-28.8e-6, abs=0.1e-6)     # y -47.8 ... -28.8 um


@needs_petra
def test_petra_in_the_fresnel_scaled_geometry():
    # cdtools' example: focus 3.65 mm upstream of the sample, detector 1.12 m downstream
    ds = cio.load(PETRA, geometry_kind="nearfield", focus_distance=3.65e-3)
    assert ds.propagator == "angular_spectrum"
    assert ds.magnification == pytest.approx(307.85, rel=1e-4)            # (z1 + z2) / z1
    assert ds.z == pytest.approx(3.6381e-3, rel=1e-4)                     # z2 / M
    assert ds.pixel_size == pytest.approx((178.66e-9, 178.66e-9), rel=1e-4)   # 55 um / M
    # ~20 um of scan is ~110 sample pixels: the scan and the 100-pixel field of view overlap sensibly
    extent = ds.positions.max(axis=0) - ds.positions.min(axis=0)
    assert 100 < extent[0] < 115 and 105 < extent[1] < 120
    steps = np.linalg.norm(np.diff(ds.positions, axis=0), axis=1)
    assert 3 < np.median(steps) < 12                                      # ~1.3 um between points
    # the angular-spectrum transfer function is sampled without padding at this distance
    assert ds.z < ds.patch_shape[0] * ds.pixel_size[0] ** 2 / ds.wavelength


# --------------------------------------------------------------------------- bad input

def test_truncated_and_corrupt_hdf5(tmp_path):
    path = cio.write_cxi(tmp_path / "m.cxi", measurement())
    raw = path.read_bytes()
    cut = tmp_path / "cut.cxi"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(cio.DataError, match=r"cut\.cxi.*(truncated|damaged)"):
        cio.load(cut)
    junk = tmp_path / "junk.cxi"
    junk.write_bytes(b"not an hdf5 file at all" * 10)
    with pytest.raises(cio.DataError, match=r"junk\.cxi: not a readable HDF5 file"):
        cio.load(junk)


def test_missing_data_and_mismatched_counts(tmp_path):
    empty = tmp_path / "empty.cxi"
    with h5py.File(empty, "w") as f:
        f.create_group("entry_1")
    with pytest.raises(cio.DataError, match=r"empty\.cxi: no diffraction data: looked for /entry_1/data_1/data"):
        cio.load(empty)
    path = cio.write_cxi(tmp_path / "m.cxi", measurement())
    with h5py.File(path, "a") as f:
        del f["entry_1/cuptycho"]
        t = f["entry_1/sample_1/geometry_1/translation"][()]
        del f["entry_1/sample_1/geometry_1/translation"]
        f["entry_1/sample_1/geometry_1/translation"] = t[:-1]
    with pytest.raises(cio.DataError, match=r"m\.cxi: 7 patterns but the translations .* have shape \(6, 3\)"):
        cio.load(path)


def test_nan_frames_and_missing_geometry(tmp_path):
    ds = measurement()
    path = cio.write_cxi(tmp_path / "m.cxi", ds)
    with h5py.File(path, "a") as f:
        f["entry_1/instrument_1/detector_1/data"][3] = np.nan
    with pytest.raises(cio.DataError, match=r"m\.cxi: 1 frame\(s\) contain NaN or Inf values \(frame 3\)"):
        cio.load(path)
    assert cio.load(path, frames=[0, 1, 2, 4]).n_patterns == 4          # the way around it
    path2 = cio.write_cxi(tmp_path / "n.cxi", ds)
    with h5py.File(path2, "a") as f:
        del f["entry_1/cuptycho"]
        del f["entry_1/instrument_1/detector_1/distance"]
    with pytest.raises(cio.DataError, match=r"n\.cxi: positions are in metres .* missing detector distance"):
        cio.load(path2)
    assert cio.load(path2, detector_distance=1.5).pixel_size == pytest.approx(ds.pixel_size)


@pytest.mark.parametrize("kind", ["farfield", "nearfield"])
def test_z_and_pixel_size_the_geometry_derives_are_refused_not_ignored(tmp_path, kind):
    """Were accepted and silently dropped when the file records the detector geometry."""
    path = cio.write_cxi(tmp_path / "m.cxi", measurement(kind=kind))
    ds = cio.load(path)
    with pytest.raises(cio.DataError, match=r"pixel_size = \(1e-07, 1e-07\) would be ignored: the pixel_size is "
                                            r"derived as .* from the wavelength, detector distance"):
        cio.load(path, pixel_size=1e-7)
    z_message = "not used in this geometry" if kind == "farfield" else "derived as"
    with pytest.raises(cio.DataError, match=rf"z = 0.5 would be ignored: the z is {z_message}"):
        cio.load(path, z=0.5)
    # the derived values themselves are accepted (a configuration that spells them out still loads)
    same = cio.load(path, pixel_size=ds.pixel_size, **({} if ds.z is None else {"z": ds.z}))
    assert same.pixel_size == pytest.approx(ds.pixel_size) and same.z == ds.z


@needs_petra
def test_petra_refuses_a_z_its_geometry_does_not_use():
    with pytest.raises(cio.DataError, match=r"z = 0.004 would be ignored: the z is derived as 0.0036381"):
        cio.load(PETRA, geometry_kind="nearfield", focus_distance=3.65e-3, z=4e-3)
