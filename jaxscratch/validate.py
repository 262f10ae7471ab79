"""The one set of argument checks, with one message style.

Every public function that takes a hyperparameter checks it here, so the same value is accepted or
refused everywhere (a ``numpy.float32(0.8)`` keep probability is a number in ``dense`` and in
``conv_layer`` alike). Messages name the function, the argument and the value::

    dense: dropout must be in (0, 1], got 1.5

A value of the wrong kind (a string, a bool, ``None``) is a :class:`TypeError`; a number out of
range (including NaN and infinities) is a :class:`ValueError`. Numpy scalars count as numbers;
``bool`` does not, although Python makes it an ``int``. Traced values (inside ``jit``) are passed
through unchecked by :func:`check_lr`, the one check that can meet them.

Checks run on the host, at build or call time, never inside a compiled step.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np

__all__ = [
    "check_choice",
    "check_float",
    "check_int",
    "check_lr",
    "check_positive",
    "check_positive_int",
    "check_probability",
    "is_number",
]


def is_number(value: Any) -> bool:
    """A real number that is not a bool: ``int``, ``float``, numpy integer or floating scalars,
    and 0-d numpy arrays of those."""
    if isinstance(value, bool | np.bool_):
        return False
    if isinstance(value, np.ndarray):
        return value.ndim == 0 and (
            np.issubdtype(value.dtype, np.integer) or np.issubdtype(value.dtype, np.floating)
        )
    return isinstance(value, numbers.Real)


def _interval(minimum: float | None, maximum: float | None, low_open: bool, high_open: bool) -> str:
    lo = "(" if low_open or minimum is None else "["
    hi = ")" if high_open or maximum is None else "]"
    a = "-inf" if minimum is None else f"{minimum:g}"
    b = "inf" if maximum is None else f"{maximum:g}"
    return f"{lo}{a}, {b}{hi}"


def check_float(
    fn: str,
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``float(value)`` if it is a finite number in the interval; else ``TypeError``/``ValueError``.

    ``minimum``/``maximum`` bound the interval (``None``: unbounded); ``low_open``/``high_open``
    exclude the bound itself, so ``minimum=0, low_open=True`` means strictly positive.
    """
    if not is_number(value):
        raise TypeError(f"{fn}: {name} must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    ok = math.isfinite(v)
    if ok and minimum is not None:
        ok = v > minimum if low_open else v >= minimum
    if ok and maximum is not None:
        ok = v < maximum if high_open else v <= maximum
    if not ok:
        where = _interval(minimum, maximum, low_open, high_open)
        raise ValueError(f"{fn}: {name} must be a finite number in {where}, got {value!r}")
    return v


def check_positive(fn: str, name: str, value: Any) -> float:
    """``float(value)`` for a positive finite number (``eps``, a clipping limit, a decay rate)."""
    if not is_number(value):
        raise TypeError(f"{fn}: {name} must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{fn}: {name} must be positive and finite, got {value!r}")
    return v


def check_probability(fn: str, name: str, value: Any) -> float:
    """A keep probability: ``float(value)`` in ``(0, 1]``."""
    return check_float(fn, name, value, minimum=0.0, maximum=1.0, low_open=True)


def check_int(
    fn: str, name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``int(value)`` for an integer (Python or numpy, not bool, not a float such as ``2.0``)
    within ``[minimum, maximum]``."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{fn}: {name} must be an integer, got {type(value).__name__} {value!r}")
    v = int(value)
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        where = _interval(minimum, maximum, False, False)
        raise ValueError(f"{fn}: {name} must be an integer in {where}, got {value!r}")
    return v


def check_positive_int(fn: str, name: str, value: Any) -> int:
    """``int(value)`` for an integer >= 1 (epochs, batch size, hidden units, filters)."""
    return check_int(fn, name, value, minimum=1)


def check_choice(fn: str, name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices`` (strings); the message lists them."""
    options = list(choices)
    if not isinstance(value, str):
        raise TypeError(
            f"{fn}: {name} must be one of {', '.join(map(repr, options))}, "
            f"got {type(value).__name__} {value!r}"
        )
    if value not in options:
        raise ValueError(
            f"{fn}: {name} must be one of {', '.join(map(repr, options))}, got {value!r}"
        )
    return value


def check_lr(fn: str, lr: Any) -> float | Any:
    """A learning rate: a positive finite number, returned as ``float``. A traced value (inside
    ``jit``, where its value is unknown) is returned unchanged."""
    if isinstance(lr, jax.core.Tracer):
        return lr
    if isinstance(lr, jax.Array):
        lr = np.asarray(lr)
    return check_float(fn, "learning rate", lr, minimum=0.0, low_open=True)
