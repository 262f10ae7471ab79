"""Transposed convolution (a decoder's upsampling layer), written tap by tap with a hand backward.

``conv_transpose2d(out_channels, kernel, stride=1, padding=0, bias=False)``: x (batch, C_in, H,
W) -> y (batch, C_out, (H - 1) s + k - 2p, (W - 1) s + k - 2p). Every input pixel scatters a
copy of the kernel, scaled by its value, into the output; neighbouring copies overlap and add::

    full[n, o, h s + a, w s + b] += x[n, i, h, w] * W[i, o, a, b]     (every i, h, w, a, b)
    y = full cropped by p on every side (+ B[o])

It is the transpose (the adjoint) of a strided convolution: its forward pass is conv2d's input
gradient. params ``{"W": (C_in, C_out, kh, kw)}`` (PyTorch's ``ConvTranspose2d`` layout), plus
``"B": (1, C_out, 1, 1)`` with ``bias=True``. The k*k taps are static, so each is one
``einsum`` over channels on a strided slice of the output.

Backward, tap by tap (``g = dy`` zero-padded back by p, sliced like the forward)::

    dx[n, i, h, w] = sum_{o, a, b} g[n, o, h s + a, w s + b] W[i, o, a, b]   (a strided conv of dy)
    dW[i, o, a, b] = sum_{n, h, w} x[n, i, h, w] g[n, o, h s + a, w s + b]
    dB[o] = sum of dy over n, h, w

cache: ``(x, W)``.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.typing import DTypeLike

from jaxscratch.core import Array, Op, Shape, register
from jaxscratch.ops import init as initializers
from jaxscratch.validate import check_int, check_positive_int


def _taps(kh: int, kw: int, s: int, H: int, W: int):
    """(a, b, rows slice, cols slice) of every kernel tap in the uncropped output."""
    return [
        (a, b, slice(a, a + s * (H - 1) + 1, s), slice(b, b + s * (W - 1) + 1, s))
        for a in range(kh)
        for b in range(kw)
    ]


def _backward(
    cache: tuple, dy: Array, kh: int, kw: int, s: int, p: int, bias: bool
) -> tuple[dict[str, Array], Array]:
    """The tap-by-tap backward (see the module docstring); cache ``(x, W)``."""
    x, Wt = cache
    g = jnp.pad(dy, ((0, 0), (0, 0), (p, p), (p, p)))
    dx = jnp.zeros_like(x)
    dW = []
    for a, b, rows, cols in _taps(kh, kw, s, x.shape[2], x.shape[3]):
        ga = g[:, :, rows, cols]
        dx = dx + jnp.einsum("nohw,io->nihw", ga, Wt[:, :, a, b])
        dW.append(jnp.einsum("nihw,nohw->io", x, ga))
    grads = {"W": jnp.stack(dW, axis=-1).reshape(Wt.shape)}
    if bias:
        grads["B"] = jnp.sum(dy, axis=(0, 2, 3), keepdims=True).reshape(1, -1, 1, 1)
    return grads, dx


def conv_transpose2d(
    out_channels: int,
    kernel: int | tuple[int, int],
    *,
    stride: int = 1,
    padding: int = 0,
    bias: bool = False,
    init: str = "glorot",
    dtype: DTypeLike | None = None,
) -> Op:
    """The transposed convolution op (see the module docstring)."""
    fn = "conv_transpose2d"
    out_channels = check_positive_int(fn, "out_channels", out_channels)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    kh, kw = check_positive_int(fn, "kernel", kh), check_positive_int(fn, "kernel", kw)
    s = check_positive_int(fn, "stride", stride)
    p = check_int(fn, "padding", padding, minimum=0)
    initializers.check_initializer(fn, init)
    name = f"{fn}[{out_channels},k{kh}x{kw},s{s},p{p}{',bias' if bias else ''}]"

    def out_hw(H: int, W: int) -> tuple[int, int]:
        Ho, Wo = (H - 1) * s + kh - 2 * p, (W - 1) * s + kw - 2 * p
        if Ho < 1 or Wo < 1:
            raise ValueError(f"{name}: padding {p} leaves no output for a {H}x{W} input")
        return Ho, Wo

    def forward(params: dict[str, Array], x: Array) -> tuple[Array, tuple]:
        Wt = params["W"]
        if x.ndim != 4 or x.shape[1] != Wt.shape[0]:
            raise ValueError(
                f"{name}: x{tuple(x.shape)} does not fit W{tuple(Wt.shape)}; expected "
                f"(batch, {Wt.shape[0]}, H, W)"
            )
        n, _, H, Wd = x.shape
        Ho, Wo = out_hw(H, Wd)
        full = jnp.zeros((n, Wt.shape[1], Ho + 2 * p, Wo + 2 * p), jnp.result_type(x, Wt))
        for a, b, rows, cols in _taps(kh, kw, s, H, Wd):
            full = full.at[:, :, rows, cols].add(jnp.einsum("nihw,io->nohw", x, Wt[:, :, a, b]))
        y = full[:, :, p : p + Ho, p : p + Wo]
        if bias:
            y = y + params["B"]
        return y, (x, Wt)

    def backward(cache: tuple, dy: Array) -> tuple[dict[str, Array], Array]:
        return _backward(cache, dy, kh, kw, s, p, bias)

    def init_fn(key: Array, in_shape: Shape) -> tuple[Shape, dict[str, Array]]:
        if len(in_shape) != 3:
            raise ValueError(f"{name}: expects rows of shape (C, H, W), got {in_shape}")
        C, H, Wd = in_shape
        # fans as for the convolution this is the transpose of: (C_out, C_in, k, k)
        Wconv = initializers.initialize(init, key, (out_channels, C, kh, kw), dtype)
        params = {"W": jnp.transpose(Wconv, (1, 0, 2, 3))}
        if bias:
            params["B"] = jnp.zeros((1, out_channels, 1, 1), params["W"].dtype)
        return (out_channels, *out_hw(H, Wd)), params

    return Op(name, forward, backward, init_fn)


def _example(c_in: int, c_out: int, k: int, hw: tuple[int, int], bias: bool):
    def example(key: Array):
        rng = initializers.host_rng(key)
        params = {"W": jnp.asarray(rng.standard_normal((c_in, c_out, k, k)))}
        if bias:
            params["B"] = jnp.asarray(rng.standard_normal((1, c_out, 1, 1)))
        return params, jnp.asarray(rng.standard_normal((2, c_in, *hw)) + 0.2)

    return example


register(
    conv_transpose2d(2, 3, stride=2, padding=1, bias=True),
    _example(3, 2, 3, (4, 5), True),
    name="conv_transpose2d[k3,s2,p1,bias]",
)
register(conv_transpose2d(4, 2), _example(3, 4, 2, (3, 5), False), name="conv_transpose2d[k2]")

__all__ = ["conv_transpose2d"]
