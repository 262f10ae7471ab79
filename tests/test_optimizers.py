"""Optimizers against values computed by hand, step by step (schedules: test_schedules.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch.optim import optimizers as O
from jaxscratch.optim.schedules import exponential_decay, linear_decay

# One scalar parameter and three gradients, so every step can be written out by hand.
G1, G2, G3 = 0.5, -0.2, 0.1


def _run(opt, lrs, grads=(G1, G2, G3), p0=1.0):
    """Apply ``opt`` for len(lrs) steps to {"w": p0}; return the parameter after each step."""
    params = {"w": jnp.array(p0, jnp.float64)}
    state = opt.init(params)
    out = []
    for g, lr in zip(grads, lrs, strict=True):
        params, state = opt.update({"w": jnp.array(g, jnp.float64)}, state, params, lr)
        out.append(float(params["w"]))
    return out, state


# ---------------------------------------------------------------- SGD and momentum


def test_sgd_by_hand():
    # p1 = 1 - 0.1*0.5 = 0.95 ; p2 = 0.95 + 0.1*0.2 = 0.97 ; p3 = 0.97 - 0.1*0.1 = 0.96
    out, _ = _run(O.sgd(), [0.1, 0.1, 0.1])
    np.testing.assert_allclose(out, [0.95, 0.97, 0.96], rtol=1e-15)


def test_momentum_by_hand_constant_lr():
    # v1 = 0.9*0     + 0.1*0.5  = 0.05   ; p1 = 1     - 0.05   = 0.95
    # v2 = 0.9*0.05  + 0.1*-0.2 = 0.025  ; p2 = 0.95  - 0.025  = 0.925
    # v3 = 0.9*0.025 + 0.1*0.1  = 0.0325 ; p3 = 0.925 - 0.0325 = 0.8925
    out, state = _run(O.sgd_momentum(0.9), [0.1, 0.1, 0.1])
    np.testing.assert_allclose(out, [0.95, 0.925, 0.8925], rtol=1e-14)
    assert isinstance(state, O.MomentumState)
    np.testing.assert_allclose(float(state.velocity["w"]), 0.0325, rtol=1e-14)


def test_momentum_by_hand_with_linear_decay_over_3_epochs():
    # lr per epoch (linear 0.15 -> 0.05 over 3 epochs): 0.15, 0.10, 0.05
    # v1 = 0.15*0.5                 = 0.075   ; p1 = 1      - 0.075   = 0.925
    # v2 = 0.9*0.075  + 0.10*-0.2   = 0.0475  ; p2 = 0.925  - 0.0475  = 0.8775
    # v3 = 0.9*0.0475 + 0.05*0.1    = 0.04775 ; p3 = 0.8775 - 0.04775 = 0.82975
    sched = linear_decay(0.15, 0.05, 3)
    out, _ = _run(O.sgd_momentum(0.9), [sched(e) for e in range(3)])
    np.testing.assert_allclose(out, [0.925, 0.8775, 0.82975], rtol=1e-14)


def test_momentum_by_hand_with_exponential_decay_over_3_epochs():
    # factor (0.05/0.2)^(1/2) = 0.5: lr 0.2, 0.1, 0.05
    # v1 = 0.2*0.5                  = 0.1     ; p1 = 0.9
    # v2 = 0.9*0.1    + 0.1*-0.2    = 0.07    ; p2 = 0.83
    # v3 = 0.9*0.07   + 0.05*0.1    = 0.068   ; p3 = 0.762
    sched = exponential_decay(0.2, 0.05, 3)
    out, _ = _run(O.sgd_momentum(0.9), [sched(e) for e in range(3)])
    np.testing.assert_allclose(out, [0.9, 0.83, 0.762], rtol=1e-14)


def test_momentum_zero_is_sgd_and_tree_structure_kept():
    params = {"W": jnp.arange(6.0).reshape(2, 3), "B": jnp.ones((1, 3))}
    grads = jax.tree.map(lambda a: 0.5 * a + 1.0, params)
    opt = O.sgd_momentum(0.0)
    p1, s1 = opt.update(grads, opt.init(params), params, 0.1)
    p2, _ = O.sgd().update(grads, O.sgd().init(params), params, 0.1)
    jax.tree.map(np.testing.assert_allclose, p1, p2)
    assert jax.tree.structure(s1.velocity) == jax.tree.structure(params)


# ---------------------------------------------------------------- AdaGrad, RMSprop, Adam


def test_adagrad_by_hand():
    lr, eps = 0.1, 1e-7
    # step by step in numpy
    p, h = 1.0, 0.0
    h = h + G1**2  # 0.25
    p = p - lr * G1 / (np.sqrt(h) + eps)
    want1 = p
    h = h + G2**2  # 0.29
    p = p - lr * G2 / (np.sqrt(h) + eps)
    want2 = p
    h = h + G3**2  # 0.30
    p = p - lr * G3 / (np.sqrt(h) + eps)
    want3 = p
    out, state = _run(O.adagrad(eps=eps), [lr] * 3)
    np.testing.assert_allclose(out, [want1, want2, want3], rtol=1e-14)
    np.testing.assert_allclose(float(state.sum_squares["w"]), 0.30, rtol=1e-14)
    # first step by hand: 1 - 0.1 * 0.5 / (0.5 + 1e-7)
    np.testing.assert_allclose(out[0], 1 - 0.05 / (0.5 + 1e-7), rtol=1e-15)


def test_rmsprop_by_hand():
    lr, rho, eps = 0.01, 0.9, 1e-8
    p, s = 1.0, 0.0
    s = rho * s + (1 - rho) * G1**2  # 0.025
    p = p - lr * G1 / (np.sqrt(s) + eps)
    want1 = p
    s = rho * s + (1 - rho) * G2**2  # 0.0225 + 0.004 = 0.0265
    p = p - lr * G2 / (np.sqrt(s) + eps)
    want2 = p
    s = rho * s + (1 - rho) * G3**2  # 0.02385 + 0.001 = 0.02485
    p = p - lr * G3 / (np.sqrt(s) + eps)
    want3 = p
    out, state = _run(O.rmsprop(rho=rho, eps=eps), [lr] * 3)
    np.testing.assert_allclose(out, [want1, want2, want3], rtol=1e-14)
    np.testing.assert_allclose(float(state.mean_squares["w"]), 0.02485, rtol=1e-13)


def test_adam_by_hand():
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    p, m, v = 1.0, 0.0, 0.0
    # step 1
    m = b1 * m + (1 - b1) * G1  # 0.05
    v = b2 * v + (1 - b2) * G1**2  # 0.00025
    m_hat, v_hat = m / (1 - b1**1), v / (1 - b2**1)  # 0.5, 0.25
    p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    want1 = p
    # step 2
    m = b1 * m + (1 - b1) * G2  # 0.045 - 0.02 = 0.025
    v = b2 * v + (1 - b2) * G2**2  # 0.00024975 + 0.00004 = 0.00028975
    m_hat, v_hat = m / (1 - b1**2), v / (1 - b2**2)
    p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    want2 = p
    # step 3
    m = b1 * m + (1 - b1) * G3
    v = b2 * v + (1 - b2) * G3**2
    m_hat, v_hat = m / (1 - b1**3), v / (1 - b2**3)
    p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    want3 = p
    out, state = _run(O.adam(b1=b1, b2=b2, eps=eps), [lr] * 3)
    np.testing.assert_allclose(out, [want1, want2, want3], rtol=1e-14)
    # first Adam step is lr * sign(g) up to eps: 1 - 0.1 * 0.5 / (0.5 + 1e-8)
    np.testing.assert_allclose(out[0], 1 - 0.05 / (0.5 + 1e-8), rtol=1e-15)
    assert int(state.count) == 3
    np.testing.assert_allclose(float(state.mu["w"]), m, rtol=1e-14)
    np.testing.assert_allclose(float(state.nu["w"]), v, rtol=1e-14)


@pytest.mark.parametrize(
    "opt",
    [O.sgd(), O.sgd_momentum(0.9), O.adagrad(), O.rmsprop(), O.adam()],
    ids=["sgd", "momentum", "adagrad", "rmsprop", "adam"],
)
def test_optimizers_jit_with_traced_lr_float32(opt):
    """Under jit the lr is a traced argument; float32 params stay float32; state is a NamedTuple."""
    params = {"W": jnp.ones((2, 3), jnp.float32), "B": jnp.zeros((1, 3), jnp.float32)}
    grads = jax.tree.map(lambda a: jnp.full_like(a, 0.3), params)
    state = opt.init(params)
    assert isinstance(state, tuple) and hasattr(state, "_fields")
    step = jax.jit(opt.update)
    new, state2 = step(grads, state, params, jnp.float32(0.01))
    new2, _ = step(grads, state, params, jnp.float32(0.02))  # other lr, same program
    assert jax.tree.structure(state2) == jax.tree.structure(state)
    for a, b, p in zip(
        jax.tree.leaves(new), jax.tree.leaves(new2), jax.tree.leaves(params), strict=True
    ):
        assert a.dtype == jnp.float32
        assert np.all(np.asarray(a) < np.asarray(p)) and np.all(np.asarray(b) < np.asarray(a))
    if hasattr(step, "_cache_size"):
        assert step._cache_size() == 1


# ---------------------------------------------------------------- caching and validation


def test_factories_are_cached():
    assert O.sgd() is O.sgd()
    assert O.sgd_momentum(0.9) is O.sgd_momentum(momentum=0.9)
    assert O.sgd_momentum(0.9) is O.sgd_momentum(np.float64(0.9))
    assert O.sgd_momentum(0.9) is not O.sgd_momentum(0.8)
    assert O.adagrad() is O.adagrad(eps=1e-7)
    assert O.rmsprop(0.9) is O.rmsprop(rho=0.9, eps=1e-8)
    assert O.adam() is O.adam(0.9, 0.999, 1e-8)
    assert O.adam(b1=0.8) is not O.adam()


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda: O.sgd_momentum(1.0),
            r"sgd_momentum: momentum must be a finite number in \[0, 1\)",
        ),
        (lambda: O.sgd_momentum(-0.1), "momentum"),
        (lambda: O.sgd_momentum(float("nan")), "momentum"),
        (lambda: O.adagrad(eps=0.0), "adagrad: eps must be positive"),
        (lambda: O.adagrad(eps=-1e-7), "adagrad: eps"),
        (lambda: O.rmsprop(rho=1.0), "rmsprop: rho"),
        (lambda: O.rmsprop(eps=0), "rmsprop: eps"),
        (lambda: O.adam(b1=1.0), r"adam: b1 must be a finite number in \[0, 1\)"),
        (lambda: O.adam(b2=-0.5), "adam: b2"),
        (lambda: O.adam(eps=float("inf")), "adam: eps"),
    ],
)
def test_invalid_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_invalid_hyperparameter_types():
    with pytest.raises(TypeError, match="momentum must be a number"):
        O.sgd_momentum("0.9")
    with pytest.raises(TypeError, match="eps must be a number"):
        O.adam(eps=None)


@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan")])
def test_update_rejects_bad_host_lr(lr):
    opt = O.sgd_momentum(0.9)
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="sgd_momentum: learning rate"):
        opt.update(params, opt.init(params), params, lr)
