"""Optimizers as ``Optimizer(init, update)`` pairs of pure functions.

``init(params) -> state``; ``update(grads, state, params, lr) -> (new_params, new_state)``. ``params``
and ``grads`` are any pytree of the same structure; ``lr`` is an argument of ``update`` (a traced
scalar under ``jit``), so a decaying learning rate never recompiles (see :mod:`jaxscratch.optim.schedules`).
Each optimizer's state is a ``NamedTuple`` whose array fields have the tree structure of ``params``.

Factories are cached: the same hyperparameters give the *same* ``Optimizer`` object
(``sgd_momentum(0.9) is sgd_momentum(momentum=0.9)``), so the trainer's compiled programs, cached
by object identity, are reused. Hyperparameters are checked with :mod:`jaxscratch.validate`
(a ``TypeError`` for a non-number, a ``ValueError`` out of range, naming the factory); ``update``
checks a host learning rate with :func:`~jaxscratch.validate.check_lr` and passes a traced one.

| optimizer | rule (g: gradient, t: step count from 1) |
|---|---|
| :func:`sgd` | p <- p - lr g |
| :func:`sgd_momentum` (the book's) | v <- m v + lr g ; p <- p - v |
| :func:`adagrad` | h <- h + g^2 ; p <- p - lr g / (sqrt(h) + eps) |
| :func:`rmsprop` | s <- rho s + (1 - rho) g^2 ; p <- p - lr g / (sqrt(s) + eps) |
| :func:`adam` | m <- b1 m + (1-b1) g ; v <- b2 v + (1-b2) g^2 ; p <- p - lr m^ / (sqrt(v^) + eps), m^ = m / (1 - b1^t), v^ = v / (1 - b2^t) |

``eps`` is always added *outside* the square root (Kingma & Ba; PyTorch), so it bounds the step
at ``lr |g| / eps`` when the accumulated squares are tiny.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxscratch.validate import check_float, check_lr, check_positive

Params = Any
Array = jax.Array


class Optimizer(NamedTuple):
    """``init(params) -> state``; ``update(grads, state, params, lr) -> (params, state)``."""

    init: Callable[[Params], Any]
    update: Callable[[Params, Any, Params, Any], tuple[Params, Any]]


class SGDState(NamedTuple):
    """Plain SGD keeps no state."""


@functools.cache
def sgd() -> Optimizer:
    """Plain gradient descent: ``p <- p - lr * g``. State: :class:`SGDState` (empty). Cached."""

    def init(params: Params) -> SGDState:
        del params
        return SGDState()

    def update(grads: Params, state: SGDState, params: Params, lr: Any) -> tuple[Params, SGDState]:
        check_lr("sgd", lr)
        return jax.tree.map(lambda p, g: p - lr * g, params, grads), state

    return Optimizer(init, update)


def zeros_like_tree(params: Params) -> Params:
    """A pytree of zeros with the structure, shapes and dtypes of ``params``."""
    return jax.tree.map(jnp.zeros_like, params)


def _unit(fn: str, name: str, value: Any) -> float:
    """A decay rate or momentum: ``float(value)`` in ``[0, 1)``."""
    return check_float(fn, name, value, minimum=0.0, maximum=1.0, high_open=True)


class MomentumState(NamedTuple):
    """velocity: the book's ``v``, same tree as params."""

    velocity: Params


def sgd_momentum(momentum: float = 0.9) -> Optimizer:
    """The book's SGD with momentum, lr inside the velocity: ``v <- m v + lr g ; p <- p - v``.

    ``momentum`` in [0, 1) (0 is plain SGD). State: :class:`MomentumState`, zeros at init. Because
    lr multiplies ``g`` before it enters ``v``, a decayed lr affects only new gradients. Cached.
    """
    return _sgd_momentum(_unit("sgd_momentum", "momentum", momentum))


@functools.cache
def _sgd_momentum(momentum: float) -> Optimizer:
    def init(params: Params) -> MomentumState:
        return MomentumState(zeros_like_tree(params))

    def update(
        grads: Params, state: MomentumState, params: Params, lr: Any
    ) -> tuple[Params, MomentumState]:
        check_lr("sgd_momentum", lr)
        v = jax.tree.map(lambda v, g: momentum * v + lr * g, state.velocity, grads)
        return jax.tree.map(lambda p, v: p - v, params, v), MomentumState(v)

    return Optimizer(init, update)


class AdaGradState(NamedTuple):
    """sum_squares: the running sum ``h`` of squared gradients, same tree as params."""

    sum_squares: Params


