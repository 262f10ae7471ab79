"""residual and parallel: values, inferred shapes, the fan-out's summed dx, keys, state, refusals."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch.core import apply, init_params, serial
from jaxscratch.ops import registry
from jaxscratch.ops.activations import sigmoid, tanh
from jaxscratch.ops.batchnorm import batch_norm
from jaxscratch.ops.combinators import parallel, per_position, residual
from jaxscratch.ops.dense import dense
from jaxscratch.ops.dropout import dropout
from jaxscratch.ops.embedding import embedding


def _x(shape: tuple[int, ...], seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape) + 0.2, jnp.float64)


def _init_shapes(op, in_shape: tuple[int, ...]):
    """``(out_shape, params as shape structs)`` of ``op``'s init, traced only (nothing compiles)."""
    out = {}

    def params_of(key):
        out["shape"], params = init_params(op, key, in_shape)
        return params

    params = jax.eval_shape(params_of, jax.random.key(0))
    return out["shape"], params


def test_residual_adds_the_input_and_its_dx():
    f = serial(dense(6, "tanh"), dense(4, "sigmoid"))
    op = residual(f)
    shape, shapes = _init_shapes(op, (4,))
    assert shape == (4,) and shapes[0]["W"].shape == (4, 6)  # f's params, unchanged
    params, x = registry()["residual[bottleneck]"].example(jax.random.key(0))
    y, cache = op.forward(params, x)
    fx, fcache = f.forward(params, x)
    np.testing.assert_allclose(y, x + fx, rtol=1e-14)
    dy = _x((3, 4), 1)
    dp, dx = op.backward(cache, dy)
    dpf, dxf = f.backward(fcache, dy)
    np.testing.assert_allclose(dx, dy + dxf, rtol=1e-14)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-14), dp, dpf)


def test_parallel_concat_joins_outputs_and_infers_shapes():
    op = parallel(dense(3, "tanh"), dense(5, "sigmoid"), combine="concat")
    shape, shapes = _init_shapes(op, (4,))
    assert shape == (8,) and len(shapes) == 2 and shapes[1]["W"].shape == (4, 5)
    params, x = registry()["parallel[concat]"].example(jax.random.key(0))
    y, _ = op.forward(params, x)
    a, _ = dense(3, "tanh").forward(params[0], x)
    np.testing.assert_allclose(
        y, jnp.concatenate([a, dense(5, "sigmoid").forward(params[1], x)[0]], 1)
    )


def test_parallel_concat_on_channels_of_images():
    op = parallel(tanh, sigmoid, tanh, combine="concat", axis=1)
    assert _init_shapes(op, (3, 4, 5))[0] == (9, 4, 5)
    x = _x((2, 3, 4, 5))
    y, _ = op.forward(((), (), ()), x)
    assert y.shape == (2, 9, 4, 5)
    np.testing.assert_allclose(y[:, 3:6], jax.nn.sigmoid(x), rtol=1e-14)
    _, dx = op.backward(op.forward(((), (), ()), x)[1], jnp.ones_like(y))
    np.testing.assert_allclose(
        dx, 2 * (1 - jnp.tanh(x) ** 2) + jax.nn.sigmoid(x) * (1 - jax.nn.sigmoid(x))
    )


def test_the_fan_out_dx_must_be_the_sum_of_the_branches():
    """On the registry's example, dx differs from the last branch's dx alone: the oracle, which
    passes the summed dx there (tests/test_oracle.py), would fail a backward that kept one."""
    good = registry()["parallel[sum]"]
    params, x = good.example(jax.random.key(0))

    y, cache = good.op.forward(params, x)
    dy = _x(y.shape, 3)
    _, dx = good.op.backward(cache, dy)
    branches = (dense(5, "tanh"), dense(5, "linear"), dense(5, "sigmoid"))
    parts = [op.backward(c, dy)[1] for op, c in zip(branches, cache[0], strict=True)]
    np.testing.assert_allclose(dx, parts[0] + parts[1] + parts[2], rtol=1e-13)
    assert all(np.abs(np.asarray(dx - part)).max() > 0.1 for part in parts)


