"""Convolution (the book's chapter 5): ``conv2d``, ``max_pool2d``, ``flatten`` and ``conv_layer``.

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

``max_pool2d``: non-overlapping ``p x p`` windows (default 2x2, stride 2); odd sizes are floored
(the last row/column is dropped and gets zero gradient). Ties: the gradient goes to the **first**
maximum of a window in row-major order ``(0,0), (0,1), (1,0), (1,1)`` only.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxscratch.core import Array, Op, Shape, register, serial
from jaxscratch.ops import init as initializers
from jaxscratch.ops.activations import get_activation
from jaxscratch.ops.dropout import dropout as make_dropout

Padding = str | int
METHODS = ("im2col", "taps", "xla")
DEFAULT_METHOD = "im2col"


# ------------------------------------------------------------------------------------------------
# Geometry
# ------------------------------------------------------------------------------------------------


def _check_padding(fn: str, padding: Padding) -> Padding:
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(
                f"{fn}: padding must be 'same', 'valid' or an int >= 0, got {padding!r}"
            )
        return padding
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"{fn}: padding must be 'same', 'valid' or an int >= 0, got {padding!r}")
    return int(padding)


def _check_pos_int(fn: str, what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{fn}: {what} must be a positive integer, got {value!r}")
    return int(value)


def _kernel_hw(fn: str, kernel: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(kernel, tuple | list):
        if len(kernel) != 2:
            raise ValueError(f"{fn}: kernel must be an int or a pair (kh, kw), got {kernel!r}")
        return _check_pos_int(fn, "kernel height", kernel[0]), _check_pos_int(
            fn, "kernel width", kernel[1]
        )
    k = _check_pos_int(fn, "kernel", kernel)
    return k, k


def conv_axis(
    n: int, k: int, stride: int, padding: Padding, *, fn: str = "conv2d"
) -> tuple[int, int, int]:
    """Geometry of one spatial axis: ``(n_out, pad_before, pad_after)``; see the module docstring.

    A kernel larger than the padded input is a ``ValueError``.
    """
    if padding == "same":
        n_out = -(-n // stride)
        total = max((n_out - 1) * stride + k - n, 0)
        lo = total // 2
        return n_out, lo, total - lo
    p = 0 if padding == "valid" else int(padding)
    if n + 2 * p < k:
        raise ValueError(
            f"{fn}: kernel size {k} exceeds the padded input size {n + 2 * p} "
            f"(input {n}, padding {padding!r})"
        )
    return (n + 2 * p - k) // stride + 1, p, p


class _Geometry(NamedTuple):
    Ho: int
    Wo: int
    pads: tuple[tuple[int, int], tuple[int, int]]  # ((top, bottom), (left, right))


def _geometry(H: int, W: int, kh: int, kw: int, stride: int, padding: Padding) -> _Geometry:
    Ho, pt, pb = conv_axis(H, kh, stride, padding)
    Wo, pl, pr = conv_axis(W, kw, stride, padding)
    return _Geometry(Ho, Wo, ((pt, pb), (pl, pr)))


def _pad(x: Array, pads: tuple[tuple[int, int], tuple[int, int]]) -> Array:
    (pt, pb), (pl, pr) = pads
    if pt == pb == pl == pr == 0:
        return x
    return lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (0, 0, 0), (pt, pb, 0), (pl, pr, 0)])


def _tap(xp: Array, i: int, j: int, stride: int, Ho: int, Wo: int) -> Array:
    """``xp[:, :, i + s h, j + s w]`` for h < Ho, w < Wo: the slice kernel tap ``(i, j)`` sees."""
    n, c = xp.shape[:2]
    return lax.slice(
        xp,
        (0, 0, i, j),
        (n, c, i + stride * (Ho - 1) + 1, j + stride * (Wo - 1) + 1),
        (1, 1, stride, stride),
    )


def _dilate_pad_dy(dy: Array, H: int, W: int, kh: int, kw: int, stride: int, geo: _Geometry):
    """``dy`` dilated by ``stride - 1`` zeros, padded so that a valid ``kh x kw`` correlation with
    the flipped kernel yields the input gradient: size ``(H + kh - 1, W + kw - 1)``.

    Low padding ``k - 1 - pad_before`` (negative: crop); high padding whatever completes the size
    (it also covers input rows that no window reached).
    """
    (pt, _), (pl, _) = geo.pads
    lo_h, lo_w = kh - 1 - pt, kw - 1 - pl
    hi_h = H + kh - 1 - lo_h - (stride * (geo.Ho - 1) + 1)
    hi_w = W + kw - 1 - lo_w - (stride * (geo.Wo - 1) + 1)
    zero = jnp.zeros((), dy.dtype)
    return lax.pad(
        dy, zero, [(0, 0, 0), (0, 0, 0), (lo_h, hi_h, stride - 1), (lo_w, hi_w, stride - 1)]
    )


def _flip_transpose(K: Array) -> Array:
    """``W'[c, o, i, j] = W[o, c, kh-1-i, kw-1-j]``: flipped in space, transposed in channels."""
    return jnp.transpose(K, (1, 0, 2, 3))[:, :, ::-1, ::-1]


