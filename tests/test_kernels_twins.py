"""Every kernel launcher against its same-named reference twin, and the dot test of every fwd/adj pair.

One table drives both: ENTRIES maps each launcher entry (a public function of
cuptycho/launchers/*.py that calls `launch`) to its input cases, the output buffers its twin
does not take and the arguments it writes in place; an entry's `dot` builds the dot test of a
linear pair in each of its linear arguments. A launcher added without a row here fails
test_table_covers_every_launcher; a twin whose parameters drift from its launcher's fails
test_twin_signature_matches_the_launcher.

Calling convention (cuptycho/reference.py's module docstring): the twin takes the launcher's
arguments less the output buffers, never writes them, and returns the launcher's result followed
by the new value of each argument the launcher writes in place. `run` puts a kernel's outputs in
that layout, so kernel and twin outputs compare element by element. Special cases (accumulating
into given buffers, thread-count determinism, argument errors, the raw-FFT conventions of the
whole pipeline) stay in the per-file tests.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from typing import Callable

import numpy as np
import pytest
from checks import DOT_TOL, assert_adjoint, random_complex
from conftest import assert_kernel_close, to_device, to_host

import cuptycho.launchers
from cuptycho import reference

DTYPES = [np.complex64, np.complex128]


def discover_launchers():
    """name -> launcher: the public functions of cuptycho/launchers/*.py that call `launch`."""
    found = {}
    for info in pkgutil.iter_modules(cuptycho.launchers.__path__):
        module = importlib.import_module(f"{cuptycho.launchers.__name__}.{info.name}")
        for name, fn in vars(module).items():
            if (not info.name.startswith("_") and not name.startswith("_") and inspect.isfunction(fn)
                    and fn.__module__ == module.__name__ and "launch" in fn.__code__.co_names):
                found[name] = fn
    return found


LAUNCHERS = discover_launchers()


# --------------------------------------------------------------------------- cases
# A case builder takes (dtype, rng) and returns (args, kwargs), given to the launcher and the twin.

def _real(dtype):
    return reference.real_dtype(dtype)


def _positions(rng, n, obj_hw, patch):
    """Random positions plus exact crops at the origin, the far edge (clamped taps) and an interior integer."""
    limit = np.array(obj_hw) - np.array(patch)
    pos = rng.uniform(0, 1, size=(n, 2)) * limit
    pos[0], pos[1], pos[2] = 0, limit, (3, 5)
    return pos


OBJ, PATCH, N_POS = (2, 37, 41), (12, 9), 11             # sampling: odd sizes, Mo = 2


def patch_fwd_case(dtype, rng):
    return (random_complex(rng, OBJ, dtype), _positions(rng, N_POS, OBJ[1:], PATCH), PATCH), {}


def patch_adj_case(dtype, rng):
    return (random_complex(rng, (N_POS, OBJ[0], *PATCH), dtype), _positions(rng, N_POS, OBJ[1:], PATCH), OBJ), {}


def patch_posgrad_case(dtype, rng):
    obj, pos = random_complex(rng, OBJ, dtype), _positions(rng, N_POS, OBJ[1:], PATCH)
    return (obj, pos, random_complex(rng, (N_POS, OBJ[0], *PATCH), dtype)), {}


EW_OBJ, EW_PROBE, EW_POS = (2, 29, 23), (3, 10, 7), 6     # exit waves: Mo = 2, K = 3


def _exitwave_inputs(dtype, rng):
    return (random_complex(rng, EW_OBJ, dtype), random_complex(rng, EW_PROBE, dtype),
            _positions(rng, EW_POS, EW_OBJ[1:], EW_PROBE[1:]))


def exitwave_fwd_case(padding):
    def case(dtype, rng):
        return _exitwave_inputs(dtype, rng), dict(padding=padding)
    return case


def exitwave_adj_case(padding):
    def case(dtype, rng):
        obj, probe, pos = _exitwave_inputs(dtype, rng)
        buf = (EW_POS, EW_OBJ[0], EW_PROBE[0], EW_PROBE[1] + 2 * padding[0], EW_PROBE[2] + 2 * padding[1])
        return (obj, probe, pos, random_complex(rng, buf, dtype)), dict(padding=padding)   # junk in the padding
    return case


# the two detector geometries of the model: far field (unshifted raw FFT: shift N//2, scale 1/n,
# odd window) and near field (padded buffer, no shift, scale 1, even window)
FAR = dict(window=(11, 9), padding=(0, 0), shift=(5, 4), intensity_scale=1 / 99)
NEAR = dict(window=(12, 10), padding=(2, 3), shift=(0, 0), intensity_scale=1.0)


def _waves(geometry, dtype, rng, n_pos=5, modes=(2, 2)):
    """Waves whose window intensities are ~50 photons, and the kernel's geometry keywords."""
    (ny, nx), (py, px) = geometry["window"], geometry["padding"]
    amp = 5 / np.sqrt(geometry["intensity_scale"] * np.prod(modes))
    waves = (amp * random_complex(rng, (n_pos, *modes, ny + 2 * py, nx + 2 * px), np.complex128)).astype(dtype)
    return waves, {k: geometry[k] for k in ("padding", "shift", "intensity_scale")}


def likelihood_case(loss, geometry, mask_per_pattern):
    def case(dtype, rng):
        waves, kw = _waves(geometry, dtype, rng)
        model = reference.intensity(waves.astype(np.complex128), **kw)
        data = rng.poisson(model).astype(_real(dtype))
        data[:, 0, :3] = 0                                    # zeros whatever the draw (weighted's d = 0 branch)
        mask = (rng.uniform(size=data.shape if mask_per_pattern else data.shape[1:]) > 0.2).astype(_real(dtype))
        return (waves, data, mask), dict(loss=loss, n_total=len(waves) + 2, **kw)   # a chunk of a larger batch
    return case


def detector_likelihood_case(loss, geometry, background_per_pattern, grads=("scale", "background"), absent=()):
    """`likelihood_case` with a scale per pattern and a background (some 20 % of the signal), or without
    the ones `absent` names (the kernel's NULL pointers)."""
    plain = likelihood_case(loss, geometry, background_per_pattern)

    def case(dtype, rng):
        (waves, data, mask), kw = plain(dtype, rng)
        n = len(waves)
        scale = None if "scale" in absent else rng.uniform(0.7, 1.3, n).astype(data.dtype)
        shape = data.shape if background_per_pattern else data.shape[1:]
        background = None if "background" in absent else rng.uniform(0, 10, shape).astype(data.dtype)
        return (waves, data, mask, scale, background), dict(kw, grads=grads)
    return case


def intensity_case(geometry):
    def case(dtype, rng):
        waves, kw = _waves(geometry, dtype, rng)
        return (waves,), kw
    return case


SPEC = (3, 2, 13, 8)                                       # (batch..., buf_ny, buf_nx)


def spectrum_fwd_case(dtype, rng):
    return (random_complex(rng, SPEC, dtype), random_complex(rng, SPEC[-2:], dtype)), {}


def spectrum_adj_case(with_spectrum):
    def case(dtype, rng):
        g, h = random_complex(rng, SPEC, dtype), random_complex(rng, SPEC[-2:], dtype)
        if not with_spectrum:
            return (g, h), {}
        return (g, h, rng.uniform(-1e9, 1e9, SPEC[-2:]), random_complex(rng, SPEC, dtype)), {}
    return case


def adam_step_case(dtype, rng):
    """A complex parameter mid-run (step 3, non-zero moments), small next to its displacement."""
    shape = (4, 7, 5)
    param = 0.01 * random_complex(rng, shape, dtype)
    grad = (random_complex(rng, shape, np.complex128) * 10.0 ** rng.uniform(-2, 2, shape)).astype(dtype)
    m = rng.standard_normal((*shape, 2)).astype(_real(dtype))
    v = rng.uniform(0.01, 2, (*shape, 2)).astype(_real(dtype))
    return (param, grad, m, v), dict(step=3, lr=0.05, betas=(0.8, 0.99), eps=1e-6)


def pie_update_case(dtype, rng):
    """Mode-shared weights with unlit pixels; a parameter small next to its displacement."""
    shape = (3, 17, 13)
    weight = rng.uniform(0, 3, shape[1:]).astype(_real(dtype))
    weight.reshape(-1)[::5] = 0
    param, grad = 0.01 * random_complex(rng, shape, dtype), random_complex(rng, shape, dtype)
    return (param, grad, weight, np.array([weight.max()], weight.dtype)), dict(step=-0.7, alpha=0.1, rel_floor=1e-3)


# --------------------------------------------------------------------------- dot tests
# A dot builder takes (run, dtype, rng), `run` calling entries of one implementation, and returns
# (fwd, adj, x, y) for checks.assert_adjoint.

def patch_dot(run, dtype, rng):
    pos = _positions(rng, N_POS, OBJ[1:], PATCH)
    return (lambda o: run("patch_fwd", o, pos, PATCH), lambda p: run("patch_adj", p, pos, OBJ),
            random_complex(rng, OBJ, dtype), random_complex(rng, (N_POS, OBJ[0], *PATCH), dtype))


def exitwave_dot(argument, padding=(3, 2)):
    """exitwave_fwd / exitwave_adj in one argument: the probe, or the object (through patch_adj)."""
    def build(run, dtype, rng):
        obj, probe, pos = _exitwave_inputs(dtype, rng)
        buf = (EW_POS, EW_OBJ[0], EW_PROBE[0], EW_PROBE[1] + 2 * padding[0], EW_PROBE[2] + 2 * padding[1])
        y = random_complex(rng, buf, dtype)
        if argument == "probe":
            return (lambda p: run("exitwave_fwd", obj, p, pos, padding=padding),
                    lambda g: run("exitwave_adj", obj, probe, pos, g, padding=padding)[1], probe, y)
        return (lambda o: run("exitwave_fwd", o, probe, pos, padding=padding),
                lambda g: run("patch_adj", run("exitwave_adj", obj, probe, pos, g, padding=padding)[0], pos, EW_OBJ),
                obj, y)
    return build


def spectrum_dot(run, dtype, rng):
    h = random_complex(rng, SPEC[-2:], dtype)
    return (lambda x: run("spectrum_fwd", x, h), lambda g: run("spectrum_adj", g, h)[1],
            random_complex(rng, SPEC, dtype), random_complex(rng, SPEC, dtype))


# --------------------------------------------------------------------------- the table

@dataclasses.dataclass(frozen=True)
class Entry:
    cases: dict[str, Callable]                 # case id -> builder(dtype, rng) -> (args, kwargs)
    buffers: tuple[str, ...] = ()              # launcher parameters the twin does not take (output buffers)
    writes: tuple[int, ...] = ()               # positional arguments written in place, returned after the result
    adjoint: str | None = None                 # a linear forward entry: the name of its adjoint entry ...
    dot: dict[str, Callable] = dataclasses.field(default_factory=dict)   # ... and its dot tests per argument
    tol_scale: dict = dataclasses.field(default_factory=dict)            # dtype -> tolerance multiple (with reason)


LIKELIHOOD_GEOMETRIES = (("far-2d-mask", FAR, False), ("near-per-pattern-mask", NEAR, True))
LIKELIHOOD_CASES = {f"{loss}-{geometry}": likelihood_case(loss, g, per_pattern)
                    for loss in reference.LOSSES for geometry, g, per_pattern in LIKELIHOOD_GEOMETRIES}

DETECTOR_CASES = {f"{loss}-{geometry}": detector_likelihood_case(loss, g, per_pattern)
                  for loss in reference.LOSSES for geometry, g, per_pattern in LIKELIHOOD_GEOMETRIES}
DETECTOR_CASES.update({
    "no-scale": detector_likelihood_case("gaussian", FAR, False, grads=("background",), absent=("scale",)),
    "no-background": detector_likelihood_case("poisson", NEAR, False, grads=("scale",), absent=("background",)),
    "neither": detector_likelihood_case("weighted", NEAR, True, grads=(), absent=("scale", "background")),
})

ENTRIES = {
    "patch_fwd": Entry({"": patch_fwd_case}, buffers=("out",), adjoint="patch_adj", dot={"obj": patch_dot}),
    "patch_adj": Entry({"": patch_adj_case}, buffers=("out",)),
    # the position gradient is a sum of ~Mo*Ny*Nx products with cancellation: float32 products
    # summed in double agree with the reference to a few float32 ulps of the largest term
    "patch_posgrad": Entry({"": patch_posgrad_case}, buffers=("out",), tol_scale={np.complex64: 20}),
    "exitwave_fwd": Entry({"unpadded": exitwave_fwd_case((0, 0)), "padded": exitwave_fwd_case((3, 2))},
                          buffers=("out",), adjoint="exitwave_adj",
                          dot={"probe": exitwave_dot("probe"), "obj": exitwave_dot("obj")}),
    "exitwave_adj": Entry({"unpadded": exitwave_adj_case((0, 0)), "padded": exitwave_adj_case((3, 2))},
                          buffers=("grad_patches", "grad_probe")),
    "likelihood": Entry(LIKELIHOOD_CASES, buffers=("loss_rows",), writes=(0,)),
    # scale_rows are sums of ~Nx products w l' I_coh with cancellation (l' changes sign): float32
    # terms summed in double agree to a few float32 ulps of the largest term
    "detector_likelihood": Entry(DETECTOR_CASES, buffers=("loss_rows", "scale_rows", "dl_di"), writes=(0,),
                                 tol_scale={np.complex64: 20}),
    "intensity": Entry({"far": intensity_case(FAR), "near": intensity_case(NEAR)}, buffers=("out",)),
    "spectrum_fwd": Entry({"": spectrum_fwd_case}, buffers=("spectrum_out",), adjoint="spectrum_adj",
                          dot={"x": spectrum_dot}),
    "spectrum_adj": Entry({"dz": spectrum_adj_case(True), "no-spectrum": spectrum_adj_case(False)},
                          buffers=("dz_rows",), writes=(0,)),
    "adam_step": Entry({"": adam_step_case}, writes=(2, 3)),
    "pie_update": Entry({"": pie_update_case}),
}


def _host(out):
    if isinstance(out, tuple):
        return tuple(_host(o) for o in out)
    return None if out is None else to_host(out)


def runner(impl):
    """run(name, *args, **kwargs) on `impl` ("reference", "cpu" or "cuda"), outputs in the twin's layout on the host."""
    def run(name, *args, **kwargs):
        if impl == "reference":
            return getattr(reference, name)(*args, **kwargs)

        def dev(a):                                            # a copy: launchers write some arguments in place
            return to_device(impl, np.array(a, copy=True)) if isinstance(a, np.ndarray) else a

        args, kwargs = [dev(a) for a in args], {k: dev(a) for k, a in kwargs.items()}
        result = LAUNCHERS[name](*args, **kwargs)
        written = tuple(args[i] for i in ENTRIES[name].writes)
        if not written:
            return _host(result)
        return _host((*(result if isinstance(result, tuple) else (result,)), *written))
    return run


def assert_outputs_close(actual, expected, dtype, scale):
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected), (type(actual), len(expected))
        for a, e in zip(actual, expected):
            assert_outputs_close(a, e, dtype, scale)
    elif expected is None:
        assert actual is None
    else:
        assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
        assert_kernel_close(actual, expected, dtype, rtol_scale=scale)


# --------------------------------------------------------------------------- tests

def test_table_covers_every_launcher():
    assert set(LAUNCHERS) == set(ENTRIES), (f"launchers without a row: {sorted(set(LAUNCHERS) - set(ENTRIES))}; "
                                            f"rows without a launcher: {sorted(set(ENTRIES) - set(LAUNCHERS))}")


def test_every_fwd_adj_pair_has_a_dot_test():
    pairs = {name: e.adjoint for name, e in ENTRIES.items() if e.adjoint}
    assert all(ENTRIES[name].dot for name in pairs)
    assert set(pairs) == {n for n in ENTRIES if n.endswith("_fwd")}
    assert set(pairs.values()) == {n for n in ENTRIES if n.endswith("_adj")}


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_twin_signature_matches_the_launcher(name):
    launcher = inspect.signature(LAUNCHERS[name]).parameters
    twin = inspect.signature(getattr(reference, name)).parameters
    buffers = ENTRIES[name].buffers
    assert set(buffers) <= set(launcher), f"{name}: {buffers} are not all parameters of the launcher"
    expected = [(p.name, p.kind, p.default) for p in launcher.values() if p.name not in buffers]
    assert [(p.name, p.kind, p.default) for p in twin.values()] == expected


CASES = [(name, case) for name, entry in ENTRIES.items() for case in entry.cases]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, case", CASES, ids=[f"{n}-{c}" if c else n for n, c in CASES])
def test_kernel_matches_its_twin(device, name, case, dtype):
    entry = ENTRIES[name]
    args, kwargs = entry.cases[case](dtype, np.random.default_rng(0))
    before = [np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in args]
    expected = runner("reference")(name, *args, **kwargs)
    for a, b in zip(args, before):                             # twins never write their arguments
        assert not isinstance(a, np.ndarray) or np.array_equal(a, b, equal_nan=True)
    actual = runner(device)(name, *args, **kwargs)
    assert_outputs_close(actual, expected, dtype, entry.tol_scale.get(dtype, 1))


DOTS = [(name, arg) for name, entry in ENTRIES.items() for arg in entry.dot]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, argument", DOTS, ids=[f"{n}/{ENTRIES[n].adjoint}-{a}" for n, a in DOTS])
def test_kernel_adjoint_pair(device, name, argument, dtype):
    """The kernels' dot test (the twins' own laws are in test_reference.py)."""
    fwd, adj, x, y = ENTRIES[name].dot[argument](runner(device), dtype, np.random.default_rng(1))
    assert_adjoint(fwd, adj, x, y, DOT_TOL[np.dtype(dtype)])
