"""Chapter 4 ops: activations at extremes, dropout, Dense-with-dropout, softmax cross-entropy, Glorot."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch.core import Loss, Op, apply, init_params, serial
from jaxscratch.ops import activations as A
from jaxscratch.ops import registry
from jaxscratch.ops.dense import dense
from jaxscratch.ops.dropout import dropout
from jaxscratch.ops.losses import LOSSES, mean_squared_error, softmax_cross_entropy
from jaxscratch.oracle.check import check_loss, check_op, check_registry

KEY = jax.random.key(4)

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


# ---------------------------------------------------------------- oracle rows


@pytest.mark.parametrize("name", CH4_OPS + ["softmax_cross_entropy", "mean_squared_error"])
def test_registered_with_passing_oracle(name):
    if name in ("softmax_cross_entropy", "mean_squared_error"):
        [report] = check_registry([f"loss:{name}"])
    else:
        assert name in registry(), f"{name} is not registered"
        [report] = check_registry([name])
    assert report.passed, report.detail
    assert report.vjp_max_rel < 1e-12


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


def test_oracle_catches_the_books_softmax_ce_bug():
    """The book's loss adds (1-y) log(1-p) but its gradient is softmax - y: the oracle must fail."""

    def fwd(pred, target):
        p = jax.nn.softmax(pred, axis=1)
        n = pred.shape[0]
        value = -jnp.sum(target * jnp.log(p) + (1 - target) * jnp.log(1 - p)) / n
        return value, (p, target, n)

    def bwd(cache):
        p, t, n = cache
        return (p - t) / n

    logits = jax.random.normal(KEY, (5, 3), jnp.float64)
    target = jax.nn.one_hot(jnp.array([0, 2, 1, 1, 0]), 3, dtype=jnp.float64)
    assert not check_loss(Loss("book_sce", fwd, bwd), logits, target).passed
    assert check_loss(softmax_cross_entropy, logits, target).passed


# ---------------------------------------------------------------- activations


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


def test_softmax_rows_sum_to_one_and_stable():
    x = jnp.array([[1e4, 0.0, -1e4], [1.0, 2.0, 3.0]], jnp.float64)
    y, _ = A.softmax.forward((), x)
    np.testing.assert_allclose(np.asarray(y).sum(axis=1), [1.0, 1.0], rtol=1e-15)
    np.testing.assert_array_equal(np.asarray(y)[0], [1.0, 0.0, 0.0])
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(np.asarray(y)[1], e / e.sum(), rtol=1e-15)


# ---------------------------------------------------------------- softmax cross-entropy

EXTREME_LOGITS = np.array(
    [[1e4, 0.0, -1e4], [1e4, 1e4, 1e4], [-1e4, -1e4, 0.0], [1.0, 2.0, 3.0]], np.float64
)
EXTREME_LABELS = np.array([1, 0, 0, 2])


def _expected_extreme():
    """By hand. Row 0: lse = 1e4 (exp(-1e4) is 0 in float64), -log p[1] = 1e4 - 0 = 1e4, softmax
    (1, 0, 0). Row 1: -log p[0] = log 3, softmax 1/3 each. Row 2: lse = 0, -log p[0] = 0 + 1e4,
    softmax (0, 0, 1). Row 3: -log p[2] = log(e^1 + e^2 + e^3) - 3 = log(1 + e^-1 + e^-2)."""
    s3 = math.log1p(math.exp(-1.0) + math.exp(-2.0))
    loss = (1e4 + math.log(3.0) + 1e4 + s3) / 4
    e = np.exp(np.array([1.0, 2.0, 3.0]) - 3.0 - s3)
    probs = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.0, 0.0, 1.0], e])
    onehot = np.eye(3)[EXTREME_LABELS]
    return loss, (probs - onehot) / 4


@pytest.mark.parametrize("labels", ["int", "onehot"])
def test_softmax_ce_exact_at_1e4(labels):
    target = EXTREME_LABELS if labels == "int" else np.eye(3)[EXTREME_LABELS]
    value, cache = softmax_cross_entropy.forward(jnp.asarray(EXTREME_LOGITS), jnp.asarray(target))
    grad = softmax_cross_entropy.backward(cache)
    want_loss, want_grad = _expected_extreme()
    assert np.isfinite(float(value)) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(float(value), want_loss, rtol=1e-15)
    np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-14, atol=1e-17)
    # the hand-derived gradient is also jax.grad's
    auto = jax.grad(lambda p: softmax_cross_entropy.forward(p, jnp.asarray(target))[0])(
        jnp.asarray(EXTREME_LOGITS)
    )
    np.testing.assert_allclose(np.asarray(grad), np.asarray(auto), rtol=1e-14, atol=1e-17)


