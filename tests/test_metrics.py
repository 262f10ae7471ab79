"""jaxscratch.train.metrics: one accuracy, MAE, RMSE and R^2, on host values and inside jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch.train.metrics import accuracy, binary_accuracy, mae, r2, rmse

T = np.array([[1.0], [2.0], [3.0], [4.0]])
P = np.array([[1.5], [2.0], [2.0], [5.0]])
SCORES = np.array([[0.1, 0.9, 0.0], [0.8, 0.2, 0.1], [0.3, 0.7, 0.2], [0.1, 0.2, 0.9]])
IDS = np.array([1, 0, 0, 2])  # rows 0, 1, 3 right: 3/4


def test_regression_values_on_host_are_floats():
    assert mae(P, T) == pytest.approx(2.5 / 4)
    assert rmse(P, T) == pytest.approx(np.sqrt(2.25 / 4))
    assert r2(P, T) == pytest.approx(1.0 - 2.25 / 5.0)
    assert r2(T, T) == 1.0
    assert all(type(f(P, T)) is float for f in (mae, rmse, r2))


def test_host_metrics_are_float64():
    """A float32 mean would lose the 1e-9 difference; the host path keeps it."""
    t = np.full(10, 1e4)
    assert mae(t + 1e-9, t) == pytest.approx(1e-9, rel=1e-3)


@pytest.mark.parametrize("metric", [mae, rmse, r2])
def test_regression_metrics_inside_jit_match_host(metric):
    got = jax.jit(metric)(jnp.asarray(P), jnp.asarray(T))
    assert isinstance(got, jax.Array) and got.shape == ()
    assert float(got) == pytest.approx(metric(P, T), rel=1e-6)


@pytest.mark.parametrize("metric", [mae, rmse, r2, binary_accuracy])
def test_regression_metrics_refuse_n1_against_n(metric):
    t = np.arange(5.0) % 2
    with pytest.raises(ValueError, match=r"\(5, 1\).*\(5,\)"):
        metric(t[:, None], t)
    with pytest.raises(ValueError, match=r"\(5,\).*\(5, 1\)"):
        metric(t, t[:, None])
    with pytest.raises(ValueError, match="shape"):
        jax.jit(metric)(jnp.asarray(t[:, None]), jnp.asarray(t))


def test_regression_value_errors():
    with pytest.raises(ValueError, match="constant"):
        r2(np.arange(3.0), np.ones(3))
    with pytest.raises(ValueError, match="empty"):
        mae(np.zeros(0), np.zeros(0))
    # inside jit a constant target cannot be refused: R^2 is -inf, not a plausible number
    assert float(jax.jit(r2)(jnp.arange(3.0), jnp.ones(3))) == -np.inf


@pytest.mark.parametrize(
    "labels",
    [IDS, IDS.astype(np.float64), np.eye(3)[IDS], np.eye(3, dtype=int)[IDS]],
    ids=["int ids", "float ids", "one-hot", "int one-hot"],
)
def test_accuracy_label_forms(labels):
    assert accuracy(SCORES, labels) == 0.75
    got = jax.jit(accuracy)(jnp.asarray(SCORES), jnp.asarray(labels))
    assert got.shape == () and float(got) == 0.75


def test_accuracy_of_probability_targets_and_class_ids():
    soft = np.eye(3)[IDS] * 0.6 + 0.1  # rows of probabilities, argmax = IDS
    assert accuracy(SCORES, soft) == 0.75
    assert accuracy(np.array([1, 0, 1]), np.array([1, 0, 0])) == pytest.approx(2 / 3)


def test_accuracy_over_time_steps():
    """(n, T, k) scores against (n, T) ids or (n, T, k) one-hot: the mean over every step."""
    scores = np.stack([SCORES, SCORES[::-1]])  # (2, 4, 3)
    ids = np.stack([IDS, IDS])  # second sequence: reversed scores, argmax 2,0,1,1 -> 1/4 right
    assert accuracy(scores, ids) == pytest.approx(4 / 8)
    assert accuracy(scores, np.eye(3)[ids]) == pytest.approx(4 / 8)
    assert float(jax.jit(accuracy)(jnp.asarray(scores), jnp.asarray(ids))) == 0.5


@pytest.mark.parametrize(
    "pred, labels, match",
    [
        (np.zeros((3, 2)), np.zeros(4, dtype=int), r"\(4,\).*\(3, 2\)"),
        (np.zeros((3, 2)), np.zeros((3, 3)), r"\(3, 3\).*\(3, 2\)"),
        (np.zeros((3, 2)), np.zeros((3, 1)), r"\(3, 1\).*\(3, 2\)"),
        (np.zeros((3, 1)), np.zeros((3, 1)), r"binary_accuracy"),
        (np.zeros(3), np.zeros(3), r"binary_accuracy"),
        (np.array([1, 0]), np.array([[1], [0]]), r"\(2,\).*\(2, 1\)"),
        (np.zeros((0, 2)), np.zeros(0, dtype=int), "empty"),
    ],
)
def test_accuracy_refuses_mismatched_shapes(pred, labels, match):
    with pytest.raises(ValueError, match=match):
        accuracy(pred, labels)


def test_accuracy_shape_errors_raise_inside_jit_too():
    with pytest.raises(ValueError, match=r"\(4,\)"):
        jax.jit(accuracy)(jnp.zeros((3, 2)), jnp.zeros(4, dtype=jnp.int32))


@pytest.mark.parametrize("bad", [3, -1, 0.5])
def test_accuracy_refuses_broken_labels_on_host(bad):
    labels = IDS.astype(np.float64)
    labels[2] = bad
    with pytest.raises(ValueError, match=r"class ids in \[0, 3\)"):
        accuracy(SCORES, labels)
    with pytest.raises(ValueError, match=r"class ids in \[0, 3\)"):
        accuracy(jnp.asarray(SCORES), jnp.asarray(labels))  # concrete device arrays: checked


def test_broken_labels_inside_jit_count_as_wrong():
    """Inside jit the value is unknown: an out-of-range id matches no argmax (never a right one)."""
    labels = IDS.copy()
    labels[0] = 7  # was right
    assert float(jax.jit(accuracy)(jnp.asarray(SCORES), jnp.asarray(labels))) == 0.5


def test_binary_accuracy():
    prob = np.array([[0.9], [0.2], [0.6], [0.4]])
    y = np.array([[1.0], [0.0], [0.0], [0.0]])
    assert binary_accuracy(prob, y) == 0.75
    assert binary_accuracy(prob - 0.5, y, threshold=0.0) == 0.75
    assert float(jax.jit(binary_accuracy)(jnp.asarray(prob), jnp.asarray(y))) == 0.75
    with pytest.raises(ValueError, match="0 or 1"):
        binary_accuracy(prob, y + 2)
    with pytest.raises(TypeError, match="threshold"):
        binary_accuracy(prob, y, threshold="0.5")
