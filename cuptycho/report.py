"""The one-page report of a reconstruction (`cuptycho show RESULT -o report.png`).

Six panels: the object's magnitude and phase (mode 0, cropped to the scanned region, the global phase
removed), the probe modes (brightness = amplitude, hue = phase, each mode's share of the power), the
loss per epoch (loss switches and interruptions marked), the position corrections (arrows from the
nominal to the refined positions, exaggerated by a stated factor) and the trajectories of the
propagation distance z and of the RMS position correction (far field, without z: a histogram of
how far each position moved, those left out of the loss apart).

Drawn with matplotlib's Agg canvas on a `Figure` of its own (no pyplot, no display, no global
backend switch), and written atomically: a half-written PNG never appears.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["read", "figure", "write_report"]


def read(path) -> dict:
    """What the report needs from a result file written by `cuptycho.io.write_result`: the Result
    plus, when the file has them, the nominal positions and the sample pixel size."""
    from .io import read_result
    from .io.cxi import GROUP, open_hdf5

    result = read_result(path)
    extra = {"nominal": None, "pixel_size": None}
    with open_hdf5(path) as f:
        g = f.get(f"/entry_1/{GROUP}")
        for key, name in (("nominal", "positions_nominal"), ("pixel_size", "pixel_size")):
            if g is not None and name in g:
                try:
                    extra[key] = np.asarray(g[name][()], dtype=np.float64)
                except (OSError, ValueError):
                    pass
    return {"result": result, "source": os.fspath(path), **extra}


def _lit_box(lit):
    """Row and column slices of the bounding box of the lit pixels."""
    r, c = np.nonzero(np.any(lit, axis=1))[0], np.nonzero(np.any(lit, axis=0))[0]
    if not r.size:
        return slice(0, lit.shape[0]), slice(0, lit.shape[1])
    return slice(r[0], r[-1] + 1), slice(c[0], c[-1] + 1)


def _illumination(positions, probe, shape):
    """The scan's summed probe power on the object (integer-rounded positions)."""
    power = np.sum(np.abs(probe) ** 2, axis=0)
    total = np.zeros(shape)
    ny, nx = power.shape
    for y, x in np.rint(positions).astype(int):
        y, x = min(max(y, 0), shape[0] - ny), min(max(x, 0), shape[1] - nx)
        total[y:y + ny, x:x + nx] += power
    return total / total.max() if total.max() > 0 else np.ones(shape)


def _complex_rgb(z):
    """RGB image of a complex array: hue = phase, value = amplitude / max amplitude."""
    from matplotlib.colors import hsv_to_rgb

    amp = np.abs(z)
    top = amp.max()
    value = amp / top if top > 0 else amp
    hue = (np.angle(z) + np.pi) / (2 * np.pi)
    return hsv_to_rgb(np.stack([hue, np.ones_like(hue), value], axis=-1))


def _history(result, key):
    values = [h.get(key) for h in result.history]
    epochs = [h.get("epoch", i) for i, h in enumerate(result.history)]
    pairs = [(e, v) for e, v in zip(epochs, values) if v is not None and np.isfinite(v)]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs], dtype=np.float64)


def _object_panels(fig, magnitude_axes, phase_axes, obj, probe, positions):
    """Object: magnitude and phase of mode 0 over the scanned region."""
    # shown: where the scan puts at least 1% of its peak power; colour limits and the global phase
    # from where it puts 10% (the poorly lit rim is noise)
    illumination = _illumination(positions, probe, obj.shape[-2:])
    rows, cols = _lit_box(illumination >= 0.01)
    o, lit = obj[0][rows, cols], illumination[rows, cols] >= 0.1
    total = np.sum(o[lit])
    if abs(total) > 0:
        o = o * np.conj(total) / abs(total)                 # the global phase is arbitrary: remove it
    extent = (cols.start - 0.5, cols.stop - 0.5, rows.stop - 0.5, rows.start - 0.5)
    modes = f" (mode 0 of {obj.shape[0]})" if obj.shape[0] > 1 else ""
    for a, image, title, cmap in ((magnitude_axes, np.abs(o), f"object magnitude{modes}", "gray"),
                                  (phase_axes, np.angle(o), f"object phase (rad){modes}", "bone")):
        # colour limits from the well-lit region: the scan's poorly lit rim is noise
        lo, hi = np.percentile(image[lit], [0.5, 99.5]) if lit.any() else (0, 1)
        im = a.imshow(image, cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1e-12, extent=extent,
                      interpolation="nearest")
        fig.colorbar(im, ax=a, shrink=0.8)
        a.set_title(title)
        a.set_xlabel("x (object pixels)")
        a.set_ylabel("y (object pixels)")