def test_softmax_ce_float32_finite_at_1e4():
    value, cache = softmax_cross_entropy.forward(
        jnp.asarray(EXTREME_LOGITS, jnp.float32), jnp.asarray(EXTREME_LABELS, jnp.int32)
    )
    assert value.dtype == jnp.float32
    np.testing.assert_allclose(float(value), _expected_extreme()[0], rtol=1e-6)
    assert np.all(np.isfinite(softmax_cross_entropy.backward(cache)))


def test_softmax_ce_integer_labels_match_one_hot_and_oracle():
    k1, k2 = jax.random.split(KEY)
    logits = 2.0 * jax.random.normal(k1, (9, 5), jnp.float64)
    labels = jax.random.randint(k2, (9,), 0, 5)
    v_int, c_int = softmax_cross_entropy.forward(logits, labels)
    v_hot, c_hot = softmax_cross_entropy.forward(logits, jax.nn.one_hot(labels, 5, dtype=float))
    np.testing.assert_allclose(float(v_int), float(v_hot), rtol=1e-15)
    np.testing.assert_allclose(
        softmax_cross_entropy.backward(c_int), softmax_cross_entropy.backward(c_hot), rtol=1e-15
    )
    want = -np.mean(np.asarray(jax.nn.log_softmax(logits))[np.arange(9), np.asarray(labels)])
    np.testing.assert_allclose(float(v_int), want, rtol=1e-14)
    assert check_loss(softmax_cross_entropy, logits, labels).passed


def test_softmax_ce_accepts_probability_rows():
    logits = jnp.array([[0.5, -1.0, 2.0], [0.0, 0.1, 0.2]], jnp.float64)
    target = jnp.array([[0.25, 0.25, 0.5], [1.0, 0.0, 0.0]], jnp.float64)
    value, cache = softmax_cross_entropy.forward(logits, target)
    want = -np.sum(np.asarray(target) * np.asarray(jax.nn.log_softmax(logits))) / 2
    np.testing.assert_allclose(float(value), want, rtol=1e-14)
    assert check_loss(softmax_cross_entropy, logits, target).passed


@pytest.mark.parametrize(
    "target, exc, match",
    [
        (np.array([0, 3, 1]), ValueError, "label 3 at index 1 is outside 0..2"),
        (np.array([0, -1, 1]), ValueError, "label -1 at index 1"),
        (np.array([0.0, 1.0, 2.0]), TypeError, "integer class ids"),
        (np.array([True, False, True]), TypeError, "integer class ids"),
        (np.array([0, 1]), ValueError, "2 integer labels"),
        (np.eye(3)[[0, 1, 1]] * 2.0, ValueError, "row 0"),
        (np.zeros((3, 3)), ValueError, "row 0"),
        (np.array([[1.0, 0, 0], [0, 1, 0], [1.5, -0.5, 0]]), ValueError, "row 2"),
        (np.eye(3, dtype=np.int32), TypeError, "floating point"),
        (np.eye(4)[:3], ValueError, "matches neither"),
    ],
)
def test_softmax_ce_rejects_bad_targets(target, exc, match):
    logits = jnp.zeros((3, 3), jnp.float64)
    with pytest.raises(exc, match=match):
        softmax_cross_entropy.forward(logits, jnp.asarray(target))


def test_softmax_ce_rejects_bad_logits():
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: expected logits"):
        softmax_cross_entropy.forward(jnp.zeros(3), jnp.array([0, 1, 2]))


def test_softmax_ce_bad_labels_under_jit_are_nan_not_silent():
    logits = jax.random.normal(KEY, (4, 3), jnp.float64)
    f = jax.jit(lambda p, t: softmax_cross_entropy.forward(p, t)[0])
    assert np.isfinite(float(f(logits, jnp.array([0, 1, 2, 0]))))
    assert np.isnan(float(f(logits, jnp.array([0, 1, 3, 0]))))
    assert np.isnan(float(f(logits, jnp.eye(3)[jnp.array([0, 1, 2, 0])] * 0.5)))
    g = jax.jit(lambda p, t: softmax_cross_entropy.backward(softmax_cross_entropy.forward(p, t)[1]))
    grad = np.asarray(g(logits, jnp.array([0, 1, 3, 0])))
    assert np.all(np.isnan(grad[2])) and np.all(np.isfinite(grad[[0, 1, 3]]))


def test_losses_dict():
    assert LOSSES["softmax_cross_entropy"] is softmax_cross_entropy
    assert LOSSES["mse"] is mean_squared_error


# ---------------------------------------------------------------- dropout


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


# ---------------------------------------------------------------- Glorot


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
    with pytest.raises(ValueError, match="dense: init must be one of 'normal', 'glorot'"):
        dense(3, init="he")
