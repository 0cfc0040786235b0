"""Sizes are bounded before anything is allocated (issue 11, items 3 and 10a): a stray scan position, an
absurd obj_shape or margin, file headers claiming more than the file or the machine holds, more object
modes than memory, and a frame selection that selects nothing are each one clear error naming the value."""
from __future__ import annotations

import os
import re
import zipfile

import h5py
import numpy as np
import pytest
import tifffile

from cuptycho import Dataset, budget, cli, run
from cuptycho import io as cio
from cuptycho.settings import Config

GIB = 2**30


@pytest.fixture(autouse=True)
def machine_budget(monkeypatch):
    """Every test starts without a budget override (each sets one where the machine's size matters)."""
    monkeypatch.delenv(budget.ENV, raising=False)


def raster(side=7, step=4.0):
    g = np.arange(side) * step
    return np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)


def measurement(side=7, shape=(16, 16), step_px=4.0, **kw):
    """A far-field measurement on a side x side raster (positions in metres, like a CXI file's)."""
    n = side * side
    data = np.random.default_rng(0).poisson(20.0, (n, *shape)).astype(np.float32)
    ds = Dataset.from_measurement(data, wavelength=1e-10, detector_distance=1.0, detector_pixel_size=50e-6,
                                  positions_m=np.zeros((n, 2)), **kw)
    pixel = np.asarray(ds.pixel_size)
    return Dataset.from_measurement(data, wavelength=1e-10, detector_distance=1.0, detector_pixel_size=50e-6,
                                    positions_m=raster(side, step_px) * pixel, **kw)


