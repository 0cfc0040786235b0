"""kernels/adam.cu against the NumPy reference Adam (cuptycho.reference.adam_step), on every device."""
from __future__ import annotations

import re

import numpy as np
import pytest
from checks import random_complex
from conftest import to_device, to_host

from cuptycho.launchers.adam import adam_state, adam_step, real_view
from cuptycho import reference

DTYPES = [np.float32, np.float64, np.complex64, np.complex128]
# scale-free tolerance per precision (STYLE.md): relative to the largest reference value
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def real_dtype(dtype):
    return np.empty(0, dtype).real.dtype


def random_param(rng, shape, dtype):
    if np.dtype(dtype).kind == "c":
        return random_complex(rng, shape, dtype)
    return rng.standard_normal(shape).astype(dtype)


def assert_close(actual, expected, tol):
    actual, expected = to_host(actual), np.asarray(expected)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * max(np.abs(expected).max(), 1e-300))


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_matches_reference_over_several_steps(device, dtype):
    rng = np.random.default_rng(1)
    shape = (3, 17, 5)                                         # odd sizes: no vector-width luck
    param0 = random_param(rng, shape, dtype)
    p_ref, m_ref, v_ref = param0, *adam_state(param0)
    param, m, v = to_device(device, param0.copy(), m_ref.copy(), v_ref.copy())
    kw = dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6)
    for step in range(1, 7):
        grad = (random_param(rng, shape, dtype) * 10.0 ** rng.uniform(-2, 2, shape)).astype(dtype)
        grad.reshape(-1)[::7] = 0                              # zero gradients: these never move
        adam_step(param, to_device(device, grad), m, v, step=step, **kw)
        p_ref, m_ref, v_ref = reference.adam_step(p_ref, grad, m_ref, v_ref, step=step, **kw)
    tol = TOL[real_dtype(dtype)]
    # the displacement, not the parameter, so a wrong update cannot hide below |param|; float32
    # parameters round to an ulp of |param| (~|disp|/1e6 here) once per step, within the tolerance
    disp = to_host(param).astype(np.complex128) - param0
    assert_close(disp, p_ref.astype(np.complex128) - param0, tol)
    assert np.abs(disp).max() > 0.1                            # the steps did move the parameter
    assert_close(m, m_ref, tol)
    assert_close(v, v_ref, tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_converges_on_a_quadratic(device, dtype):
    """L = 1/2 sum a |x - x*|^2 with curvatures over two decades; grad = a (x - x*) (MATH.md)."""
    rng = np.random.default_rng(2)
    shape = (40, 30)
    a = rng.uniform(0.1, 10, shape)
    target = random_param(rng, shape, dtype)
    x = to_device(device, np.zeros(shape, dtype))
    m, v = adam_state(x)
    d_a, d_target = to_device(device, a.astype(x.real.dtype), target)
    for step in range(1, 501):
        adam_step(x, (d_a * (x - d_target)).astype(dtype), m, v, step=step, lr=0.05)
    error = np.abs(to_host(x) - target).max() / np.abs(target).max()
    assert error < (1e-4 if real_dtype(dtype) == np.float32 else 1e-8), error


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_parameter_is_its_interleaved_reals(device, dtype):
    """Updating a complex array equals updating its float view with the same state, bit for bit."""
    rng = np.random.default_rng(3)
    shape = (6, 11)
    param0 = random_param(rng, shape, dtype)
    p_c, p_r = to_device(device, param0.copy(), param0.copy().view(real_dtype(dtype)))
    m_c, v_c = adam_state(p_c)
    m_r, v_r = adam_state(p_r)
    assert m_c.shape == shape + (2,) and m_r.shape == (6, 22)  # the same memory layout
    for step in range(1, 4):
        g = random_param(rng, shape, dtype)
        g_c, g_r = to_device(device, g, g.view(real_dtype(dtype)))
        adam_step(p_c, g_c, m_c, v_c, step=step, lr=0.1)
        adam_step(p_r, g_r, m_r, v_r, step=step, lr=0.1)
    np.testing.assert_array_equal(to_host(p_c).view(p_r.dtype), to_host(p_r))
    np.testing.assert_array_equal(to_host(m_c).reshape(m_r.shape), to_host(m_r))
    np.testing.assert_array_equal(to_host(v_c).reshape(v_r.shape), to_host(v_r))
    # and each real component of the state belongs to one real component of the parameter
    np.testing.assert_array_equal(to_host(real_view(p_c))[..., 1], to_host(p_c).imag)


@pytest.mark.parametrize("dtype", DTYPES)
def test_first_step_moves_each_component_by_lr(device, dtype):
    """Bias correction: at step 1, m/bias1 = g and v/bias2 = g^2, so every real component with
    g != 0 moves by lr |g| / (|g| + eps) ~ lr against its gradient, whatever the gradient's scale."""
    rng = np.random.default_rng(4)
    shape = (200,)
    grad = (random_param(rng, shape, dtype) * 10.0 ** rng.uniform(-3, 3, shape)).astype(dtype)
    grad[:5] = 0
    param0 = random_param(rng, shape, dtype)
    param = to_device(device, param0.copy())
    m, v = adam_state(param)
    lr = 0.01
    adam_step(param, to_device(device, grad), m, v, step=1, lr=lr, eps=1e-8)
    move = (real_view(to_host(param)).astype(np.float64) - real_view(param0)).reshape(-1)
    g = real_view(grad).reshape(-1)
    moved = g != 0
    # float32: |param| ~ 1 rounds to an ulp of ~1e-7, i.e. ~1e-5 of lr
    tol = 3e-5 if real_dtype(dtype) == np.float32 else 1e-12
    np.testing.assert_allclose(move[moved], -lr * g[moved] / (np.abs(g[moved]) + 1e-8), rtol=tol)
    big = np.abs(g) > 1e-2                                     # eps / |g| < 1e-6: the move is lr
    assert big.sum() > 100 and np.abs(np.abs(move[big]) / lr - 1).max() < (tol + 1e-6)
    assert np.all(move[~moved] == 0)


def test_state_layout():
    for param, shape, dt in [(np.zeros((4, 3), np.complex64), (4, 3, 2), np.float32),
                             (np.zeros((4, 3), np.float64), (4, 3), np.float64),
                             (np.zeros((), np.complex128), (2,), np.float64)]:
        m, v = adam_state(param)
        assert m.shape == v.shape == shape and m.dtype == v.dtype == dt and not m.any() and not v.any()
    p = np.ones((), np.complex128)                             # a 0-d complex parameter works too
    m, v = adam_state(p)
    adam_step(p, np.array(1 - 2j), m, v, step=1, lr=0.5)
    assert abs(p - (0.5 + 0.5j)) < 1e-7


def _args(dtype=np.complex64, shape=(5, 4)):
    p = np.zeros(shape, dtype)
    return dict(param=p, grad=np.ones(shape, dtype), **dict(zip("mv", adam_state(p))))


@pytest.mark.parametrize("bad, message", [
    (dict(param=np.zeros((5, 4), np.int32)), "param must be float32, float64, complex64 or complex128"),
    (dict(grad=np.ones((5, 4), np.complex128)), "grad must have dtype complex64"),
    (dict(grad=np.ones((4, 5), np.complex64)), "grad must have shape (5, 4)"),
    (dict(m=np.zeros((5, 4), np.float32)), "m must have shape (5, 4, 2)"),
    (dict(m=np.zeros((5, 8), np.float32)), "m must have shape (5, 4, 2)"),
    (dict(v=np.zeros((5, 4, 2), np.float64)), "v must have dtype float32"),
    (dict(m=np.zeros((5, 4, 2), np.complex64)), "m must have dtype float32"),
    (dict(grad=np.ones((4, 5), np.complex64).T), "grad must be C-contiguous"),
    (dict(param=np.zeros((4, 5), np.complex64).T), "param must be C-contiguous"),
    (dict(step=0), "step must be an integer >= 1"),
    (dict(step=1.0), "step must be an integer >= 1"),
    (dict(betas=(0.9, 1.0)), "betas must lie in [0, 1)"),
    (dict(lr=float("nan")), "lr must be finite"),
    (dict(eps=-1.0), "eps must be finite and >= 0"),
])
def test_launcher_rejects_bad_arguments(bad, message):
    kw = {**_args(), "step": 1, "lr": 0.1, **bad}
    with pytest.raises(ValueError, match=re.escape(message)):
        adam_step(**kw)


def test_launcher_rejects_aliased_buffers():
    kw = _args(np.float64)
    with pytest.raises(ValueError, match="must not share memory"):
        adam_step(kw["param"], kw["param"], kw["m"], kw["v"], step=1, lr=0.1)
    with pytest.raises(ValueError, match="must not share memory"):
        adam_step(kw["param"], kw["grad"], kw["m"], kw["m"], step=1, lr=0.1)
