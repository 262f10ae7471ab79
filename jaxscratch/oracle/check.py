"""The gradient oracle: hand-derived backward passes against ``jax.vjp`` and finite differences.

``check_op(op, params, x)`` runs, in float64:

1. **vjp**: a random cotangent ``dy`` (never all ones: softmax's VJP of ones is ~0), the op's
   ``backward(cache, dy)`` against ``jax.vjp(lambda p, x: forward(p, x)[0], params, x)`` applied to
   the same ``dy``. Every leaf must satisfy ``|manual - oracle| <= rtol * (|oracle| + max|oracle|)``
   (an error relative to the entry and to the leaf's scale; default ``rtol=1e-10``). Tree
   structures and shapes must match exactly, so a missing or mis-shaped gradient fails.
2. **finite differences** (independent of JAX's autodiff): for one random direction over all
   inputs and one per input leaf, the central difference of ``<dy, forward(.)>`` against the
   directional derivative given by the manual gradients (relative tolerance ``fd_rtol``).

Stochastic ops run with a fixed key (the same mask in every evaluation). ``jax.grad``/``jax.vjp``
live here and in tests only, never in a training path.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxscratch.core import Loss, Op, apply
from jaxscratch.ops import loss_registry, registry
from jaxscratch.validate import check_int

ORACLE_KEY_SEED = 0


@dataclass
class Report:
    """One oracle verdict. Errors are maxima over all gradient leaves."""

    name: str
    passed: bool
    vjp_max_abs: float
    vjp_max_rel: float
    fd_max_rel: float
    detail: str = ""

    def row(self) -> str:
        status = "PASS" if self.passed else "FAIL"
        extra = f"  {self.detail}" if self.detail and not self.passed else ""
        return (
            f"{self.name:<40} {self.vjp_max_abs:10.2e} {self.vjp_max_rel:10.2e} "
            f"{self.fd_max_rel:10.2e}  {status}{extra}"
        )


HEADER = f"{'op':<40} {'max abs':>10} {'max rel':>10} {'fd rel':>10}  result"


def _is_float(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)


def _to64(tree: Any) -> Any:
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) if _is_float(a) else a, tree)


def _random_like(key: jax.Array, tree: Any) -> Any:
    """Standard normal float64 leaves shaped like ``tree``'s float leaves (zeros elsewhere).

    Drawn with numpy from a seed taken from ``key``: a ``jax.random`` draw would compile once per
    new shape, which dominated the oracle's run time.
    """
    leaves, treedef = jax.tree.flatten(tree)
    seed = np.asarray(jax.random.key_data(key)).ravel().astype(np.uint64)
    rng = np.random.default_rng(seed.tolist())
    out = [
        jnp.asarray(rng.standard_normal(jnp.shape(a)), jnp.float64)
        if _is_float(a)
        else jnp.zeros_like(a)
        for a in leaves
    ]
    return jax.tree.unflatten(treedef, out)


def _vdot(a: Any, b: Any) -> jax.Array:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return sum(
        (jnp.vdot(x, y) for x, y in zip(la, lb, strict=True) if _is_float(x)), jnp.float64(0.0)
    )


def _compare(manual: Any, oracle: Any, rtol: float) -> tuple[float, float, str]:
    """(max abs error, max error relative to the leaf scale, first failure or '')."""
    m_leaves, m_def = jax.tree.flatten(manual)
    o_leaves, o_def = jax.tree.flatten(oracle)
    if m_def != o_def:  # type: ignore[operator]  # jax stubs: PyTreeDef comes from untyped jaxlib
        return np.inf, np.inf, f"gradient structure {m_def} != oracle {o_def}"
    max_abs = max_rel = 0.0
    detail = ""
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(oracle)[0]]
    for path, m, o in zip(paths, m_leaves, o_leaves, strict=True):
        if not _is_float(o):
            continue
        if jnp.shape(m) != jnp.shape(o):
            return np.inf, np.inf, f"gradient{path} has shape {jnp.shape(m)}, oracle {jnp.shape(o)}"
        m, o = np.asarray(m, np.float64), np.asarray(o, np.float64)
        err = np.abs(m - o)
        if not np.all(np.isfinite(m)):
            return np.inf, np.inf, f"gradient{path} is not finite"
        scale = float(np.max(np.abs(o))) if o.size else 0.0
        leaf_abs = float(err.max()) if err.size else 0.0
        leaf_rel = leaf_abs / scale if scale > 0 else (0.0 if leaf_abs == 0 else np.inf)
        max_abs, max_rel = max(max_abs, leaf_abs), max(max_rel, leaf_rel)
        if not detail and np.any(err > rtol * (np.abs(o) + scale)):
            i = np.unravel_index(int(np.argmax(err - rtol * np.abs(o))), err.shape)
            detail = f"gradient{path}{[int(v) for v in i]}: manual {m[i]:.6g}, oracle {o[i]:.6g}"
    return max_abs, max_rel, detail


def _fd_check(
    f, args: tuple, grads: tuple, key: jax.Array, eps: float, per_leaf: bool = True
) -> tuple[float, str]:
    """Central differences of scalar ``f(*args)`` along random directions vs ``<grads, d>``.

    One direction moves every input at once; with ``per_leaf``, one more per input leaf, so an
    error in a small leaf (a bias) is not drowned by a large one.
    """
    leaves, treedef = jax.tree.flatten(args)
    float_idx = [i for i, a in enumerate(leaves) if _is_float(a) and jnp.size(a) > 0]
    directions = [None] + (float_idx if per_leaf else [])  # None: all leaves at once
    worst, detail = 0.0, ""
    g_leaves = jax.tree.leaves(grads)
    for n, only in enumerate(directions):
        key, sub = jax.random.split(key)
        d = _random_like(sub, args)
        if only is not None:
            d_leaves = jax.tree.leaves(d)
            d_leaves = [dl if i == only else jnp.zeros_like(dl) for i, dl in enumerate(d_leaves)]
            d = jax.tree.unflatten(treedef, d_leaves)
        d_leaves = jax.tree.leaves(d)

        def shift(s, d_leaves=d_leaves):
            moved = [
                a + s * dl if _is_float(a) else a for a, dl in zip(leaves, d_leaves, strict=True)
            ]
            return jax.tree.unflatten(treedef, moved)

        fd = (float(f(*shift(eps))) - float(f(*shift(-eps)))) / (2 * eps)
        terms = [
            np.asarray(g, np.float64) * np.asarray(dl, np.float64)
            for g, dl, a in zip(g_leaves, d_leaves, leaves, strict=True)
            if _is_float(a)
        ]
        analytic = float(sum(t.sum() for t in terms))
        scale = float(sum(np.abs(t).sum() for t in terms)) + 1e-12
        rel = abs(fd - analytic) / scale
        if rel > worst:
            worst = rel
            what = "all inputs" if only is None else f"input leaf {only}"
            detail = f"finite difference {fd:.8g} vs manual {analytic:.8g} along {what}"
        del n
    return worst, detail


def _make_compiled(op: Any, stochastic: bool) -> tuple[Callable, Callable]:
    def y_of(p, xx, key):
        if stochastic:
            return op.forward(p, xx, key=key, train=True)[0]
        return op.forward(p, xx)[0]

    return jax.jit(y_of), jax.jit(lambda p, xx, key, dy: _vdot(dy, y_of(p, xx, key)))


_compiled_cached = functools.lru_cache(maxsize=512)(_make_compiled)


def _compiled(op: Any, stochastic: bool) -> tuple[Callable, Callable]:
    """Jitted ``y(params, x, key)`` and ``<dy, y>`` for ``op``, cached per op when it is hashable,
    so many examples of one op with the same shapes compile once."""
    try:
        return _compiled_cached(op, stochastic)
    except TypeError:  # an unhashable user op
        return _make_compiled(op, stochastic)


def check_op(
    op: Any,
    params: Any,
    x: Any,
    *,
    key: jax.Array | None = None,
    rtol: float = 1e-10,
    fd_rtol: float = 1e-6,
    fd_eps: float = 1e-6,
    fd_per_leaf: bool = True,
    name: str | None = None,
) -> Report:
    """Check ``op.backward`` (any object with ``forward``/``backward``) at ``(params, x)``.

    Returns a :class:`Report` whose ``passed`` is true when both the vjp and the finite-difference
    comparisons pass. Inputs are cast to float64 for the check. ``fd_per_leaf=False`` checks
    finite differences along one random direction only (cheaper, for many random examples).
    """
    label = name or str(getattr(op, "name", type(op).__name__))
    stochastic = bool(getattr(op, "stochastic", False))
    with jax.enable_x64(True):
        params, x = _to64(params), _to64(x)
        seed_key = key if key is not None else jax.random.key(ORACLE_KEY_SEED)
        drop_key, ct_key, fd_key = jax.random.split(seed_key, 3)

        fwd_y, scalar = _compiled(op, stochastic)

        def fwd(p, xx):
            if stochastic:
                return op.forward(p, xx, key=drop_key, train=True)
            return op.forward(p, xx)

        try:
            y, cache = fwd(params, x)
            dy = _random_like(ct_key, y)
            manual = op.backward(cache, dy)
            _, vjp_fn = jax.vjp(lambda p, xx: fwd_y(p, xx, drop_key), params, x)
            oracle = vjp_fn(dy)
        except (ValueError, TypeError) as e:
            return Report(label, False, np.inf, np.inf, np.inf, f"{type(e).__name__}: {e}")
        if not isinstance(manual, tuple) or len(manual) != 2:
            return Report(
                label, False, np.inf, np.inf, np.inf, "backward must return (dparams, dx)"
            )
        max_abs, max_rel, detail = _compare(tuple(manual), tuple(oracle), rtol)
        if max_abs == np.inf:
            return Report(label, False, max_abs, max_rel, np.inf, detail)
        fd_rel, fd_detail = _fd_check(
            lambda p, xx: scalar(p, xx, drop_key, dy),
            (params, x),
            tuple(manual),
            fd_key,
            fd_eps,
            fd_per_leaf,
        )
    vjp_ok = not detail
    fd_ok = fd_rel <= fd_rtol
    passed = vjp_ok and fd_ok
    return Report(label, passed, max_abs, max_rel, fd_rel, detail or ("" if fd_ok else fd_detail))


def check_loss(
    loss: Loss,
    pred: Any,
    target: Any,
    *,
    key: jax.Array | None = None,
    rtol: float = 1e-10,
    fd_rtol: float = 1e-6,
    fd_eps: float = 1e-6,
) -> Report:
    """Check ``loss.backward`` against ``jax.vjp`` of ``loss.forward`` in ``pred`` and finite differences.

    The loss is treated as an op with ``params=()`` and input ``pred``; the target is fixed.
    """

    def forward(params, p):
        value, cache = loss.forward(p, target)
        return value, cache

    def backward(cache, dl):
        return (), dl * loss.backward(cache)

    return check_op(
        Op(loss.name, forward, backward),
        (),
        pred,
        key=key,
        rtol=rtol,
        fd_rtol=fd_rtol,
        fd_eps=fd_eps,
        name=f"loss:{loss.name}",
    )


def _registry_entries(names: Sequence[str] | None) -> Iterator[tuple[str, str, Any]]:
    """``(kind, label, entry)`` for every registered op, then every loss, selected by ``names``
    (a loss matches its name or ``loss:<name>``), each group in name order."""
    for name, entry in sorted(registry().items()):
        if not names or name in names:
            yield "op", name, entry
    for name, lentry in sorted(loss_registry().items()):
        label = f"loss:{name}"
        if not names or name in names or label in names:
            yield "loss", label, lentry


def _check_entry(kind: str, label: str, entry: Any, key: jax.Array) -> Report:
    """The oracle on one registry entry's example, drawn from ``fold_in(key, crc32(label))``."""
    if entry.example is None:
        return Report(label, False, np.inf, np.inf, np.inf, "no oracle example")
    with jax.enable_x64(True):
        a, b = entry.example(jax.random.fold_in(key, zlib.crc32(label.encode())))
        if kind == "op":
            return check_op(entry.op, a, b, name=label)
        return check_loss(entry.loss, a, b)


