"""Gradient clipping wrappers: element-wise and global-norm values, caching, validation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch.optim import clipping, optimizers


def test_clip_elementwise_values():
    opt = clipping.clip_elementwise(optimizers.sgd(), 2.0)
    params = {"W": jnp.zeros(4)}
    grads = {"W": jnp.array([-5.0, -1.5, 0.5, 3.0])}
    new, _ = opt.update(grads, opt.init(params), params, 1.0)
    np.testing.assert_array_equal(new["W"], -jnp.array([-2.0, -1.5, 0.5, 2.0]))
    assert opt is clipping.clip_elementwise(optimizers.sgd(), 2)  # cached: no recompiles


def test_clip_global_norm_values():
    opt = clipping.clip_global_norm(optimizers.sgd(), 1.0)
    params = {"a": jnp.zeros(2), "b": jnp.zeros((1, 1))}
    grads = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([[4.0]])}  # global norm 5
    new, _ = jax.jit(opt.update)(grads, opt.init(params), params, 1.0)
    np.testing.assert_allclose(new["a"], [-0.6, 0.0], rtol=1e-12)
    np.testing.assert_allclose(new["b"], [[-0.8]], rtol=1e-12)
    small = {"a": jnp.array([0.3, 0.0]), "b": jnp.array([[0.4]])}  # norm 0.5: unchanged
    new, _ = opt.update(small, opt.init(params), params, 1.0)
    np.testing.assert_allclose(new["a"], [-0.3, 0.0], rtol=1e-12)
    np.testing.assert_allclose(float(clipping.global_norm(grads)), 5.0, rtol=1e-12)
    nan = {"a": jnp.array([jnp.nan, 1.0]), "b": jnp.array([[1.0]])}
    assert not bool(jnp.all(jnp.isfinite(clipping.clip_by_global_norm(nan, 1.0)["a"])))


def test_clipping_wraps_stateful_optimizers_and_validates():
    base = optimizers.adagrad()
    opt = clipping.clip_elementwise(base, 0.5)
    params = {"W": jnp.ones(3)}
    state = opt.init(params)
    _, state = opt.update({"W": jnp.array([10.0, -10.0, 0.1])}, state, params, 0.1)
    np.testing.assert_allclose(state.sum_squares["W"], [0.25, 0.25, 0.01], rtol=1e-12)
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="clip_elementwise: limit"):
            clipping.clip_elementwise(base, bad)
        with pytest.raises(ValueError, match="clip_global_norm: max_norm"):
            clipping.clip_global_norm(base, bad)
    with pytest.raises(TypeError, match="expected an Optimizer"):
        clipping.clip_global_norm("adagrad", 1.0)


def test_clipping_limits_accept_numpy_scalars_and_refuse_strings():
    assert clipping.clip_elementwise(
        optimizers.sgd(), np.float32(2.0)
    ) is clipping.clip_elementwise(optimizers.sgd(), 2.0)
    with pytest.raises(TypeError, match="clip_global_norm: max_norm must be a number"):
        clipping.clip_global_norm(optimizers.sgd(), "1.0")
