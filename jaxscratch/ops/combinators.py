"""Branches beside :func:`jaxscratch.core.serial`: ``residual`` and ``parallel`` (fan-out).

``residual(f)``: ``y = x + f(x)``. params: ``f``'s params, unchanged (the skip path has none).
cache: ``f``'s cache. backward: ``dparams, dx_f = f.backward(cache, dy)``; ``dx = dy + dx_f``
(the identity path adds ``dy``).

``parallel(*ops, combine="sum" | "concat", axis=-1)``: the same ``x`` goes to every branch
(stax's ``FanOut``), the outputs are summed (``FanInSum``) or concatenated along ``axis`` (an
axis of the full array, batch included; the batch axis itself is refused). params: a tuple, one
entry per branch. cache: ``(tuple of the branches' caches, sizes)`` with ``sizes`` the branches'
lengths along ``axis`` (Python ints; ``()`` for ``"sum"``). backward: each branch gets ``dy``
(sum) or its slice of ``dy`` (concat), and because ``x`` fans out, **dx is the sum of the
branches' dx** (the multivariate chain rule of chapter 1: ``d/dx sum_i f_i(x) = sum_i f_i'(x)``).

``per_position(f)``: ``f`` (an op on rows, e.g. ``dense``) applied to every position of a
sequence: x (batch, T, ...) is reshaped to (batch * T, ...), ``f`` runs on it, and y is reshaped
back to (batch, T, ...out). params: ``f``'s. cache: ``(f's cache, batch, T)``. backward: ``f``'s
on the reshaped ``dy``, dx reshaped back (a reshape's gradient is the inverse reshape).

All three pass ``key``/``train`` on as :func:`jaxscratch.core.serial` does: the combination is
stochastic if a branch is (the key is split into one sub-key per stochastic branch) and stateful
if a branch is (``update`` updates each stateful branch from its cache). ``init`` infers shapes
like ``serial``'s: one key per branch, every branch sees the input shape.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxscratch.core import (
    Array,
    Op,
    Params,
    Shape,
    apply,
    init_params,
    register,
    serial,
    update_state,
)
from jaxscratch.ops.dense import dense
from jaxscratch.ops.init import host_rng
from jaxscratch.validate import check_choice, check_int

COMBINE = {"sum": "add the branch outputs", "concat": "concatenate them along axis"}


def add_cotangents(a: Any, b: Any) -> Any:
    """``a + b`` leaf by leaf, where a ``float0`` leaf (the cotangent of an integer input, as
    ``jax.vjp`` returns it) stays ``float0``: both branches saw the same integer input."""

    def add(u: Any, v: Any) -> Any:
        if getattr(u, "dtype", None) == jax.dtypes.float0:
            return u
        return u + v

    return jax.tree.map(add, a, b)


def _check_ops(fn: str, ops: tuple[Op, ...]) -> None:
    if not ops:
        raise ValueError(f"{fn}: needs at least one op")
    for i, op in enumerate(ops):
        if not isinstance(op, Op):
            raise TypeError(f"{fn}: argument {i} is {type(op).__name__}, not an Op")


def _branch_keys(ops: tuple[Op, ...], key: Array | None) -> list[Array | None]:
    """One sub-key of ``key`` per stochastic op (``None`` for the others), as ``serial`` splits."""
    n = sum(op.stochastic for op in ops)
    if n == 0 or key is None:
        return [None] * len(ops)
    it = iter(jax.random.split(key, n))
    return [next(it) if op.stochastic else None for op in ops]


def residual(f: Op, *, name: str | None = None) -> Op:
    """``y = x + f(x)`` (see the module docstring); ``f`` must keep the shape of its input.

    x: (batch, ...) -> y: same shape. params: ``f``'s. cache: ``f``'s. dx = dy + f's dx.
    """
    _check_ops("residual", (f,))
    label = name or f"residual({f.name})"

    def forward(
        params: Params, x: Array, *, key: Array | None = None, train: bool = True
    ) -> tuple[Array, Any]:
        fx, cache = apply(f, params, x, key=key, train=train)
        if jnp.shape(fx) != jnp.shape(x):
            raise ValueError(
                f"{label}: the branch maps x{tuple(jnp.shape(x))} to {tuple(jnp.shape(fx))}; "
                "a residual branch must keep the shape"
            )
        return x + fx, cache

    def backward(cache: Any, dy: Array) -> tuple[Any, Array]:
        dparams, dx = f.backward(cache, dy)
        return dparams, dy + dx

    def init(key: Array, in_shape: Shape) -> tuple[Shape, Params]:
        out_shape, params = init_params(f, key, in_shape)
        if tuple(out_shape) != tuple(in_shape):
            raise ValueError(
                f"{label}: the branch maps rows of shape {tuple(in_shape)} to "
                f"{tuple(out_shape)}; a residual branch must keep the shape"
            )
        return tuple(in_shape), params

    def update(params: Params, cache: Any) -> Params:
        return update_state(f, params, cache)

    return Op(label, forward, backward, init, f.stochastic, update if f.update else None)


def _concat_axis(label: str, axis: int, ndim: int) -> int:
    """``axis`` of an ``ndim`` array as a non-negative index; the batch axis 0 is refused."""
    a = axis + ndim if axis < 0 else axis
    if not 1 <= a < ndim:
        raise ValueError(
            f"{label}: axis {axis} is not a non-batch axis of a {ndim}-d output "
            f"(allowed: 1..{ndim - 1} or -{ndim - 1}..-1)"
        )
    return a


def _combine(label: str, combine: str, axis: int, ys: list[Array]) -> tuple[Array, tuple]:
    """The branches' outputs combined, and the concat sizes (``()`` for a sum)."""
    shapes = [tuple(jnp.shape(y)) for y in ys]
    if combine == "sum":
        if len(set(shapes)) != 1:
            raise ValueError(f"{label}: branch outputs {shapes} differ; sum needs equal shapes")
        total = ys[0]
        for y in ys[1:]:
            total = total + y
        return total, ()
    a = _concat_axis(label, axis, len(shapes[0]))
    rest = {s[:a] + s[a + 1 :] for s in shapes}
    if len({len(s) for s in shapes}) != 1 or len(rest) != 1:
        raise ValueError(f"{label}: branch outputs {shapes} differ off axis {axis}; cannot concat")
    return jnp.concatenate(ys, axis=a), tuple(s[a] for s in shapes)


