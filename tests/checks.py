"""Shared numerical checks: scale-free adjoint (dot) test and Wirtinger finite differences."""
from __future__ import annotations

import numpy as np

DOT_TOL = {np.dtype(np.complex64): 1e-5, np.dtype(np.complex128): 1e-12}


def random_complex(rng, shape, dtype=np.complex128):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def assert_adjoint(fwd, adj, x, y, tol, clinear=True):
    """|<A x, y> - <x, A^H y>| <= tol (|A x||y| + |x||A^H y|), accumulated in float64."""
    ax, ahy = fwd(x), adj(y)
    assert ax.shape == y.shape and ahy.shape == x.shape, (ax.shape, y.shape, ahy.shape, x.shape)
    c = np.complex128
    lhs = np.vdot(ax.astype(c), y.astype(c))
    rhs = np.vdot(x.astype(c), ahy.astype(c))
    if not clinear:
        lhs, rhs = lhs.real, rhs.real
    scale = np.linalg.norm(ax.astype(c)) * np.linalg.norm(y.astype(c)) + \
        np.linalg.norm(x.astype(c)) * np.linalg.norm(ahy.astype(c))
    assert scale > 0
    assert abs(lhs - rhs) <= tol * scale, (lhs, rhs, abs(lhs - rhs) / scale)


def directional_fd(loss, x, d, h):
    """Central difference of `loss` at x along d with step h."""
    return (loss(x + h * d) - loss(x - h * d)) / (2 * h)


def assert_gradient(loss, grad, x, d, rtol=1e-6, rel_step=1e-6):
    """Re<grad, d> agrees with the central difference of `loss` along d (float64).

    `grad` is dL/dRe + i dL/dIm for complex x, the plain derivative for real x.
    """
    h = rel_step * max(np.linalg.norm(x), 1e-300) / np.linalg.norm(d)
    fd = directional_fd(loss, x, d, h)
    an = float(np.real(np.vdot(grad, d)))
    assert abs(fd - an) <= rtol * max(abs(fd), abs(an)), (fd, an, abs(fd - an) / max(abs(fd), abs(an)))


def resumed_through_a_checkpoint(ds, config, until, path):
    """The result of a run of `config` stopped after epoch `until`, saved to the checkpoint `path`, loaded into
    a fresh engine and run to the end (compare it with an uninterrupted run for an exact resume)."""
    from cuptycho import checkpoint, create

    first = create(ds, config)
    first.run(until=until)
    checkpoint.save(first.state_dict(), path)
    resumed = create(ds, config)
    resumed.load_state_dict(checkpoint.load(path))
    return resumed.run()
