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

The mask (:func:`keep_mask`) is drawn by a counter-based hash by default (``mask="hash"``): two
32-bit seeds are drawn from the key with ``jax.random.bits``, and element ``i`` is kept when
``fmix32(fmix32(i ^ s0) ^ s1) < floor(keep_prob * 2**32)``, with ``fmix32`` MurmurHash3's
finaliser (a bijection of 32-bit words with full avalanche). The keep probability is therefore
``floor(keep_prob * 2**32) / 2**32``, within 2**-32 of ``keep_prob`` (``1`` keeps everything), the
mask is a pure function of the key and the shape (the same under ``jit``, ``vmap`` and sharding:
the counter is an ``iota``), and it costs about a ninth of ``jax.random.bernoulli``'s threefry
draw, which was half of a training step of the book's CNN. It is not a cryptographic generator;
``mask="threefry"`` draws ``jax.random.bernoulli`` as before this change (the masks, and so the
results, of runs made with it).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxscratch.core import Array, Op, register
from jaxscratch.validate import check_probability

MASKS = ("hash", "threefry")
DEFAULT_MASK = "hash"  # run fingerprints record it: a resume under another mask is refused


def _fmix32(h: Array) -> Array:
    """MurmurHash3's 32-bit finaliser: a bijection of uint32 words with full avalanche."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def keep_threshold(keep_prob: float) -> int:
    """``floor(keep_prob * 2**32)``: a 32-bit word below it keeps the element (``keep_prob < 1``)."""
    return math.floor(keep_prob * 2**32)


def keep_mask(
    key: Array, keep_prob: float, shape: tuple[int, ...], mask: str = DEFAULT_MASK
) -> Array:
    """A boolean array of ``shape``, each entry True with probability ``keep_prob`` (see the
    module docstring: ``"hash"``, exact to 2**-32, or ``"threefry"``, ``jax.random.bernoulli``).
    A pure function of ``key``; ``keep_prob = 1`` gives all True."""
    if mask not in MASKS:
        raise ValueError(f"keep_mask: mask must be one of {MASKS}, got {mask!r}")
    shape = tuple(shape)
    if keep_prob >= 1.0:
        return jnp.ones(shape, bool)
    if mask == "threefry":
        return jax.random.bernoulli(key, keep_prob, shape)
    n = math.prod(shape)
    if n >= 2**32:
        raise ValueError(
            f"keep_mask: {n} elements in {shape}; the hash counter is 32-bit (< 2**32)"
        )
    seeds = jax.random.bits(key, (2,), jnp.uint32)
    h = _fmix32(_fmix32(lax.iota(jnp.uint32, n) ^ seeds[0]) ^ seeds[1])
    return (h < jnp.uint32(keep_threshold(keep_prob))).reshape(shape)


def dropout(keep_prob: float, *, inverted: bool = False, mask: str = DEFAULT_MASK) -> Op:
    """A dropout op keeping each activation with probability ``keep_prob`` in (0, 1].

    ``inverted=False`` (the book): train ``x * mask``, inference ``keep_prob * x``.
    ``inverted=True``: train ``x * mask / keep_prob``, inference ``x``. ``keep_prob = 1`` keeps
    everything (the mask is all True). ``mask``: how the mask is drawn (:func:`keep_mask`:
    ``"hash"``, the default, or ``"threefry"``). Name: ``dropout[<keep_prob>]``,
    ``dropout[<keep_prob>,inverted]``, with ``,threefry`` for that mask.
    """
    keep = check_probability("dropout", "keep_prob", keep_prob)
    if not isinstance(inverted, bool):
        raise TypeError(f"dropout: inverted must be a bool, got {type(inverted).__name__}")
    if mask not in MASKS:
        raise ValueError(f"dropout: mask must be one of {MASKS}, got {mask!r}")
    train_scale = 1.0 / keep if inverted else 1.0
    infer_scale = 1.0 if inverted else keep
    label = f"dropout[{keep:g}{',inverted' if inverted else ''}"
    label += (",threefry" if mask == "threefry" else "") + "]"

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
        kept = keep_mask(key, keep, jnp.shape(x), mask)
        return _masked(x, kept, train_scale), kept

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
