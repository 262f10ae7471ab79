"""Shared small cases for the training tests (test_fit, test_stopping, test_train_state)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxscratch.core import serial
from jaxscratch.ops.dense import dense
from jaxscratch.optim.optimizers import Optimizer, sgd

NET = serial(dense(4, "sigmoid"), dense(1), name="trainer_test_net")
OPT = sgd()


class CountState(NamedTuple):
    steps: jax.Array


def counting_sgd() -> Optimizer:
    """SGD whose state counts its steps, to check that a restore restores optimizer state."""

    def init(params):
        return CountState(jnp.zeros((), jnp.int32))

    def update(grads, state, params, lr):
        new = jax.tree.map(lambda p, g: p - lr * g, params, grads)
        return new, CountState(state.steps + 1)

    return Optimizer(init, update)


COUNT_OPT = counting_sgd()


def data(n=10, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ np.arange(1.0, d + 1.0).reshape(d, 1) * 0.3
    return X, y


def init(seed=0):
    return NET.init(jax.random.key(seed), (3,))[1]


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
