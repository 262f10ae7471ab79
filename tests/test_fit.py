"""fit: batching, shuffling, step modes, learning rates, divergence, argument checks, progress."""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fit_cases import NET, OPT, assert_trees_equal, data, init

from jaxscratch.core import serial
from jaxscratch.ops.dense import dense
from jaxscratch.ops.losses import mean_squared_error
from jaxscratch.train import ProgressLine, TrainingDiverged, fit, make_step, predict


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
        assert err.state.epoch == err.epoch - 1


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
        (dict(lr=[0.1], epochs=2), "lr sequence has 1 entries"),
        (dict(steps_per_epoch=0), "steps_per_epoch"),
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


def test_a_device_array_is_checked_once_a_numpy_array_every_time(monkeypatch):
    """JAX arrays are immutable, so fit reads a device array's values for NaN only the first
    time; a numpy array can change between two fits and is read every time."""
    from jaxscratch.train import inputs

    X, y = data(10)
    kw = dict(epochs=1, batch_size=4, key=jax.random.key(0))
    Xd, yd = jnp.asarray(X), jnp.asarray(y)
    reads = []
    real = np.isfinite
    data_shapes = {(10, 3), (10, 1)}
    monkeypatch.setattr(
        inputs.np, "isfinite", lambda a: (np.shape(a) in data_shapes and reads.append(1)) or real(a)
    )
    fit(NET, mean_squared_error, OPT, init(), Xd, yd, **kw)
    assert len(reads) == 2
    fit(NET, mean_squared_error, OPT, init(), Xd, yd, **kw)
    assert len(reads) == 2  # the same device arrays: not read again
    Xn = X.copy()
    fit(NET, mean_squared_error, OPT, init(), Xn, y, **kw)
    Xn[3, 1] = np.nan  # the same numpy array, changed
    with pytest.raises(ValueError, match="NaN"):
        fit(NET, mean_squared_error, OPT, init(), Xn, y, **kw)
    with pytest.raises(ValueError, match="NaN"):
        fit(NET, mean_squared_error, OPT, init(), jnp.asarray(Xn), yd, **kw)


def test_fit_learns_boston_and_predict_batches():
    from jaxscratch.data import boston_book_data

    Xtr, Xte, ytr, yte = boston_book_data()
    net = serial(dense(13, "sigmoid"), dense(1), name="boston_test_net")
    _, params = net.init(jax.random.key(0), (13,))
    res = fit(
        net, mean_squared_error, OPT, params, Xtr, ytr, epochs=30, batch_size=32, lr=0.01,
        key=jax.random.key(1), eval_data=(Xte, yte), eval_every=10, stopping=None,
    )  # fmt: skip
    initial = float(mean_squared_error.forward(predict(net, params, Xte), jnp.asarray(yte))[0])
    assert res.history.eval_loss[-1] < 0.1 * initial
    assert res.history.eval_loss[-1] < res.history.eval_loss[0]
    full = predict(net, res.params, Xte)
    np.testing.assert_allclose(predict(net, res.params, Xte, batch_size=50), full, rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs", [dict(batch_size=True), dict(epochs=2.0), dict(lr="0.1"), dict(key=0)]
)
def test_settings_of_the_wrong_kind_are_type_errors(kwargs):
    X, y = data(10)
    base = dict(epochs=1, batch_size=4, lr=0.1, key=jax.random.key(0))
    base.update(kwargs)
    with pytest.raises(TypeError, match="fit: "):
        fit(NET, mean_squared_error, OPT, init(), X, y, **base)


@pytest.mark.parametrize("lr", [np.float32(0.1), np.float64(0.1), np.array(0.1), jnp.asarray(0.1)])
def test_numpy_and_array_learning_rates_are_numbers(lr):
    X, y = data(10)
    kw = dict(epochs=2, batch_size=4, key=jax.random.key(0))
    ref = fit(NET, mean_squared_error, OPT, init(), X, y, lr=float(lr), **kw)
    res = fit(NET, mean_squared_error, OPT, init(), X, y, lr=lr, **kw)
    assert res.history.lr == ref.history.lr == [float(lr)] * 2
    assert_trees_equal(res.params, ref.params)


