"""The training loop: :func:`fit`, a short host loop over one compiled period kernel.

Each turn of the loop runs the epochs up to the next evaluation as one compiled call
(:mod:`jaxscratch.train.programs`), records the epochs' losses, evaluates, asks the stopping
policy (:mod:`jaxscratch.train.stopping`) and calls the callback. Everything a run is lives in one
:class:`~jaxscratch.train.state.TrainState`; resuming is ``fit(..., start=state)``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from jaxscratch.core import Array, Loss, Op, Params
from jaxscratch.optim.optimizers import Optimizer
from jaxscratch.train import parallel
from jaxscratch.train.inputs import LR, LearningRates, check_targets, device_data, lr_dtype
from jaxscratch.train.programs import Batching, evaluator, make_step, period_kernel, predict
from jaxscratch.train.progress import ProgressLine
from jaxscratch.train.state import (
    Best,
    EvaluationNotFinite,
    FitResult,
    History,
    TrainingDiverged,
    TrainState,
    init_state,
)
from jaxscratch.train.step_mode import STEP_MODES, auto_step_mode
from jaxscratch.train.stopping import EarlyStopping, Stopping, Verdict
from jaxscratch.validate import check_choice, check_int, check_positive_int

Metrics = dict[str, Callable[[Array, Array], Array]]

# the loop's neighbours, importable from here too
__all__ = ["TrainState", "TrainingDiverged", "fit", "make_step", "predict"]


def fit(
    net: Op,
    loss: Loss,
    optimizer: Optimizer,
    start: TrainState | Params,
    X: Any,
    y: Any,
    *,
    epochs: int,
    batch_size: int,
    key: Array | None = None,
    lr: LR = 0.01,
    eval_data: tuple[Any, Any] | None = None,
    eval_every: int = 10,
    stopping: Stopping | None = EarlyStopping(),  # noqa: B008 (immutable policy)
    metrics: Metrics | None = None,
    shuffle: bool = True,
    permutations: Any = None,
    steps_per_epoch: int | None = None,
    replacement: bool = False,
    step_mode: str = "auto",
    mesh: Mesh | int | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
) -> FitResult:
    """Train ``net`` on ``(X, y)`` with hand-derived gradients; return the final state and history.

    ``start``: a params pytree (a fresh run, ``key`` its root key) or a
    :class:`~jaxscratch.train.state.TrainState` (a resume: training continues from
    ``start.epoch`` to ``epochs`` with its key and best; passing ``key`` too is an error; a
    finished state returns at once). X: (n, ...), y: (n, ...).

    Batches: each epoch shuffles with ``fold_in(data_key, epoch)`` (``shuffle=False``: row order;
    ``permutations``: an (epochs, n) integer array, row ``e`` for epoch ``e``, the book's draws)
    and runs ``ceil(n / batch_size)`` steps, the last one on the ``n % batch_size`` remaining rows.
    ``steps_per_epoch=k``: an epoch is ``k`` full batches taken in turn from a stream of shuffled
    passes (e.g. evaluate every 100 batches of one pass). ``replacement=True``: every batch draws
    ``batch_size`` rows uniformly with replacement (``k`` batches per epoch, default
    ``ceil(n / batch_size)``). ``lr``: a number, a per-epoch sequence or
    ``schedule(epoch_index) -> lr``, read one evaluation period at a time.

    Every ``eval_every`` epochs and after the last one, the loss on ``eval_data`` and ``metrics``
    (``fn(pred, y) -> scalar``, jit-safe) are computed and ``stopping`` is asked:

    * :class:`~jaxscratch.train.stopping.EarlyStopping` (the default, patience 1): after
      ``patience`` evaluations in a row without improvement it stops and returns the **best
      evaluated** params and optimizer state (``state.epoch == state.best.epoch ==
      history.restored_to_epoch``); with ``restore="last"`` the last params.
    * :func:`~jaxscratch.train.stopping.book_rule` ``(every)``: the first counted evaluation that
      is not lower than the best restores the params and optimizer state from the **start** of
      that epoch (``state.epoch == history.restored_to_epoch == epoch - 1``) and stops.
    * ``None``: never stops early. Reaching ``epochs`` keeps the last params under every policy.

    ``history.final_*`` always describe exactly the returned params (re-evaluated if needed).
    A non-finite training loss, or params an update made non-finite (one ``isfinite`` reduction
    per epoch inside the compiled period), raises :class:`~jaxscratch.train.state.TrainingDiverged`
    naming the epoch and batch (``.state``: after the last finite epoch); a non-finite eval loss or metric raises
    :class:`~jaxscratch.train.state.EvaluationNotFinite`. ``callback(info)`` runs on the host after
    each period: ``epoch``, ``train_loss`` and ``lr`` (of its last epoch), ``period_train_loss``
    (each epoch's), ``eval_loss`` and each metric (when evaluated),
    ``state`` (the live TrainState; after a restore, the restored one: save ``state`` and the
    checkpoint is the returned state) and ``stopped``. ``progress=True``: a live line on stderr
    (only on a terminal). ``step_mode``: ``"scan"``, ``"step"`` or ``"auto"``
    (:func:`~jaxscratch.train.step_mode.auto_step_mode`; same results, different speed).
    ``mesh``: data parallelism (:mod:`jaxscratch.train.parallel`; a Mesh with a ``"data"`` axis or
    a device count; the batch size must be a multiple of the device count).
    """
    state = _start(optimizer, start, key)
    epochs = check_positive_int("fit", "epochs", epochs)
    eval_every = check_positive_int("fit", "eval_every", eval_every)
    _check_policy(stopping, callback)
    if state.epoch >= epochs:
        return _already_done(state, epochs)
    run = _Run.prepare(net, loss, optimizer, state, X, y, epochs, batch_size, lr, shuffle,
                       permutations, steps_per_epoch, replacement, step_mode, mesh)  # fmt: skip
    state = run.place(state)
    score = _Scorer.make(net, loss, metrics, eval_data, state.params)
    history = History()
    bad = stopping.missed(state.best, state.epoch, eval_every) if stopping is not None else 0
    line = ProgressLine(sys.stderr, epochs, state.epoch) if progress else None
    try:
        while state.epoch < epochs:
            count = min((state.epoch // eval_every + 1) * eval_every, epochs) - state.epoch
            state, epoch_start, info = run.period(state, count, history)
            if score is not None:
                current = score.evaluate(state, history, info)
                verdict = _decide(stopping, state.best, bad, current, epoch_start)
                state, bad = _apply(state, verdict, history), verdict.bad
            info.update(state=state, stopped=history.stopped_early)
            if line is not None:
                line.update(info)
            if callback is not None:
                callback(info)
            if history.stopped_early:
                break
    finally:
        if line is not None:
            line.close()
    if score is not None:
        score.final(state, history)
    return FitResult(state, history)


def _start(optimizer: Optimizer, start: Any, key: Array | None) -> TrainState:
    if isinstance(start, TrainState):
        if key is not None:
            raise ValueError(
                "fit: start is a TrainState, which carries its own key; do not pass key= too"
            )
        check_int("fit", "start.epoch", start.epoch, minimum=0)
        return start
    if key is not None and not isinstance(key, jax.Array):
        raise TypeError(f"fit: key must be a jax.random key or None, got {type(key).__name__}")
    return init_state(optimizer, start, key)


def _check_policy(stopping: Any, callback: Any) -> None:
    if stopping is not None and not callable(getattr(stopping, "decide", None)):
        raise TypeError(
            "fit: stopping must be a policy such as EarlyStopping() or book_rule(10), or None; "
            f"got {type(stopping).__name__}"
        )
    if callback is not None and not callable(callback):
        raise TypeError(f"fit: callback must be callable, got {type(callback).__name__}")


def _already_done(state: TrainState, epochs: int) -> FitResult:
    if state.epoch > epochs:
        raise ValueError(
            f"fit: the start state is after epoch {state.epoch}, past epochs={epochs}; "
            "pass a larger epochs to train on"
        )
    history = History()
    if state.best is not None and state.best.epoch == state.epoch:
        _set_final(history, state.best.epoch, state.best.eval_loss, state.best.metrics)
    return FitResult(state, history)


def _decide(stopping, best: Best | None, bad: int, current: Best, epoch_start) -> Verdict:
    if stopping is not None:
        return stopping.decide(best, bad, current, epoch_start)
    improved = best is None or current.eval_loss < best.eval_loss
    return Verdict(current if improved else best, 0, False)


def _apply(state: TrainState, verdict: Verdict, history: History) -> TrainState:
    """The state after a verdict: the new best, and on a stop the restored params."""
    state = state._replace(best=verdict.best)
    if verdict.stop:
        history.stopped_early = True
        history.stopped_epoch = state.epoch
        if verdict.restore is not None:
            params, opt_state, epoch = verdict.restore
            state = state._replace(params=params, opt_state=opt_state, epoch=epoch)
            history.restored_to_epoch = epoch
    return state


def _set_final(history: History, epoch: int, value: float, metrics: dict[str, float]) -> None:
    history.final_epoch, history.final_eval_loss = epoch, value
    history.final_metrics = dict(metrics)


class _Run:
    """The prepared training side of a fit: data on the device, the kernel, the rates."""

    def __init__(self, kernel, mode, Xd, yd, batching, rows, rates, dtype, mesh):
        self.kernel, self.mode, self.Xd, self.yd = kernel, mode, Xd, yd
        self.batching, self.rows, self.rates, self.dtype = batching, rows, rates, dtype
        self.mesh = mesh

    @classmethod
    def prepare(cls, net, loss, optimizer, state, X, y, epochs, batch_size, lr, shuffle,
                permutations, steps_per_epoch, replacement, step_mode, mesh) -> _Run:  # fmt: skip
        """Check the settings and data, put the data on the device, pick the kernel."""
        batch_size = check_positive_int("fit", "batch_size", batch_size)
        step_mode = check_choice("fit", "step_mode", step_mode, STEP_MODES)
        mesh = parallel.resolve_mesh(mesh)
        Xd, yd = device_data("training", X, y)
        check_targets("training", net, loss, state.params, X, y)
        batching, rows = _batching(int(Xd.shape[0]), batch_size, shuffle, permutations,
                                   steps_per_epoch, replacement, epochs)  # fmt: skip
        if mesh is not None:
            parallel.check_batch_size("fit", batching.bs, mesh)
            Xd, yd = parallel.replicate((Xd, yd), mesh)
        if state.key is None and (batching.order in ("shuffle", "replace") or net.stochastic):
            raise ValueError("fit: a jax.random key is required to shuffle or to run dropout")
        rates = LearningRates(lr, epochs)
        if step_mode == "auto":
            step_mode = auto_step_mode(net, loss, optimizer, state.params, state.opt_state,
                                       Xd, yd, batching.bs, state.key)  # fmt: skip
        kernel = period_kernel(net, loss, optimizer, batching, mesh)
        return cls(kernel, step_mode, Xd, yd, batching, rows, rates, lr_dtype(state.params), mesh)

    def place(self, state: TrainState) -> TrainState:
        """The state with params, optimizer state and key on the mesh (as is without one)."""
        if self.mesh is None:
            return state
        p, s, k = parallel.replicate((state.params, state.opt_state, state.key), self.mesh)
        return state._replace(params=p, opt_state=s, key=k)

    def _call(self, params, opt_state, key, first: int, count: int):
        # host-built inputs: no eager device ops (each would compile a small program)
        ids = np.arange(first, first + count, dtype=np.int32)
        lrs = self.rates.array(first, count, self.dtype)
        if self.rows is not None:
            rows = self.rows[first : first + count]
        else:  # an empty row per epoch keeps one scan signature
            rows = np.zeros((count, 0), np.int32)
        return self.kernel.run(params, opt_state, self.Xd, self.yd, ids, lrs, rows, key, self.mode)

    def period(self, state: TrainState, count: int, history: History):
        """Train ``count`` epochs; record them in ``history``. Returns the new state, the params
        and optimizer state at the start of its last epoch, and the callback info so far."""
        first = state.epoch
        p, s, p_prev, s_prev, losses, finite = self._call(state.params, state.opt_state,
                                                          state.key, first, count)  # fmt: skip
        losses_h, finite_h = np.asarray(losses), np.asarray(finite)
        if not (np.all(np.isfinite(losses_h)) and np.all(finite_h)):
            raise self._diverged(state, losses_h, finite_h)
        sizes = self.batching.sizes()
        lrs = self.rates.rates(first, count)
        for j in range(count):
            history.epochs.append(first + j + 1)
            history.train_loss.append(float(np.dot(losses_h[j], sizes) / sizes.sum()))
            history.lr.append(lrs[j])
        state = state._replace(params=p, opt_state=s, epoch=first + count)
        info = {"epoch": state.epoch, "train_loss": history.train_loss[-1], "lr": lrs[-1],
                "period_train_loss": history.train_loss[-count:]}  # fmt: skip
        return state, (p_prev, s_prev), info

    def _diverged(self, state: TrainState, losses: np.ndarray, finite: np.ndarray):
        """The TrainingDiverged of a period from ``state``: the first non-finite loss, or the
        first batch whose update made the params non-finite (found by re-running that epoch
        checked per batch), whichever came first; ``.state`` after the last good epoch."""
        first, count = state.epoch, losses.shape[0]
        bad_loss = np.argwhere(~np.isfinite(losses))
        j_loss = int(bad_loss[0][0]) if bad_loss.size else count
        bad_par = np.flatnonzero(~finite)
        j_par = int(bad_par[0]) if bad_par.size else count
        j = min(j_loss, j_par)
        good = state
        if j > 0:
            gp, gs, *_ = self._call(state.params, state.opt_state, state.key, first, j)
            good = state._replace(params=gp, opt_state=gs, epoch=first + j)
        if j_loss < j_par:
            b = int(bad_loss[0][1])
            return TrainingDiverged(first + j + 1, b + 1, float(losses[j, b]), good)
        rows = self.rows[first + j] if self.rows is not None else np.zeros((0,), np.int32)
        lr = self.rates.array(first + j, 1, self.dtype)[0]
        vals, ok = self.kernel.probe(good.params, good.opt_state, self.Xd, self.yd,
                                     np.int32(first + j), lr, rows, good.key)  # fmt: skip
        vals, ok = np.asarray(vals), np.asarray(ok)
        b = int(np.flatnonzero(~np.isfinite(vals) | ~ok)[0])
        in_params = bool(np.isfinite(vals[b]))
        return TrainingDiverged(first + j + 1, b + 1, float(vals[b]), good, in_params)


def _batching(n, batch_size, shuffle, permutations, steps_per_epoch, replacement, epochs):
    """The static batch plan and the host permutation rows (or None)."""
    if not isinstance(shuffle, bool | np.bool_) or not isinstance(replacement, bool | np.bool_):
        raise TypeError("fit: shuffle and replacement must be True or False")
    if steps_per_epoch is not None:
        steps_per_epoch = check_positive_int("fit", "steps_per_epoch", steps_per_epoch)
    if permutations is not None:
        if steps_per_epoch is not None or replacement:
            raise ValueError(
                "fit: permutations cannot be combined with steps_per_epoch/replacement"
            )
        rows = np.asarray(permutations)
        if rows.shape != (epochs, n) or not np.issubdtype(rows.dtype, np.integer):
            raise ValueError(
                f"fit: permutations must be an integer array of shape ({epochs}, {n}), "
                f"got {rows.dtype} {rows.shape}"
            )
        _check_permutations(rows, n)
        steps, rem = divmod(n, min(batch_size, n))
        return Batching(n, min(batch_size, n), steps, rem, "rows"), rows.astype(np.int32)
    if replacement:
        steps = steps_per_epoch or -(-n // batch_size)
        return Batching(n, batch_size, steps, 0, "replace"), None
    order = "shuffle" if shuffle else "fixed"
    bs = min(batch_size, n)
    if steps_per_epoch is not None:
        return Batching(n, bs, steps_per_epoch, 0, order, stream=True), None
    steps, rem = divmod(n, bs)
    return Batching(n, bs, steps, rem, order), None


def _check_permutations(rows: np.ndarray, n: int) -> None:
    """Each row must be a permutation of ``0 .. n-1`` (a device gather would clamp an index out
    of range and silently train on the wrong rows)."""
    ok = np.sort(rows, axis=1) == np.arange(n)
    if not ok.all():
        e = int(np.flatnonzero(~ok.all(axis=1))[0])
        raise ValueError(
            f"fit: permutations[{e}] is not a permutation of 0..{n - 1} (each epoch's row must "
            f"hold every index once; it holds values {rows[e].min()}..{rows[e].max()})"
        )


class _Scorer:
    """The evaluation side of a fit: the eval data on the device and the compiled evaluator."""

    def __init__(self, evaluate, Xe, ye):
        self._evaluate, self.Xe, self.ye = evaluate, Xe, ye

    @classmethod
    def make(cls, net, loss, metrics, eval_data, params) -> _Scorer | None:
        if eval_data is None:
            return None
        if metrics is not None and not isinstance(metrics, dict):
            raise TypeError(f"fit: metrics must be a dict name -> fn, got {type(metrics).__name__}")
        Xe, ye = device_data("eval", *eval_data)
        check_targets("eval", net, loss, params, *eval_data)
        return cls(evaluator(net, loss, tuple(sorted((metrics or {}).items()))), Xe, ye)

    def scores(self, params: Params) -> tuple[float, dict[str, float]]:
        value, mvals = self._evaluate(params, self.Xe, self.ye)
        return float(value), {k: float(v) for k, v in mvals.items()}

    def evaluate(self, state: TrainState, history: History, info: dict[str, Any]) -> Best:
        """Evaluate ``state.params``, record it, refuse NaN/inf; the candidate best."""
        value, mvals = self.scores(state.params)
        for name, v in {"eval_loss": value, **mvals}.items():
            if not np.isfinite(v):
                raise EvaluationNotFinite(state.epoch, name, v, state)
        history.eval_epochs.append(state.epoch)
        history.eval_loss.append(value)
        history.eval_metrics.append(mvals)
        info.update(eval_loss=value, **mvals)
        return Best(state.epoch, value, mvals, state.params, state.opt_state)

    def final(self, state: TrainState, history: History) -> None:
        """Set ``history.final_*`` to the evaluation of exactly ``state.params``."""
        if state.epoch in history.eval_epochs:
            i = history.eval_epochs.index(state.epoch)
            _set_final(history, state.epoch, history.eval_loss[i], history.eval_metrics[i])
        elif state.best is not None and state.best.epoch == state.epoch:
            _set_final(history, state.epoch, state.best.eval_loss, state.best.metrics)
        else:  # restored to an epoch that was never evaluated (the book's rule)
            _set_final(history, state.epoch, *self.scores(state.params))
