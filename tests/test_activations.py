"""Activation ops: values, kinks, stability at extremes (the oracle runs in test_oracle.py)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch.ops import activations as A
from jaxscratch.ops.activations import relu


@pytest.mark.parametrize("op", [A.sigmoid, A.tanh], ids=lambda op: op.name)
def test_sigmoid_tanh_finite_at_extremes(op):
    x = jnp.array([[-1000.0, -30.0, 0.0, 30.0, 1000.0]], jnp.float64)
    y, cache = op.forward((), x)
    _, dx = op.backward(cache, jnp.ones_like(x))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    lo = 0.0 if op is A.sigmoid else -1.0
    np.testing.assert_array_equal(np.asarray(y)[0, [0, 4]], [lo, 1.0])
    np.testing.assert_array_equal(np.asarray(dx)[0, [0, 4]], [0.0, 0.0])
    mid = 0.25 if op is A.sigmoid else 1.0
    assert float(dx[0, 2]) == mid
    # float32 as well
    y32, c32 = op.forward((), x.astype(jnp.float32))
    assert np.all(np.isfinite(y32)) and np.all(np.isfinite(op.backward(c32, y32)[1]))


def test_relu_and_leaky_relu_values_and_kink():
    x = jnp.array([[-2.0, -0.5, 0.0, 0.5, 3.0]], jnp.float64)
    dy = jnp.array([[1.0, 2.0, 3.0, 4.0, 5.0]], jnp.float64)
    y, c = A.relu.forward((), x)
    np.testing.assert_array_equal(y, [[0.0, 0.0, 0.0, 0.5, 3.0]])
    np.testing.assert_array_equal(A.relu.backward(c, dy)[1], [[0.0, 0.0, 0.0, 4.0, 5.0]])
    y, c = A.leaky_relu.forward((), x)
    np.testing.assert_allclose(y, [[-0.4, -0.1, 0.0, 0.5, 3.0]], rtol=1e-15)
    np.testing.assert_allclose(A.leaky_relu.backward(c, dy)[1], [[0.2, 0.4, 0.6, 4.0, 5.0]])
    with pytest.raises(ValueError, match="leaky_relu"):
        A.make_leaky_relu(1.5)


def test_relu_derivative_is_zero_at_zero():
    x = jnp.array([[-1.0, 0.0, 2.0]])
    y, cache = relu.forward((), x)
    _, dx = relu.backward(cache, jnp.ones_like(x))
    np.testing.assert_array_equal(dx, [[0.0, 0.0, 1.0]])


def test_softmax_rows_sum_to_one_and_stable():
    x = jnp.array([[1e4, 0.0, -1e4], [1.0, 2.0, 3.0]], jnp.float64)
    y, _ = A.softmax.forward((), x)
    np.testing.assert_allclose(np.asarray(y).sum(axis=1), [1.0, 1.0], rtol=1e-15)
    np.testing.assert_array_equal(np.asarray(y)[0], [1.0, 0.0, 0.0])
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(np.asarray(y)[1], e / e.sum(), rtol=1e-15)


def test_leaky_relu_slope_is_checked_like_every_hyperparameter():
    assert A.make_leaky_relu(np.float32(0.1)).forward((), jnp.array([-1.0]))[0] == pytest.approx(
        -0.1
    )
    with pytest.raises(ValueError, match=r"leaky_relu: slope must be a finite number in \[0, 1\)"):
        A.make_leaky_relu(1.0)
    with pytest.raises(TypeError, match="leaky_relu: slope must be a number"):
        A.make_leaky_relu("0.2")
