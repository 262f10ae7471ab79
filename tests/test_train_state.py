"""TrainState: resuming from any period repeats the uninterrupted run bitwise; finished runs stop."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from fit_cases import COUNT_OPT, NET, assert_trees_equal, data, init

from jaxscratch.ops.losses import mean_squared_error
from jaxscratch.train import EarlyStopping, TrainState, fit, init_state


def test_init_state_is_epoch_zero():
    params, key = init(), jax.random.key(1)
    s = init_state(COUNT_OPT, params, key)
    assert s.epoch == 0 and s.best is None and s.key is key and int(s.opt_state.steps) == 0


@pytest.mark.parametrize("split", [1, 2, 3])
@pytest.mark.parametrize("mode", ["scan", "step"])
def test_resume_after_any_period_repeats_an_uninterrupted_run_bitwise(split, mode):
    X, y = data(20)
    params, key = init(), jax.random.key(4)
    kw = dict(batch_size=6, lr=0.05, eval_data=(X, y), eval_every=1, step_mode=mode,
              stopping=EarlyStopping(patience=2))  # fmt: skip
    full = fit(NET, mean_squared_error, COUNT_OPT, params, X, y, epochs=4, key=key, **kw)
    first = fit(NET, mean_squared_error, COUNT_OPT, params, X, y, epochs=split, key=key, **kw)
    assert first.state.epoch == split and first.state.key is key
    rest = fit(NET, mean_squared_error, COUNT_OPT, first.state, X, y, epochs=4, **kw)
    assert_trees_equal((full.params, full.opt_state), (rest.params, rest.opt_state))
    assert full.state.epoch == rest.state.epoch == 4
    assert full.history.train_loss == first.history.train_loss + rest.history.train_loss
    assert full.history.eval_loss == first.history.eval_loss + rest.history.eval_loss
    assert full.state.best.epoch == rest.state.best.epoch
    assert_trees_equal(full.state.best.params, rest.state.best.params)


def test_resume_keeps_the_patience_count():
    """EarlyStopping(patience=2) on a rising eval loss: stopped after epoch 3 either way."""
    X, y = data(12)
    params, key = init(), jax.random.key(3)
    kw = dict(batch_size=4, lr=0.05, eval_data=(X, -y), eval_every=1,
              stopping=EarlyStopping(patience=2))  # fmt: skip
    full = fit(NET, mean_squared_error, COUNT_OPT, params, X, y, epochs=8, key=key, **kw)
    first = fit(NET, mean_squared_error, COUNT_OPT, params, X, y, epochs=2, key=key, **kw)
    rest = fit(NET, mean_squared_error, COUNT_OPT, first.state, X, y, epochs=8, **kw)
    assert full.history.stopped_epoch == rest.history.stopped_epoch == 3
    assert full.state.epoch == rest.state.epoch == 1
    assert_trees_equal(full.params, rest.params)


def test_a_finished_state_returns_at_once():
    X, y = data(12)
    kw = dict(batch_size=4, lr=0.05, eval_data=(X, y), eval_every=2)
    done = fit(NET, mean_squared_error, COUNT_OPT, init(), X, y, epochs=4, key=jax.random.key(0),
               **kw)  # fmt: skip
    calls = []
    again = fit(NET, mean_squared_error, COUNT_OPT, done.state, X, y, epochs=4,
                callback=calls.append, **kw)  # fmt: skip
    assert again.state is done.state and calls == [] and again.history.epochs == []
    with pytest.raises(ValueError, match="past epochs=3"):
        fit(NET, mean_squared_error, COUNT_OPT, done.state, X, y, epochs=3, **kw)


def test_a_state_carries_its_key():
    X, y = data(12)
    state = TrainState(init(), COUNT_OPT.init(init()), 0, jax.random.key(0))
    with pytest.raises(ValueError, match="carries its own key"):
        fit(NET, mean_squared_error, COUNT_OPT, state, X, y, epochs=1, batch_size=4,
            key=jax.random.key(0))  # fmt: skip
    res = fit(NET, mean_squared_error, COUNT_OPT, state, X, y, epochs=1, batch_size=4)
    assert res.state.epoch == 1 and int(res.opt_state.steps) == 3
    assert np.all(np.isfinite(np.asarray(res.params[0]["W"])))
