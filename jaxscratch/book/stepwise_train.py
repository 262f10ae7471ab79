"""Chapter 2's training loop: mini-batch SGD on the book's batch schedule, in one compiled call.

The models and their hand-derived gradients are :mod:`jaxscratch.book.stepwise`'s.
:func:`train` is one jit-compiled call: a ``lax.scan`` over passes through the data, each an inner
``lax.scan`` over the full batches plus one step on the shorter last batch, with the whole plan of
permutations precomputed, so the data stays on the device and no batch goes back to the host.
Book-compatible randomness (``rng="book"``) replays the book's numpy draws: seed the legacy RNG,
draw the weights with ``randn``, then one ``permutation(n)`` per pass, each applied to the already
permuted rows (the book re-permutes its permuted copy). ``rng="jax"`` uses ``jax.random``.

:class:`BatchPlan` (from :func:`batch_plan`) says how iterations fall on passes; it is not a
learning-rate schedule (those are :mod:`jaxscratch.optim.schedules`).
"""

from __future__ import annotations

from functools import partial
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxscratch.book.stepwise import (
    FORWARD,
    GRADIENTS,
    Array,
    Mode,
    ModelName,
    Weights,
    _check_finite,
    _check_mode,
    _check_model,
    _check_y,
    book_init_weights,
    init_weights,
)
from jaxscratch.train.shuffle import permutation
from jaxscratch.validate import check_choice, check_int, check_positive, check_positive_int


def book_permutations(rng: np.random.RandomState, n_rows: int, n_passes: int) -> np.ndarray:
    """Row orders of the book's passes, as indices into the original rows: (n_passes, n_rows).

    The book permutes its *already permuted* copy (``X, y = permute_data(X, y)``), so the order
    of pass p is ``order[p-1][rng.permutation(n_rows)]``.
    """
    orders = np.empty((n_passes, n_rows), dtype=np.int64)
    order = np.arange(n_rows)
    for p in range(n_passes):
        order = order[rng.permutation(n_rows)]
        orders[p] = order
    return orders


class BatchPlan(NamedTuple):
    """How ``n_iter`` iterations of ``batch_size`` rows fall on passes through ``n_rows`` rows.

    Each pass has ``n_full`` batches of ``batch_size`` rows and, if ``rem > 0``, one last batch of
    ``rem`` rows (``per_pass`` iterations). ``n_iter = passes * per_pass + extra``, where the
    ``extra`` iterations (all full batches) start one more pass; ``n_passes`` permutations in all.
    """

    n_full: int
    rem: int
    per_pass: int
    passes: int
    extra: int
    n_passes: int


def batch_plan(n_rows: int, batch_size: int, n_iter: int) -> BatchPlan:
    """The book's batch plan: ``start`` advances by ``batch_size``; a new pass at ``n_rows``.

    n_rows, batch_size (<= n_rows), n_iter: positive integers (not checked here: :func:`train`
    checks them).
    """
    n_full, rem = divmod(n_rows, batch_size)
    per_pass = n_full + (rem > 0)
    passes, extra = divmod(n_iter, per_pass)
    return BatchPlan(n_full, rem, per_pass, passes, extra, passes + (extra > 0))


# --------------------------------------------------------------------------------------------------
# training


class TrainResult(NamedTuple):
    """weights: the trained weights (device arrays); losses: (n_iter,) mean squared error of each
    training batch, before that batch's update (what the book records)."""

    weights: Weights
    losses: Array


@partial(jax.jit, static_argnums=(1, 2, 3), static_argnames=("model", "hidden_size", "dtype"))
def _jax_setup(
    key: Array,
    n: int,
    d: int,
    n_passes: int,
    *,
    model: ModelName,
    hidden_size: int,
    dtype: jnp.dtype,
) -> tuple[Weights, Array]:
    """rng="jax": weights from one half of ``key``; pass p's row order from ``fold_in(other, p)``."""
    k_init, k_data = jax.random.split(key)
    weights = init_weights(k_init, d, model=model, hidden_size=hidden_size, dtype=dtype)
    orders = jax.vmap(lambda p: permutation(jax.random.fold_in(k_data, p), n))(jnp.arange(n_passes))
    return weights, orders


