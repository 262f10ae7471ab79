"""Recurrent cells (chapter 6): one time step of an RNN, an LSTM or a GRU, with hand-derived
backward passes. :mod:`jaxscratch.ops.rnn` runs them over time.

A :class:`Cell` is a pair of pure step functions; :func:`cell_op` makes it an
:class:`~jaxscratch.core.Op`::

    forward(params, (x_t, h_prev[, c_prev])) -> (h | (h, c), cache)
    backward(cache, dh | (dh, dc))           -> (dparams, (dx_t, dh_prev[, dc_prev]))

x_t: (batch, n_in); h, c: (batch, hidden). The output is the new state: ``h`` for RNN and GRU,
``(h, c)`` for LSTM. Cache: ``(params, step cache)`` (each cell's step cache is in its docstring).

Parameters keep the book's names. RNN: ``W_f`` (n_in + hidden, hidden), ``B_f`` (1, hidden) acting
on ``[x, h]``. LSTM: ``W_f, W_i, W_c, W_o`` (n_in + hidden, hidden) and ``B_f, B_i, B_c, B_o`` (1,
hidden). GRU: ``W_xr, W_xu, W_xh`` (n_in, hidden), ``W_hr, W_hu, W_hh`` (hidden, hidden), ``B_r,
B_u, B_h`` (1, hidden); each gate uses *its own* weights (the book's GRU computed the update gate
from the reset gate's weights; the oracle catches that, see tests/test_rnn.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxscratch.core import Array, Op, register
from jaxscratch.ops import init as initializers

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
# registry: the three cells, each with an oracle example
#   (batch 3, n_in 4 != hidden 5, non-zero states, float64; shared with jaxscratch.ops.rnn)

_BATCH, _N_IN, _HIDDEN = 3, 4, 5


def _cell_example(cell: Cell):
    def example(key: Array):
        kp, kx, ks = jax.random.split(key, 3)
        params = cell.init(kp, _N_IN, _HIDDEN, jnp.float64, 0.5)
        x = jax.random.normal(kx, (_BATCH, _N_IN), jnp.float64)
        keys = jax.random.split(ks, cell.n_state)
        states = [jax.random.normal(k, (_BATCH, _HIDDEN), jnp.float64) for k in keys]
        return params, (x, *states)

    return example


rnn_cell = register(cell_op(RNN), _cell_example(RNN))
lstm_cell = register(cell_op(LSTM), _cell_example(LSTM))
gru_cell = register(cell_op(GRU), _cell_example(GRU))
