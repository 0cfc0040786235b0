"""Scan patterns: raster, Fermat spiral and concentric rings, and the step for a given overlap.

Positions are (J, 2) float64, (y, x) in pixels, centred on 0; `simulate` shifts them into the
object. Random jitter is Gaussian with a 2-D RMS length given in pixels.
"""
from __future__ import annotations

import numpy as np

from .validation import choice, integer, integer_pair, real_number, seed_sequence

__all__ = ["SCAN_KINDS", "GOLDEN_ANGLE", "step_from_overlap", "step_pair", "raster_scan", "fermat_spiral",
           "concentric_rings", "scan_positions"]

SCAN_KINDS = ("raster", "fermat", "rings")
GOLDEN_ANGLE = np.pi * (3.0 - np.sqrt(5.0))


def step_from_overlap(probe_diameter, overlap):
    """Scan step (pixels) that gives a linear overlap `overlap` between neighbouring probes.

    Linear overlap (Bunk et al. 2008) is the fraction of the probe diameter d shared by two
    probe discs whose centres are one step s apart: overlap = 1 - s / d, so s = d (1 - overlap).
    (The shared *area* fraction is smaller: about 0.6 for a linear overlap of 0.7.)

    Parameters
    ----------
    probe_diameter : float
        Pixels (> 0), e.g. from `probes.diameter_px`.
    overlap : float in [0, 1)

    Returns
    -------
    step : float
    """
    d = real_number("probe_diameter", probe_diameter, low=0.0, low_open=True)
    o = real_number("overlap", overlap, low=0.0, high=1.0, high_open=True)
    return d * (1.0 - o)


def step_pair(step):
    """(sy, sx) float64 array from a positive step or a pair of them (pixels)."""
    try:
        arr = np.asarray(step, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"step must be a positive number or a (sy, sx) pair of them, got {step!r}") from None
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.size != 2 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"step must be a positive number or a (sy, sx) pair of them, got {step!r}")
    return arr


def _jitter(rng, n, rms):
    """(n, 2) Gaussian displacements whose 2-D RMS length is `rms` (sigma rms/sqrt(2) per axis)."""
    return rng.standard_normal((n, 2)) * (rms / np.sqrt(2.0))


def raster_scan(ny, nx, step, *, jitter=0.0, seed=0):
    """A rectangular grid of ny x nx positions, row by row (y slow, x fast), centred on 0.

    Parameters
    ----------
    ny, nx : int >= 1
        Rows and columns.
    step : float or (2,) float
        Grid pitch (sy, sx) in pixels.
    jitter : float >= 0
        Random displacement added to every point: Gaussian, independent per axis with sigma
        jitter / sqrt(2), so that the RMS displacement length sqrt(<dy^2 + dx^2>) is `jitter`
        pixels (in expectation). It breaks the periodicity that causes raster-grid artefacts.
    seed : int or numpy SeedSequence
        For the jitter.

    Returns
    -------
    positions : (ny * nx, 2) float64
        (y, x) in pixels.
    """
    ny, nx = integer("ny", ny), integer("nx", nx)
    sy, sx = step_pair(step)
    jitter = real_number("jitter", jitter, low=0.0)
    yy, xx = np.meshgrid((np.arange(ny) - (ny - 1) / 2) * sy, (np.arange(nx) - (nx - 1) / 2) * sx, indexing="ij")
    pos = np.stack([yy.ravel(), xx.ravel()], axis=1)
    if jitter > 0:
        pos = pos + _jitter(np.random.default_rng(seed_sequence(seed)), pos.shape[0], jitter)
    return pos


def fermat_spiral(n, step):
    """Fermat (Vogel) spiral of n points, centred on 0: r_i = c sqrt(i), theta_i = i * golden angle.

    c = step / sqrt(pi), so the points have the areal density of a square raster of pitch `step`
    (one point per step^2); their mean nearest-neighbour distance is then about 0.95 step.
    Spiral scans avoid the periodic artefacts of raster grids (Huang et al. 2014).

    Parameters
    ----------
    n : int >= 1
    step : float > 0
        Pixels.

    Returns
    -------
    positions : (n, 2) float64
        (y, x) in pixels; point 0 is at the origin.
    """
    n = integer("n", n)
    step = real_number("step", step, low=0.0, low_open=True)
    i = np.arange(n, dtype=np.float64)
    r = step / np.sqrt(np.pi) * np.sqrt(i)
    theta = i * GOLDEN_ANGLE
    return np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1)


def concentric_rings(n_rings, step):
    """One centre point and n_rings concentric rings, centred on 0.

    Ring r (1..n_rings) has radius r * step and round(2 pi r) equally spaced points starting at
    angle 0, so neighbours on a ring are about `step` apart (Dierolf et al. 2010).
    Total count: 1 + sum_r round(2 pi r).

    Parameters
    ----------
    n_rings : int >= 0
        Rings around the centre point (0 gives the centre alone).
    step : float > 0
        Radial spacing in pixels.

    Returns
    -------
    positions : (J, 2) float64
        (y, x) in pixels, the centre first, then ring by ring.
    """
    n_rings = integer("n_rings", n_rings, low=0)
    step = real_number("step", step, low=0.0, low_open=True)
    rings = np.arange(1, n_rings + 1)
    counts = np.rint(2 * np.pi * rings).astype(np.int64)
    ring = np.repeat(rings, counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    k = np.arange(ring.size) - first
    theta = 2 * np.pi * k / np.repeat(counts, counts)
    pos = np.stack([ring * step * np.sin(theta), ring * step * np.cos(theta)], axis=1)
    return np.concatenate([np.zeros((1, 2)), pos], axis=0)


def scan_positions(kind, size, step, jitter, seed):
    """The scan of `simulate`: a pattern of SCAN_KINDS, or given (J, 2) positions, plus jitter.

    Parameters
    ----------
    kind : {"raster", "fermat", "rings"} or (J, 2) float
    size : int or (2,) int
        raster: (ny, nx) (an int means square); fermat: number of points; rings: number of rings.
    step : float or (2,) float
        Pixels (a pair only for the raster).
    jitter : float >= 0
        RMS displacement length in pixels.
    seed : int or numpy SeedSequence
        For the jitter.

    Returns
    -------
    positions : (J, 2) float64
    """
    if not isinstance(kind, str):
        pos = np.asarray(kind, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] == 0 or not np.all(np.isfinite(pos)):
            raise ValueError(f"scan must be one of {SCAN_KINDS} or a finite (J, 2) array, got shape {pos.shape}")
        return pos + (_jitter(np.random.default_rng(seed_sequence(seed)), pos.shape[0], jitter) if jitter else 0.0)
    choice("scan", kind, SCAN_KINDS)
    if kind == "raster":
        ny, nx = integer_pair("scan_size", size, low=1)
        return raster_scan(ny, nx, step, jitter=jitter, seed=seed)
    pos = fermat_spiral(integer("scan_size", size), step) if kind == "fermat" else \
        concentric_rings(integer("scan_size", size, low=0), step)
    return pos + (_jitter(np.random.default_rng(seed_sequence(seed)), pos.shape[0], jitter) if jitter else 0.0)