def error_line(capsys):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("cuptycho: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """The issue's setup: `cuptycho simulate small_farfield --seed 1 -o sim.cxi` (49 patterns of 64 x 64)."""
    path = tmp_path_factory.mktemp("limits") / "sim.cxi"
    assert cli.main(["simulate", "small_farfield", "--seed", "1", "-o", str(path)]) == 0
    return path


def tampered(sim, tmp_path, name, change):
    path = tmp_path / name
    path.write_bytes(sim.read_bytes())
    with h5py.File(path, "r+") as f:
        change(f)
    return path


# --------------------------------------------------------------------------- the memory budget

def test_budget_sizes_parse_and_print():
    assert budget.parse_size("24G") == 24 * GIB and budget.parse_size("512MiB") == 512 * 2**20
    assert budget.parse_size("1e9") == 10**9 and budget.parse_size(" 1.5 TB ") == int(1.5 * 2**40)
    assert budget.parse_size("4096") == 4096 and budget.parse_size("2k") == 2048
    for bad in ("", "lots", "-1G", "0", "1Q"):
        with pytest.raises(ValueError, match=budget.ENV):
            budget.parse_size(bad)
    assert budget.format_bytes(802816) == "784 KiB" and budget.format_bytes(7.84e12) == "7.13 TiB"
    assert budget.format_bytes(12) == "12 B"


def test_budget_limit_is_the_machine_or_the_override(monkeypatch):
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    n, where = budget.limit()
    assert 0 < n <= total and budget.format_bytes(n) in where and budget.ENV in where
    monkeypatch.setenv(budget.ENV, "3G")
    assert budget.limit() == (3 * GIB, f"the budget {budget.ENV}=3G allows 3 GiB")
    monkeypatch.setenv(budget.ENV, "much")
    with pytest.raises(ValueError, match=f"{budget.ENV} must be a number of bytes"):
        budget.limit()


def test_estimate_counts_each_term():
    t = budget.estimate(10, (8, 6), (30, 20), n_object_modes=2, n_probe_modes=3, dtype="complex128", batch=4,
                        padding=(1, 2), per_frame_mask=True)
    assert t["data"].bytes == 10 * 8 * 6 * 8 and t["mask"].bytes == 10 * 8 * 6 * 8
    assert t["object"].bytes == 2 * 30 * 20 * 16 * budget.PARAMETER_COPIES
    assert t["probe"].bytes == 3 * 8 * 6 * 16 * budget.PARAMETER_COPIES
    assert t["waves"].bytes == 4 * 2 * 3 * 10 * 10 * 16 * budget.WAVE_COPIES
    full = budget.estimate(10, (8, 6), (30, 20))                   # defaults: full batch, one mode, complex64
    assert full["waves"].bytes == 10 * 8 * 6 * 8 * budget.WAVE_COPIES and full["mask"].bytes == 8 * 6 * 4
    chunked = budget.estimate(10_000, (64, 64), (300, 200), device="cpu")   # the CPU kernels chunk the batch
    assert chunked["waves"].bytes < budget.estimate(10_000, (64, 64), (300, 200))["waves"].bytes / 50
    with pytest.raises(ValueError, match="n_object_modes must be an integer >= 1"):
        budget.estimate(10, (8, 6), (30, 20), n_object_modes=0)


def test_check_refuses_a_hundred_million_object_modes_naming_them():
    """Issue 11: `n_object_modes = 100000000` was a MemoryError traceback; the engine calls budget.check
    in its constructor, before allocating anything."""
    ds = measurement()
    cfg = Config(n_object_modes=100_000_000)
    with pytest.raises(budget.MemoryBudgetError, match=r"the object, n_object_modes = 100000000 x \d+ x \d+ pixels "
                                                       r"\(obj_shape\) as complex64 .* needs [\d.]+ TiB; the run "
                                                       r"needs about [\d.]+ TiB and this machine has [\d.]+ .iB"):
        budget.check(ds, cfg, batch="full", device="cpu")
    assert isinstance(budget.MemoryBudgetError("x"), ValueError)     # the command line reports it in one line
    terms = budget.check(ds, Config(), batch="full", device="cpu")    # an ordinary run fits
    assert set(terms) == {"data", "mask", "object", "probe", "waves"}


def test_check_names_the_dominant_term_and_takes_plain_numbers(monkeypatch):
    shapes = {"n_patterns": 100_000, "patch_shape": (256, 256), "obj_shape": (2000, 2000)}
    monkeypatch.setenv(budget.ENV, "8G")
    with pytest.raises(budget.MemoryBudgetError, match=r"the waves of one step, batch = 100000 patterns x "
                                                       r"n_probe_modes = 1 .* needs 146 GiB; .*CUPTYCHO_MEMORY_LIMIT"
                                                       r"=8G allows 8 GiB"):
        budget.check(shapes, {"batch": None})
    with pytest.raises(budget.MemoryBudgetError, match=r"the data, 100000 patterns of 256 x 256 as float32, needs "
                                                       r"24.4 GiB"):
        budget.check(shapes, {"batch": 1})                       # a sequential engine's batch: the data dominate
    small = {**shapes, "n_patterns": 1000}
    assert budget.check(small, {"batch": 16})["waves"].bytes == 16 * 256 * 256 * 8 * budget.WAVE_COPIES
    grow = budget.check(small, {"batch": {"start": 8, "factor": 2, "every": 5, "max": 64}})
    assert grow["waves"].bytes == 64 * 256 * 256 * 8 * budget.WAVE_COPIES
    probe = budget.check({**small, "probe": np.zeros((5, 256, 256), np.complex64)}, {"n_probe_modes": 2})
    assert probe["probe"].bytes == 5 * 256 * 256 * 8 * budget.PARAMETER_COPIES   # the stored modes count


def test_the_engine_refuses_a_hundred_million_object_modes_before_allocating():
    from cuptycho import engines

    with pytest.raises(ValueError, match="n_object_modes = 100000000"):
        engines.create(measurement(), Config(n_object_modes=100_000_000, backend="cpu"))


# --------------------------------------------------------------------------- the scan and the object

def test_one_position_a_million_pixels_off_is_named():
    """Issue 11: one position 1e6 px off with obj_shape absent asked for an object of 14.6 TiB."""
    ds = measurement()
    pos = ds.positions.copy()
    pos[7] += 1e6
    with pytest.raises(ValueError, match=r"the scan spans 1e\+06 x 1e\+06 object pixels: .* more than 16 times the "
                                         r"1.25e\+04 pixels its 49 pattern\(s\) of 16 x 16 measure .*1 position\(s\) "
                                         r"lie far from the others: positions\[7\] = \(100000\d, 100000\d\) px, "
                                         r"1\.414e\+06 px \(\d+(\.\d+)? mm\) from the median position\. Check the "
                                         r"positions \(their units, the pixel size\)"):
        ds.replace(positions=pos, obj_shape=None)


def test_a_translation_a_third_of_a_millimetre_off_is_refused_by_the_reader(sim, tmp_path, capsys):
    """Issue 11: a CXI translation 0.3 mm off ran silently with an object of ~2.4 GiB for 49 patterns."""
    def shift(f):
        del f["entry_1/cuptycho"]                        # the translations are the scan, obj_shape is derived
        t = f["entry_1/sample_1/geometry_1/translation"]
        a = t[()]
        a[7, :2] += 0.3e-3
        t[...] = a

    path = tampered(sim, tmp_path, "shifted.cxi", shift)
    message = r"shifted\.cxi: the scan spans 58\d\d x 58\d\d object pixels.*positions\[7\] = .* 8\d\d\d px \(42\d um\)"
    with pytest.raises(cio.DataError, match=message):
        cio.read_cxi(path)
    assert cli.main(["reconstruct", str(path), "-o", str(tmp_path / "out.cxi"), "--progress", "none"]) == 2
    assert re.search(message, error_line(capsys))
    assert not (tmp_path / "out.cxi").exists()


def test_a_stray_pixel_position_with_obj_shape_absent_fails_in_one_line(sim, tmp_path, capsys):
    def stray(f):
        del f["entry_1/cuptycho/obj_shape"]
        p = f["entry_1/cuptycho/positions"]
        a = p[()]
        a[7] += 1e6
        p[...] = a

    path = tampered(sim, tmp_path, "stray.cxi", stray)
    assert cli.main(["reconstruct", str(path), "-o", str(tmp_path / "out.cxi"), "--progress", "none"]) == 2
    assert re.search(r"stray\.cxi: the scan spans .*positions\[7\] = .*from the median position", error_line(capsys))
    assert cli.main(["info", str(path)]) == 0                   # info describes the file and says what is wrong
    assert re.search(r"\(not read as a dataset without more options: .*positions\[7\]", capsys.readouterr().out)


def test_sparse_real_scans_still_pass():
    shape = (16, 16)
    data = np.ones((49, *shape), np.float32)
    for pos in (raster(7, 16.0),                                          # no overlap at all
                raster(7, 16.0) + np.random.default_rng(1).uniform(-4, 4, (49, 2)),
                np.stack([np.zeros(49), np.arange(49) * 16.0], -1),     # a line scan without overlap
                np.concatenate([raster(5, 4.0)[:24], raster(5, 4.0)[:25] + [0, 900]])):   # two separate regions
        Dataset(data=data, positions=pos)
    Dataset(data=data[:1], positions=np.zeros((1, 2)))                 # a single pattern


def test_a_scan_spread_as_a_whole_asks_about_units():
    data = np.ones((49, 16, 16), np.float32)
    with pytest.raises(ValueError, match=r"no position stands apart: neighbours are about [\d.]+e\+03 px apart for "
                                         r"patterns of 16 x 16\. Check the positions' units and the pixel size"):
        Dataset(data=data, positions=raster(7, 4.0) * 1000)


def test_an_absurd_obj_shape_or_margin_is_named():
    data = np.ones((49, 16, 16), np.float32)
    pos = raster(7, 4.0)
    Dataset(data=data, positions=pos, obj_shape=(400, 400))                 # a generous canvas is allowed
    with pytest.raises(ValueError, match=r"obj_shape \(1000000, 1000000\) is 1e\+12 pixels, more than 16 times the "
                                         r"1.25e\+04 pixels its 49 pattern\(s\) of 16 x 16 measure"):
        Dataset(data=data, positions=pos, obj_shape=(10**6, 10**6))
    with pytest.raises(ValueError, match=r"obj_shape must be a positive integer or a pair of them, got \(40.5, 40\)"):
        Dataset(data=data, positions=pos, obj_shape=(40.5, 40))
    with pytest.raises(ValueError, match=r"margin = 1000000 pixels is more than 16 times the probe's 16"):
        Dataset(data=data, positions=pos, margin=10**6)
    with pytest.raises(ValueError, match=r"margin must be an integer >= 0, got -2"):
        Dataset(data=data, positions=pos, margin=-2)
    with pytest.raises(ValueError, match=r"data must hold at least one pattern .* got shape \(0, 16, 16\)"):
        Dataset(data=data[:0], positions=pos[:0])


def test_a_stored_absurd_obj_shape_is_a_data_error(tmp_path):
    path = cio.write_npz(tmp_path / "m.npz", measurement())
    with np.load(path) as z:
        arrays = dict(z)
    arrays["obj_shape"] = np.array([10**6, 10**6])
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(cio.DataError, match=r"bad\.npz: obj_shape \(1000000, 1000000\) is 1e\+12 pixels"):
        cio.read_npz(tmp_path / "bad.npz")


# --------------------------------------------------------------------------- frames that select nothing

def test_frames_selecting_nothing_name_the_option_and_the_frame_count(sim, tmp_path, capsys):
    """Issue 11, 10a: `[data] frames = {start = 100}` on 49 frames was "zero-size array"."""
    with pytest.raises(cio.DataError, match=r"sim\.cxi: frames \{start = 100\} selects no frame: the file has 49 "
                                            r"frame\(s\), 0 to 48"):
        cio.load(sim, **run.reader_options({"frames": {"start": 100}}))
    with pytest.raises(cio.DataError, match=r"frames \{start = 10, stop = 5\} selects no frame"):
        cio.load(sim, frames=slice(10, 5))
    with pytest.raises(cio.DataError, match=r"frames \[\] selects no frame: the file has 49 frame\(s\)"):
        cio.load(sim, frames=[])
    with pytest.raises(cio.DataError, match=r"frames \{step = 0\} is not a valid selection"):
        cio.load(sim, frames=slice(None, None, 0))
    toml = tmp_path / "late.toml"
    toml.write_text("epochs = 1\n[data]\nframes = {start = 100}\n")
    assert cli.main(["reconstruct", str(sim), "--config", str(toml), "-o", str(tmp_path / "o.cxi"),
                     "--progress", "none"]) == 2
    assert re.search(r"frames \{start = 100\} selects no frame: the file has 49 frame\(s\)", error_line(capsys))


# --------------------------------------------------------------------------- HDF5 headers

def _huge_patterns(shape, **kw):
    def change(f):
        det = f["entry_1/instrument_1/detector_1"]
        del det["data"]
        det.create_dataset("data", shape=shape, dtype=np.float32, **kw)
        del f["entry_1/cuptycho"]
        t = f["entry_1/sample_1/geometry_1/translation"]
        if t.shape[0] != shape[0]:
            del f["entry_1/sample_1/geometry_1/translation"]
            f["entry_1/sample_1/geometry_1"].create_dataset("translation", data=np.zeros((shape[0], 3)))
    return change


def test_a_mostly_empty_compressed_hdf5_dataset_claiming_terabytes(sim, tmp_path, capsys):
    """A header claiming 49 frames of 2^31 x 2^31 in a file of a few KiB: no machine holds one frame."""
    path = tampered(sim, tmp_path, "huge.cxi", _huge_patterns((49, 2**31, 2**31), chunks=(1, 64, 64),
                                                              compression="gzip"))
    assert path.stat().st_size < 10**6
    message = (r"huge\.cxi: /entry_1/data_1/data claims shape \(49, 2147483648, 2147483648\) float32: reading one "
               r"frame needs [\d.]+ EiB|PiB")
    with pytest.raises(cio.DataError, match=message):
        cio.read_cxi(path)
    assert cli.main(["info", str(path)]) == 0                     # the structure, then why it is not a dataset
    out = capsys.readouterr().out
    assert "data: (49, 2147483648, 2147483648) float32" in out and re.search(message, out)
    assert cli.main(["reconstruct", str(path), "-o", str(tmp_path / "o.cxi"), "--progress", "none"]) == 2
    assert re.search(message, error_line(capsys))


def test_hdf5_data_beyond_the_memory_budget(sim, tmp_path, monkeypatch):
    path = tampered(sim, tmp_path, "big.cxi", _huge_patterns((49, 100_000, 100_000), chunks=(1, 256, 256),
                                                             compression="gzip"))
    monkeypatch.setenv(budget.ENV, "16G")
    with pytest.raises(cio.DataError, match=r"big\.cxi: /entry_1/data_1/data claims shape \(49, 100000, 100000\) "
                                            r"float32: reading one frame needs 74.5 GiB; the budget "
                                            r"CUPTYCHO_MEMORY_LIMIT=16G allows 16 GiB"):
        cio.read_cxi(path)
    monkeypatch.setenv(budget.ENV, "1M")                         # the output array, after cropping
    with pytest.raises(cio.DataError, match=r"sim\.cxi: .* claims shape \(49, 64, 64\) float32: reading 49 frame\(s\) "
                                            r"into 64 x 64 float32 needs [\d.]+ MiB; the budget"):
        cio.read_cxi(sim, stream=False)
    loaded = cio.read_cxi(sim, frames=slice(0, 10))                 # a selection that fits
    assert loaded.n_patterns == 10 and not loaded.streamed
    assert cio.read_cxi(sim).streamed                                # "auto": what does not fit is streamed


def test_a_claim_of_a_trillion_frames_is_refused_before_they_are_listed(tmp_path):
    with pytest.raises(cio.DataError, match=r"x\.cxi: /data claims shape \(1000000000000, 64, 64\) float32: reading "
                                            r"1000000000000 frame\(s\) needs [\d.]+ PiB"):
        cio.Pipeline(tmp_path / "x.cxi", 10**12, (64, 64), np.float32, source="/data", stream=False)
    with pytest.raises(cio.DataError, match=r"reading 1000000000000 frame\(s\) needs 14.6 TiB"):   # streamed: 16 B each
        cio.Pipeline(tmp_path / "x.cxi", 10**12, (64, 64), np.float32, source="/data")
    with pytest.raises(cio.DataError, match=r"reading 500000000000 frame\(s\) needs [\d.]+ TiB"):
        cio.Pipeline(tmp_path / "x.cxi", 10**12, (64, 64), np.float32, frames=slice(None, None, 2), crop=(8, 8))


def test_uncompressed_hdf5_claiming_more_than_the_file_holds(sim, tmp_path):
    path = tampered(sim, tmp_path, "unwritten.cxi", _huge_patterns((49, 4096, 4096)))   # never written
    with pytest.raises(cio.DataError, match=r"unwritten\.cxi: /entry_1/data_1/data \(diffraction data\) claims shape "
                                            r"\(49, 4096, 4096\) float32 \(3.06 GiB uncompressed\) but the file holds "
                                            r"only [\d.]+ KiB: its header is damaged or the file is truncated"):
        cio.read_cxi(path)


def test_other_hdf5_arrays_are_bounded_before_they_are_read(sim, tmp_path, monkeypatch):
    def huge_mask(f):
        f["entry_1/instrument_1/detector_1"].create_dataset("mask", shape=(10**6, 64, 64), dtype=np.uint32,
                                                            chunks=(1, 64, 64), compression="gzip")
    with pytest.raises(cio.DataError, match=r"detector_1/mask has shape \(1000000, 64, 64\); expected \(64, 64\)"):
        cio.read_cxi(tampered(sim, tmp_path, "mask.cxi", huge_mask))

    def huge_probe(f):
        if "probe" in f["entry_1/cuptycho"]:
            del f["entry_1/cuptycho/probe"]
        f["entry_1/cuptycho"].create_dataset("probe", shape=(10**5, 64, 64), dtype=np.complex64, chunks=(1, 64, 64),
                                             compression="gzip")
    monkeypatch.setenv(budget.ENV, "1G")
    with pytest.raises(cio.DataError, match=r"/entry_1/cuptycho/probe \(the stored probe\) claims shape "
                                            r"\(100000, 64, 64\) complex64: reading it needs 3.05 GiB"):
        cio.read_cxi(tampered(sim, tmp_path, "probe.cxi", huge_probe))

    def long_distance(f):                        # a scalar stored as a huge array: its first value is enough
        det = f["entry_1/instrument_1/detector_1"]
        del det["distance"]
        det.create_dataset("distance", shape=(10**10,), dtype=np.float64, chunks=(1024,), compression="gzip",
                           fillvalue=2.0)
    assert cio.read_cxi(tampered(sim, tmp_path, "distance.cxi", long_distance)).detector_distance == 2.0

    def long_translations(f):
        g = f["entry_1/sample_1/geometry_1"]
        del g["translation"]
        g.create_dataset("translation", shape=(10**9, 3), dtype=np.float64, chunks=(1024, 3), compression="gzip")
        del f["entry_1/cuptycho/positions"]
    with pytest.raises(cio.DataError, match=r"49 patterns but the translations at .* have shape \(1000000000, 3\)"):
        cio.read_cxi(tampered(sim, tmp_path, "translations.cxi", long_translations))


# --------------------------------------------------------------------------- TIFF headers

def _tamper_tiff(path, dims, pages=None):
    with tifffile.TiffFile(path, mode="r+") as t:
        for p in t.pages if pages is None else [t.pages[i] for i in pages]:
            p.tags["ImageLength"].overwrite(dims[0])
            p.tags["ImageWidth"].overwrite(dims[1])
            if "RowsPerStrip" in p.tags:
                p.tags["RowsPerStrip"].overwrite(dims[0])


def _tiff(tmp_path, name, compression=None, n=3):
    path = tmp_path / name
    tifffile.imwrite(path, np.random.default_rng(0).random((n, 16, 16)).astype(np.float32),
                     photometric="minisblack", compression=compression)
    (tmp_path / f"{path.stem}_positions.csv").write_text("y_px,x_px\n" + "".join(f"{j},{j}\n" for j in range(n)))
    return path


def test_a_tiff_header_claiming_more_than_the_file(tmp_path, capsys):
    path = _tiff(tmp_path, "big.tif")
    _tamper_tiff(path, (100_000, 100_000))
    message = (r"big\.tif: page 0 of the TIFF claims shape \(100000, 100000\) float32 \(37.3 GiB uncompressed\) but "
               r"the file holds only [\d.]+ KiB: its header is damaged or the file is truncated")
    for read in (cio.load, cio.info):
        with pytest.raises(cio.DataError, match=message):
            read(path)
    assert cli.main(["info", str(path)]) == 2
    assert re.search(message, error_line(capsys))


def test_a_compressed_tiff_claiming_more_than_memory(tmp_path, monkeypatch):
    path = _tiff(tmp_path, "bigz.tif", compression="zlib")
    _tamper_tiff(path, (100_000, 100_000))
    monkeypatch.setenv(budget.ENV, "16G")
    with pytest.raises(cio.DataError, match=r"bigz\.tif: the TIFF claims shape \(3, 100000, 100000\) float32: reading "
                                            r"one frame needs 74.5 GiB; the budget CUPTYCHO_MEMORY_LIMIT=16G"):
        cio.load(path)
    assert "3 frame(s) of 100000 x 100000" in cio.info(path)     # info describes the claim and says why not


def test_a_tampered_tiff_in_a_folder_is_refused_before_its_pixels(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for j in range(3):
        tifffile.imwrite(folder / f"f_{j}.tif", np.full((16, 16), j, np.float32))
    (folder / "positions.csv").write_text("y_px,x_px\n0,0\n1,1\n2,2\n")
    _tamper_tiff(folder / "f_2.tif", (100_000, 100_000))
    with pytest.raises(cio.DataError, match=r"frames: frame 2 \(.*f_2\.tif\) has shape \(100000, 100000\), "
                                            r"the first \(16, 16\)"):
        cio.load(folder)
    _tamper_tiff(folder / "f_0.tif", (100_000, 100_000))
    with pytest.raises(cio.DataError, match=r"f_0\.tif: the TIFF claims shape \(100000, 100000\) float32"):
        cio.load(folder)


# --------------------------------------------------------------------------- NumPy headers

def _npz_with_claim(path, shape, members):
    """An archive whose 'data' member's .npy header claims `shape` but holds a few bytes."""
    with zipfile.ZipFile(path, "w") as z:
        with z.open("data.npy", "w") as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": shape})
            fh.write(b"\0" * 64)
        for key, value in members.items():
            with z.open(f"{key}.npy", "w") as fh:
                np.lib.format.write_array(fh, np.asarray(value))


def test_an_npz_header_claiming_more_than_the_archive(tmp_path):
    path = tmp_path / "claim.npz"
    _npz_with_claim(path, (49, 100_000, 100_000), {"positions": np.zeros((49, 2))})
    with pytest.raises(cio.DataError, match=r"claim\.npz: 'data' claims shape \(49, 100000, 100000\) float32 "
                                            r"\(1.78 TiB uncompressed\) but the file holds only 192 B"):
        cio.read_npz(path)
    text = cio.info(path)                    # the shapes come from the headers: nothing is read whole
    assert "data: (49, 100000, 100000) float32" in text and "(not read as a dataset" in text


def test_npy_dark_frames_are_bounded(tmp_path, sim):
    dark = tmp_path / "dark.npy"
    with open(dark, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 64, 64)})
        fh.write(b"\0" * 64)
    with pytest.raises(cio.DataError, match=r"dark\.npy: cannot read the dark frames"):
        cio.read_cxi(sim, dark=dark)
