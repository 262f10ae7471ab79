"""The op contract, the op registry and the ``serial`` combinator.

Every operation in jaxscratch is a pair of pure functions::

    forward(params, x)   -> (y, cache)
    backward(cache, dy)  -> (dparams, dx)

``backward`` returns its gradients in the order of
``jax.vjp(lambda p, x: forward(p, x)[0], params, x)``, so the gradient oracle
(:mod:`jaxscratch.oracle.check`) compares the two trees directly. ``cache`` is whatever ``forward``
needs to keep for ``backward`` (documented per op). Parameter-free ops take ``params=()`` and return
``dparams=()``. Hyperparameters (slope, keep probability, stride) are bound when the op is built and
never travel in ``params``.

Stochastic ops (``Op.stochastic``, e.g. dropout) take two keyword-only arguments in ``forward``:
``key`` (a ``jax.random`` key, required when ``train=True``) and ``train`` (bool, static). Use
:func:`apply` to call any op uniformly.

An op may carry ``init(key, in_shape) -> (out_shape, params)``, where shapes exclude the batch axis
(``(13,)`` for a Boston row, ``(1, 28, 28)`` for an MNIST image), so layers infer their input size
lazily, as the book's layers do.

**State that is not a parameter** (batch norm's running mean and variance). Such an op keeps it
as leaves of its own ``params`` (``running_mean``, ``running_var``) and carries
``update(params, cache) -> params``, a pure function that returns the params with those leaves
replaced by their new values, computed from the training forward pass's ``cache``. The contract:

* ``forward(params, x, *, train=True)``: a stateful op takes ``train`` (static, as stochastic ops
  do; :func:`apply` passes it): training normalises with the batch's statistics, inference
  (``train=False``) with the running ones in ``params``.
* ``backward`` returns gradients for the state leaves like for any leaf: zero in training (the
  output does not depend on them), their true gradient at inference, so the oracle checks both.
* The training step (:func:`jaxscratch.train.programs.make_step`) calls ``update`` after the
  optimizer. Every jaxscratch optimizer leaves a leaf whose gradient is always zero unchanged
  (tested), so the optimizer never moves the state; an optimizer of your own must do the same
  (no weight decay on state leaves).
* Because the state lives in ``params``, everything that handles params handles it: checkpoints
  store it, a resume restores it bitwise, the best evaluated epoch keeps its own, ``predict``
  and evaluation use it, shardings replicate it. :func:`serial` composes ``update`` over its ops.

Every op is registered with :func:`register` together with an oracle example
``example(key) -> (params, x)``; :func:`jaxscratch.ops.registry` lists them, and the test-suite fails for a
registered op without an example and for a module-level op that is not registered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

Array = jax.Array
Params = Any  # a pytree: dict {"W", "B"}, () for parameter-free ops, tuple for networks
Shape = tuple[int, ...]
Example = Callable[[Array], tuple[Params, Any]]


class Op(NamedTuple):
    """One operation: a pure ``forward``/``backward`` pair (see the module docstring).

    name: registry name. init: ``init(key, in_shape) -> (out_shape, params)`` or ``None`` for ops
    without parameters whose output shape equals the input shape. stochastic: ``forward`` takes the
    keyword-only ``key`` and ``train`` arguments. update: ``update(params, cache) -> params`` for
    an op with state that is not a parameter (see the module docstring); its ``forward`` takes the
    keyword-only ``train``. jvp: an optional hand-written forward-mode derivative
    ``jvp(params, x, dparams, dx) -> dy`` (checked by the oracle against ``jax.jvp`` and, through
    the adjoint identity, against ``backward``).
    """

    name: str
    forward: Callable[..., tuple[Any, Any]]
    backward: Callable[[Any, Any], tuple[Any, Any]]
    init: Callable[[Array, Shape], tuple[Shape, Params]] | None = None
    stochastic: bool = False
    update: Callable[[Params, Any], Params] | None = None
    jvp: Callable[[Params, Any, Params, Any], Any] | None = None


class Entry(NamedTuple):
    """A registry entry: the op and its oracle example ``example(key) -> (params, x)``."""

    op: Op
    example: Example | None


class Loss(NamedTuple):
    """A loss: ``forward(pred, target) -> (loss, cache)``, ``backward(cache) -> dpred``."""

    name: str
    forward: Callable[[Array, Array], tuple[Array, Any]]
    backward: Callable[[Any], Array]


class LossEntry(NamedTuple):
    """A loss-registry entry: the loss and its example ``example(key) -> (pred, target)``."""

    loss: Loss
    example: Callable[[Array], tuple[Array, Array]] | None


_REGISTRY: dict[str, Entry] = {}
_LOSSES: dict[str, LossEntry] = {}


def register(
    op: Op, example: Example | None = None, *, name: str | None = None, replace: bool = False
) -> Op:
    """Add ``op`` to the registry under ``name`` (default ``op.name``) and return it unchanged.

    ``example(key)`` must return ``(params, x)`` in float64 with non-square shapes and inputs kept
    away from kinks; the oracle checks the op on it. Registering the same op object again is a
    no-op. Registering a *different* op under a taken name is a ``ValueError`` unless
    ``replace=True`` (a notebook cell or a plugin module run a second time in one process), which
    replaces the entry.
    """
    if not isinstance(op, Op):
        raise TypeError(f"register: expected an Op, got {type(op).__name__}")
    if not isinstance(replace, bool):
        raise TypeError(f"register: replace must be True or False, got {replace!r}")
    key = name or op.name
    if key in _REGISTRY and _REGISTRY[key].op is not op and not replace:
        raise ValueError(_taken("register", "op", key))
    _REGISTRY[key] = Entry(op, example)
    return op


def _taken(fn: str, what: str, key: str) -> str:
    return (
        f"{fn}: the name {key!r} is already registered to another {what}; pass replace=True to "
        "replace it (e.g. when re-running a notebook cell), or choose another name"
    )


def register_loss(
    loss: Loss,
    example: Callable[[Array], tuple[Array, Array]] | None = None,
    *,
    replace: bool = False,
) -> Loss:
    """Add ``loss`` to the loss registry with ``example(key) -> (pred, target)``; returns it.

    A different loss under a taken name is a ``ValueError`` unless ``replace=True``
    (see :func:`register`).
    """
    if not isinstance(loss, Loss):
        raise TypeError(f"register_loss: expected a Loss, got {type(loss).__name__}")
    if not isinstance(replace, bool):
        raise TypeError(f"register_loss: replace must be True or False, got {replace!r}")
    if loss.name in _LOSSES and _LOSSES[loss.name].loss is not loss and not replace:
        raise ValueError(_taken("register_loss", "loss", loss.name))
    _LOSSES[loss.name] = LossEntry(loss, example)
    return loss


def registered() -> dict[str, Entry]:
    """The ops registered so far, ``{name: Entry(op, example)}``.

    The registry is completed by importing :mod:`jaxscratch.ops`, whose ``__init__`` imports every
    op module by name; :func:`jaxscratch.ops.registry` does that and is what callers use. The core
    never imports upward to find ops.
    """
    return dict(_REGISTRY)


def registered_losses() -> dict[str, LossEntry]:
    """The losses registered so far, ``{name: LossEntry(loss, example)}`` (see :func:`registered`)."""
    return dict(_LOSSES)


def draw_dims(key: Array, *ranges: tuple[int, int]) -> tuple[int, ...]:
    """Distinct sizes, one from each inclusive ``(low, high)`` range, drawn from ``key``.

    Oracle examples use it so that examples drawn from different keys (by hypothesis) vary in shape
    as well as value, while staying non-square (no two sizes equal). Host integers, not traced.
    """
    import numpy as np

    seed = np.asarray(jax.random.key_data(key)).ravel().astype(np.uint64).tolist()
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        dims = tuple(int(rng.integers(lo, hi + 1)) for lo, hi in ranges)
        if len(set(dims)) == len(dims):
            return dims
    raise ValueError(f"draw_dims: cannot draw distinct sizes from {ranges}")


def apply(
    op: Op, params: Params, x: Any, *, key: Array | None = None, train: bool = True
) -> tuple[Any, Any]:
    """Call ``op.forward``, passing ``key``/``train`` to stochastic ops and ``train`` to stateful
    ones (``op.update`` set). Returns ``(y, cache)``."""
    if op.stochastic:
        return op.forward(params, x, key=key, train=train)
    if op.update is not None:
        return op.forward(params, x, train=train)
    return op.forward(params, x)


def update_state(op: Op, params: Params, cache: Any) -> Params:
    """``op.update(params, cache)`` for a stateful op; ``params`` unchanged otherwise."""
    return params if op.update is None else op.update(params, cache)


def identity_init(key: Array, in_shape: Shape) -> tuple[Shape, Params]:
    """Init for parameter-free, shape-preserving ops: ``(in_shape, ())``."""
    del key
    return tuple(in_shape), ()


def init_params(op: Op, key: Array, in_shape: Shape) -> tuple[Shape, Params]:
    """``op.init(key, in_shape)``, or :func:`identity_init` for ops without one."""
    return (op.init or identity_init)(key, tuple(in_shape))


def serial(*ops: Op, name: str | None = None) -> Op:
    """Compose ops left to right into one op (a network is an op).

    params: a tuple, one entry per op. forward: ``y = op_n(... op_1(x))``; cache: the tuple of the
    ops' caches. backward: the ops' backward passes in reverse order, each receiving the ``dx`` of
    the op after it; returns ``(tuple of dparams, dx)``. init splits one key per op. If any op is
    stochastic the composition is, and ``forward``'s ``key`` is split into one sub-key per stochastic
    op. If any op is stateful the composition is: ``update`` updates each stateful op's params from
    its cache.
    """
    if not ops:
        raise ValueError("serial: needs at least one op")
    for i, op in enumerate(ops):
        if not isinstance(op, Op):
            raise TypeError(f"serial: argument {i} is {type(op).__name__}, not an Op")
    n_stochastic = sum(op.stochastic for op in ops)
    stochastic = n_stochastic > 0

    def _check(params: Params) -> None:
        if not isinstance(params, tuple | list) or len(params) != len(ops):
            got = len(params) if isinstance(params, tuple | list) else type(params).__name__
            raise ValueError(f"serial: expected params for {len(ops)} ops, got {got}")

    def forward(
        params: Params, x: Any, *, key: Array | None = None, train: bool = True
    ) -> tuple[Any, Any]:
        _check(params)
        keys: list[Array | None] = [None] * len(ops)
        if stochastic and key is not None:
            sub = jax.random.split(key, n_stochastic)
            it = iter(sub)
            keys = [next(it) if op.stochastic else None for op in ops]
        caches = []
        for op, p, k in zip(ops, params, keys, strict=True):
            x, c = apply(op, p, x, key=k, train=train)
            caches.append(c)
        return x, tuple(caches)

    def backward(cache: Any, dy: Any) -> tuple[Any, Any]:
        grads = [None] * len(ops)
        for i in range(len(ops) - 1, -1, -1):
            grads[i], dy = ops[i].backward(cache[i], dy)
        return tuple(grads), dy

    def init(key: Array, in_shape: Shape) -> tuple[Shape, Params]:
        keys = jax.random.split(key, len(ops))
        params = []
        shape = tuple(in_shape)
        for op, k in zip(ops, keys, strict=True):
            shape, p = init_params(op, k, shape)
            params.append(p)
        return shape, tuple(params)

    def update(params: Params, cache: Any) -> Params:
        return tuple(update_state(op, p, c) for op, p, c in zip(ops, params, cache, strict=True))

    label = name or "serial(" + ", ".join(op.name for op in ops) + ")"
    stateful = any(op.update is not None for op in ops)
    return Op(label, forward, backward, init, stochastic, update if stateful else None)
