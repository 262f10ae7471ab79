"""Losses: softmax cross-entropy (exact at 1e4, labels, probability rows, bad targets) and MSE."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch.ops.losses import LOSSES, mean_squared_error, softmax_cross_entropy
from jaxscratch.oracle.check import check_loss

KEY = jax.random.key(4)


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


# the book's softmax cross-entropy (value and gradient disagree): a mutant in
# jaxscratch.book.errata, caught in tests/test_errata.py


def test_losses_dict():
    assert LOSSES["softmax_cross_entropy"] is softmax_cross_entropy
    assert LOSSES["mse"] is mean_squared_error


def test_mse_rejects_broadcasting_shapes():
    with pytest.raises(ValueError, match=r"\(5, 1\) does not match target shape \(5,\)"):
        mean_squared_error.forward(jnp.ones((5, 1)), jnp.ones((5,)))
    loss, cache = mean_squared_error.forward(jnp.array([[1.0], [3.0]]), jnp.array([[0.0], [0.0]]))
    assert float(loss) == pytest.approx(5.0)  # (1 + 9) / 2: the book's sum of squares / batch
    np.testing.assert_allclose(mean_squared_error.backward(cache), [[1.0], [3.0]])
