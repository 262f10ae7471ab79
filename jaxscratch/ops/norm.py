"""Layer normalisation (Ba, Kiros & Hinton, 2016): each row normalised over its features.

``layer_norm(eps=1e-5)``: x (batch, ..., D) -> y of the same shape, per position (every index
but the last)::

    mu, var = mean and biased variance of x over the last axis (D features)
    xhat = (x - mu) / sqrt(var + eps);  y = gamma * xhat + beta

params: ``{"gamma": (D,), "beta": (D,)}`` (init: ones and zeros). No running statistics: the same
computation in training and inference, each row on its own (nothing mixes the batch).
``eps`` is bound when the op is built.

Backward, with ``g = dy * gamma`` and means over the last axis::

    dgamma = sum over positions of dy * xhat     dbeta = sum over positions of dy
    dx = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var + eps)

(the direct path through ``xhat``, the path through ``mu``, the path through ``var``: batch
norm's formula with the roles of the axes exchanged).

cache: ``(xhat, inv_std, gamma)``; ``inv_std`` is ``1 / sqrt(var + eps)`` of shape (batch, ..., 1)
and ``gamma`` is reshaped to (1, ..., 1, D) so that everything broadcasts at equal rank.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from jaxscratch.core import Array, Op, Shape, register
from jaxscratch.ops.init import host_rng
from jaxscratch.validate import check_positive


def layer_norm(eps: float = 1e-5, *, dtype: DTypeLike | None = None) -> Op:
    """The layer-norm op (see the module docstring). eps: added to the variance, > 0.

    x (batch, ..., D) -> y (batch, ..., D); params ``{"gamma": (D,), "beta": (D,)}``;
    cache ``(xhat, inv_std, gamma)``. init: per-row ``(..., D)`` -> the same shape.
    """
    eps = check_positive("layer_norm", "eps", eps)
    name = "layer_norm" if eps == 1e-5 else f"layer_norm[{eps:g}]"

    def forward(params: dict[str, Array], x: Array) -> tuple[Array, tuple]:
        """y = gamma * (x - mu) / sqrt(var + eps) + beta over the last axis."""
        gamma, beta = params["gamma"], params["beta"]
        if gamma.ndim != 1 or beta.shape != gamma.shape:
            raise ValueError(
                f"{name}: gamma{tuple(gamma.shape)} and beta{tuple(beta.shape)} must both be (D,)"
            )
        if x.ndim < 2 or x.shape[-1] != gamma.shape[0]:
            raise ValueError(
                f"{name}: x{tuple(x.shape)} does not fit gamma{tuple(gamma.shape)}; expected "
                f"x of shape (batch, ..., {gamma.shape[0]})"
            )
        shape = (1,) * (x.ndim - 1) + (gamma.shape[0],)
        gamma, beta = gamma.reshape(shape), beta.reshape(shape)
        mu = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean((x - mu) ** 2, axis=-1, keepdims=True)
        inv_std = jax.lax.rsqrt(var + eps)
        xhat = (x - mu) * inv_std
        return gamma * xhat + beta, (xhat, inv_std, gamma)

    def backward(cache: tuple, dy: Array) -> tuple[dict[str, Array], Array]:
        """dgamma, dbeta summed over positions; dx through xhat, mu and var (three terms)."""
        xhat, inv_std, gamma = cache
        if dy.shape != xhat.shape:
            raise ValueError(f"{name}: dy{tuple(dy.shape)} does not match x{tuple(xhat.shape)}")
        positions = tuple(range(dy.ndim - 1))
        g = dy * gamma
        mean_g = jnp.mean(g, axis=-1, keepdims=True)
        mean_gx = jnp.mean(g * xhat, axis=-1, keepdims=True)
        dx = (g - mean_g - xhat * mean_gx) * inv_std
        grads = {"gamma": jnp.sum(dy * xhat, axis=positions), "beta": jnp.sum(dy, axis=positions)}
        return grads, dx

    def init(key: Array, in_shape: Shape) -> tuple[Shape, dict[str, Array]]:
        del key
        if len(in_shape) < 1:
            raise ValueError(f"{name}: expects rows of shape (..., D), got {in_shape}")
        d = in_shape[-1]
        return tuple(in_shape), {"gamma": jnp.ones((d,), dtype), "beta": jnp.zeros((d,), dtype)}

    return Op(name, forward, backward, init)


def _example(shape: tuple[int, ...]):
    """Off-centre, unevenly scaled inputs; gamma away from 1, beta away from 0."""

    def example(key: Array) -> tuple[dict[str, Array], Array]:
        rng = host_rng(key)
        d = shape[-1]
        params = {
            "gamma": jnp.asarray(1.0 + 0.5 * rng.standard_normal(d)),
            "beta": jnp.asarray(0.5 + rng.standard_normal(d)),
        }
        scale = 0.5 + rng.uniform(size=shape[:-1] + (1,))  # rows differ in spread
        return params, jnp.asarray(0.7 + scale * rng.standard_normal(shape))

    return example


_ln = layer_norm()
register(_ln, _example((2, 4, 6)), name="layer_norm")  # (batch, T, D); rank-generic code

__all__ = ["layer_norm"]
