"""layer_norm: values against numpy, rows independent, shapes, refusals, a wrong backward caught."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch.core import init_params
from jaxscratch.ops import registry
from jaxscratch.ops.norm import layer_norm


def _x(shape: tuple[int, ...], seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape) * 3 + 1, jnp.float64)


def test_layer_norm_matches_numpy_and_rows_are_independent():
    op = layer_norm()
    x = _x((2, 3, 5))
    gamma, beta = _x((5,), 1), _x((5,), 2)
    y, _ = op.forward({"gamma": gamma, "beta": beta}, x)
    xn = np.asarray(x)
    ref = (xn - xn.mean(-1, keepdims=True)) / np.sqrt(xn.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, ref * np.asarray(gamma) + np.asarray(beta), rtol=1e-12)
    y2, _ = op.forward({"gamma": gamma, "beta": beta}, x.at[1].set(0.0))
    np.testing.assert_array_equal(y2[0], y[0])  # no statistic crosses the batch
    shape, params = init_params(op, jax.random.key(0), (3, 5))
    assert shape == (3, 5) and params["gamma"].shape == (5,) and float(params["beta"].sum()) == 0


def test_layer_norm_backward_needs_all_three_paths():
    """On the registry's example, dropping the path through the mean or the variance changes dx
    (the oracle passes the full backward there, tests/test_oracle.py, so it fails either)."""
    entry = registry()["layer_norm"]
    params, x = entry.example(jax.random.key(0))

    y, cache = entry.op.forward(params, x)
    xhat, inv_std, gamma = cache
    dy = _x(y.shape, 3)
    _, dx = entry.op.backward(cache, dy)
    g = dy * gamma
    no_mean = (g - xhat * jnp.mean(g * xhat, -1, keepdims=True)) * inv_std
    no_var = (g - jnp.mean(g, -1, keepdims=True)) * inv_std
    assert np.abs(np.asarray(dx - no_mean)).max() > 0.1 * np.abs(np.asarray(dx)).max()
    assert np.abs(np.asarray(dx - no_var)).max() > 0.1 * np.abs(np.asarray(dx)).max()


def test_layer_norm_refuses_bad_shapes_and_eps():
    op = layer_norm()
    p = {"gamma": jnp.ones(4), "beta": jnp.zeros(4)}
    with pytest.raises(ValueError, match=r"layer_norm: x\(2, 5\) does not fit gamma\(4,\)"):
        op.forward(p, jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="gamma.*beta.*must both be"):
        op.forward({"gamma": jnp.ones(4), "beta": jnp.zeros(3)}, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="dy"):
        op.backward(op.forward(p, jnp.arange(8.0).reshape(2, 4))[1], jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="layer_norm: eps must be"):
        layer_norm(0.0)
    assert layer_norm(1e-3).name == "layer_norm[0.001]"
