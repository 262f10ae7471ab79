"""Convolution (the book's chapter 5): ``conv2d`` and the book's ``conv_layer``.

Every op follows the contract of :mod:`jaxscratch.core` (``forward(params, x) -> (y, cache)``,
``backward(cache, dy) -> (dparams, dx)``); the backward passes are derived by hand below and proven
against ``jax.vjp`` and finite differences by :mod:`jaxscratch.oracle.check`.

Layouts. Images are **NCHW**: ``x`` is ``(batch, C_in, H, W)``. Kernels are **OIHW**:
``W`` is ``(C_out, C_in, kh, kw)`` (square ``k x k`` in the book; ``(kh, kw)`` is allowed, e.g.
``(1, 3)`` for the book's 1-D example). The optional bias ``B`` is ``(1, C_out, 1, 1)``, so it
broadcasts against ``(batch, C_out, H_out, W_out)`` without rank promotion, as the dense layers'
``(1, n)`` bias does against ``(batch, n)``.

Geometry (per spatial axis, input size ``n``, kernel ``k``, stride ``s``):

* ``padding="valid"`` (or ``0``): no padding, ``n_out = (n - k) // s + 1``.
* ``padding=p`` (int >= 0): ``p`` zeros on both sides, ``n_out = (n + 2p - k) // s + 1``.
* ``padding="same"``: ``n_out = ceil(n / s)`` and ``total = max((n_out - 1) s + k - n, 0)`` zeros,
  ``total // 2`` before and the rest after, so an **even** kernel gets the extra row/column at the
  **bottom/right** (the TF/XLA "SAME" convention). For stride 1 that is ``(k - 1) // 2`` on the
  top/left and ``k // 2`` on the bottom/right.

Rows of the padded input that no window reaches (when ``(n + pads - k) % s != 0``) are dropped, as
every framework does; their gradient is zero.

The forward pass is a cross-correlation (as in the book and every framework):
``y[n,o,h,w] = sum_{c,i,j} xp[n, c, s h + i, s w + j] W[o, c, i, j] (+ B[0, o, 0, 0])``,
with ``xp`` the padded input. Its gradients, by the chain rule:

* ``dW[o,c,i,j] = sum_{n,h,w} dy[n,o,h,w] xp[n, c, s h + i, s w + j]``: the correlation of the
  input with ``dy``, **summed over the batch** (each sample's input meets its own ``dy``);
* ``dxp[n,c,a,b] = sum_{o,i,j,h,w: s h + i = a, s w + j = b} dy[n,o,h,w] W[o,c,i,j]``: with
  ``dyd`` = ``dy`` dilated by ``s - 1`` zeros between entries and padded by ``k - 1`` on each side,
  ``dxp = correlate(dyd, W')`` where ``W'[c,o,i,j] = W[o,c,k-1-i,k-1-j]`` is the kernel **flipped
  in space and transposed in channels**; the padding rows are then cropped (done in one
  ``lax.pad`` with negative low/high padding);
* ``dB[0,o,0,0] = sum_{n,h,w} dy[n,o,h,w]``.

Three formulations compute these sums (``method``, bound when the op is built; all proven by the
oracle, all jit/scan compatible):

* ``"im2col"`` (default): the forward pass stacks the strided slices each kernel tap sees into
  patches ``P[n, c, t, h, w]`` (cached) and contracts them with ``W`` in one matrix product; the
  kernel gradient is one product of ``dy`` with the cached patches; the input gradient is the
  flipped-kernel correlation above, computed as shifted multiply-adds (below).
* ``"taps"``: shifted multiply-adds everywhere: per tap ``(i, j)``, contract the channels of the
  slice it sees and add up (forward and kernel gradient per tap). For the input gradient, when
  ``C_in <= C_out`` the channels of the whole dilated ``dy`` are contracted with every flipped tap
  at once and the shifted slices summed (per-tap products with one output channel are very slow
  on CPU).
* ``"xla"``: ``jax.lax.conv_general_dilated`` for the forward pass and for both backward
  convolutions (the dilated ``dy`` with the flipped, transposed kernel; the input with ``dy`` as
  the kernel, batch as the contracted axis). Inside ``lax.scan`` XLA compiles the backward
  convolutions badly on CPU (the book's layer, batch 60: 15-34 ms per batch in a scan against
  3-4 ms jitted per step, and 3x im2col's full training step), hence not the default.

The formulations live in :mod:`jaxscratch.ops.conv_methods` (one forward and one backward function
each); ``flatten`` and ``max_pool2d`` in :mod:`jaxscratch.ops.pool` (re-exported here).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from jaxscratch.core import Array, Op, Shape, register, serial
from jaxscratch.ops import init as initializers
from jaxscratch.ops.activations import get_activation
from jaxscratch.ops.conv_methods import BACKWARD, FORWARD, Padding, conv_axis, conv_geometry
from jaxscratch.ops.dropout import dropout as make_dropout
from jaxscratch.ops.pool import flatten, make_max_pool2d, max_pool2d
from jaxscratch.validate import check_choice, check_int, check_positive_int, check_probability

METHODS = tuple(FORWARD)
DEFAULT_METHOD = "im2col"
_FLATTEN = flatten  # conv_layer's ``flatten`` argument shadows the name


# ------------------------------------------------------------------------------------------------
# Arguments
# ------------------------------------------------------------------------------------------------


def _check_padding(fn: str, padding: Padding) -> Padding:
    if isinstance(padding, str):
        return check_choice(fn, "padding", padding, ("same", "valid"))
    return check_int(fn, "padding", padding, minimum=0)


def _kernel_hw(fn: str, kernel: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(kernel, tuple | list):
        if len(kernel) != 2:
            raise ValueError(f"{fn}: kernel must be an int or a pair (kh, kw), got {kernel!r}")
        return (
            check_positive_int(fn, "kernel height", kernel[0]),
            check_positive_int(fn, "kernel width", kernel[1]),
        )
    k = check_positive_int(fn, "kernel", kernel)
    return k, k


def _check_conv_inputs(
    name: str, params: dict[str, Array], x: Array, kh: int, kw: int, bias: bool
) -> None:
    """Shape checks of conv2d's params ``{"W"[, "B"]}`` against x (N, C_in, H, W)."""
    if not isinstance(params, dict) or "W" not in params:
        raise ValueError(f"{name}: params must be a dict with 'W'" + (" and 'B'" if bias else ""))
    Wt = params["W"]
    if Wt.ndim != 4 or Wt.shape[2:] != (kh, kw):
        raise ValueError(
            f"{name}: W must have shape (C_out, C_in, {kh}, {kw}), got {tuple(Wt.shape)}"
        )
    if x.ndim != 4 or x.shape[1] != Wt.shape[1]:
        raise ValueError(
            f"{name}: x{tuple(x.shape)} does not fit W{tuple(Wt.shape)}; expected x of shape "
            f"(batch, {Wt.shape[1]}, H, W) (NCHW)"
        )
    if bias:
        if "B" not in params or params["B"].shape != (1, Wt.shape[0], 1, 1):
            got = tuple(params["B"].shape) if "B" in params else "missing"
            raise ValueError(f"{name}: B must have shape (1, {Wt.shape[0]}, 1, 1), got {got}")
    elif "B" in params:
        raise ValueError(f"{name}: built with bias=False but params hold 'B'")


