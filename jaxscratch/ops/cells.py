"""Recurrent cells (chapter 6): one time step of an RNN, an LSTM or a GRU, with hand-derived
backward passes. :mod:`jaxscratch.ops.rnn` runs them over time.

A :class:`Cell` is a set of pure functions; :func:`cell_op` makes one step an
:class:`~jaxscratch.core.Op`::

    forward(params, (x_t, h_prev[, c_prev])) -> (h | (h, c), cache)
    backward(cache, dh | (dh, dc))           -> (dparams, (dx_t, dh_prev[, dc_prev]))

x_t: (batch, n_in); h, c: (batch, hidden). The output is the new state: ``h`` for RNN and GRU,
``(h, c)`` for LSTM. Cache: ``(fused weights, x_t, h_prev, recurrent step cache)``.

Parameters keep the book's names. RNN: ``W_f`` (n_in + hidden, hidden), ``B_f`` (1, hidden) acting
on ``[x, h]``. LSTM: ``W_f, W_i, W_c, W_o`` (n_in + hidden, hidden) and ``B_f, B_i, B_c, B_o`` (1,
hidden). GRU: ``W_xr, W_xu, W_xh`` (n_in, hidden), ``W_hr, W_hu, W_hh`` (hidden, hidden), ``B_r,
B_u, B_h`` (1, hidden); each gate uses *its own* weights (the book's GRU computed the update gate
from the reset gate's weights; the oracle catches that, see tests/test_rnn.py).

Computation (the same function as the book's, split so a sequence runs fast): every cell's
pre-activations are ``x @ W_x + B`` (the *input projection*, one product for all gates, and over
a whole sequence one product for all steps) plus a recurrent part from ``h_prev``. ``fuse``
builds, inside the compiled program, ``W_x`` (n_in, G * hidden), ``W_h`` and ``B`` (1, G *
hidden) from the book's per-gate matrices (G gates; ``[x, h] @ W = x @ W[:n_in] + h @
W[n_in:]``); ``unfuse`` maps gradients of the fused matrices back to the book's names. The
recurrent step works on the projected input ``xp_t``; its backward returns the gradient of
``xp_t`` (the pre-activations), from which ``dW_x = x^T dxp``, ``dB = sum dxp`` and ``dx = dxp
W_x^T`` follow (over a sequence: one product each, after the reverse scan), and ``recur_wgrad``
gives ``dW_h`` from the previous states and those gradients.
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
Fused = tuple[Array, Any, Array]  # (W_x (n_in, G*hidden), W_h (a pytree), B (1, G*hidden))


class Cell(NamedTuple):
    """One recurrent cell as pure functions (used by :func:`cell_op` and the sequence ops).

    * ``fuse(params) -> (W_x, W_h, B)``; ``unfuse(dW_x, dW_h, dB) -> dparams`` (book names);
    * ``recur(W_h, xp_t, state) -> (new_state, step_cache)``, ``xp_t = x_t @ W_x + B`` (batch, G *
      hidden); ``state`` a tuple of ``n_state`` arrays (batch, hidden): ``(h,)`` or ``(h, c)``;
    * ``recur_backward(W_h, h_prev, step_cache, dstate) -> (dxp_t, dstate_prev)``;
    * ``recur_wgrad(h_prev, step_cache, dxp) -> dW_h``, any leading axes (one step, or the T
      steps of a sequence stacked) summed over;
    * ``sizes(params) -> (n_in, hidden)`` validates the parameter shapes; ``init(key, n_in,
      hidden, dtype, scale) -> params`` (``scale=None``: Glorot per matrix).

    Weights stay out of the step cache, so a scan does not stack T copies of them.
    """

    name: str
    n_state: int
    fuse: Callable[[CellParams], Fused]
    unfuse: Callable[[Array, Any, Array], CellParams]
    recur: Callable[[Any, Array, State], tuple[State, Any]]
    recur_backward: Callable[[Any, Array, Any, State], tuple[Array, State]]
    recur_wgrad: Callable[[Array, Any, Array], Any]
    sizes: Callable[[CellParams], tuple[int, int]]
    init: Callable[..., CellParams]

    def step(self, params: CellParams, x: Array, state: State) -> tuple[State, tuple]:
        """One step on x (batch, n_in): (new state, cache ``(fused, x, h_prev, step cache)``)."""
        fused = self.fuse(params)
        W_x, W_h, B = fused
        new, step_cache = self.recur(W_h, x @ W_x + B, state)
        return new, (fused, x, state[0], step_cache)

    def step_backward(self, cache: tuple, dstate: State) -> tuple[CellParams, Array, State]:
        """(dparams, dx (batch, n_in), dstate_prev) of one :meth:`step`."""
        (W_x, W_h, _), x, h_prev, step_cache = cache
        dxp, dprev = self.recur_backward(W_h, h_prev, step_cache, dstate)
        dW_h = self.recur_wgrad(h_prev, step_cache, dxp)
        dW_x, dB = _dgate(dxp, x)
        return self.unfuse(dW_x, dW_h, dB), dxp @ W_x.T, dprev


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
    """(dW, dB) of ``inputs @ W + B`` given the gradient ``pre_grad`` of its result; leading
    axes of both (time, batch) are summed over."""
    k, n = inputs.shape[-1], pre_grad.shape[-1]
    flat = pre_grad.reshape(-1, n)
    return inputs.reshape(-1, k).T @ flat, jnp.sum(flat, axis=0, keepdims=True)


def _rows(a: Array) -> Array:
    """``a`` (..., k) as a matrix (rows, k)."""
    return a.reshape(-1, a.shape[-1])


def _stacked_sizes(fn: str, params: Any, gates: tuple[str, ...]) -> tuple[int, int]:
    """(n_in, hidden) of a cell whose gates ``W_g`` (n_in + hidden, hidden) act on ``[x, h]``."""
    if not isinstance(params, dict) or "W_f" not in params or "B_f" not in params:
        names = ", ".join(f"W_{g}, B_{g}" for g in gates)
        raise ValueError(f"{fn}: expected params {names}, got {_describe(params)}")
    hidden = _shape(params["B_f"])[-1] if _shape(params["B_f"]) else 0
    n_in = _shape(params["W_f"])[0] - hidden if _shape(params["W_f"]) else 0
    expected = {}
    for g in gates:
        expected[f"W_{g}"] = (n_in + hidden, hidden)
        expected[f"B_{g}"] = (1, hidden)
    _check_params(fn, params, expected)
    if n_in <= 0:
        raise ValueError(f"{fn}: W_f{_shape(params['W_f'])} leaves no room for the input")
    return n_in, hidden


def _fuse_stacked(params: CellParams, gates: tuple[str, ...]) -> Fused:
    """(W_x, W_h, B) with the gates' columns side by side, in the order ``gates``."""
    hidden = params["B_f"].shape[-1]
    n_in = params["W_f"].shape[0] - hidden
    W = jnp.concatenate([params[f"W_{g}"] for g in gates], axis=1)
    B = jnp.concatenate([params[f"B_{g}"] for g in gates], axis=1)
    return W[:n_in], W[n_in:], B


