"""Data-parallel training across processes (hosts) on JAX's own distributed runtime.

Every process runs the same program::

    from jaxscratch.train import distributed
    distributed.initialize("10.0.0.1:23456", num_processes=2, process_id=i)   # first JAX call
    res = distributed.fit_processes(net, loss, optimizer, params, X, y, key=key,
                                    epochs=20, batch_size=64, lr=0.01)

``jax.devices()`` then lists every process's devices, and one mesh over all of them carries the
``"data"`` axis (:mod:`jaxscratch.train.parallel`). Each global batch is exactly the batch
:func:`jaxscratch.train.fit` takes at that step (the same ``fold_in(data_key, epoch)``
permutation, the same dropout keys), but **each process feeds only its own rows** of it, with
``jax.make_array_from_process_local_data``: process ``p`` of ``P`` reads rows
``[p * bs / P, (p + 1) * bs / P)`` of every global batch, so ``X``/``y`` may be ``numpy.memmap``
files of which a process touches only its rows. Params and optimizer state are replicated; the
step is :func:`~jaxscratch.train.programs.make_step` (the hand-derived backward) compiled once as
one SPMD program, whose gradient all-reduce XLA inserts and the collectives (gloo on CPU) carry
across processes. The result equals one-process ``fit(..., stopping=None)`` to float64 rounding
(the all-reduce sums in another order). A short last batch that ``P`` devices do not divide is fed
whole by every process and computed replicated. No evaluation or early stopping here: every
process gets the trained params; evaluate them with ``predict``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh

from jaxscratch.core import Array, Loss, Op, Params
from jaxscratch.optim.optimizers import Optimizer
from jaxscratch.train import parallel
from jaxscratch.train.programs import make_step
from jaxscratch.train.shuffle import permutation
from jaxscratch.validate import check_lr, check_positive_int


def initialize(coordinator: str, num_processes: int, process_id: int) -> None:
    """``jax.distributed.initialize`` for ``num_processes`` processes, this one ``process_id``;
    on CPU the cross-process collectives are gloo's. Call it before any other JAX call."""
    num_processes = check_positive_int("initialize", "num_processes", num_processes)
    if not 0 <= int(process_id) < num_processes:
        raise ValueError(
            f"initialize: process_id must be in 0..{num_processes - 1}, got {process_id!r}"
        )
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=int(process_id)
    )


class ProcessesResult(NamedTuple):
    """The trained ``params`` and ``opt_state`` (host numpy copies, the same in every process)
    and ``train_loss``: each epoch's mean batch loss."""

    params: Params
    opt_state: Any
    train_loss: list[float]


def _global(mesh: Mesh, tree: Any, sharded: bool) -> Any:
    """Host arrays as global arrays: ``sharded``, each leaf holds this process's rows;
    otherwise a full (replicated) copy, the same in every process."""
    spec = parallel.batch_sharding(mesh) if sharded else parallel.replicated(mesh)
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(spec, np.asarray(a)), tree)


@functools.lru_cache(maxsize=16)
def _step(net: Op, loss: Loss, optimizer: Optimizer, mesh: Mesh) -> Any:
    step = make_step(net, loss, optimizer)
    rep = parallel.replicated(mesh)

    def run(params, state, xb, yb, lr, key_data, epoch, b):
        key = None
        if net.stochastic:
            drop_key = jax.random.wrap_key_data(key_data)
            key = jax.random.fold_in(jax.random.fold_in(drop_key, epoch), b)
        return step(params, state, xb, yb, lr, key)

    return jax.jit(run, out_shardings=(rep, rep, rep))


def _feed(mesh: Mesh, X: Any, y: Any, idx: np.ndarray) -> tuple[Any, Any]:
    """The global batch of rows ``idx``: this process's slice of it, or all of it replicated
    when the processes do not divide it."""
    procs, me = jax.process_count(), jax.process_index()
    if len(idx) % parallel.data_size(mesh) == 0 and len(idx) % procs == 0:
        part = len(idx) // procs
        mine = np.sort(idx[me * part : (me + 1) * part])
        order = np.argsort(np.argsort(idx[me * part : (me + 1) * part]))
        return _global(mesh, (np.asarray(X[mine])[order], np.asarray(y[mine])[order]), True)
    return _global(mesh, (np.asarray(X[np.sort(idx)]), np.asarray(y[np.sort(idx)])), False)


def fit_processes(
    net: Op,
    loss: Loss,
    optimizer: Optimizer,
    params: Params,
    X: Any,
    y: Any,
    *,
    key: Array,
    epochs: int,
    batch_size: int,
    lr: float = 0.01,
) -> ProcessesResult:
    """Train across every process (see the module docstring). ``params``: the initial params,
    the same in every process; X (n, ...), y (n, ...): the training set as host arrays (each
    process reads only its rows of each batch); ``key``: the run's root key, as ``fit``'s."""
    epochs = check_positive_int("fit_processes", "epochs", epochs)
    bs = check_positive_int("fit_processes", "batch_size", batch_size)
    lr = check_lr("fit_processes", lr)
    n = len(X)
    if len(y) != n:
        raise ValueError(f"fit_processes: X has {n} rows but y has {len(y)}")
    bs = min(bs, n)
    mesh = parallel.data_mesh()
    if bs % jax.process_count():
        raise ValueError(
            f"fit_processes: batch size {bs} is not divisible by the {jax.process_count()} "
            "processes"
        )
    parallel.check_batch_size("fit_processes", bs, mesh)
    data_key, drop_key = jax.random.split(key)
    key_data = np.asarray(jax.random.key_data(drop_key))
    step = _step(net, loss, optimizer, mesh)
    p, s = _global(mesh, (params, optimizer.init(params)), False)
    dtype = min((np.dtype(a.dtype) for a in jax.tree.leaves(params)), key=lambda d: d.itemsize)
    lr_g, kd = _global(mesh, (np.asarray(lr, dtype), key_data), False)
    losses: list[float] = []
    for e in range(epochs):
        perm = np.asarray(permutation(jax.random.fold_in(data_key, e), n))
        starts = range(0, n, bs)
        values, sizes = [], []
        for b, start in enumerate(starts):
            idx = perm[start : start + bs]
            xb, yb = _feed(mesh, X, y, idx)
            e_g, b_g = _global(mesh, (np.int32(e), np.int32(b)), False)
            p, s, value = step(p, s, xb, yb, lr_g, kd, e_g, b_g)
            values.append(value)
            sizes.append(len(idx))
        epoch_losses = np.array([float(v.addressable_data(0)) for v in values])
        losses.append(float(np.dot(epoch_losses, sizes) / sum(sizes)))
    host = jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), (p, s))
    return ProcessesResult(host[0], host[1], losses)
