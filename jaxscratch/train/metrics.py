"""The one metrics module: accuracy, MAE, RMSE and R^2, inside ``jit`` and on the host alike.

Each formula is written once against an array namespace ``xp``: :mod:`jax.numpy` when any input
is a JAX array (a traced value inside ``jit``, as in ``fit``'s evaluator, or a concrete device
array), :mod:`numpy` in float64 when every input is a host value (numpy array, list, scalar).

Return type:
    * some input a JAX array (traced or concrete): a 0-d JAX array in the inputs' float dtype;
    * all inputs host values: a Python ``float`` computed in float64.

Shapes are checked on ``.shape``/``.ndim`` (free at trace time): a mismatch is a ``ValueError``
naming both shapes, never a silent broadcast of (n, 1) against (n,) and never a quiet 0.0.
Checks on *values* (labels out of range, empty input, constant target for R^2) need concrete
values, so they run whenever no input is traced; inside ``jit`` each function documents what it
returns instead.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxscratch.validate import check_float

__all__ = ["accuracy", "binary_accuracy", "mae", "r2", "rmse"]


def _namespace(*arrays: Any) -> ModuleType:
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def _is_traced(*arrays: Any) -> bool:
    return any(isinstance(a, jax.core.Tracer) for a in arrays)


def _as_float(xp: ModuleType, a: Any) -> Any:
    if xp is np:
        return np.asarray(a, dtype=np.float64)
    a = jnp.asarray(a)
    return a if jnp.issubdtype(a.dtype, jnp.floating) else a.astype(jnp.result_type(float))


def _result(xp: ModuleType, value: Any) -> Any:
    return float(value) if xp is np else value


def _pair(fn: str, pred: Any, target: Any) -> tuple[ModuleType, Any, Any]:
    xp = _namespace(pred, target)
    p, t = _as_float(xp, pred), _as_float(xp, target)
    if p.shape != t.shape:
        raise ValueError(
            f"{fn}: prediction shape {tuple(p.shape)} does not match target shape "
            f"{tuple(t.shape)}; pass both with the same shape (no broadcasting)"
        )
    if p.size == 0:
        raise ValueError(f"{fn}: empty input (shape {tuple(p.shape)})")
    return xp, p, t


def mae(pred: Any, target: Any) -> float | jax.Array:
    """Mean absolute error ``mean(|pred - target|)`` over every entry.

    pred, target: the same shape, any rank (``(n,)``, ``(n, 1)``, ``(n, d)`` ...).
    """
    xp, p, t = _pair("mae", pred, target)
    return _result(xp, xp.mean(xp.abs(p - t)))


def rmse(pred: Any, target: Any) -> float | jax.Array:
    """Root mean squared error ``sqrt(mean((pred - target)^2))`` over every entry.

    pred, target: the same shape, any rank.
    """
    xp, p, t = _pair("rmse", pred, target)
    return _result(xp, xp.sqrt(xp.mean((p - t) ** 2)))


def r2(pred: Any, target: Any) -> float | jax.Array:
    """Coefficient of determination ``1 - SS_res / SS_tot``, SS_tot about the target's mean.

    pred, target: the same shape, any rank (all entries pooled). A constant target makes R^2
    undefined: a ``ValueError`` on host values; inside ``jit`` the result is ``-inf`` (or NaN when
    the prediction is exact as well).
    """
    xp, p, t = _pair("r2", pred, target)
    ss_tot = xp.sum((t - xp.mean(t)) ** 2)
    if not _is_traced(pred, target) and float(ss_tot) == 0.0:
        raise ValueError("r2: target is constant, so R^2 is undefined")
    return _result(xp, 1.0 - xp.sum((t - p) ** 2) / ss_tot)


def _class_ids(fn: str, xp: ModuleType, labels: Any, k: int | None, traced: bool) -> Any:
    """Check (on concrete values) that ``labels`` are whole numbers in ``[0, k)``."""
    if traced:
        return labels
    y = np.asarray(labels)
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise TypeError(f"{fn}: labels must be numbers, got dtype {y.dtype}")
    bad = (y != np.round(y)) | (y < 0)
    if k is not None:
        bad |= y >= k
    if bad.any():
        first = y[bad].ravel()[0]
        where = f"[0, {k})" if k is not None else "0, 1, 2, ..."
        raise ValueError(f"{fn}: labels must be class ids in {where}, got {first!r}")
    return labels


def accuracy(pred: Any, labels: Any) -> float | jax.Array:
    """Fraction of rows (or time steps) whose predicted class is the label's class.

    pred, one of:
        * ``(n, ..., k)`` scores with ``k >= 2`` (logits or probabilities): the class is the
          argmax over the last axis;
        * an integer array of predicted class ids, the same shape as ``labels``.
    labels, one of:
        * ``pred.shape`` one-hot (or probability) rows, when pred holds scores: the class is
          their argmax;
        * ``pred.shape[:-1]`` class ids (integers, or whole floats) in ``[0, k)``.

    Binary outputs of shape ``(n,)`` or ``(n, 1)`` in floats are refused (their argmax is always
    0, and whether to threshold at 0 or 0.5 depends on logits vs probabilities): use
    :func:`binary_accuracy`. Any other shape pairing is a ``ValueError`` naming both shapes.

    Labels outside ``[0, k)`` (or not whole numbers) are a ``ValueError`` on host values; inside
    ``jit`` they cannot be checked and simply match no prediction, so they count as wrong. Empty
    input is a ``ValueError`` on the host and NaN inside ``jit``.
    """
    xp = _namespace(pred, labels)
    p, y = xp.asarray(pred), xp.asarray(labels)
    traced = _is_traced(pred, labels)
    if xp.issubdtype(p.dtype, xp.integer):
        if p.shape != y.shape:
            raise ValueError(
                f"accuracy: predicted class ids {tuple(p.shape)} do not match labels "
                f"{tuple(y.shape)}"
            )
        classes, y = p, _class_ids("accuracy", xp, y, None, traced)
    else:
        if p.ndim < 2 or p.shape[-1] < 2:
            raise ValueError(
                f"accuracy: pred of shape {tuple(p.shape)} is not (n, ..., k >= 2) scores; for a "
                "binary (n,) or (n, 1) output use binary_accuracy(prob, labels, threshold)"
            )
        classes = xp.argmax(p, axis=-1)
        if y.shape == p.shape:
            y = xp.argmax(y, axis=-1)
        elif y.shape == p.shape[:-1]:
            y = _class_ids("accuracy", xp, y, p.shape[-1], traced)
        else:
            raise ValueError(
                f"accuracy: labels {tuple(y.shape)} fit neither pred {tuple(p.shape)} (one-hot) "
                f"nor {tuple(p.shape[:-1])} (class ids)"
            )
    if classes.size == 0:
        raise ValueError(f"accuracy: empty input (pred shape {tuple(p.shape)})")
    return _result(xp, xp.mean(classes == y))


def binary_accuracy(prob: Any, labels: Any, threshold: float = 0.5) -> float | jax.Array:
    """Fraction of entries where ``prob > threshold`` equals the 0/1 label.

    prob, labels: the same shape (``(n,)`` or ``(n, 1)``, any rank). ``threshold`` is 0.5 for
    probabilities (a sigmoid output) and 0.0 for logits. Labels other than 0 and 1 are a
    ``ValueError`` on host values; inside ``jit`` they match nothing (count as wrong).
    """
    threshold = check_float("binary_accuracy", "threshold", threshold)
    xp, p, t = _pair("binary_accuracy", prob, labels)
    if not _is_traced(prob, labels) and not np.isin(np.asarray(t), (0.0, 1.0)).all():
        raise ValueError("binary_accuracy: labels must be 0 or 1")
    return _result(xp, xp.mean((p > threshold) == (t == 1.0)))
