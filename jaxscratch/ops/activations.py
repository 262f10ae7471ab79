"""Elementwise activations and softmax, as ops (see :mod:`jaxscratch.core` for the contract).

All are parameter-free: ``params = ()``, ``dparams = ()``; ``x`` and ``y`` have any shape
(softmax: ``(batch, classes)``, normalised over the last axis).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxscratch.core import Array, Op, draw_dims, register
from jaxscratch.validate import check_float


def _example(shape: tuple[int, ...] | None = None, *, away_from: float | None = None, scale=1.0):
    """Oracle example: normal ``x`` (float64, std ``scale``), kept >= 0.1 from ``away_from``.

    Without a fixed ``shape``, a non-square (batch, features) shape is drawn from the key (from a
    few sizes, so that 30 hypothesis examples compile only a handful of shapes).
    """

    def example(key: Array):
        dims = shape or draw_dims(jax.random.fold_in(key, 1), (2, 3), (4, 5))
        x = scale * jax.random.normal(key, dims, jnp.float64)
        if away_from is not None:
            d = x - away_from
            x = away_from + jnp.where(d >= 0, d + 0.1, d - 0.1)
        return (), x

    return example


def _linear_forward(params: tuple[()], x: Array) -> tuple[Array, None]:
    """y = x (identity). Caches nothing."""
    del params
    return x, None


def _linear_backward(cache: None, dy: Array) -> tuple[tuple[()], Array]:
    return (), dy


linear = register(Op("linear", _linear_forward, _linear_backward), _example())


def _sigmoid_forward(params: tuple[()], x: Array) -> tuple[Array, Array]:
    """y = 1 / (1 + exp(-x)). Caches y, since dy/dx = y (1 - y). Finite at +-1000."""
    del params
    y = jax.nn.sigmoid(x)
    return y, y


def _sigmoid_backward(cache: Array, dy: Array) -> tuple[tuple[()], Array]:
    y = cache
    return (), dy * y * (1.0 - y)


sigmoid = register(Op("sigmoid", _sigmoid_forward, _sigmoid_backward), _example(scale=3.0))


def _tanh_forward(params: tuple[()], x: Array) -> tuple[Array, Array]:
    """y = tanh(x). Caches y, since dy/dx = 1 - y^2."""
    del params
    y = jnp.tanh(x)
    return y, y


def _tanh_backward(cache: Array, dy: Array) -> tuple[tuple[()], Array]:
    y = cache
    return (), dy * (1.0 - y * y)


def _tanh_jvp(params: tuple, x: Array, dparams: tuple, dx: Array) -> Array:
    """Forward mode: d tanh(x) = (1 - tanh(x)^2) dx."""
    return (1.0 - jnp.tanh(x) ** 2) * dx


tanh = register(Op("tanh", _tanh_forward, _tanh_backward, jvp=_tanh_jvp), _example(scale=2.0))


def _relu_forward(params: tuple[()], x: Array) -> tuple[Array, Array]:
    """y = max(x, 0). Caches the mask x > 0 (so dy/dx = 0 at x = 0)."""
    del params
    mask = x > 0
    return jnp.where(mask, x, jnp.zeros_like(x)), mask


def _relu_backward(cache: Array, dy: Array) -> tuple[tuple[()], Array]:
    return (), jnp.where(cache, dy, jnp.zeros_like(dy))


relu = register(Op("relu", _relu_forward, _relu_backward), _example(away_from=0.0))


def make_leaky_relu(slope: float = 0.2) -> Op:
    """Leaky ReLU ``y = x if x > 0 else slope * x`` (the book's ``max(0.2x, x)`` for slope 0.2).

    Caches the mask x > 0; dy/dx = 1 there and ``slope`` elsewhere (``slope`` at x = 0).
    """
    slope = check_float("leaky_relu", "slope", slope, minimum=0.0, maximum=1.0, high_open=True)

    def forward(params: tuple[()], x: Array) -> tuple[Array, Array]:
        del params
        mask = x > 0
        return jnp.where(mask, x, slope * x), mask

    def backward(cache: Array, dy: Array) -> tuple[tuple[()], Array]:
        return (), jnp.where(cache, dy, slope * dy)

    return Op("leaky_relu", forward, backward)


leaky_relu = register(make_leaky_relu(0.2), _example(away_from=0.0))


def _softmax_forward(params: tuple[()], x: Array) -> tuple[Array, Array]:
    """y = exp(x - logsumexp(x)) over the last axis. x, y: (..., k). Caches y.

    Backward: dx = y * (dy - sum(dy * y, axis=-1, keepdims=True)).
    """
    del params
    y = jax.nn.softmax(x, axis=-1)
    return y, y


def _softmax_backward(cache: Array, dy: Array) -> tuple[tuple[()], Array]:
    y = cache
    return (), y * (dy - jnp.sum(dy * y, axis=-1, keepdims=True))


softmax = register(Op("softmax", _softmax_forward, _softmax_backward), _example(scale=2.0))

ACTIVATIONS: dict[str, Op] = {
    "linear": linear,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "relu": relu,
    "leaky_relu": leaky_relu,
    "softmax": softmax,
}


def get_activation(name_or_op: str | Op) -> Op:
    """An activation op by name (``ACTIVATIONS``) or the op itself."""
    if isinstance(name_or_op, Op):
        return name_or_op
    if name_or_op not in ACTIVATIONS:
        raise ValueError(
            f"get_activation: unknown activation {name_or_op!r}; allowed: {sorted(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name_or_op]
