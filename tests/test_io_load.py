"""cuptycho.io.load and info: dispatch on the file type, descriptions, unknown files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cuptycho import Dataset
from cuptycho import io as cio

DATA = Path(__file__).parents[1] / "../shared/data"
PETRA = DATA / "petra3_p25_nearfield" / "PETRAIII_P25_Near_Field_Ptycho.cxi"


def small():
    rng = np.random.default_rng(2)
    return Dataset.from_measurement(rng.poisson(5.0, (4, 8, 8)).astype(np.float32), wavelength=1e-10,
                                    detector_distance=1.0, detector_pixel_size=50e-6,
                                    positions_m=rng.uniform(0, 1e-7, (4, 2)))


def test_load_dispatches_on_suffix_and_content(tmp_path):
    ds = small()
    paths = [cio.write_cxi(tmp_path / "a.cxi", ds), cio.write_npz(tmp_path / "b.npz", ds),
             cio.write_tiff(tmp_path / "c.tif", ds)[0]]
    renamed = tmp_path / "d.data"                       # no telling suffix: sniffed from the first bytes
    renamed.write_bytes(paths[0].read_bytes())
    for p in [*paths, renamed]:
        got = cio.load(p)
        np.testing.assert_array_equal(got.data, ds.data)
        np.testing.assert_allclose(got.positions, ds.positions, atol=1e-9)
        assert got.pixel_size == pytest.approx(ds.pixel_size, rel=1e-12)
    assert [cio.detect_format(p) for p in (*paths, renamed, tmp_path)] == ["hdf5", "npz", "tiff", "hdf5", "tiff"]


def test_load_reports_unknown_and_missing_files(tmp_path):
    odd = tmp_path / "notes.txt"
    odd.write_text("hello")
    with pytest.raises(cio.DataError, match=r"notes\.txt: unknown file type"):
        cio.load(odd)
    with pytest.raises(cio.DataError, match=r"nope\.cxi: no such file"):
        cio.load(tmp_path / "nope.cxi")
    with pytest.raises(TypeError, match="unexpected keyword"):
        cio.load(cio.write_cxi(tmp_path / "a.cxi", small()), binning=2)


def test_info_describes_each_format(tmp_path):
    ds = small()
    text = cio.info(cio.write_cxi(tmp_path / "a.cxi", ds))
    assert "data: (4, 8, 8) float32" in text and "data -> /entry_1/instrument_1/detector_1/data" in text
    assert "As a dataset:" in text and "4 patterns of 8 x 8" in text and "sample pixel size" in text
    text = cio.info(cio.write_npz(tmp_path / "b.npz", ds))
    assert "cuptycho .npz layout" in text and "positions_m: (4, 2) float64" in text
    text = cio.info(cio.write_tiff(tmp_path / "c.tif", ds)[0])
    assert "TIFF file, 4 frame(s) of 8 x 8 (float32)" in text


@pytest.mark.skipif(not PETRA.exists(), reason=f"shared dataset not available: {PETRA} is absent")
def test_info_on_the_petra_file_says_what_cxi_does_not_record():
    text = cio.info(PETRA)
    assert "energy: () float32" in text and "translation: (200, 3) float32" in text
    assert "geometry_kind='nearfield'" in text and "wavelength 9.79491e-11 m" in text
