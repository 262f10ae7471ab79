"""fit_many: N runs of one model in one program; each run is fit's own run (to float64
rounding), per-run learning rates, diverged runs frozen and
named, restore="best" per run, and the final numbers describe the returned params."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxscratch.core import init_params, serial
from jaxscratch.data import boston_book_data
from jaxscratch.ops.dense import dense
from jaxscratch.ops.dropout import dropout
from jaxscratch.ops.losses import mean_squared_error
from jaxscratch.optim.optimizers import sgd, sgd_momentum
from jaxscratch.train import fit
from jaxscratch.train.many import fit_many, init_many
from jaxscratch.train.metrics import mae
from jaxscratch.train.programs import predict

X, XT, Y, YT = boston_book_data()[:4]
NET = serial(dense(6, "tanh"), dropout(0.9, inverted=True), dense(1, "linear"))
EVAL = {"eval_data": (XT, YT), "metrics": {"mae": mae}, "eval_every": 3}


def _keys(n: int, seed: int = 0):
    return jax.random.split(jax.random.key(seed), n)


def _leaves_equal(a, b) -> bool:
    return all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def _close(a, b, rtol: float = 1e-9) -> None:
    """Equal to float64 rounding (batched products add in another order; training then
    amplifies those differences, more so at large learning rates)."""
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol / 10)


def test_each_run_is_fits_run():
    """Run i of fit_many (dropout and shuffling included) equals fit with the same init key, key
    and lr to float64 rounding; the final eval numbers are those of the returned params."""
    keys, init_keys = _keys(2), _keys(2, seed=1)
    lrs = np.array([0.01, 0.02])
    res = fit_many(NET, mean_squared_error, sgd_momentum(0.9), init_many(NET, init_keys, (13,)),
                   X, Y, keys=keys, epochs=6, batch_size=40, lr=lrs, **EVAL)  # fmt: skip
    for i in range(2):
        start = init_params(NET, init_keys[i], (13,))[1]
        one = fit(NET, mean_squared_error, sgd_momentum(0.9), start, X, Y, key=keys[i], epochs=6,
                  batch_size=40, lr=float(lrs[i]), stopping=None, step_mode="scan", **EVAL)  # fmt: skip
        _close(res.run(i), one.state.params)
        np.testing.assert_allclose(res.history.eval_loss[i], one.history.eval_loss, rtol=1e-10)
        np.testing.assert_allclose(res.history.train_loss[i], one.history.train_loss, rtol=1e-10)
    assert res.history.eval_epochs == [3, 6]
    pred = predict(NET, res.run(1), XT)
    assert res.history.final_metrics["mae"][1] == pytest.approx(float(mae(pred, YT)), rel=1e-12)
    assert list(res.history.diverged_epoch) == [0, 0]


def test_a_diverging_run_is_frozen_and_named_while_the_others_train():
    """lr 1e3 blows up: that run keeps the params from the start of the period in which it went
    non-finite (equal to fit's params after those epochs), diverged_epoch names the epoch, its
    later evaluations are NaN; the other run equals its solo fit."""
    keys, init_keys = _keys(2), _keys(2, seed=1)
    start = init_many(NET, init_keys, (13,))
    res = fit_many(NET, mean_squared_error, sgd(), start, X, Y, keys=keys, epochs=6,
                   batch_size=40, lr=[0.01, 1e3], **EVAL)  # fmt: skip
    h = res.history
    d = int(h.diverged_epoch[1])
    assert h.diverged_epoch[0] == 0 and 1 <= d <= 6
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(res.run(1)))
    kept = 3 * ((d - 1) // 3)  # the start of the period (eval_every 3) in which it diverged
    assert np.isnan(h.eval_loss[1, kept // 3 :]).all() and np.isfinite(h.eval_loss[0]).all()
    if kept == 0:
        assert _leaves_equal(res.run(1), jax.tree.map(lambda a: a[1], start))
    else:
        solo = fit(NET, mean_squared_error, sgd(), init_params(NET, init_keys[1], (13,))[1], X,
                   Y, key=keys[1], epochs=kept, batch_size=40, lr=1e3, stopping=None,
                   step_mode="scan")  # fmt: skip
        _close(res.run(1), solo.state.params)
    one = fit(NET, mean_squared_error, sgd(), init_params(NET, init_keys[0], (13,))[1], X, Y,
              key=keys[0], epochs=6, batch_size=40, lr=0.01, stopping=None, step_mode="scan",
              **EVAL)  # fmt: skip
    _close(res.run(0), one.state.params)


def test_restore_best_returns_each_runs_best_evaluated_params():
    """restore="best": run i's params are those of its lowest eval loss, best_epoch names it and
    final_eval_loss is exactly that evaluation."""
    keys = _keys(2)
    res = fit_many(NET, mean_squared_error, sgd(), init_many(NET, _keys(2, 1), (13,)), X, Y,
                   keys=keys, epochs=9, batch_size=40, lr=[0.05, 0.2], restore="best",
                   **EVAL)  # fmt: skip
    h = res.history
    for i in range(2):
        j = int(np.argmin(h.eval_loss[i]))
        assert h.best_epoch[i] == h.eval_epochs[j]
        assert h.final_eval_loss[i] == pytest.approx(h.eval_loss[i, j], rel=1e-12)
        pred = predict(NET, res.run(i), XT)
        assert float(mean_squared_error.forward(pred, YT)[0]) == pytest.approx(
            h.final_eval_loss[i], rel=1e-12
        )


def test_bad_arguments_are_named():
    """keys not a key array, params without the run axis, lr of the wrong length, best without
    eval data, an unknown stopping policy."""
    P = init_many(NET, _keys(2), (13,))
    kw = {"epochs": 1, "batch_size": 40}
    with pytest.raises(TypeError, match="keys must be an array of jax.random keys"):
        fit_many(NET, mean_squared_error, sgd(), P, X, Y, keys=np.arange(2), **kw)
    single = init_params(NET, jax.random.key(0), (13,))[1]
    with pytest.raises(ValueError, match="leading run axis of 2"):
        fit_many(NET, mean_squared_error, sgd(), single, X, Y, keys=_keys(2), **kw)
    with pytest.raises(ValueError, match="lr must be a number or 2 numbers"):
        fit_many(NET, mean_squared_error, sgd(), P, X, Y, keys=_keys(2), lr=[0.1], **kw)
    with pytest.raises(ValueError, match="need eval_data"):
        fit_many(NET, mean_squared_error, sgd(), P, X, Y, keys=_keys(2), restore="best", **kw)
    with pytest.raises(ValueError, match="stopping"):
        fit_many(NET, mean_squared_error, sgd(), P, X, Y, keys=_keys(2), stopping="early",
                 eval_data=(XT, YT), **kw)  # fmt: skip
    with pytest.raises(ValueError, match="learning rate must be a finite number"):
        fit_many(NET, mean_squared_error, sgd(), P, X, Y, keys=_keys(2), lr=[0.1, -1.0], **kw)


def test_the_books_rule_per_run_equals_fit_with_book_rule():
    """stopping="book" (a noisy 8-row eval set, so runs stop): each run stops exactly where
    fit(stopping=book_rule(3)) does,
    with the same restored params, stopped_epoch naming the evaluation and
    final_eval_loss that of the returned params."""
    from jaxscratch.train.stopping import book_rule

    keys, init_keys = _keys(2, seed=5), _keys(2, seed=6)
    lrs = [0.008, 0.012]
    res = fit_many(NET, mean_squared_error, sgd_momentum(0.9), init_many(NET, init_keys, (13,)),
                   X, Y, keys=keys, epochs=30, batch_size=40, lr=lrs, stopping="book",
                   eval_data=(XT[:8], YT[:8]), eval_every=3)  # fmt: skip
    stops = []
    for i in range(2):
        start = init_params(NET, init_keys[i], (13,))[1]
        one = fit(NET, mean_squared_error, sgd_momentum(0.9), start, X, Y, key=keys[i],
                  epochs=30, batch_size=40, lr=lrs[i], stopping=book_rule(3), step_mode="scan",
                  eval_data=(XT[:8], YT[:8]), eval_every=3)  # fmt: skip
        _close(res.run(i), one.state.params, rtol=1e-9)
        assert res.history.stopped_epoch[i] == (one.history.stopped_epoch or 0)
        assert res.history.final_eval_loss[i] == pytest.approx(
            one.history.final_eval_loss, rel=1e-9
        )
        stops.append(one.history.stopped_early)
    assert any(stops), "the example must make at least one run stop early"


def test_a_shared_schedule_is_fits_schedule():
    """lr=linear_decay(...) is read per period for every run, as fit reads it."""
    from jaxscratch.optim.schedules import linear_decay

    keys, init_keys = _keys(2, seed=7), _keys(2, seed=8)
    sched = linear_decay(0.02, 0.005, 6)
    res = fit_many(NET, mean_squared_error, sgd(), init_many(NET, init_keys, (13,)), X, Y,
                   keys=keys, epochs=6, batch_size=40, lr=sched, **EVAL)  # fmt: skip
    one = fit(NET, mean_squared_error, sgd(), init_params(NET, init_keys[1], (13,))[1], X, Y,
              key=keys[1], epochs=6, batch_size=40, lr=sched, stopping=None, step_mode="scan",
              **EVAL)  # fmt: skip
    _close(res.run(1), one.state.params)
    assert np.isnan(res.history.lr).all()


def test_a_run_resumed_from_a_callbacks_state_is_the_uninterrupted_run():
    """callback(info) after every period; a ManyState taken from it and passed back as params
    continues bitwise as the uninterrupted run (book-rule stops and restore="best" bookkeeping
    included: run 0 stops before the resume point, run 1 after it), and info names what each
    period did (a stopped run's later train losses are NaN, not the discarded computation's)."""
    from jaxscratch.train.many import ManyState

    keys, start = _keys(2, seed=5), init_many(NET, _keys(2, seed=6), (13,))
    kw = dict(keys=keys, epochs=30, batch_size=40, lr=[0.008, 0.002], stopping="book",
              restore="best", eval_data=(XT[:8], YT[:8]), eval_every=3)  # fmt: skip
    opt = sgd_momentum(0.9)
    infos: list[dict] = []
    full = fit_many(NET, mean_squared_error, opt, start, X, Y, callback=infos.append, **kw)
    h = full.history
    assert list(h.stopped_epoch) == [15, 24]  # the example needs one stop on each side of 18
    assert [i["epoch"] for i in infos] == h.eval_epochs == list(range(3, 25, 3))
    assert [i["finished"] for i in infos] == [False] * (len(infos) - 1) + [True]
    np.testing.assert_array_equal(np.stack([i["eval_loss"] for i in infos], 1), h.eval_loss)
    assert all(list(i["trained"]) == [i["epoch"] <= 15, True] for i in infos)
    assert all(np.isnan(i["period_train_loss"][0]).all() == (i["epoch"] > 15) for i in infos)
    # the history too: run 0's epochs after its stop were computed by the batched program and
    # thrown away, so they are NaN; the epochs it trained are finite
    assert np.isnan(h.train_loss[0, 15:]).all() and np.isfinite(h.train_loss[0, :15]).all()
    assert h.train_loss.shape == (2, 24) and np.isfinite(h.train_loss[1]).all()

    class Stop(Exception):
        pass

    saved: list[ManyState] = []

    def stop_at_18(info):
        if info["epoch"] == 18:
            saved.append(info["state"])
            raise Stop

    with pytest.raises(Stop):
        fit_many(NET, mean_squared_error, opt, start, X, Y, callback=stop_at_18, **kw)
    state = saved[0]
    assert state.epoch == 18 and list(state.alive) == [False, True]
    assert state.best_params is not None and list(state.stopped_epoch) == [15, 0]
    rest = fit_many(NET, mean_squared_error, opt, state, X, Y, **kw)
    assert _leaves_equal(rest.params, full.params) and _leaves_equal(rest.state, full.state)
    for name in ("stopped_epoch", "best_epoch", "diverged_epoch", "final_eval_loss"):
        np.testing.assert_array_equal(getattr(rest.history, name), getattr(h, name))
    np.testing.assert_array_equal(rest.history.eval_loss, h.eval_loss[:, 6:])
    assert rest.history.epochs == h.epochs[18:]
    # ... and the comparison can fail: the same state resumed with another lr differs
    other = fit_many(NET, mean_squared_error, opt, state, X, Y, **{**kw, "lr": [0.008, 0.003]})
    assert not _leaves_equal(other.params, full.params)
    with pytest.raises(ValueError, match="past epochs=6"):
        fit_many(NET, mean_squared_error, opt, state, X, Y, **{**kw, "epochs": 6})
