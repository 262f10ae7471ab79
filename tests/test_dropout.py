"""Dropout: keys, masks, the book's and the inverted scaling, argument checks, a broken backward."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch.core import Op, apply, init_params, serial
from jaxscratch.ops import activations as A
from jaxscratch.ops.dense import dense
from jaxscratch.ops.dropout import MASKS, dropout, keep_mask, keep_threshold
from jaxscratch.oracle.check import check_op

KEY = jax.random.key(4)


def test_dropout_refuses_training_without_key():
    op = dropout(0.8)
    x = jnp.ones((3, 4))
    with pytest.raises(ValueError, match=r"dropout\[0.8\]: a jax.random key is required"):
        op.forward((), x)
    with pytest.raises(ValueError, match="key is required"):
        apply(op, (), x, train=True)
    net = dense(4, "tanh", dropout=0.8)
    _, params = init_params(net, KEY, (4,))
    with pytest.raises(ValueError, match="key is required"):
        apply(net, params, x)
    # inference needs no key
    y, _ = apply(net, params, x, train=False)
    assert y.shape == (3, 4)


def test_dropout_inference_scaling():
    x = jax.random.normal(KEY, (5, 7), jnp.float64)
    dy = jax.random.normal(jax.random.key(1), (5, 7), jnp.float64)
    book, inv = dropout(0.8), dropout(0.8, inverted=True)
    y, cache = book.forward((), x, train=False)
    np.testing.assert_array_equal(y, 0.8 * x)
    np.testing.assert_array_equal(book.backward(cache, dy)[1], 0.8 * dy)
    y, cache = inv.forward((), x, train=False)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(inv.backward(cache, dy)[1], dy)


@pytest.mark.parametrize("inverted", [False, True])
def test_dropout_train_expectation(inverted):
    """Kept fraction ~ keep_prob; E[train output] = inference output (book: 0.7 x; inverted: x)."""
    keep = 0.7
    op = dropout(keep, inverted=inverted)
    x = jnp.ones((400, 500), jnp.float64)
    y, mask = op.forward((), x, key=KEY)
    assert mask.dtype == jnp.bool_ and mask.shape == x.shape
    frac = float(jnp.mean(mask))
    assert abs(frac - keep) < 0.005  # 200k Bernoulli draws: std 0.001
    kept_value = 1.0 / keep if inverted else 1.0
    np.testing.assert_allclose(np.unique(np.asarray(y)), [0.0, kept_value], rtol=1e-15)
    y_inf, _ = op.forward((), x, train=False)
    np.testing.assert_allclose(float(jnp.mean(y)), float(jnp.mean(y_inf)), rtol=0.01)


@pytest.mark.parametrize("inverted", [False, True])
def test_dropout_backward_uses_forward_mask(inverted):
    op = dropout(0.5, inverted=inverted)
    x = jax.random.normal(KEY, (30, 40), jnp.float64) + 5.0  # nonzero everywhere
    dy = jax.random.normal(jax.random.key(2), x.shape, jnp.float64)
    y, mask = op.forward((), x, key=jax.random.key(9))
    _, dx = op.backward(mask, dy)
    scale = 2.0 if inverted else 1.0
    np.testing.assert_array_equal(np.asarray(dx), np.where(np.asarray(y) != 0, scale * dy, 0.0))
    # same key, same mask; another key, another mask
    np.testing.assert_array_equal(op.forward((), x, key=jax.random.key(9))[1], mask)
    assert not np.array_equal(op.forward((), x, key=jax.random.key(10))[1], mask)
    # under jit too
    jf = jax.jit(lambda x, k: op.forward((), x, key=k))
    np.testing.assert_array_equal(jf(x, jax.random.key(9))[1], mask)


def test_serial_gives_each_dropout_its_own_key():
    net = serial(dropout(0.5), A.linear, dropout(0.5))
    assert net.stochastic
    x = jnp.ones((50, 60), jnp.float64)
    _, (m1, _, m2) = net.forward(((), (), ()), x, key=KEY)
    assert not np.array_equal(m1, m2)


def test_dropout_keep_one_is_identity():
    op = dropout(1.0)
    x = jax.random.normal(KEY, (4, 6))
    y, mask = op.forward((), x, key=KEY)
    np.testing.assert_array_equal(y, x)
    assert bool(jnp.all(mask))


@pytest.mark.parametrize("keep", [0.0, -0.1, 1.5, float("nan"), float("inf")])
def test_dropout_rejects_bad_keep_prob(keep):
    with pytest.raises(ValueError, match=r"dropout: keep_prob must be a finite number in \(0, 1\]"):
        dropout(keep)


def test_dropout_rejects_bad_types():
    with pytest.raises(TypeError, match="keep_prob"):
        dropout("0.8")
    with pytest.raises(TypeError, match="keep_prob"):
        dropout(True)
    with pytest.raises(TypeError, match="inverted"):
        dropout(0.8, inverted=1)
    with pytest.raises(ValueError, match=r"dense: dropout must be a finite number in \(0, 1\]"):
        dense(4, "tanh", dropout=0.0)
    with pytest.raises(TypeError, match="dense: dropout must be a number"):
        dense(4, "tanh", dropout="0.8")


def test_oracle_catches_a_wrong_dropout_backward():
    """A backward that ignores the forward mask (redraws one) must fail the oracle."""
    good = dropout(0.7)

    def bad_backward(cache, dy):
        mask = jax.random.bernoulli(jax.random.key(123), 0.7, dy.shape)
        return (), jnp.where(mask, dy, 0.0)

    bad = Op("bad_dropout", good.forward, bad_backward, None, True)
    x = jax.random.normal(KEY, (6, 9), jnp.float64)
    assert check_op(good, (), x).passed
    assert not check_op(bad, (), x).passed


# ----------------------------------------------------------------------------------- the mask


def test_the_hash_mask_keeps_exactly_the_threshold_over_two_to_the_32():
    for keep in (0.8, 0.5, 0.1, 1 - 2**-32):
        t = keep_threshold(keep)
        assert t == int(keep * 2**32) and 0 <= keep - t / 2**32 < 2**-32
    assert bool(jnp.all(keep_mask(KEY, 1.0, (3, 5))))


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("keep", [0.8, 0.5, 0.1])
def test_the_mask_keeps_keep_prob_of_the_entries(mask, keep):
    """The kept fraction of 2**20 draws is within 4 standard errors of keep_prob, per key."""
    for k in range(3):
        m = np.asarray(keep_mask(jax.random.key(k), keep, (1 << 10, 1 << 10), mask), np.float64)
        assert abs(m.mean() - keep) < 4 * np.sqrt(keep * (1 - keep) / m.size), (k, m.mean())


def test_the_hash_mask_has_no_correlation_between_neighbours_keys_or_layers():
    """Lag-1, lag-28 (an image row) and lag-784 (an image) correlations, and the correlation of
    two keys' masks, are all within 4.5 standard errors of zero (2**20 entries)."""
    n = 1 << 20
    m = np.asarray(keep_mask(jax.random.key(0), 0.5, (n,)), np.float64)
    other = np.asarray(keep_mask(jax.random.key(1), 0.5, (n,)), np.float64)
    bound = 4.5 / np.sqrt(n)
    for lag in (1, 28, 784):
        assert abs(np.corrcoef(m[:-lag], m[lag:])[0, 1]) < bound, lag
    assert abs(np.corrcoef(m, other)[0, 1]) < bound


