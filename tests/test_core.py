"""The op contract, the registry and serial composition."""

from __future__ import annotations

import importlib
import pkgutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxscratch
from jaxscratch import core
from jaxscratch.core import Op, apply, register, serial
from jaxscratch.ops import registry
from jaxscratch.ops.activations import relu, sigmoid, tanh
from jaxscratch.ops.dense import bias_add, dense, weight_multiply
from jaxscratch.ops.losses import mean_squared_error
from jaxscratch.oracle.check import check_op


def _module_level_ops() -> dict[str, Op]:
    found = {}
    for mod in pkgutil.iter_modules(jaxscratch.__path__):
        if mod.name in ("cli", "__main__"):
            continue
        m = importlib.import_module(f"jaxscratch.{mod.name}")
        for attr, value in vars(m).items():
            if isinstance(value, Op):
                found[f"jaxscratch.{mod.name}.{attr}"] = value
    return found


def test_every_registered_op_has_an_oracle_example():
    missing = [name for name, e in registry().items() if e.example is None]
    assert not missing, f"registered ops without an oracle example: {missing}"


def test_every_module_level_op_is_registered():
    registered = {id(e.op) for e in registry().values()}
    unregistered = [where for where, op in _module_level_ops().items() if id(op) not in registered]
    assert not unregistered, f"ops not in the registry: {unregistered}"


def test_registry_test_can_fail():
    """A registered op without an example is what the first test reports."""
    op = Op("no_example_probe", lambda p, x: (x, None), lambda c, dy: ((), dy))
    register(op)
    try:
        assert registry()["no_example_probe"].example is None
    finally:
        core._REGISTRY.pop("no_example_probe")


def test_register_rejects_duplicates_and_non_ops():
    with pytest.raises(ValueError, match="already registered"):
        register(Op("sigmoid", sigmoid.forward, sigmoid.backward))
    with pytest.raises(TypeError, match="expected an Op"):
        register("sigmoid")  # type: ignore[arg-type]


def test_serial_is_an_op_with_reversed_backward():
    net = serial(dense(5, "sigmoid"), dense(3, "tanh"), dense(2))
    out_shape, params = net.init(jax.random.key(0), (7,))
    assert out_shape == (2,)
    assert [p["W"].shape for p in params] == [(7, 5), (5, 3), (3, 2)]
    x = jax.random.normal(jax.random.key(1), (4, 7))
    y, cache = net.forward(params, x)
    assert y.shape == (4, 2) and len(cache) == 3
    report = check_op(net, params, x)
    assert report.passed, report


def test_serial_of_primitive_ops_equals_dense():
    key = jax.random.key(2)
    params = dense(4, "sigmoid").init(key, (6,))[1]
    x = jax.random.normal(jax.random.key(3), (5, 6))
    net = serial(weight_multiply, bias_add, sigmoid)
    y1, _ = net.forward(({"W": params["W"]}, {"B": params["B"]}, ()), x)
    y2, _ = dense(4, "sigmoid").forward(params, x)
    np.testing.assert_allclose(y1, y2, rtol=1e-14)


def test_serial_errors():
    with pytest.raises(ValueError, match="at least one op"):
        serial()
    with pytest.raises(TypeError, match="argument 1"):
        serial(sigmoid, "tanh")  # type: ignore[arg-type]
    net = serial(sigmoid, tanh)
    with pytest.raises(ValueError, match="expected params for 2 ops"):
        net.forward(((),), jnp.ones((2, 2)))


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


def test_mse_rejects_broadcasting_shapes():
    with pytest.raises(ValueError, match=r"\(5, 1\) does not match target shape \(5,\)"):
        mean_squared_error.forward(jnp.ones((5, 1)), jnp.ones((5,)))
    loss, cache = mean_squared_error.forward(jnp.array([[1.0], [3.0]]), jnp.array([[0.0], [0.0]]))
    assert float(loss) == pytest.approx(5.0)  # (1 + 9) / 2: the book's sum of squares / batch
    np.testing.assert_allclose(mean_squared_error.backward(cache), [[1.0], [3.0]])


def test_relu_derivative_is_zero_at_zero():
    x = jnp.array([[-1.0, 0.0, 2.0]])
    y, cache = relu.forward((), x)
    _, dx = relu.backward(cache, jnp.ones_like(x))
    np.testing.assert_array_equal(dx, [[0.0, 0.0, 1.0]])


def test_apply_passes_key_only_to_stochastic_ops():
    calls = {}

    def fwd(params, x, *, key=None, train=True):
        calls["key"], calls["train"] = key, train
        return x, None

    op = Op("probe", fwd, lambda c, dy: ((), dy), stochastic=True)
    apply(op, (), jnp.ones(2), key=jax.random.key(0), train=False)
    assert calls["train"] is False and calls["key"] is not None
    apply(sigmoid, (), jnp.ones(2), key=jax.random.key(0))  # no TypeError: key not passed on