# ------------------------------------------------------------------------------------------------
# The three formulations of the correlation sums
# ------------------------------------------------------------------------------------------------


def _correlate_taps(
    xp: Array, K: Array, stride: int, Ho: int, Wo: int, *, contract_first: bool = False
) -> Array:
    """``y[n,o,h,w] = sum_{c,i,j} xp[n,c,s h+i,s w+j] K[o,c,i,j]`` as shifted multiply-adds.

    Default: per tap ``(i, j)``, contract the channels of the strided slice the tap sees with
    ``K[:, :, i, j]`` and add up (cheap when ``C`` is small: the book's forward pass has ``C = 1``).
    ``contract_first``: contract the channels of the whole ``xp`` with every tap at once (one
    matrix product, ``Z[n,o,t,a,b] = sum_c xp[n,c,a,b] K[o,c,t]``), then add the shifted slices
    ``Z[:, :, t, s h + i, s w + j]`` (cheap when ``O`` is small: the book's input gradient has
    ``O = 1``; per-tap products with one output channel are slow on CPU).
    """
    O, C, kh, kw = K.shape
    if contract_first:
        Z = jnp.einsum("nchw,oct->nothw", xp, K.reshape(O, C, kh * kw))
        y = None
        for i in range(kh):
            for j in range(kw):
                t = _tap(Z[:, :, i * kw + j], i, j, stride, Ho, Wo)
                y = t if y is None else y + t
        return y
    y = None
    for i in range(kh):
        for j in range(kw):
            t = jnp.einsum("nchw,oc->nohw", _tap(xp, i, j, stride, Ho, Wo), K[:, :, i, j])
            y = t if y is None else y + t
    return y


def _kernel_grad_taps(xp: Array, dy: Array, kh: int, kw: int, stride: int) -> Array:
    """``dW[o,c,i,j] = sum_{n,h,w} dy[n,o,h,w] xp[n,c,s h+i,s w+j]``, one contraction per tap."""
    Ho, Wo = dy.shape[2:]
    rows = []
    for i in range(kh):
        rows.append(
            jnp.stack(
                [
                    jnp.einsum("nohw,nchw->oc", dy, _tap(xp, i, j, stride, Ho, Wo))
                    for j in range(kw)
                ],
                axis=-1,
            )
        )
    return jnp.stack(rows, axis=-2)


def _patches(xp: Array, kh: int, kw: int, stride: int, Ho: int, Wo: int) -> Array:
    """im2col: ``P[n, c, i kw + j, h, w] = xp[n, c, s h + i, s w + j]``, (N, C, kh kw, Ho, Wo)."""
    taps = [_tap(xp, i, j, stride, Ho, Wo) for i in range(kh) for j in range(kw)]
    return jnp.stack(taps, axis=2)


_DN = ("NCHW", "OIHW", "NCHW")


def _conv_xla(x: Array, K: Array, stride: int, pads, lhs_dilation=(1, 1), rhs_dilation=(1, 1)):
    return lax.conv_general_dilated(
        x,
        K,
        window_strides=(stride, stride),
        padding=list(pads),
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=_DN,
        precision=lax.Precision.HIGHEST,
    )


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


