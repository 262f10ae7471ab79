"""Dense layers: ``weight_multiply``, ``bias_add`` and ``dense`` (see :mod:`jaxscratch.core`).

Shapes: ``x`` is ``(batch, n_in)``; ``W`` is ``(n_in, n_out)``; ``B`` is ``(1, n_out)``, as in the book.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from jaxscratch.core import Array, Op, Shape, draw_dims, register, serial
from jaxscratch.ops import init as initializers
from jaxscratch.ops.activations import get_activation
from jaxscratch.ops.dropout import DEFAULT_MASK, MASKS
from jaxscratch.ops.dropout import dropout as make_dropout
from jaxscratch.validate import check_positive_int, check_probability


def _check_2d(fn: str, x: Array, n_in: int, pname: str, pshape: tuple[int, ...]) -> None:
    if x.ndim != 2 or x.shape[1] != n_in:
        raise ValueError(
            f"{fn}: x{tuple(x.shape)} does not fit {pname}{tuple(pshape)}; "
            f"expected x of shape (batch, {n_in})"
        )


def _weight_multiply_forward(params: dict[str, Array], x: Array) -> tuple[Array, tuple]:
    """y = x @ W. x: (batch, n_in), W: (n_in, n_out) -> y: (batch, n_out). Caches (x, W)."""
    W = params["W"]
    _check_2d("weight_multiply", x, W.shape[0], "W", W.shape)
    return x @ W, (x, W)


def _weight_multiply_backward(cache: tuple, dy: Array) -> tuple[dict[str, Array], Array]:
    x, W = cache
    return {"W": x.T @ dy}, dy @ W.T


def _bias_add_forward(params: dict[str, Array], x: Array) -> tuple[Array, None]:
    """y = x + B. x: (batch, n), B: (1, n) -> y: (batch, n). Caches nothing (None)."""
    B = params["B"]
    if B.ndim != 2 or B.shape[0] != 1:
        raise ValueError(f"bias_add: B must have shape (1, n), got {tuple(B.shape)}")
    _check_2d("bias_add", x, B.shape[1], "B", B.shape)
    return x + B, None


def _bias_add_backward(cache: None, dy: Array) -> tuple[dict[str, Array], Array]:
    return {"B": jnp.sum(dy, axis=0, keepdims=True)}, dy


def _matrix_example(key: Array):
    """x: (batch, n_in), W: (n_in, n_out), three distinct sizes drawn from the key."""
    batch, n_in, n_out = draw_dims(jax.random.fold_in(key, 1), (2, 3), (4, 5), (6, 7))
    k1, k2 = jax.random.split(key)
    return (
        {"W": jax.random.normal(k1, (n_in, n_out), jnp.float64)},
        jax.random.normal(k2, (batch, n_in), jnp.float64),
    )


def _bias_example(key: Array):
    """x: (batch, n), B: (1, n), batch != n drawn from the key."""
    batch, n = draw_dims(jax.random.fold_in(key, 1), (2, 3), (4, 5))
    k1, k2 = jax.random.split(key)
    return (
        {"B": jax.random.normal(k1, (1, n), jnp.float64)},
        jax.random.normal(k2, (batch, n), jnp.float64),
    )


def _weight_multiply_jvp(params: dict[str, Array], x: Array, dparams: dict, dx: Array) -> Array:
    """Forward mode, by the product rule: d(x W) = dx W + x dW."""
    return dx @ params["W"] + x @ dparams["W"]


weight_multiply = register(
    Op(
        "weight_multiply",
        _weight_multiply_forward,
        _weight_multiply_backward,
        jvp=_weight_multiply_jvp,
    ),
    _matrix_example,
)
bias_add = register(Op("bias_add", _bias_add_forward, _bias_add_backward), _bias_example)


def dense(
    neurons: int,
    activation: str | Op = "linear",
    *,
    init: str = "normal",
    dtype: DTypeLike | None = None,
    dropout: float | None = None,
    inverted: bool = False,
    dropout_mask: str = DEFAULT_MASK,
) -> Op:
    """The book's ``Dense`` layer: ``y = activation(x @ W + B)``, optionally followed by dropout.

    x: (batch, n_in) -> y: (batch, neurons); params ``{"W": (n_in, neurons), "B": (1, neurons)}``,
    n_in inferred at init. ``init``: ``"normal"`` (standard normal, the book's chapter 3) or
    ``"glorot"`` (both W and B drawn with std sqrt(2/(n_in+neurons)), as the book does), ``"he"``
    / ``"he_uniform"`` (W with variance 2/n_in, for ReLU layers; B zeros).
    Cache: ``(x, W, activation cache)``. Backward: the reversed composition
    ``activation -> bias_add -> weight_multiply``.

    ``dropout=keep_prob`` (the book's ``Dense(..., dropout=0.8)``) returns
    ``serial(dense, dropout(keep_prob, inverted=inverted))`` named ``dense[n,act]+dropout[p]``: a
    stochastic op whose params are ``(dense params, ())`` and whose cache is ``(dense cache,
    mask)``; its forward takes ``key``/``train`` (see :mod:`jaxscratch.ops.dropout`). ``dropout=None``
    or ``1.0`` adds no dropout op, as the book's layer does for ``dropout=1.0``.
    ``dropout_mask``: how the dropout op draws its masks (``"hash"`` or ``"threefry"``).
    """
    if dropout_mask not in MASKS:
        raise ValueError(f"dense: dropout_mask must be one of {MASKS}, got {dropout_mask!r}")
    if dropout is not None and check_probability("dense", "dropout", dropout) != 1.0:
        layer = dense(neurons, activation, init=init, dtype=dtype)
        drop = make_dropout(dropout, inverted=inverted, mask=dropout_mask)
        return serial(layer, drop, name=f"{layer.name}+{drop.name}")
    neurons = check_positive_int("dense", "neurons", neurons)
    act = get_activation(activation)
    if act.stochastic:
        raise ValueError(
            "dense: the activation must be deterministic (put dropout after the layer)"
        )
    initializers.check_init("dense", init)

    def forward(params: dict[str, Array], x: Array) -> tuple[Array, tuple]:
        W, B = params["W"], params["B"]
        _check_2d("dense", x, W.shape[0], "W", W.shape)
        if B.shape != (1, W.shape[1]):
            raise ValueError(f"dense: B{tuple(B.shape)} does not fit W{tuple(W.shape)}")
        y, act_cache = act.forward((), x @ W + B)
        return y, (x, W, act_cache)

    def backward(cache: tuple, dy: Array) -> tuple[dict[str, Array], Array]:
        x, W, act_cache = cache
        _, dz = act.backward(act_cache, dy)
        return {"W": x.T @ dz, "B": jnp.sum(dz, axis=0, keepdims=True)}, dz @ W.T

    def init_fn(key: Array, in_shape: Shape) -> tuple[Shape, dict[str, Array]]:
        if len(in_shape) != 1:
            raise ValueError(
                f"dense: expects inputs of shape (batch, n_in), got per-row {in_shape}"
            )
        n_in = in_shape[0]
        kw, kb = jax.random.split(key)
        W = initializers.initialize(init, kw, (n_in, neurons), dtype)
        if init in ("normal", "glorot"):  # the book draws B with W's scale
            scale = 1.0 if init == "normal" else initializers.glorot_scale(n_in, neurons)
            B = initializers.normal(kb, (1, neurons), dtype, scale=scale)
        else:  # He: biases start at zero
            B = jnp.zeros((1, neurons), W.dtype)
        return (neurons,), {"W": W, "B": B}

    return Op(f"dense[{neurons},{act.name}]", forward, backward, init_fn)


def _dense_example(activation: str):
    """Example for a dense layer; pre-activations are Gaussian, a kink is hit with probability ~0."""

    def example(key: Array):
        # the layer has 4 units; batch and n_in are drawn, distinct from each other and from 4
        batch, n_in, _ = draw_dims(jax.random.fold_in(key, 1), (2, 3), (5, 6), (4, 4))
        k1, k2, k3 = jax.random.split(key, 3)
        params = {
            "W": jax.random.normal(k1, (n_in, 4), jnp.float64),
            "B": jax.random.normal(k2, (1, 4), jnp.float64),
        }
        x = jax.random.normal(k3, (batch, n_in), jnp.float64)
        return params, x

    return example


for _act in ("linear", "sigmoid", "tanh", "relu"):
    register(dense(4, _act), _dense_example(_act), name=f"dense[{_act}]")


def _dense_dropout_example(key: Array):
    params, x = _dense_example("tanh")(key)
    return (params, ()), x


register(dense(4, "tanh", dropout=0.8), _dense_dropout_example, name="dense[tanh]+dropout[0.8]")
