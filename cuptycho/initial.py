"""Starting guesses for a reconstruction: probes from the data or an aperture, flat objects, and
the least-squares probe scale.

Array-generic where there is an input array: `probe_from_data` and `fit_probe_scale` compute in
the namespace (NumPy or CuPy) of their data and return arrays there. `probe_aperture` and
`object_ones` take no array and return NumPy arrays (move them with ``cupy.asarray``).
Random numbers (extra modes) come from NumPy's generator seeded by `seed`, so every backend
gets the same guess.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.fft
import scipy.sparse.linalg

from . import geometry, patterns, probes, validation
from .api import forward
from .backend import array_module
from .patch_means import PatchMeans
from .constraints import orthogonalize_modes
from .validation import complex_dtype, integer, integer_pair, real_number, seed_sequence

__all__ = ["probe_from_data", "probe_aperture", "add_modes", "object_ones", "object_from_data", "fit_probe_scale",
           "scaled_to_data", "scale_sums", "scaled_by",
           "MODE_POWER"]

# Default share of the total power given to the extra probe modes together.
MODE_POWER = 0.05
# Patterns summed at once (float64) for the mean pattern and the first moments: no float64 copy of the data.
MOMENT_CHUNK_BYTES = 1 << 26


def _mode_power(value, n_modes):
    v = real_number("mode_power", value, low=0.0, high=1.0, high_open=True)
    if n_modes > 1 and v <= 0:
        raise ValueError(f"mode_power must be > 0 with n_modes > 1, got {value!r}")
    return v


def _random_complex(seed, shape):
    """Unit-variance complex Gaussian noise (NumPy, float64) from a seed (int or SeedSequence)."""
    rng = np.random.default_rng(seed_sequence(seed))
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2.0)


def _with_modes(p, n_modes, mode_power, seed):
    """(n_modes, Ny, Nx) from K0 < n_modes complex128 modes p (K0, Ny, Nx), any namespace.

    The given modes are scaled by sqrt(1 - mode_power). The extra modes are the incoherent
    amplitude sqrt(sum_k |p_k|^2) times seeded complex noise, made orthogonal to the given modes
    and to each other (Gram-Schmidt, then `orthogonalize_modes`), and scaled to carry
    mode_power * 2^-k / sum_k 2^-k of the total power (k = 1 .. n_modes - K0, descending), so the
    total power is unchanged.
    """
    xp = array_module(p)
    k0, shape = p.shape[0], p.shape[-2:]
    if n_modes == k0:
        return p
    flat = p.reshape(k0, -1)
    total = (xp.abs(flat) ** 2).sum()
    basis = orthogonalize_modes(flat.reshape(k0, 1, -1)).reshape(k0, -1)
    bnorm = xp.sqrt((xp.abs(basis) ** 2).sum(axis=1))[:, None]
    keep = bnorm > 1e-12 * xp.sqrt(total)                   # (rank-deficient input: zero rows drop out)
    basis = xp.where(keep, basis / xp.where(keep, bnorm, 1.0), 0.0)
    envelope = xp.sqrt((xp.abs(flat) ** 2).sum(axis=0))
    cand = envelope * xp.asarray(_random_complex(seed, (n_modes - k0, flat.shape[1])))
    for _ in range(2):                     # Gram-Schmidt against the given modes, repeated for accuracy
        cand = cand - (cand @ xp.conj(basis).T) @ basis
    cand = orthogonalize_modes(cand.reshape(-1, 1, flat.shape[1])).reshape(n_modes - k0, -1)
    fractions = 0.5 ** np.arange(1, n_modes - k0 + 1)
    fractions = xp.asarray(mode_power * fractions / fractions.sum())
    norms = xp.sqrt((xp.abs(cand) ** 2).sum(axis=1))
    if not bool((norms > 1e-10 * xp.sqrt(total)).all()):
        raise ValueError(f"could not build {n_modes} independent probe modes (too few non-zero probe pixels)")
    cand = cand * (xp.sqrt(fractions * total) / norms)[:, None]
    return xp.concatenate([flat * np.sqrt(1.0 - mode_power), cand], axis=0).reshape(n_modes, *shape)


def add_modes(probe, n_modes, *, mode_power=MODE_POWER, seed=0):
    """Extend a probe to `n_modes` modes with small orthogonal perturbations.

    The K0 given modes are kept (scaled by sqrt(1 - mode_power)); the n_modes - K0 new modes are
    the incoherent amplitude sqrt(sum_k |P_k|^2) times seeded complex noise, orthogonal to the
    given modes and to each other, carrying `mode_power` of the total power together (halving
    from one to the next). The total power is unchanged. This is how `probe_from_data` and
    `probe_aperture` make their extra modes.

    Parameters
    ----------
    probe : (K0, Ny, Nx) or (Ny, Nx) complex64 / complex128, numpy or cupy
    n_modes : int >= K0
        K0 returns the probe unchanged (as (K0, Ny, Nx)).
    mode_power : float in (0, 1)
    seed : int >= 0

    Returns
    -------
    probe : (n_modes, Ny, Nx), the dtype and namespace of probe
    """
    xp = array_module(probe)
    p = validation.field("probe", probe)
    n_modes = integer("n_modes", n_modes, low=p.shape[0])
    mode_power = _mode_power(mode_power, n_modes)
    if n_modes > p.shape[-2] * p.shape[-1]:
        raise ValueError(f"n_modes = {n_modes} exceeds the number of probe pixels {p.shape[-2] * p.shape[-1]}")
    return _with_modes(p.astype(xp.complex128), n_modes, mode_power, seed).astype(p.dtype)


# Long for its docstring (the far- and near-field models); the steps are the helpers below.
def probe_from_data(data, n_modes=1, *, propagator="farfield", shape=None, mask=None, seed=0,
                    mode_power=MODE_POWER, dtype=None, z=None, wavelength=None, pixel_size=None, padding=0,
                    chunks=None):
    """A probe whose modelled mean pattern, on a flat unit object, is the data's mean pattern.

    The mean pattern m(q) is averaged over the patterns (with a mask: over the patterns where
    the pixel is valid); pixels valid in no pattern get the mean of the valid pixels.

    - far field (the zero frequency of the data at (Ny//2, Nx//2)): the zero-phase field
      P0 = fftshift(ifft2(ifftshift(sqrt(m)))) (unitary), the most compact probe with that
      far-field amplitude, centred on pixel (Ny//2, Nx//2) (symmetric about it; the centre of
      mass lies there up to the unpaired first row/column of an even window). On a flat unit
      object its modelled pattern is m exactly.
    - near field ("angular_spectrum", "fresnel"; a real-space detector image): P0 = sqrt(m)
      with zero phase, the illumination as recorded, with the total power of m. If `z` is
      given (with `wavelength` and `pixel_size`, as for `cuptycho.forward`), that field is
      propagated back to the sample plane with the adjoint of the model's propagator
      (zero-pad, conj(H_z), crop): without padding and evanescent frequencies this is the exact
      inverse, and on a flat unit object the modelled pattern is then m exactly.

    The keywords match `cuptycho.forward`, so ``probe_from_data(exp.data,
    **exp.forward_kwargs())`` works for both geometries (the far field ignores wavelength and
    pixel_size).

    Extra modes (n_modes > 1, `add_modes`) are small orthogonal perturbations (|P0| times seeded
    complex noise, orthogonalised) that carry `mode_power` of the total power together (halving
    from one mode to the next); mode 0 is P0 scaled to keep the rest, so the total power always
    equals sum m.

    Parameters
    ----------
    data : (J, Ny, Nx) or (Ny, Nx) real >= 0, numpy or cupy
        Measured patterns (or one mean pattern).
    n_modes : int >= 1
    propagator : {"farfield", "angular_spectrum", "fresnel"}
    shape : int or (2,) int, optional
        Probe shape, at most the pattern shape: the mean pattern is cropped to its central
        (Ny, Nx) window, [Hd//2 - Ny//2 : ... + Ny] per axis (the zero frequency stays at
        (Ny//2, Nx//2)); crop the data the same way for the reconstruction. Default: the
        pattern shape.
    mask : (Ny, Nx) or (J, Ny, Nx) bool or weights >= 0, optional
        Valid pixels (> 0), the pattern shape.
    seed : int >= 0
        For the extra modes.
    mode_power : float in [0, 1)
        Share of the power in the extra modes (used only with n_modes > 1).
    dtype : complex64 or complex128, optional
        Default complex128 for float64 data, else complex64.
    z, wavelength, pixel_size, padding
        Near field only, optional: back-propagate the guess (see above); as for `cuptycho.forward`.
    chunks : Chunks, optional
        How the mean pattern's chunk sums are combined (`IN_ORDER`, the default); the engine under MPI
        passes `distributed.RankChunks`, so the ranks share the pass over the data.
        `shape` must then be the pattern shape.

    Returns
    -------
    probe : (n_modes, Ny, Nx) complex, the namespace of data
    """
    xp = array_module(data)
    d = data if patterns.is_streamed(data) else xp.asarray(data)
    if d.ndim == 2:
        d = d[None]
    if d.ndim != 3 or 0 in d.shape:
        raise ValueError(f"data must have shape (J, Ny, Nx) or (Ny, Nx), got {np.shape(data)}")
    d = validation.data(d, d.shape[0], d.shape[-2:], d.dtype if d.dtype.kind == "f" else np.float64)
    validation.choice("propagator", propagator, geometry.PROPAGATORS)
    back = propagator in geometry.Z_PROPAGATORS and z is not None
    if back:
        prop = validation.propagation(propagator, z, wavelength, pixel_size, padding)
    elif propagator == "farfield":
        validation.propagation(propagator, z, wavelength, pixel_size, padding)   # z / padding are errors
    elif np.any(np.asarray(padding) != 0):
        raise ValueError("padding is only used to propagate the near-field guess back, which needs z")
    n_modes = integer("n_modes", n_modes)
    mode_power = _mode_power(mode_power, n_modes)
    if dtype is None:
        source = data.dtype if hasattr(data, "dtype") else np.asarray(data).dtype
        dtype = np.complex128 if np.dtype(source) == np.float64 else np.complex64
    dtype = complex_dtype(dtype)
    pattern_shape = tuple(d.shape[-2:])
    shape = pattern_shape if shape is None else integer_pair("shape", shape, low=1)
    if shape[0] > pattern_shape[0] or shape[1] > pattern_shape[1]:
        raise ValueError(f"shape {shape} must not exceed the pattern shape {pattern_shape}")
    if back and shape != pattern_shape:
        raise ValueError(f"back-propagation needs the full pattern shape {pattern_shape}, got shape {shape}")

    mean = _mean_pattern(d, validation.mask(mask, d.shape[0], pattern_shape, np.float64), chunks or IN_ORDER)

    # crop to the probe shape about the centre pixel
    (hd, wd), (ny, nx) = pattern_shape, shape
    if n_modes > ny * nx:
        raise ValueError(f"n_modes = {n_modes} exceeds the number of probe pixels {ny * nx}")
    y0, x0 = hd // 2 - ny // 2, wd // 2 - nx // 2
    amplitude = xp.sqrt(mean[y0:y0 + ny, x0:x0 + nx])
    if not bool((amplitude > 0).any()):
        raise ValueError("the mean pattern is zero: no probe can be derived from it")

    if propagator == "farfield":
        axes = (-2, -1)
        p0 = xp.fft.fftshift(xp.fft.ifft2(xp.fft.ifftshift(amplitude.astype(xp.complex128), axes=axes),
                                          norm="ortho"), axes=axes)
    else:
        p0 = amplitude.astype(xp.complex128)
        if back:
            p0 = _back_propagate(p0, propagator, prop)
    return _with_modes(p0[None], n_modes, mode_power, seed).astype(dtype)


class Chunks:
    """How a pass over the patterns in ranges of `step` combines what each range gives: in this process, range
    after range (`IN_ORDER`). The engine under MPI passes `distributed.RankChunks`, which deals the ranges
    to the ranks and gives the same results bit for bit."""

    def sums(self, n, step, compute, shapes):
        """The sums over the ranges of ``compute(idx)`` (a tuple of arrays of `shapes`), in range order."""
        out = None
        for s in range(0, n, step):
            values = compute(np.arange(s, min(s + step, n)))
            out = values if out is None else tuple(a + b for a, b in zip(out, values))
        return out

    def rows(self, n, step, compute, widths):
        """Per-pattern rows: ``compute(idx)`` gives a tuple of (len(idx), width) arrays; the (n, width) arrays."""
        out = [np.empty((n, w)) for w in widths]
        for s in range(0, n, step):
            for full, part in zip(out, compute(np.arange(s, min(s + step, n)))):
                full[s:s + len(part)] = part
        return tuple(out)


IN_ORDER = Chunks()


def _mean_pattern(d, w, chunks=IN_ORDER):
    """Mean of the patterns d (J, Ny, Nx) over the valid pixels (weights w > 0, or all when w is None), in
    float64, a bounded chunk of patterns at a time (no float64 copy of the data), the chunks' sums
    combined by `chunks` (`Chunks`).

    Pixels valid in no pattern get the mean of the valid pixels.
    """
    xp = array_module(d)
    n, frame = d.shape[0], tuple(d.shape[1:])
    step = max(1, MOMENT_CHUNK_BYTES // (8 * math.prod(frame)))
    if w is None:
        return chunks.sums(n, step, lambda idx: (d[idx[0]:idx[-1] + 1].sum(axis=0, dtype=xp.float64),), [frame])[0] / n

    def sums(idx):
        chunk = d[idx[0]:idx[-1] + 1]
        valid = xp.broadcast_to(w > 0, chunk.shape) if w.ndim == 2 else w[idx[0]:idx[-1] + 1] > 0
        return (xp.where(valid, chunk, 0.0).sum(axis=0, dtype=xp.float64), valid.sum(axis=0, dtype=xp.float64))
    total, count = chunks.sums(n, step, sums, [frame, frame])
    mean = total / xp.maximum(count, 1)
    valid = count > 0
    if not bool(valid.any()):
        raise ValueError("mask leaves no valid pixel")
    return xp.where(valid, mean, xp.where(valid, mean, 0.0).sum() / valid.sum())


def _back_propagate(field, kind, prop):
    """A^H field for the near-field propagator A of the model (MATH.md step 3): pad, F^-1 conj(H) F, crop."""
    xp = array_module(field)
    (ny, nx), (py, px) = field.shape, prop["padding"]
    h, _ = geometry.transfer_function(kind, (ny + 2 * py, nx + 2 * px), prop["z"], prop["wavelength"],
                                      prop["pixel_size"])
    padded = xp.pad(field, ((py, py), (px, px)))
    out = xp.fft.ifft2(xp.conj(xp.asarray(h)) * xp.fft.fft2(padded, norm="ortho"), norm="ortho")
    return out[py:py + ny, px:px + nx]


def probe_aperture(shape, radius_px, n_modes=1, *, defocus_phase=0.0, seed=0, mode_power=MODE_POWER,
                   dtype=np.complex64):
    """A uniformly lit circular aperture (a disk of ones) centred on (Ny//2, Nx//2), radius in pixels.

    The disk is `probes.aperture_px` (pixels with y^2 + x^2 <= radius_px^2 about the centre
    pixel; the centre pixel is always inside), optionally times the quadratic phase
    exp(i defocus_phase (r / radius_px)^2) of a defocused beam (`defocus_phase` radians at the
    rim; positive = diverging). Extra modes as in `probe_from_data`. The power is the number of
    pixels in the disk: fit it to the data with `fit_probe_scale`.

    Parameters
    ----------
    shape : int or (2,) int
        (Ny, Nx).
    radius_px : float > 0
        Radius in pixels.
    n_modes : int >= 1
    defocus_phase : float
        Radians at r = radius_px.
    seed, mode_power
        As in `probe_from_data`.
    dtype : complex64 or complex128

    Returns
    -------
    probe : (n_modes, Ny, Nx) dtype, NumPy
    """
    shape = integer_pair("shape", shape, low=1)
    radius = real_number("radius_px", radius_px, low=0.0, low_open=True)
    defocus_phase = real_number("defocus_phase", defocus_phase)
    n_modes = integer("n_modes", n_modes)
    mode_power = _mode_power(mode_power, n_modes)
    dtype = complex_dtype(dtype)
    if n_modes > shape[0] * shape[1]:
        raise ValueError(f"n_modes = {n_modes} exceeds the number of probe pixels {shape[0] * shape[1]}")
    p0 = probes.aperture_px(shape, radius, defocus_phase=defocus_phase, dtype=np.complex128)
    return _with_modes(p0[None], n_modes, mode_power, seed).astype(dtype)


def object_ones(shape, n_modes=1, dtype=np.complex64, *, seed=0):
    """A flat object: ones for mode 0, small seeded perturbations for the extra modes.

    Extra object modes are 1e-2 times unit-variance complex Gaussian noise (seeded): small
    enough to leave the model dominated by mode 0, non-zero so that they receive a gradient
    (an exactly zero mode has a zero gradient and would stay zero).

    Parameters
    ----------
    shape : int or (2,) int
        (H, W).
    n_modes : int >= 1
    dtype : complex64 or complex128
    seed : int >= 0

    Returns
    -------
    obj : (n_modes, H, W) dtype, NumPy
    """
    shape = integer_pair("shape", shape, low=1)
    n_modes = integer("n_modes", n_modes)
    dtype = complex_dtype(dtype)
    obj = np.ones((n_modes, *shape), dtype=np.complex128)
    if n_modes > 1:
        obj[1:] = 1e-2 * _random_complex(seed, (n_modes - 1, *shape))
    return obj.astype(dtype)


# Smoothness weight of object_from_data's least squares, relative to the data term: it decides the
# detail finer than the probe (which the moments cannot resolve) and fills the unlit pixels.
SMOOTHING = 1e-2
# Each least-squares solve stops at this relative residual, or after this many conjugate-gradient
# iterations: a starting guess needs no more (on the Siemens star, 1e-6 took 100+ iterations and 13 s
# for a result 2 % away from that of 1e-3).
SOLVER_TOLERANCE = 1e-3
SOLVER_ITERATIONS = 100


# Long for its docstring (what the moments measure); the steps are the helpers below.
def object_from_data(data, positions, probe, obj_shape, n_modes=1, *, mask=None, dtype=np.complex64, seed=0,
                     chunks=None):
    """A far-field starting object from the data's own first moments (differential phase contrast).

    The first moments of a far-field pattern are the Patterson function (the exit wave's
    autocorrelation) and its slope at the origin, and they measure the object directly, for any
    probe P (exactly for the phase; the amplitude's own contrast is a second-order term there):

    - the counts T_j are the |P|^2-weighted mean of the object's power |O|^2 over the patch of
      position j, relative to the open areas' counts (the 99th percentile of the T_j);
    - the centre of mass c_j (detector pixels, zero frequency at (Ny//2, Nx//2)) gives the
      |P|^2-weighted mean of the object's phase gradient: 2 pi (c_j - c_ref) / (Ny, Nx) rad per
      pixel, c_ref the median c_j (the probe's own tilt, and a scan-wide phase ramp, cannot be told
      apart from it; a ramp is no loss).

    |O|^2 and the phase are the fields whose weighted patch means best fit these, in least squares
    with a small smoothness penalty (`SMOOTHING`; conjugate gradients, the patch means as FFT
    correlations with |P|^2 at the rounded positions). The result resolves what the probe does:
    the large-scale phase and absorption that the gradient engine is slowest to find. A phase slope
    beyond pi per pixel is aliased in the patterns and cannot be read.

    Parameters
    ----------
    data : (J, Ny, Nx) real >= 0, NumPy
        Far-field patterns, centred.
    positions : (J, 2) float
        Top-left corners of the patches in object pixels.
    probe : (K, Ny, Nx) or (Ny, Nx) complex
        The starting probe: only its power summed over the modes is used.
    obj_shape : (2,) int
    n_modes : int >= 1
        Extra object modes are small seeded perturbations, as in `object_ones`.
    mask : (Ny, Nx) or (J, Ny, Nx) weights >= 0, optional
        Pixels without data take the mean pattern's value there, so they move no centre of mass.
    dtype : complex64 or complex128
    seed : int >= 0
    chunks : Chunks, optional
        How the pass over the data in chunks is combined (`IN_ORDER`; the engine under MPI passes
        `distributed.RankChunks`, so the ranks share it).

    Returns
    -------
    obj : (n_modes, H, W) dtype, NumPy
    """
    d = data if patterns.is_streamed(data) else np.asarray(data)
    if d.ndim != 3 or 0 in d.shape:
        raise ValueError(f"data must have shape (J, Ny, Nx), got {d.shape}")
    n, ny, nx = d.shape
    d = validation.data(d, n, (ny, nx), d.dtype if d.dtype.kind == "f" else np.float64)
    power = np.abs(np.asarray(probe)) ** 2
    power = power.sum(axis=0) if power.ndim == 3 else power
    if power.shape != (ny, nx) or not power.sum() > 0:
        raise ValueError(f"probe must be a non-zero (K, {ny}, {nx}) or ({ny}, {nx}) field, got shape "
                         f"{np.shape(probe)}")
    shape = integer_pair("obj_shape", obj_shape, low=1)
    pos = validation.positions(positions, (ny, nx), shape)
    if len(pos) != n:
        raise ValueError(f"{len(pos)} positions for {n} patterns")
    n_modes = integer("n_modes", n_modes)
    dtype = complex_dtype(dtype)
    counts, centre = _first_moments(d, validation.mask(mask, n, (ny, nx), np.float64), chunks or IN_ORDER)
    if not bool((counts > 0).any()):
        raise ValueError("every pattern is zero: no object can be derived from the data")
    means = PatchMeans(pos, power, shape)
    transmitted = counts / np.quantile(counts, 0.99)
    slope = 2 * np.pi * (centre - np.median(centre, axis=0)) / np.array([ny, nx])        # rad / pixel, (y, x)
    object_power = _least_squares(means, transmitted, gradient=False, start=float(np.mean(transmitted)))
    phase = _least_squares(means, slope, gradient=True, start=0.0)
    obj = np.empty((n_modes, *shape), dtype=np.complex128)
    obj[0] = np.sqrt(np.clip(object_power, 1e-4, None)) * np.exp(1j * phase)
    if n_modes > 1:
        obj[1:] = 1e-2 * _random_complex(seed, (n_modes - 1, *shape))
    return obj.astype(dtype)


def _first_moments(d, w, chunks=IN_ORDER):
    """Total counts (J,) and centre of mass (J, 2) of each pattern, masked pixels filled with the mean."""
    n, ny, nx = d.shape
    fill = None if w is None else _mean_pattern(d, w, chunks)
    yy, xx = np.arange(ny, dtype=np.float64), np.arange(nx, dtype=np.float64)
    step = max(1, MOMENT_CHUNK_BYTES // (ny * nx * 8))

    def moments(idx):
        start, stop = int(idx[0]), int(idx[-1]) + 1
        chunk = d[start:stop]
        if w is not None:
            chunk = np.where(np.broadcast_to(w if w.ndim == 2 else w[start:stop], chunk.shape) > 0, chunk, fill)
        total = chunk.sum(axis=(1, 2), dtype=np.float64)
        safe = np.where(total > 0, total, 1.0)
        centre = np.stack([chunk.sum(axis=2, dtype=np.float64) @ yy / safe,
                           chunk.sum(axis=1, dtype=np.float64) @ xx / safe], axis=1)
        return total[:, None], centre
    counts, centre = chunks.rows(n, step, moments, (1, 2))
    counts = counts[:, 0]
    if (counts > 0).any():
        centre[counts <= 0] = np.median(centre[counts > 0], axis=0)      # an empty pattern: no slope
    return counts, centre


def _diff(f):
    """Forward differences (2, H, W) with a zero last row / column (mirrored edges)."""
    g = np.zeros((2, *f.shape))
    g[0, :-1], g[1, :, :-1] = np.diff(f, axis=0), np.diff(f, axis=1)
    return g


def _diff_adjoint(g):
    out = np.zeros(g.shape[1:])
    out[1:] += g[0, :-1]
    out[:-1] -= g[0, :-1]
    out[:, 1:] += g[1, :, :-1]
    out[:, :-1] -= g[1, :, :-1]
    return out


def _least_squares(means, values, *, gradient, start):
    """The field f minimising |S f - values|^2 + lambda |D f|^2, or with gradient=True the field whose
    gradient's patch means fit the (J, 2) slopes: |S D_y f - v_y|^2 + |S D_x f - v_x|^2 + lambda |D f|^2.
    lambda = SMOOTHING x the data term's scale, so the fit is the same for any probe power or scan;
    conjugate gradients from `start`, preconditioned by the smoothness term's cosine-transform inverse."""
    h, w = means.shape
    unit = float(np.mean(means.adjoint(np.ones(len(values)))))    # data term's scale on a lit pixel
    lam = SMOOTHING * unit

    if gradient:
        def data_term(f):
            g = _diff(f)
            return _diff_adjoint(np.stack([means.adjoint(means(g[0])), means.adjoint(means(g[1]))]))
        rhs = _diff_adjoint(np.stack([means.adjoint(values[:, 0]), means.adjoint(values[:, 1])]))
    else:
        data_term = (lambda f: means.adjoint(means(f)))
        rhs = means.adjoint(values)
    laplace = (2 - 2 * np.cos(np.pi * np.arange(h) / h))[:, None] + (2 - 2 * np.cos(np.pi * np.arange(w) / w))[None]
    scale = (unit * laplace if gradient else unit) + lam * laplace
    if gradient:
        scale[0, 0] = np.inf                                      # the phase's free offset
    inverse = 1.0 / scale

    def normal(v):
        f = v.reshape(h, w)
        return (data_term(f) + lam * _diff_adjoint(_diff(f))).ravel()

    def precondition(v):
        return scipy.fft.idctn(scipy.fft.dctn(v.reshape(h, w), norm="ortho") * inverse, norm="ortho").ravel()

    size = h * w
    op = scipy.sparse.linalg.LinearOperator((size, size), matvec=normal, dtype=np.float64)
    pre = scipy.sparse.linalg.LinearOperator((size, size), matvec=precondition, dtype=np.float64)
    f, _ = scipy.sparse.linalg.cg(op, rhs.ravel(), x0=np.full(size, start), M=pre, rtol=SOLVER_TOLERANCE,
                                  maxiter=SOLVER_ITERATIONS)
    f = f.reshape(h, w)
    return f - f.mean() if gradient else f


def fit_probe_scale(obj, probe, positions, data, mask=None, **forward_kwargs):
    """The probe scaled so that the modelled intensities best fit the data (least squares).

    s = argmin sum w (s I - d)^2 = sum w I d / sum w I^2 over all patterns and pixels, with
    I = cuptycho.forward(obj, probe, positions, **forward_kwargs); returns probe * sqrt(s)
    (intensities are quadratic in the probe). Sums are accumulated in float64 on the data's
    device; s is read back as one scalar to check it.

    Parameters
    ----------
    obj, probe, positions
        As for `cuptycho.forward` (probe (K, Ny, Nx) or (Ny, Nx)).
    data : (J, Ny, Nx) real >= 0
    mask : (Ny, Nx) or (J, Ny, Nx) bool or weights >= 0, optional
    **forward_kwargs
        propagator, z, wavelength, pixel_size, padding, backend.

    Returns
    -------
    probe : the shape, dtype and namespace of probe

    Raises
    ------
    ValueError
        Bad input, or a model that predicts no intensity where the mask is valid.
    """
    intensity = forward(obj, probe, positions, **forward_kwargs)
    n, patch = intensity.shape[0], intensity.shape[-2:]
    xp = array_module(intensity)
    d = xp.asarray(validation.data(data, n, patch, intensity.dtype))      # the model's precision: no float64 copy
    w = validation.mask(mask, n, patch, intensity.dtype)
    return scaled_to_data(xp.asarray(probe), intensity, d, None if w is None else xp.asarray(w))


def scale_sums(intensity, data, mask=None) -> tuple[float, float]:
    """(sum w I d, sum w I^2) of one chunk of patterns (J, Ny, Nx) on one device: the products in the
    arrays' own precision (no float64 copy of the chunk), each sum accumulated in float64."""
    xp = array_module(intensity)
    wi = intensity if mask is None else mask * intensity
    return float(xp.sum(wi * data, dtype=xp.float64)), float(xp.sum(wi * intensity, dtype=xp.float64))


def scaled_by(probe, numerator: float, denominator: float):
    """`probe` * sqrt(s), s = numerator / denominator (`scale_sums` over all chunks): the least-squares
    intensity scale, intensities being quadratic in the probe."""
    if not denominator > 0:
        raise ValueError("the model predicts no intensity on the valid pixels; cannot fit a probe scale")
    s = numerator / denominator
    return (probe * np.sqrt(s).astype(np.finfo(probe.dtype).dtype)).astype(probe.dtype)


def scaled_to_data(probe, intensity, data, mask=None):
    """`probe` * sqrt(s) with s = sum w I d / sum w I^2 (the least-squares intensity scale), for
    checked arrays on one device: the modelled `intensity` and `data` (J, Ny, Nx), `mask` (Ny, Nx)
    or (J, Ny, Nx) weights or None (`scale_sums` and `scaled_by` in one chunk)."""
    return scaled_by(probe, *scale_sums(intensity, data, mask))