def test_the_mask_is_a_pure_function_of_key_and_shape_under_jit_and_vmap():
    keys = jax.random.split(KEY, 3)
    eager = [keep_mask(k, 0.7, (4, 6)) for k in keys]
    jitted = jax.jit(lambda k: keep_mask(k, 0.7, (4, 6)))
    mapped = jax.vmap(lambda k: keep_mask(k, 0.7, (4, 6)))(keys)
    for i, k in enumerate(keys):
        np.testing.assert_array_equal(eager[i], jitted(k))
        np.testing.assert_array_equal(eager[i], mapped[i])
    assert not np.array_equal(eager[0], eager[1])


def test_threefry_is_the_old_bernoulli_draw_and_a_bad_mask_name_is_refused():
    np.testing.assert_array_equal(
        keep_mask(KEY, 0.8, (5, 7), "threefry"), jax.random.bernoulli(KEY, 0.8, (5, 7))
    )
    assert dropout(0.8, mask="threefry").name == "dropout[0.8,threefry]"
    assert dense(4, "tanh", dropout=0.8, dropout_mask="threefry").name.endswith("threefry]")
    with pytest.raises(ValueError, match=r"dense: dropout_mask must be one of"):
        dense(4, "tanh", dropout_mask="philox")  # refused even without dropout
    with pytest.raises(ValueError, match=r"dropout: mask must be one of \('hash', 'threefry'\)"):
        dropout(0.8, mask="philox")
    with pytest.raises(ValueError, match=r"keep_mask: 4294967296 elements in \(65536, 65536\)"):
        jax.eval_shape(lambda k: keep_mask(k, 0.5, (1 << 16, 1 << 16)), KEY)
