"""An example plugin: ops and a loss of your own, usable in configs and checked by the oracle.

    jaxscratch gradcheck --import experiments/plugins/my_ops.py
    jaxscratch train experiments/configs/boston_plugin.toml

Each op is the contract's pure pair, registered with an oracle example (float64, non-square):

* ``softplus``: log(1 + e^x), parameter-free, so a config may use it as ``activation``;
  cache: x; dx = dy * sigmoid(x).
* ``scale``: a learnable per-feature factor, y = x * W for x (batch, n), W (n,); cache: (W, x);
  dW = sum over the batch of dy * x, dx = dy * W. A config uses it as ``type = "op"``.
* ``mean_absolute_error``: mean(|pred - target|); cache: pred - target; dpred = sign / size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import jaxscratch as js


def _softplus_forward(params, x):
    return jnp.logaddexp(x, 0.0), x


def _softplus_backward(x, dy):
    return (), dy * jax.nn.sigmoid(x)


softplus = js.register(
    js.Op("softplus", _softplus_forward, _softplus_backward),
    lambda key: ((), 3.0 * jax.random.normal(key, (5, 3), jnp.float64)),
)


def _scale_forward(params, x):
    return x * params["W"][None, :], (params["W"], x)


def _scale_backward(cache, dy):
    W, x = cache
    return {"W": (dy * x).sum(axis=0)}, dy * W[None, :]


def _scale_init(key, in_shape):
    return in_shape, {"W": jnp.ones(in_shape)}


scale = js.register(
    js.Op("scale", _scale_forward, _scale_backward, init=_scale_init),
    lambda key: (
        {"W": jax.random.normal(key, (3,), jnp.float64)},
        jax.random.normal(jax.random.fold_in(key, 1), (5, 3), jnp.float64),
    ),
)


def _mae_forward(pred, target):
    diff = pred - target
    return jnp.abs(diff).mean(), diff


def _mae_backward(diff):
    return jnp.sign(diff) / diff.size


mean_absolute_error = js.register_loss(
    js.Loss("mean_absolute_error", _mae_forward, _mae_backward),
    lambda key: (
        jax.random.normal(key, (6, 2), jnp.float64),
        jax.random.normal(jax.random.fold_in(key, 1), (6, 2), jnp.float64) + 0.5,
    ),
)
