"""The arithmetic behind :func:`jaxscratch.ops.conv.conv2d`: geometry and three formulations.

The sums (see :mod:`jaxscratch.ops.conv` for their derivation), with ``xp`` the padded input:
``y[n,o,h,w] = sum_{c,i,j} xp[n,c,s h+i,s w+j] W[o,c,i,j]``,
``dW[o,c,i,j] = sum_{n,h,w} dy[n,o,h,w] xp[n,c,s h+i,s w+j]`` and ``dx`` the correlation of the
dilated, padded ``dy`` with the flipped, channel-transposed kernel.

Each formulation (``method``) is a pair of plain functions,
``forward(x, W, geom) -> (y, cols)`` and ``backward(x, W, cols, dy, geom) -> (dW, dx)``, listed in
:data:`FORWARD` and :data:`BACKWARD`; ``geom`` (:class:`ConvGeometry`) holds the kernel size,
stride and the per-input padding. ``cols`` is what the forward pass keeps for the backward one:
the padded input (``"taps"``), the im2col patches (``"im2col"``) or ``None`` (``"xla"``).
Everything here is traceable (no host checks); :func:`~jaxscratch.ops.conv.conv2d` checks shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
from jax import lax

from jaxscratch.core import Array

Padding = str | int


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


class ConvGeometry(NamedTuple):
    """One convolution's static geometry: kernel ``kh x kw``, ``stride``, the output size
    ``Ho x Wo`` and ``pads = ((top, bottom), (left, right))`` for a given input size."""

    kh: int
    kw: int
    stride: int
    Ho: int
    Wo: int
    pads: tuple[tuple[int, int], tuple[int, int]]


def conv_geometry(
    H: int, W: int, kh: int, kw: int, stride: int, padding: Padding, *, fn: str = "conv2d"
) -> ConvGeometry:
    """The :class:`ConvGeometry` of a ``kh x kw`` kernel over an ``H x W`` input."""
    Ho, pt, pb = conv_axis(H, kh, stride, padding, fn=fn)
    Wo, pl, pr = conv_axis(W, kw, stride, padding, fn=fn)
    return ConvGeometry(kh, kw, stride, Ho, Wo, ((pt, pb), (pl, pr)))


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


def _dilate_pad_dy(dy: Array, H: int, W: int, geo: ConvGeometry) -> Array:
    """``dy`` dilated by ``stride - 1`` zeros, padded so that a valid ``kh x kw`` correlation with
    the flipped kernel yields the input gradient: size ``(H + kh - 1, W + kw - 1)``.

    Low padding ``k - 1 - pad_before`` (negative: crop); high padding whatever completes the size
    (it also covers input rows that no window reached).
    """
    kh, kw, stride = geo.kh, geo.kw, geo.stride
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
# Building blocks of the three formulations
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
        y: Array | None = None
        for i in range(kh):
            for j in range(kw):
                t = _tap(Z[:, :, i * kw + j], i, j, stride, Ho, Wo)
                y = t if y is None else y + t
        return _taps_sum(y, K)
    y = None
    for i in range(kh):
        for j in range(kw):
            t = jnp.einsum("nchw,oc->nohw", _tap(xp, i, j, stride, Ho, Wo), K[:, :, i, j])
            y = t if y is None else y + t
    return _taps_sum(y, K)


def _taps_sum(y: Array | None, K: Array) -> Array:
    """The sum of the taps; ``None`` only if the kernel had none (a shape the layer refuses)."""
    if y is None:
        raise ValueError(f"conv: kernel of shape {tuple(K.shape)} has no taps (kh or kw is 0)")
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


def _conv_xla(x: Array, K: Array, stride: int, pads) -> Array:
    return lax.conv_general_dilated(
        x,
        K,
        window_strides=(stride, stride),
        padding=list(pads),
        dimension_numbers=_DN,
        precision=lax.Precision.HIGHEST,
    )


# ------------------------------------------------------------------------------------------------
# The three formulations: forward(x, W, geom) -> (y, cols); backward(...) -> (dW, dx)
# ------------------------------------------------------------------------------------------------

ConvForward = Callable[[Array, Array, ConvGeometry], tuple[Array, Array | None]]
ConvBackward = Callable[[Array, Array, Array | None, Array, ConvGeometry], tuple[Array, Array]]


def _forward_im2col(x: Array, K: Array, g: ConvGeometry) -> tuple[Array, Array]:
    """Patches ``P`` (N, C, kh kw, Ho, Wo) of the padded input, contracted with ``W`` at once."""
    cols = _patches(_pad(x, g.pads), g.kh, g.kw, g.stride, g.Ho, g.Wo)
    y = jnp.einsum("ncthw,oct->nohw", cols, K.reshape(K.shape[0], K.shape[1], g.kh * g.kw))
    return y, cols


def _forward_taps(x: Array, K: Array, g: ConvGeometry) -> tuple[Array, Array]:
    """Shifted multiply-adds over the padded input, which is kept."""
    xp = _pad(x, g.pads)
    return _correlate_taps(xp, K, g.stride, g.Ho, g.Wo), xp


def _forward_xla(x: Array, K: Array, g: ConvGeometry) -> tuple[Array, None]:
    """``lax.conv_general_dilated``; nothing kept beyond ``x`` and ``W``."""
    return _conv_xla(x, K, g.stride, g.pads), None


def _input_grad_taps(x_shape: tuple[int, ...], K: Array, dy: Array, g: ConvGeometry) -> Array:
    """``dx``: the flipped, channel-transposed kernel (C_in, C_out, kh, kw) over the dilated dy."""
    _, C, H, W = x_shape
    dyd = _dilate_pad_dy(dy, H, W, g)
    return _correlate_taps(dyd, _flip_transpose(K), 1, H, W, contract_first=C <= K.shape[0])


def _kept(method: str, cols: Array | None) -> Array:
    """The array the ``method`` forward pass kept; ``None`` means the cache came from "xla"."""
    if cols is None:
        raise ValueError(
            f"conv backward ({method}): the cache holds no kept array; "
            "it was made by a forward pass with another method"
        )
    return cols


def _backward_im2col(
    x: Array, K: Array, cols: Array | None, dy: Array, g: ConvGeometry
) -> tuple[Array, Array]:
    """dW: one product of dy with the cached patches; dx: shifted multiply-adds."""
    cols = _kept("im2col", cols)
    # dW[o, c, t] = sum over n, h, w of dy[n, o, h, w] P[n, c, t, h, w], contracted in (n, h, w)
    # order: jnp.einsum picks (h, n, w), for which XLA:CPU transposes both operands first (the
    # book CNN layer, forward and backward: 5.4 -> 4.1 ms a step)
    dW = lax.dot_general(dy, cols, (((0, 2, 3), (0, 3, 4)), ((), ()))).reshape(K.shape)
    return dW, _input_grad_taps(x.shape, K, dy, g)


def _backward_taps(
    x: Array, K: Array, cols: Array | None, dy: Array, g: ConvGeometry
) -> tuple[Array, Array]:
    """dW: one contraction per tap of dy with the cached padded input; dx: multiply-adds."""
    dW = _kernel_grad_taps(_kept("taps", cols), dy, g.kh, g.kw, g.stride)
    return dW, _input_grad_taps(x.shape, K, dy, g)


def _backward_xla(
    x: Array, K: Array, cols: Array | None, dy: Array, g: ConvGeometry
) -> tuple[Array, Array]:
    """Both gradients as ``lax.conv_general_dilated`` calls."""
    del cols
    N, C, H, W = x.shape
    dx = _conv_xla(_dilate_pad_dy(dy, H, W, g), _flip_transpose(K), 1, ((0, 0), (0, 0)))
    # dW[o,c,i,j] = sum_{n,h,w} xp[n,c,s h+i,s w+j] dy[n,o,h,w]: a convolution of the input
    # (channels c as "batch", batch n as "features") with dy as a kernel dilated by s; only the
    # rows and columns some window reaches take part
    used_h, used_w = g.stride * (g.Ho - 1) + g.kh, g.stride * (g.Wo - 1) + g.kw
    xp = lax.slice(_pad(x, g.pads), (0, 0, 0, 0), (N, C, used_h, used_w))
    dWt = lax.conv_general_dilated(
        jnp.transpose(xp, (1, 0, 2, 3)),
        jnp.transpose(dy, (1, 0, 2, 3)),
        window_strides=(1, 1),
        padding=[(0, 0), (0, 0)],
        rhs_dilation=(g.stride, g.stride),
        dimension_numbers=_DN,
        precision=lax.Precision.HIGHEST,
    )  # (C_in, C_out, kh, kw)
    return jnp.transpose(dWt, (1, 0, 2, 3)), dx


FORWARD: dict[str, ConvForward] = {
    "im2col": _forward_im2col,
    "taps": _forward_taps,
    "xla": _forward_xla,
}
BACKWARD: dict[str, ConvBackward] = {
    "im2col": _backward_im2col,
    "taps": _backward_taps,
    "xla": _backward_xla,
}