def test_learning_rates_are_read_one_period_at_a_time():
    """A schedule is asked only for the epochs that run: epochs=10**9 builds no huge list."""
    asked = []

    def schedule(epoch):
        asked.append(epoch)
        return 0.1

    X, y = data(10)
    seen = []

    def stop_after_two_periods(info):
        seen.append(info["epoch"])
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(NET, mean_squared_error, OPT, init(), X, y, epochs=10**9, batch_size=5, lr=schedule,
            key=jax.random.key(0), eval_every=3, callback=stop_after_two_periods)  # fmt: skip
    assert seen == [3, 6] and max(asked) == 5


def test_steps_per_epoch_takes_batches_from_a_stream_of_passes():
    """epochs of 3 batches over a set of 4 batches: the epochs continue through the passes, each
    pass a permutation drawn with fold_in(data_key, pass); only full batches."""
    X, y = data(17)  # 4 full batches of 4 rows (the 17th row is never used)
    params, key = init(), jax.random.key(7)
    res = fit(NET, mean_squared_error, OPT, params, X, y, epochs=3, batch_size=4, lr=0.05,
              key=key, steps_per_epoch=3, stopping=None)  # fmt: skip
    data_key = jax.random.split(key)[0]
    order = np.concatenate(
        [np.asarray(jax.random.permutation(jax.random.fold_in(data_key, p), 17)) for p in (0, 1, 2)]
    )
    passes = [order[17 * p : 17 * p + 16].reshape(4, 4) for p in range(3)]
    batches = np.concatenate(passes)[:9]  # 9 batches: 3 epochs of 3
    step = make_step(NET, mean_squared_error, OPT)
    p, s, losses = params, OPT.init(params), []
    for idx in batches:
        p, s, v = step(p, s, jnp.asarray(X[idx]), jnp.asarray(y[idx]), 0.05, None)
        losses.append(float(v))
    for a, b in zip(jax.tree.leaves(res.params), jax.tree.leaves(p), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(res.history.train_loss, np.reshape(losses, (3, 3)).mean(1), 1e-12)
    b = fit(NET, mean_squared_error, OPT, params, X, y, epochs=3, batch_size=4, lr=0.05,
            key=key, steps_per_epoch=3, step_mode="step")  # fmt: skip
    assert_trees_equal(res.params, b.params)


def test_replacement_draws_rows_per_batch_from_its_own_key():
    X, y = data(9)
    params, key = init(), jax.random.key(3)
    res = fit(NET, mean_squared_error, OPT, params, X, y, epochs=2, batch_size=5, lr=0.05,
              key=key, replacement=True, steps_per_epoch=2)  # fmt: skip
    data_key = jax.random.split(key)[0]
    step = make_step(NET, mean_squared_error, OPT)
    p, s = params, OPT.init(params)
    for g in range(4):  # global batch g = epoch * 2 + b
        idx = np.asarray(jax.random.randint(jax.random.fold_in(data_key, g), (5,), 0, 9))
        p, s, _ = step(p, s, jnp.asarray(X[idx]), jnp.asarray(y[idx]), 0.05, None)
    for a, b in zip(jax.tree.leaves(res.params), jax.tree.leaves(p), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    with pytest.raises(ValueError, match="permutations cannot be combined"):
        fit(NET, mean_squared_error, OPT, params, X, y, epochs=1, batch_size=5,
            replacement=True, permutations=np.zeros((1, 9), int))  # fmt: skip


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_line_draws_only_on_a_terminal(capsys):
    X, y = data(10)
    fit(NET, mean_squared_error, OPT, init(), X, y, epochs=2, batch_size=5, progress=True,
        key=jax.random.key(0), eval_data=(X, y), eval_every=1)  # fmt: skip
    assert capsys.readouterr().err == ""  # pytest's stderr is not a terminal: nothing
    term = _Terminal()
    line = ProgressLine(term, 50, start_epoch=10)
    line.update({"epoch": 20, "train_loss": 0.5, "eval_loss": 0.25})
    line.update({"epoch": 30, "train_loss": 0.4})
    line.close()
    text = term.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n")
    assert "epoch 30/50" in text and "train 0.4" in text and "eval 0.25" in text
    assert "epochs/s" in text and "ETA " in text
    plain = io.StringIO()
    quiet = ProgressLine(plain, 5)
    quiet.update({"epoch": 1, "train_loss": 1.0})
    quiet.close()
    assert plain.getvalue() == ""
