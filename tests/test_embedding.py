"""embedding: the gather, the scatter-add gradient, float0 dx as jax.vjp, bad ids; He initialisers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch.core import Op, init_params
from jaxscratch.ops import init as initializers
from jaxscratch.ops import registry
from jaxscratch.ops.embedding import embedding
from jaxscratch.oracle.check import check_op


def test_embedding_gathers_rows_and_scatter_adds_their_gradient():
    op = embedding(5, 3)
    W = jnp.arange(15.0).reshape(5, 3)
    ids = jnp.array([[1, 4, 1], [0, 1, 3]])  # id 1 three times, id 2 never
    y, cache = op.forward({"W": W}, ids)
    np.testing.assert_array_equal(y, np.asarray(W)[np.asarray(ids)])
    dy = jnp.arange(18.0).reshape(2, 3, 3) + 1
    (dparams, dx) = op.backward(cache, dy)
    expected = np.zeros((5, 3))
    for b in range(2):
        for t in range(3):
            expected[int(ids[b, t])] += np.asarray(dy[b, t])
    np.testing.assert_array_equal(dparams["W"], expected)
    assert not np.any(dparams["W"][2])
    # dx as jax.vjp gives it for an integer input: float0 zeros of the ids' shape
    _, vjp = jax.vjp(lambda w, i: op.forward({"W": w}, i)[0], W, ids)
    assert dx.dtype == vjp(dy)[1].dtype == jax.dtypes.float0 and dx.shape == ids.shape
    shape, params = init_params(op, jax.random.key(0), (7,))
    assert shape == (7, 3) and params["W"].shape == (5, 3)


def test_a_scatter_that_sets_instead_of_adding_fails_the_oracle():
    entry = registry()["embedding"]
    params, ids = entry.example(jax.random.key(0))

    def scatter_set(cache, dy):
        safe, n = cache
        _, dx = entry.op.backward(cache, dy)
        return {"W": jnp.zeros((n, dy.shape[-1]), dy.dtype).at[safe].set(dy)}, dx

    assert not check_op(Op("bad", entry.op.forward, scatter_set), params, ids).passed


def test_bad_ids_are_refused_or_poison_the_output():
    op = embedding(5, 3)
    p = {"W": jnp.ones((5, 3))}
    with pytest.raises(
        ValueError, match=r"embedding\[5,3\]: ids must lie in \[0, 5\), got ids in \[0, 5\]"
    ):
        op.forward(p, jnp.array([[0, 5]]))
    with pytest.raises(ValueError, match=r"ids in \[-1, 2\]"):
        op.forward(p, jnp.array([[-1, 2]]))
    with pytest.raises(TypeError, match="ids must be an integer array"):
        op.forward(p, jnp.array([[0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"W must be \(5, dim\)"):
        op.forward({"W": jnp.ones((4, 3))}, jnp.array([[0]]))
    # traced ids cannot be checked: a bad id reads NaN (never a clamped row) and adds no gradient
    y, (safe, _) = jax.jit(op.forward)(p, jnp.array([[1, 7, -1]]))
    assert np.isnan(y[0, 1:]).all() and not np.isnan(y[0, 0]).any()
    (dp, _) = op.backward((safe, 5), jnp.ones((1, 3, 3)))
    np.testing.assert_array_equal(dp["W"].sum(axis=1), [0, 3, 0, 0, 0])
    with pytest.raises(ValueError, match="embedding: vocab must be"):
        embedding(0, 3)
    with pytest.raises(ValueError, match="embedding: init must be one of"):
        embedding(5, 3, init="zeros")


def test_he_initialisers_have_variance_two_over_fan_in():
    key = jax.random.key(0)
    w = initializers.initialize("he", key, (200, 300))
    assert abs(float(jnp.std(w)) / (2 / 200) ** 0.5 - 1) < 0.02
    u = initializers.initialize("he_uniform", key, (200, 300))
    bound = (6 / 200) ** 0.5
    assert float(jnp.max(jnp.abs(u))) <= bound and float(jnp.max(jnp.abs(u))) > 0.99 * bound
    assert abs(float(jnp.std(u)) / (2 / 200) ** 0.5 - 1) < 0.02
    conv = initializers.he_normal(key, (64, 8, 3, 3))  # fan_in = C_in * k * k = 72
    assert abs(float(jnp.std(conv)) / (2 / 72) ** 0.5 - 1) < 0.05
    assert initializers.initialize("he", key, (3, 2), jnp.float32).dtype == jnp.float32
    assert set(initializers.INITIALIZERS) == {"normal", "glorot", "he", "he_uniform"}
    # dense and conv2d pick their scale as "normal" or else Glorot: "he" waits for them
    assert "he" not in initializers.INITS
    with pytest.raises(ValueError, match="initialize: init must be one of"):
        initializers.initialize("kaiming", key, (3, 2))
    with pytest.raises(TypeError, match="layer: init must be one of"):
        initializers.check_initializer("layer", 2)