def _unfuse_stacked(dW_x: Array, dW_h: Array, dB: Array, gates: tuple[str, ...]) -> CellParams:
    hidden = dW_h.shape[0]
    dW = jnp.concatenate([dW_x, dW_h], axis=0)
    out: CellParams = {}
    for n, g in enumerate(gates):
        cols = slice(n * hidden, (n + 1) * hidden)
        out[f"W_{g}"], out[f"B_{g}"] = dW[:, cols], dB[:, cols]
    return out


def _stacked_wgrad(h_prev: Array, step_cache: Any, dxp: Array) -> Array:
    """dW_h of ``h_prev @ W_h`` (every gate), summed over the leading axes."""
    return _rows(h_prev).T @ _rows(dxp)


def _stacked_init(key: Array, n_in: int, hidden: int, dtype, scale, gates) -> CellParams:
    keys = jax.random.split(key, 2 * len(gates))
    fan = (n_in + hidden, hidden)
    params = {}
    for n, g in enumerate(gates):
        params[f"W_{g}"] = _normal(keys[2 * n], fan, dtype, scale)
        params[f"B_{g}"] = _bias(keys[2 * n + 1], fan, hidden, dtype, scale)
    return params


# ---------------------------------------------------------------------------------------------
# RNN cell: h = tanh([x, h_prev] @ W_f + B_f) = tanh(xp + h_prev @ W_h)

_RNN_GATES = ("f",)


def _rnn_recur(W_h: Array, xp: Array, state: State) -> tuple[State, tuple[Array]]:
    """Step cache: ``(h,)``."""
    (h_prev,) = state
    h = jnp.tanh(xp + h_prev @ W_h)
    return (h,), (h,)


