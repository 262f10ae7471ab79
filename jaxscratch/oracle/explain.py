"""The diagnosis and location of a failing op: :func:`explain` ties :mod:`.diagnose` and
:mod:`.localise` together (a network is explained by its first wrong layer, recursively; a
recurrence by its wrong step and gate; any other op by its first failing leaf)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jaxscratch.oracle.compare import batch_size, is_float
from jaxscratch.oracle.diagnose import (
    Context,
    Diagnosis,
    cross_sample_check,
    diagnose,
    per_sample_gradients,
)
from jaxscratch.oracle.localise import (
    Location,
    cell_of,
    combinator_paths,
    layers_of,
    wrong_branch,
    wrong_dx_step,
    wrong_layers,
    wrong_step,
)

Paths = Mapping[str, Callable[[Any, Any], Any]]
FD_ONLY = (
    "the vjp agrees but the finite differences do not: the forward's own derivative is wrong "
    "(a stop_gradient, a custom rule, or a kink at the example)"
)


def call(op: Any, params: Any, x: Any, key: Any) -> tuple[Any, Any]:
    """``op.forward(params, x)``, with ``key`` and ``train=True`` for a stochastic op."""
    if getattr(op, "stochastic", False):
        return op.forward(params, x, key=key, train=True)
    return op.forward(params, x)


def path_oracles(paths: Paths | None, params: Any, x: Any, dy: Any) -> dict[str, list[np.ndarray]]:
    """``{name: flat leaves of jax.vjp of that path at dy}`` for a ``paths`` hook."""
    out = {}
    for name, f in (paths or {}).items():
        _, vjp_fn = jax.vjp(f, params, x)
        out[name] = [np.asarray(a, np.float64) for a in jax.tree.leaves(tuple(vjp_fn(dy)))]
    return out


def _time_axis(x: Any) -> int | None:
    leaves = [a for a in jax.tree.leaves(x) if is_float(a)]
    return int(np.shape(leaves[0])[1]) if leaves and np.ndim(leaves[0]) == 3 else None


def _name(op: Any) -> str:
    return str(getattr(op, "name", type(op).__name__))


def _explain_layer(
    op: Any, params: Any, x: Any, dy: Any, key: Any, rtol: float
) -> tuple[Diagnosis, Location] | None:
    layers = layers_of(op)
    if not layers or not isinstance(params, tuple | list) or len(params) != len(layers):
        return None
    found = wrong_layers(layers, params, x, dy, key, rtol)
    if found is None:
        return None
    d, inner = explain(found.op, found.params, found.x, found.dy, found.key, rtol)
    name = _name(found.op)
    others = [i for i in found.wrong if i != found.index]
    also = f"; layer(s) {others} wrong as well" if others else ""
    words = f"layer {found.index} ({name}): {d.words}{also}"
    loc = Location(d.leaf, d.index, layer=found.index, layer_name=name, inner=inner)
    return Diagnosis(d.kind, words, d.constant, d.leaf, d.index), loc


def _explain_branch(
    op: Any, params: Any, x: Any, dy: Any, key: Any, rtol: float
) -> tuple[Diagnosis, Location] | None:
    found = wrong_branch(op, params, x, dy, key, rtol)
    if found is None:
        return None
    i, sub, p, d, k = found
    diag, inner = explain(sub, p, x, d, k, rtol)
    name = _name(sub)
    words = f"branch {i} ({name}): {diag.words}"
    loc = Location(diag.leaf, diag.index, layer=i, layer_name=name, inner=inner, kind="branch")
    return Diagnosis(diag.kind, words, diag.constant, diag.leaf, diag.index), loc


def explain(
    op: Any, params: Any, x: Any, dy: Any, key: Any, rtol: float, paths: Paths | None = None
) -> tuple[Diagnosis, Location]:
    """Why and where ``op.backward`` disagrees with ``jax.vjp`` at ``(params, x)`` and cotangent
    ``dy`` (float64 inputs; ``key`` for a stochastic op's forward)."""
    layer = _explain_layer(op, params, x, dy, key, rtol) or _explain_branch(
        op, params, x, dy, key, rtol
    )
    if layer is not None:
        return layer
    n = batch_size(x)
    step = wrong_step(op, params, x, dy, Context(batch=n, time=_time_axis(x)), rtol)
    if step is not None:
        return step[1], step[0]
    _, cache = call(op, params, x, key)
    manual = tuple(op.backward(cache, dy))
    _, vjp_fn = jax.vjp(lambda p, xx: call(op, p, xx, key)[0], params, x)
    oracle = tuple(vjp_fn(dy))
    ctx = Context(
        batch=n,
        time=_time_axis(x),
        per_sample=per_sample_gradients(vjp_fn, dy, n),
        paths=path_oracles(
            paths or getattr(op, "paths", None) or combinator_paths(op, params, x, key),
            params,
            x,
            dy,
        ),
        cross_sample=cross_sample_check(lambda d: op.backward(cache, d), vjp_fn, dy, n),
    )
    d = diagnose(manual, oracle, ctx, rtol)
    if d is None:
        return Diagnosis("unknown", FD_ONLY), Location()
    t = wrong_dx_step(manual[1], oracle[1], rtol) if d.leaf.startswith("dx") else None
    if t is None:
        return d, Location(d.leaf, d.index)
    cell = cell_of(op)
    label = cell.name if cell is not None else _name(op)
    words = f"{label}[t={t}] dx: {d.words}"
    return Diagnosis(d.kind, words, d.constant, d.leaf, d.index), Location(
        d.leaf, d.index, step=t, part="dx", cell=label
    )
