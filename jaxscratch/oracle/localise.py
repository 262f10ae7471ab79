"""Where a backward pass is wrong: the layer of a network, the time step and gate of a recurrence.

* **Layers.** For a :func:`jaxscratch.core.serial` (or any op with a ``layers`` attribute: a
  sequence of ops), :func:`wrong_layers` runs each layer's forward in turn, then walks back: at
  every layer boundary the layer's own ``backward`` and ``jax.vjp`` of its forward get the *oracle's*
  cotangent, so each layer is judged on its own. The layer named is the first one the backward
  pass reaches (the highest index) whose gradients disagree; the others wrong are listed.
* **Time steps.** For a recurrent op (the sequence ops and layers of :mod:`jaxscratch.ops.rnn`,
  or an op with a ``cell`` attribute) :func:`wrong_step` replays the cell step by step: at step t
  the cell's ``recur_backward`` gets the oracle's gradient into the state after t, and its outputs
  are compared with ``jax.vjp`` of ``recur``: the pre-activation gradient per gate, ``dh_prev``,
  ``dc_prev`` (the forget path, ``dc * f``) and ``dW_h``. The step named is the first the reverse
  scan reaches (the latest t) that is wrong. Without a cell, :func:`wrong_dx_step` names the latest
  t whose ``dx[:, t]`` is wrong.

The combinators and the recurrent ops keep their parts in closures; they are read with
:func:`inspect.getclosurevars` (a public ``layers``/``cell`` attribute takes precedence).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxscratch.core import Op, apply
from jaxscratch.ops.cells import Cell
from jaxscratch.oracle.compare import close, compare, is_float
from jaxscratch.oracle.diagnose import Context, Diagnosis, diagnose_leaf

GATES = {
    "lstm": ("forget", "input", "output", "candidate"),  # the fused column order (f, i, o, c)
    "gru": ("reset", "update", "candidate"),
    "rnn": ("tanh",),
}
STATE_PARTS = {
    "lstm": ("dh_prev (the recurrent path h_prev @ W_h)", "dc_prev via the forget gate"),
    "gru": ("dh_prev (through u * h_prev, r * h_prev and the gates)",),
    "rnn": ("dh_prev (the recurrent path h_prev @ W_h)",),
}


@dataclass(frozen=True)
class Location:
    """Where the first wrong gradient is.

    leaf: the gradient leaf (``dparams['W']``, ``dx``); index: its worst entry. layer, layer_name:
    the network layer (index into the serial's params) or, with ``kind="branch"``, the branch of
    a ``residual``/``parallel`` whose backward is wrong; inner: the location inside it. step: the time step of a recurrence; part: its gate or path;
    cell: the cell's name.
    """

    leaf: str = ""
    index: tuple[int, ...] | None = None
    layer: int | None = None
    layer_name: str | None = None
    step: int | None = None
    part: str | None = None
    cell: str | None = None
    inner: Location | None = None
    kind: str = "layer"

    def innermost(self) -> Location:
        """The location inside the innermost layer."""
        return self.inner.innermost() if self.inner is not None else self

    def __str__(self) -> str:
        if self.layer is not None:
            inner = f": {self.inner}" if self.inner is not None else ""
            return f"{self.kind} {self.layer} ({self.layer_name}){inner}"
        where = ""
        if self.step is not None:
            where = f"{self.cell or 'step'}[t={self.step}] {self.part or 'dx'}"
            return where
        index = "" if self.index is None else str(list(self.index))
        return f"{self.leaf}{index}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the inner location nested)."""
        out: dict[str, Any] = {
            "leaf": self.leaf,
            "index": None if self.index is None else list(self.index),
            "layer": self.layer,
            "layer_name": self.layer_name,
            "step": self.step,
            "part": self.part,
            "cell": self.cell,
            "kind": self.kind,
        }
        out["inner"] = None if self.inner is None else self.inner.to_dict()
        out["text"] = str(self)
        return out


def _closure(fn: Any, name: str) -> Any:
    try:
        return inspect.getclosurevars(fn).nonlocals.get(name)
    except (TypeError, ValueError):
        return None


def layers_of(op: Any) -> tuple | None:
    """The layers of a network op: its ``layers`` attribute, or the ops of a ``serial``."""
    layers = getattr(op, "layers", None)
    if layers is None and "serial.<locals>" in getattr(op.backward, "__qualname__", ""):
        layers = _closure(op.backward, "ops")
    return tuple(layers) if layers else None


def cell_of(op: Any) -> Cell | None:
    """The recurrent cell of a sequence op or layer (``cell`` attribute, or the closure's)."""
    cell = getattr(op, "cell", None)
    if cell is None:
        for name in ("cell", "c"):
            cell = _closure(op.forward, name)
            if isinstance(cell, Cell):
                break
        seq = _closure(op.forward, "seq")  # a recurrent layer wraps a sequence op
        if not isinstance(cell, Cell) and seq is not None and hasattr(seq, "forward"):
            cell = cell_of(seq)
    return cell if isinstance(cell, Cell) else None


@dataclass(frozen=True)
class LayerFinding:
    """One layer judged with the oracle's cotangent: its op, params, input, key and cotangent."""

    index: int
    op: Any
    params: Any
    x: Any
    key: Any
    dy: Any
    wrong: tuple[int, ...]


def _layer_keys(layers: tuple, key: Any) -> list[Any]:
    """The keys ``serial`` hands its stochastic layers (one split per stochastic op)."""
    n = sum(bool(getattr(op, "stochastic", False)) for op in layers)
    keys: list[Any] = [None] * len(layers)
    if n and key is not None:
        it = iter(jax.random.split(key, n))
        keys = [next(it) if getattr(op, "stochastic", False) else None for op in layers]
    return keys


def wrong_layers(
    layers: tuple, params: Any, x: Any, dy: Any, key: Any, rtol: float
) -> LayerFinding | None:
    """The layer where the manual backward first (from the output) disagrees with the oracle."""
    keys = _layer_keys(layers, key)
    inputs, caches = [], []
    for op, p, k in zip(layers, params, keys, strict=True):
        inputs.append(x)
        x, c = apply(op, p, x, key=k, train=True)
        caches.append(c)
    found: list[LayerFinding] = []
    for i in range(len(layers) - 1, -1, -1):
        op, k = layers[i], keys[i]
        _, vjp_fn = jax.vjp(
            lambda p, xx, op=op, k=k: apply(op, p, xx, key=k)[0], params[i], inputs[i]
        )
        oracle = vjp_fn(dy)
        manual = op.backward(caches[i], dy)
        if compare(tuple(manual), tuple(oracle), rtol)[2]:
            found.append(LayerFinding(i, op, params[i], inputs[i], k, dy, ()))
        dy = oracle[1]
    if not found:
        return None
    return replace(found[0], wrong=tuple(f.index for f in found))


def _recurrent_inputs(op: Any, cell: Cell, params: Any, x: Any, dy: Any) -> tuple | None:
    """(cell params, x (batch, T, n_in), initial states, dhs) of a sequence op or layer."""
    if isinstance(x, tuple | list) and len(x) == 1 + cell.n_state:
        if jnp.ndim(x[0]) != 3:
            return None  # one step (a cell op), not a sequence
        return params, x[0], tuple(x[1:]), dy
    if jnp.ndim(x) != 3:
        return None
    if isinstance(params, dict) and "W_v" in params and "start_H" in params:
        starts = ("start_H", "start_C")[: cell.n_state]
        cell_params = {k: v for k, v in params.items() if k not in {"W_v", "B_v", *starts}}
        state0 = tuple(
            jnp.broadcast_to(params[s], (x.shape[0], params[s].shape[1])) for s in starts
        )
        return cell_params, x, state0, dy @ params["W_v"].T
    return None


def _replay(cell: Cell, W_h: Any, xp: list, state0: tuple, dhs: Any) -> tuple[list, list, list]:
    """Every step's (state before, step cache) and the oracle gradient into the state after it."""

    def run(eps: list) -> tuple[list, tuple[list, list]]:
        state, hs, prevs, caches = tuple(state0), [], [], []
        for t, xp_t in enumerate(xp):
            prevs.append(state)
            new, c = cell.recur(W_h, xp_t, state)
            caches.append(c)
            state = tuple(a + e for a, e in zip(new, eps[t], strict=True))
            hs.append(state[0])
        return hs, (prevs, caches)

    zeros = [tuple(jnp.zeros_like(s) for s in state0) for _ in xp]
    _, vjp_fn, (prevs, caches) = jax.vjp(run, zeros, has_aux=True)
    (dstates,) = vjp_fn([dhs[:, t] for t in range(len(xp))])
    return prevs, caches, dstates


def _cell_kind(cell: Cell) -> str:
    """``lstm``, ``gru`` or ``rnn`` for a cell named after one (``rnn_truncated``), else its name."""
    return next((k for k in GATES if cell.name.startswith(k)), cell.name)


def _part_names(cell: Cell, n: int, width: int) -> list[str]:
    """The names of :func:`_step_pairs`' pairs: per-gate dxp, the state gradients, dW_h leaves."""
    kind = _cell_kind(cell)
    gates = GATES.get(kind) or tuple(f"block {g}" for g in range(width // n))
    gated = ("forget", "input", "output", "reset", "update")
    names = [f"dxp of the {g} gate" if g in gated else f"dxp of the {g}" for g in gates]
    names += STATE_PARTS.get(kind) or [f"dstate_prev[{s}]" for s in range(cell.n_state)]
    return names


@functools.partial(jax.jit, static_argnums=0)
def _step_pairs(cell: Cell, W_h: Any, xs: Any, W_x: Any, B: Any, state0: tuple, dhs: Any) -> list:
    """Per step, (manual, oracle) pairs: the pre-activation gradient per gate, the state
    gradients, the dW_h leaves; each step's backward given the oracle's gradient into its state.
    Jitted (one compile per cell and shapes; the eager replay compiled every primitive)."""
    xp = [xs[:, t] @ W_x + B for t in range(xs.shape[1])]
    prevs, caches, dstates = _replay(cell, W_h, xp, state0, dhs)
    n = state0[0].shape[-1]
    out = []
    for xp_t, prev, cache, dstate in zip(xp, prevs, caches, dstates, strict=True):
        m_dxp, m_prev = cell.recur_backward(W_h, prev[0], cache, dstate)
        _, vjp_fn = jax.vjp(lambda a, s, w: cell.recur(w, a, s)[0], xp_t, prev, W_h)
        o_dxp, o_prev, o_wh = vjp_fn(tuple(dstate))
        pairs = [
            (m_dxp[:, j * n : (j + 1) * n], o_dxp[:, j * n : (j + 1) * n])
            for j in range(o_dxp.shape[-1] // n)
        ]
        pairs += list(zip(m_prev, o_prev, strict=True))
        m_wh = cell.recur_wgrad(prev[0], cache, o_dxp)
        pairs += list(zip(jax.tree.leaves(m_wh), jax.tree.leaves(o_wh), strict=True))
        out.append(pairs)
    return out


def wrong_step(
    op: Any, params: Any, x: Any, dy: Any, ctx: Context, rtol: float
) -> tuple[Location, Diagnosis] | None:
    """The latest time step whose cell backward is wrong given the oracle's state gradient, its
    part (gate, ``dh_prev``, ``dc_prev``, ``dW_h``) and the part's diagnosis."""
    cell = cell_of(op)
    inp = None if cell is None else _recurrent_inputs(op, cell, params, x, dy)
    if cell is None or inp is None:
        return None
    cell_params, xs, state0, dhs = inp
    W_x, W_h, B = cell.fuse(cell_params)
    steps = _step_pairs(cell, W_h, xs, W_x, B, tuple(state0), dhs)
    names = _part_names(cell, state0[0].shape[-1], W_x.shape[-1])
    for t in range(len(steps) - 1, -1, -1):
        for k, (m, o) in enumerate(steps[t]):
            part = names[k] if k < len(names) else "dW_h"
            m, o = np.asarray(m, np.float64), np.asarray(o, np.float64)
            if m.shape != o.shape or not close(m, o, rtol):
                d = diagnose_leaf(m, o, Context(batch=ctx.batch, time=ctx.time), rtol=rtol)
                words = f"{cell.name}[t={t}] {part}: {d.words}"
                loc = Location(leaf=part, index=d.index, step=t, part=part, cell=cell.name)
                return loc, Diagnosis(d.kind, words, d.constant, part, d.index)
    return None


def wrong_dx_step(manual_dx: Any, oracle_dx: Any, rtol: float) -> int | None:
    """The latest t whose ``dx[:, t]`` is wrong, for an input (batch, T, ...) (None otherwise)."""
    m, o = (
        manual_dx[0] if isinstance(manual_dx, tuple) else manual_dx,
        oracle_dx[0] if isinstance(oracle_dx, tuple) else oracle_dx,
    )
    if not is_float(o) or np.ndim(o) != 3 or np.shape(m) != np.shape(o):
        return None
    m, o = np.asarray(m, np.float64), np.asarray(o, np.float64)
    scale = float(np.max(np.abs(o)))
    bad = [
        t
        for t in range(o.shape[1])
        if np.any(np.abs(m[:, t] - o[:, t]) > rtol * (np.abs(o[:, t]) + scale))
    ]
    return bad[-1] if bad else None


# ---------------------------------------------------------------------------------------------
# the combinators of jaxscratch.ops.combinators: branches and paths


def _call(op: Any, p: Any, x: Any, key: Any) -> Any:
    return apply(op, p, x, key=key)[0] if isinstance(op, Op) else op.forward(p, x)[0]


def branches_of(op: Any, params: Any, x: Any, dy: Any, key: Any) -> list[tuple] | None:
    """``[(op_i, params_i, dy_i, key_i)]`` of a ``residual`` (its branch, one) or a
    ``parallel`` (every branch, with its share of ``dy``); None for another op."""
    qual = getattr(op.backward, "__qualname__", "")
    if qual.startswith("residual.<locals>"):
        f = _closure(op.backward, "f")
        return None if f is None else [(f, params, dy, key)]
    if not qual.startswith("parallel.<locals>"):
        return None
    ops = _closure(op.backward, "ops")
    combine, axis = _closure(op.backward, "combine"), _closure(op.backward, "axis")
    if not ops or not isinstance(params, tuple | list) or len(params) != len(ops):
        return None
    keys = _layer_keys(tuple(ops), key)
    if combine != "concat":
        return [(o, p, dy, k) for o, p, k in zip(ops, params, keys, strict=True)]
    sizes = [jnp.shape(_call(o, p, x, k))[axis] for o, p, k in zip(ops, params, keys, strict=True)]
    cuts = np.cumsum(sizes)[:-1].tolist()
    dys = jnp.split(dy, cuts, axis=axis)
    return [(o, p, d, k) for o, p, d, k in zip(ops, params, dys, keys, strict=True)]


def combinator_paths(op: Any, params: Any, x: Any, key: Any) -> dict[str, Any]:
    """The ``paths`` of a ``residual`` (the identity skip and the branch) or a sum ``parallel``
    (one per branch), as functions of ``(params, x)``; ``{}`` for another op."""
    qual = getattr(op.backward, "__qualname__", "")
    if qual.startswith("residual.<locals>"):
        f = _closure(op.backward, "f")
        return {
            "the skip connection (identity)": lambda p, xx: xx,
            f"the branch {getattr(f, 'name', 'f')}": lambda p, xx: _call(f, p, xx, key),
        }
    ops = _closure(op.backward, "ops") if qual.startswith("parallel.<locals>") else None
    if not ops or _closure(op.backward, "combine") != "sum":
        return {}
    keys = _layer_keys(tuple(ops), key)
    return {
        f"branch {i} ({getattr(o, 'name', '?')})": (
            lambda p, xx, i=i, o=o: _call(o, p[i], xx, keys[i])
        )
        for i, o in enumerate(ops)
    }


def wrong_branch(op: Any, params: Any, x: Any, dy: Any, key: Any, rtol: float) -> tuple | None:
    """``(index, op_i, params_i, dy_i, key_i)`` of the first branch of a combinator whose own
    backward is wrong (at the combinator's input and the branch's share of ``dy``), or None."""
    for i, (o, p, d, k) in enumerate(branches_of(op, params, x, dy, key) or []):
        _, cache = apply(o, p, x, key=k) if isinstance(o, Op) else o.forward(p, x)
        _, vjp_fn = jax.vjp(lambda pp, xx, o=o, k=k: _call(o, pp, xx, k), p, x)
        if compare(tuple(o.backward(cache, d)), tuple(vjp_fn(d)), rtol)[2]:
            return i, o, p, d, k
    return None