def _rnn_recur_backward(W_h: Array, h_prev: Array, cache: tuple, dstate: State):
    (h,) = cache
    (dh,) = dstate
    da = dh * (1.0 - h * h)  # tanh' = 1 - tanh^2
    return da, (da @ W_h.T,)


RNN = Cell(
    "rnn",
    1,
    functools.partial(_fuse_stacked, gates=_RNN_GATES),
    functools.partial(_unfuse_stacked, gates=_RNN_GATES),
    _rnn_recur,
    _rnn_recur_backward,
    _stacked_wgrad,
    functools.partial(_stacked_sizes, "rnn_cell", gates=_RNN_GATES),
    functools.partial(_stacked_init, gates=_RNN_GATES),
)

# ---------------------------------------------------------------------------------------------
# LSTM cell
#   z = [x, h_prev]; f = s(z W_f + B_f); i = s(z W_i + B_i); c_bar = tanh(z W_c + B_c)
#   o = s(z W_o + B_o); c = f * c_prev + i * c_bar; h = o * tanh(c)
# fused column order (f, i, o, c): the three sigmoid gates side by side, then the tanh one

_LSTM_GATES = ("f", "i", "c", "o")
_LSTM_FUSED = ("f", "i", "o", "c")


def _lstm_recur(W_h: Array, xp: Array, state: State) -> tuple[State, tuple]:
    """Step cache: ``(c_prev, [f, i, o] (batch, 3 hidden), c_bar, tanh(c))``."""
    h_prev, c_prev = state
    n = h_prev.shape[-1]
    pre = xp + h_prev @ W_h
    sig = jax.nn.sigmoid(pre[:, : 3 * n])
    c_bar = jnp.tanh(pre[:, 3 * n :])
    f, i, o = sig[:, :n], sig[:, n : 2 * n], sig[:, 2 * n :]
    c = f * c_prev + i * c_bar
    tc = jnp.tanh(c)
    return (o * tc, c), (c_prev, sig, c_bar, tc)


def _lstm_recur_backward(W_h: Array, h_prev: Array, cache: tuple, dstate: State):
    c_prev, sig, c_bar, tc = cache
    dh, dc_in = dstate
    n = dh.shape[-1]
    f, i, o = sig[:, :n], sig[:, n : 2 * n], sig[:, 2 * n :]
    dc = dc_in + dh * o * (1.0 - tc * tc)  # through h = o * tanh(c)
    dsig = jnp.concatenate([dc * c_prev, dc * c_bar, dh * tc], axis=1) * sig * (1.0 - sig)
    dxp = jnp.concatenate([dsig, dc * i * (1.0 - c_bar * c_bar)], axis=1)
    return dxp, (dxp @ W_h.T, dc * f)


LSTM = Cell(
    "lstm",
    2,
    functools.partial(_fuse_stacked, gates=_LSTM_FUSED),
    functools.partial(_unfuse_stacked, gates=_LSTM_FUSED),
    _lstm_recur,
    _lstm_recur_backward,
    _stacked_wgrad,
    functools.partial(_stacked_sizes, "lstm_cell", gates=_LSTM_GATES),
    functools.partial(_stacked_init, gates=_LSTM_GATES),
)

# ---------------------------------------------------------------------------------------------
# GRU cell (the book's form)
#   r = s(x W_xr + h_prev W_hr + B_r); u = s(x W_xu + h_prev W_hu + B_u)
#   h_bar = tanh(x W_xh + (r * h_prev) W_hh + B_h); h = u * h_prev + (1 - u) * h_bar
# fused: W_x = [W_xr, W_xu, W_xh], W_h = ([W_hr, W_hu], W_hh), B = [B_r, B_u, B_h]

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


def _gru_fuse(params: CellParams) -> Fused:
    W_x = jnp.concatenate([params[f"W_x{g}"] for g in _GRU_GATES], axis=1)
    B = jnp.concatenate([params[f"B_{g}"] for g in _GRU_GATES], axis=1)
    return W_x, (jnp.concatenate([params["W_hr"], params["W_hu"]], axis=1), params["W_hh"]), B


def _gru_unfuse(dW_x: Array, dW_h: tuple[Array, Array], dB: Array) -> CellParams:
    d_ru, d_hh = dW_h
    n = d_hh.shape[0]
    out = {"W_hr": d_ru[:, :n], "W_hu": d_ru[:, n:], "W_hh": d_hh}
    for k, g in enumerate(_GRU_GATES):
        out[f"W_x{g}"], out[f"B_{g}"] = dW_x[:, k * n : (k + 1) * n], dB[:, k * n : (k + 1) * n]
    return out


