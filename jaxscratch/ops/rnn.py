"""Recurrent networks (chapter 6): RNN, LSTM and GRU cells, BPTT by reverse ``lax.scan``, layers.

Three levels, each an :class:`~jaxscratch.core.Op` with a hand-derived backward pass:

* **cells** (:data:`rnn_cell`, :data:`lstm_cell`, :data:`gru_cell`), one time step, live in
  :mod:`jaxscratch.ops.cells` (their parameter names and shapes are described there) and are
  re-exported here;
* **sequence ops** (:func:`sequence`, registered as ``sequence[rnn]`` etc.): a cell run over time
  with ``lax.scan``; ``forward(params, (x, h0[, c0])) -> (hs, cache)`` with x: (batch, T, n_in),
  h0, c0: (batch, hidden), hs: (batch, T, hidden) (every step's ``h``). ``backward`` is
  backpropagation through time as a *reverse* ``lax.scan``: at step t the gradient reaching
  ``h_t`` is the one from its output plus the one flowing back from step t+1; parameter gradients
  are summed over the steps; the scan ends with the gradient into the initial state
  ``(dx, dh0[, dc0])``. Cache: ``(params, stacked step caches)`` (leading axis T).
* **sequence layers** (:func:`rnn_layer`, :func:`lstm_layer`, :func:`gru_layer`), the book's
  ``RNNLayer``/``LSTMLayer``/``GRULayer``: a learned initial state ``start_H`` (and ``start_C``) of
  shape (1, hidden), broadcast over the batch; the sequence op; and a per-step output projection
  ``y_t = h_t @ W_v + B_v`` with weights shared over time. x: (batch, T, n_in) -> y: (batch, T,
  out). ``init(key, (T, n_in))``. Layers stack with :func:`jaxscratch.core.serial`.

:data:`sequence_softmax_cross_entropy` is the loss over every time step: logits (batch, T, k)
against one-hot (batch, T, k) or integer (batch, T) targets, mean over batch *and* time.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from jaxscratch.core import Array, Loss, Op, Shape, register, register_loss, serial
from jaxscratch.ops.cells import (
    CELLS,
    GRU,
    LSTM,
    RNN,
    Cell,
    CellParams,
    State,
    _bias,
    _check_step_inputs,
    _dgate,
    _normal,
    _shape,
    _split_input,
    cell_op,
    get_cell,
    gru_cell,
    lstm_cell,
    rnn_cell,
)
from jaxscratch.ops.embedding import _checked_ids
from jaxscratch.ops.losses import softmax_cross_entropy
from jaxscratch.validate import check_positive, check_positive_int

# ---------------------------------------------------------------------------------------------
# a cell over time: lax.scan forward, reverse lax.scan backward (BPTT)


def _is_ids(x: Any) -> bool:
    """Integer input: ids into the rows of the input projection (see :func:`sequence`)."""
    return jnp.issubdtype(getattr(x, "dtype", jnp.float32), jnp.integer)


def _project(x: Array, W_x: Array, B: Array) -> Array:
    """``x @ W_x + B`` for every step, time-major (T, batch, 4 hidden); for ids (batch, T) the
    rows ``W_x[ids] + B`` (the same numbers as the product with their one-hot rows; an id out of
    range, which :func:`_checked_ids` maps to ``n_in``, reads NaN)."""
    if _is_ids(x):
        return jnp.take(W_x, x.T, axis=0, mode="fill", fill_value=jnp.nan) + B[None]
    n, T, n_in = x.shape
    return (jnp.swapaxes(x, 0, 1).reshape(T * n, n_in) @ W_x + B).reshape(T, n, -1)


@functools.partial(jax.jit, static_argnums=0)
def _scan_forward(cell: Cell, params: CellParams, x: Array, state0: State) -> tuple[Array, tuple]:
    """hs (batch, T, hidden) and the cache ``(fused weights, x, state0, hs (T, batch, hidden),
    stacked step caches)``. The input projection of all T steps is one product (for ids, one
    row gather) before the scan; only the recurrent part runs step by step. Jitted (cached per
    cell and shapes)."""
    fused = cell.fuse(params)
    W_x, W_h, B = fused
    xp = _project(x, W_x, B)

    def body(state, xp_t):
        new, step_cache = cell.recur(W_h, xp_t, state)
        return new, (new[0], step_cache)

    _, (hs, caches) = jax.lax.scan(body, tuple(state0), xp)
    return jnp.swapaxes(hs, 0, 1), (fused, x, tuple(state0), hs, caches)


@functools.partial(jax.jit, static_argnums=0)
def _scan_backward(cell: Cell, cache: tuple, dhs: Array):
    """BPTT: (dparams, dx (batch, T, n_in) or None for ids, dstate0 tuple). The reverse scan
    carries only the state gradients and emits each step's pre-activation gradient ``dxp_t``;
    ``dW_x``, ``dB``, ``dW_h`` and ``dx`` are then one product each over all steps (for ids,
    ``dW_x`` is the scatter-add of ``dxp`` into the rows the ids name, and there is no ``dx``).
    Jitted (cached per cell and shapes)."""
    (W_x, W_h, _), x, state0, hs, caches = cache
    h_prev = jnp.concatenate([state0[0][None], hs[:-1]], axis=0)  # (T, batch, hidden)
    dhs_t = jnp.swapaxes(dhs, 0, 1)
    zero_state = tuple(jnp.zeros_like(dhs_t[0]) for _ in range(cell.n_state))

    def body(dstate, inp):
        dh_out, hp, step_cache = inp
        # the gradient reaching h_t: from its own output plus from step t+1 (in dstate)
        dstate = (dstate[0] + dh_out, *dstate[1:])
        dxp_t, dprev = cell.recur_backward(W_h, hp, step_cache, dstate)
        return tuple(dprev), dxp_t

    dstate0, dxp = jax.lax.scan(body, zero_state, (dhs_t, h_prev, caches), reverse=True)
    dW_h = cell.recur_wgrad(h_prev, caches, dxp)
    if _is_ids(x):
        dW_x = jnp.zeros_like(W_x).at[x.T].add(dxp, mode="drop")
        dB = jnp.sum(dxp.reshape(-1, dxp.shape[-1]), axis=0, keepdims=True)
        return cell.unfuse(dW_x, dW_h, dB), None, dstate0
    n, T, n_in = x.shape
    dW_x, dB = _dgate(dxp, jnp.swapaxes(x, 0, 1))
    dx = (dxp.reshape(T * n, -1) @ W_x.T).reshape(T, n, n_in)
    return cell.unfuse(dW_x, dW_h, dB), jnp.swapaxes(dx, 0, 1), dstate0


def sequence(cell: Cell, name: str | None = None) -> Op:
    """``cell`` run over time. forward(params, (x, h0[, c0])) -> (hs, cache).

    x: (batch, T, n_in), or integer ids (batch, T) in ``[0, n_in)``, which stand for their
    one-hot rows (a character model's input): the input projection is then a row gather
    ``W_x[ids]`` instead of a product with mostly zeros, and its weight gradient a scatter-add;
    the numbers are those of the one-hot input (tests/test_rnn.py). h0, c0: (batch, hidden); hs:
    (batch, T, hidden), ``hs[:, t]`` the state ``h`` after step t. The input projection
    ``x @ W_x + B`` of all T steps is one matrix product; a ``lax.scan`` over time then runs the
    recurrent part. Cache: ``(fused weights, x, initial states, hs (T, batch, hidden), step
    caches)``, each step-cache array stacked with a leading axis T. Backward (BPTT) is a reverse
    ``lax.scan`` whose carry is the gradient into the state after step t; it emits each step's
    pre-activation gradients, from which the weight, bias and input gradients are one product
    each; returns ``(dparams, (dx, dh0[, dc0]))``, ``dx`` for ids a ``float0`` array of their
    shape (``jax.vjp``'s convention for integer inputs). Ids out of range are a ``ValueError``
    when concrete; traced, they read NaN rows (see :mod:`jaxscratch.ops.embedding`). Both scans
    are jitted functions (compiled once per cell and shapes, so eager calls, e.g. the oracle's
    finite differences, do not recompile).
    """
    label = name or f"sequence[{cell.name}]"

    def forward(params: CellParams, inp: Any) -> tuple[Array, tuple]:
        x, state0 = _split_input(label, cell, inp, "x")
        if _is_ids(x):
            if x.ndim != 2 or x.shape[1] == 0:
                raise ValueError(f"{label}: expected ids of shape (batch, T >= 1), got {_shape(x)}")
            n_in, _ = cell.sizes(params)
            _check_step_inputs(label, cell, params, (*x.shape, n_in), state0, "x")
            x = _checked_ids(label, x, n_in)
        elif x.ndim != 3 or x.shape[1] == 0:
            raise ValueError(f"{label}: expected x of shape (batch, T >= 1, n_in), got {_shape(x)}")
        else:
            _check_step_inputs(label, cell, params, x.shape, state0, "x")
        return _scan_forward(cell, params, x, tuple(state0))

    def backward(cache: tuple, dhs: Array) -> tuple[CellParams, tuple]:
        dparams, dx, dstate0 = _scan_backward(cell, cache, dhs)
        if dx is None:  # ids: no gradient flows into an index
            dx = np.zeros(cache[1].shape, jax.dtypes.float0)
        return dparams, (dx, *dstate0)

    return Op(label, forward, backward)


# ---------------------------------------------------------------------------------------------
# sequence layers: learned initial state, the sequence op, a per-step output projection


def _split_layer_params(
    label: str, c: Cell, state_names: tuple[str, ...], params: Any
) -> tuple[CellParams, Array, Array, State]:
    """A recurrent layer's params as (cell params, W_v, B_v, start states), shapes checked."""
    extra = {"W_v", "B_v", *state_names}
    if not isinstance(params, dict) or not extra <= set(params):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{label}: params must hold {sorted(extra)} and the cell's, got {got}")
    cell_params = {k: v for k, v in params.items() if k not in extra}
    _, h = c.sizes(cell_params)
    W_v, B_v = params["W_v"], params["B_v"]
    if W_v.ndim != 2 or W_v.shape[0] != h or _shape(B_v) != (1, W_v.shape[1]):
        raise ValueError(
            f"{label}: W_v{_shape(W_v)} / B_v{_shape(B_v)} do not fit hidden size {h}; "
            f"expected ({h}, out) and (1, out)"
        )
    starts = tuple(params[s] for s in state_names)
    for s_name, s in zip(state_names, starts, strict=True):
        if _shape(s) != (1, h):
            raise ValueError(f"{label}: {s_name} has shape {_shape(s)}, expected (1, {h})")
    return cell_params, W_v, B_v, starts


def _init_layer(
    label: str,
    c: Cell,
    hidden: int,
    out: int,
    state_names: tuple[str, ...],
    key: Array,
    in_shape: Shape,
    dtype: Any,
    weight_scale: float | None,
) -> tuple[Shape, dict[str, Array]]:
    """((T, out), params) for per-example input shape (T, n_in); initial states zero."""
    if len(in_shape) != 2:
        raise ValueError(
            f"{label}: expects inputs of shape (batch, T, n_in), got per-example {in_shape}"
        )
    T, n_in = in_shape
    kc, kw, kb = jax.random.split(key, 3)
    params = c.init(kc, n_in, hidden, dtype, weight_scale)
    params["W_v"] = _normal(kw, (hidden, out), dtype, weight_scale)
    params["B_v"] = _bias(kb, (hidden, out), out, dtype, weight_scale)
    dt = params["W_v"].dtype
    for s_name in state_names:
        params[s_name] = jnp.zeros((1, hidden), dt)
    return (T, out), params


def recurrent_layer(
    cell: str | Cell,
    hidden: int,
    out: int,
    *,
    weight_scale: float | None = None,
    dtype: DTypeLike | None = None,
    name: str | None = None,
) -> Op:
    """The book's recurrent layer: x (batch, T, n_in) -> y (batch, T, out); x may also be integer
    ids (batch, T) in ``[0, n_in)`` standing for their one-hot rows (see :func:`sequence`: the
    input projection is then a row gather).

    ``h_0 = start_H`` (and ``c_0 = start_C`` for LSTM), learned, shape (1, hidden), broadcast over
    the batch; ``hs = sequence(cell)(x, h_0)``; ``y_t = hs_t @ W_v + B_v`` with ``W_v`` (hidden,
    out), ``B_v`` (1, out) shared over time. Params: the cell's (book names) plus ``W_v``,
    ``B_v``, ``start_H`` (``start_C``). Cache: ``(sequence cache, hs, W_v)``. Backward: projection,
    then BPTT; ``d start_H`` is ``dh_0`` summed over the batch. (The book's layers also keep a
    ``start_H``, but carry it over from the previous batch instead of learning it; with random
    windows consecutive batches are unrelated, so here the initial state is a parameter.)

    init(key, (T, n_in)) -> ((T, out), params): weights normal with std ``weight_scale``
    (default: Glorot ``sqrt(2 / (fan_in + fan_out))`` per matrix; the book used ``2 / (fan_in +
    fan_out)`` or a fixed scale); biases likewise; initial states zero.
    """
    c = get_cell(cell)
    fn = f"{c.name}_layer"
    hidden = check_positive_int(fn, "hidden", hidden)
    out = check_positive_int(fn, "out", out)
    if weight_scale is not None:
        weight_scale = check_positive(fn, "weight_scale", weight_scale)
    label = name or f"{c.name}_layer[{hidden},{out}]"
    seq = sequence(c)
    state_names = ("start_H", "start_C")[: c.n_state]

    def split(params: Any) -> tuple[CellParams, Array, Array, State]:
        return _split_layer_params(label, c, state_names, params)

    def forward(params: dict[str, Array], x: Array) -> tuple[Array, tuple]:
        cell_params, W_v, B_v, starts = split(params)
        if x.ndim != (2 if _is_ids(x) else 3):
            raise ValueError(
                f"{label}: expected x of shape (batch, T, n_in) or ids (batch, T), got {_shape(x)}"
            )
        state0 = tuple(jnp.broadcast_to(s, (x.shape[0], s.shape[1])) for s in starts)
        hs, seq_cache = seq.forward(cell_params, (x, *state0))
        y = hs @ W_v + B_v[None]  # (batch, T, out) + (1, 1, out)
        return y, (seq_cache, hs, W_v)

    def backward(cache: tuple, dy: Array) -> tuple[dict[str, Array], Array]:
        seq_cache, hs, W_v = cache
        n_h, n_out = W_v.shape
        dW_v = hs.reshape(-1, n_h).T @ dy.reshape(-1, n_out)
        dB_v = jnp.sum(dy.reshape(-1, n_out), axis=0, keepdims=True)
        dhs = dy @ W_v.T
        dcell, (dx, *dstate0) = seq.backward(seq_cache, dhs)
        dparams = dict(dcell, W_v=dW_v, B_v=dB_v)
        for s_name, ds in zip(state_names, dstate0, strict=True):
            dparams[s_name] = jnp.sum(ds, axis=0, keepdims=True)
        return dparams, dx

    def init_fn(key: Array, in_shape: Shape) -> tuple[Shape, dict[str, Array]]:
        return _init_layer(label, c, hidden, out, state_names, key, in_shape, dtype, weight_scale)

    return Op(label, forward, backward, init_fn)


def rnn_layer(hidden: int, out: int, **kwargs: Any) -> Op:
    """The book's ``RNNLayer(hidden_size, output_size)``; see :func:`recurrent_layer`."""
    return recurrent_layer(RNN, hidden, out, **kwargs)


def lstm_layer(hidden: int, out: int, **kwargs: Any) -> Op:
    """The book's ``LSTMLayer(hidden_size, output_size)``; see :func:`recurrent_layer`."""
    return recurrent_layer(LSTM, hidden, out, **kwargs)


def gru_layer(hidden: int, out: int, **kwargs: Any) -> Op:
    """The book's ``GRULayer(hidden_size, output_size)``; see :func:`recurrent_layer`."""
    return recurrent_layer(GRU, hidden, out, **kwargs)


# ---------------------------------------------------------------------------------------------
# loss over every time step


def _seq_sce_forward(logits: Array, target: Array) -> tuple[Array, tuple]:
    """Mean over batch and time of -log softmax(logits[b, t])[target[b, t]].

    logits: (batch, T, k); target: (batch, T, k) one-hot (or probability) rows, or (batch, T)
    integer ids. Computed as :data:`jaxscratch.ops.losses.softmax_cross_entropy` on the (batch*T, k)
    rows (log-sum-exp, finite for any logits). Cache: ``(that loss's cache, logits shape)``;
    backward: ``(softmax - target) / (batch * T)``, reshaped to (batch, T, k).
    """
    fn = "sequence_softmax_cross_entropy"
    if logits.ndim != 3 or 0 in logits.shape:
        raise ValueError(f"{fn}: expected logits of shape (batch, T, k), got {_shape(logits)}")
    n, T, k = logits.shape
    if target.shape == logits.shape:
        flat_t = target.reshape(n * T, k)
    elif target.shape == (n, T):
        flat_t = target.reshape(n * T)
    else:
        raise ValueError(
            f"{fn}: target shape {_shape(target)} matches neither the logits {_shape(logits)} "
            f"(one-hot rows) nor ({n}, {T}) (integer ids)"
        )
    value, cache = softmax_cross_entropy.forward(logits.reshape(n * T, k), flat_t)
    return value, (cache, logits.shape)


def _seq_sce_backward(cache: tuple) -> Array:
    inner, shape = cache
    return softmax_cross_entropy.backward(inner).reshape(shape)


def _seq_sce_example(key: Array) -> tuple[Array, Array]:
    k1, k2 = jax.random.split(key)
    logits = 3.0 * jax.random.normal(k1, (3, 6, 4), jnp.float64)  # batch 3, T 6, k 4
    ids = jax.random.randint(k2, (3, 6), 0, 4)
    return logits, jax.nn.one_hot(ids, 4, dtype=jnp.float64)


sequence_softmax_cross_entropy = register_loss(
    Loss("sequence_softmax_cross_entropy", _seq_sce_forward, _seq_sce_backward), _seq_sce_example
)

# ---------------------------------------------------------------------------------------------
# registry: sequence ops, layers and a stack (the cells register in jaxscratch.ops.cells), each with an oracle example
#   (batch 3, n_in 4 != hidden 5, T 6, non-zero initial states, float64)

_BATCH, _N_IN, _HIDDEN, _T, _OUT = 3, 4, 5, 6, 3


def _sequence_example(cell: Cell):
    def example(key: Array):
        kp, kx, ks = jax.random.split(key, 3)
        params = cell.init(kp, _N_IN, _HIDDEN, jnp.float64, 0.5)
        x = jax.random.normal(kx, (_BATCH, _T, _N_IN), jnp.float64)
        keys = jax.random.split(ks, cell.n_state)
        states = [jax.random.normal(k, (_BATCH, _HIDDEN), jnp.float64) for k in keys]
        return params, (x, *states)

    return example


def _nonzero_starts(params: Any, key: Array) -> Any:
    """Replace every zero initial state (``start_H``, ``start_C``) with normal draws."""
    if isinstance(params, tuple):
        keys = jax.random.split(key, len(params))
        return tuple(_nonzero_starts(p, k) for p, k in zip(params, keys, strict=True))
    params = dict(params)
    for n, s in enumerate(("start_H", "start_C")):
        if s in params:
            params[s] = jax.random.normal(jax.random.fold_in(key, n), params[s].shape, jnp.float64)
    return params


def _layer_example(op: Op):
    init = op.init
    if init is None:
        raise ValueError(f"_layer_example: {op.name} has no init; a layer example needs params")

    def example(key: Array):
        kp, kx, ks = jax.random.split(key, 3)
        _, params = init(kp, (_T, _N_IN))
        params = _nonzero_starts(params, ks)
        x = jax.random.normal(kx, (_BATCH, _T, _N_IN), jnp.float64)
        return params, x

    return example


rnn_sequence = register(sequence(RNN), _sequence_example(RNN))
lstm_sequence = register(sequence(LSTM), _sequence_example(LSTM))
gru_sequence = register(sequence(GRU), _sequence_example(GRU))


def _ids_layer_example(op: Op):
    """The layer fed integer ids (repeated, one of the n_in ids never used)."""
    example = _layer_example(op)

    def ids_example(key: Array):
        params, _ = example(key)
        ids = jax.random.randint(jax.random.fold_in(key, 7), (_BATCH, _T), 0, _N_IN - 1)
        return params, ids.at[0, :3].set(1)

    return ids_example


for _c in (RNN, LSTM, GRU):
    _layer = recurrent_layer(_c, _HIDDEN, _OUT, weight_scale=0.5, dtype=jnp.float64)
    register(_layer, _layer_example(_layer), name=f"{_c.name}_layer")
    if _c is LSTM:  # the ids path is the same code for every cell (tests/test_rnn.py)
        register(_layer, _ids_layer_example(_layer), name="lstm_layer[ids]")

_stack = serial(  # GRU -> LSTM as in the chapter; shapes shared with the examples above
    gru_layer(_HIDDEN, _N_IN, weight_scale=0.5, dtype=jnp.float64),
    lstm_layer(_HIDDEN, _OUT, weight_scale=0.5, dtype=jnp.float64),
    name="stack[gru_layer,lstm_layer]",
)
register(_stack, _layer_example(_stack))

__all__ = [
    "CELLS",
    "GRU",
    "LSTM",
    "RNN",
    "Cell",
    "cell_op",
    "get_cell",
    "gru_cell",
    "gru_layer",
    "gru_sequence",
    "lstm_cell",
    "lstm_layer",
    "lstm_sequence",
    "recurrent_layer",
    "rnn_cell",
    "rnn_layer",
    "rnn_sequence",
    "sequence",
    "sequence_softmax_cross_entropy",
]
