"""Checks of user input at the public boundary: one clear ValueError naming the argument.

Nothing here repairs input. Each function returns the array in the layout the model uses
(e.g. a 2-D probe becomes (1, Ny, Nx)) and raises on anything it cannot use as given. Three
families, the only argument checks of the package: arrays (`field`, `positions`, `data`,
`mask`), scalars and pairs (`real_number`, `integer`, `integer_pair`, `choice`, ...), and the
kinds of option values (`Bool`, `Int`, `Real`, `Choice`, `Pair`, ..., `table_value`) with which
`cuptycho.settings` declares every option of a run.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from dataclasses import dataclass, field as dataclass_field
from typing import Callable

import numpy as np

from . import geometry
from .backend import array_module, is_streamed, to_host
from .reference import LOSSES

COMPLEX_DTYPES = (np.dtype(np.complex64), np.dtype(np.complex128))
BACKENDS = ("auto", "numpy", "cpu", "cuda")


def _asarray(arr):
    """The argument as an array of its own namespace (CuPy arrays stay on their device)."""
    xp = array_module(arr)
    return xp, xp.asarray(arr)


def _real_numbers(arr) -> bool:
    """True for integer or floating arrays (not bool, complex or object)."""
    return arr.dtype != bool and (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer))


def _finite(name, arr):
    xp = array_module(arr)
    if not bool(xp.all(xp.isfinite(arr))):
        bad = xp.argwhere(~xp.isfinite(arr))[0]
        raise ValueError(f"{name} contains NaN or Inf (first at index {tuple(int(i) for i in bad)})")


def field(name, arr, *, dtype=None):
    """A complex (M, Ny, Nx) stack from a 2-D or 3-D complex64/complex128 array."""
    xp, arr = _asarray(arr)
    if arr.dtype not in COMPLEX_DTYPES:
        raise ValueError(f"{name} must be complex64 or complex128, got dtype {arr.dtype}")
    if dtype is not None and arr.dtype != dtype:
        raise ValueError(f"{name} has dtype {arr.dtype} but obj has dtype {dtype}; use one precision for both")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or 0 in arr.shape:
        raise ValueError(f"{name} must have shape (modes, Ny, Nx) or (Ny, Nx), got {arr.shape}")
    _finite(name, arr)
    return xp.ascontiguousarray(arr)


def complex_image(name, arr):
    """A complex 2-D NumPy array (one field to build modes from); else ValueError naming `name`."""
    arr = np.asarray(arr)
    if arr.ndim != 2 or not np.iscomplexobj(arr):
        raise ValueError(f"{name} must be a complex 2-D array, got dtype {arr.dtype} with shape {arr.shape}")
    return arr


def positions(arr, patch_shape, obj_shape):
    """(J, 2) float64 positions on the host whose bilinear taps all lie inside the object."""
    arr = to_host(arr)
    if not _real_numbers(arr):
        raise ValueError(f"positions must be real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ValueError(f"positions must have shape (J, 2) with (y, x) per row, got {arr.shape}")
    arr = arr.astype(np.float64)
    _finite("positions", arr)
    (ny, nx), (h, w) = patch_shape, obj_shape[-2:]
    if h <= ny or w <= nx:
        raise ValueError(f"obj ({h}, {w}) must be larger than the probe ({ny}, {nx}) by at least one pixel "
                         "in each direction for bilinear sampling")
    limit = np.array([h - ny, w - nx], dtype=np.float64)
    outside = np.any((arr < 0) | (arr > limit), axis=1)
    if np.any(outside):
        j = int(np.argmax(outside))
        raise ValueError(f"positions[{j}] = ({arr[j, 0]:g}, {arr[j, 1]:g}) puts the patch outside the object: "
                         f"y must lie in [0, {h - ny}] and x in [0, {w - nx}] for an obj of ({h}, {w}) "
                         f"and a probe of ({ny}, {nx}); {int(outside.sum())} position(s) are outside")
    return arr


# Patterns checked at once on the host: the checks' boolean temporaries stay this small, not J x Ny x Nx.
CHECK_CHUNK_BYTES = 1 << 26


def data(arr, n_patterns, patch_shape, real):
    """Measured intensities (J, Ny, Nx), finite and non-negative, cast to the field precision (no copy when
    they already are). Streamed patterns (`cuptycho.patterns`) were checked as they were opened: their
    shape is checked, and they are returned as they are (rows are cast where they are read)."""
    if is_streamed(arr):
        if arr.shape != (n_patterns, *patch_shape):
            raise ValueError(f"data must have shape {(n_patterns, *patch_shape)} (one pattern per position, "
                             f"probe-sized), got {arr.shape}")
        return arr
    xp, arr = _asarray(arr)
    if not _real_numbers(arr):
        raise ValueError(f"data must be real intensities, got dtype {arr.dtype}")
    expected = (n_patterns, *patch_shape)
    if arr.shape != expected:
        raise ValueError(f"data must have shape {expected} (one pattern per position, probe-sized), got {arr.shape}")
    step = len(arr) if xp is not np else max(1, CHECK_CHUNK_BYTES // max(1, arr[:1].nbytes))
    n_negative = 0
    for start in range(0, len(arr), step):
        chunk = arr[start:start + step]
        if not bool(xp.all(xp.isfinite(chunk))):
            bad = xp.argwhere(~xp.isfinite(chunk))[0]
            raise ValueError(f"data contains NaN or Inf (first at index {(start + int(bad[0]), *map(int, bad[1:]))})")
        n_negative += int(xp.count_nonzero(chunk < 0))
    if n_negative:
        raise ValueError(f"data has {n_negative} negative value(s) (min {float(arr.min()):g}); "
                         "intensities must be >= 0 (clip or mask them before calling)")
    return xp.ascontiguousarray(arr, dtype=real)


def mask(arr, n_patterns, patch_shape, real):
    """Detector weights, (Ny, Nx) or (J, Ny, Nx), finite and >= 0; None stays None (all ones). Streamed
    weights (a streamed file's saturation mask, 0 or 1 by construction) are returned as they are."""
    if arr is None:
        return None
    if is_streamed(arr):
        if arr.shape != (n_patterns, *patch_shape):
            raise ValueError(f"mask must have shape {(n_patterns, *patch_shape)}, got {arr.shape}")
        return arr
    xp, arr = _asarray(arr)
    if not (arr.dtype == bool or _real_numbers(arr)):
        raise ValueError(f"mask must be boolean or real weights, got dtype {arr.dtype}")
    if arr.shape not in (tuple(patch_shape), (n_patterns, *patch_shape)):
        raise ValueError(f"mask must have shape {tuple(patch_shape)} or {(n_patterns, *patch_shape)}, got {arr.shape}")
    arr = xp.ascontiguousarray(arr, dtype=real)
    _finite("mask", arr)
    if bool(xp.any(arr < 0)):
        raise ValueError("mask weights must be >= 0 (1 = valid pixel, 0 = ignored)")
    return arr


def detector_scale(arr, n_patterns, real):
    """Intensity scale per pattern (J,), finite and > 0; None stays None (all ones)."""
    if arr is None:
        return None
    xp, arr = _asarray(arr)
    if not _real_numbers(arr):
        raise ValueError(f"scale must be real (one intensity factor per pattern), got dtype {arr.dtype}")
    if arr.shape != (n_patterns,):
        raise ValueError(f"scale must have shape {(n_patterns,)} (one factor per pattern), got {arr.shape}")
    _finite("scale", arr)
    if bool(xp.any(arr <= 0)):
        raise ValueError(f"scale must be > 0 for every pattern (min {float(arr.min()):g})")
    return xp.ascontiguousarray(arr, dtype=real)


def background(arr, n_patterns, patch_shape, real):
    """Detector background, (Ny, Nx) or (J, Ny, Nx) in detector order, finite and >= 0; None stays None."""
    if arr is None:
        return None
    xp, arr = _asarray(arr)
    if not _real_numbers(arr):
        raise ValueError(f"background must be real intensities, got dtype {arr.dtype}")
    if arr.shape not in (tuple(patch_shape), (n_patterns, *patch_shape)):
        raise ValueError(f"background must have shape {tuple(patch_shape)} or {(n_patterns, *patch_shape)}, "
                         f"got {arr.shape}")
    _finite("background", arr)
    if bool(xp.any(arr < 0)):
        raise ValueError(f"background must be >= 0 (min {float(arr.min()):g}): it is added to the modelled "
                         "intensities")
    return xp.ascontiguousarray(arr, dtype=real)


def real_number(name, value, *, low=None, high=None, low_open=False, high_open=False):
    """A finite real scalar within the given bounds, as float; else ValueError naming `name`."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if np.iscomplexobj(value) or not np.isfinite(v):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    if low is not None and (v <= low if low_open else v < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (v >= high if high_open else v > high):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")
    return v


def positive_number(name, value) -> float:
    """A finite real scalar > 0 (a wavelength, distance, energy), as float; else ValueError naming `name`."""
    return real_number(name, value, low=0, low_open=True)


def integer(name, value, low=1):
    """An integer >= low (bools rejected), as int; else ValueError naming `name`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def integer_pair(name, value, low=1) -> tuple[int, int]:
    """(a, b) integers >= low from one integer (used for both) or a pair; else ValueError naming `name`."""
    arr = np.asarray(value).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.size != 2 or arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer) or np.any(arr < low):
        kind = {1: "positive integer", 0: "non-negative integer"}.get(low, f"integer >= {low}")
        raise ValueError(f"{name} must be a {kind} or a pair of them, got {value!r}")
    return int(arr[0]), int(arr[1])


