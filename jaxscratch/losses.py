"""Losses: ``forward(pred, target) -> (loss, cache)`` and ``backward(cache) -> dpred``.

``loss`` is a scalar; ``dpred`` has the shape of ``pred``. Prediction and target shapes must match
exactly: an (n, 1) prediction against an (n,) target is a ``ValueError``, never a silent (n, n)
broadcast.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxscratch.core import Array, Loss, register_loss


def _check_same_shape(fn: str, pred: Array, target: Array) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"{fn}: prediction shape {tuple(pred.shape)} does not match target shape "
            f"{tuple(target.shape)}"
        )
    if pred.ndim == 0 or pred.shape[0] == 0:
        raise ValueError(f"{fn}: expected a non-empty batch, got shape {tuple(pred.shape)}")


def _mse_forward(pred: Array, target: Array) -> tuple[Array, tuple[Array, int]]:
    """The book's loss: sum((pred - target)^2) / batch. pred, target: (batch, ...).

    Caches ``(pred - target, batch)``; backward: ``2 (pred - target) / batch``.
    """
    _check_same_shape("mean_squared_error", pred, target)
    diff = pred - target
    n = pred.shape[0]
    return jnp.sum(diff * diff) / n, (diff, n)


def _mse_backward(cache: tuple[Array, int]) -> Array:
    diff, n = cache
    return 2.0 * diff / n


def _mse_example(key: Array) -> tuple[Array, Array]:
    k1, k2 = jax.random.split(key)
    return jax.random.normal(k1, (7, 3), jnp.float64), jax.random.normal(k2, (7, 3), jnp.float64)


mean_squared_error = register_loss(
    Loss("mean_squared_error", _mse_forward, _mse_backward), _mse_example
)

LOSSES: dict[str, Loss] = {"mean_squared_error": mean_squared_error, "mse": mean_squared_error}
