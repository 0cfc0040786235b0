"""kernels/sampling.cu special cases: accumulation, thread-count determinism, argument checks.

The comparison with the reference twins and the dot test are in test_kernels_twins.py."""
from __future__ import annotations

import numpy as np
import pytest
from checks import random_complex
from conftest import assert_kernel_close, to_device

from cuptycho import reference
from cuptycho.launchers import sampling

DTYPES = [np.complex64, np.complex128]


def case(dtype, n_modes=2, obj_hw=(37, 41), patch=(12, 9), n_pos=11, seed=0):
    rng = np.random.default_rng(seed)
    obj = random_complex(rng, (n_modes, *obj_hw), dtype)
    limit = np.array(obj_hw) - np.array(patch)
    pos = rng.uniform(0, 1, size=(n_pos, 2)) * limit
    pos[0] = 0                                  # exact crop at the origin
    pos[1] = limit                              # exact crop at the far edge (clamped taps)
    pos[2] = (3, 5)                             # integer interior position
    grad = random_complex(rng, (n_pos, n_modes, *patch), dtype)
    return obj, pos, grad


@pytest.mark.parametrize("dtype", DTYPES)
def test_patch_adj_matches_reference_and_accumulates(device, dtype):
    obj, pos, grad = case(dtype)
    d_grad, d_pos = to_device(device, grad, pos)
    out = sampling.patch_adj(d_grad, d_pos, obj.shape)
    expected = reference.patch_adj(grad, pos, obj.shape)
    assert_kernel_close(out, expected, dtype)
    sampling.patch_adj(d_grad, d_pos, obj.shape, out=out)      # accumulates into a given output
    assert_kernel_close(out, 2 * expected, dtype)


@pytest.mark.parametrize("n_pos, patch, obj_hw", [(1, (12, 9), (37, 41)), (1, (40, 70), (150, 170)),
                                                  (60, (40, 70), (150, 170)), (30, (64, 33), (100, 97))])
def test_patch_adj_over_tiles_matches_reference(device, n_pos, patch, obj_hw):
    """The GPU gathers per 32 x 32 object tile: patches spanning several tiles, one patch alone (no tile lists),
    objects whose last tiles are partial; the CPU the same arguments."""
    obj, pos, grad = case(np.complex128, n_pos=max(n_pos, 3), patch=patch, obj_hw=obj_hw, seed=n_pos)
    pos, grad = pos[-n_pos:], grad[-n_pos:]               # one patch: an interior one (no exact crop)
    d_grad, d_pos = to_device(device, grad, pos)
    out = sampling.patch_adj(d_grad, d_pos, obj.shape)
    sampling.patch_adj(d_grad, d_pos, obj.shape, out=out)
    assert_kernel_close(out, 2 * reference.patch_adj(grad, pos, obj.shape), np.complex128)


def test_cpu_scatter_is_deterministic_across_thread_counts(monkeypatch):
    """Each object row has one writer, summing patches in index order: bitwise equal results."""
    import subprocess
    import sys

    script = ("import numpy as np, sys; sys.path.insert(0, 'tests'); from test_kernels_sampling import case;"
              "from cuptycho.launchers import sampling as s; o, p, g = case(np.complex64, n_pos=40);"
              "sys.stdout.write(s.patch_adj(g, p, o.shape).tobytes().hex())")
    outs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                           env={**__import__("os").environ, "OMP_NUM_THREADS": str(t)}).stdout for t in (1, 2, 3)}
    assert len(outs) == 1


@pytest.mark.parametrize("bad, message", [
    (dict(positions=np.zeros((3, 2), np.float32)), "positions must have dtype float64"),
    (dict(positions=np.zeros((3, 3))), "positions must have shape (J, 2)"),
    (dict(obj=np.zeros((2, 37, 41), np.float64)), "obj must be complex64 or complex128"),
    (dict(obj=np.zeros((2, 41, 37), np.complex128)[:, :, ::2]), "obj must be C-contiguous"),
    (dict(patch_shape=(40, 9)), "must be larger than the patch"),
])
def test_launcher_rejects_bad_arguments(bad, message):
    obj, pos, _ = case(np.complex128)
    args = {**dict(obj=obj, positions=pos, patch_shape=(12, 9)), **bad}
    with pytest.raises(ValueError, match=__import__("re").escape(message)):
        sampling.patch_fwd(**args)