def conv2d(
    out_channels: int,
    kernel: int | tuple[int, int],
    *,
    stride: int = 1,
    padding: Padding = "same",
    bias: bool = False,
    init: str = "normal",
    method: str = DEFAULT_METHOD,
    dtype=None,
) -> Op:
    """2-D convolution (cross-correlation), NCHW input, OIHW kernel; see the module docstring.

    x: (batch, C_in, H, W) -> y: (batch, out_channels, H_out, W_out). params ``{"W": (out_channels,
    C_in, kh, kw)}``, plus ``"B": (1, out_channels, 1, 1)`` with ``bias=True`` (the book's
    ``Conv2D`` has no bias). ``kernel``: ``k`` (square) or ``(kh, kw)``. ``stride``: int >= 1.
    ``padding``: ``"same"`` (even kernels: the extra zero goes bottom/right), ``"valid"`` or an
    int. ``init`` (weights; the bias starts at zero): ``"normal"`` (standard normal) or
    ``"glorot"`` (std ``sqrt(2 / (C_in kh kw + C_out kh kw))``, see :func:`jaxscratch.ops.init.fans`).
    ``method``: ``"im2col"``, ``"taps"`` or ``"xla"`` (same results; speed differs).
    Cache: :class:`ConvCache`.
    """
    fn = "conv2d"
    out_channels = _check_pos_int(fn, "out_channels", out_channels)
    kh, kw = _kernel_hw(fn, kernel)
    stride = _check_pos_int(fn, "stride", stride)
    padding = _check_padding(fn, padding)
    initializers.check_init(fn, init)
    if method not in METHODS:
        raise ValueError(f"{fn}: method must be one of {METHODS}, got {method!r}")
    name = _conv_name(kh, kw, stride, padding, bias, method)

    def _check(params: dict[str, Array], x: Array) -> None:
        if not isinstance(params, dict) or "W" not in params:
            raise ValueError(
                f"{name}: params must be a dict with 'W'" + (" and 'B'" if bias else "")
            )
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

    def forward(params: dict[str, Array], x: Array) -> tuple[Array, ConvCache]:
        """y = correlate(pad(x), W) (+ B). x (N, C_in, H, W) -> y (N, C_out, H_out, W_out)."""
        _check(params, x)
        return _forward(params, x)

    @jax.jit
    def _forward(params: dict[str, Array], x: Array) -> tuple[Array, ConvCache]:
        Wt = params["W"]
        H, Wd = x.shape[2:]
        geo = _geometry(H, Wd, kh, kw, stride, padding)
        if method == "xla":
            y, cols = _conv_xla(x, Wt, stride, geo.pads), None
        else:
            xp = _pad(x, geo.pads)
            if method == "taps":
                y, cols = _correlate_taps(xp, Wt, stride, geo.Ho, geo.Wo), xp
            else:
                cols = _patches(xp, kh, kw, stride, geo.Ho, geo.Wo)
                K = Wt.reshape(Wt.shape[0], Wt.shape[1], kh * kw)
                y = jnp.einsum("ncthw,oct->nohw", cols, K)
        if bias:
            y = y + params["B"]
        return y, ConvCache(x, Wt, cols)

    def backward(cache: ConvCache, dy: Array) -> tuple[dict[str, Array], Array]:
        """dW = sum over the batch of correlate(pad(x), dy); dx = correlate(dilate_pad(dy), W
        flipped and channel-transposed); dB = sum of dy over batch and space."""
        x, Wt, cols = cache
        N, C, H, Wd = x.shape
        geo = _geometry(H, Wd, kh, kw, stride, padding)
        if dy.shape != (N, Wt.shape[0], geo.Ho, geo.Wo):
            raise ValueError(
                f"{name}: dy{tuple(dy.shape)} does not match the output shape "
                f"{(N, Wt.shape[0], geo.Ho, geo.Wo)}"
            )
        return _backward(cache, dy)

    @jax.jit
    def _backward(cache: ConvCache, dy: Array) -> tuple[dict[str, Array], Array]:
        x, Wt, cols = cache
        N, C, H, Wd = x.shape
        geo = _geometry(H, Wd, kh, kw, stride, padding)
        if method == "xla":
            dyd = _dilate_pad_dy(dy, H, Wd, kh, kw, stride, geo)
            dx = _conv_xla(dyd, _flip_transpose(Wt), 1, ((0, 0), (0, 0)))
            # dW[o,c,i,j] = sum_{n,h,w} xp[n,c,s h+i,s w+j] dy[n,o,h,w]: a convolution of the
            # input (channels c as "batch", batch n as "features") with dy as a kernel dilated by
            # s; only the rows and columns some window reaches take part
            used_h, used_w = stride * (geo.Ho - 1) + kh, stride * (geo.Wo - 1) + kw
            xp = lax.slice(_pad(x, geo.pads), (0, 0, 0, 0), (N, C, used_h, used_w))
            dWt = lax.conv_general_dilated(
                jnp.transpose(xp, (1, 0, 2, 3)),
                jnp.transpose(dy, (1, 0, 2, 3)),
                window_strides=(1, 1),
                padding=[(0, 0), (0, 0)],
                rhs_dilation=(stride, stride),
                dimension_numbers=_DN,
                precision=lax.Precision.HIGHEST,
            )  # (C_in, C_out, kh, kw)
            dW = jnp.transpose(dWt, (1, 0, 2, 3))
        else:
            if method == "taps":
                dW = _kernel_grad_taps(cols, dy, kh, kw, stride)
            else:
                dW = jnp.einsum("nohw,ncthw->oct", dy, cols).reshape(Wt.shape)
            # the flipped, channel-transposed kernel (C_in, C_out, kh, kw) over the dilated dy
            dyd = _dilate_pad_dy(dy, H, Wd, kh, kw, stride, geo)
            Wf = _flip_transpose(Wt)
            dx = _correlate_taps(dyd, Wf, 1, H, Wd, contract_first=C <= Wt.shape[0])
        grads = {"W": dW}
        if bias:
            grads["B"] = jnp.sum(dy, axis=(0, 2, 3), keepdims=True)
        return grads, dx

    def init_fn(key: jax.Array, in_shape: Shape) -> tuple[Shape, dict[str, Array]]:
        if len(in_shape) != 3:
            raise ValueError(
                f"{name}: expects inputs of shape (batch, C, H, W), got per-row {in_shape}"
            )
        C, H, Wd = in_shape
        geo = _geometry(H, Wd, kh, kw, stride, padding)
        shape = (out_channels, C, kh, kw)
        if init == "normal":
            Wt = initializers.normal(key, shape, dtype)
        else:
            Wt = initializers.glorot_normal(key, shape, dtype)
        params = {"W": Wt}
        if bias:
            params["B"] = jnp.zeros((1, out_channels, 1, 1), Wt.dtype)
        return (out_channels, geo.Ho, geo.Wo), params

    return Op(name, forward, backward, init_fn)