def _probe_panel(a, probe):
    """Probe modes side by side, each scaled to its own maximum."""
    power = np.sum(np.abs(probe) ** 2, axis=(-2, -1))
    share = power / power.sum() if power.sum() > 0 else power
    shown = probe[:6]
    gap = np.ones((probe.shape[-2], max(2, probe.shape[-1] // 16), 3))
    tiles = []
    for k, p in enumerate(shown):
        tiles += [_complex_rgb(p)] + ([gap] if k < len(shown) - 1 else [])
    a.imshow(np.concatenate(tiles, axis=1), interpolation="nearest")
    a.set_title(f"probe: {probe.shape[0]} mode(s), {probe.shape[-2]} x {probe.shape[-1]}" +
                (" (first 6 shown)" if probe.shape[0] > 6 else "") + "\nbrightness = amplitude, hue = phase")
    step = probe.shape[-1] + gap.shape[1]
    a.set_xticks([step * k + probe.shape[-1] / 2 for k in range(len(shown))])
    a.set_xticklabels([f"mode {k}\n{100 * share[k]:.1f}%" for k in range(len(shown))])
    a.set_yticks([])


def _loss_panel(a, result):
    """Loss per epoch, with the loss switches, interruptions and divergences marked."""
    epochs, loss = _history(result, "loss")
    if loss.size:
        a.plot(epochs, loss, color="C0")
        if np.all(loss > 0):
            a.set_yscale("log")
        names = [h.get("loss_name") for h in result.history]
        a.set_title(f"loss ({names[0]}{' ... ' + names[-1] if names[-1] != names[0] else ''}): "
                    f"{loss[0]:.4g} -> {loss[-1]:.4g}")
    else:
        a.set_title("loss: no epochs recorded")
    for e in result.events or []:
        if e.get("event") in ("loss_switch", "interrupted", "divergence"):
            color = {"loss_switch": "C2", "interrupted": "C3", "divergence": "C1"}[e["event"]]
            a.axvline(e.get("epoch", 0), color=color, lw=0.8, ls="--", label=e["event"].replace("_", " "))
    handles, labels = a.get_legend_handles_labels()
    if handles:
        unique = dict(zip(labels, handles))
        a.legend(unique.values(), unique.keys(), fontsize="small")
    a.set_xlabel("epoch")
    a.grid(alpha=0.3)


def _positions_panel(fig, a, positions, nominal, probe):
    """Position corrections as arrows from the nominal positions (or the positions alone)."""
    if nominal is not None and np.shape(nominal) == positions.shape:
        nominal = np.asarray(nominal, dtype=np.float64)
        corr = positions - nominal
        size = np.hypot(corr[:, 0], corr[:, 1])
        rms = float(np.sqrt(np.mean(np.sum(corr ** 2, axis=1))))
        span = np.ptp(nominal, axis=0).max() if len(nominal) > 1 else 1.0
        spacing = span / max(1.0, np.sqrt(len(nominal)))
        gain = 0.8 * spacing / size.max() if size.max() > 0 else 1.0
        cy, cx = nominal[:, 0] + probe.shape[-2] / 2, nominal[:, 1] + probe.shape[-1] / 2
        a.scatter(cx, cy, s=8, color="0.6", label="nominal")
        if size.max() > 0:
            q = a.quiver(cx, cy, corr[:, 1], corr[:, 0], size, angles="xy", scale_units="xy", scale=1 / gain,
                         cmap="viridis", width=0.004)
            fig.colorbar(q, ax=a, shrink=0.8, label="|correction| (px)")
            a.set_title(f"position corrections (arrows x{gain:.3g}):\nRMS length {rms:.3g} px, max {size.max():.3g} px")
        else:
            a.set_title("scan positions (not refined: no corrections)")
    else:
        cy, cx = positions[:, 0] + probe.shape[-2] / 2, positions[:, 1] + probe.shape[-1] / 2
        a.scatter(cx, cy, s=8, color="C0")
        a.set_title("scan positions (no nominal positions in the file)")
    a.set_aspect("equal")
    a.invert_yaxis()
    a.set_xlabel("x (object pixels)")
    a.set_ylabel("y (object pixels)")


def _rms_trajectory(a, result):
    """The RMS position correction per epoch on a twin axis of `a` (when positions moved at all)."""
    er, rms_t = _history(result, "position_correction_rms")
    if rms_t.size and np.any(rms_t > 0):
        b = a.twinx()
        b.plot(er, rms_t, color="C3", ls="--")
        b.set_ylabel("RMS position correction per axis (px)", color="C3")


def _z_panel(a, result):
    """z and the RMS position correction per epoch."""
    ez, z = _history(result, "z")
    a.plot(ez, z * 1e3, color="C0")
    a.set_ylabel("z (mm)", color="C0")
    a.set_title(f"z: {z[0]:.6g} m -> {z[-1]:.6g} m ({100 * (z[-1] / z[0] - 1):+.3g}%)")
    a.ticklabel_format(axis="y", useOffset=False)
    _rms_trajectory(a, result)
    a.set_xlabel("epoch")
    a.grid(alpha=0.3)


def _corrections_panel(a, result, positions, nominal):
    """Where there is no z (far field): how far each position moved from its nominal place, the positions
    left out of the loss counted apart, and the RMS correction per epoch."""
    excluded = getattr(result, "excluded_positions", None)
    excluded = np.zeros(0, dtype=int) if excluded is None else np.asarray(excluded, dtype=int)
    if nominal is not None and len(nominal) == len(positions):
        moved = np.linalg.norm(positions - np.asarray(nominal, dtype=np.float64), axis=1)
        kept = np.setdiff1d(np.arange(len(moved)), excluded)
        a.hist(moved[kept], bins=30, color="C0", alpha=0.8, label="in the loss")
        if len(excluded):
            a.hist(moved[excluded], bins=30, color="C3", alpha=0.8, label=f"left out ({len(excluded)})")
            a.legend(loc="upper right")
        a.set_xlabel("distance moved from the nominal position (object pixels)")
        a.set_ylabel("positions")
        a.set_title(f"position corrections: median {np.median(moved):.3g} px, max {moved.max():.3g} px")
    else:
        a.set_yticks([])
        a.set_xlabel("epoch")
        a.set_title("position corrections (no nominal positions given)")
        _rms_trajectory(a, result)
    a.grid(alpha=0.3)


def figure(result, *, nominal=None, source=None):
    """A matplotlib Figure (Agg canvas attached) with the six panels for `result` (a cuptycho.Result
    or anything with object, probe, positions, history, events, timings, device)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    obj = np.asarray(result.object)
    obj = obj[None] if obj.ndim == 2 else obj
    probe = np.asarray(result.probe)
    probe = probe[None] if probe.ndim == 2 else probe
    positions = np.asarray(result.positions, dtype=np.float64)
    fig = Figure(figsize=(15, 9.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots(2, 3)
    _object_panels(fig, ax[0, 0], ax[0, 1], obj, probe, positions)
    _probe_panel(ax[0, 2], probe)
    _loss_panel(ax[1, 0], result)
    _positions_panel(fig, ax[1, 1], positions, nominal, probe)
    if _history(result, "z")[1].size:
        _z_panel(ax[1, 2], result)
    else:                                         # far field: no z to show, so the corrections instead
        _corrections_panel(ax[1, 2], result, positions, nominal)
    seconds = (result.timings or {}).get("total")
    head = f"{Path(source).name}: " if source else ""
    fig.suptitle(f"{head}{len(result.history)} epochs on {result.device or '?'}"
                 + (f" in {seconds:.1f} s" if seconds else "")
                 + (f"; object {obj.shape[-2]} x {obj.shape[-1]}, {len(positions)} positions"))
    return fig


def write_report(result_path, out, *, overwrite: bool = False, dpi: int = 100) -> Path:
    """Read the result at `result_path` and write the report PNG to `out` atomically (an existing
    regular file is replaced only with `overwrite`; the result itself never)."""
    from .atomic import atomic_path, check_writable, same_file

    if same_file(out, result_path):                    # --force would otherwise replace the result by its picture
        raise ValueError(f"the report {os.fspath(out)} is the result file {os.fspath(result_path)}; choose another -o")
    check_writable(out, overwrite=overwrite, probe=True)   # refuse before the (slower) drawing
    info = read(result_path)
    fig = figure(info["result"], nominal=info["nominal"], source=info["source"])
    with atomic_path(out, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(os.fspath(out))