@partial(jax.jit, static_argnames=("model", "mode", "batch_size", "n_iter"))
def _run(
    weights: Weights,
    X: Array,
    y: Array,
    orders: Array,
    lr: Array,
    *,
    model: ModelName,
    mode: Mode,
    batch_size: int,
    n_iter: int,
) -> tuple[Weights, Array]:
    """All ``n_iter`` SGD steps in one compiled call (see :func:`train`)."""
    forward, gradients = FORWARD[model], GRADIENTS[model]
    n, d = X.shape
    s = batch_plan(n, batch_size, n_iter)
    b = batch_size

    def step(w: Weights, batch: tuple[Array, Array]) -> tuple[Weights, Array]:
        Xb, yb = batch
        loss, info = forward(Xb, yb, w)
        grads, _ = gradients(info, w, mode)
        return jax.tree.map(lambda p, g: p - lr * g, w, grads), loss

    def full_batches(order: Array, count: int) -> tuple[Array, Array]:
        idx = order[: count * b]
        return X[idx].reshape(count, b, d), y[idx].reshape(count, b, 1)

    def one_pass(w: Weights, order: Array) -> tuple[Weights, Array]:
        w, losses = lax.scan(step, w, full_batches(order, s.n_full))
        if s.rem:  # the book's shorter last batch, a step of its own (static shape (rem, d))
            tail = order[s.n_full * b :]
            w, last = step(w, (X[tail], y[tail]))
            losses = jnp.concatenate([losses, last[None]])
        return w, losses

    parts = []
    if s.passes:
        weights, losses = lax.scan(one_pass, weights, orders[: s.passes])
        parts.append(losses.reshape(-1))
    if s.extra:
        weights, losses = lax.scan(step, weights, full_batches(orders[s.passes], s.extra))
        parts.append(losses)
    return weights, jnp.concatenate(parts)


def train(
    X: Array | np.ndarray,
    y: Array | np.ndarray,
    *,
    model: ModelName,
    n_iter: int,
    lr: float,
    batch_size: int,
    seed: int,
    mode: Mode = "mean",
    rng: Literal["book", "jax"] | None = None,
    hidden_size: int = 13,
    dtype: jnp.dtype = jnp.float64,
) -> TrainResult:
    """Mini-batch SGD on the book's batch plan, all iterations in one jit-compiled call.

    X: (n, d), y: (n, 1), finite. ``model`` "linear" or "network" (``hidden_size`` sigmoid units).
    Iteration i takes the next ``batch_size`` rows of the current row order (the last batch of a
    pass is shorter, ``n % batch_size`` rows); when the start reaches ``n`` a new pass begins with a
    new order. Update ``w <- w - lr * grad`` with the gradients of ``mode`` (see :data:`MODES`).

    ``rng`` (default: "book" for the book modes, "jax" for "mean"):
    "book" replays the book's numpy draws from ``np.random.RandomState(seed)`` (weights, then one
    permutation per pass, composed as the book does); "jax" splits ``jax.random.key(seed)`` into an
    init key and a data key and draws pass p's order with ``fold_in(data_key, p)``.
    ``dtype`` float64 needs ``jax_enable_x64``. Returns :class:`TrainResult`.
    """
    fn = "train"
    _check_model(fn, model)
    _check_mode(fn, mode)
    rng = rng if rng is not None else ("jax" if mode == "mean" else "book")
    check_choice(fn, "rng", rng, ("book", "jax"))
    dtype = jnp.dtype(dtype)
    if dtype == jnp.float64 and not jax.config.read("jax_enable_x64"):
        raise ValueError(
            f"{fn}: dtype float64 needs jax.config.update('jax_enable_x64', True) "
            "(or pass dtype=jnp.float32)"
        )
    Xh, yh = np.asarray(X), np.asarray(y)
    if Xh.ndim != 2:
        raise ValueError(f"{fn}: X has shape {Xh.shape}, expected (n, d)")
    _check_y(fn, Xh, yh)
    _check_finite(fn, X=Xh, y=yh)
    n, d = Xh.shape
    batch_size = check_int(fn, "batch_size", batch_size, minimum=1, maximum=n)
    n_iter = check_positive_int(fn, "n_iter", n_iter)
    lr = check_positive(fn, "lr", lr)
    seed = check_int(fn, "seed", seed, minimum=0, maximum=2**32 - 1)
    n_passes = batch_plan(n, batch_size, n_iter).n_passes

    if rng == "book":
        r = np.random.RandomState(seed)
        w0 = book_init_weights(r, d, model=model, hidden_size=hidden_size)
        weights = {k: jnp.asarray(v, dtype) for k, v in w0.items()}
        orders = jnp.asarray(book_permutations(r, n, n_passes))
    else:
        weights, orders = _jax_setup(
            jax.random.key(seed), n, d, n_passes, model=model, hidden_size=hidden_size, dtype=dtype
        )
    weights, losses = _run(
        weights,
        jnp.asarray(Xh, dtype),
        jnp.asarray(yh, dtype),
        orders,
        jnp.asarray(lr, dtype),
        model=model,
        mode=mode,
        batch_size=batch_size,
        n_iter=n_iter,
    )
    return TrainResult(weights, losses)
