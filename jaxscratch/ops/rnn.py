"""Recurrent networks (chapter 6): RNN, LSTM and GRU cells, BPTT by reverse ``lax.scan``, layers.

Three levels, each an :class:`~jaxscratch.core.Op` with a hand-derived backward pass:

* **cells** (:data:`rnn_cell`, :data:`lstm_cell`, :data:`gru_cell`), one time step::

      forward(params, (x_t, h_prev[, c_prev])) -> (h | (h, c), cache)
      backward(cache, dh | (dh, dc))           -> (dparams, (dx_t, dh_prev[, dc_prev]))

  x_t: (batch, n_in); h, c: (batch, hidden). The output is the new state: ``h`` for RNN and GRU,
  ``(h, c)`` for LSTM. Cache: ``(params, step cache)`` (the step cache of each cell is listed below).
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

Parameters keep the book's names. RNN: ``W_f`` (n_in + hidden, hidden), ``B_f`` (1, hidden) acting
on ``[x, h]``. LSTM: ``W_f, W_i, W_c, W_o`` (n_in + hidden, hidden) and ``B_f, B_i, B_c, B_o`` (1,
hidden). GRU: ``W_xr, W_xu, W_xh`` (n_in, hidden), ``W_hr, W_hu, W_hh`` (hidden, hidden), ``B_r,
B_u, B_h`` (1, hidden); each gate uses *its own* weights (the book's GRU computed the update gate
from the reset gate's weights; the oracle catches that, see tests/test_rnn.py).

:data:`sequence_softmax_cross_entropy` is the loss over every time step: logits (batch, T, k)
against one-hot (batch, T, k) or integer (batch, T) targets, mean over batch *and* time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxscratch.core import Array, Loss, Op, Shape, register, register_loss, serial
from jaxscratch.ops import init as initializers
from jaxscratch.ops.losses import softmax_cross_entropy

State = tuple[Array, ...]
CellParams = dict[str, Array]


class Cell(NamedTuple):
    """One recurrent cell as pure step functions (used by :func:`cell_op` and :func:`sequence`).

    ``step(params, x, state) -> (new_state, step_cache)``; ``step_backward(params, step_cache,
    dstate) -> (dparams, dx, dstate_prev)``; ``state`` is a tuple of ``n_state`` arrays (batch,
    hidden): ``(h,)`` or ``(h, c)``. ``sizes(params) -> (n_in, hidden)`` validates the parameter
    shapes. ``init(key, n_in, hidden, dtype, scale) -> params`` (``scale=None``: Glorot per matrix).
    Params stay out of the step cache, so a scan does not stack T copies of them.
    """

    name: str
    n_state: int
    step: Callable[[CellParams, Array, State], tuple[State, Any]]
    step_backward: Callable[[CellParams, Any, State], tuple[CellParams, Array, State]]
    sizes: Callable[[CellParams], tuple[int, int]]
    init: Callable[..., CellParams]


# ---------------------------------------------------------------------------------------------
# shape checks and initialisation helpers


def _shape(a: Any) -> tuple[int, ...]:
    return tuple(getattr(a, "shape", ()))


def _describe(params: Any) -> str:
    return str(sorted(params)) if isinstance(params, dict) else type(params).__name__


def _check_params(fn: str, params: Any, expected: dict[str, tuple[int, int]]) -> None:
    if not isinstance(params, dict) or set(params) != set(expected):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{fn}: expected params {sorted(expected)}, got {got}")
    for k, shape in expected.items():
        if _shape(params[k]) != shape:
            raise ValueError(
                f"{fn}: param {k} has shape {_shape(params[k])}, expected {shape} "
                f"(from the other parameters' shapes)"
            )


def _check_step_inputs(
    fn: str, cell: Cell, params: CellParams, x_shape: tuple[int, ...], state: State, what: str
) -> None:
    """x_shape: (batch, n_in) for a cell, (batch, T, n_in) for a sequence (named ``what``)."""
    n_in, hidden = cell.sizes(params)
    if len(x_shape) < 2 or x_shape[-1] != n_in:
        dims = "(batch, T, " if what == "x" else "(batch, "
        raise ValueError(
            f"{fn}: {what}{x_shape} does not fit the parameters; expected {dims}{n_in})"
        )
    names = ("h0", "c0") if what == "x" else ("h_prev", "c_prev")
    for name, s in zip(names, state, strict=False):
        if _shape(s) != (x_shape[0], hidden):
            raise ValueError(
                f"{fn}: {name}{_shape(s)} does not fit {what}{x_shape} and hidden size {hidden}; "
                f"expected ({x_shape[0]}, {hidden})"
            )


def _normal(key: Array, shape: tuple[int, int], dtype, scale: float | None) -> Array:
    s = initializers.glorot_scale(*shape) if scale is None else scale
    return initializers.normal(key, shape, dtype, scale=s)


def _bias(key: Array, fan: tuple[int, int], hidden: int, dtype, scale: float | None) -> Array:
    s = initializers.glorot_scale(*fan) if scale is None else scale
    return initializers.normal(key, (1, hidden), dtype, scale=s)


def _dgate(pre_grad: Array, inputs: Array) -> tuple[Array, Array]:
    """(dW, dB) of ``inputs @ W + B`` given the gradient ``pre_grad`` of its result."""
    return inputs.T @ pre_grad, jnp.sum(pre_grad, axis=0, keepdims=True)


# ---------------------------------------------------------------------------------------------
# RNN cell: h = tanh([x, h_prev] @ W_f + B_f)


def _rnn_sizes(params: CellParams) -> tuple[int, int]:
    if not isinstance(params, dict) or "W_f" not in params or "B_f" not in params:
        raise ValueError(f"rnn_cell: expected params ['B_f', 'W_f'], got {_describe(params)}")
    hidden = _shape(params["B_f"])[-1] if _shape(params["B_f"]) else 0
    n_in = _shape(params["W_f"])[0] - hidden if _shape(params["W_f"]) else 0
    _check_params("rnn_cell", params, {"W_f": (n_in + hidden, hidden), "B_f": (1, hidden)})
    if n_in <= 0:
        raise ValueError(f"rnn_cell: W_f{_shape(params['W_f'])} leaves no room for the input")
    return n_in, hidden


def _rnn_step(params: CellParams, x: Array, state: State) -> tuple[State, tuple[Array, Array]]:
    """h = tanh([x, h_prev] @ W_f + B_f). Step cache: ``(z = [x, h_prev], h)``."""
    (h_prev,) = state
    z = jnp.concatenate([x, h_prev], axis=1)
    h = jnp.tanh(z @ params["W_f"] + params["B_f"])
    return (h,), (z, h)


def _rnn_step_backward(
    params: CellParams, cache: tuple[Array, Array], dstate: State
) -> tuple[CellParams, Array, State]:
    z, h = cache
    (dh,) = dstate
    da = dh * (1.0 - h * h)  # tanh' = 1 - tanh^2
    dW, dB = _dgate(da, z)
    dz = da @ params["W_f"].T
    n_in = z.shape[1] - h.shape[1]
    return {"W_f": dW, "B_f": dB}, dz[:, :n_in], (dz[:, n_in:],)


def _rnn_init(key: Array, n_in: int, hidden: int, dtype=None, scale=None) -> CellParams:
    kw, kb = jax.random.split(key)
    fan = (n_in + hidden, hidden)
    return {"W_f": _normal(kw, fan, dtype, scale), "B_f": _bias(kb, fan, hidden, dtype, scale)}


RNN = Cell("rnn", 1, _rnn_step, _rnn_step_backward, _rnn_sizes, _rnn_init)

# ---------------------------------------------------------------------------------------------
# LSTM cell
#   z = [x, h_prev]; f = s(z W_f + B_f); i = s(z W_i + B_i); c_bar = tanh(z W_c + B_c)
#   o = s(z W_o + B_o); c = f * c_prev + i * c_bar; h = o * tanh(c)

_LSTM_GATES = ("f", "i", "c", "o")


def _lstm_sizes(params: CellParams) -> tuple[int, int]:
    if not isinstance(params, dict) or "B_f" not in params or "W_f" not in params:
        raise ValueError(f"lstm_cell: expected params W_f, B_f, W_i, ..., got {_describe(params)}")
    hidden = _shape(params["B_f"])[-1] if _shape(params["B_f"]) else 0
    n_in = _shape(params["W_f"])[0] - hidden if _shape(params["W_f"]) else 0
    expected = {}
    for g in _LSTM_GATES:
        expected[f"W_{g}"] = (n_in + hidden, hidden)
        expected[f"B_{g}"] = (1, hidden)
    _check_params("lstm_cell", params, expected)
    if n_in <= 0:
        raise ValueError(f"lstm_cell: W_f{_shape(params['W_f'])} leaves no room for the input")
    return n_in, hidden


def _lstm_step(params: CellParams, x: Array, state: State) -> tuple[State, tuple]:
    """One LSTM step. Step cache: ``(z, c_prev, f, i, c_bar, o, tanh(c))``."""
    h_prev, c_prev = state
    z = jnp.concatenate([x, h_prev], axis=1)
    f = jax.nn.sigmoid(z @ params["W_f"] + params["B_f"])
    i = jax.nn.sigmoid(z @ params["W_i"] + params["B_i"])
    c_bar = jnp.tanh(z @ params["W_c"] + params["B_c"])
    o = jax.nn.sigmoid(z @ params["W_o"] + params["B_o"])
    c = f * c_prev + i * c_bar
    tc = jnp.tanh(c)
    h = o * tc
    return (h, c), (z, c_prev, f, i, c_bar, o, tc)


def _lstm_step_backward(params: CellParams, cache: tuple, dstate: State):
    z, c_prev, f, i, c_bar, o, tc = cache
    dh, dc_in = dstate
    do = dh * tc
    dc = dc_in + dh * o * (1.0 - tc * tc)  # through h = o * tanh(c)
    pre = {  # gradients of the four pre-activations
        "f": dc * c_prev * f * (1.0 - f),
        "i": dc * c_bar * i * (1.0 - i),
        "c": dc * i * (1.0 - c_bar * c_bar),
        "o": do * o * (1.0 - o),
    }
    dparams: CellParams = {}
    dz = jnp.zeros_like(z)
    for g in _LSTM_GATES:
        dparams[f"W_{g}"], dparams[f"B_{g}"] = _dgate(pre[g], z)
        dz = dz + pre[g] @ params[f"W_{g}"].T
    n_in = z.shape[1] - dh.shape[1]
    return dparams, dz[:, :n_in], (dz[:, n_in:], dc * f)


def _lstm_init(key: Array, n_in: int, hidden: int, dtype=None, scale=None) -> CellParams:
    keys = jax.random.split(key, 2 * len(_LSTM_GATES))
    fan = (n_in + hidden, hidden)
    params = {}
    for n, g in enumerate(_LSTM_GATES):
        params[f"W_{g}"] = _normal(keys[2 * n], fan, dtype, scale)
        params[f"B_{g}"] = _bias(keys[2 * n + 1], fan, hidden, dtype, scale)
    return params


LSTM = Cell("lstm", 2, _lstm_step, _lstm_step_backward, _lstm_sizes, _lstm_init)

# ---------------------------------------------------------------------------------------------
# GRU cell (the book's form)
#   r = s(x W_xr + h_prev W_hr + B_r); u = s(x W_xu + h_prev W_hu + B_u)
#   h_bar = tanh(x W_xh + (r * h_prev) W_hh + B_h); h = u * h_prev + (1 - u) * h_bar

_GRU_GATES = ("r", "u", "h")


def _gru_sizes(params: CellParams) -> tuple[int, int]:
    if not isinstance(params, dict) or "W_xr" not in params:
        raise ValueError(f"gru_cell: expected params W_xr, W_hr, B_r, ..., got {_describe(params)}")
    shape = _shape(params["W_xr"])
    n_in, hidden = (shape[0], shape[1]) if len(shape) == 2 else (0, 0)
    expected = {}
    for g in _GRU_GATES:
        expected[f"W_x{g}"] = (n_in, hidden)
        expected[f"W_h{g}"] = (hidden, hidden)
        expected[f"B_{g}"] = (1, hidden)
    _check_params("gru_cell", params, expected)
    return n_in, hidden


def _gru_step(params: CellParams, x: Array, state: State) -> tuple[State, tuple]:
    """One GRU step. Step cache: ``(x, h_prev, r, u, h_bar)``."""
    (h_prev,) = state
    r = jax.nn.sigmoid(x @ params["W_xr"] + h_prev @ params["W_hr"] + params["B_r"])
    u = jax.nn.sigmoid(x @ params["W_xu"] + h_prev @ params["W_hu"] + params["B_u"])
    h_bar = jnp.tanh(x @ params["W_xh"] + (r * h_prev) @ params["W_hh"] + params["B_h"])
    h = u * h_prev + (1.0 - u) * h_bar
    return (h,), (x, h_prev, r, u, h_bar)


def _gru_step_backward(params: CellParams, cache: tuple, dstate: State):
    x, h_prev, r, u, h_bar = cache
    (dh,) = dstate
    a_h = dh * (1.0 - u) * (1.0 - h_bar * h_bar)  # d(pre-activation of h_bar)
    a_u = dh * (h_prev - h_bar) * u * (1.0 - u)  # d(pre-activation of u)
    d_rh = a_h @ params["W_hh"].T  # d(r * h_prev)
    a_r = d_rh * h_prev * r * (1.0 - r)  # d(pre-activation of r)
    dW_xh, dB_h = _dgate(a_h, x)
    dW_xu, dB_u = _dgate(a_u, x)
    dW_xr, dB_r = _dgate(a_r, x)
    dparams = {
        "W_xr": dW_xr,
        "W_hr": h_prev.T @ a_r,
        "B_r": dB_r,
        "W_xu": dW_xu,
        "W_hu": h_prev.T @ a_u,
        "B_u": dB_u,
        "W_xh": dW_xh,
        "W_hh": (r * h_prev).T @ a_h,
        "B_h": dB_h,
    }
    dx = a_h @ params["W_xh"].T + a_u @ params["W_xu"].T + a_r @ params["W_xr"].T
    dh_prev = (
        dh * u  # the direct path h = u * h_prev + ...
        + d_rh * r  # through r * h_prev
        + a_u @ params["W_hu"].T
        + a_r @ params["W_hr"].T
    )
    return dparams, dx, (dh_prev,)


def _gru_init(key: Array, n_in: int, hidden: int, dtype=None, scale=None) -> CellParams:
    keys = jax.random.split(key, 3 * len(_GRU_GATES))
    params = {}
    for n, g in enumerate(_GRU_GATES):
        params[f"W_x{g}"] = _normal(keys[3 * n], (n_in, hidden), dtype, scale)
        params[f"W_h{g}"] = _normal(keys[3 * n + 1], (hidden, hidden), dtype, scale)
        params[f"B_{g}"] = _bias(keys[3 * n + 2], (n_in, hidden), hidden, dtype, scale)
    return params


GRU = Cell("gru", 1, _gru_step, _gru_step_backward, _gru_sizes, _gru_init)

CELLS: dict[str, Cell] = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


def get_cell(name_or_cell: str | Cell) -> Cell:
    """A cell by name (``"rnn"``, ``"lstm"``, ``"gru"``) or the :class:`Cell` itself."""
    if isinstance(name_or_cell, Cell):
        return name_or_cell
    if name_or_cell not in CELLS:
        raise ValueError(f"get_cell: unknown cell {name_or_cell!r}; allowed: {sorted(CELLS)}")
    return CELLS[name_or_cell]


# ---------------------------------------------------------------------------------------------
# cells as ops


def _split_input(fn: str, cell: Cell, inp: Any, what: str) -> tuple[Array, State]:
    if not isinstance(inp, tuple | list) or len(inp) != 1 + cell.n_state:
        names = "(x, h0, c0)" if cell.n_state == 2 else "(x, h0)"
        if what == "x_t":
            names = "(x_t, h_prev, c_prev)" if cell.n_state == 2 else "(x_t, h_prev)"
        raise ValueError(f"{fn}: expected the input tuple {names}, got {type(inp).__name__}")
    return inp[0], tuple(inp[1:])


@functools.partial(jax.jit, static_argnums=0)
def _jit_step(cell: Cell, params: CellParams, x: Array, state: State) -> tuple[State, Any]:
    return cell.step(params, x, state)


@functools.partial(jax.jit, static_argnums=0)
def _jit_step_backward(cell: Cell, params: CellParams, cache: Any, dstate: State):
    return cell.step_backward(params, cache, dstate)


def cell_op(cell: Cell, name: str | None = None) -> Op:
    """One time step of ``cell`` as an op (see the module docstring for the contract).

    forward(params, (x_t, h_prev[, c_prev])): x_t (batch, n_in), states (batch, hidden) ->
    ``h`` (RNN, GRU) or ``(h, c)`` (LSTM). Cache: ``(params, step cache)``. The step functions
    run jitted (compiled once per cell and shapes).
    """
    label = name or f"{cell.name}_cell"

    def forward(params: CellParams, inp: Any) -> tuple[Any, tuple]:
        x, state = _split_input(label, cell, inp, "x_t")
        if x.ndim != 2:
            raise ValueError(f"{label}: expected x_t of shape (batch, n_in), got {_shape(x)}")
        _check_step_inputs(label, cell, params, x.shape, state, "x_t")
        new, step_cache = _jit_step(cell, params, x, tuple(state))
        out = new[0] if cell.n_state == 1 else tuple(new)
        return out, (params, step_cache)

    def backward(cache: tuple, dout: Any) -> tuple[CellParams, tuple]:
        params, step_cache = cache
        dstate = (dout,) if cell.n_state == 1 else tuple(dout)
        dparams, dx, dprev = _jit_step_backward(cell, params, step_cache, dstate)
        return dparams, (dx, *dprev)

    return Op(label, forward, backward)


# ---------------------------------------------------------------------------------------------
# a cell over time: lax.scan forward, reverse lax.scan backward (BPTT)


def _tree_add(a: Any, b: Any) -> Any:
    return jax.tree.map(jnp.add, a, b)


@functools.partial(jax.jit, static_argnums=0)
def _scan_forward(cell: Cell, params: CellParams, x: Array, state0: State) -> tuple[Array, Any]:
    """hs (batch, T, hidden) and the stacked step caches. Jitted (cached per cell and shapes)."""

    def body(state, x_t):
        new, step_cache = cell.step(params, x_t, state)
        return new, (new[0], step_cache)

    _, (hs, caches) = jax.lax.scan(body, tuple(state0), jnp.swapaxes(x, 0, 1))
    return jnp.swapaxes(hs, 0, 1), caches


@functools.partial(jax.jit, static_argnums=0)
def _scan_backward(cell: Cell, params: CellParams, caches: Any, dhs: Array):
    """BPTT: (dparams, dx (batch, T, n_in), dstate0 tuple). Jitted (cached per cell and shapes)."""
    dhs_t = jnp.swapaxes(dhs, 0, 1)  # (T, batch, hidden)
    zero_state = tuple(jnp.zeros_like(dhs_t[0]) for _ in range(cell.n_state))
    zero_params = jax.tree.map(jnp.zeros_like, params)

    def body(carry, inp):
        dstate, dparams = carry
        dh_out, step_cache = inp
        # the gradient reaching h_t: from its own output plus from step t+1 (in dstate)
        dstate = (dstate[0] + dh_out, *dstate[1:])
        dp, dx_t, dprev = cell.step_backward(params, step_cache, dstate)
        return (tuple(dprev), _tree_add(dparams, dp)), dx_t

    (dstate0, dparams), dxs = jax.lax.scan(
        body, (zero_state, zero_params), (dhs_t, caches), reverse=True
    )
    return dparams, jnp.swapaxes(dxs, 0, 1), dstate0


def sequence(cell: Cell, name: str | None = None) -> Op:
    """``cell`` run over time. forward(params, (x, h0[, c0])) -> (hs, cache).

    x: (batch, T, n_in); h0, c0: (batch, hidden); hs: (batch, T, hidden), ``hs[:, t]`` the state
    ``h`` after step t. Forward is a ``lax.scan`` over the time axis. Cache: ``(params, step
    caches)``, each step-cache array stacked with a leading axis T. Backward (BPTT) is a reverse
    ``lax.scan``: carry = (gradient into the state after step t, summed parameter gradients);
    returns ``(dparams, (dx, dh0[, dc0]))``. Both scans are jitted functions (compiled once per
    cell and shapes, so eager calls, e.g. the oracle's finite differences, do not recompile).
    """
    label = name or f"sequence[{cell.name}]"

    def forward(params: CellParams, inp: Any) -> tuple[Array, tuple]:
        x, state0 = _split_input(label, cell, inp, "x")
        if x.ndim != 3 or x.shape[1] == 0:
            raise ValueError(f"{label}: expected x of shape (batch, T >= 1, n_in), got {_shape(x)}")
        _check_step_inputs(label, cell, params, x.shape, state0, "x")
        hs, caches = _scan_forward(cell, params, x, tuple(state0))
        return hs, (params, caches)

    def backward(cache: tuple, dhs: Array) -> tuple[CellParams, tuple]:
        params, caches = cache
        dparams, dx, dstate0 = _scan_backward(cell, params, caches, dhs)
        return dparams, (dx, *dstate0)

    return Op(label, forward, backward)


# ---------------------------------------------------------------------------------------------
# sequence layers: learned initial state, the sequence op, a per-step output projection


def recurrent_layer(
    cell: str | Cell,
    hidden: int,
    out: int,
    *,
    weight_scale: float | None = None,
    dtype=None,
    name: str | None = None,
) -> Op:
    """The book's recurrent layer: x (batch, T, n_in) -> y (batch, T, out).

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
    for what, v in (("hidden", hidden), ("out", out)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{c.name}_layer: {what} must be a positive integer, got {v!r}")
    if weight_scale is not None and not (float(weight_scale) > 0):
        raise ValueError(f"{c.name}_layer: weight_scale must be positive, got {weight_scale!r}")
    label = name or f"{c.name}_layer[{hidden},{out}]"
    seq = sequence(c)
    state_names = ("start_H", "start_C")[: c.n_state]
    extra = {"W_v", "B_v", *state_names}

    def split(params: Any) -> tuple[CellParams, Array, Array, State]:
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

    def forward(params: dict[str, Array], x: Array) -> tuple[Array, tuple]:
        cell_params, W_v, B_v, starts = split(params)
        if x.ndim != 3:
            raise ValueError(f"{label}: expected x of shape (batch, T, n_in), got {_shape(x)}")
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
# registry: cells, sequence ops, layers and a stack, each with an oracle example
#   (batch 3, n_in 4 != hidden 5, T 6, non-zero initial states, float64)

_BATCH, _N_IN, _HIDDEN, _T, _OUT = 3, 4, 5, 6, 3


def _cell_example(cell: Cell):
    def example(key: Array):
        kp, kx, ks = jax.random.split(key, 3)
        params = cell.init(kp, _N_IN, _HIDDEN, jnp.float64, 0.5)
        x = jax.random.normal(kx, (_BATCH, _N_IN), jnp.float64)
        keys = jax.random.split(ks, cell.n_state)
        states = [jax.random.normal(k, (_BATCH, _HIDDEN), jnp.float64) for k in keys]
        return params, (x, *states)

    return example


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
    def example(key: Array):
        kp, kx, ks = jax.random.split(key, 3)
        _, params = op.init(kp, (_T, _N_IN))
        params = _nonzero_starts(params, ks)
        x = jax.random.normal(kx, (_BATCH, _T, _N_IN), jnp.float64)
        return params, x

    return example


rnn_cell = register(cell_op(RNN), _cell_example(RNN))
lstm_cell = register(cell_op(LSTM), _cell_example(LSTM))
gru_cell = register(cell_op(GRU), _cell_example(GRU))

rnn_sequence = register(sequence(RNN), _sequence_example(RNN))
lstm_sequence = register(sequence(LSTM), _sequence_example(LSTM))
gru_sequence = register(sequence(GRU), _sequence_example(GRU))

for _c in (RNN, LSTM, GRU):
    _layer = recurrent_layer(_c, _HIDDEN, _OUT, weight_scale=0.5, dtype=jnp.float64)
    register(_layer, _layer_example(_layer), name=f"{_c.name}_layer")

_stack = serial(  # GRU -> LSTM as in the chapter; shapes shared with the examples above
    gru_layer(_HIDDEN, _N_IN, weight_scale=0.5, dtype=jnp.float64),
    lstm_layer(_HIDDEN, _OUT, weight_scale=0.5, dtype=jnp.float64),
    name="stack[gru_layer,lstm_layer]",
)
register(_stack, _layer_example(_stack))
