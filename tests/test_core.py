"""The core: the op registry, register, serial and apply."""

from __future__ import annotations

import importlib
import pkgutil

import jax
import jax.numpy as jnp
import pytest

import jaxscratch
from jaxscratch import core
from jaxscratch.core import Op, apply, register, serial
from jaxscratch.ops import loss_registry, registry
from jaxscratch.ops.activations import sigmoid, tanh
from jaxscratch.ops.dense import dense
from jaxscratch.oracle.check import check_op


def _module_level_ops() -> dict[str, Op]:
    """Every module-level Op in every module of the package (subpackages included)."""
    found = {}
    for mod in pkgutil.walk_packages(jaxscratch.__path__, prefix="jaxscratch."):
        if mod.name.endswith("__main__"):
            continue
        m = importlib.import_module(mod.name)
        for attr, value in vars(m).items():
            if isinstance(value, Op):
                found[f"{mod.name}.{attr}"] = value
    return found


def test_the_module_walk_sees_the_op_modules():
    """The check above can fail: it sees ops in subpackages (jaxscratch.ops.*), not only core."""
    where = set(_module_level_ops())
    assert {"jaxscratch.ops.activations.sigmoid", "jaxscratch.ops.pool.flatten"} <= where


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


CH4_OPS = [
    "tanh",
    "relu",
    "leaky_relu",
    "softmax",
    "sigmoid",
    "dropout[0.8]",
    "dropout[0.8,inverted]",
    "dropout[0.5]",
    "dense[tanh]+dropout[0.8]",
]


def test_registry_holds_the_chapter_4_ops_and_losses():
    """Registered, so tests/test_oracle.py checks each of them once."""
    assert set(CH4_OPS) <= set(registry())
    assert {"softmax_cross_entropy", "mean_squared_error"} <= set(loss_registry())


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


def test_serial_errors():
    with pytest.raises(ValueError, match="at least one op"):
        serial()
    with pytest.raises(TypeError, match="argument 1"):
        serial(sigmoid, "tanh")  # type: ignore[arg-type]
    net = serial(sigmoid, tanh)
    with pytest.raises(ValueError, match="expected params for 2 ops"):
        net.forward(((),), jnp.ones((2, 2)))


def test_apply_passes_key_only_to_stochastic_ops():
    calls = {}

    def fwd(params, x, *, key=None, train=True):
        calls["key"], calls["train"] = key, train
        return x, None

    op = Op("probe", fwd, lambda c, dy: ((), dy), stochastic=True)
    apply(op, (), jnp.ones(2), key=jax.random.key(0), train=False)
    assert calls["train"] is False and calls["key"] is not None
    apply(sigmoid, (), jnp.ones(2), key=jax.random.key(0))  # no TypeError: key not passed on
