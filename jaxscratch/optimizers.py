"""Optimizers as ``Optimizer(init, update)`` pairs of pure functions.

``init(params) -> state``; ``update(grads, state, params, lr) -> (new_params, new_state)``. ``params``
and ``grads`` are any pytree of the same structure; ``lr`` is an argument of ``update`` (a traced
scalar under ``jit``), so a decaying learning rate never recompiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Params = Any


class Optimizer(NamedTuple):
    """``init(params) -> state``; ``update(grads, state, params, lr) -> (params, state)``."""

    init: Callable[[Params], Any]
    update: Callable[[Params, Any, Params, Any], tuple[Params, Any]]


def check_lr(fn: str, lr: Any) -> None:
    """Reject a learning rate that is not a positive finite number (host values only)."""
    if isinstance(lr, jax.core.Tracer):
        return
    try:
        value = float(lr)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: learning rate must be a number, got {type(lr).__name__}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{fn}: learning rate must be positive and finite, got {value}")


class SGDState(NamedTuple):
    """Plain SGD keeps no state."""


def sgd() -> Optimizer:
    """Plain gradient descent: ``p <- p - lr * g``."""

    def init(params: Params) -> SGDState:
        del params
        return SGDState()

    def update(grads: Params, state: SGDState, params: Params, lr: Any) -> tuple[Params, SGDState]:
        check_lr("sgd", lr)
        return jax.tree.map(lambda p, g: p - lr * g, params, grads), state

    return Optimizer(init, update)


def zeros_like_tree(params: Params) -> Params:
    """A pytree of zeros with the structure, shapes and dtypes of ``params``."""
    return jax.tree.map(jnp.zeros_like, params)
