"""The report's last panel: z where the model has one, the position corrections where it has none."""
from __future__ import annotations

import numpy as np

import cuptycho
from cuptycho import Config, Group, report, simulate


def _last_panel_title(result, nominal=None):
    fig = report.figure(result, nominal=nominal)
    return fig.axes[5].get_title()


def test_far_field_shows_the_position_corrections_instead_of_an_empty_z_panel():
    exp = simulate.preset("small_farfield", seed=1, position_error=2.0)
    ds = exp.dataset()
    result = cuptycho.reconstruct(ds, Config(epochs=4, backend="cpu", init_probe="data",
                                             positions=Group(enabled=True, lr=0.1, start_epoch=1)))
    title = _last_panel_title(result, nominal=ds.positions)
    moved = np.linalg.norm(result.positions - ds.positions, axis=1)
    assert title == f"position corrections: median {np.median(moved):.3g} px, max {moved.max():.3g} px"
    assert _last_panel_title(result) == "position corrections (no nominal positions given)"


def test_near_field_keeps_the_z_trajectory():
    exp = simulate.preset("small_nearfield", seed=1)
    result = cuptycho.reconstruct(exp.dataset(), Config(epochs=3, backend="cpu", init_probe="data",
                                                        z=Group(enabled=True, lr=1e-3)))
    assert _last_panel_title(result).startswith("z: ")