def _split(dy: Array, sizes: tuple[int, ...], axis: int) -> list[Array]:
    a = axis + dy.ndim if axis < 0 else axis
    return jnp.split(dy, np.cumsum(sizes)[:-1].tolist(), axis=a)


def _fan_in_shape(label: str, combine: str, axis: int, shapes: list[Shape]) -> Shape:
    """The per-row output shape of the combination (rows exclude the batch axis)."""
    if combine == "sum":
        if len(set(shapes)) != 1:
            raise ValueError(f"{label}: branch outputs {shapes} differ; sum needs equal shapes")
        return shapes[0]
    a = _concat_axis(label, axis, len(shapes[0]) + 1) - 1  # the row shape lacks the batch axis
    rest = {s[:a] + s[a + 1 :] for s in shapes}
    if len({len(s) for s in shapes}) != 1 or len(rest) != 1:
        raise ValueError(f"{label}: branch outputs {shapes} differ off axis {axis}; cannot concat")
    out = list(shapes[0])
    out[a] = sum(s[a] for s in shapes)
    return tuple(out)


def parallel(*ops: Op, combine: str = "sum", axis: int = -1, name: str | None = None) -> Op:
    """Fan ``x`` out to every op, then sum or concatenate (see the module docstring).

    x: (batch, ...) -> y: the common output shape (sum) or the outputs joined along ``axis``
    (concat). params: a tuple, one per op. cache: ``(branch caches, concat sizes)``.
    backward: ``dx = sum_i dx_i``; each op's dparams from its share of ``dy``.
    """
    _check_ops("parallel", ops)
    combine = check_choice("parallel", "combine", combine, COMBINE)
    axis = check_int("parallel", "axis", axis)
    label = name or f"parallel[{combine}](" + ", ".join(op.name for op in ops) + ")"

    def _check(params: Params) -> None:
        if not isinstance(params, tuple | list) or len(params) != len(ops):
            got = len(params) if isinstance(params, tuple | list) else type(params).__name__
            raise ValueError(f"{label}: expected params for {len(ops)} branches, got {got}")

    def forward(
        params: Params, x: Any, *, key: Array | None = None, train: bool = True
    ) -> tuple[Array, tuple]:
        _check(params)
        keys = _branch_keys(ops, key)
        outs = [
            apply(op, p, x, key=k, train=train) for op, p, k in zip(ops, params, keys, strict=True)
        ]
        y, sizes = _combine(label, combine, axis, [o[0] for o in outs])
        return y, (tuple(o[1] for o in outs), sizes)

    def backward(cache: tuple, dy: Array) -> tuple[tuple, Any]:
        caches, sizes = cache
        dys = _split(dy, sizes, axis) if combine == "concat" else [dy] * len(ops)
        grads, dx = [], None
        for op, c, d in zip(ops, caches, dys, strict=True):
            g, dxi = op.backward(c, d)
            grads.append(g)
            dx = dxi if dx is None else add_cotangents(dx, dxi)
        return tuple(grads), dx

    def init(key: Array, in_shape: Shape) -> tuple[Shape, Params]:
        results = [
            init_params(op, k, in_shape)
            for op, k in zip(ops, jax.random.split(key, len(ops)), strict=True)
        ]
        shapes = [tuple(s) for s, _ in results]
        return _fan_in_shape(label, combine, axis, shapes), tuple(p for _, p in results)

    def update(params: Params, cache: tuple) -> Params:
        return tuple(update_state(op, p, c) for op, p, c in zip(ops, params, cache[0], strict=True))

    stochastic = any(op.stochastic for op in ops)
    stateful = any(op.update is not None for op in ops)
    return Op(label, forward, backward, init, stochastic, update if stateful else None)


