"""What a training run is at any moment, and what :func:`jaxscratch.train.fit` returns.

* :class:`TrainState` ``(params, opt_state, epoch, key, best)``: the one value a checkpoint saves,
  a resume passes back to ``fit`` and ``fit`` returns. ``epoch`` counts completed epochs: the
  params are those after ``epoch`` epochs. ``key`` is the run's root key; ``fit`` derives every
  per-epoch and per-batch key from it with ``fold_in`` and never advances it, so a resumed run
  draws exactly what the uninterrupted one would have.
* :class:`Best`: the best evaluation so far (its epoch, loss, metrics, params and optimizer state).
* :class:`History`: the per-epoch and per-evaluation numbers of one ``fit`` call.
* :class:`FitResult` ``(state, history)``.
* :class:`TrainingDiverged` / :class:`EvaluationNotFinite`: the two ways training refuses to go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax

from jaxscratch.core import Params


class Best(NamedTuple):
    """The best evaluation so far: ``epoch`` (1-based) whose params were evaluated, the eval loss
    and metrics of exactly those params, and the params and optimizer state themselves."""

    epoch: int
    eval_loss: float
    metrics: dict[str, float]
    params: Params
    opt_state: Any


class TrainState(NamedTuple):
    """params and opt_state after ``epoch`` completed epochs; ``key``: the run's root key (None
    for runs that need no randomness); ``best``: the best evaluation so far, or None."""

    params: Params
    opt_state: Any
    epoch: int
    key: jax.Array | None
    best: Best | None = None


def init_state(optimizer: Any, params: Params, key: jax.Array | None = None) -> TrainState:
    """A fresh run: epoch 0, ``opt_state = optimizer.init(params)``, no best evaluation."""
    return TrainState(params, optimizer.init(params), 0, key, None)


@dataclass
class History:
    """What one :func:`~jaxscratch.train.fit` call saw. Epoch numbers are 1-based.

    ``train_loss[i]``: the mean batch loss of epoch ``epochs[i]`` (weighted by batch size);
    ``lr[i]``: its learning rate. ``eval_epochs`` / ``eval_loss`` / ``eval_metrics``: one entry
    per evaluation, of the params after that epoch. ``stopped_early``: the stopping policy ended
    training; ``stopped_epoch``: the epoch after which it did. ``restored_to_epoch``: the epoch
    whose params (and optimizer state) were restored and returned, or None.
    ``final_epoch`` / ``final_eval_loss`` / ``final_metrics``: the evaluation of exactly the
    returned params (after a restore to an epoch that was never evaluated, ``fit`` evaluates the
    restored params once more); None without evaluation data.
    """

    epochs: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    eval_epochs: list[int] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    eval_metrics: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    stopped_epoch: int | None = None
    restored_to_epoch: int | None = None
    final_epoch: int | None = None
    final_eval_loss: float | None = None
    final_metrics: dict[str, float] | None = None


class FitResult(NamedTuple):
    """The state ``fit`` ended with (restored, when the stopping policy restored) and its history."""

    state: TrainState
    history: History

    @property
    def params(self) -> Params:
        return self.state.params

    @property
    def opt_state(self) -> Any:
        return self.state.opt_state


class TrainingDiverged(FloatingPointError):
    """A non-finite training loss, or params that an update made non-finite
    (``in_params=True``; ``loss`` is then that batch's finite loss). ``.state``: the TrainState
    after the last epoch whose params were all finite."""

    def __init__(
        self, epoch: int, batch: int, loss: float, state: TrainState, in_params: bool = False
    ):
        what = f"loss {loss}"
        if in_params:
            what = f"the update made the params non-finite (the batch's loss was {loss})"
        super().__init__(
            f"fit: training diverged at epoch {epoch}, batch {batch}: {what}; "
            f"the state after epoch {state.epoch} is in .state"
        )
        self.epoch, self.batch, self.loss, self.state = epoch, batch, loss, state
        self.in_params = in_params

    @property
    def params(self) -> Params:
        return self.state.params

    @property
    def opt_state(self) -> Any:
        return self.state.opt_state


class EvaluationNotFinite(FloatingPointError):
    """A NaN or infinite eval loss or metric at ``epoch``; ``.state``: the state after it."""

    def __init__(self, epoch: int, name: str, value: float, state: TrainState):
        super().__init__(
            f"fit: the evaluation after epoch {epoch} gave {name} = {value}; training stopped "
            "(the state after that epoch is in .state)"
        )
        self.epoch, self.name, self.value, self.state = epoch, name, value, state