def value_range(name, value, *, low=None):
    """(lo, hi) finite with lo <= hi (and lo >= low)."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair of real numbers, got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
        raise ValueError(f"{name} must be a finite (low, high) pair with low <= high, got {value!r}")
    if low is not None and lo < low:
        raise ValueError(f"{name} must lie in [{low}, inf), got {value!r}")
    return lo, hi


def complex_dtype(dtype):
    """np.dtype(dtype) if it is complex64 or complex128."""
    dt = np.dtype(dtype)
    if dt not in COMPLEX_DTYPES:
        raise ValueError(f"dtype must be complex64 or complex128, got {dt}")
    return dt


def seed_sequence(value):
    """A numpy SeedSequence from a non-negative int (a SeedSequence passes through unchanged)."""
    if isinstance(value, np.random.SeedSequence):
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"seed must be a non-negative integer (or a numpy SeedSequence), got {value!r}")
    return np.random.SeedSequence(int(value))


def length_pair(name, value) -> tuple[float, float]:
    """(dy, dx) positive finite floats from a scalar or a pair (pixel sizes); else ValueError naming `name`.

    The one implementation is `geometry.pixel_pair` (the ground floor needs it and cannot import
    this module); this is its spelling among the other checkers, name first.
    """
    return geometry.pixel_pair(value, name)


def choice(name, value, allowed):
    """`value` if it is one of the strings `allowed`; else ValueError naming `name`."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def loss_name(value):
    return choice("loss", value, LOSSES)


