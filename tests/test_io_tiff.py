"""TIFF stacks and folders with positions files: round trips, units, dark frames, bad input."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import tifffile

from cuptycho import Dataset
from cuptycho import preprocess as P
from cuptycho import io as cio


def measurement(n=5, shape=(10, 12), seed=0):
    rng = np.random.default_rng(seed)
    data = rng.poisson(20.0, size=(n, *shape)).astype(np.float32)
    mask = np.ones(shape, dtype=np.float32)
    mask[1, 1] = 0
    return Dataset.from_measurement(data, wavelength=1e-10, detector_distance=0.5, detector_pixel_size=20e-6,
                                    geometry_kind="nearfield", focus_distance=1e-3,
                                    positions_m=rng.uniform(-1e-7, 1e-7, (n, 2)), mask=mask)


def test_multipage_tiff_round_trip(tmp_path):
    ds = measurement()
    tif, csv = cio.write_tiff(tmp_path / "scan.tif", ds)
    assert csv.name == "scan_positions.csv" and (tmp_path / "scan_mask.tif").exists()
    assert csv.read_text().splitlines()[1] == "y_m,x_m"
    back = cio.load(tif)                                   # geometry from the TIFF's JSON description
    np.testing.assert_array_equal(back.data, ds.data)
    np.testing.assert_array_equal(back.mask, ds.mask)
    np.testing.assert_allclose(back.positions_m, ds.positions_m, rtol=1e-15)
    np.testing.assert_allclose(back.positions, ds.positions, atol=1e-12)
    assert back.propagator == ds.propagator and back.geometry_kind == "nearfield"
    assert back.z == pytest.approx(ds.z, rel=1e-14) and back.pixel_size == pytest.approx(ds.pixel_size, rel=1e-14)
    assert back.focus_distance == ds.focus_distance and back.wavelength == ds.wavelength
    with pytest.raises(FileExistsError, match="overwrite"):
        cio.write_tiff(tmp_path / "scan.tif", ds)


def test_folder_of_tiffs_with_pixel_positions_and_dark_frames(tmp_path):
    rng = np.random.default_rng(1)
    frames = rng.poisson(40.0, size=(12, 8, 8)).astype(np.uint16)
    folder = tmp_path / "frames"
    folder.mkdir()
    for j, f in enumerate(frames):                         # natural order: f_2 before f_10
        tifffile.imwrite(folder / f"f_{j}.tif", f)
    pos = np.column_stack([np.arange(12) * 1.5, np.arange(12) % 4 * 2.0])
    csv = tmp_path / "pos.txt"
    csv.write_text("# units: px\n" + "\n".join(f"{y}\t{x}" for y, x in pos) + "\n")
    dark = np.full((3, 8, 8), 30, dtype=np.uint16)
    tifffile.imwrite(tmp_path / "dark.tif", dark, photometric="minisblack")
    with pytest.warns(P.NegativeCountsWarning, match=f"{int(np.sum(frames < 30))} negative"):
        ds = cio.load(folder, positions=csv, dark=tmp_path / "dark.tif")
    np.testing.assert_array_equal(ds.data, np.maximum(frames.astype(np.float32) - 30, 0))
    np.testing.assert_allclose(ds.positions - ds.positions.min(0), pos - pos.min(0))
    assert ds.propagator == "farfield" and ds.pixel_size is None


@pytest.mark.parametrize("text, units, values", [
    ("y_um,x_um\n1,2\n3,4\n", None, [[1e-6, 2e-6], [3e-6, 4e-6]]),
    ("index x_px y_px\n0 2 1\n1 4 3\n", None, [[1, 2], [3, 4]]),
    ("1;2\n3;4\n", "nm", [[1e-9, 2e-9], [3e-9, 4e-9]]),
    ("# units = m\ny,x\n1,2\n3,4\n", "m", [[1, 2], [3, 4]]),
])
def test_positions_files_state_their_units(tmp_path, text, units, values):
    p = tmp_path / "p.csv"
    p.write_text(text)
    got, unit = cio.read_positions(p, 2, units=units)
    np.testing.assert_allclose(got, values)
    assert unit == ("px" if "px" in text else "m")


@pytest.mark.parametrize("text, units, match", [
    ("1,2\n3,4\n", None, "does not state its units"),
    ("y_m,x_m\n1,2\n3,4\n", "px", "contradictory position units"),
    ("y_m,x_m\n1,2\n", None, "1 positions but 2 patterns"),
    ("a,b\n1,2\n3,4\n", "m", "must name a 'y' and an 'x' column"),
    ("1,2,3\n4,5,6\n", "m", "3 columns without a header"),
    ("y_m,x_m\n1,nan\n3,4\n", None, "NaN"),
])
def test_bad_positions_files(tmp_path, text, units, match):
    p = tmp_path / "p.csv"
    p.write_text(text)
    with pytest.raises(cio.DataError, match=match) as err:
        cio.read_positions(p, 2, units=units)
    assert "p.csv" in str(err.value)


def test_bad_tiff_input(tmp_path):
    ds = measurement()
    tif, csv = cio.write_tiff(tmp_path / "scan.tif", ds)
    short = tmp_path / "short.csv"
    short.write_text("y_m,x_m\n" + "\n".join(csv.read_text().splitlines()[2:-1]) + "\n")
    with pytest.raises(cio.DataError, match=r"short\.csv: 4 positions but 5 patterns"):
        cio.load(tif, positions=short)
    broken = tmp_path / "broken.tif"
    broken.write_bytes(tif.read_bytes()[:200])
    with pytest.raises(cio.DataError, match=r"broken\.tif"):
        cio.load(broken, positions=csv)
    nan = ds.data.copy()
    nan[2, 0, 0] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", nan)
    with pytest.raises(cio.DataError, match=r"nan\.tif: 1 frame\(s\) contain NaN or Inf values \(frame 2\)"):
        cio.load(tmp_path / "nan.tif", positions=csv, wavelength=1e-10, detector_distance=0.5,
                 detector_pixel_size=20e-6)
    with pytest.raises(cio.DataError, match="no positions"):
        cio.load(tmp_path / "nan.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(cio.DataError, match="sample pixel size cannot be derived"):
            cio.load(tmp_path / "nan.tif", positions=csv, frames=[0, 1, 3, 4])
