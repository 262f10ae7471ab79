"""fit's inputs on the host: the data (checked, then put on the device once) and learning rates.

* :func:`device_data` checks ``(X, y)`` (rows, NaN/inf) and returns device arrays; a large numpy
  array is copied once into a 64-byte-aligned buffer that the device array aliases (numpy's copy
  is several times faster than the transfer path of ``jnp.asarray``). A JAX array found finite
  once is not read again by later fits (JAX arrays are immutable; numpy arrays are checked on
  every call).
* :class:`LearningRates` turns ``lr`` (a number, a sequence, or ``schedule(epoch_index)``) into the
  rates of a period of epochs, lazily: ``epochs=10**9`` builds no list of 10**9 floats.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxscratch.core import Array, Loss, Op, Params, apply
from jaxscratch.validate import check_lr, is_number

LR = float | Sequence[float] | Callable[[int], float]

_ALIGN = 64  # bytes: XLA's CPU client aliases host memory aligned like this instead of copying


def to_device(a: Any) -> Array:
    """A device array for ``a``. JAX arrays pass through; a numpy array is copied once into a
    64-byte-aligned host buffer which the device array then aliases; already aligned arrays are
    not copied (``fit`` uses its data only while it runs)."""
    if isinstance(a, jax.Array):
        return a
    h = np.asarray(a)
    try:
        dtype = np.dtype(jax.dtypes.canonicalize_dtype(h.dtype))
    except (TypeError, ValueError):
        return jnp.asarray(h)
    if h.dtype == dtype and h.flags.c_contiguous and h.ctypes.data % _ALIGN == 0:
        return jax.device_put(h)
    if h.nbytes < (1 << 20):  # small arrays: the plain path
        return jnp.asarray(h, dtype)
    raw = np.empty(h.size * dtype.itemsize + _ALIGN, np.uint8)
    offset = -raw.ctypes.data % _ALIGN
    buf = raw[offset : offset + h.size * dtype.itemsize].view(dtype).reshape(h.shape)
    np.copyto(buf, h, casting="same_kind")
    return jax.device_put(buf)


def device_data(what: str, X: Any, y: Any) -> tuple[Array, Array]:
    """``(X, y)`` on the device after checking them: X (n, ...) and y (n, ...), n >= 1, no NaN
    or infinite floats. ``what`` names the set in messages ("training", "eval")."""
    Xh, yh = np.asarray(X), np.asarray(y)  # a view, no copy, for arrays already on the CPU
    if Xh.ndim == 0 or Xh.shape[0] == 0:
        raise ValueError(f"fit: {what} X is empty (shape {Xh.shape})")
    if yh.ndim == 0 or Xh.shape[0] != yh.shape[0]:
        raise ValueError(f"fit: {what} X has {Xh.shape[0]} rows but y has shape {yh.shape}")
    for name, arr, given in (("X", Xh, X), ("y", yh, y)):
        if np.issubdtype(arr.dtype, np.complexfloating) or not (
            np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
        ):
            raise TypeError(
                f"fit: {what} {name} must hold real numbers, got dtype {arr.dtype} "
                "(complex and object arrays are refused)"
            )
        if np.issubdtype(arr.dtype, np.floating) and not _known_finite(given):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"fit: {what} {name} holds NaN or infinite values")
            _remember_finite(given)
    return to_device(X), to_device(y)


#: id -> weak reference of a JAX array already found finite. JAX arrays are immutable, so a
#: second fit on the same device array (a sweep, fit_many, every test of a loop) does not read
#: its 60,000 x 784 values again (~25 ms here); numpy arrays can change and are always checked.
_FINITE: dict[int, weakref.ref] = {}


def _known_finite(a: Any) -> bool:
    ref = _FINITE.get(id(a))
    return ref is not None and ref() is a


def _remember_finite(a: Any) -> None:
    if isinstance(a, jax.Array):
        key = id(a)

        def forget(_: weakref.ref, key: int = key) -> None:
            _FINITE.pop(key, None)

        _FINITE[key] = weakref.ref(a, forget)


#: losses whose 1-D targets are integer class ids into the last axis of the prediction
ID_LOSSES = frozenset({"softmax_cross_entropy"})


def check_targets(what: str, net: Op, loss: Loss, params: Params, X: Any, y: Any) -> None:
    """Refuse targets that do not fit the network's output, on the host, before anything compiles.

    The output shape comes from :func:`jax.eval_shape` of one row (nothing runs); rows the
    network refuses are an error of the same type naming the set (``"eval"``). For a loss in
    :data:`ID_LOSSES`, 1-D targets must be integer class ids in ``0 .. k-1`` (``k``: the output
    width); float ids, negative or too large ids are a ``ValueError`` naming the first bad row
    and its value. Targets with the output's rank must have its trailing shape (a one-hot width
    that differs from the output layer's is named).
    """
    x_shape, y_shape = np.shape(X), np.shape(y)  # shapes only: no copy of device arrays
    x_dtype = X.dtype if hasattr(X, "dtype") else np.asarray(X).dtype
    row = jax.ShapeDtypeStruct((1, *x_shape[1:]), jax.dtypes.canonicalize_dtype(x_dtype))
    try:
        out = jax.eval_shape(lambda p, x: apply(net, p, x, train=False)[0], params, row)
    except (TypeError, ValueError) as e:  # named now, not after a period of training
        cls = ValueError if isinstance(e, ValueError) else TypeError
        raise cls(
            f"fit: {what} X rows of shape {tuple(x_shape[1:])} do not fit the network: {e}"
        ) from None
    if not hasattr(out, "shape") or len(out.shape) < 1:
        return
    out_tail = tuple(out.shape[1:])
    if loss.name in ID_LOSSES and len(y_shape) == 1 and len(out_tail) == 1:
        _check_ids(what, np.asarray(y), out_tail[0])
    elif len(y_shape) == len(out.shape) and tuple(y_shape[1:]) != out_tail:
        raise ValueError(
            f"fit: {what} y has rows of shape {tuple(y_shape[1:])} but the network outputs rows "
            f"of shape {out_tail} (is the output layer {out_tail[-1] if out_tail else '?'} wide "
            f"for targets {y_shape[-1]} wide?)"
        )


def _check_ids(what: str, y: np.ndarray, k: int) -> None:
    """1-D class ids: integers in ``0 .. k-1``; the first bad row and value named."""
    if np.issubdtype(y.dtype, np.floating):
        bad = np.flatnonzero(y != np.round(y))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"fit: {what} y[{i}] = {y[i]} is not an integer class id "
                f"({bad.size} non-integer labels)"
            )
        raise TypeError(
            f"fit: {what} y holds class ids as {y.dtype}; pass integers (y.astype(int))"
        )
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"fit: {what} y must hold integer class ids, got dtype {y.dtype}")
    bad = np.flatnonzero((y < 0) | (y >= k))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"fit: {what} y[{i}] = {y[i]} is not a class id of the network's {k} outputs "
            f"(0..{k - 1}; {bad.size} labels out of range)"
        )


def lr_dtype(params: Params) -> np.dtype:
    """The narrowest floating dtype among the params (float32 params get float32 learning rates,
    so ``p - lr * g`` keeps their dtype even with ``jax_enable_x64``); JAX's default float if none.
    """
    floats = [
        np.dtype(leaf.dtype)
        for leaf in jax.tree.leaves(params)
        if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating)
    ]
    if not floats:
        return np.dtype(jnp.result_type(float))
    return min(floats, key=lambda d: d.itemsize)


class LearningRates:
    """``rates(first, count)``: the learning rates of epochs ``first .. first + count - 1``
    (0-based) as floats, each checked with :func:`~jaxscratch.validate.check_lr`.

    ``lr``: a number (Python or numpy scalar, 0-d array), a sequence with one rate per epoch
    (at least ``epochs`` of them, checked up front) or ``schedule(epoch_index) -> lr``.
    """

    def __init__(self, lr: LR, epochs: int):
        if isinstance(lr, jax.Array):
            lr = np.asarray(lr)
        self._constant: float | None = None
        # epoch index -> the (unchecked) rate: the schedule itself, or the sequence's indexing
        self._per_epoch: Callable[[int], Any] | None = None
        if is_number(lr):
            self._constant = check_lr("fit", lr)
        elif callable(lr):
            self._per_epoch = lr
        else:
            if isinstance(lr, str | bytes) or not isinstance(lr, Sequence | np.ndarray):
                raise TypeError(
                    "fit: lr must be a number, a sequence of numbers or a schedule "
                    f"(epoch_index -> lr), got {type(lr).__name__}"
                )
            if len(lr) < epochs:
                raise ValueError(
                    f"fit: the lr sequence has {len(lr)} entries, {epochs} epochs need one each"
                )
            self._per_epoch = lr.__getitem__

    def rate(self, epoch: int) -> float:
        if self._constant is not None:
            return self._constant
        if self._per_epoch is None:  # cannot happen: __init__ sets one of the two
            raise RuntimeError("LearningRates: neither a constant rate nor a per-epoch rate")
        return check_lr("fit", self._per_epoch(epoch))

    def rates(self, first: int, count: int) -> list[float]:
        return [self.rate(e) for e in range(first, first + count)]

    def array(self, first: int, count: int, dtype: np.dtype) -> np.ndarray:
        """:meth:`rates` as an array of the params' ``dtype``; a rate that overflows it (1e308
        for float32 params) is a ``ValueError``, not a silent ``inf``."""
        rates = self.rates(first, count)
        with np.errstate(over="ignore"):
            arr = np.asarray(rates, dtype=dtype)
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            e = first + int(bad[0])
            raise ValueError(
                f"fit: the learning rate {rates[int(bad[0])]} of epoch {e + 1} overflows the "
                f"params' {np.dtype(dtype).name}"
            )
        return arr