def adagrad(eps: float = 1e-7) -> Optimizer:
    """AdaGrad (chapter 6): ``h <- h + g^2 ; p <- p - lr g / (sqrt(h) + eps)``.

    ``eps`` > 0 is added outside the square root (default 1e-7, the book's value; the book's code
    instead adds ``eps`` to ``h`` every step, inside the root). State: :class:`AdaGradState`,
    zeros at init. Cached.
    """
    return _adagrad(check_positive("adagrad", "eps", eps))


@functools.cache
def _adagrad(eps: float) -> Optimizer:
    def init(params: Params) -> AdaGradState:
        return AdaGradState(zeros_like_tree(params))

    def update(
        grads: Params, state: AdaGradState, params: Params, lr: Any
    ) -> tuple[Params, AdaGradState]:
        check_lr("adagrad", lr)
        h = jax.tree.map(lambda h, g: h + g * g, state.sum_squares, grads)
        new = jax.tree.map(lambda p, g, h: p - lr * g / (jnp.sqrt(h) + eps), params, grads, h)
        return new, AdaGradState(h)

    return Optimizer(init, update)


class RMSPropState(NamedTuple):
    """mean_squares: the running average ``s`` of squared gradients, same tree as params."""

    mean_squares: Params


def rmsprop(rho: float = 0.9, eps: float = 1e-8) -> Optimizer:
    """RMSprop (Hinton): ``s <- rho s + (1 - rho) g^2 ; p <- p - lr g / (sqrt(s) + eps)``.

    ``rho`` in [0, 1); ``eps`` > 0, outside the root. ``s`` starts at zeros (no bias correction,
    so the first step is ``lr g / (sqrt(1 - rho) |g| + eps)``). State: :class:`RMSPropState`. Cached.
    """
    rho = _unit("rmsprop", "rho", rho)
    return _rmsprop(rho, check_positive("rmsprop", "eps", eps))


@functools.cache
def _rmsprop(rho: float, eps: float) -> Optimizer:
    def init(params: Params) -> RMSPropState:
        return RMSPropState(zeros_like_tree(params))

    def update(
        grads: Params, state: RMSPropState, params: Params, lr: Any
    ) -> tuple[Params, RMSPropState]:
        check_lr("rmsprop", lr)
        s = jax.tree.map(lambda s, g: rho * s + (1.0 - rho) * g * g, state.mean_squares, grads)
        new = jax.tree.map(lambda p, g, s: p - lr * g / (jnp.sqrt(s) + eps), params, grads, s)
        return new, RMSPropState(s)

    return Optimizer(init, update)


class AdamState(NamedTuple):
    """count: steps taken (int32 scalar); mu, nu: first and second moment estimates (params tree)."""

    count: Array  # type: ignore[assignment]  # shadows tuple.count; the name is a checkpoint key
    mu: Params
    nu: Params


def adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Optimizer:
    """Adam (Kingma & Ba 2015), with bias correction and ``eps`` outside the root.

    ``m <- b1 m + (1 - b1) g ; v <- b2 v + (1 - b2) g^2 ; t <- t + 1 ;
    p <- p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``. ``b1``, ``b2`` in [0, 1);
    ``eps`` > 0. State: :class:`AdamState`. Cached.
    """
    b1 = _unit("adam", "b1", b1)
    b2 = _unit("adam", "b2", b2)
    return _adam(b1, b2, check_positive("adam", "eps", eps))


@functools.cache
def _adam(b1: float, b2: float, eps: float) -> Optimizer:
    def init(params: Params) -> AdamState:
        return AdamState(jnp.zeros((), jnp.int32), zeros_like_tree(params), zeros_like_tree(params))

    def update(
        grads: Params, state: AdamState, params: Params, lr: Any
    ) -> tuple[Params, AdamState]:
        check_lr("adam", lr)
        t = state.count + 1
        mu = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, state.mu, grads)
        nu = jax.tree.map(lambda v, g: b2 * v + (1.0 - b2) * g * g, state.nu, grads)

        def step(p, m, v):
            tf = t.astype(p.dtype)
            m_hat = m / (1.0 - b1**tf)
            v_hat = v / (1.0 - b2**tf)
            return p - lr * m_hat / (jnp.sqrt(v_hat) + eps)

        return jax.tree.map(step, params, mu, nu), AdamState(t, mu, nu)

    return Optimizer(init, update)


OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "sgd": sgd,
    "sgd_momentum": sgd_momentum,
    "adagrad": adagrad,
    "rmsprop": rmsprop,
    "adam": adam,
}