def propagation(propagator, z, wavelength, pixel_size, padding):
    """Checked propagator keywords as a dict for `reference.make_propagator`."""
    choice("propagator", propagator, geometry.PROPAGATORS)
    pad = np.asarray(padding).reshape(-1)
    if pad.size == 1:
        pad = np.repeat(pad, 2)
    if pad.size != 2 or not np.issubdtype(pad.dtype, np.integer) or np.any(pad < 0):
        raise ValueError(f"padding must be a non-negative integer or a (py, px) pair of them, got {padding!r}")
    if propagator not in geometry.Z_PROPAGATORS:
        if z is not None:
            raise ValueError(f"z is only used by the {geometry.Z_PROPAGATORS} propagators, not by {propagator!r}")
        if np.any(pad):
            raise ValueError(f"padding is only used by the {geometry.Z_PROPAGATORS} propagators")
        return {"padding": (0, 0)}
    for name, value in (("z", z), ("wavelength", wavelength)):
        if value is None:
            raise ValueError(f"the {propagator} propagator needs {name}")
        if not np.isscalar(value) or not np.isfinite(value) or np.iscomplexobj(value):
            raise ValueError(f"{name} must be a finite real scalar, got {value!r}")
    if wavelength <= 0:
        raise ValueError(f"wavelength must be positive, got {wavelength!r}")
    if pixel_size is None:
        raise ValueError(f"the {propagator} propagator needs pixel_size (the sample-plane pixel size)")
    return {"z": float(z), "wavelength": float(wavelength), "pixel_size": geometry.pixel_pair(pixel_size),
            "padding": (int(pad[0]), int(pad[1]))}