def per_position(f: Op, *, name: str | None = None) -> Op:
    """``f`` applied at every position of a sequence (see the module docstring).

    x (batch, T, ...) -> y (batch, T, ...f's output); params: ``f``'s; cache ``(f's cache, batch,
    T)``. init: per-row ``(T, *row)`` -> ``(T, *f's output row)``.
    """
    _check_ops("per_position", (f,))
    label = name or f"per_position({f.name})"

    def forward(
        params: Params, x: Array, *, key: Array | None = None, train: bool = True
    ) -> tuple[Array, tuple]:
        if jnp.ndim(x) < 3:
            raise ValueError(f"{label}: x must be (batch, T, ...), got shape {tuple(jnp.shape(x))}")
        b, t = x.shape[:2]
        y, cache = apply(f, params, x.reshape(b * t, *x.shape[2:]), key=key, train=train)
        return y.reshape(b, t, *y.shape[1:]), (cache, b, t)

    def backward(cache: tuple, dy: Array) -> tuple[Any, Array]:
        fcache, b, t = cache
        if dy.shape[:2] != (b, t):
            raise ValueError(
                f"{label}: dy{tuple(dy.shape)} does not start with (batch, T) = {(b, t)}"
            )
        dparams, dx = f.backward(fcache, dy.reshape(b * t, *dy.shape[2:]))
        return dparams, dx.reshape(b, t, *dx.shape[1:])

    def init(key: Array, in_shape: Shape) -> tuple[Shape, Params]:
        if len(in_shape) < 2:
            raise ValueError(f"{label}: expects rows of shape (T, ...), got {tuple(in_shape)}")
        out_shape, params = init_params(f, key, tuple(in_shape[1:]))
        return (in_shape[0], *out_shape), params

    def update(params: Params, cache: tuple) -> Params:
        return update_state(f, params, cache[0])

    return Op(label, forward, backward, init, f.stochastic, update if f.update else None)


# ------------------------------------------------------------------------------------------------
# Registry: one example per combination shape (non-square, batch > 1, non-zero biases)
# ------------------------------------------------------------------------------------------------


def _dense_params(rng: np.random.Generator, n_in: int, n_out: int) -> dict[str, Array]:
    return {
        "W": jnp.asarray(rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)),
        "B": jnp.asarray(0.5 + rng.standard_normal((1, n_out))),
    }


def _example(branches: tuple[tuple[int, int], ...], n_in: int, batch: int = 3):
    """``(params, x)``: a tuple of dense params, one per ``(n_in, n_out)`` in ``branches`` (a
    parallel's params, or a serial's), and x (batch, n_in) off-centre."""

    def example(key: Array) -> tuple[Any, Array]:
        rng = host_rng(key)
        params = tuple(_dense_params(rng, i, o) for i, o in branches)
        return params, jnp.asarray(0.2 + rng.standard_normal((batch, n_in)))

    return example


def _build_examples() -> None:
    bottleneck = serial(dense(6, "tanh"), dense(4, "sigmoid"))
    register(residual(bottleneck), _example(((4, 6), (6, 4)), 4), name="residual[bottleneck]")
    register(
        parallel(dense(3, "tanh"), dense(5, "sigmoid"), combine="concat"),
        _example(((4, 3), (4, 5)), 4),
        name="parallel[concat]",
    )
    summed = parallel(dense(5, "tanh"), dense(5, "linear"), dense(5, "sigmoid"))
    register(summed, _example(((4, 5), (4, 5), (4, 5)), 4), name="parallel[sum]")

    def _sequence_example(key: Array) -> tuple[Any, Array]:
        (params,), x = _example(((4, 3),), 4, batch=10)(key)
        return params, x.reshape(2, 5, 4)  # batch 2, T 5, 4 features -> 3

    register(per_position(dense(3, "tanh")), _sequence_example, name="per_position[dense]")


_build_examples()

__all__ = ["COMBINE", "add_cotangents", "parallel", "per_position", "residual"]