def test_fan_out_of_integer_ids_keeps_the_float0_cotangent():
    op = parallel(embedding(7, 4), embedding(7, 4))
    assert _init_shapes(op, (5,))[0] == (5, 4)
    params = ({"W": _x((7, 4), 1)}, {"W": _x((7, 4), 2)})
    ids = jnp.array([[0, 2, 2, 6, 1], [3, 3, 0, 1, 2]])
    _, cache = op.forward(params, ids)
    _, dx = op.backward(cache, _x((2, 5, 4)))
    assert dx.dtype == jax.dtypes.float0 and dx.shape == ids.shape
    _, vjp = jax.vjp(lambda p, i: op.forward(p, i)[0], params, ids)
    dy = _x((2, 5, 4))
    (dp, dx), (dp_ref, dx_ref) = op.backward(cache, dy), vjp(dy)
    assert dx_ref.dtype == jax.dtypes.float0
    for mine, ref in zip(dp, dp_ref, strict=True):
        np.testing.assert_allclose(mine["W"], ref["W"], rtol=1e-13)


def test_keys_and_state_pass_through():
    op = parallel(dropout(0.5), tanh)
    assert op.stochastic and residual(dropout(0.5)).stochastic
    x = _x((3, 6))
    y1, _ = apply(op, ((), ()), x, key=jax.random.key(3))
    y2, _ = apply(op, ((), ()), x, key=jax.random.key(3))
    y3, _ = apply(op, ((), ()), x, key=jax.random.key(4))
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(y1, y3)
    for op in (residual(batch_norm()), parallel(batch_norm(), tanh)):
        assert op.update is not None
        _, params = init_params(op, jax.random.key(0), (6,))
        _, cache = apply(op, params, x, train=True)
        new = op.update(params, cache)
        bn_old, bn_new = (params, new) if "running_mean" in params else (params[0], new[0])
        assert not np.allclose(bn_new["running_mean"], bn_old["running_mean"])
    assert parallel(tanh, sigmoid).update is None and not parallel(tanh).stochastic


def test_bad_combinations_are_refused():
    with pytest.raises(ValueError, match="residual.*must keep the shape"):
        _init_shapes(residual(dense(3)), (4,))
    with pytest.raises(ValueError, match="residual.*must keep the shape"):
        residual(dense(3)).forward({"W": _x((4, 3)), "B": _x((1, 3))}, _x((2, 4)))
    with pytest.raises(ValueError, match=r"parallel\[sum\].*differ"):
        _init_shapes(parallel(dense(3), dense(4)), (4,))
    with pytest.raises(ValueError, match="axis 0 is not a non-batch axis"):
        _init_shapes(parallel(tanh, tanh, combine="concat", axis=0), (4,))
    with pytest.raises(ValueError, match="axis -3 is not a non-batch axis"):
        parallel(tanh, tanh, combine="concat", axis=-3).forward(((), ()), _x((2, 4)))
    with pytest.raises(ValueError, match="parallel: combine must be one of 'sum', 'concat'"):
        parallel(tanh, combine="mean")
    with pytest.raises(TypeError, match="parallel: axis must be an integer"):
        parallel(tanh, axis=1.0)
    with pytest.raises(TypeError, match="parallel: argument 1 is .*, not an Op"):
        parallel(tanh, jnp.tanh)
    with pytest.raises(ValueError, match="parallel: needs at least one op"):
        parallel()
    with pytest.raises(ValueError, match="expected params for 2 branches, got 1"):
        parallel(tanh, sigmoid).forward(((),), _x((2, 3)))


def test_per_position_applies_a_row_op_at_every_position():
    op = per_position(dense(3, "tanh"))
    params, x = registry()["per_position[dense]"].example(jax.random.key(0))
    y, cache = op.forward(params, x)
    rows, _ = dense(3, "tanh").forward(params, x.reshape(10, 4))
    np.testing.assert_allclose(y, rows.reshape(2, 5, 3), rtol=1e-14)
    _, dx = op.backward(cache, jnp.ones_like(y))
    assert dx.shape == x.shape
    assert _init_shapes(op, (5, 4))[0] == (5, 3)
    with pytest.raises(ValueError, match=r"per_position\(dense\[3,tanh\]\): x must be"):
        op.forward(params, x[0])
    assert per_position(batch_norm()).update is not None
