"""embedding: the gather, the scatter-add gradient, float0 dx as jax.vjp, bad ids; He initialisers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch.core import init_params
from jaxscratch.ops import init as initializers
from jaxscratch.ops import registry
from jaxscratch.ops.embedding import embedding


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
    out = {}

    def params_of(key):
        out["shape"], params = init_params(op, key, (7,))
        return params

    assert jax.eval_shape(params_of, jax.random.key(0))["W"].shape == (5, 3)
    assert out["shape"] == (7, 3)


def test_the_example_tells_a_scatter_add_from_a_scatter_set():
    """The registry's example repeats ids, so a backward that sets rows instead of adding them
    gives another dW (the oracle passes the true one there, tests/test_oracle.py)."""
    entry = registry()["embedding"]
    params, ids = entry.example(jax.random.key(0))
    y, cache = entry.op.forward(params, ids)
    dy = jnp.asarray(np.random.default_rng(0).standard_normal(y.shape))
    (dp, _) = entry.op.backward(cache, dy)
    set_rows = jnp.zeros_like(dp["W"]).at[cache[0]].set(dy)
    assert np.abs(np.asarray(dp["W"] - set_rows)).max() > 0.1
    assert not np.any(dp["W"][5:])  # ids 5 and 6 unused: zero rows


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
    w = np.asarray(initializers.initialize("he", key, (200, 300)))
    assert abs(w.std() / (2 / 200) ** 0.5 - 1) < 0.02
    u = np.asarray(initializers.initialize("he_uniform", key, (200, 300)))
    bound = (6 / 200) ** 0.5
    assert 0.99 * bound < np.abs(u).max() <= bound and abs(u.std() / (2 / 200) ** 0.5 - 1) < 0.02
    assert initializers.fans((64, 8, 3, 3))[0] == 72  # a conv kernel's fan_in: C_in * k * k
    conv = jax.eval_shape(lambda k: initializers.he_normal(k, (4, 2, 3, 3), jnp.float32), key)
    assert conv.shape == (4, 2, 3, 3) and conv.dtype == jnp.float32
    assert set(initializers.INITIALIZERS) == {"normal", "glorot", "he", "he_uniform"}
    # dense and conv2d draw through initialize, so configs may name every initialiser
    assert set(initializers.INITS) == set(initializers.INITIALIZERS)
    with pytest.raises(ValueError, match="initialize: init must be one of"):
        initializers.initialize("kaiming", key, (3, 2))
    with pytest.raises(TypeError, match="layer: init must be one of"):
        initializers.check_initializer("layer", 2)
