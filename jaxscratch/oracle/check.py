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

A failure is diagnosed from the numbers (``Report.diagnosis``: a scale, a sign, a transpose, a
wrong axis, a missing term, mixed samples, ...; :mod:`jaxscratch.oracle.diagnose`) and located
(``Report.location``: the leaf and worst entry, the first wrong layer of a network, the time step
and gate of a recurrence; :mod:`jaxscratch.oracle.localise`). ``properties=True`` adds the named
checks of :mod:`jaxscratch.oracle.properties` (linearity in ``dy``, per-sample independence, jit,
vmap, scan, float32).

Stochastic ops run with a fixed key (the same mask in every evaluation). ``jax.grad``/``jax.vjp``
live here and in tests only, never in a training path.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxscratch.core import Loss, Op, apply
from jaxscratch.ops import loss_registry, registry
from jaxscratch.oracle.compare import compare as _compare
from jaxscratch.oracle.compare import is_float as _is_float
from jaxscratch.oracle.compare import random_like as _random_like
from jaxscratch.oracle.compare import to64 as _to64
from jaxscratch.oracle.compare import vdot as _vdot
from jaxscratch.oracle.diagnose import Diagnosis
from jaxscratch.oracle.explain import FD_ONLY, call, explain
from jaxscratch.oracle.localise import Location
from jaxscratch.oracle.properties import Check, run_properties
from jaxscratch.oracle.second import check_jvp, second_order
from jaxscratch.validate import check_int

ORACLE_KEY_SEED = 0


@dataclass
class Report:
    """One oracle verdict. Errors are maxima over all gradient leaves.

    For a failure, ``diagnosis`` is one of :data:`jaxscratch.oracle.diagnose.KINDS` (None when it
    passes), ``diagnosis_detail`` the words, ``constant`` the c of a ``"scale"`` (-1 for a sign)
    and ``location`` where (leaf and worst entry; the layer of a network; the step and gate of a
    recurrence). ``checks`` holds the named property checks when they were asked for.
    """

    name: str
    passed: bool
    vjp_max_abs: float
    vjp_max_rel: float
    fd_max_rel: float
    detail: str = ""
    diagnosis: str | None = None
    diagnosis_detail: str = ""
    constant: float | None = None
    location: Location | None = None
    checks: dict[str, Check] = field(default_factory=dict)

    def explanation(self) -> str:
        """The failure in words: the diagnosis and where, else the raw detail."""
        if self.diagnosis is None:
            return self.detail
        inner = self.location.innermost() if self.location is not None else None
        if inner is None or inner.step is not None or not inner.leaf:
            return self.diagnosis_detail  # a time step's words name it already
        return f"{self.diagnosis_detail} (at {inner})"

    def row(self) -> str:
        status = "PASS" if self.passed else "FAIL"
        why = self.explanation()
        extra = f"  {why}" if why and not self.passed else ""
        return (
            f"{self.name:<40} {self.vjp_max_abs:10.2e} {self.vjp_max_rel:10.2e} "
            f"{self.fd_max_rel:10.2e}  {status}{extra}"
        )


