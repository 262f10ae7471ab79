"""Batch normalisation (Ioffe & Szegedy, 2015), the op with state that is not a parameter.

``batch_norm(momentum=0.9, eps=1e-5)`` normalises each feature of ``x`` (batch, D), or each
channel of ``x`` (batch, C, H, W), over the batch (and the spatial axes):

    training:   mu, var = mean and biased variance of x over the batch (and H, W)
                xhat = (x - mu) / sqrt(var + eps);  y = gamma * xhat + beta
    inference:  xhat = (x - running_mean) / sqrt(running_var + eps);  y = gamma * xhat + beta

params: ``{"gamma", "beta", "running_mean", "running_var"}``, each of shape (D,) or (C,).
``running_mean`` and ``running_var`` are state, not parameters (the contract is in
:mod:`jaxscratch.core`): ``update(params, cache)`` replaces them after each training step with

    running_mean <- momentum * running_mean + (1 - momentum) * mu
    running_var  <- momentum * running_var  + (1 - momentum) * var * m / (m - 1)

(``m`` rows per statistic; the unbiased variance, as PyTorch keeps it; ``momentum`` is the weight
of the old value, the book's convention for momentum). ``update`` is the only writer of the state;
their gradient is zero in training, so no optimizer moves them.

Backward (training), with ``g = dy * gamma`` summed over the ``m`` rows of each statistic::

    dgamma = sum(dy * xhat)    dbeta = sum(dy)
    dx = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var + eps)

(the three terms: the direct path through ``xhat``, the path through ``mu``, the path through
``var``). Backward (inference) is that of an affine map: ``dx = g / sqrt(rv + eps)``,
``d running_mean = -sum(g) / sqrt(rv + eps)``,
``d running_var = -sum(g * (x - rm)) / (2 (rv + eps)^{3/2})``.

cache (training): ``(xhat, inv_std, gamma, mu, var)``; (inference): ``(xhat, inv_std, gamma,
x - running_mean)``; statistics keep the reduced axes (shaped to broadcast against x).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from jaxscratch.core import Array, Op, Shape, register
from jaxscratch.validate import check_float, check_positive

STATE = ("running_mean", "running_var")


def _axes(fn: str, x: Array, c: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(reduction axes, broadcast shape of a (c,) statistic) for x of shape (batch, c) or NCHW."""
    if x.ndim == 2 and x.shape[1] == c:
        return (0,), (1, c)
    if x.ndim == 4 and x.shape[1] == c:
        return (0, 2, 3), (1, c, 1, 1)
    raise ValueError(
        f"{fn}: x{tuple(x.shape)} does not fit {c} features; expected (batch, {c}) or "
        f"(batch, {c}, H, W)"
    )


