"""Dropout, a stochastic parameter-free op (see :mod:`jaxscratch.core` for the contract).

``dropout(keep_prob)`` follows the book: in training each activation is kept with probability
``keep_prob`` (``y = x * mask``, ``mask ~ Bernoulli(keep_prob)``), and at inference every
activation is scaled by ``keep_prob`` (``y = keep_prob * x``), so the expected training output
equals the inference output. ``dropout(keep_prob, inverted=True)`` moves the scaling into training
(``y = x * mask / keep_prob``) and makes inference the identity.

Forward: ``forward((), x, *, key=None, train=True) -> (y, cache)``; x, y: any shape. In training a
``key`` is required (``ValueError`` otherwise); :func:`jaxscratch.core.serial` hands each dropout
op its own sub-key. Cache: the boolean mask (shape of x) in training, ``None`` at inference.
Backward: ``dx = dy * mask`` (``* mask / keep_prob`` inverted) with the forward pass's own mask;
``dx = dy * keep_prob`` (book) or ``dy`` (inverted) at inference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxscratch.core import Array, Op, register
from jaxscratch.validate import check_probability


def dropout(keep_prob: float, *, inverted: bool = False) -> Op:
    """A dropout op keeping each activation with probability ``keep_prob`` in (0, 1].

    ``inverted=False`` (the book): train ``x * mask``, inference ``keep_prob * x``.
    ``inverted=True``: train ``x * mask / keep_prob``, inference ``x``. ``keep_prob = 1`` keeps
    everything (the mask is all True). Name: ``dropout[<keep_prob>]`` or
    ``dropout[<keep_prob>,inverted]``.
    """
    keep = check_probability("dropout", "keep_prob", keep_prob)
    if not isinstance(inverted, bool):
        raise TypeError(f"dropout: inverted must be a bool, got {type(inverted).__name__}")
    train_scale = 1.0 / keep if inverted else 1.0
    infer_scale = 1.0 if inverted else keep
    label = f"dropout[{keep:g}{',inverted' if inverted else ''}]"

    def forward(
        params: tuple[()], x: Array, *, key: Array | None = None, train: bool = True
    ) -> tuple[Array, Array | None]:
        """Train: y = x * mask (* 1/keep_prob inverted), caches mask. Inference: scaled x, no cache."""
        del params
        if not train:
            return (x if infer_scale == 1.0 else x * infer_scale), None
        if key is None:
            raise ValueError(
                f"{label}: a jax.random key is required in training mode "
                "(pass key=..., or train=False for inference)"
            )
        mask = jax.random.bernoulli(key, keep, jnp.shape(x))
        return _masked(x, mask, train_scale), mask

    def backward(cache: Array | None, dy: Array) -> tuple[tuple[()], Array]:
        if cache is None:
            return (), (dy if infer_scale == 1.0 else dy * infer_scale)
        return (), _masked(dy, cache, train_scale)

    return Op(label, forward, backward, None, True)


def _masked(x: Array, mask: Array, scale: float) -> Array:
    """``x * mask * scale`` with a boolean mask, exact zeros where dropped."""
    kept = x if scale == 1.0 else x * scale
    return jnp.where(mask, kept, jnp.zeros_like(kept))


def _example(key: Array) -> tuple[tuple[()], Array]:
    return (), jax.random.normal(key, (6, 9), jnp.float64)


register(dropout(0.8), _example)
register(dropout(0.8, inverted=True), _example)
register(dropout(0.5), _example)
