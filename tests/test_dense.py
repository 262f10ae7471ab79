"""Dense layers: weight_multiply, bias_add, dense (with dropout), Glorot init, shape errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch.core import apply, init_params, serial
from jaxscratch.ops.activations import sigmoid
from jaxscratch.ops.dense import bias_add, dense, weight_multiply

KEY = jax.random.key(4)


def test_serial_of_primitive_ops_equals_dense():
    key = jax.random.key(2)
    params = dense(4, "sigmoid").init(key, (6,))[1]
    x = jax.random.normal(jax.random.key(3), (5, 6))
    net = serial(weight_multiply, bias_add, sigmoid)
    y1, _ = net.forward(({"W": params["W"]}, {"B": params["B"]}, ()), x)
    y2, _ = dense(4, "sigmoid").forward(params, x)
    np.testing.assert_allclose(y1, y2, rtol=1e-14)


def test_shape_errors_name_the_op_and_shapes():
    W = jnp.ones((3, 2))
    with pytest.raises(ValueError, match=r"weight_multiply: x\(4, 5\) does not fit W\(3, 2\)"):
        weight_multiply.forward({"W": W}, jnp.ones((4, 5)))
    with pytest.raises(ValueError, match="bias_add"):
        bias_add.forward({"B": jnp.ones((1, 3))}, jnp.ones((4, 5)))
    with pytest.raises(ValueError, match="dense"):
        dense(2).forward({"W": W, "B": jnp.ones((1, 2))}, jnp.ones((4, 5)))
    with pytest.raises(ValueError, match="neurons"):
        dense(0)
    with pytest.raises(ValueError, match="init must be one of"):
        dense(3, init="uniform")
    with pytest.raises(TypeError, match="dense: neurons must be an integer"):
        dense(2.0)


def test_dense_with_dropout_structure():
    plain = dense(5, "tanh", init="glorot")
    assert not plain.stochastic
    assert dense(5, "tanh", dropout=1.0).name == "dense[5,tanh]"
    layer = dense(5, "tanh", init="glorot", dropout=0.8)
    assert layer.stochastic and layer.name == "dense[5,tanh]+dropout[0.8]"
    out_shape, params = init_params(layer, KEY, (3,))
    assert out_shape == (5,)
    assert params[1] == () and set(params[0]) == {"W", "B"}
    x = jax.random.normal(KEY, (4, 3))
    y_inf, _ = apply(layer, params, x, train=False)
    y_plain, _ = plain.forward(params[0], x)
    np.testing.assert_allclose(y_inf, 0.8 * y_plain, rtol=1e-15)
    inv = dense(5, "tanh", dropout=0.8, inverted=True)
    np.testing.assert_allclose(apply(inv, params, x, train=False)[0], y_plain, rtol=1e-15)


def test_glorot_init_std():
    fan_in, fan_out = 500, 300
    _, p = init_params(dense(fan_out, "tanh", init="glorot"), KEY, (fan_in,))
    want = math.sqrt(2.0 / (fan_in + fan_out))
    W = np.asarray(p["W"])
    assert W.shape == (fan_in, fan_out)
    assert abs(W.std() / want - 1.0) < 0.01  # 150k draws: relative std error ~0.2%
    assert abs(W.mean()) < 0.01 * want
    assert p["B"].shape == (1, fan_out)
    _, p_normal = init_params(dense(fan_out, "tanh"), KEY, (fan_in,))
    assert abs(np.asarray(p_normal["W"]).std() - 1.0) < 0.01
    with pytest.raises(ValueError, match="dense: init must be one of 'normal', 'glorot', 'he'"):
        dense(3, init="kaiming")


@pytest.mark.parametrize("init", ["he", "he_uniform"])
def test_he_initialisation_has_variance_two_over_fan_in(init):
    """dense and conv2d draw He weights with variance 2 / fan_in (B zeros for dense)."""
    from jaxscratch.core import init_params
    from jaxscratch.ops.conv import conv2d

    params = init_params(dense(400, "relu", init=init), jax.random.key(0), (300,))[1]
    assert abs(float(jnp.var(params["W"])) / (2 / 300) - 1) < 0.02
    assert not bool(jnp.any(params["B"]))
    w = init_params(conv2d(64, 3, init=init), jax.random.key(1), (32, 8, 8))[1]["W"]
    assert abs(float(jnp.var(w)) / (2 / (32 * 9)) - 1) < 0.03


def test_normal_and_glorot_draws_are_unchanged():
    """The book's normal and Glorot dense draws (W and B with one scale) stay as they were."""
    from jaxscratch.core import init_params
    from jaxscratch.ops import init as initializers

    kw, kb = jax.random.split(jax.random.key(2))
    for init, scale in (("normal", 1.0), ("glorot", initializers.glorot_scale(5, 3))):
        params = init_params(dense(3, init=init), jax.random.key(2), (5,))[1]
        np.testing.assert_array_equal(params["W"], scale * jax.random.normal(kw, (5, 3)))
        np.testing.assert_array_equal(params["B"], scale * jax.random.normal(kb, (1, 3)))
