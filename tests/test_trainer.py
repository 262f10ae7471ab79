"""The jit-compiled trainer: batching, shuffling, evaluation, early stopping, divergence, resume."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch.core import serial
from jaxscratch.ops.dense import dense
from jaxscratch.ops.losses import mean_squared_error
from jaxscratch.optim.optimizers import Optimizer, sgd
from jaxscratch.train.loop import TrainingDiverged, fit, make_step, predict

NET = serial(dense(4, "sigmoid"), dense(1), name="trainer_test_net")
OPT = sgd()


class CountState(NamedTuple):
    steps: jax.Array


def counting_sgd() -> Optimizer:
    """SGD whose state counts its steps, to check that early stopping restores optimizer state."""

    def init(params):
        return CountState(jnp.zeros((), jnp.int32))

    def update(grads, state, params, lr):
        new = jax.tree.map(lambda p, g: p - lr * g, params, grads)
        return new, CountState(state.steps + 1)

    return Optimizer(init, update)


COUNT_OPT = counting_sgd()


def data(n=10, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ np.arange(1.0, d + 1.0).reshape(d, 1) * 0.3
    return X, y


def init(seed=0):
    return NET.init(jax.random.key(seed), (3,))[1]


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_short_last_batch_matches_a_manual_loop():
    X, y = data(10)
    params = init()
    res = fit(
        NET, mean_squared_error, OPT, params, X, y, epochs=1, batch_size=4, lr=0.1, shuffle=False
    )
    step = make_step(NET, mean_squared_error, OPT)
    p, s = params, OPT.init(params)
    losses = []
    for lo, hi in [(0, 4), (4, 8), (8, 10)]:  # the last batch has 2 rows, its loss divides by 2
        p, s, v = step(p, s, jnp.asarray(X[lo:hi]), jnp.asarray(y[lo:hi]), 0.1, None)
        losses.append(float(v))
    for a, b in zip(jax.tree.leaves(res.params), jax.tree.leaves(p), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    expected = (4 * losses[0] + 4 * losses[1] + 2 * losses[2]) / 10
    assert res.history.train_loss == [pytest.approx(expected, rel=1e-12)]


def test_scan_and_per_step_dispatch_agree():
    X, y = data(23)
    params = init()
    kw = dict(
        epochs=3, batch_size=5, lr=0.05, key=jax.random.key(1), eval_data=(X, y), eval_every=2
    )
    a = fit(NET, mean_squared_error, OPT, params, X, y, **kw)
    b = fit(NET, mean_squared_error, OPT, params, X, y, step_mode="step", **kw)
    for x1, x2 in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_allclose(x1, x2, rtol=1e-12)
    np.testing.assert_allclose(a.history.train_loss, b.history.train_loss, rtol=1e-12)


def test_shuffling_depends_on_the_key_and_is_reproducible():
    X, y = data(30)
    params = init()
    kw = dict(epochs=2, batch_size=7, lr=0.05)
    a = fit(NET, mean_squared_error, OPT, params, X, y, key=jax.random.key(1), **kw)
    b = fit(NET, mean_squared_error, OPT, params, X, y, key=jax.random.key(1), **kw)
    c = fit(NET, mean_squared_error, OPT, params, X, y, key=jax.random.key(2), **kw)
    assert_trees_equal(a.params, b.params)
    assert not np.allclose(a.params[0]["W"], c.params[0]["W"])


def test_explicit_permutations_are_followed():
    X, y = data(8)
    params = init()
    perms = np.stack([np.arange(8)[::-1], np.arange(8)])
    res = fit(
        NET,
        mean_squared_error,
        OPT,
        params,
        X,
        y,
        epochs=2,
        batch_size=8,
        lr=0.1,
        permutations=perms,
    )
    ref = fit(
        NET, mean_squared_error, OPT, params, X, y, epochs=2, batch_size=8, lr=0.1, shuffle=False
    )
    # with one full batch per epoch the order does not change the gradient
    for a, b in zip(jax.tree.leaves(res.params), jax.tree.leaves(ref.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    with pytest.raises(ValueError, match="permutations must be an integer array of shape"):
        fit(NET, mean_squared_error, OPT, params, X, y, epochs=3, batch_size=8, permutations=perms)


def test_early_stopping_restores_params_and_optimizer_state():
    """Train on y, evaluate on -y: the eval loss gets worse, so the trainer rolls back one epoch."""
    X, y = data(12)
    params = init()
    kw = dict(batch_size=4, lr=0.05, key=jax.random.key(3))
    res = fit(
        NET,
        mean_squared_error,
        COUNT_OPT,
        params,
        X,
        y,
        epochs=8,
        eval_data=(X, -y),
        eval_every=2,
        **kw,
    )
    h = res.history
    assert h.stopped_early and h.eval_epochs == [2, 4] and h.eval_loss[1] >= h.eval_loss[0]
    assert h.restored_to_epoch == 3
    ref = fit(NET, mean_squared_error, COUNT_OPT, params, X, y, epochs=3, **kw)
    assert_trees_equal(res.params, ref.params)
    assert int(res.opt_state.steps) == 9 == int(ref.opt_state.steps)  # 3 epochs of 3 batches


def test_no_early_stopping_records_every_evaluation():
    X, y = data(12)
    res = fit(
        NET, mean_squared_error, OPT, init(), X, y, epochs=5, batch_size=4, key=jax.random.key(0),
        eval_data=(X, -y), eval_every=2, early_stopping=False,
    )  # fmt: skip
    assert res.history.eval_epochs == [2, 4, 5] and not res.history.stopped_early
    assert res.history.epochs == [1, 2, 3, 4, 5]


def test_resume_repeats_an_uninterrupted_run_bitwise():
    X, y = data(20)
    params = init()
    kw = dict(batch_size=6, lr=0.05, key=jax.random.key(4), eval_data=(X, y), eval_every=1)
    full = fit(NET, mean_squared_error, COUNT_OPT, params, X, y, epochs=4, **kw)
    first = fit(NET, mean_squared_error, COUNT_OPT, params, X, y, epochs=2, **kw)
    rest = fit(
        NET, mean_squared_error, COUNT_OPT, first.params, X, y, epochs=4, start_epoch=2,
        opt_state=first.opt_state, best_eval_loss=min(first.history.eval_loss), **kw,
    )  # fmt: skip
    assert_trees_equal(full.params, rest.params)
    assert full.history.train_loss == first.history.train_loss + rest.history.train_loss
    assert full.history.eval_loss == first.history.eval_loss + rest.history.eval_loss


def test_divergence_names_epoch_batch_and_keeps_last_finite_params():
    X, y = data(12)
    X = X * 50.0
    params = init()
    kw = dict(batch_size=4, key=jax.random.key(0), eval_every=5)
    with pytest.raises(TrainingDiverged, match=r"epoch \d+, batch \d+") as info:
        fit(NET, mean_squared_error, OPT, params, X, y * 1e3, epochs=50, lr=10.0, **kw)
    err = info.value
    assert not np.isfinite(err.loss)
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(err.params))
    if err.epoch > 1:  # the kept params are exactly those after epoch - 1
        ref = fit(
            NET, mean_squared_error, OPT, params, X, y * 1e3, epochs=err.epoch - 1, lr=10.0, **kw
        )
        assert_trees_equal(err.params, ref.params)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(epochs=0), "epochs"),
        (dict(lr=0.0), "learning rate"),
        (dict(lr=float("nan")), "learning rate"),
        (dict(lr=-1.0), "learning rate"),
        (dict(eval_every=0), "eval_every"),
        (dict(step_mode="fast"), "step_mode"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs, match):
    X, y = data(10)
    base = dict(epochs=1, batch_size=4, lr=0.1, key=jax.random.key(0))
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fit(NET, mean_squared_error, OPT, init(), X, y, **base)


def test_bad_data_is_a_clear_error():
    X, y = data(10)
    kw = dict(epochs=1, batch_size=4, key=jax.random.key(0))
    with pytest.raises(ValueError, match="10 rows but y has shape"):
        fit(NET, mean_squared_error, OPT, init(), X, y[:9], **kw)
    with pytest.raises(ValueError, match="empty"):
        fit(NET, mean_squared_error, OPT, init(), X[:0], y[:0], **kw)
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit(NET, mean_squared_error, OPT, init(), Xn, y, **kw)
    with pytest.raises(ValueError, match=r"\(4, 1\) does not match target shape \(4,\)"):
        fit(NET, mean_squared_error, OPT, init(), X, y.ravel(), **kw)
    with pytest.raises(ValueError, match="key is required"):
        fit(NET, mean_squared_error, OPT, init(), X, y, epochs=1, batch_size=4)


def test_fit_learns_boston_and_predict_batches():
    from jaxscratch.data import boston_book_data

    Xtr, Xte, ytr, yte = boston_book_data()
    net = serial(dense(13, "sigmoid"), dense(1), name="boston_test_net")
    _, params = net.init(jax.random.key(0), (13,))
    res = fit(
        net, mean_squared_error, OPT, params, Xtr, ytr, epochs=30, batch_size=32, lr=0.01,
        key=jax.random.key(1), eval_data=(Xte, yte), eval_every=10, early_stopping=False,
    )  # fmt: skip
    initial = float(mean_squared_error.forward(predict(net, params, Xte), jnp.asarray(yte))[0])
    assert res.history.eval_loss[-1] < 0.1 * initial
    assert res.history.eval_loss[-1] < res.history.eval_loss[0]
    full = predict(net, res.params, Xte)
    np.testing.assert_allclose(predict(net, res.params, Xte, batch_size=50), full, rtol=1e-12)


def test_stop_every_checks_only_some_evaluations():
    """eval_every=1, stop_every=2: every epoch is evaluated, only even epochs can stop training."""
    X, y = data(12)
    params = init()
    kw = dict(batch_size=4, lr=0.05, key=jax.random.key(3))
    res = fit(
        NET, mean_squared_error, COUNT_OPT, params, X, y, epochs=8, eval_data=(X, -y),
        eval_every=1, stop_every=2, **kw,
    )  # fmt: skip
    h = res.history
    # the eval loss rises every epoch, but epochs 1 and 3 do not count; epoch 2 sets the best
    assert h.eval_epochs == [1, 2, 3, 4] and h.stopped_early and h.restored_to_epoch == 3
    ref = fit(NET, mean_squared_error, COUNT_OPT, params, X, y, epochs=3, **kw)
    assert_trees_equal(res.params, ref.params)
    with pytest.raises(ValueError, match="multiple of eval_every"):
        fit(NET, mean_squared_error, OPT, params, X, y, epochs=2, eval_every=2, stop_every=3, **kw)
