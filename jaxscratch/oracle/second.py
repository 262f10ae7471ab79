"""Second order and forward mode: the hand-written backward differentiated, a hand JVP checked.

**Second order** (``check_op(..., order=2)``). The hand backward defines a function of
``(params, x, dy)``: ``hand(p, x, dy) = op.backward(forward(p, x).cache, dy)``; the oracle's is
``auto(p, x, dy) = jax.vjp(forward)(dy)``. They agree at first order (the ordinary check). Here
both are differentiated once more, with a random cotangent ``u`` on their output, and
``jax.vjp(hand)(u)`` is compared with ``jax.vjp(auto)(u)`` (the backward of the backward against
``jax.vjp`` of ``jax.vjp``). A backward that treats part of its cache as a constant where it
depends on the inputs (a ``stop_gradient``, a value recomputed from something frozen, an integer
cast) passes the first check and fails this one, and so would silently give wrong Hessian-vector
products, meta-gradients or gradient penalties.

**Forward mode.** An op may carry a hand JVP, ``Op.jvp(params, x, dparams, dx) -> dy`` (the
directional derivative of the forward). It is checked against the hand backward by the adjoint
identity ``<J u, v> = <u, J^T v>`` for random ``u = (dparams, dx)`` and ``v = dy``, and against
``jax.jvp`` of the forward.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxscratch.oracle.compare import compare, random_like, vdot
from jaxscratch.oracle.explain import call


def second_order(
    op: Any, params: Any, x: Any, key: jax.Array, rtol: float
) -> tuple[float, float, str]:
    """(max abs, max rel, first failure or '') of the backward's own vjp against jax.vjp of
    jax.vjp, at a random cotangent ``dy`` and a random ``u`` (float64 inputs)."""
    drop_key, dy_key, u_key = jax.random.split(key, 3)

    def hand(p: Any, xx: Any, dy: Any) -> Any:
        return tuple(op.backward(call(op, p, xx, drop_key)[1], dy))

    def auto(p: Any, xx: Any, dy: Any) -> Any:
        _, f = jax.vjp(lambda a, b: call(op, a, b, drop_key)[0], p, xx)
        return tuple(f(dy))

    dy = random_like(dy_key, call(op, params, x, drop_key)[0])
    out_h, vjp_h = jax.vjp(hand, params, x, dy)
    u = random_like(u_key, out_h)
    _, vjp_a = jax.vjp(auto, params, x, dy)
    return compare(vjp_h(u), vjp_a(u), rtol)


def check_jvp(
    op: Any, params: Any, x: Any, key: jax.Array, rtol: float
) -> tuple[float, float, str]:
    """The op's hand JVP against ``jax.jvp`` of its forward, and the adjoint identity with its
    hand backward; ``(max abs, relative error, failure or '')``."""
    drop_key, u_key, v_key = jax.random.split(key, 3)
    fwd = lambda p, xx: call(op, p, xx, drop_key)[0]  # noqa: E731
    dp, dx = random_like(u_key, (params, x))
    hand = op.jvp(params, x, dp, dx)
    _, auto = jax.jvp(fwd, (params, x), (dp, dx))
    max_abs, max_rel, detail = compare(hand, auto, rtol)
    if detail:
        return max_abs, max_rel, f"jvp: {detail}"
    v = random_like(v_key, hand)
    lhs = float(vdot(hand, v))
    rhs = float(vdot((dp, dx), tuple(op.backward(call(op, params, x, drop_key)[1], v))))
    err = abs(lhs - rhs) / max(abs(lhs), abs(rhs), 1e-300)
    if not np.isfinite(err) or err > rtol * 10:
        return max_abs, err, f"adjoint identity: <J u, v> = {lhs:.12g}, <u, J^T v> = {rhs:.12g}"
    return max_abs, max(max_rel, err), ""