# ------------------------------------------------------------------------------------------------
# conv2d
# ------------------------------------------------------------------------------------------------


class ConvCache(NamedTuple):
    """What ``conv2d``'s forward keeps: the input ``x`` (N, C_in, H, W), the kernel ``W``
    (C_out, C_in, kh, kw), and ``cols``: the padded input (N, C_in, Hp, Wp) for ``"taps"``, the
    im2col patches (N, C_in, kh kw, H_out, W_out) for ``"im2col"``, ``None`` for ``"xla"``."""

    x: Array
    W: Array
    cols: Array | None


def _conv_name(kh: int, kw: int, stride: int, padding: Padding, bias: bool, method: str) -> str:
    k = str(kh) if kh == kw else f"{kh}x{kw}"
    pad = padding if isinstance(padding, str) else f"pad{padding}"
    parts = [f"k{k}", f"s{stride}", pad] + (["bias"] if bias else [])
    if method != DEFAULT_METHOD:
        parts.append(method)
    return "conv2d[" + ",".join(parts) + "]"


def _conv_init(
    name: str,
    conv: tuple[int, int, int, int, Padding, bool],
    init: str,
    dtype: DTypeLike | None,
    key: jax.Array,
    in_shape: Shape,
) -> tuple[Shape, dict[str, Array]]:
    """conv2d's init: per-row input (C, H, W) -> ((C_out, H_out, W_out), {"W"[, "B"]}).

    ``conv`` is ``(out_channels, kh, kw, stride, padding, bias)``; the bias starts at zero."""
    out_channels, kh, kw, stride, padding, bias = conv
    if len(in_shape) != 3:
        raise ValueError(
            f"{name}: expects inputs of shape (batch, C, H, W), got per-row {in_shape}"
        )
    C, H, Wd = in_shape
    geo = conv_geometry(H, Wd, kh, kw, stride, padding)
    params = {"W": initializers.initialize(init, key, (out_channels, C, kh, kw), dtype)}
    if bias:
        params["B"] = jnp.zeros((1, out_channels, 1, 1), params["W"].dtype)
    return (out_channels, geo.Ho, geo.Wo), params


