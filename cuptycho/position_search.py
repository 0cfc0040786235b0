"""A capture range wider than the gradient's: each position's data misfit evaluated at candidate shifts
on a grid, with the current object and probe, and the position moved to the best one.

A position that starts 10-30 px off sits outside the basin of the position gradient (about the
size of the object's features): the gradient pulls it into a nearby wrong minimum, often one scan
step away, and the object grows a defect around it. The search looks further: for the positions
whose pattern loss stands out, the loss at shifts on a grid around the scan model's prediction, one
batched forward model per chunk of candidates, and a move to the lowest when it lowers that
pattern's loss by at least `min_gain` (a relative margin, so noise never moves a position that is
right). A position that still stands out is left out of the loss until a search places it, so its
pattern stops writing a defect into the object where it does not belong (`Result.excluded_positions`
names those never placed).

    position_search.maybe_search(rec, epoch)      # rec: a Reconstruction; Config.position_search says when
"""
from __future__ import annotations

import numpy as np

from . import backend as backends
from . import reference
from .settings import PositionSearch, table


def offsets(radius: float, step: float) -> np.ndarray:
    """The candidate shifts (K, 2): a square grid of spacing `step` within `radius` (pixels) per axis."""
    n = int(np.floor(radius / step))
    axis = np.arange(-n, n + 1, dtype=np.float64) * step
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([yy.ravel(), xx.ravel()], axis=1)


def pattern_losses(rec, idx, positions, loss) -> np.ndarray:
    """The loss of pattern idx[i] modelled at positions[i] with the current object and probe (host (B,))."""
    xp = rec.xp
    data, mask = rec.pattern_rows(idx)                           # repeated rows: one per candidate
    intensity = rec.model_intensity(idx, positions)
    terms = reference.loss_terms(loss, intensity.astype(xp.float64), data.astype(xp.float64)) * mask
    return backends.to_host(terms.reshape(len(idx), -1).sum(axis=1))


def _best_shifts(rec, start, cand, loss, chunk, best, best_at, rows_searched):
    """For every position in `rows_searched`, the candidate position start + cand with the lowest pattern
    loss, where it is lower than `best` (updated in place, with `best_at`)."""
    ny, nx = rec.probe.shape[-2:]
    high = np.array([rec.obj.shape[1] - ny, rec.obj.shape[2] - nx], dtype=np.float64)
    per = max(1, chunk // len(cand))                             # positions per forward call
    for s in range(0, len(rows_searched), per):
        rows = rows_searched[s:s + per]
        trial = np.clip((start[rows, None, :] + cand[None]).reshape(-1, 2), 0, high)
        values = pattern_losses(rec, np.repeat(rows, len(cand)), trial, loss).reshape(len(rows), len(cand))
        k = np.argmin(values, axis=1)
        lower = values[np.arange(len(rows)), k] < best[rows]
        best[rows[lower]] = values[lower, k[lower]]
        best_at[rows[lower]] = trial.reshape(len(rows), len(cand), 2)[lower, k[lower]]


def predicted(rec) -> np.ndarray:
    """Where the scan model puts every position: nominal + affine (nominal - centre) + the median
    correction of the positions in the loss (a common offset): the centre of each position's search,
    so that repeated searches cannot walk a position away from its scan."""
    d = rec.nominal - rec.scan_centre
    return rec.nominal + d @ rec.affine.T + np.median(rec.correction[rec.in_loss()], axis=0)


def search(rec, radius: float, step: float, min_gain: float, loss: str, chunk: int = 256, misfit: float = 0.0,
           coarse: float = 4.0, exclude: bool = False) -> dict:
    """Move positions of `rec` to the candidate with the lowest pattern loss when it lowers that loss by
    more than `min_gain` (relative); returns {"moved", "largest" (px), "gain" (median relative),
    "searched", "excluded" (count), "excluded_positions" (indices)}.

    Candidates: a grid of spacing `coarse` within `radius` of the scan model's prediction (`predicted`),
    then a grid of spacing `step` within one coarse spacing of the best so far, then of `step` / 4 within
    `step` (the current position is the first candidate; the pattern loss varies smoothly on the scale
    of the probe's features).
    With `misfit` > 0 only the positions whose pattern loss exceeds `misfit` times the median of those
    in the loss are searched; with `exclude` as well, those whose loss still stands out after the search
    are left out of the loss (`rec.excluded`) until a later search places them: such a pattern
    was written into the object at the wrong place, and a search with that object finds mostly its
    own trace; left out, its true place heals from its neighbours' data."""
    n = rec.ds.n_patterns
    current = rec.positions()
    now = np.concatenate([pattern_losses(rec, np.arange(s, min(s + chunk, n)), current[s:s + chunk], loss)
                          for s in range(0, n, chunk)])
    best, best_at = now.copy(), current.copy()
    limit = misfit * np.median(now[rec.in_loss()])
    rows = np.flatnonzero(now > limit) if misfit > 0 else np.arange(n)
    coarse = max(step, min(coarse, radius))
    _best_shifts(rec, predicted(rec), offsets(radius, coarse), loss, chunk, best, best_at, rows)
    for spacing, finer in ((coarse, step), (step, step / 4)):   # then a quarter step: the bilinear model is subpixel
        if spacing > finer:
            _best_shifts(rec, best_at.copy(), offsets(spacing, finer), loss, chunk, best, best_at, rows)
    gain = np.where(now > 0, (now - best) / np.where(now > 0, now, 1), 0.0)
    move = gain > min_gain
    rec.correction[move] += best_at[move] - current[move]
    shift = np.linalg.norm(best_at - current, axis=1)
    if exclude and misfit > 0:          # still standing out wherever it was looked for: out of the loss
        rec.excluded[:] = False
        rec.excluded[rows[best[rows] > limit]] = True
    out = np.flatnonzero(rec.excluded)
    return {"moved": int(move.sum()), "largest": float(shift[move].max()) if move.any() else 0.0,
            "gain": float(np.median(gain[move])) if move.any() else 0.0, "searched": int(len(rows)),
            "excluded": int(len(out)), "excluded_positions": out.tolist()}


def maybe_search(rec, epoch) -> None:
    """`Config.position_search` for the shared loop: every `every` epochs from `start_epoch`, while the
    positions are refined, search and record an event ``position_search`` (what `search` returns)."""
    s = table(PositionSearch, rec.cfg.position_search)
    if s is None or not rec._active("positions", epoch) or epoch < s.start_epoch or (epoch - s.start_epoch) % s.every:
        return
    found = search(rec, s.radius, s.step, s.min_gain, rec.loss_name(epoch), misfit=s.misfit, coarse=s.coarse,
                   exclude=s.exclude)
    rec._clip_positions()
    rec.events.append({"epoch": epoch, "event": "position_search", **found})
