"""Embeddings: integer ids to learned vectors, the gradient a scatter-add.

``embedding(vocab, dim)``: ids (batch, T) (any integer array with a batch axis) -> y (batch, T,
dim), ``y[b, t] = W[ids[b, t]]``; params ``{"W": (vocab, dim)}``. cache: ``(ids, vocab)``.

Backward: row ``v`` of ``dW`` is the sum of ``dy[b, t]`` over every position with
``ids[b, t] == v`` (``zeros.at[ids].add(dy)``, a scatter-add: an id seen twice gets both
cotangents; an id never seen gets zero). ``dx`` follows ``jax.vjp``'s convention for integer
inputs: a ``float0`` array of ``ids``' shape (no gradient flows into an index), so the oracle
compares the two trees directly.

Ids out of ``[0, vocab)`` are an error: a ``ValueError`` when ``ids`` are concrete; under
``jit`` (traced ids cannot be inspected) the rows they pick are NaN and they add nothing to
``dW``, so a bad id shows in the loss instead of silently reading a clamped or wrapped row.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from jaxscratch.core import Array, Op, Shape, register
from jaxscratch.ops import init as initializers
from jaxscratch.validate import check_positive_int


def _checked_ids(fn: str, ids: Array, vocab: int) -> Array:
    """``ids`` with every out-of-range id (negative included) mapped to ``vocab`` (out of
    bounds: NaN in the gather, dropped in the scatter). Raises for non-integer or, when
    concrete, out-of-range ids."""
    dtype = getattr(ids, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{fn}: ids must be an integer array, got {dtype or type(ids).__name__}")
    if ids.ndim < 1:
        raise ValueError(f"{fn}: ids must have a batch axis, got shape {tuple(ids.shape)}")
    if not isinstance(ids, jax.core.Tracer) and ids.size:
        lo, hi = int(jnp.min(ids)), int(jnp.max(ids))
        if lo < 0 or hi >= vocab:
            raise ValueError(f"{fn}: ids must lie in [0, {vocab}), got ids in [{lo}, {hi}]")
    return jnp.where((ids < 0) | (ids >= vocab), vocab, ids)


def embedding(vocab: int, dim: int, *, init: str = "normal", dtype: DTypeLike | None = None) -> Op:
    """The embedding op (see the module docstring). ``init``: a name of
    :data:`jaxscratch.ops.init.INITIALIZERS` for W (default standard normal).

    ids (batch, ...) integer -> y (batch, ..., dim). init: per-row ``(T,)`` -> ``(T, dim)``.
    """
    vocab = check_positive_int("embedding", "vocab", vocab)
    dim = check_positive_int("embedding", "dim", dim)
    initializers.check_initializer("embedding", init)
    name = f"embedding[{vocab},{dim}]"

    def forward(params: dict[str, Array], ids: Array) -> tuple[Array, tuple[Array, int]]:
        """y = W[ids]. Caches the range-checked ids and vocab."""
        W = params["W"]
        if W.ndim != 2 or W.shape[0] != vocab:
            raise ValueError(f"{name}: W must be ({vocab}, dim), got {tuple(W.shape)}")
        safe = _checked_ids(name, ids, vocab)
        return jnp.take(W, safe, axis=0, mode="fill", fill_value=jnp.nan), (safe, vocab)

    def backward(cache: tuple[Array, int], dy: Array) -> tuple[dict[str, Array], np.ndarray]:
        """dW = scatter-add of dy into the rows ids name; dx = float0 zeros of ids' shape."""
        ids, n = cache
        if dy.shape[: ids.ndim] != ids.shape or dy.ndim != ids.ndim + 1:
            raise ValueError(f"{name}: dy{tuple(dy.shape)} does not fit ids{tuple(ids.shape)}")
        dW = jnp.zeros((n, dy.shape[-1]), dy.dtype).at[ids].add(dy, mode="drop")
        return {"W": dW}, np.zeros(ids.shape, jax.dtypes.float0)

    def init_fn(key: Array, in_shape: Shape) -> tuple[Shape, dict[str, Array]]:
        if len(in_shape) < 1:
            raise ValueError(f"{name}: expects ids of shape (batch, T), got per-row {in_shape}")
        W = initializers.initialize(init, key, (vocab, dim), dtype)
        return (*in_shape, dim), {"W": W}

    return Op(name, forward, backward, init_fn)


def _example(key: Array) -> tuple[dict[str, Array], Array]:
    """W (7, 4); ids (3, 5) with repeated ids (the scatter must add, not set) and unused ids
    (their rows of dW must be zero)."""
    rng = initializers.host_rng(key)
    W = jnp.asarray(rng.standard_normal((7, 4)) + 0.3)
    ids = jnp.asarray(rng.integers(0, 5, (3, 5)))  # ids 5 and 6 never appear
    ids = ids.at[0, 0].set(2).at[2, 4].set(2).at[1, 2].set(2)  # id 2 at least three times
    return {"W": W}, ids


register(embedding(7, 4), _example, name="embedding")


def learned_positions(*, scale: float = 0.02, dtype: DTypeLike | None = None) -> Op:
    """A learned vector per position, added: x (batch, T, d) -> y = x + P[None], params
    ``{"P": (T, d)}`` (drawn normal with std ``scale``; T and d from the input at init), so an
    attention layer, which sees a set, learns where each token is. Backward: ``dP = sum over the
    batch of dy``, ``dx = dy``. cache: None."""
    name = "learned_positions"

    def forward(params: dict[str, Array], x: Array) -> tuple[Array, None]:
        P = params["P"]
        if x.ndim != 3 or tuple(x.shape[1:]) != tuple(P.shape):
            raise ValueError(
                f"{name}: x{tuple(x.shape)} does not fit P{tuple(P.shape)}; expected "
                f"(batch, {P.shape[0]}, {P.shape[1]})"
            )
        return x + P[None], None

    def backward(cache: None, dy: Array) -> tuple[dict[str, Array], Array]:
        return {"P": jnp.sum(dy, axis=0)}, dy

    def init_fn(key: Array, in_shape: Shape) -> tuple[Shape, dict[str, Array]]:
        if len(in_shape) != 2:
            raise ValueError(f"{name}: expects rows of shape (T, d), got {in_shape}")
        return tuple(in_shape), {"P": initializers.normal(key, tuple(in_shape), dtype, scale=scale)}

    return Op(name, forward, backward, init_fn)


def _positions_example(key: Array) -> tuple[dict[str, Array], Array]:
    rng = initializers.host_rng(key)
    return (
        {"P": jnp.asarray(rng.standard_normal((5, 3)))},
        jnp.asarray(rng.standard_normal((4, 5, 3))),
    )


register(learned_positions(), _positions_example, name="learned_positions")

__all__ = ["embedding", "learned_positions"]
