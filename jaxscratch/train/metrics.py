"""Regression and classification metrics (host-side numpy, float64).

All functions take predictions and targets of the *same* shape; an (n, 1) vs (n,) mismatch is a
``ValueError``, never a silent broadcast to (n, n).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def _pair(name: str, pred: ArrayLike, target: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(
            f"{name}: prediction shape {p.shape} does not match target shape {t.shape}"
        )
    if p.size == 0:
        raise ValueError(f"{name}: empty input (shape {p.shape})")
    return p, t


def mae(pred: ArrayLike, target: ArrayLike) -> float:
    """Mean absolute error: mean(|pred - target|)."""
    p, t = _pair("mae", pred, target)
    return float(np.mean(np.abs(p - t)))


def rmse(pred: ArrayLike, target: ArrayLike) -> float:
    """Root mean squared error: sqrt(mean((pred - target)^2))."""
    p, t = _pair("rmse", pred, target)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def r2(pred: ArrayLike, target: ArrayLike) -> float:
    """Coefficient of determination: 1 - SS_res / SS_tot (SS_tot about the target mean)."""
    p, t = _pair("r2", pred, target)
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    if ss_tot == 0.0:
        raise ValueError("r2: target is constant, so R^2 is undefined")
    return 1.0 - float(np.sum((t - p) ** 2)) / ss_tot


def accuracy(pred: ArrayLike, labels: ArrayLike) -> float:
    """Classification accuracy.

    pred: (n, k) scores (argmax taken) or (n,) predicted class ids.
    labels: (n,) integer class ids or (n, k) one-hot rows.
    """
    p = np.asarray(pred)
    y = np.asarray(labels)
    for what, a in (("predictions", p), ("labels", y)):
        if a.ndim not in (1, 2) or (a.ndim == 2 and a.shape[1] < 2):
            raise ValueError(
                f"accuracy: {what} must be (n,) class ids or (n, k >= 2) scores, got shape {a.shape}"
            )
    if p.ndim == 2:
        p = p.argmax(axis=1)
    if y.ndim == 2:
        y = y.argmax(axis=1)
    if p.shape != y.shape:
        raise ValueError(f"accuracy: {p.shape[0]} predictions vs {y.shape[0]} labels")
    if p.size == 0:
        raise ValueError("accuracy: empty input")
    return float(np.mean(p == y))
