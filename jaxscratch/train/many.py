"""Many runs of one model in one compiled program: seeds and learning rates along a run axis.

One seed says little (chapter 4's MSE row moves by tens of points across seeds), and N small runs
launched one after another pay N times for dispatch and for a CPU that one small model cannot
fill. :func:`fit_many` trains N runs of the same network, loss, optimizer and data as
``jax.vmap`` of the very period kernel :func:`~jaxscratch.train.fit` compiles, so each run is the
computation ``fit`` does for it (the same keys, batches and dropout masks), and every result is
stacked along a leading run axis of size N::

    keys = jax.random.split(jax.random.key(0), 16)          # one root key per run
    params = init_many(net, keys, (13,))                      # (16, ...) leaves
    res = fit_many(net, mse, sgd(), params, X, y, keys=keys, epochs=50, batch_size=32,
                   lr=0.01, eval_data=(X_test, y_test), metrics={"mae": mae})
    res.history.final_metrics["mae"]                          # (16,): one figure per run

``lr``: one number for every run, one per run (a grid, e.g. ``np.repeat([0.1, 0.01], 8)``), or a
schedule ``schedule(epoch_index) -> lr`` shared by every run (``history.lr`` is then NaN).
Policy (decided and tested): ``stopping=None`` (default): no run stops early; ``stopping="book"``:
the book's rule (:func:`~jaxscratch.train.stopping.book_rule` with ``every=eval_every``) per run:
at an evaluation at a multiple of ``eval_every``, a run whose eval loss is not lower than its
best stops with the params from the start of that epoch (``history.stopped_epoch``), the others
go on. ``restore="last"`` (default) returns each run's params after its last epoch (or the book
rule's restored ones), ``restore="best"`` each run's params of its best evaluation. A run
whose loss or params become non-finite, or whose evaluation is non-finite, is **frozen**: it
keeps the params it had at the start of the period in which that happened, trains no further,
and ``history.diverged_epoch[i]`` names the epoch (0 for runs that never diverged); the others
go on. ``history.final_*`` describe exactly the returned params of every run.

Keys are split like ``fit``'s: ``init_many`` and ``fit_many`` take the per-run keys; a run of
``fit_many`` with key ``k`` draws exactly what ``fit(..., key=k)`` draws. Its numbers equal
``fit``'s to float64 rounding, not bitwise: XLA compiles the batched program with batched matrix
products, which add in another order (measured: at most 2e-14 apart after 24 epochs of a Boston
MLP; tests/test_many.py). Bitwise equality would need one compiled call per run, which is what
``fit`` in a loop already is.

Resuming and watching (for checkpoints, signals, progress): ``callback(info)`` runs on the host
after every period (every ``eval_every`` epochs and after the last), once that period's freezing,
book-rule stops and best-keeping are done. ``info``: ``epoch``; ``state``, a :class:`ManyState`
(everything needed to go on: stacked params and optimizer state, the epoch, and per run
``alive``, ``diverged_epoch``, ``stopped_epoch``, ``best_epoch``, ``best_eval_loss``, the book
rule's best, and under ``restore="best"`` the best params); ``trained`` (N,): the runs that
trained in this period; ``train_loss`` (N,) (its last epoch) and ``period_train_loss`` (N, count),
NaN for runs that did not train in the period or went non-finite; ``lr`` (N,) of its last epoch;
with evaluation data ``eval_loss`` (N,) and ``metrics`` ``{name: (N,)}``, NaN for runs not
evaluated (frozen, stopped, or non-finite); ``finished``: no later period follows. An exception
raised by the callback ends ``fit_many`` (the state it was given is a consistent point to resume
from). ``fit_many(..., params=state)`` with a :class:`ManyState` continues from ``state.epoch`` to
``epochs``, with the same keys: the result (params, bookkeeping, the returned history's epochs from
there on) is bitwise the uninterrupted run's. ``result.state`` is the state the run ended with.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxscratch.core import Array, Loss, Op, Params, init_params
from jaxscratch.optim.optimizers import Optimizer
from jaxscratch.train.inputs import LearningRates, device_data, lr_dtype
from jaxscratch.train.loop import Metrics, _batching
from jaxscratch.train.programs import Kernel, evaluator, period_kernel
from jaxscratch.validate import check_choice, check_int, check_lr, check_positive_int, is_number


@dataclass
class ManyHistory:
    """What :func:`fit_many` saw, one row per run. ``train_loss`` (N, epochs): each epoch's mean
    batch loss (NaN for an epoch that went non-finite and for the periods after a run stopped or
    diverged, in which it did not train); ``eval_loss`` (N, evaluations) and
    ``eval_metrics[name]`` (N, evaluations) at ``eval_epochs``; ``lr`` (N,); ``diverged_epoch``
    (N,) (0: never); ``best_epoch`` (N,): the evaluation with the lowest eval loss, under either
    ``restore`` (0: never evaluated); ``stopped_epoch`` (N,): the evaluation at which the book's
    rule stopped the run (0: it did not; its params are then those from the start of that epoch);
    ``final_eval_loss`` / ``final_metrics[name]`` (N,): the evaluation of exactly the returned
    params (None without evaluation data)."""

    epochs: list[int] = field(default_factory=list)
    train_loss: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    eval_epochs: list[int] = field(default_factory=list)
    eval_loss: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    eval_metrics: dict[str, np.ndarray] = field(default_factory=dict)
    lr: np.ndarray = field(default_factory=lambda: np.zeros(0))
    diverged_epoch: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    best_epoch: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    final_eval_loss: np.ndarray | None = None
    final_metrics: dict[str, np.ndarray] | None = None
    stopped_epoch: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


class ManyState(NamedTuple):
    """Where N runs stand after ``epoch`` epochs: what :func:`fit_many` needs to go on (pass it as
    ``params``). ``params`` / ``opt_state``: stacked (N, ...), the live training state (a stopped
    or diverged run holds the params it was frozen with). Per run (N,): ``alive`` (still
    training), ``diverged_epoch`` / ``stopped_epoch`` / ``best_epoch`` (0: not that),
    ``best_eval_loss`` (inf: never evaluated), ``book_best`` (the book rule's best counted eval
    loss, inf before the first); ``best_params`` / ``best_opt_state``: each run's best evaluated
    ones under ``restore="best"``, else None."""

    params: Params
    opt_state: Any
    epoch: int
    alive: np.ndarray
    diverged_epoch: np.ndarray
    stopped_epoch: np.ndarray
    best_epoch: np.ndarray
    best_eval_loss: np.ndarray
    book_best: np.ndarray
    best_params: Params | None = None
    best_opt_state: Any = None


class ManyResult(NamedTuple):
    """``params`` and ``opt_state`` stacked along the run axis (N, ...) (under ``restore="best"``
    each run's best), the history of this call, and ``state``: the :class:`ManyState` training
    ended with (its live params; continue it with ``fit_many(..., params=state)``)."""

    params: Params
    opt_state: Any
    history: ManyHistory
    state: ManyState | None = None

    def run(self, i: int) -> Params:
        """The params of run ``i`` (the leading axis indexed away)."""
        return jax.tree.map(lambda a: a[i], self.params)


def init_many(net: Op, keys: Array, in_shape: tuple[int, ...]) -> Params:
    """The initial params of one run per key, stacked: leaf shapes ``(N, ...)``. Run ``i`` equals
    ``init_params(net, keys[i], in_shape)[1]``."""
    return jax.vmap(lambda k: init_params(net, k, tuple(in_shape))[1])(keys)


def _runs(keys: Any, params: Params) -> int:
    if not isinstance(keys, jax.Array) or not jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        raise TypeError(
            "fit_many: keys must be an array of jax.random keys, one per run "
            f"(jax.random.split(key, N)), got {type(keys).__name__}"
        )
    if keys.ndim != 1 or keys.shape[0] < 1:
        raise ValueError(f"fit_many: keys must be a 1-D array of N >= 1 keys, got {keys.shape}")
    n = int(keys.shape[0])
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != n:
            raise ValueError(
                f"fit_many: every params leaf needs a leading run axis of {n} (one per key); "
                f"{jax.tree_util.keystr(path)} has shape {jnp.shape(leaf)} (use init_many)"
            )
    return n


def _rates(lr: Any, n: int) -> np.ndarray | None:
    """Per-run constant rates (N,), or None for a schedule shared by every run."""
    if callable(lr):
        return None
    if is_number(lr):
        return np.full(n, check_lr("fit_many", lr))
    rates = np.asarray(lr, dtype=object) if not isinstance(lr, np.ndarray) else lr
    if rates.shape != (n,):
        raise ValueError(f"fit_many: lr must be a number or {n} numbers (one per run), got {lr!r}")
    return np.array([check_lr("fit_many", v) for v in rates], np.float64)


@functools.lru_cache(maxsize=32)
def _vmapped(kernel: Kernel) -> Any:
    """The period kernel's scan runner over the run axis (data and epoch ids shared)."""
    return jax.jit(jax.vmap(kernel.scan, in_axes=(0, 0, None, None, None, 0, None, 0)))


@functools.lru_cache(maxsize=32)
def _vmapped_init(init: Callable[[Params], Any]) -> Any:
    """The optimizer's ``init`` over the run axis, compiled once per optimizer."""
    return jax.jit(jax.vmap(init))


@functools.lru_cache(maxsize=32)
def _vmapped_eval(evaluate: Any) -> Any:
    return jax.jit(jax.vmap(evaluate, in_axes=(0, None, None)))


@jax.jit
def _where_runs(m: Array, new: Any, old: Any) -> Any:
    def pick(a, b):
        return jnp.where(m.reshape((-1,) + (1,) * (jnp.ndim(a) - 1)), a, b)

    return jax.tree.map(pick, new, old)


def _select(mask: np.ndarray, new: Any, old: Any) -> Any:
    """Per run: ``new`` where ``mask`` (N,), else ``old``: ``new`` or ``old`` themselves when the
    mask is all one way (every period of a run where nothing diverged or stopped), else one
    compiled call for the whole tree."""
    mask = np.asarray(mask, bool)
    if mask.all():
        return new
    if not mask.any():
        return old
    return _where_runs(jnp.asarray(mask), new, old)


def fit_many(
    net: Op,
    loss: Loss,
    optimizer: Optimizer,
    params: Params | ManyState,
    X: Any,
    y: Any,
    *,
    keys: Array,
    epochs: int,
    batch_size: int,
    lr: Any = 0.01,
    eval_data: tuple[Any, Any] | None = None,
    eval_every: int = 10,
    metrics: Metrics | None = None,
    restore: str = "last",
    stopping: str | None = None,
    shuffle: bool = True,
    steps_per_epoch: int | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> ManyResult:
    """Train N runs at once (see the module docstring) and return a :class:`ManyResult`.
    ``params``: stacked (N, ...) leaves (:func:`init_many`), or a :class:`ManyState` to continue
    (from ``state.epoch`` to ``epochs``, with the same keys and settings); ``keys`` (N,): each
    run's root key; X (n, ...), y (n, ...) shared. ``callback(info)``: after every period (see the
    module docstring)."""
    start = params if isinstance(params, ManyState) else None
    n = _runs(keys, start.params if start is not None else params)
    epochs, eval_every, batch_size = _check_settings(
        epochs, eval_every, batch_size, restore, stopping, eval_data, callback
    )
    rates = _rates(lr, n)
    schedule = LearningRates(lr, epochs) if rates is None else None
    Xd, yd = device_data("training", X, y)
    batching, _ = _batching(int(Xd.shape[0]), batch_size, shuffle, None, steps_per_epoch,
                            False, epochs)  # fmt: skip
    run = _vmapped(period_kernel(net, loss, optimizer, batching))
    score = _scorer(net, loss, metrics, eval_data)
    loop = _Loop(n, rates, restore, batching.sizes())
    if start is None:
        p, s, done = params, _vmapped_init(optimizer.init)(params), 0
    else:
        p, s, done = start.params, start.opt_state, loop.resume(start, epochs)
    dtype = lr_dtype(p)
    while done < epochs and loop.alive.any():
        count = min((done // eval_every + 1) * eval_every, epochs) - done
        ids = np.arange(done, done + count, dtype=np.int32)
        lrs = _period_rates(schedule, rates, done, count, n, dtype)
        rows = np.zeros((count, 0), np.int32)
        trained = loop.alive.copy()
        p2, s2, p_prev, s_prev, losses, finite = run(p, s, Xd, yd, ids, lrs, rows, keys)
        ok = loop.record_train(done, np.asarray(losses), np.asarray(finite))
        evaluation = score(p2) if score is not None else None
        ok = loop.record_eval(done + count, evaluation, ok)
        p, s = _select(ok, p2, p), _select(ok, s2, s)
        if stopping == "book" and (done + count) % eval_every == 0:
            stop = loop.book_rule(done + count)
            p, s = _select(stop, p_prev, p), _select(stop, s_prev, s)
        loop.keep_best(done + count, evaluation, ok & loop.alive, p, s)
        done += count
        if callback is not None:
            callback(loop.info(done, p, s, trained, lrs, evaluation is not None, epochs))
    return loop.result(p, s, score, done)


def _check_settings(
    epochs: int, eval_every: int, batch_size: int, restore: str, stopping: str | None,
    eval_data: Any, callback: Any,
) -> tuple[int, int, int]:  # fmt: skip
    """fit_many's settings checked: ``(epochs, eval_every, batch_size)`` as ints, the restore /
    stopping policy against ``eval_data``, a callable ``callback`` (or None)."""
    epochs = check_positive_int("fit_many", "epochs", epochs)
    eval_every = check_positive_int("fit_many", "eval_every", eval_every)
    batch_size = check_positive_int("fit_many", "batch_size", batch_size)
    _check_policy(restore, stopping, eval_data)
    if callback is not None and not callable(callback):
        raise TypeError(f"fit_many: callback must be callable, got {type(callback).__name__}")
    return epochs, eval_every, batch_size


def _check_policy(restore: str, stopping: str | None, eval_data: Any) -> None:
    check_choice("fit_many", "restore", restore, ("last", "best"))
    if stopping is not None:
        check_choice("fit_many", "stopping", stopping, ("book",))
    if (restore == "best" or stopping) and eval_data is None:
        raise ValueError("fit_many: restore='best' and stopping='book' need eval_data")


def _scorer(net: Op, loss: Loss, metrics: Metrics | None, eval_data: Any) -> Any:
    """``score(stacked params) -> (losses (N,), {metric: (N,)})``, or None without eval data."""
    if eval_data is None:
        return None
    Xe, ye = device_data("eval", *eval_data)
    vev = _vmapped_eval(evaluator(net, loss, tuple(sorted((metrics or {}).items()))))
    return lambda p: vev(p, Xe, ye)


def _period_rates(schedule: Any, rates: Any, first: int, count: int, n: int, dtype) -> np.ndarray:
    """(N, count) learning rates: the shared schedule's, or each run's constant one."""
    if schedule is not None:  # read one period at a time
        return np.repeat(schedule.array(first, count, dtype)[None], n, axis=0)
    return np.repeat(rates[:, None], count, axis=1).astype(dtype)


class _Loop:
    """The host side of :func:`fit_many`: who is alive, the history, each run's best."""

    def __init__(self, n: int, rates: np.ndarray | None, restore: str, sizes: np.ndarray):
        self.alive = np.ones(n, bool)
        self.restore, self.sizes = restore, sizes
        lr = rates if rates is not None else np.full(n, np.nan)
        self.history = ManyHistory(lr=lr, diverged_epoch=np.zeros(n, np.int64))
        self.history.best_epoch = np.zeros(n, np.int64)
        self.train: list[np.ndarray] = []
        self.evals: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        self.best: tuple[Any, Any] | None = None  # restore="best": each run's best params
        self.best_loss = np.full(n, np.inf)
        self.book_best = np.full(n, np.inf)
        self.history.stopped_epoch = np.zeros(n, np.int64)

    def resume(self, start: ManyState, epochs: int) -> int:
        """Take over a :class:`ManyState`'s bookkeeping; its epoch (checked against ``epochs``)."""
        n = len(self.alive)
        epoch = check_int("fit_many", "start.epoch", start.epoch, minimum=0)
        if epoch > epochs:
            raise ValueError(
                f"fit_many: the start state is after epoch {epoch}, past epochs={epochs}"
            )
        h = self.history
        for name in ("alive", "diverged_epoch", "stopped_epoch", "best_epoch", "best_eval_loss",
                     "book_best"):  # fmt: skip
            if np.shape(getattr(start, name)) != (n,):
                raise ValueError(
                    f"fit_many: start.{name} must have shape ({n},), one per run, got "
                    f"{np.shape(getattr(start, name))}"
                )
        self.alive = np.array(start.alive, bool)
        h.diverged_epoch = np.array(start.diverged_epoch, np.int64)
        h.stopped_epoch = np.array(start.stopped_epoch, np.int64)
        h.best_epoch = np.array(start.best_epoch, np.int64)
        self.best_loss = np.array(start.best_eval_loss, np.float64)
        self.book_best = np.array(start.book_best, np.float64)
        if self.restore == "best" and start.best_params is not None:
            self.best = (start.best_params, start.best_opt_state)
        elif self.restore == "best" and (h.best_epoch > 0).any():
            raise ValueError(
                "fit_many: restore='best' needs start.best_params (the start state was made "
                "with restore='last')"
            )
        return epoch

    def state(self, epoch: int, p: Any, s: Any) -> ManyState:
        """The bookkeeping as a :class:`ManyState` (copies: later periods do not change it)."""
        h = self.history
        bp, bs = self.best if self.best is not None else (None, None)
        return ManyState(p, s, int(epoch), self.alive.copy(), h.diverged_epoch.copy(),
                         h.stopped_epoch.copy(), h.best_epoch.copy(), self.best_loss.copy(),
                         self.book_best.copy(), bp, bs)  # fmt: skip

    def info(self, epoch: int, p: Any, s: Any, trained: np.ndarray, lrs: np.ndarray,
             evaluated: bool, epochs: int) -> dict[str, Any]:  # fmt: skip
        """The callback's view of the period that ended at ``epoch`` (the module docstring)."""
        period = np.where(trained[:, None], self.train[-1], np.nan)
        out: dict[str, Any] = {
            "epoch": int(epoch),
            "state": self.state(epoch, p, s),
            "trained": trained,
            "train_loss": period[:, -1],
            "period_train_loss": period,
            "lr": np.asarray(lrs[:, -1], np.float64),
            "finished": epoch >= epochs or not self.alive.any(),
        }
        if evaluated:
            value, mets = self.evals[-1]
            out.update(eval_loss=value.copy(), metrics={k: v.copy() for k, v in mets.items()})
        return out

    def _freeze(self, bad: np.ndarray, epochs: np.ndarray) -> np.ndarray:
        newly = bad & self.alive
        self.history.diverged_epoch[newly] = epochs[newly]
        self.alive &= ~bad
        return self.alive.copy()

    def record_train(self, first: int, losses: np.ndarray, finite: np.ndarray) -> np.ndarray:
        """Epoch means of (N, count, batches) losses; runs that went non-finite are frozen. A
        run that had stopped or diverged before the period did not train in it (the batched
        program computed it, and it was thrown away): NaN."""
        good = np.isfinite(losses).all(axis=2) & finite  # (N, count)
        first_bad = np.where(good.all(axis=1), 0, first + 1 + np.argmin(good, axis=1))
        means = (losses * self.sizes).sum(axis=2) / self.sizes.sum()
        self.train.append(np.where(good & self.alive[:, None], means, np.nan))
        self.history.epochs += list(range(first + 1, first + 1 + losses.shape[1]))
        return self._freeze(~good.all(axis=1), first_bad)

    def record_eval(self, epoch: int, evaluation: Any, ok: np.ndarray) -> np.ndarray:
        if evaluation is None:
            return ok
        value, mets = (
            np.asarray(evaluation[0]),
            {k: np.asarray(v) for k, v in evaluation[1].items()},
        )
        finite = np.isfinite(value) & np.all([np.isfinite(v) for v in mets.values()] or [True], 0)
        ok = self._freeze(ok & ~finite, np.full(len(ok), epoch))
        self.history.eval_epochs.append(epoch)
        self.evals.append(
            (np.where(ok, value, np.nan), {k: np.where(ok, v, np.nan) for k, v in mets.items()})
        )
        return ok

    def book_rule(self, epoch: int) -> np.ndarray:
        """The book's rule per run, at a counted evaluation: a live run whose eval loss is not
        lower than its best so far stops, restored to the start of this epoch (the mask of
        those runs is returned; they train no further)."""
        value = self.evals[-1][0]
        stop = self.alive & ~(value < self.book_best)
        self.book_best = np.where(self.alive & ~stop, value, self.book_best)
        self.history.stopped_epoch[stop] = epoch
        self.alive &= ~stop
        return stop

    def keep_best(self, epoch: int, evaluation: Any, ok: np.ndarray, p: Any, s: Any) -> None:
        """Each run's lowest eval loss and its epoch (and, under restore="best", its params)."""
        if evaluation is None:
            return
        value = self.evals[-1][0]
        improved = ok & (value < self.best_loss)
        self.best_loss = np.where(improved, value, self.best_loss)
        self.history.best_epoch[improved] = epoch
        if self.restore != "best":
            return
        if self.best is None:
            self.best = (p, s)
        else:
            bp, bs = self.best
            self.best = (_select(improved, p, bp), _select(improved, s, bs))

    def result(self, p: Any, s: Any, score: Any, epoch: int) -> ManyResult:
        h = self.history
        state = self.state(epoch, p, s)
        h.train_loss = (
            np.concatenate(self.train, axis=1) if self.train else np.zeros((len(self.alive), 0))
        )
        if self.evals:
            h.eval_loss = np.stack([e[0] for e in self.evals], axis=1)
            h.eval_metrics = {
                k: np.stack([e[1][k] for e in self.evals], axis=1) for k in self.evals[0][1]
            }
        if self.best is not None:
            p, s = self.best[0], self.best[1]
        if score is not None:
            value, mets = score(p)
            h.final_eval_loss = np.asarray(value)
            h.final_metrics = {k: np.asarray(v) for k, v in mets.items()}
        return ManyResult(p, s, h, state)
