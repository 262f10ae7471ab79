"""Stopping policies inside fit: what each returns, exactly, and that the reported numbers describe it."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from fit_cases import COUNT_OPT, NET, OPT, assert_trees_equal, data, init

from jaxscratch.ops.losses import mean_squared_error
from jaxscratch.train import EarlyStopping, EvaluationNotFinite, book_rule, fit, predict

KW = dict(batch_size=4, lr=0.05, key=jax.random.key(3))


def _fresh_eval_loss(params, Xe, ye):
    return float(mean_squared_error.forward(predict(NET, params, Xe), ye)[0])


def test_book_rule_restores_the_start_of_the_epoch_params_and_optimizer_state():
    """Train on y, evaluate on -y: the eval loss gets worse, so the rule rolls back one epoch."""
    X, y = data(12)
    params = init()
    res = fit(NET, mean_squared_error, COUNT_OPT, params, X, y, epochs=8, eval_data=(X, -y),
              eval_every=2, stopping=book_rule(2), **KW)  # fmt: skip
    h = res.history
    assert h.stopped_early and h.eval_epochs == [2, 4] and h.eval_loss[1] >= h.eval_loss[0]
    assert h.stopped_epoch == 4 and h.restored_to_epoch == 3 == res.state.epoch
    ref = fit(NET, mean_squared_error, COUNT_OPT, params, X, y, epochs=3, **KW)
    assert_trees_equal(res.params, ref.params)
    assert int(res.opt_state.steps) == 9 == int(ref.opt_state.steps)  # 3 epochs of 3 batches
    # epoch 3 was never evaluated: the final numbers are a fresh evaluation of the returned params
    assert h.final_epoch == 3 and 3 not in h.eval_epochs
    assert h.final_eval_loss == pytest.approx(_fresh_eval_loss(res.params, X, -y), rel=1e-12)
    assert res.state.best.epoch == 2 and res.state.best.eval_loss == h.eval_loss[0]


def test_book_rule_counts_only_multiples_of_every():
    """eval_every=1, book_rule(2): every epoch is evaluated, only even epochs can stop training."""
    X, y = data(12)
    params = init()
    res = fit(NET, mean_squared_error, COUNT_OPT, params, X, y, epochs=8, eval_data=(X, -y),
              eval_every=1, stopping=book_rule(2), **KW)  # fmt: skip
    h = res.history
    # the eval loss rises every epoch, but epochs 1 and 3 do not count; epoch 2 sets the best
    assert h.eval_epochs == [1, 2, 3, 4] and h.stopped_early and h.restored_to_epoch == 3
    ref = fit(NET, mean_squared_error, COUNT_OPT, params, X, y, epochs=3, **KW)
    assert_trees_equal(res.params, ref.params)
    # epoch 3 was evaluated: the final numbers are that evaluation, equal to a fresh one
    assert h.final_epoch == 3 and h.final_eval_loss == h.eval_loss[2]
    assert h.final_eval_loss == pytest.approx(_fresh_eval_loss(res.params, X, -y), rel=1e-12)


def test_early_stopping_restores_the_best_evaluated_params_and_optimizer_state():
    X, y = data(12)
    params = init()
    res = fit(NET, mean_squared_error, COUNT_OPT, params, X, y, epochs=8, eval_data=(X, -y),
              eval_every=1, stopping=EarlyStopping(patience=2), **KW)  # fmt: skip
    h = res.history
    assert h.eval_epochs == [1, 2, 3] and h.stopped_epoch == 3
    assert h.restored_to_epoch == 1 == res.state.epoch == res.state.best.epoch
    ref = fit(NET, mean_squared_error, COUNT_OPT, params, X, y, epochs=1, **KW)
    assert_trees_equal(res.params, ref.params)
    assert int(res.opt_state.steps) == 3
    assert h.final_epoch == 1 and h.final_eval_loss == h.eval_loss[0] == res.state.best.eval_loss
    assert h.final_eval_loss == pytest.approx(_fresh_eval_loss(res.params, X, -y), rel=1e-12)


def test_default_policy_is_early_stopping_with_patience_one():
    X, y = data(12)
    res = fit(NET, mean_squared_error, OPT, init(), X, y, epochs=8, eval_data=(X, -y),
              eval_every=2, **KW)  # fmt: skip
    h = res.history
    assert h.eval_epochs == [2, 4] and h.restored_to_epoch == 2 == res.state.epoch


def test_restore_last_keeps_the_last_params_and_min_delta_counts():
    X, y = data(12)
    params = init()
    last = fit(NET, mean_squared_error, OPT, params, X, y, epochs=8, eval_data=(X, -y),
               eval_every=2, stopping=EarlyStopping(restore="last"), **KW)  # fmt: skip
    assert last.history.stopped_epoch == 4 and last.history.restored_to_epoch is None
    assert last.state.epoch == 4 and last.history.final_eval_loss == last.history.eval_loss[-1]
    ref = fit(NET, mean_squared_error, OPT, params, X, y, epochs=4, **KW)
    assert_trees_equal(last.params, ref.params)
    # on y itself the loss falls, but not by 1e9: every evaluation after the first is "no better"
    strict = fit(NET, mean_squared_error, OPT, params, X, y, epochs=8, eval_data=(X, y),
                 eval_every=2, stopping=EarlyStopping(min_delta=1e9), **KW)  # fmt: skip
    assert strict.history.eval_epochs == [2, 4] and strict.state.epoch == 2


def test_no_policy_records_every_evaluation():
    X, y = data(12)
    res = fit(NET, mean_squared_error, OPT, init(), X, y, epochs=5, batch_size=4,
              key=jax.random.key(0), eval_data=(X, -y), eval_every=2, stopping=None)  # fmt: skip
    h = res.history
    assert h.eval_epochs == [2, 4, 5] and not h.stopped_early and h.epochs == [1, 2, 3, 4, 5]
    assert h.final_epoch == 5 and res.state.best.epoch == 2  # the best is kept, not returned


def test_the_last_callback_carries_the_restored_state():
    X, y = data(12)
    calls = []
    res = fit(NET, mean_squared_error, COUNT_OPT, init(), X, y, epochs=8, eval_data=(X, -y),
              eval_every=2, stopping=book_rule(2), callback=calls.append, **KW)  # fmt: skip
    assert [c["epoch"] for c in calls] == [2, 4] and [c["stopped"] for c in calls] == [False, True]
    saved = calls[-1]["state"]
    assert saved.epoch == 3 == res.state.epoch
    assert_trees_equal((saved.params, saved.opt_state), (res.params, res.opt_state))
    assert set(calls[0]) >= {"epoch", "train_loss", "lr", "eval_loss", "state", "stopped"}


def test_a_non_finite_evaluation_is_an_error_not_an_early_stop():
    X, y = data(12)
    ye = -y.copy()

    def nan_metric(pred, target):
        return pred.sum() * np.nan

    with pytest.raises(EvaluationNotFinite, match="epoch 2 gave bad = nan") as info:
        fit(NET, mean_squared_error, OPT, init(), X, y, epochs=4, eval_data=(X, ye),
            eval_every=2, metrics={"bad": nan_metric}, **KW)  # fmt: skip
    assert info.value.state.epoch == 2


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda: EarlyStopping(patience=0), ValueError),
        (lambda: EarlyStopping(patience=True), TypeError),
        (lambda: EarlyStopping(min_delta=-1.0), ValueError),
        (lambda: EarlyStopping(restore="first"), ValueError),
        (lambda: book_rule(0), ValueError),
    ],
)
def test_bad_policies_are_clear_errors(make, error):
    with pytest.raises(error, match="patience|min_delta|restore|every"):
        make()


def test_stopping_must_be_a_policy():
    X, y = data(8)
    with pytest.raises(TypeError, match="stopping must be a policy"):
        fit(NET, mean_squared_error, OPT, init(), X, y, epochs=1, stopping=True, **KW)
