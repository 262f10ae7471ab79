"""Data-parallel training on JAX's sharding: a one-axis device mesh and the shardings ``fit`` uses.

:func:`jaxscratch.train.fit` takes ``mesh=`` (a :class:`jax.sharding.Mesh` with a ``"data"`` axis,
or a device count). Each gathered batch is constrained to ``NamedSharding(mesh, P("data"))`` (rows
split across the devices of the ``data`` axis) and parameters, optimizer state and the training set
are replicated (``P()``). The hand-derived backward pass is written for one batch, exactly as on one
device; XLA's SPMD partitioner sees that ``dW = x.T @ dz`` contracts over the sharded batch axis and
inserts the all-reduce itself. Nothing here sums gradients by hand.

Several hosts: call ``jax.distributed.initialize()`` in every process, build the mesh over
``jax.devices()`` (all processes' devices), and feed each host's rows with
``jax.make_array_from_process_local_data(batch_sharding(mesh), local_rows)``; the compiled step is
the same program on every host.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def data_mesh(devices: int | Sequence[Any] | None = None) -> Mesh:
    """A one-axis mesh named ``"data"``.

    devices: ``None`` (all of ``jax.devices()``), a count ``k`` (the first ``k`` devices), or a
    sequence of devices.
    """
    available = jax.devices()
    if devices is None:
        chosen = list(available)
    elif isinstance(devices, bool):
        raise TypeError(
            "data_mesh: devices must be None, a device count or a sequence of devices, "
            f"got {devices!r}"
        )
    elif isinstance(devices, int | np.integer):
        k = int(devices)
        if k < 1 or k > len(available):
            raise ValueError(
                f"data_mesh: asked for {k} devices, but {len(available)} are available "
                f"({available[0].platform}); on CPU, XLA_FLAGS="
                f"--xla_force_host_platform_device_count={max(k, 1)} simulates more"
            )
        chosen = list(available[:k])
    else:
        chosen = list(devices)
        if not chosen:
            raise ValueError("data_mesh: the device list is empty")
    return Mesh(np.array(chosen, dtype=object), (DATA_AXIS,))


def resolve_mesh(mesh: Mesh | int | None) -> Mesh | None:
    """``fit``'s ``mesh`` argument as a :class:`Mesh` with a ``"data"`` axis, or ``None``."""
    if mesh is None:
        return None
    if isinstance(mesh, Mesh):
        if DATA_AXIS not in mesh.axis_names:
            raise ValueError(
                f"fit: the mesh has axes {mesh.axis_names}; data parallelism needs an axis "
                f"named {DATA_AXIS!r}"
            )
        return mesh
    if isinstance(mesh, int | np.integer) and not isinstance(mesh, bool):
        return data_mesh(int(mesh))
    raise TypeError(
        f"fit: mesh must be a jax.sharding.Mesh, a device count or None, got {type(mesh).__name__}"
    )


def data_size(mesh: Mesh) -> int:
    """The number of devices along the ``"data"`` axis."""
    return int(mesh.shape[DATA_AXIS])


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows split along the ``"data"`` axis; other axes (and other mesh axes) replicated."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh."""
    return NamedSharding(mesh, P())


def check_batch_size(fn: str, batch_size: int, mesh: Mesh) -> None:
    """Reject a batch size that the ``"data"`` axis does not divide (a ``ValueError`` naming both)."""
    k = data_size(mesh)
    if batch_size % k:
        raise ValueError(
            f"{fn}: batch size {batch_size} is not divisible by the {k} devices of the mesh's "
            f"{DATA_AXIS!r} axis; use a batch size that is a multiple of {k}"
        )


def shard_batch(x: Any, mesh: Mesh | None) -> Any:
    """Inside ``jit``: constrain a batch (any pytree of arrays with rows first) to the data axis.

    A batch whose row count the ``"data"`` axis does not divide (the short last batch of an epoch)
    is constrained to be replicated instead: every device computes it whole (same result, no
    speed-up), rather than XLA padding it.
    """
    if mesh is None:
        return x
    k = data_size(mesh)

    def one(a):
        spec = batch_sharding(mesh) if a.ndim and a.shape[0] % k == 0 else replicated(mesh)
        return jax.lax.with_sharding_constraint(a, spec)

    return jax.tree.map(one, x)


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Outside ``jit``: put every array of ``tree`` on all devices of ``mesh`` (``None``: as is)."""
    if mesh is None:
        return tree
    return jax.device_put(tree, replicated(mesh))


def constrain_replicated(tree: Any, mesh: Mesh | None) -> Any:
    """Inside ``jit``: constrain every array of ``tree`` to be replicated (e.g. updated params)."""
    if mesh is None:
        return tree
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, replicated(mesh)), tree)