def backend(name):
    return choice("backend", name, BACKENDS)


# --------------------------------------------------------------------------- option values
# The kinds of `cuptycho.settings`: each option of the schema declares one.
# A kind checks one value and returns it converted to its stored form (TOML arrays -> tuples where
# the option holds a tuple). `Checker` says how a key is named in messages: quoted in a file
# (``'probe.lr' must be positive``), bare for Python (``probe.lr must be positive``).

def _typename(value):
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            tuple: "an array", dict: "a table"}.get(type(value), type(value).__name__)


class Checker:
    """quoted: keys as a file names them; elsewhere: {table: keys}, to say where a misplaced key belongs."""

    def __init__(self, quoted: bool, elsewhere=None):
        self.quoted, self.elsewhere = quoted, elsewhere or {}

    def name(self, key):
        return f"'{key}'" if self.quoted else key

    def fail(self, key, message):
        raise ValueError(f"{self.name(key)} {message}")

    def wrong(self, key, expected, value):
        self.fail(key, f"must be {expected}, got {_typename(value)} {value!r}")

    def unknown(self, prefix, table, allowed, *, hints=None, elsewhere=None, noun=None):
        """ValueError for the first key of `table` not in `allowed`, with the closest known key."""
        bad = [k for k in table if k not in allowed]
        if not bad:
            return
        if not self.quoted and noun:                  # Python: all of them at once
            raise ValueError(f"unknown {noun}(s) {sorted(bad)}; known: {list(allowed)}")
        k = bad[0]
        name = f"{prefix}.{k}" if prefix else k
        if hints and k in hints:
            hint = f" ({hints[k]})"
        elif close := difflib.get_close_matches(k, list(allowed), n=1, cutoff=0.6):
            hint = f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)"
        elif homes := [t for t, keys in (elsewhere or {}).items() if k in keys and t != prefix]:
            hint = f" ('{k}' belongs in {', '.join(f'[{t}]' for t in homes)})"
        else:
            hint = f" (known keys{' of [' + prefix + ']' if prefix else ''}: {', '.join(sorted(allowed))})"
        raise ValueError(f"unknown key '{name}'{hint}")


@dataclass(frozen=True)
class Bool:
    def __call__(self, c, key, v):
        if not isinstance(v, bool):
            c.wrong(key, "true or false", v)
        return v


@dataclass(frozen=True)
class Int:
    low: int | None = None

    def __call__(self, c, key, v):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            c.wrong(key, "an integer", v)
        if self.low is not None and v < self.low:
            c.fail(key, f"must be >= {self.low}, got {v}")
        return int(v)


@dataclass(frozen=True)
class Real:
    low: float | None = None
    positive: bool = False

    def __call__(self, c, key, v):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            c.wrong(key, "a number", v)
        v = float(v)
        if math.isnan(v):
            c.fail(key, "must be a number, got nan")
        if self.positive and not v > 0:
            c.fail(key, f"must be positive, got {v!r}")
        if self.low is not None and v < self.low:
            c.fail(key, f"must be >= {self.low}, got {v!r}")
        return v


