"""kernels/exitwave.cu special cases: the probe gradient accumulates into a given buffer.

The comparison with the reference twins (with and without padding) and the dot tests in the
probe and the object are in test_kernels_twins.py."""
from __future__ import annotations

import numpy as np
import pytest
from checks import random_complex

from cuptycho.launchers import exitwave


def case(dtype, seed=0, n_obj=2, n_probe=3, patch=(10, 7), n_pos=6):
    rng = np.random.default_rng(seed)
    obj = random_complex(rng, (n_obj, 29, 23), dtype)
    probe = random_complex(rng, (n_probe, *patch), dtype)
    pos = rng.uniform(0, 1, size=(n_pos, 2)) * (np.array(obj.shape[1:]) - patch)
    pos[0] = (np.array(obj.shape[1:]) - patch)          # far edge
    return obj, probe, pos


def test_probe_gradient_accumulates():
    obj, probe, pos = case(np.complex128, seed=5)
    grad_waves = random_complex(np.random.default_rng(6), (len(pos), 2, 3, 10, 7))
    _, once = exitwave.exitwave_adj(obj, probe, pos, grad_waves)
    _, twice = exitwave.exitwave_adj(obj, probe, pos, grad_waves, grad_probe=once.copy())
    np.testing.assert_allclose(twice, 2 * once, rtol=1e-14)


@pytest.mark.gpu
@pytest.mark.parametrize("chunks", [1, 3, 7, 11])
def test_the_gpu_adjoint_in_position_chunks_is_the_cpu_adjoint(chunks, monkeypatch):
    """On the GPU the positions are cut into chunks (one thread per chunk and probe pixel) whose probe
    gradients are added in chunk order: any number of chunks (more than positions too) gives the CPU's
    gradients, and the given grad_probe is accumulated into."""
    import cupy

    pixels = 10 * 7
    monkeypatch.setattr(exitwave, "grid_threads", lambda: chunks * pixels)
    obj, probe, pos = case(np.complex128, seed=3, n_pos=9)
    grad_waves = random_complex(np.random.default_rng(4), (len(pos), 2, 3, 10, 7))
    start = random_complex(np.random.default_rng(5), probe.shape)
    want_patches, want_probe = exitwave.exitwave_adj(obj, probe, pos, grad_waves, grad_probe=start.copy())
    got_patches, got_probe = exitwave.exitwave_adj(*(cupy.asarray(a) for a in (obj, probe, pos, grad_waves)),
                                                   grad_probe=cupy.asarray(start))
    np.testing.assert_allclose(got_patches.get(), want_patches, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(got_probe.get(), want_probe, rtol=1e-13, atol=1e-13)
