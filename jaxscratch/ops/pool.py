"""Flatten and max pooling (the book's chapter 5), parameter-free ops on NCHW images.

Both follow the contract of :mod:`jaxscratch.core` (``forward((), x) -> (y, cache)``,
``backward(cache, dy) -> ((), dx)``); the backward passes are derived by hand and proven against
``jax.vjp`` and finite differences by :mod:`jaxscratch.oracle.check`.

``flatten``: (N, C, H, W) (any (N, ...)) -> (N, C*H*W), row-major; the cache is the input shape.

``max_pool2d``: non-overlapping ``p x p`` windows (default 2x2, stride 2); odd sizes are floored
(the last row/column is dropped and gets zero gradient). Ties: the gradient goes to the **first**
maximum of a window in row-major order ``(0,0), (0,1), (1,0), (1,1)`` only.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxscratch.core import Array, Op, Shape, register
from jaxscratch.validate import check_positive_int


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
    p = check_positive_int("max_pool2d", "size", size)
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
# Registry: the module-level ops, each with an oracle example
# ------------------------------------------------------------------------------------------------


def _x_example(shape: tuple[int, ...]):
    """A parameter-free op's oracle example: ``((), x)``, x float64 normal of ``shape``."""

    def example(key: jax.Array) -> tuple[tuple[()], Array]:
        return (), jax.random.normal(key, shape, jnp.float64)

    return example


flatten = register(
    Op("flatten", _flatten_forward, _flatten_backward, _flatten_init), _x_example((3, 2, 5, 4))
)
max_pool2d = register(make_max_pool2d(2), _x_example((3, 2, 7, 6)))  # odd height: floored

__all__ = ["flatten", "make_max_pool2d", "max_pool2d"]
