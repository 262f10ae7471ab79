"""``unflatten(shape)``: (batch, prod(shape)) -> (batch, *shape), the inverse of ``flatten``.

The decoder of the book's chapter 7 autoencoder turns a dense layer's (batch, 7*28*28) output
back into (batch, 7, 28, 28) images for its convolutions. Parameter-free; cache: the input shape;
backward: ``dx = dy.reshape(input shape)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxscratch.core import Array, Op, Shape, register
from jaxscratch.validate import check_positive_int


def unflatten(shape: tuple[int, ...]) -> Op:
    """The op reshaping each row of ``x`` (batch, prod(shape)) to ``shape``."""
    if not isinstance(shape, tuple | list) or not shape:
        raise TypeError(f"unflatten: shape must be a non-empty tuple of sizes, got {shape!r}")
    shape = tuple(check_positive_int("unflatten", f"shape[{i}]", d) for i, d in enumerate(shape))
    size = math.prod(shape)
    name = "unflatten[" + "x".join(map(str, shape)) + "]"

    def forward(params: tuple, x: Array) -> tuple[Array, tuple[int, ...]]:
        if x.ndim < 2 or math.prod(x.shape[1:]) != size:
            raise ValueError(
                f"{name}: x{tuple(x.shape)} has {math.prod(x.shape[1:])} values per row, "
                f"expected {size} = prod{shape}"
            )
        return x.reshape((x.shape[0], *shape)), tuple(x.shape)

    def backward(cache: tuple[int, ...], dy: Array) -> tuple[tuple, Array]:
        return (), dy.reshape(cache)

    def init(key: Array, in_shape: Shape) -> tuple[Shape, tuple]:
        del key
        if math.prod(in_shape) != size:
            raise ValueError(f"{name}: rows of shape {in_shape} do not hold {size} values")
        return shape, ()

    return Op(name, forward, backward, init)


register(
    unflatten((3, 2, 5)),
    lambda key: ((), jax.random.normal(key, (4, 30), jnp.float64)),
)