@dataclass(frozen=True)
class Choice:
    choices: tuple

    def __call__(self, c, key, v):
        if not isinstance(v, str):
            c.wrong(key, "a string", v)
        if v not in self.choices:
            close = difflib.get_close_matches(v, self.choices, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            c.fail(key, f"must be one of {', '.join(repr(x) for x in self.choices)}, got {v!r}{hint}")
        return v


@dataclass(frozen=True)
class Text:
    def __call__(self, c, key, v):
        if not isinstance(v, str):
            c.wrong(key, "a string", v)
        return v


@dataclass(frozen=True)
class Pair:
    """Two values of `item`; `ordered`: low <= high; stored as a tuple or (data options) a list."""
    item: object = Real()
    ordered: bool = False
    as_tuple: bool = True

    def __call__(self, c, key, v):
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            c.wrong(key, f"a pair of {'integers' if isinstance(self.item, Int) else 'numbers'} [a, b]", v)
        out = [self.item(c, f"{key}[{i}]", x) for i, x in enumerate(v)]
        if self.ordered and out[1] < out[0]:
            c.fail(key, f"must be [low, high] with low <= high, got {list(v)!r}")
        return tuple(out) if self.as_tuple else out


@dataclass(frozen=True)
class ScalarOrPair:
    """One value for both axes or a [y, x] pair (data options: kept as the file gives them)."""
    item: object

    def __call__(self, c, key, v):
        return Pair(self.item, as_tuple=False)(c, key, v) if isinstance(v, (list, tuple)) else self.item(c, key, v)


@dataclass(frozen=True)
class Custom:
    """A kind written as a function (c, key, value) -> value, for options with a grammar of their own."""
    check: Callable

    def __call__(self, c, key, v):
        return self.check(c, key, v)


@dataclass(frozen=True)
class Maybe:
    """`kind`, or None (the option is off); TOML has no null: an absent key keeps None."""
    kind: object

    def __call__(self, c, key, v):
        return None if v is None else self.kind(c, key, v)


def option(default, kind, *, example=None, python_only=False, **meta):
    """A dataclass field whose metadata declares the option's kind.

    example : a valid non-default value (for options whose default is None or a factory), used by
        the schema's own tests; python_only : the option is not a TOML key (a callable, an array).
    Other metadata: `engines` (the engines that use a [pie] key), `within` ((low, high) checked by
    `Config.check`), `defaults` (per-engine defaults of a [pie] key)."""
    meta = {"kind": kind, "example": example, "python_only": python_only, **meta}
    if callable(default):                          # a factory (dict, a lambda making a Group)
        return dataclass_field(default_factory=default, metadata=meta)
    return dataclass_field(default=default, metadata=meta)


def fields_of(cls, *, toml=False):
    """The option fields of a schema dataclass (`toml`: without the Python-only ones)."""
    return [f for f in dataclasses.fields(cls) if "kind" in f.metadata and not (toml and f.metadata["python_only"])]


def keys_of(cls, *, toml=True):
    return tuple(f.name for f in fields_of(cls, toml=toml))


def table_value(c, key, cls, value):
    """A dict of `cls`'s keys, each checked by its kind; then `cls.validate` for what spans keys."""
    if not isinstance(value, dict):
        c.wrong(key, "a table", value)
    c.unknown(key, value, keys_of(cls, toml=c.quoted), hints=getattr(cls, "HINTS", None),
              elsewhere=c.elsewhere, noun=getattr(cls, "NOUN", f"{key} setting"))
    kinds = {f.name: f.metadata["kind"] for f in fields_of(cls)}
    out = {k: kinds[k](c, f"{key}.{k}", v) for k, v in value.items()}
    if hasattr(cls, "validate"):
        cls.validate(c, key, out)
    return out


def built(c, key, build):
    """Check values that span keys by building what they configure (a regulariser)."""
    try:
        build()
    except (ValueError, TypeError) as err:
        c.fail(key, f"is not valid: {err}")


def table(cls, value):
    """The typed view of an option table: `cls` with the given keys over its defaults (None: None)."""
    if value is None:
        return None
    return value if isinstance(value, cls) else cls(**value)


@dataclass(frozen=True)
class TableOf:
    cls: type

    def __call__(self, c, key, v):
        return table_value(c, key, self.cls, v)


# --------------------------------------------------------------------------- sizes a scan implies
# A scan's patches cover at most J Ny Nx object pixels (no overlap at all); a raster without overlap
# spans at most about 4 times that, real scans (overlap 60-80 %) a small fraction. Beyond this factor
# a position is wrong (units, a stray value), not a sparse scan; the object would be mostly unlit.
SCAN_COVERAGE = 16


def _length(metres) -> str:
    for unit, scale in (("m", 1.0), ("mm", 1e-3), ("um", 1e-6)):
        if metres >= scale:
            return f"{metres / scale:.3g} {unit}"
    return f"{metres / 1e-9:.3g} nm"


def scan_extent(arr, patch_shape, *, pixel_size=None):
    """(J, 2) positions (object pixels) whose patches span no more than `SCAN_COVERAGE` times the
    pixels the J patterns measure; else ValueError naming the positions far from the median (with
    their distance in metres when `pixel_size` is known), or the spacing when none stands apart."""
    pos = np.asarray(arr, dtype=np.float64)
    _finite("positions", pos)
    (ny, nx), j = patch_shape, pos.shape[0]
    span = np.ptp(pos, axis=0)
    area, measured = (span[0] + ny) * (span[1] + nx), j * ny * nx
    if area <= SCAN_COVERAGE * measured:
        return pos
    head = (f"the scan spans {span[0]:.4g} x {span[1]:.4g} object pixels: its patches' extent of {area:.3g} pixels "
            f"is more than {SCAN_COVERAGE} times the {measured:.3g} pixels its {j} pattern(s) of {ny} x {nx} "
            "measure (a scan without any overlap spans at most about 4 times)")
    centre = np.median(pos, axis=0)
    offset = pos - centre
    dist = np.hypot(offset[:, 0], offset[:, 1])
    reach = math.sqrt(SCAN_COVERAGE * measured) / 2        # half the side of the widest square scan allowed
    far = [int(i) for i in np.argsort(-dist, kind="stable") if dist[i] > reach]
    if len(far) * 2 > j:                                 # most of the scan: a scale, not a stray position
        raise ValueError(f"{head}; no position stands apart: neighbours are about {math.sqrt(area / j):.3g} px apart "
                         f"for patterns of {ny} x {nx}. Check the positions' units and the pixel size")
    try:
        step = None if pixel_size is None else np.asarray(geometry.pixel_pair(pixel_size))
    except ValueError:                                     # checked where it is used; here only a courtesy
        step = None
    items = []
    for i in far[:3]:
        metres = "" if step is None else f" ({_length(float(np.hypot(*(offset[i] * step))))})"
        items.append(f"positions[{i}] = ({pos[i, 0]:.7g}, {pos[i, 1]:.7g}) px, {dist[i]:.4g} px{metres} "
                     "from the median position")
    more = f" and {len(far) - 3} more" if len(far) > 3 else ""
    raise ValueError(f"{head}; {len(far)} position(s) lie far from the others: {'; '.join(items)}{more}. Check the "
                     "positions (their units, the pixel size) or leave those patterns out (frames)")


def margin(value, patch_shape) -> int:
    """The object's margin around a derived scan: an integer in [0, SCAN_COVERAGE x the probe's size]."""
    m = integer("margin", value, low=0)
    top = SCAN_COVERAGE * max(patch_shape)
    if m > top:
        raise ValueError(f"margin = {m} pixels is more than {SCAN_COVERAGE} times the probe's {max(patch_shape)}: "
                         "an object border that size is never lit")
    return m


def object_extent(obj_shape, n_patterns, patch_shape, margin_px=0) -> tuple[int, int]:
    """An explicit (H, W): positive integers, no more than `SCAN_COVERAGE` times the pixels the patterns
    measure plus the probe and margin (the rest could never be lit); else ValueError naming obj_shape."""
    h, w = integer_pair("obj_shape", obj_shape)
    ny, nx = patch_shape
    measured = n_patterns * ny * nx
    allowed = SCAN_COVERAGE * measured + (ny + 2 * margin_px + 1) * (nx + 2 * margin_px + 1)
    if h * w > allowed:
        raise ValueError(f"obj_shape ({h}, {w}) is {h * w:.3g} pixels, more than {SCAN_COVERAGE} times the "
                         f"{measured:.3g} pixels its {n_patterns} pattern(s) of {ny} x {nx} measure (plus the probe "
                         "and margin): most of it could never be lit. Give a smaller obj_shape, or none to size the "
                         "object from the scan")
    return h, w
