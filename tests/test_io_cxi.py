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
        # every key and unit ptychodus' product reader uses (checked even where ptychodus is not installed)
        dy, dx = ds.pixel_size
        assert f["entry_1/title"][()] == f["entry_1/sample_1/name"][()] == b"cuptycho reconstruction"
        assert f["entry_1/instrument_1/source_1/energy"][()] == pytest.approx(1.6e-15)           # J
        assert f["entry_1/instrument_1/detector_1/distance"][()] == pytest.approx(1.5)           # m
        for key, value in (("probe_pixel_width_m", dx), ("probe_pixel_height_m", dy), ("object_pixel_width_m", dx),
                           ("object_pixel_height_m", dy), ("object_center_x_m", 41 * dx / 2),
                           ("object_center_y_m", 40 * dy / 2)):
            assert f[f"entry_1/ptychodus/{key}"][()] == pytest.approx(value), key
        translation = f["entry_1/sample_1/geometry_1/translation"]
        assert translation.attrs["units"] == "m" and f["entry_1/image_2/image_size"].attrs["units"] == "m"
        np.testing.assert_allclose(translation[:, 0], (result["positions"][:, 1] + 7) * dx, rtol=1e-12)
        np.testing.assert_allclose(translation[:, 1], (result["positions"][:, 0] + 6) * dy, rtol=1e-12)
        assert f["entry_1/cuptycho"].attrs["length_units"] == "m" and "geometry" not in f["entry_1/cuptycho"]
    back = cio.read_result(path)
    np.testing.assert_array_equal(back.object, result["object"])
    np.testing.assert_array_equal(back.probe, result["probe"])
    np.testing.assert_array_equal(back.positions, result["positions"])
    assert back.history == result["history"] and back.config == result["config"] and back.z is None
    assert back.timings == {"total": 1.5} and back.device == "cpu"
    with pytest.raises(FileExistsError, match="overwrite"):
        cio.write_result(path, result, ds)


def test_a_result_without_geometry_says_its_lengths_are_pixels(tmp_path):
    """Were pixel numbers that ptychodus reads as metres, without a word."""
    ds = Dataset(np.ones((3, 12, 14), np.float32), np.array([[0.0, 0.0], [2.0, 3.0], [4.0, 1.0]]))
    result = {"object": np.ones((1, 30, 30), np.complex64), "probe": np.ones((1, 12, 14), np.complex64),
              "positions": ds.positions, "history": []}
    with h5py.File(cio.write_result(tmp_path / "r.cxi", result, ds)) as f:
        assert f["entry_1/sample_1/geometry_1/translation"].attrs["units"] == "pixel"
        assert f["entry_1/image_2/image_size"].attrs["units"] == "pixel"
        assert "probe_pixel_width_m" not in f["entry_1/ptychodus"]
        group = f["entry_1/cuptycho"]
        assert group.attrs["length_units"] == "pixel" and group["geometry"][()].startswith(b"unknown: the data file")


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


@pytest.mark.parametrize("codec", ["bitshuffle-lz4", "zstd", "blosc-lz4"])
def test_compressed_detector_data_reads_identically(tmp_path, codec):
    """Eiger / Jungfrau-style files store the patterns compressed with filters h5py cannot read alone."""
    import hdf5plugin

    ds = measurement(n=9, shape=(16, 16))
    plain = cio.write_cxi(tmp_path / "plain.cxi", ds)
    packed = cio.write_cxi(tmp_path / "packed.cxi", ds)
    compression = {"bitshuffle-lz4": hdf5plugin.Bitshuffle(cname="lz4"), "zstd": hdf5plugin.Zstd(),
                   "blosc-lz4": hdf5plugin.Blosc(cname="lz4")}[codec]
    with h5py.File(packed, "r+") as f:
        path = "entry_1/instrument_1/detector_1/data"
        data = f[path][()]
        del f[path]
        f.create_dataset(path, data=data, chunks=(1, *data.shape[1:]), **compression)
        assert f[path].id.get_create_plist().get_nfilters() >= 1
    a, b = cio.load(plain), cio.load(packed)
    np.testing.assert_array_equal(b.data, a.data)
    np.testing.assert_array_equal(b.positions, a.positions)


def test_a_filter_this_hdf5_cannot_decode_is_named(tmp_path, monkeypatch):
    import hdf5plugin

    path = cio.write_cxi(tmp_path / "packed.cxi", measurement(n=3, shape=(16, 16)))
    with h5py.File(path, "r+") as f:
        key = "entry_1/instrument_1/detector_1/data"
        data = f[key][()]
        del f[key]
        f.create_dataset(key, data=data, chunks=(1, 16, 16), **hdf5plugin.Zstd())
    real = h5py.h5z.filter_avail
    monkeypatch.setattr(h5py.h5z, "filter_avail", lambda code: False if code == hdf5plugin.ZSTD_ID else real(code))
    original = h5py.Dataset.__getitem__

    def refuse(self, sel):                        # what HDF5 does without the decoder
        plist = self.id.get_create_plist()
        if any(plist.get_filter(i)[0] == hdf5plugin.ZSTD_ID for i in range(plist.get_nfilters())):
            raise OSError("Can't synchronously read data (required filter 'Zstandard' is not registered)")
        return original(self, sel)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", refuse)
    with pytest.raises(cio.DataError, match=rf"compressed with filter .*\(id {hdf5plugin.ZSTD_ID}\), which this HDF5 "
                                            "cannot decode"):
        cio.load(path)