# ------------------------------------------------------------------------------------------------
# flatten and max pooling
# ------------------------------------------------------------------------------------------------


def _flatten_forward(params: tuple[()], x: Array) -> tuple[Array, tuple[int, ...]]:
    """(N, C, H, W) (any (N, ...)) -> (N, C*H*W), row-major. Caches the input shape."""
    del params
    if x.ndim < 2:
        raise ValueError(f"flatten: x must have a batch axis and at least one more, got {x.shape}")
    return x.reshape(x.shape[0], -1), tuple(x.shape)


def _flatten_backward(cache: tuple[int, ...], dy: Array) -> tuple[tuple[()], Array]:
    if dy.shape != (cache[0], math.prod(cache[1:])):
        raise ValueError(f"flatten: dy{tuple(dy.shape)} does not match the input shape {cache}")
    return (), dy.reshape(cache)


def _flatten_init(key: jax.Array, in_shape: Shape) -> tuple[Shape, tuple[()]]:
    del key
    return (math.prod(in_shape),), ()


def make_max_pool2d(size: int = 2) -> Op:
    """Max pooling over non-overlapping ``size x size`` windows (stride ``size``), NCHW.

    x: (N, C, H, W) -> y: (N, C, H // size, W // size) (floor: trailing rows/columns are dropped
    and get zero gradient). Ties: the gradient goes to the first maximum of the window in
    row-major order only (the forward pass selects that element, so ``jax.vjp`` agrees even on
    ties). Cache: a boolean mask of the input's shape, True at each window's selected element.
    Backward: ``dx = mask * dy`` repeated over each window (zero in the dropped rows/columns).
    """
    p = _check_pos_int("max_pool2d", "size", size)
    name = "max_pool2d" if p == 2 else f"max_pool2d[{p}]"

    def forward(params: tuple[()], x: Array) -> tuple[Array, Array]:
        """y = the first maximum of each window. Caches the selection mask (shape of x)."""
        del params
        if x.ndim != 4:
            raise ValueError(f"{name}: x must be (batch, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[2] < p or x.shape[3] < p:
            raise ValueError(
                f"{name}: input {x.shape[2]}x{x.shape[3]} is smaller than the {p}x{p} window"
            )
        return _forward(x)

    @jax.jit
    def _forward(x: Array) -> tuple[Array, Array]:
        N, C, H, W = x.shape
        Ho, Wo = H // p, W // p
        win = x[:, :, : Ho * p, : Wo * p].reshape(N, C, Ho, p, Wo, p)
        win = jnp.transpose(win, (0, 1, 2, 4, 3, 5)).reshape(N, C, Ho, Wo, p * p)
        first = jnp.argmax(win, axis=-1)  # the first maximum in row-major window order
        onehot = first[..., None] == jnp.arange(p * p).reshape(1, 1, 1, 1, p * p)
        y = jnp.sum(jnp.where(onehot, win, jnp.zeros((), win.dtype)), axis=-1)
        mask = jnp.transpose(onehot.reshape(N, C, Ho, Wo, p, p), (0, 1, 2, 4, 3, 5))
        mask = mask.reshape(N, C, Ho * p, Wo * p)
        mask = jnp.pad(mask, ((0, 0), (0, 0), (0, H - Ho * p), (0, W - Wo * p)))
        return y, mask

    def backward(cache: Array, dy: Array) -> tuple[tuple[()], Array]:
        """dx = dy routed to the selected element of each window, zero elsewhere."""
        N, C, H, W = cache.shape
        if dy.shape != (N, C, H // p, W // p):
            raise ValueError(
                f"{name}: dy{tuple(dy.shape)} does not match the output {(N, C, H // p, W // p)}"
            )
        return (), _backward(cache, dy)

    @jax.jit
    def _backward(mask: Array, dy: Array) -> Array:
        N, C, H, W = mask.shape
        Ho, Wo = dy.shape[2:]
        up = jnp.broadcast_to(dy[:, :, :, None, :, None], (N, C, Ho, p, Wo, p))
        up = up.reshape(N, C, Ho * p, Wo * p)
        up = jnp.pad(up, ((0, 0), (0, 0), (0, H - Ho * p), (0, W - Wo * p)))
        return jnp.where(mask, up, jnp.zeros((), dy.dtype))

    def init_fn(key: jax.Array, in_shape: Shape) -> tuple[Shape, tuple[()]]:
        del key
        if len(in_shape) != 3:
            raise ValueError(f"{name}: expects inputs (batch, C, H, W), got per-row {in_shape}")
        C, H, W = in_shape
        if H < p or W < p:
            raise ValueError(f"{name}: input {H}x{W} is smaller than the {p}x{p} window")
        return (C, H // p, W // p), ()

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
    dropout: float = 1.0,
    flatten: bool = False,
    stride: int = 1,
    padding: Padding = "same",
    bias: bool = False,
    method: str = DEFAULT_METHOD,
    dtype=None,
) -> Op:
    """The book's ``Conv2D`` layer as a :func:`jaxscratch.core.serial` op:
    ``conv2d -> activation -> [dropout(keep_prob=dropout)] -> [flatten]``.

    x: (batch, C_in, H, W) -> (batch, out_channels, H_out, W_out), or (batch, out_channels *
    H_out * W_out) with ``flatten``. ``dropout`` is the keep probability (``1.0``: no dropout;
    below 1 the layer is stochastic and takes ``key``/``train``). Other arguments as
    :func:`conv2d`. Params: a tuple with the conv's dict first and ``()`` for the others.
    """
    act = get_activation(activation)
    if act.stochastic:
        raise ValueError("conv_layer: the activation must be deterministic (use dropout=...)")
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 < dropout <= 1:
        raise ValueError(
            f"conv_layer: dropout (a keep probability) must be in (0, 1], got {dropout!r}"
        )
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
# Registry: module-level ops and example configurations, each with an oracle example
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


def _x_example(shape: tuple[int, ...]):
    def example(key: jax.Array):
        return (), jax.random.normal(key, shape, jnp.float64)

    return example


flatten = register(
    Op("flatten", _flatten_forward, _flatten_backward, _flatten_init), _x_example((3, 2, 5, 4))
)
_FLATTEN = flatten  # conv_layer's ``flatten`` argument shadows the name
max_pool2d = register(make_max_pool2d(2), _x_example((3, 2, 7, 6)))  # odd height: floored

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
    "METHODS",
    "ConvCache",
    "conv2d",
    "conv_axis",
    "conv_layer",
    "flatten",
    "make_max_pool2d",
    "max_pool2d",
]
