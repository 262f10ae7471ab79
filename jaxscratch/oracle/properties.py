"""Properties of a backward pass beyond one vjp, each a named check (``check_op(...,
properties=True)``; opt-in: together they cost about as much as the vjp check itself).

* ``linear-in-dy``: ``backward(cache, a dy1 + b dy2) = a backward(cache, dy1) + b backward(cache,
  dy2)`` (a backward that squares or clips its cotangent is not a vjp).
* ``per-sample``: an op is *per-sample* when the oracle says so: ``jax.vjp`` of its forward, fed a
  cotangent on one sample, gives a dx that is zero on every other sample (dense, activations,
  conv, pool, the recurrent ops; not batch norm, whose statistics mix the batch). For such an op
  the manual dx must be zero there too; for another op the check is skipped (``skipped=True``).
  ``check_op(..., per_sample=True/False)`` overrides the detection.
* ``jit``, ``vmap``, ``scan``: forward and backward together (as training runs them) give the
  eager result under ``jax.jit``, under ``jax.vmap`` over the batch (each sample a batch of one;
  dx rows stacked, dparams summed; per-sample deterministic ops only) and inside ``lax.scan``.
* ``float32``: the backward on float32 inputs is within :data:`F32_BOUND` of the float64 result
  (per leaf, relative to the leaf's largest entry) and returns float32 gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxscratch.oracle.compare import (
    batch_size,
    compare,
    is_float,
    mask_sample,
    random_like,
    to_dtype,
)

F32_BOUND = 1e-4  # max |g32 - g64| / max |g64| per gradient leaf
PROPERTY_NAMES = ("linear-in-dy", "per-sample", "jit", "vmap", "scan", "float32")


@dataclass(frozen=True)
class Check:
    """One named property check: passed, why not (or why skipped), skipped."""

    name: str
    passed: bool
    detail: str = ""
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "detail": self.detail, "skipped": self.skipped}


def _agree(name: str, got: Any, want: Any, rtol: float, what: str) -> Check:
    try:
        detail = compare(tuple(got), tuple(want), rtol)[2]
    except (TypeError, ValueError) as e:
        detail = f"{type(e).__name__}: {e}"
    return Check(name, not detail, f"{what}: {detail}" if detail else "")


class _Subject:
    """An op at one example: forward+backward as a function of (params, x, dy)."""

    def __init__(self, op: Any, params: Any, x: Any, key: Any, dy: Any, manual: Any) -> None:
        self.op, self.params, self.x, self.key, self.dy, self.manual = (
            op,
            params,
            x,
            key,
            dy,
            manual,
        )
        self.stochastic = bool(getattr(op, "stochastic", False))

    def grads(self, p: Any, xx: Any, d: Any) -> Any:
        if self.stochastic:
            _, cache = self.op.forward(p, xx, key=self.key, train=True)
        else:
            _, cache = self.op.forward(p, xx)
        return tuple(self.op.backward(cache, d))


def _linear(s: _Subject, dy2: Any, rtol: float) -> Check:
    a, b = 0.7, -1.3
    mix = lambda u, v: a * u + b * v if is_float(u) else u  # noqa: E731  # float0 / int as they are
    mixed = jax.tree.map(mix, s.dy, dy2)
    g2 = s.grads(s.params, s.x, dy2)
    want = jax.tree.map(mix, s.manual, g2)
    return _agree("linear-in-dy", s.grads(s.params, s.x, mixed), want, rtol, "a dy1 + b dy2")


def _is_per_sample(s: _Subject, n: int | None) -> bool:
    if not n or n < 2 or s.stochastic:
        return False
    y_of = lambda p, xx: s.op.forward(p, xx)[0]  # noqa: E731
    _, vjp_fn = jax.vjp(y_of, s.params, s.x)
    for leaf in jax.tree.leaves(vjp_fn(mask_sample(s.dy, 0, n))[1]):
        if (
            is_float(leaf)
            and np.ndim(leaf)
            and np.shape(leaf)[0] == n
            and np.any(np.asarray(leaf)[1:] != 0)
        ):
            return False
    return True


def _per_sample(s: _Subject, n: int | None, per_sample: bool) -> Check:
    if not per_sample or not n:
        return Check("per-sample", True, "skipped: not a per-sample op", skipped=True)
    for i in range(min(n or 0, 2)):
        for leaf in jax.tree.leaves(s.grads(s.params, s.x, mask_sample(s.dy, i, n))[1]):
            if is_float(leaf) and np.ndim(leaf) and np.shape(leaf)[0] == n:
                rest = np.delete(np.asarray(leaf), i, axis=0)
                if np.any(rest != 0):
                    return Check(
                        "per-sample", False, f"dy on sample {i} alone moves dx of other samples"
                    )
    return Check("per-sample", True)


def _vmap(s: _Subject, per_sample: bool, rtol: float) -> Check:
    if not per_sample:
        return Check(
            "vmap", True, "skipped: vmap over the batch needs a per-sample op", skipped=True
        )
    one = lambda t: jax.tree.map(lambda a: a[None], t)  # noqa: E731
    rows = jax.vmap(lambda xi, di: s.grads(s.params, one(xi), one(di)))(s.x, s.dy)
    dparams = jax.tree.map(lambda a: jnp.sum(a, axis=0), rows[0])
    dx = jax.tree.map(lambda a: a[:, 0], rows[1])
    return _agree("vmap", (dparams, dx), s.manual, rtol, "vmap over samples")


def _scan(s: _Subject, dy2: Any, rtol: float) -> Check:
    dys = jax.tree.map(lambda a, b: jnp.stack([a, b]), s.dy, dy2)
    # params and x ride in the carry, traced as in a training loop's scan
    _, out = jax.lax.scan(lambda c, d: (c, s.grads(c[0], c[1], d)), (s.params, s.x), dys)
    first = jax.tree.map(lambda a: a[0], out)
    return _agree("scan", first, s.manual, rtol, "inside lax.scan")


def _float32(s: _Subject) -> Check:
    p32, x32, d32 = (to_dtype(t, jnp.float32) for t in (s.params, s.x, s.dy))
    g32 = s.grads(p32, x32, d32)
    worst, where = 0.0, ""
    for g, r in zip(jax.tree.leaves(g32), jax.tree.leaves(s.manual), strict=True):
        if not is_float(r):
            continue
        if jnp.asarray(g).dtype != jnp.float32:
            return Check("float32", False, f"a float32 backward returned {jnp.asarray(g).dtype}")
        r64 = np.asarray(r, np.float64)
        scale = float(np.max(np.abs(r64))) if r64.size else 0.0
        err = float(np.max(np.abs(np.asarray(g, np.float64) - r64))) if r64.size else 0.0
        rel = err / scale if scale > 0 else err
        if rel > worst:
            worst, where = rel, f"max error {rel:.2e} of the leaf scale"
    ok = worst <= F32_BOUND
    return Check("float32", ok, "" if ok else f"{where} > {F32_BOUND:g}")


def run_properties(
    op: Any,
    params: Any,
    x: Any,
    key: Any,
    dy: Any,
    manual: Any,
    *,
    rtol: float = 1e-10,
    per_sample: bool | None = None,
) -> dict[str, Check]:
    """Every check of :data:`PROPERTY_NAMES` on ``op`` at ``(params, x)`` (float64) with cotangent
    ``dy`` and the eager manual gradients ``manual``; ``{name: Check}``."""
    s = _Subject(op, params, x, key, dy, tuple(manual))
    dy2 = random_like(jax.random.fold_in(jax.random.key(1), 7), dy)
    n = batch_size(x)
    ps = _is_per_sample(s, n) if per_sample is None else per_sample
    tol = max(rtol, 1e-9)
    runs = {
        "linear-in-dy": lambda: _linear(s, dy2, tol),
        "per-sample": lambda: _per_sample(s, n, ps),
        "jit": lambda: _agree("jit", jax.jit(s.grads)(params, x, dy), s.manual, tol, "under jit"),
        "vmap": lambda: _vmap(s, ps and not s.stochastic, tol),
        "scan": lambda: _scan(s, dy2, tol),
        "float32": lambda: _float32(s),
    }
    out = {}
    for name, run in runs.items():
        try:
            out[name] = run()
        except Exception as e:  # noqa: BLE001  # a transform the op does not survive is a failure
            out[name] = Check(name, False, f"{type(e).__name__}: {str(e)[:200]}")
    return out
