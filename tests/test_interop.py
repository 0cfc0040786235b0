"""Files other tools open fully: our results in ptychodus (its own CXI product reader, an optional
test dependency) with the geometry in metres, and ptychodus-written products read back by ours."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

import cuptycho
from cuptycho import Config, cli
from cuptycho import io as cio

cxi_file = pytest.importorskip("ptychodus.plugins.cxi_file",
                               reason="ptychodus is not installed (optional: pip install ptychodus)")


@pytest.fixture(scope="module")
def result_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("interop")
    assert cli.main(["simulate", "small_farfield", "--seed", "1", "-o", str(d / "sim.cxi")]) == 0
    ds = cio.load(d / "sim.cxi")
    result = cuptycho.reconstruct(ds, Config(epochs=3, backend="cpu", init_probe="data", n_probe_modes=2))
    return cio.write_result(d / "result.cxi", result, ds), result, ds


def test_ptychodus_reads_our_result_with_its_geometry(result_file):
    path, result, ds = result_file
    product = cxi_file.CXIProductFileIO().read(path)
    dy, dx = ds.pixel_size
    assert product.metadata.name == "sim (cuptycho)"
    assert product.metadata.detector_distance_m == pytest.approx(ds.detector_distance)
    assert product.metadata.photon_energy_eV == pytest.approx(1239.84198 / (ds.wavelength * 1e9), rel=1e-6)
    probe_px, object_px = product.probes.get_pixel_geometry(), product.object_.get_pixel_geometry()
    assert (probe_px.width_m, probe_px.height_m) == pytest.approx((dx, dy))
    assert (object_px.width_m, object_px.height_m) == pytest.approx((dx, dy))
    h, w = result.object.shape[-2:]
    centre = product.object_.get_center()
    assert (centre.x_m, centre.y_m) == pytest.approx((w * dx / 2, h * dy / 2))
    np.testing.assert_array_equal(product.object_.get_array(), result.object)
    np.testing.assert_array_equal(product.probes.get_array()[0], result.probe)
    ny, nx = result.probe.shape[-2:]
    positions = product.probe_positions
    np.testing.assert_allclose(positions.get_coordinates_x_m(), (result.positions[:, 1] + nx / 2) * dx, rtol=1e-12)
    np.testing.assert_allclose(positions.get_coordinates_y_m(), (result.positions[:, 0] + ny / 2) * dy, rtol=1e-12)
    assert [v.value for v in product.losses] == pytest.approx(list(result.loss))


def test_a_product_ptychodus_writes_reads_back_in_ours(result_file, tmp_path):
    path, result, _ = result_file
    io = cxi_file.CXIProductFileIO()
    io.write(tmp_path / "theirs.cxi", io.read(path))
    with h5py.File(tmp_path / "theirs.cxi") as f:
        assert "cuptycho" not in f["entry_1"] and f["entry_1/process_1/program"][()] == b"Ptychodus"
    back = cio.read_result(tmp_path / "theirs.cxi")
    np.testing.assert_array_equal(back.object, result.object)
    np.testing.assert_array_equal(back.probe, result.probe)
    np.testing.assert_allclose(back.positions, result.positions, rtol=0, atol=1e-9)
    assert back.device == "Ptychodus" and back.loss == pytest.approx(result.loss)