def conv2d(
    out_channels: int,
    kernel: int | tuple[int, int],
    *,
    stride: int = 1,
    padding: Padding = "same",
    bias: bool = False,
    init: str = "normal",
    method: str = DEFAULT_METHOD,
    dtype: DTypeLike | None = None,
) -> Op:
    """2-D convolution (cross-correlation), NCHW input, OIHW kernel; see the module docstring.

    x: (batch, C_in, H, W) -> y: (batch, out_channels, H_out, W_out). params ``{"W": (out_channels,
    C_in, kh, kw)}``, plus ``"B": (1, out_channels, 1, 1)`` with ``bias=True`` (the book's
    ``Conv2D`` has no bias). ``kernel``: ``k`` (square) or ``(kh, kw)``. ``stride``: int >= 1.
    ``padding``: ``"same"`` (even kernels: the extra zero goes bottom/right), ``"valid"`` or an
    int. ``init`` (weights; the bias starts at zero): ``"normal"`` (standard normal) or
    ``"glorot"`` (std ``sqrt(2 / (C_in kh kw + C_out kh kw))``, see :func:`jaxscratch.ops.init.fans`),
    ``"he"`` / ``"he_uniform"`` (variance ``2 / (C_in kh kw)``).
    ``method``: ``"im2col"``, ``"taps"`` or ``"xla"`` (same results; speed differs).
    Cache: :class:`ConvCache`.
    """
    fn = "conv2d"
    out_channels = check_positive_int(fn, "out_channels", out_channels)
    kh, kw = _kernel_hw(fn, kernel)
    stride = check_positive_int(fn, "stride", stride)
    padding = _check_padding(fn, padding)
    initializers.check_init(fn, init)
    method = check_choice(fn, "method", method, METHODS)
    name = _conv_name(kh, kw, stride, padding, bias, method)
    fwd, bwd = FORWARD[method], BACKWARD[method]

    def forward(params: dict[str, Array], x: Array) -> tuple[Array, ConvCache]:
        """y = correlate(pad(x), W) (+ B). x (N, C_in, H, W) -> y (N, C_out, H_out, W_out)."""
        _check_conv_inputs(name, params, x, kh, kw, bias)
        return _forward(params, x)

    @jax.jit
    def _forward(params: dict[str, Array], x: Array) -> tuple[Array, ConvCache]:
        Wt = params["W"]
        y, cols = fwd(x, Wt, conv_geometry(x.shape[2], x.shape[3], kh, kw, stride, padding))
        if bias:
            y = y + params["B"]
        return y, ConvCache(x, Wt, cols)

    def backward(cache: ConvCache, dy: Array) -> tuple[dict[str, Array], Array]:
        """dW = sum over the batch of correlate(pad(x), dy); dx = correlate(dilate_pad(dy), W
        flipped and channel-transposed); dB = sum of dy over batch and space."""
        x, Wt, _ = cache
        geo = conv_geometry(x.shape[2], x.shape[3], kh, kw, stride, padding)
        expected = (x.shape[0], Wt.shape[0], geo.Ho, geo.Wo)
        if dy.shape != expected:
            raise ValueError(
                f"{name}: dy{tuple(dy.shape)} does not match the output shape {expected}"
            )
        return _backward(cache, dy)

    @jax.jit
    def _backward(cache: ConvCache, dy: Array) -> tuple[dict[str, Array], Array]:
        x, Wt, cols = cache
        dW, dx = bwd(
            x, Wt, cols, dy, conv_geometry(x.shape[2], x.shape[3], kh, kw, stride, padding)
        )
        grads = {"W": dW}
        if bias:
            grads["B"] = jnp.sum(dy, axis=(0, 2, 3), keepdims=True)
        return grads, dx

    def init_fn(key: jax.Array, in_shape: Shape) -> tuple[Shape, dict[str, Array]]:
        conv = (out_channels, kh, kw, stride, padding, bias)
        return _conv_init(name, conv, init, dtype, key, in_shape)

    return Op(name, forward, backward, init_fn)


