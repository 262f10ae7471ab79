"""Losses: ``forward(pred, target) -> (loss, cache)`` and ``backward(cache) -> dpred``.

``loss`` is a scalar; ``dpred`` has the shape of ``pred``. Prediction and target shapes must match
exactly: an (n, 1) prediction against an (n,) target is a ``ValueError``, never a silent (n, n)
broadcast. The one exception is :data:`softmax_cross_entropy`, whose target may also be (n,)
integer class ids for (n, k) logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxscratch.core import Array, Loss, draw_dims, register_loss


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
    dims = draw_dims(jax.random.fold_in(key, 1), (2, 3), (4, 5))
    k1, k2 = jax.random.split(key)
    return jax.random.normal(k1, dims, jnp.float64), jax.random.normal(k2, dims, jnp.float64)


mean_squared_error = register_loss(
    Loss("mean_squared_error", _mse_forward, _mse_backward), _mse_example
)


def _mean_se_forward(pred: Array, target: Array) -> tuple[Array, tuple[Array, int]]:
    """mean((pred - target)^2) over every element (PyTorch's ``MSELoss()``, which the book's
    chapter 7 uses). pred, target: (batch, ...). Caches ``(pred - target, size)``; backward:
    ``2 (pred - target) / size``."""
    _check_same_shape("elementwise_mean_squared_error", pred, target)
    diff = pred - target
    return jnp.mean(diff * diff), (diff, diff.size)


def _mean_se_example(key: Array) -> tuple[Array, Array]:
    k1, k2 = jax.random.split(key)
    return (
        jax.random.normal(k1, (3, 2, 5), jnp.float64),
        jax.random.normal(k2, (3, 2, 5), jnp.float64),
    )


elementwise_mean_squared_error = register_loss(
    Loss("elementwise_mean_squared_error", _mean_se_forward, _mse_backward), _mean_se_example
)


def _label_tol(dtype: jnp.dtype, k: int) -> float:
    """How far a target row's sum may stray from 1: a few hundred ulps per class."""
    return 100.0 * k * float(jnp.finfo(dtype).eps)


def _targets(fn: str, logits: Array, target: Array) -> tuple[Array, Array]:
    """Validate ``target`` against ``logits`` (batch, k); return (probability rows, row validity).

    Shapes and dtypes are checked at trace time. Values are checked when ``target`` is concrete
    (``ValueError``); under ``jit`` they cannot raise, so the returned validity mask (False for a
    label out of range, a negative entry or a row not summing to 1) lets the caller poison those
    rows with NaN instead of training on a silent all-zero row.
    """
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(
            f"{fn}: expected logits of shape (batch, classes), got {tuple(logits.shape)}"
        )
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise TypeError(f"{fn}: logits must be floating point, got {logits.dtype}")
    n, k = logits.shape
    concrete = not isinstance(target, jax.core.Tracer)
    if target.ndim == 1:
        if target.shape[0] != n:
            raise ValueError(
                f"{fn}: {target.shape[0]} integer labels for logits of shape {tuple(logits.shape)}"
            )
        if target.dtype == jnp.bool_ or not jnp.issubdtype(target.dtype, jnp.integer):
            raise TypeError(
                f"{fn}: labels of shape ({n},) must be integer class ids, got dtype "
                f"{target.dtype} (pass one-hot rows of shape ({n}, {k}) for float targets)"
            )
        if concrete:
            lab = np.asarray(target)
            bad = np.flatnonzero((lab < 0) | (lab >= k))
            if bad.size:
                raise ValueError(
                    f"{fn}: label {lab[bad[0]]} at index {bad[0]} is outside 0..{k - 1} "
                    f"({bad.size} labels out of range)"
                )
        valid = (target >= 0) & (target < k)
        return jax.nn.one_hot(target, k, dtype=logits.dtype), valid
    if target.shape != logits.shape:
        raise ValueError(
            f"{fn}: target shape {tuple(target.shape)} matches neither the logits "
            f"{tuple(logits.shape)} (one-hot rows) nor ({n},) (integer labels)"
        )
    if not jnp.issubdtype(target.dtype, jnp.floating):
        raise TypeError(
            f"{fn}: one-hot targets of shape {tuple(target.shape)} must be floating point, got "
            f"{target.dtype} (integer class ids have shape ({n},))"
        )
    tol = _label_tol(target.dtype, k)
    if concrete:
        t = np.asarray(target, np.float64)
        sums = t.sum(axis=1)
        bad = np.flatnonzero(~np.isfinite(sums) | (np.abs(sums - 1.0) > tol) | (t < 0).any(axis=1))
        if bad.size:
            raise ValueError(
                f"{fn}: target row {bad[0]} {t[bad[0]].tolist()} is not a one-hot (or probability) "
                f"row: entries must be >= 0 and sum to 1 ({bad.size} bad rows)"
            )
    valid = (jnp.abs(jnp.sum(target, axis=1) - 1.0) <= tol) & jnp.all(target >= 0, axis=1)
    return target.astype(logits.dtype), valid


def _sce_forward(logits: Array, target: Array) -> tuple[Array, tuple[Array, Array, Array, int]]:
    """Softmax fused with cross-entropy: mean over the batch of -log softmax(logits)[label].

    logits: (batch, k). target: (batch, k) one-hot (or probability) rows, float; or (batch,)
    integer class ids. log softmax = (x - max x) - log(sum exp(x - max x)), so logits of +-1e4
    stay finite and exact. Loss = -sum(target * log_softmax) / batch. Caches
    ``(softmax, target rows, row validity, batch)``; backward: ``(softmax - target) / batch``.
    Invalid target values raise when concrete; under ``jit`` they make the loss (and those rows'
    gradient) NaN, which :func:`jaxscratch.train.loop.fit` reports as ``TrainingDiverged``.
    """
    t, valid = _targets("softmax_cross_entropy", logits, target)
    n = logits.shape[0]
    # one exp for both the log-softmax and the softmax the backward pass needs
    shifted = logits - jax.lax.stop_gradient(jnp.max(logits, axis=1, keepdims=True))
    e = jnp.exp(shifted)
    s = jnp.sum(e, axis=1, keepdims=True)  # >= 1: the max entry contributes exp(0)
    logp = shifted - jnp.log(s)
    # t * logp with t == 0 and logp finite is 0: no 0 * inf, since log_softmax is finite here
    value = -jnp.sum(t * logp) / n
    value = jnp.where(jnp.all(valid), value, jnp.nan)
    return value, (e / s, t, valid, n)


def _sce_backward(cache: tuple[Array, Array, Array, int]) -> Array:
    probs, t, valid, n = cache
    grad = (probs - t) / n
    return jnp.where(valid[:, None], grad, jnp.nan)


def _sce_example(key: Array) -> tuple[Array, Array]:
    k1, k2 = jax.random.split(key)
    logits = 3.0 * jax.random.normal(k1, (7, 4), jnp.float64)
    labels = jax.random.randint(k2, (7,), 0, 4)
    return logits, jax.nn.one_hot(labels, 4, dtype=jnp.float64)


softmax_cross_entropy = register_loss(
    Loss("softmax_cross_entropy", _sce_forward, _sce_backward), _sce_example
)

LOSSES: dict[str, Loss] = {
    "mean_squared_error": mean_squared_error,
    "mse": mean_squared_error,
    "elementwise_mean_squared_error": elementwise_mean_squared_error,
    "softmax_cross_entropy": softmax_cross_entropy,
}