def iter_registry(names: Sequence[str] | None = None, seed: int = 0) -> Iterator[Report]:
    """Check every registered op and loss (or those in ``names``), yielding each
    :class:`Report` as soon as it is done (ops in name order, then losses as ``loss:<name>``).

    Each example is drawn from ``fold_in(jax.random.key(seed), crc32(name))``, so a row does not
    depend on which other rows are checked. float64 is enabled only while a row is computed.
    """
    key = jax.random.key(check_int("iter_registry", "seed", seed))
    for kind, label, entry in _registry_entries(names):
        yield _check_entry(kind, label, entry, key)


def check_registry(names: Sequence[str] | None = None, seed: int = 0) -> list[Report]:
    """Every report of :func:`iter_registry`, as a list."""
    return list(iter_registry(names, seed))


def format_report(report: Report) -> str:
    """One row of the oracle table (columns as :data:`HEADER`): name, max abs and max rel vjp
    error, finite-difference rel error, PASS/FAIL and, for a failure, the reason."""
    return report.row()


def format_summary(reports: Sequence[Report]) -> str:
    """The oracle table's last line: ``oracle: P/N ops and losses pass (all pass | K FAIL)``."""
    n_fail = sum(not r.passed for r in reports)
    verdict = "all pass" if n_fail == 0 else f"{n_fail} FAIL"
    return f"oracle: {len(reports) - n_fail}/{len(reports)} ops and losses pass ({verdict})"


def format_reports(reports: Sequence[Report]) -> str:
    """The oracle table: :data:`HEADER`, one :func:`format_report` row per report, then
    :func:`format_summary`."""
    return "\n".join([HEADER, *(format_report(r) for r in reports), format_summary(reports)])


__all__ = [
    "HEADER",
    "Report",
    "apply",
    "check_loss",
    "check_op",
    "check_registry",
    "format_report",
    "format_reports",
    "format_summary",
    "iter_registry",
]