HEADER = f"{'op':<40} {'max abs':>10} {'max rel':>10} {'fd rel':>10}  result"


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
    # the shifts are made in numpy: eager jnp arithmetic would compile once per new leaf shape
    host = [np.asarray(a) if _is_float(a) else a for a in leaves]
    for n, only in enumerate(directions):
        key, sub = jax.random.split(key)
        d_leaves = [np.asarray(dl) for dl in jax.tree.leaves(_random_like(sub, args))]
        if only is not None:
            d_leaves = [dl if i == only else np.zeros_like(dl) for i, dl in enumerate(d_leaves)]

        def shift(s, d_leaves=d_leaves):
            moved = [
                a + s * dl if _is_float(a) else a for a, dl in zip(host, d_leaves, strict=True)
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


def _manual(op: Any, params: Any, x: Any, drop_key: jax.Array, ct_key: jax.Array) -> tuple:
    """``(dy, op.backward(cache, dy))`` with a random cotangent ``dy``: forward and backward as
    one jitted program (eagerly, one small program per primitive, they compiled many times over),
    or eagerly when the op cannot be traced (its ``"jit"`` property then fails by name)."""
    try:
        y = jax.eval_shape(lambda p, xx, k: call(op, p, xx, k)[0], params, x, drop_key)
        dy = _random_like(ct_key, y)
        run = jax.jit(lambda p, xx, k, d: op.backward(call(op, p, xx, k)[1], d))
        return dy, run(params, x, drop_key, dy)
    except jax.errors.JAXTypeError:  # a value-dependent Python branch, a tracer used as a bool
        y, cache = call(op, params, x, drop_key)
        dy = _random_like(ct_key, y)
        return dy, op.backward(cache, dy)


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
    properties: bool = False,
    per_sample: bool | None = None,
    paths: Mapping[str, Callable[[Any, Any], Any]] | None = None,
    diagnose: bool = True,
    order: int = 1,
) -> Report:
    """Check ``op.backward`` (any object with ``forward``/``backward``) at ``(params, x)``.

    Returns a :class:`Report` whose ``passed`` is true when both the vjp and the finite-difference
    comparisons pass (and, with ``properties=True``, every check of
    :mod:`jaxscratch.oracle.properties`). Inputs are cast to float64 for the check.
    ``fd_per_leaf=False`` checks finite differences along one random direction only (cheaper,
    for many random examples). A failure is diagnosed and located (``diagnose=False`` skips that,
    for callers that only need pass/fail); ``paths`` (``{name: f(params, x) -> part}``, parts
    summing to the output; or an op's ``paths`` attribute) lets the diagnosis name a missing term;
    ``per_sample`` overrides the per-sample detection of the properties. ``order=2`` also
    differentiates the hand backward itself against ``jax.vjp`` of ``jax.vjp`` (check
    ``"second order"``); an op with a hand ``jvp`` gets the ``"jvp"`` check (both in
    :mod:`jaxscratch.oracle.second`).
    """
    label = name or str(getattr(op, "name", type(op).__name__))
    stochastic = bool(getattr(op, "stochastic", False))
    with jax.enable_x64(True):
        params, x = _to64(params), _to64(x)
        seed_key = key if key is not None else jax.random.key(ORACLE_KEY_SEED)
        drop_key, ct_key, fd_key = jax.random.split(seed_key, 3)

        fwd_y, scalar = _compiled(op, stochastic)
        try:
            dy, manual = _manual(op, params, x, drop_key, ct_key)
            oracle = jax.jit(
                lambda p, xx, d: jax.vjp(lambda a, b: fwd_y(a, b, drop_key), p, xx)[1](d)
            )(params, x, dy)
        except (ValueError, TypeError) as e:
            return _failed(label, f"{type(e).__name__}: {e}", "unknown")
        if not isinstance(manual, tuple) or len(manual) != 2:
            return _failed(label, "backward must return (dparams, dx)", "structure")
        max_abs, max_rel, detail = _compare(tuple(manual), tuple(oracle), rtol)
        fd_rel, fd_detail, checks = np.inf, "", {}
        if max_abs != np.inf:
            fd_rel, fd_detail = _fd_check(
                lambda p, xx: scalar(p, xx, drop_key, dy),
                (params, x),
                tuple(manual),
                fd_key,
                fd_eps,
                fd_per_leaf,
            )
            if properties:
                checks = run_properties(
                    op, params, x, drop_key, dy, manual, rtol=rtol, per_sample=per_sample
                )
            checks.update(_higher_order(op, params, x, fd_key, rtol, order))
        fd_ok = fd_rel <= fd_rtol
        passed = not detail and fd_ok and all(c.passed for c in checks.values())
        why = detail or ("" if fd_ok else fd_detail)
        report = Report(label, passed, max_abs, max_rel, fd_rel, why)
        report.checks = checks
        if not passed and diagnose:
            _diagnose(report, op, params, x, dy, drop_key, rtol, paths)
    return report


