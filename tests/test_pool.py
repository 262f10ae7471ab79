"""max_pool2d, avg_pool2d and flatten: values against numpy, ties, odd sizes, strides that overlap,
the oracle on one example each."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch.core import init_params
from jaxscratch.ops.pool import flatten, make_avg_pool2d, make_max_pool2d, max_pool2d
from jaxscratch.oracle.check import check_op


def _normal(rng: np.random.Generator, shape: tuple[int, ...]) -> jax.Array:
    return jnp.asarray(rng.standard_normal(shape), jnp.float64)


def _pool_reference(x: np.ndarray, p: int) -> np.ndarray:
    n, c, h, w = x.shape
    ho, wo = h // p, w // p
    return x[:, :, : ho * p, : wo * p].reshape(n, c, ho, p, wo, p).max(axis=(3, 5))


def test_max_pool_forward_and_oracle():
    x = _normal(np.random.default_rng(2), (2, 3, 7, 6))  # no ties (continuous)
    y, _ = max_pool2d.forward((), x)
    np.testing.assert_array_equal(y, _pool_reference(np.asarray(x), 2))
    assert init_params(max_pool2d, jax.random.key(0), (3, 7, 6))[0] == (3, 3, 3)
    report = check_op(max_pool2d, (), x)
    assert report.passed, report.detail
    pool3 = make_max_pool2d(3)
    y3, cache3 = pool3.forward((), x)
    np.testing.assert_array_equal(y3, _pool_reference(np.asarray(x), 3))
    _, dx3 = pool3.backward(cache3, jnp.ones_like(y3))
    assert float(jnp.sum(dx3)) == y3.size and not np.any(dx3[:, :, 6, :])


def test_max_pool_ties_send_the_gradient_to_the_first_max_only():
    # one image, four 2x2 windows (row-major order inside each: (0,0) (0,1) (1,0) (1,1))
    x = jnp.array(
        [
            [1.0, 1.0, 0.0, 2.0],
            [0.0, 1.0, 2.0, 2.0],
            [5.0, 5.0, -1.0, -3.0],
            [5.0, 5.0, -2.0, -1.0],
        ]
    ).reshape(1, 1, 4, 4)
    y, cache = max_pool2d.forward((), x)
    np.testing.assert_array_equal(y.ravel(), [1.0, 2.0, 5.0, -1.0])
    dy = jnp.array([10.0, 20.0, 30.0, 40.0]).reshape(1, 1, 2, 2)
    _, dx = max_pool2d.backward(cache, dy)
    expected = np.array(
        [
            [10.0, 0.0, 0.0, 20.0],  # window 1: (0,0) beats the later 1s; window 2: (0,1) first
            [0.0, 0.0, 0.0, 0.0],
            [30.0, 0.0, 40.0, 0.0],  # window 3: all equal -> (0,0); window 4: (0,0) ties (1,1)
            [0.0, 0.0, 0.0, 0.0],
        ]
    )
    np.testing.assert_array_equal(dx.reshape(4, 4), expected)
    # the forward pass selects that element, so jax.vjp agrees even on ties
    _, vjp = jax.vjp(lambda v: max_pool2d.forward((), v)[0], x)
    np.testing.assert_array_equal(vjp(dy)[0], dx)


def test_max_pool_odd_sizes_floor_and_zero_gradient():
    x = _normal(np.random.default_rng(2), (2, 3, 5, 7))
    y, cache = max_pool2d.forward((), x)
    assert y.shape == (2, 3, 2, 3)
    _, dx = max_pool2d.backward(cache, jnp.ones_like(y))
    assert dx.shape == x.shape
    assert not np.any(dx[:, :, 4, :]) and not np.any(dx[:, :, :, 6])
    assert float(jnp.sum(dx)) == y.size  # one selected entry per window
    with pytest.raises(ValueError, match="max_pool2d"):
        max_pool2d.forward((), jnp.ones((1, 1, 1, 4)))
    with pytest.raises(ValueError, match="max_pool2d"):
        max_pool2d.forward((), jnp.ones((4, 4)))


def test_flatten():
    x = _normal(np.random.default_rng(0), (3, 2, 5, 4))
    y, cache = flatten.forward((), x)
    np.testing.assert_array_equal(y, np.asarray(x).reshape(3, 40))
    _, dx = flatten.backward(cache, y)
    np.testing.assert_array_equal(dx, x)
    assert init_params(flatten, jax.random.key(0), (2, 5, 4))[0] == (40,)
    with pytest.raises(ValueError, match="flatten"):
        flatten.backward(cache, y[:, :39])


def test_pool_size_is_checked():
    assert make_max_pool2d(np.int64(3)).name == "max_pool2d[3]"
    with pytest.raises(ValueError, match=r"max_pool2d: size must be an integer in \[1, inf\)"):
        make_max_pool2d(0)
    with pytest.raises(TypeError, match="max_pool2d: size must be an integer"):
        make_max_pool2d(2.0)


def _strided_reference(x: np.ndarray, p: int, s: int, reduce) -> np.ndarray:
    n, c, h, w = x.shape
    ho, wo = (h - p) // s + 1, (w - p) // s + 1
    out = np.empty((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = reduce(x[:, :, i * s : i * s + p, j * s : j * s + p], axis=(2, 3))
    return out


def test_overlapping_windows_match_numpy():
    x = _normal(np.random.default_rng(4), (2, 3, 7, 8))
    for op, reduce in ((make_max_pool2d(3, 2), np.max), (make_avg_pool2d(3, 2), np.mean)):
        y, _ = op.forward((), x)
        assert y.shape == (2, 3, 3, 3)
        np.testing.assert_allclose(y, _strided_reference(np.asarray(x), 3, 2, reduce), rtol=1e-14)
        assert init_params(op, jax.random.key(0), (3, 7, 8))[0] == (3, 3, 3)
    assert make_max_pool2d(2, 2).name == "max_pool2d"
    assert make_max_pool2d(3, 2).name == "max_pool2d[3,2]"
    assert (make_avg_pool2d().name, make_avg_pool2d(3).name) == ("avg_pool2d", "avg_pool2d[3]")


def test_overlapping_max_sums_the_windows_that_select_one_element():
    # 1x1x3x5, 3x3 windows at stride 2: two windows, both contain column 2, whose 9 is the max
    x = jnp.array([[1.0, 2.0, 9.0, 0.0, 3.0], [0.0, 1.0, 2.0, 5.0, 1.0], [4.0, 0.0, 9.0, 1.0, 2.0]])
    op = make_max_pool2d(3, 2)
    y, cache = op.forward((), x.reshape(1, 1, 3, 5))
    np.testing.assert_array_equal(y.ravel(), [9.0, 9.0])
    _, dx = op.backward(cache, jnp.array([10.0, 100.0]).reshape(1, 1, 1, 2))
    expected = np.zeros((3, 5))
    expected[0, 2] = 110.0  # ties: (0,2) is the first 9 in row-major order of both windows
    np.testing.assert_array_equal(dx.reshape(3, 5), expected)
    _, vjp = jax.vjp(lambda v: op.forward((), v)[0], x.reshape(1, 1, 3, 5))
    np.testing.assert_array_equal(vjp(jnp.array([10.0, 100.0]).reshape(1, 1, 1, 2))[0], dx)


def test_avg_pool_spreads_dy_and_leaves_unreached_cells_zero():
    x = _normal(np.random.default_rng(5), (1, 2, 5, 5))
    op = make_avg_pool2d(2, 3)  # windows at 0 and 3: row/column 2 is never reached
    y, cache = op.forward((), x)
    _, dx = op.backward(cache, jnp.ones_like(y))
    assert y.shape == (1, 2, 2, 2) and not np.any(dx[:, :, 2, :]) and not np.any(dx[:, :, :, 2])
    np.testing.assert_allclose(dx[:, :, :2, :2], 0.25)
    op3 = make_avg_pool2d(3, 2)
    y3, cache3 = op3.forward((), x)
    _, dx3 = op3.backward(cache3, jnp.ones_like(y3))
    assert float(dx3[0, 0, 2, 2]) == pytest.approx(4 / 9)  # the centre is in all four windows
    with pytest.raises(ValueError, match=r"avg_pool2d\[2,3\]: dy"):
        op.backward(cache, jnp.ones((1, 2, 3, 3)))
    with pytest.raises(ValueError, match="smaller than the 3x3 window"):
        op3.forward((), jnp.ones((1, 1, 2, 5)))
    with pytest.raises(ValueError, match=r"avg_pool2d: stride must be an integer in \[1, inf\)"):
        make_avg_pool2d(2, 0)
    with pytest.raises(TypeError, match="max_pool2d: stride must be an integer"):
        make_max_pool2d(3, 1.5)