def batch_norm(momentum: float = 0.9, eps: float = 1e-5, *, dtype: DTypeLike | None = None) -> Op:
    """The batch-norm op (see the module docstring); ``forward(params, x, *, train=True)``.

    momentum: weight of the old running statistic, in [0, 1). eps: added to the variance, > 0.
    """
    momentum = check_float("batch_norm", "momentum", momentum, minimum=0.0, maximum=1.0)
    if momentum == 1.0:
        raise ValueError("batch_norm: momentum must be < 1 (1 never updates the statistics)")
    eps = check_positive("batch_norm", "eps", eps)
    name = f"batch_norm[{momentum:g},{eps:g}]"

    def forward(params: dict[str, Array], x: Array, *, train: bool = True) -> tuple[Array, tuple]:
        axes, shape = _axes(name, x, params["gamma"].shape[0])
        gamma, beta = params["gamma"].reshape(shape), params["beta"].reshape(shape)
        if train:
            mu = jnp.mean(x, axis=axes, keepdims=True)
            var = jnp.mean((x - mu) ** 2, axis=axes, keepdims=True)
            inv_std = jax.lax.rsqrt(var + eps)
            xhat = (x - mu) * inv_std
            return gamma * xhat + beta, (xhat, inv_std, gamma, mu, var)
        centred = x - params["running_mean"].reshape(shape)
        inv_std = jax.lax.rsqrt(params["running_var"].reshape(shape) + eps)
        xhat = centred * inv_std
        return gamma * xhat + beta, (xhat, inv_std, gamma, centred)

    def backward(cache: tuple, dy: Array) -> tuple[dict[str, Array], Array]:
        xhat, inv_std, gamma = cache[:3]
        axes = (0,) if dy.ndim == 2 else (0, 2, 3)
        total = lambda a: jnp.sum(a, axis=axes)  # noqa: E731  (C,): over one statistic's rows
        g = dy * gamma
        grads = {"gamma": total(dy * xhat), "beta": total(dy)}
        if len(cache) == 5:  # training: three paths, through xhat, mu and var
            mean = lambda a: jnp.mean(a, axis=axes, keepdims=True)  # noqa: E731
            dx = (g - mean(g) - xhat * mean(g * xhat)) * inv_std
            zero = jnp.zeros_like(grads["beta"])
            return {**grads, "running_mean": zero, "running_var": zero}, dx
        centred = cache[3]
        grads["running_mean"] = -total(g) * inv_std.reshape(-1)
        grads["running_var"] = -0.5 * total(g * centred) * (inv_std**3).reshape(-1)
        return grads, g * inv_std

    def update(params: dict[str, Array], cache: tuple) -> dict[str, Array]:
        xhat, _, gamma, mu, var = cache
        m = xhat.size // gamma.size  # rows per statistic
        unbiased = var.reshape(-1) * (m / max(m - 1, 1))
        rm, rv = params["running_mean"], params["running_var"]
        return {
            **params,
            "running_mean": momentum * rm + (1 - momentum) * mu.reshape(-1).astype(rm.dtype),
            "running_var": momentum * rv + (1 - momentum) * unbiased.astype(rv.dtype),
        }

    def init(key: Array, in_shape: Shape) -> tuple[Shape, dict[str, Array]]:
        del key
        if len(in_shape) not in (1, 3):
            raise ValueError(f"{name}: expected rows of shape (D,) or (C, H, W), got {in_shape}")
        ones, zeros = jnp.ones((in_shape[0],), dtype), jnp.zeros((in_shape[0],), dtype)
        return tuple(in_shape), {
            "gamma": ones,
            "beta": zeros,
            "running_mean": zeros,
            "running_var": ones,
        }

    return Op(name, forward, backward, init, False, update)


def _example(shape: tuple[int, ...]):
    """Asymmetric, non-square inputs with non-trivial gamma, beta and running statistics."""

    def example(key: Array):
        k = jax.random.split(key, 5)
        c = shape[1]
        params = {
            "gamma": 1.0 + 0.5 * jax.random.normal(k[0], (c,), jnp.float64),
            "beta": jax.random.normal(k[1], (c,), jnp.float64),
            "running_mean": jax.random.normal(k[2], (c,), jnp.float64),
            "running_var": 0.5 + jax.random.uniform(k[3], (c,), jnp.float64),
        }
        x = 2.0 * jax.random.normal(k[4], shape, jnp.float64) + 0.3
        return params, x

    return example


def inference(op: Op) -> Op:
    """``op`` always in inference mode (running statistics), as a plain op: what the oracle
    checks for the inference backward, and a frozen layer for fine-tuning."""
    return Op(
        f"{op.name}[eval]",
        lambda params, x: op.forward(params, x, train=False),
        op.backward,
        op.init,
    )


_bn = batch_norm(0.9, 1e-5)
register(_bn, _example((6, 4)), name="batch_norm[2d]")
register(_bn, _example((3, 4, 5, 2)), name="batch_norm[nchw]")
register(inference(_bn), _example((6, 4)), name="batch_norm[2d,eval]")
register(inference(_bn), _example((3, 4, 5, 2)), name="batch_norm[nchw,eval]")