# ------------------------------------------------------------------------------------------------
# The book's Conv2D layer
# ------------------------------------------------------------------------------------------------


def conv_layer(
    out_channels: int,
    kernel: int | tuple[int, int],
    activation: str | Op = "linear",
    *,
    init: str = "normal",
    dropout: float | None = 1.0,
    flatten: bool = False,
    stride: int = 1,
    padding: Padding = "same",
    bias: bool = False,
    method: str = DEFAULT_METHOD,
    dtype: DTypeLike | None = None,
) -> Op:
    """The book's ``Conv2D`` layer as a :func:`jaxscratch.core.serial` op:
    ``conv2d -> activation -> [dropout(keep_prob=dropout)] -> [flatten]``.

    x: (batch, C_in, H, W) -> (batch, out_channels, H_out, W_out), or (batch, out_channels *
    H_out * W_out) with ``flatten``. ``dropout`` is the keep probability (``1.0`` or ``None``, as
    in :func:`jaxscratch.ops.dense.dense`: no dropout;
    below 1 the layer is stochastic and takes ``key``/``train``). Other arguments as
    :func:`conv2d`. Params: a tuple with the conv's dict first and ``()`` for the others.
    """
    act = get_activation(activation)
    if act.stochastic:
        raise ValueError("conv_layer: the activation must be deterministic (use dropout=...)")
    dropout = 1.0 if dropout is None else check_probability("conv_layer", "dropout", dropout)
    conv = conv2d(
        out_channels,
        kernel,
        stride=stride,
        padding=padding,
        bias=bias,
        init=init,
        method=method,
        dtype=dtype,
    )
    ops = [conv, act]
    if dropout < 1.0:
        ops.append(make_dropout(dropout))
    if flatten:
        ops.append(_FLATTEN)
    label = f"conv_layer[{out_channels},{conv.name[len('conv2d[') : -1]},{act.name}"
    label += (f",keep{dropout:g}" if dropout < 1.0 else "") + (",flatten" if flatten else "") + "]"
    return serial(*ops, name=label)


# ------------------------------------------------------------------------------------------------
# Registry: example configurations, each with an oracle example
# ------------------------------------------------------------------------------------------------


def _conv_example(n: int, c_in: int, c_out: int, h: int, w: int, kh: int, kw: int, bias: bool):
    """float64 example: x (n, c_in, h, w), W (c_out, c_in, kh, kw), B (1, c_out, 1, 1)."""

    def example(key: jax.Array):
        kx, kw_, kb = jax.random.split(key, 3)
        params = {"W": jax.random.normal(kw_, (c_out, c_in, kh, kw), jnp.float64)}
        if bias:
            params["B"] = jax.random.normal(kb, (1, c_out, 1, 1), jnp.float64)
        return params, jax.random.normal(kx, (n, c_in, h, w), jnp.float64)

    return example


# (kernel, stride, padding, bias): odd and even kernels, stride 1 and 2, same / valid / int
# padding, with and without bias, and the book's 1-D (1 x 3) kernel. tests/test_conv.py checks a
# wider grid and every method; the registry keeps few, since the suite checks each many times.
EXAMPLE_CONFIGS: tuple[tuple[int | tuple[int, int], int, Padding, bool], ...] = (
    (3, 1, "same", False),
    (4, 1, "same", True),
    (3, 2, 1, False),
    (4, 2, "valid", True),
    ((1, 3), 1, "same", False),
)

for _k, _s, _p, _b in EXAMPLE_CONFIGS:
    _kh, _kw = _kernel_hw("conv2d", _k)
    _op = conv2d(4, _k, stride=_s, padding=_p, bias=_b)
    register(_op, _conv_example(2, 3, 4, 7, 6, _kh, _kw, _b), name=_op.name)


def _layer_example(key: jax.Array):
    """conv_layer params: (conv dict, tanh (), flatten ())."""
    params, x = _conv_example(2, 3, 4, 7, 6, 3, 3, True)(key)
    return (params, (), ()), x


# Without dropout: a stochastic entry recompiles the oracle's forward (with its RNG) per example;
# tests/test_conv.py checks the book's layer with dropout 0.8 composed with a dense layer.
_layer = conv_layer(4, 3, "tanh", init="glorot", flatten=True, bias=True)
register(_layer, _layer_example, name=_layer.name)
del _k, _s, _p, _b, _kh, _kw, _op, _layer

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "ConvCache",
    "conv2d",
    "conv_axis",
    "conv_layer",
    "flatten",
    "make_max_pool2d",
    "max_pool2d",
]
