"""How ``fit(step_mode="auto")`` chooses between a scanned period and one dispatch per batch.

``"scan"`` runs the epochs of an evaluation period as one compiled call; ``"step"`` dispatches one
compiled step per batch (still without host round trips). The results are the same; only the
speed differs. :func:`auto_step_mode` picks ``"step"`` only where it is measured to win.
"""

from __future__ import annotations

from typing import Any

import jax

from jaxscratch.core import Array, Loss, Op, Params
from jaxscratch.optim.optimizers import Optimizer
from jaxscratch.train.inputs import lr_dtype
from jaxscratch.train.programs import make_step

STEP_MODES = ("auto", "scan", "step")


def _channels_first_conv(jaxpr: Any) -> bool:
    """Whether a (closed) jaxpr, or any jaxpr nested in it, holds a convolution whose input or
    output keeps its feature axis anywhere but last (NCHW-like)."""
    inner = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in getattr(inner, "eqns", ()):
        if eqn.primitive.name == "conv_general_dilated":
            dn = eqn.params["dimension_numbers"]
            nd = len(dn.lhs_spec)
            if dn.lhs_spec[1] != nd - 1 or dn.out_spec[1] != nd - 1:
                return True
        for value in eqn.params.values():
            subs = value if isinstance(value, tuple | list) else (value,)
            for sub in subs:
                if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    if _channels_first_conv(sub):
                        return True
    return False


def auto_step_mode(
    net: Op,
    loss: Loss,
    optimizer: Optimizer,
    params: Params,
    opt_state: Any,
    X: Any,
    y: Any,
    batch_size: int,
    key: Array | None = None,
) -> str:
    """The step mode ``fit(step_mode="auto")`` uses: ``"scan"``, except ``"step"`` on the CPU
    when a training step contains a channels-first (NCHW) ``lax.conv_general_dilated``.

    Why: XLA:CPU rewrites a convolution to the channels-last layout its convolution kernel is fast
    at (NHWC, ``b01f``) in a flat program, but leaves it in the given NCHW layout (``bf01``)
    inside a while loop, i.e. inside ``lax.scan``. Measured on the book's CNN (2 CPU cores): the
    kernel-gradient convolution takes ~80 ms per batch in a scan against ~1 ms in NHWC, and the
    whole scanned epoch ran 3-4x slower than one dispatch per batch. Convolutions written as
    shifted multiply-adds or im2col matmuls (``conv2d(method="taps" | "im2col")``), channels-last
    ones, and networks without convolutions have no such penalty and get the scan, which saves
    the per-batch dispatch. The rule traces one step (no compilation); cached per configuration.
    """
    platform = jax.devices()[0].platform
    if platform != "cpu":
        return "scan"
    x_spec = jax.ShapeDtypeStruct((batch_size, *X.shape[1:]), X.dtype)
    y_spec = jax.ShapeDtypeStruct((batch_size, *y.shape[1:]), y.dtype)
    cache_key = (net, loss, optimizer, x_spec, y_spec, jax.tree.structure(params))
    if cache_key not in _AUTO_MODES:
        step = make_step(net, loss, optimizer)
        lr = jax.ShapeDtypeStruct((), lr_dtype(params))
        use_key = key if net.stochastic else None
        jaxpr = jax.make_jaxpr(step)(params, opt_state, x_spec, y_spec, lr, use_key)
        if len(_AUTO_MODES) > 256:
            _AUTO_MODES.clear()
        _AUTO_MODES[cache_key] = "step" if _channels_first_conv(jaxpr) else "scan"
    return _AUTO_MODES[cache_key]


_AUTO_MODES: dict[Any, str] = {}
