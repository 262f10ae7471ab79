"""Gradient clipping as optimizer wrappers (chapter 6).

``clip_elementwise(opt, limit)`` and ``clip_global_norm(opt, max_norm)`` return an
:class:`~jaxscratch.optim.optimizers.Optimizer` whose ``update`` clips the gradients and then calls
``opt.update``; the state is ``opt``'s own. Both are pure ``jax.numpy`` (no host round trip), so
they run under ``jit`` and inside ``lax.scan``. Like the optimizer factories they are cached: the
same ``(opt, limit)`` gives the same object, so compiled training programs are reused.

| wrapper | rule |
|---|---|
| :func:`clip_elementwise` | g <- clip(g, -limit, limit), every entry (the book's ``[-2, 2]``) |
| :func:`clip_global_norm` | g <- g * min(1, max_norm / ||g||), ||g|| over *all* leaves |

Element-wise clipping changes the gradient's direction; global-norm clipping keeps it and only
shortens the step. A non-finite gradient stays non-finite (so divergence is still detected).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from jaxscratch.optim.optimizers import Optimizer
from jaxscratch.validate import check_positive

Params = Any


def _check_optimizer(fn: str, opt: Any) -> None:
    if not isinstance(opt, Optimizer):
        raise TypeError(f"{fn}: expected an Optimizer, got {type(opt).__name__}")


def clip_by_value(grads: Params, limit: float) -> Params:
    """Every gradient entry clipped to ``[-limit, limit]`` (same tree, shapes, dtypes)."""
    return jax.tree.map(lambda g: jnp.clip(g, -limit, limit), grads)


def global_norm(grads: Params) -> jax.Array:
    """``sqrt(sum of squares of every entry of every leaf)``, a scalar."""
    leaves = jax.tree.leaves(grads)
    if not leaves:
        return jnp.zeros(())
    return jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in leaves))


def clip_by_global_norm(grads: Params, max_norm: float) -> Params:
    """``grads * min(1, max_norm / global_norm(grads))``: the direction kept, the norm <= max_norm."""
    norm = global_norm(grads)
    # norm > max_norm > 0 in the first branch, so the division is safe; a NaN norm keeps NaN grads
    scale = jnp.where(norm > max_norm, max_norm / jnp.maximum(norm, max_norm), 1.0)
    return jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)


def clip_elementwise(opt: Optimizer, limit: float = 2.0) -> Optimizer:
    """``opt`` applied to gradients clipped entry-wise to ``[-limit, limit]`` (book: 2). Cached."""
    _check_optimizer("clip_elementwise", opt)
    return _clip_elementwise(opt, check_positive("clip_elementwise", "limit", limit))


@functools.cache
def _clip_elementwise(opt: Optimizer, limit: float) -> Optimizer:
    def update(grads: Params, state: Any, params: Params, lr: Any) -> tuple[Params, Any]:
        return opt.update(clip_by_value(grads, limit), state, params, lr)

    return Optimizer(opt.init, update)


def clip_global_norm(opt: Optimizer, max_norm: float) -> Optimizer:
    """``opt`` applied to gradients rescaled to a global norm of at most ``max_norm``. Cached."""
    _check_optimizer("clip_global_norm", opt)
    return _clip_global_norm(opt, check_positive("clip_global_norm", "max_norm", max_norm))


@functools.cache
def _clip_global_norm(opt: Optimizer, max_norm: float) -> Optimizer:
    def update(grads: Params, state: Any, params: Params, lr: Any) -> tuple[Params, Any]:
        return opt.update(clip_by_global_norm(grads, max_norm), state, params, lr)

    return Optimizer(opt.init, update)
