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
"""

from __future__ import annotations

import functools
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
from jaxscratch.validate import check_choice, check_lr, check_positive_int, is_number


@dataclass
class ManyHistory:
    """What :func:`fit_many` saw, one row per run. ``train_loss`` (N, epochs): each epoch's mean
    batch loss; ``eval_loss`` (N, evaluations) and ``eval_metrics[name]`` (N, evaluations) at
    ``eval_epochs``; ``lr`` (N,); ``diverged_epoch`` (N,) (0: never); ``best_epoch`` (N,) (0:
    never evaluated); ``stopped_epoch`` (N,): the evaluation at which the book's rule stopped the
    run (0: it did not; its params are then those from the start of that epoch);
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


class ManyResult(NamedTuple):
    """``params`` and ``opt_state`` stacked along the run axis (N, ...), and the history."""

    params: Params
    opt_state: Any
    history: ManyHistory

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
def _vmapped_eval(evaluate: Any) -> Any:
    return jax.jit(jax.vmap(evaluate, in_axes=(0, None, None)))


def _select(mask: np.ndarray, new: Any, old: Any) -> Any:
    """Per run: ``new`` where ``mask`` (N,), else ``old``."""
    m = jnp.asarray(mask)

    def pick(a, b):
        return jnp.where(m.reshape((-1,) + (1,) * (jnp.ndim(a) - 1)), a, b)

    return jax.tree.map(pick, new, old)


def fit_many(
    net: Op,
    loss: Loss,
    optimizer: Optimizer,
    params: Params,
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
) -> ManyResult:
    """Train N runs at once (see the module docstring). ``params``: stacked (N, ...) leaves
    (:func:`init_many`); ``keys`` (N,): each run's root key; X (n, ...), y (n, ...) shared."""
    n = _runs(keys, params)
    epochs = check_positive_int("fit_many", "epochs", epochs)
    eval_every = check_positive_int("fit_many", "eval_every", eval_every)
    batch_size = check_positive_int("fit_many", "batch_size", batch_size)
    _check_policy(restore, stopping, eval_data)
    rates = _rates(lr, n)
    schedule = LearningRates(lr, epochs) if rates is None else None
    Xd, yd = device_data("training", X, y)
    batching, _ = _batching(int(Xd.shape[0]), batch_size, shuffle, None, steps_per_epoch,
                            False, epochs)  # fmt: skip
    run = _vmapped(period_kernel(net, loss, optimizer, batching))
    score = _scorer(net, loss, metrics, eval_data)
    loop = _Loop(n, rates, restore, batching.sizes())
    p, s = params, jax.vmap(optimizer.init)(params)
    dtype = lr_dtype(params)
    done = 0
    while done < epochs:
        count = min((done // eval_every + 1) * eval_every, epochs) - done
        ids = np.arange(done, done + count, dtype=np.int32)
        lrs = _period_rates(schedule, rates, done, count, n, dtype)
        rows = np.zeros((count, 0), np.int32)
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
        if not loop.alive.any():
            break  # every run stopped or diverged
    return loop.result(p, s, score)


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
        self.best: tuple[Any, Any, np.ndarray] | None = None
        self.book_best = np.full(n, np.inf)
        self.history.stopped_epoch = np.zeros(n, np.int64)

    def _freeze(self, bad: np.ndarray, epochs: np.ndarray) -> np.ndarray:
        newly = bad & self.alive
        self.history.diverged_epoch[newly] = epochs[newly]
        self.alive &= ~bad
        return self.alive.copy()

    def record_train(self, first: int, losses: np.ndarray, finite: np.ndarray) -> np.ndarray:
        """Epoch means of (N, count, batches) losses; runs that went non-finite are frozen."""
        good = np.isfinite(losses).all(axis=2) & finite  # (N, count)
        first_bad = np.where(good.all(axis=1), 0, first + 1 + np.argmin(good, axis=1))
        means = (losses * self.sizes).sum(axis=2) / self.sizes.sum()
        self.train.append(np.where(good, means, np.nan))
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
        if evaluation is None or self.restore != "best":
            return
        value = self.evals[-1][0]
        if self.best is None:
            improved = ok.copy()
            self.best = (p, s, np.where(ok, value, np.inf))
        else:
            bp, bs, bl = self.best
            improved = ok & (value < bl)
            self.best = (
                _select(improved, p, bp),
                _select(improved, s, bs),
                np.where(improved, value, bl),
            )
        self.history.best_epoch[improved] = epoch

    def result(self, p: Any, s: Any, score: Any) -> ManyResult:
        h = self.history
        h.train_loss = np.concatenate(self.train, axis=1)
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
        return ManyResult(p, s, h)
