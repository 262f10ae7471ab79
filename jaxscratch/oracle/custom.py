"""The oracle for code that is not a registered op: a ``jax.custom_vjp`` rule, a pytest helper
and a JSON form of the reports (for a ``--json`` CLI flag and CI).

* :func:`check_custom_vjp` checks the rule ``f.bwd`` of a ``jax.custom_vjp`` function against
  autodiff of its undecorated primal ``f.fun`` (differentiating ``f`` itself would use the rule
  under test), with the same vjp, finite-difference and diagnosis machinery as ``check_op``.
* :func:`assert_backward` is ``check_op`` for tests: it raises ``AssertionError`` whose message is
  the diagnosis and where (and returns the report when it passes); :func:`assert_registry` does
  the same over registered ops (a user's plugin registry, one name per parametrised case).
* :func:`report_json` turns reports into one JSON-ready dict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxscratch.core import Op
from jaxscratch.oracle.check import Report, check_op, check_registry, format_report
from jaxscratch.oracle.compare import close, to64


def _parts(f: Any, fn: str) -> tuple[Any, Any, Any, tuple[int, ...]]:
    fun, fwd, bwd = (getattr(f, a, None) for a in ("fun", "fwd", "bwd"))
    if fun is None or fwd is None or bwd is None:
        raise TypeError(
            f"{fn}: f must be a jax.custom_vjp function with its rule defined (f.defvjp(fwd, bwd)), "
            f"got {type(f).__name__}"
        )
    return fun, fwd, bwd, tuple(getattr(f, "nondiff_argnums", ()) or ())


def check_custom_vjp(f: Any, *args: Any, name: str | None = None, **kw: Any) -> Report:
    """Check the backward rule of ``f`` (a ``jax.custom_vjp`` function) at ``args``.

    The op under test has ``params=()`` and input the tuple of differentiable arguments (those
    not in ``nondiff_argnums``): forward ``f.fun(*args)`` (the undecorated primal, so the oracle
    ``jax.vjp`` is plain autodiff of the math); backward ``f.bwd(*nondiff, residuals, dy)`` with
    the residuals of ``f.fwd(*args)``, which returns one cotangent per differentiable argument.
    The rule's forward output ``f.fwd(*args)[0]`` must equal ``f.fun(*args)``, or the report
    fails with that reason. ``kw`` go to :func:`check_op` (``rtol``, ``key``, ...).
    """
    fun, fwd, bwd, nondiff = _parts(f, "check_custom_vjp")
    label = name or f"custom_vjp:{getattr(fun, '__name__', 'f')}"
    fixed = {i: a for i, a in enumerate(args) if i in nondiff}
    diff_idx = [i for i in range(len(args)) if i not in nondiff]

    def full(xs: tuple) -> list:
        it = iter(xs)
        return [fixed[i] if i in fixed else next(it) for i in range(len(args))]

    def forward(params: Any, xs: tuple) -> tuple[Any, tuple]:
        return fun(*full(xs)), xs

    def backward(cache: tuple, dy: Any) -> tuple[Any, tuple]:
        _, res = fwd(*full(cache))
        return (), tuple(bwd(*(fixed[i] for i in sorted(fixed)), res, dy))

    with jax.enable_x64(True):
        xs = tuple(to64(args[i]) for i in diff_idx)
        y_rule = fwd(*full(xs))[0]
        y_fun = fun(*full(xs))
        same = all(
            close(np.asarray(a, np.float64), np.asarray(b, np.float64), 1e-10)
            for a, b in zip(jax.tree.leaves(y_rule), jax.tree.leaves(y_fun), strict=True)
        )
    if not same:
        why = "f.fwd's primal output differs from f.fun's: the rule computes another function"
        return Report(label, False, math.inf, math.inf, math.inf, why, "unknown", why)
    return check_op(Op(label, forward, backward), (), xs, name=label, **kw)


def assert_backward(op: Any, params: Any, x: Any, **kw: Any) -> Report:
    """``check_op(op, params, x, **kw)`` for a test: the report if it passes, else
    ``AssertionError`` with the report's row, its diagnosis and where."""
    report = check_op(op, params, x, **kw)
    if not report.passed:
        lines = [f"{report.name}: the backward is wrong", report.explanation()]
        if report.location is not None:
            lines.append(f"location: {report.location}")
        lines.append(format_report(report))
        raise AssertionError("\n".join(lines))
    return report


def assert_registry(names: Sequence[str] | None = None, seed: int = 0, **kw: Any) -> list[Report]:
    """:func:`check_registry` for a test over a user's registry (``names``: the ops and losses to
    check, e.g. one per ``pytest.mark.parametrize`` case): the reports if every one passes, else
    ``AssertionError`` listing each failure's diagnosis and where. ``kw``: ``properties=True``."""
    reports = check_registry(names, seed, **kw)
    if names and not reports:
        raise AssertionError(f"assert_registry: no registered op or loss named {list(names)}")
    failed = [r for r in reports if not r.passed]
    if failed:
        lines = [f"{len(failed)}/{len(reports)} backward passes are wrong:"]
        lines += [f"  {r.name}: {r.explanation()}" for r in failed]
        raise AssertionError("\n".join(lines))
    return reports


def _num(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def report_dict(report: Report) -> dict[str, Any]:
    """One report as a JSON-ready dict (infinite errors as ``None``)."""
    return {
        "name": report.name,
        "passed": report.passed,
        "vjp_max_abs": _num(report.vjp_max_abs),
        "vjp_max_rel": _num(report.vjp_max_rel),
        "fd_max_rel": _num(report.fd_max_rel),
        "detail": report.detail,
        "diagnosis": report.diagnosis,
        "diagnosis_detail": report.diagnosis_detail,
        "explanation": report.explanation() if not report.passed else "",
        "constant": _num(report.constant) if report.constant is not None else None,
        "location": None if report.location is None else report.location.to_dict(),
        "checks": {k: c.to_dict() for k, c in report.checks.items()},
    }


def report_json(reports: Sequence[Report]) -> dict[str, Any]:
    """``{"passed", "n", "n_failed", "reports": [...]}`` for a list of reports; serialisable with
    ``json.dumps(..., allow_nan=False)`` (the future ``jaxscratch gradcheck --json`` prints it)."""
    rows = [report_dict(r) for r in reports]
    n_failed = sum(not r.passed for r in reports)
    return {"passed": n_failed == 0, "n": len(rows), "n_failed": n_failed, "reports": rows}
