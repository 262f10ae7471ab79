"""fit with the extensions of chapter 4: softmax CE, momentum, lr schedules, dropout (synthetic data)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch.core import Loss, init_params, serial
from jaxscratch.ops.dense import dense
from jaxscratch.ops.losses import mean_squared_error, softmax_cross_entropy
from jaxscratch.optim.optimizers import sgd, sgd_momentum
from jaxscratch.optim.schedules import exponential_decay, linear_decay
from jaxscratch.train import fit, predict


def _blobs(n_per_class: int = 100, k: int = 4, dim: int = 6, seed: int = 0, noise_seed: int = 0):
    """k well separated Gaussian classes in ``dim`` dimensions; labels 0..k-1 (int32).

    ``seed`` draws the class centres, ``noise_seed`` the points around them (a test set: same
    ``seed``, another ``noise_seed``)."""
    centres = 3.0 * np.random.default_rng(seed).standard_normal((k, dim))
    rng = np.random.default_rng([seed, noise_seed])
    X = np.concatenate([c + rng.standard_normal((n_per_class, dim)) for c in centres])
    y = np.repeat(np.arange(k, dtype=np.int32), n_per_class)
    return X, y


def _accuracy(pred, y):
    labels = y if y.ndim == 1 else jnp.argmax(y, axis=1)
    return jnp.mean(jnp.argmax(pred, axis=1) == labels)


def test_smoke_softmax_ce_momentum_decay_dropout_reaches_high_accuracy():
    X, y = _blobs(n_per_class=60, seed=1)
    Xe, ye = _blobs(n_per_class=60, seed=1, noise_seed=1)  # same classes, new points
    net = serial(
        dense(32, "tanh", init="glorot", dropout=0.8),
        dense(4, "linear", init="glorot"),
    )
    _, params = init_params(net, jax.random.key(0), (6,))
    epochs = 10
    res = fit(
        net,
        softmax_cross_entropy,
        sgd_momentum(0.9),
        params,
        X,
        y,
        epochs=epochs,
        batch_size=20,
        key=jax.random.key(1),
        lr=linear_decay(0.05, 0.01, epochs),
        eval_data=(Xe, ye),
        eval_every=5,
        stopping=None,
        metrics={"accuracy": _accuracy},
    )
    h = res.history
    assert h.lr == pytest.approx(linear_decay(0.05, 0.01, epochs).values(), rel=1e-12)
    assert h.eval_metrics[-1]["accuracy"] >= 0.97
    assert h.train_loss[-1] < 0.5 * h.train_loss[0]
    # inference is deterministic (dropout off) and agrees with the evaluator
    pred = predict(net, res.params, Xe)
    assert float(_accuracy(pred, jnp.asarray(ye))) == pytest.approx(h.eval_metrics[-1]["accuracy"])


def test_fit_momentum_with_decay_matches_hand_computation():
    """One full batch per epoch, no shuffle: three epochs of the book's momentum by hand."""
    X = np.array([[1.0, 2.0], [0.5, -1.0], [-1.5, 0.5]])
    y = np.array([[1.0], [0.0], [2.0]])
    net = dense(1, "linear")
    W0, B0 = np.array([[0.3], [-0.2]]), np.array([[0.1]])
    sched = exponential_decay(0.2, 0.05, 3)  # 0.2, 0.1, 0.05
    res = fit(
        net,
        mean_squared_error,
        sgd_momentum(0.9),
        {"W": jnp.asarray(W0), "B": jnp.asarray(B0)},
        X,
        y,
        epochs=3,
        batch_size=3,
        shuffle=False,
        lr=sched,
    )
    W, B, vW, vB = W0.copy(), B0.copy(), np.zeros_like(W0), np.zeros_like(B0)
    for lr in (0.2, 0.1, 0.05):
        dP = 2.0 * (X @ W + B - y) / 3  # MSE gradient, sum of squares / batch
        vW = 0.9 * vW + lr * (X.T @ dP)
        vB = 0.9 * vB + lr * dP.sum(axis=0, keepdims=True)
        W, B = W - vW, B - vB
    np.testing.assert_allclose(np.asarray(res.params["W"]), W, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(res.params["B"]), B, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(res.opt_state.velocity["W"]), vW, rtol=1e-12)
    assert res.history.lr == pytest.approx([0.2, 0.1, 0.05], rel=1e-14)


def test_schedule_does_not_recompile():
    """Fits with different schedules and the cached optimizer trace the step only once."""
    traces = []

    def counting_forward(pred, target):
        traces.append(1)  # runs in Python only while jax traces the step
        return softmax_cross_entropy.forward(pred, target)

    loss = Loss("counted_sce", counting_forward, softmax_cross_entropy.backward)
    X, y = _blobs(n_per_class=20, k=3, dim=4)
    net = dense(3, "linear")
    _, params = init_params(net, jax.random.key(0), (4,))
    common = dict(epochs=4, batch_size=10, key=jax.random.key(2), eval_every=4)
    fit(net, loss, sgd_momentum(0.9), params, X, y, lr=0.1, **common)
    n_traces = len(traces)
    assert n_traces > 0
    for lr in (linear_decay(0.15, 0.05, 4), exponential_decay(0.2, 0.05, 4)):
        res = fit(net, loss, sgd_momentum(momentum=0.9), params, X, y, lr=lr, **common)
        assert res.history.lr == pytest.approx(lr.values(), rel=1e-14)
    assert len(traces) == n_traces


def test_dropout_training_is_reproducible_and_key_dependent():
    X, y = _blobs(n_per_class=30, k=3, dim=5)
    net = serial(dense(8, "tanh", dropout=0.5), dense(3, "linear"))
    _, params = init_params(net, jax.random.key(0), (5,))

    def run(seed):
        return fit(
            net,
            softmax_cross_entropy,
            sgd(),
            params,
            X,
            y,
            epochs=2,
            batch_size=15,
            key=jax.random.key(seed),
            lr=0.05,
        ).params

    a, b, c = run(3), run(3), run(4)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert not np.array_equal(np.asarray(a[0][0]["W"]), np.asarray(c[0][0]["W"]))


def test_fit_refuses_dropout_without_key():
    X, y = _blobs(n_per_class=5, k=2, dim=3)
    net = serial(dense(4, "tanh", dropout=0.8), dense(2))
    _, params = init_params(net, jax.random.key(0), (3,))
    with pytest.raises(ValueError, match="key"):
        fit(net, softmax_cross_entropy, sgd(), params, X, y, epochs=1, batch_size=5, shuffle=False)


def test_out_of_range_labels_in_training_are_not_silent():
    """fit checks class ids on the host before training: the bad row and value are named (under
    jit the loss could not raise; it would turn NaN)."""
    X, y = _blobs(n_per_class=10, k=3, dim=4)
    y = y.copy()
    y[7] = 3  # a fourth class for a 3-way output
    net = dense(3, "linear")
    _, params = init_params(net, jax.random.key(0), (4,))
    with pytest.raises(ValueError, match=r"fit: training y\[7\] = 3 is not a class id"):
        fit(net, softmax_cross_entropy, sgd(), params, X, y, epochs=1, batch_size=10, shuffle=False)