def _gru_recur(W_h: tuple[Array, Array], xp: Array, state: State) -> tuple[State, tuple]:
    """Step cache: ``([r, u] (batch, 2 hidden), h_bar)``."""
    W_ru, W_hh = W_h
    (h_prev,) = state
    n = h_prev.shape[-1]
    ru = jax.nn.sigmoid(xp[:, : 2 * n] + h_prev @ W_ru)
    r, u = ru[:, :n], ru[:, n:]
    h_bar = jnp.tanh(xp[:, 2 * n :] + (r * h_prev) @ W_hh)
    return (u * h_prev + (1.0 - u) * h_bar,), (ru, h_bar)


def _gru_recur_backward(W_h: tuple[Array, Array], h_prev: Array, cache: tuple, dstate: State):
    W_ru, W_hh = W_h
    ru, h_bar = cache
    (dh,) = dstate
    n = dh.shape[-1]
    r, u = ru[:, :n], ru[:, n:]
    a_h = dh * (1.0 - u) * (1.0 - h_bar * h_bar)  # d(pre-activation of h_bar)
    d_rh = a_h @ W_hh.T  # d(r * h_prev)
    # d(pre-activations of r and u)
    a_ru = jnp.concatenate([d_rh * h_prev, dh * (h_prev - h_bar)], axis=1) * ru * (1.0 - ru)
    dh_prev = dh * u + d_rh * r + a_ru @ W_ru.T  # direct path, through r * h_prev, the gates
    return jnp.concatenate([a_ru, a_h], axis=1), (dh_prev,)


def _gru_wgrad(h_prev: Array, cache: tuple, dxp: Array) -> tuple[Array, Array]:
    ru, _ = cache
    n = h_prev.shape[-1]
    hp, dxp = _rows(h_prev), _rows(dxp)
    return hp.T @ dxp[:, : 2 * n], (_rows(ru[..., :n]) * hp).T @ dxp[:, 2 * n :]


def _gru_init(key: Array, n_in: int, hidden: int, dtype=None, scale=None) -> CellParams:
    keys = jax.random.split(key, 3 * len(_GRU_GATES))
    params = {}
    for n, g in enumerate(_GRU_GATES):
        params[f"W_x{g}"] = _normal(keys[3 * n], (n_in, hidden), dtype, scale)
        params[f"W_h{g}"] = _normal(keys[3 * n + 1], (hidden, hidden), dtype, scale)
        params[f"B_{g}"] = _bias(keys[3 * n + 2], (n_in, hidden), hidden, dtype, scale)
    return params


GRU = Cell(
    "gru",
    1,
    _gru_fuse,
    _gru_unfuse,
    _gru_recur,
    _gru_recur_backward,
    _gru_wgrad,
    _gru_sizes,
    _gru_init,
)

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
def _jit_step_backward(cell: Cell, cache: Any, dstate: State):
    return cell.step_backward(cache, dstate)


def cell_op(cell: Cell, name: str | None = None) -> Op:
    """One time step of ``cell`` as an op (see the module docstring for the contract).

    forward(params, (x_t, h_prev[, c_prev])): x_t (batch, n_in), states (batch, hidden) ->
    ``h`` (RNN, GRU) or ``(h, c)`` (LSTM). Cache: :meth:`Cell.step`'s, ``(fused weights, x_t,
    h_prev, step cache)``. The step functions run jitted (compiled once per cell and shapes).
    """
    label = name or f"{cell.name}_cell"

    def forward(params: CellParams, inp: Any) -> tuple[Any, tuple]:
        x, state = _split_input(label, cell, inp, "x_t")
        if x.ndim != 2:
            raise ValueError(f"{label}: expected x_t of shape (batch, n_in), got {_shape(x)}")
        _check_step_inputs(label, cell, params, x.shape, state, "x_t")
        new, step_cache = _jit_step(cell, params, x, tuple(state))
        out = new[0] if cell.n_state == 1 else tuple(new)
        return out, step_cache

    def backward(cache: tuple, dout: Any) -> tuple[CellParams, tuple]:
        dstate = (dout,) if cell.n_state == 1 else tuple(dout)
        dparams, dx, dprev = _jit_step_backward(cell, cache, dstate)
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