def _higher_order(op: Any, params: Any, x: Any, key: jax.Array, rtol: float, order: int) -> dict:
    """The ``"second order"`` check (``order=2``) and the ``"jvp"`` check of an op with one."""
    out: dict[str, Check] = {}
    if order not in (1, 2):
        raise ValueError(f"check_op: order must be 1 or 2, got {order!r}")
    if order == 2:
        detail = second_order(op, params, x, key, rtol * 100)[2]
        out["second order"] = Check("second order", not detail, detail)
    if callable(getattr(op, "jvp", None)):
        detail = check_jvp(op, params, x, key, rtol)[2]
        out["jvp"] = Check("jvp", not detail, detail)
    return out


def _failed(label: str, detail: str, kind: str) -> Report:
    """A report for a backward that raised or returned no ``(dparams, dx)`` pair."""
    words = "the backward did not return a (dparams, dx) pair" if kind == "structure" else detail
    return Report(label, False, np.inf, np.inf, np.inf, detail, kind, words)


def _diagnose(
    report: Report, op: Any, params: Any, x: Any, dy: Any, key: Any, rtol: float, paths: Any
) -> None:
    """Fill ``report``'s diagnosis and location (a failed property check when only it failed)."""
    failed = [c for c in report.checks.values() if not c.passed]
    vjp_fd_ok = not report.detail and report.fd_max_rel != np.inf
    if vjp_fd_ok and failed:
        c = failed[0]
        kind = "cross-sample" if c.name == "per-sample" else "unknown"
        report.diagnosis, report.diagnosis_detail = kind, f"the {c.name} check fails: {c.detail}"
        report.detail = report.diagnosis_detail
        return
    try:
        d, loc = explain(op, params, x, dy, key, rtol, paths)
    except Exception as e:  # noqa: BLE001  # a diagnosis must never hide the verdict
        d, loc = Diagnosis("unknown", f"{FD_ONLY if vjp_fd_ok else report.detail} ({e})"), None
    report.diagnosis, report.diagnosis_detail, report.constant = d.kind, d.words, d.constant
    report.location = loc


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


def _check_entry(
    kind: str, label: str, entry: Any, key: jax.Array, properties: bool = False, order: int = 1
) -> Report:
    """The oracle on one registry entry's example, drawn from ``fold_in(key, crc32(label))``."""
    if entry.example is None:
        return Report(label, False, np.inf, np.inf, np.inf, "no oracle example")
    with jax.enable_x64(True):
        a, b = entry.example(jax.random.fold_in(key, zlib.crc32(label.encode())))
        if kind == "op":
            return check_op(entry.op, a, b, name=label, properties=properties, order=order)
        return check_loss(entry.loss, a, b)


def iter_registry(
    names: Sequence[str] | None = None, seed: int = 0, *, properties: bool = False, order: int = 1
) -> Iterator[Report]:
    """Check every registered op and loss (or those in ``names``), yielding each
    :class:`Report` as soon as it is done (ops in name order, then losses as ``loss:<name>``).

    Each example is drawn from ``fold_in(jax.random.key(seed), crc32(name))``, so a row does not
    depend on which other rows are checked. float64 is enabled only while a row is computed.
    ``properties=True`` adds the property checks of :mod:`jaxscratch.oracle.properties` to every
    op (several times slower; losses get the vjp and finite-difference checks only).
    """
    key = jax.random.key(check_int("iter_registry", "seed", seed))
    for kind, label, entry in _registry_entries(names):
        yield _check_entry(kind, label, entry, key, properties, order)


def check_registry(
    names: Sequence[str] | None = None, seed: int = 0, *, properties: bool = False
) -> list[Report]:
    """Every report of :func:`iter_registry`, as a list."""
    return list(iter_registry(names, seed, properties=properties))


def format_report(report: Report) -> str:
    """One row of the oracle table (columns as :data:`HEADER`): name, max abs and max rel vjp
    error, finite-difference rel error, PASS/FAIL and, for a failure, the diagnosis in words and
    where (:meth:`Report.explanation`), or the raw reason when there is no diagnosis."""
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
