"""The compiled programs of training: one step, one period of epochs, inference, evaluation.

One training step is ``forward -> loss -> loss backward -> network backward -> optimizer update``
(:func:`make_step`; ``jax.grad`` never appears). :func:`period_kernel` compiles the epochs between
two evaluations into one call: a ``lax.scan`` over epochs, each a ``lax.scan`` over its full
batches plus one step for a shorter last batch, gathering the batches on the device
(``step_mode="scan"``); or the same epochs as one compiled dispatch per batch (``"step"``).

Which rows a batch holds is a :class:`Batching` (static, part of the compiled program):

* ``order="shuffle"``: epoch ``e`` is a pass over ``jax.random.permutation(fold_in(data_key, e), n)``
  (computed by :func:`jaxscratch.train.shuffle.permutation`, the same elements, faster);
  ``"fixed"``: row order; ``"rows"``: row ``e`` of explicit permutations (the book's draws).
  ``steps`` full batches of ``bs`` rows, then ``rem`` remaining rows.
* ``stream=True`` (``fit(steps_per_epoch=k)``): an epoch is ``k`` batches taken in turn from a
  stream of passes (pass ``p`` shuffled with ``fold_in(data_key, p)``; full batches only), so
  "evaluate every 100 batches of one pass" is ``epochs=10, steps_per_epoch=100``.
* ``order="replace"``: every batch draws ``bs`` rows uniformly with replacement, global batch
  ``g = e * steps + b`` from ``fold_in(data_key, g)`` (random windows of a text).

Keys: the run key splits into ``(data_key, dropout_key)``; batch ``b`` of epoch ``e`` drops out
with ``fold_in(fold_in(dropout_key, e), b)``. Nothing depends on where a period starts, so a run
resumed at any epoch repeats the uninterrupted one bitwise.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxscratch.core import Array, Loss, Op, Params, apply, update_state
from jaxscratch.optim.optimizers import Optimizer
from jaxscratch.train import parallel
from jaxscratch.train.shuffle import permutation


def make_step(
    net: Op, loss: Loss, optimizer: Optimizer
) -> Callable[..., tuple[Params, Any, Array]]:
    """One training step: ``step(params, state, xb, yb, lr, key) -> (params, state, loss)``.

    Forward, loss, ``loss.backward``, ``net.backward`` (hand-derived), ``optimizer.update``, then
    for a stateful net ``net.update`` (batch norm's running statistics, from this batch's cache;
    see :mod:`jaxscratch.core`). ``key`` is used only by stochastic nets (dropout). Pure; jit it
    or scan it.
    """

    def step(params, state, xb, yb, lr, key):
        pred, cache = apply(net, params, xb, key=key, train=True)
        value, lcache = loss.forward(pred, yb)
        grads, _ = net.backward(cache, loss.backward(lcache))
        params, state = optimizer.update(grads, state, params, lr)
        return update_state(net, params, cache), state, value

    return step


def predict(net: Op, params: Params, X: Any, *, batch_size: int | None = None) -> Array:
    """Inference-mode forward pass (dropout off), optionally in batches. X: (n, ...) -> (n, ...)."""
    fn = _predict_fn(net)
    if batch_size is None or batch_size >= len(X):
        return fn(params, X)
    parts = [fn(params, X[i : i + batch_size]) for i in range(0, len(X), batch_size)]
    return jnp.concatenate(parts, axis=0)


@functools.lru_cache(maxsize=64)
def _predict_fn(net: Op) -> Callable:
    return jax.jit(lambda p, x: apply(net, p, x, train=False)[0])


@functools.lru_cache(maxsize=64)
def evaluator(net: Op, loss: Loss, metrics: tuple[tuple[str, Callable], ...]) -> Callable:
    """``evaluate(params, X, y) -> (loss, {metric: value})``, cached per model.

    Two compiled programs: the network's inference forward pass, the same one :func:`predict`
    uses (so predicting on the evaluation set afterwards compiles nothing), and the loss with the
    metrics, which depends only on the loss and the prediction shape (shared by every network).
    """
    forward = _predict_fn(net)
    score = _scorer(loss, metrics)

    def evaluate(params, X, y):
        return score(forward(params, X), y)

    return evaluate


@functools.lru_cache(maxsize=64)
def _scorer(loss: Loss, metrics: tuple[tuple[str, Callable], ...]) -> Callable:
    @jax.jit
    def score(pred, y):
        return loss.forward(pred, y)[0], {k: f(pred, y) for k, f in metrics}

    return score


class Batching(NamedTuple):
    """Which rows each batch of an epoch holds (see the module docstring); static."""

    n: int  # rows of the training set
    bs: int  # rows of a full batch
    steps: int  # full batches per epoch
    rem: int  # rows of the short last batch (0: none)
    order: str  # "shuffle" | "fixed" | "rows" | "replace"
    stream: bool = False  # epochs of `steps` batches from a stream of passes

    def sizes(self) -> np.ndarray:
        """Rows per batch of one epoch, float64 (weights of the epoch's mean loss)."""
        return np.array([self.bs] * self.steps + ([self.rem] if self.rem else []), np.float64)


def _data_key(b: Batching, data_key: Array | None) -> Array:
    """The data key, which orders "shuffle" and "replace" need (``fit`` always passes one)."""
    if data_key is None:
        raise ValueError(f"epoch_rows: order {b.order!r} draws rows and needs a data key, got None")
    return data_key


def _pass_order(b: Batching, index: Array, data_key: Array | None) -> Array:
    if b.order == "shuffle":
        return permutation(jax.random.fold_in(_data_key(b, data_key), index), b.n)
    return jnp.arange(b.n)


def epoch_rows(b: Batching, epoch: Array, row: Array, data_key: Array | None):
    """Traced: ``(full (steps, bs), last (rem,) or None)`` row indices of epoch ``epoch``."""
    if b.order == "replace":
        g = epoch * b.steps + jnp.arange(b.steps)
        key = _data_key(b, data_key)
        draw = lambda i: jax.random.randint(jax.random.fold_in(key, i), (b.bs,), 0, b.n)  # noqa: E731
        return jax.vmap(draw)(g), None
    if b.stream:
        per_pass = b.n // b.bs
        g = epoch * b.steps + jnp.arange(b.steps)
        first = (epoch * b.steps) // per_pass
        spans = (b.steps - 1) // per_pass + 2  # passes an epoch can touch
        orders = jnp.stack([_pass_order(b, first + j, data_key) for j in range(spans)])
        cols = (g % per_pass)[:, None] * b.bs + jnp.arange(b.bs)[None, :]
        return orders[(g // per_pass - first)[:, None], cols], None
    perm = row if b.order == "rows" else _pass_order(b, epoch, data_key)
    full = perm[: b.steps * b.bs].reshape(b.steps, b.bs)
    return full, (perm[b.steps * b.bs :] if b.rem else None)


class Kernel(NamedTuple):
    """``run(params, state, X, y, epoch_ids, lrs, rows, key, mode) -> (params, state,
    params_at_last_epoch_start, state_at_last_epoch_start, losses (epochs, batches),
    finite (epochs,))``; ``finite[j]``: every param is finite after epoch ``j`` (one ``isfinite``
    reduction per epoch, on the device).

    ``probe(params, state, X, y, epoch_id, lr, row, key) -> (losses (batches,), finite
    (batches,))``: one epoch with the check after every batch, compiled only to name the batch
    at which a run's params stopped being finite."""

    scan: Callable[..., Any]
    stepwise: Callable[..., Any]
    probe: Callable[..., Any]

    def run(self, params, state, X, y, epoch_ids, lrs, rows, key, mode: str):
        fn = self.stepwise if mode == "step" else self.scan
        return fn(params, state, X, y, epoch_ids, lrs, rows, key)


def all_finite(tree: Any) -> Array:
    """Traced: a boolean scalar, True when every floating leaf of ``tree`` is finite."""
    flags = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    return jnp.all(jnp.stack(flags)) if flags else jnp.bool_(True)


def _keys(net: Op, key):
    if key is None:
        return None, None
    data_key, drop_key = jax.random.split(key)
    return data_key, (drop_key if net.stochastic else None)


def _batch_key(drop_key, epoch, b):
    if drop_key is None:
        return None
    return jax.random.fold_in(jax.random.fold_in(drop_key, epoch), b)


@functools.lru_cache(maxsize=64)
def period_kernel(
    net: Op, loss: Loss, optimizer: Optimizer, batching: Batching, mesh: Mesh | None = None
) -> Kernel:
    """The compiled period runners for one (model, batching, mesh) configuration.

    Cached, so a second ``fit`` with the same configuration does not recompile. With a mesh,
    each gathered batch is constrained to the ``"data"`` axis and the updated params and state to
    be replicated; XLA partitions the step and inserts the gradient all-reduce.
    """
    step = make_step(net, loss, optimizer)

    def gathered_step(params, state, Xd, yd, idx, lr, key):
        xb, yb = parallel.shard_batch((Xd[idx], yd[idx]), mesh)
        params, state, value = step(params, state, xb, yb, lr, key)
        params, state = parallel.constrain_replicated((params, state), mesh)
        return params, state, value

    return Kernel(
        _scan_runner(net, gathered_step, batching),
        _stepwise_runner(net, gathered_step, batching),
        _probe_runner(net, gathered_step, batching),
    )


def _epoch_runner(gathered_step: Callable, b_: Batching, per_batch: bool) -> Callable:
    """One epoch's batches: ``(params, state, losses (batches,)[, finite (batches,)])``."""

    def run_epoch(params, state, Xd, yd, rows, lr, epoch, drop_key):
        def body(carry, inp):
            b, idx = inp
            p, s, value = gathered_step(*carry, Xd, yd, idx, lr, _batch_key(drop_key, epoch, b))
            return (p, s), ((value, all_finite(p)) if per_batch else value)

        full, last = rows
        (params, state), out = jax.lax.scan(body, (params, state), (jnp.arange(b_.steps), full))
        if last is not None:
            key = _batch_key(drop_key, epoch, b_.steps)
            params, state, value = gathered_step(params, state, Xd, yd, last, lr, key)
            tail = (value, all_finite(params)) if per_batch else value
            out = jax.tree.map(lambda a, v: jnp.concatenate([a, v[None]]), out, tail)
        return params, state, out

    return run_epoch


def _probe_runner(net: Op, gathered_step: Callable, b_: Batching) -> Callable:
    """One epoch checked after every batch (see :class:`Kernel`)."""
    run_epoch = _epoch_runner(gathered_step, b_, per_batch=True)

    @jax.jit
    def probe(params, state, Xd, yd, epoch, lr, perm_row, key):
        data_key, drop_key = _keys(net, key)
        rows = epoch_rows(b_, epoch, perm_row, data_key)
        return run_epoch(params, state, Xd, yd, rows, lr, epoch, drop_key)[2]

    return probe


def _scan_runner(net: Op, gathered_step: Callable, b_: Batching) -> Callable:
    """The epochs of a period in one compiled call: a scan over epochs of scans over batches."""
    run_epoch = _epoch_runner(gathered_step, b_, per_batch=False)

    @jax.jit
    def scan(params, state, Xd, yd, epoch_ids, lrs, perm_rows, key):
        data_key, drop_key = _keys(net, key)

        def body(carry, inp):
            p, s, _, _ = carry
            e, lr_e, row = inp
            rows = epoch_rows(b_, e, row, data_key)
            p2, s2, losses = run_epoch(p, s, Xd, yd, rows, lr_e, e, drop_key)
            return (p2, s2, p, s), (losses, all_finite(p2))

        init = (params, state, params, state)
        (p, s, p_prev, s_prev), (losses, finite) = jax.lax.scan(
            body, init, (epoch_ids, lrs, perm_rows)
        )
        return p, s, p_prev, s_prev, losses, finite

    return scan


def _stepwise_runner(net: Op, gathered_step: Callable, b_: Batching) -> Callable:
    """The same epochs, one compiled dispatch per batch (no host round trip until the end)."""

    @jax.jit
    def epoch_setup(epoch, perm_row, key):
        data_key, drop_key = _keys(net, key)
        return epoch_rows(b_, epoch, perm_row, data_key), drop_key

    @jax.jit
    def batch_step(params, state, Xd, yd, idx, b, lr, epoch, drop_key):
        if idx.ndim == 2:  # the full batches: pick batch b
            idx = jax.lax.dynamic_index_in_dim(idx, b, keepdims=False)
        return gathered_step(params, state, Xd, yd, idx, lr, _batch_key(drop_key, epoch, b))

    finite_fn = jax.jit(all_finite)
    batch_ids: list[Array] = []  # device scalars, made once: no host->device copy per step

    def stepwise(params, state, Xd, yd, epoch_ids, lrs, perm_rows, key):
        if not batch_ids:
            batch_ids.extend(jax.device_put([np.int32(b) for b in range(b_.steps + 1)]))
        all_losses, finite = [], []
        p_prev, s_prev = params, state
        for j in range(epoch_ids.shape[0]):
            p_prev, s_prev = params, state
            e, lr_j = jax.device_put((epoch_ids[j], lrs[j]))
            (full, last), drop_key = epoch_setup(e, perm_rows[j], key)
            batches = [(full, b) for b in range(b_.steps)] + ([(last, b_.steps)] if b_.rem else [])
            vals = []
            for idx, b in batches:
                args = (Xd, yd, idx, batch_ids[b], lr_j, e, drop_key)
                params, state, v = batch_step(params, state, *args)
                vals.append(v)
            all_losses.append(jnp.stack(vals))
            finite.append(finite_fn(params))  # on the device: no host round trip
        return params, state, p_prev, s_prev, jnp.stack(all_losses), jnp.stack(finite)

    return stepwise
