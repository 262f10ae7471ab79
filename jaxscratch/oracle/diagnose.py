"""How a backward pass is wrong, read off the numbers: the classifiers behind ``Report.diagnosis``.

:func:`diagnose` takes the manual gradient tree and the oracle's (``(dparams, dx)``) and returns
a :class:`Diagnosis` for the first failing leaf, one of :data:`KINDS`:

* ``"non-finite"``: the manual leaf has a NaN or an infinity;
* ``"structure"``: the trees differ (a missing, extra or renamed gradient);
* ``"transpose"``: the manual leaf equals the oracle's with two axes swapped (or, for a wrong
  shape, with its axes permuted);
* ``"wrong-axis"``: the manual leaf is the per-sample gradient tensor summed over another set of
  axes than the batch (a bias gradient summed over the units), or one such sum in every entry;
  needs the per-sample oracle gradients (:func:`per_sample_gradients`);
* ``"shape"``: another shape, none of the above;
* ``"sign"``: manual = -oracle; ``"scale"``: manual = c x oracle (``Diagnosis.constant`` is c;
  the words say when c is the batch size, batch x time, 2 or 1/2);
* ``"missing-term"``: manual = oracle minus one path's gradient, where the op says its paths (a
  ``paths`` hook: ``{name: f(params, x) -> y_part}`` whose parts sum to the op's output), or the
  manual leaf is zero where the oracle's is not (the only term missing);
* ``"missing-mask"``: manual = oracle wherever the oracle is non-zero, but non-zero where the
  oracle is exactly zero (a ReLU, max-pool or dropout mask forgotten);
* ``"cross-sample"``: the op is per-sample (the oracle's dx for a cotangent on one sample is zero on
  every other sample) but the manual dx is not;
* ``"unknown"``: none of these patterns fit.

The patterns are matched at ``tol = max(1e3 * rtol, 1e-8)``, looser than the pass/fail test, so
rounding does not hide them, tight enough that a chance fit is impossible in float64.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from jaxscratch.oracle.compare import (
    close,
    is_float,
    leaf_name,
    leaf_paths,
    mask_sample,
    worst_index,
)

KINDS = (
    "scale",
    "sign",
    "transpose",
    "wrong-axis",
    "missing-term",
    "missing-mask",
    "cross-sample",
    "shape",
    "structure",
    "non-finite",
    "unknown",
)
MAX_PER_SAMPLE = 64  # per-sample decompositions (one vjp per sample) only up to this batch


@dataclass(frozen=True)
class Diagnosis:
    """kind: one of :data:`KINDS`. words: the diagnosis for people. constant: c of a scale (-1 for
    a sign). leaf: the gradient leaf (``dparams['W']``, ``dx``). index: its worst entry."""

    kind: str
    words: str
    constant: float | None = None
    leaf: str = ""
    index: tuple[int, ...] | None = None


@dataclass
class Context:
    """What the classifiers may use beyond the two trees.

    batch, time: the input's leading axes (batch, T) when it has them. per_sample: returns the
    oracle gradient of every flat leaf per sample (arrays (batch, *leaf shape), summing to the
    oracle) or None. paths: ``{path name: flat oracle leaves of that path alone}``.
    cross_sample: returns words naming a sample whose manual dx depends on another's dy, or None.
    """

    batch: int | None = None
    time: int | None = None
    per_sample: Callable[[], list[np.ndarray] | None] | None = None
    paths: Mapping[str, list[np.ndarray]] = field(default_factory=dict)
    cross_sample: Callable[[], str | None] | None = None


def _tol(rtol: float) -> float:
    return max(1e3 * rtol, 1e-8)


def _near(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


def scale_words(c: float, batch: int | None = None, time: int | None = None) -> str:
    """The words for manual = c x oracle, naming c when it is the batch size, batch x time, 2, 1/2."""
    ratio = f"the ratio is {c:.3f}"
    if batch and batch > 1 and _near(c, batch):
        return f"looks like a missing 1/N: {ratio} = the batch size"
    if batch and batch > 1 and _near(c, 1.0 / batch):
        return f"looks like an extra 1/N: {ratio} = 1/the batch size"
    if batch and time and time > 1 and _near(c, batch * time):
        return f"looks like a missing 1/(N T): {ratio} = the batch size x the time steps"
    if batch and time and time > 1 and _near(c, 1.0 / (batch * time)):
        return f"looks like an extra 1/(N T): {ratio} = 1/(the batch size x the time steps)"
    if _near(c, 2.0):
        return f"looks like a missing 1/2 (a term counted twice): {ratio} = 2"
    if _near(c, 0.5):
        return f"looks like a missing factor 2 (a square's derivative): {ratio} = 1/2"
    if _near(c, 0.0):
        return "the manual gradient is zero: its whole term is missing"
    return f"manual = c x oracle for a constant c: {ratio}"


def _transpose(m: np.ndarray, o: np.ndarray, tol: float) -> Diagnosis | None:
    """manual equal to the oracle with two axes swapped (same shape) or permuted (another shape)."""
    if m.size != o.size or o.ndim < 2:
        return None
    if m.shape == o.shape:
        for a, b in itertools.combinations(range(o.ndim), 2):
            t = np.swapaxes(o, a, b)
            if o.shape[a] == o.shape[b] and not close(t, o, tol) and close(m, t, tol):
                return Diagnosis(
                    "transpose",
                    f"looks like a transpose: manual = oracle with axes {a} and {b} swapped",
                )
        return None
    for perm in itertools.permutations(range(o.ndim)):
        t = np.transpose(o, perm)
        if t.shape == m.shape and close(m, t, tol):
            return Diagnosis(
                "transpose",
                f"looks like a transpose: manual {m.shape} = oracle {o.shape} with axes {perm}",
            )
    return None


def _wrong_axis(m: np.ndarray, o: np.ndarray, per: np.ndarray, tol: float) -> Diagnosis | None:
    """manual = the per-sample gradient (batch, *squeezed leaf shape) summed over other axes."""
    u = per.reshape((per.shape[0], *(d for d in o.shape if d != 1)))
    for r in range(1, u.ndim + 1):
        for axes in itertools.combinations(range(u.ndim), r):
            if axes == (0,):
                continue  # the oracle's own reduction
            s = u.sum(axis=axes)
            spread = s.size == 1 and m.size > 1  # one sum broadcast to every entry of m
            if s.size != m.size and not spread:
                continue
            if close(m.ravel(), np.broadcast_to(s.ravel(), (m.size,)), tol):
                also = f", that one number in all {m.size} entries" if spread else ""
                return Diagnosis(
                    "wrong-axis",
                    f"looks like a reduction over the wrong axis: manual = the per-sample "
                    f"gradient {u.shape} summed over axes {axes}{also}; the oracle sums over "
                    "axis 0 (the batch)",
                )
    return None


def _missing_mask(m: np.ndarray, o: np.ndarray, tol: float) -> Diagnosis | None:
    """manual = oracle where the oracle is non-zero, non-zero where it is exactly zero."""
    zero = o == 0
    leak = zero & (m != 0)
    if not np.any(leak) or np.all(zero) or not close(m[~zero], o[~zero], tol):
        return None
    return Diagnosis(
        "missing-mask",
        f"looks like a missing mask: manual = oracle wherever the oracle is non-zero, but "
        f"non-zero at {int(leak.sum())} of the {int(zero.sum())} entries where the oracle is "
        "exactly zero (a ReLU, max-pool or dropout mask forgotten?)",
    )


def _missing_path(
    m: np.ndarray, o: np.ndarray, k: int, ctx: Context, tol: float
) -> Diagnosis | None:
    for name, leaves in ctx.paths.items():
        part = np.asarray(leaves[k], np.float64)
        if part.shape == o.shape and np.any(part != 0) and close(m, o - part, tol):
            return Diagnosis(
                "missing-term",
                f"looks like a missing term: manual = oracle minus the path {name!r}",
            )
    return None


def diagnose_leaf(m: Any, o: Any, ctx: Context, k: int = 0, rtol: float = 1e-10) -> Diagnosis:
    """The diagnosis of one failing leaf ``m`` (manual) against ``o`` (oracle), flat index ``k``."""
    m, o = np.asarray(m, np.float64), np.asarray(o, np.float64)
    tol = _tol(rtol)
    if not np.all(np.isfinite(m)):
        i = tuple(int(v) for v in np.argwhere(~np.isfinite(m))[0]) if m.ndim else ()
        return Diagnosis(
            "non-finite", f"the manual gradient is not finite ({m[i]} at {list(i)})", index=i
        )

    def wrong_axis() -> Diagnosis | None:  # the per-sample gradients are computed only if needed
        per = ctx.per_sample() if ctx.per_sample is not None else None
        return _wrong_axis(m, o, per[k], tol) if per else None

    if m.shape != o.shape:
        d = _transpose(m, o, tol) or wrong_axis()
        return d or Diagnosis("shape", f"wrong shape: manual {m.shape}, oracle {o.shape}")
    index = worst_index(m, o, rtol)
    with_index = lambda d: Diagnosis(d.kind, d.words, d.constant, index=index)  # noqa: E731
    denom = float(np.vdot(o, o))
    if denom > 0:
        c = float(np.vdot(m, o)) / denom
        if close(m, c * o, tol):
            if _near(c, -1.0):
                return with_index(
                    Diagnosis("sign", "looks like a sign flip: manual = -oracle", -1.0)
                )
            kind = "missing-term" if _near(c, 0.0) else "scale"
            return with_index(Diagnosis(kind, scale_words(c, ctx.batch, ctx.time), c))
    d = (
        _transpose(m, o, tol)
        or _missing_path(m, o, k, ctx, tol)
        or _missing_mask(m, o, tol)
        or wrong_axis()
    )
    if d:
        return with_index(d)
    return with_index(
        Diagnosis("unknown", f"no known pattern: manual {m[index]:.6g}, oracle {o[index]:.6g}")
    )


def diagnose(
    manual: Any, oracle: Any, ctx: Context | None = None, rtol: float = 1e-10
) -> Diagnosis | None:
    """The diagnosis of the first failing leaf of ``manual`` against ``oracle``; None if all pass."""
    ctx = ctx or Context()
    m_leaves, m_def = jax.tree.flatten(manual)
    o_leaves, o_def = jax.tree.flatten(oracle)
    if m_def != o_def:  # type: ignore[operator]  # jax stubs: PyTreeDef is untyped
        return Diagnosis("structure", f"the gradient tree is {m_def}, the oracle's {o_def}")
    for k, (path, m, o) in enumerate(zip(leaf_paths(oracle), m_leaves, o_leaves, strict=True)):
        if not is_float(o):
            continue
        mm, oo = np.asarray(m, np.float64), np.asarray(o, np.float64)
        if mm.shape == oo.shape and np.all(np.isfinite(mm)) and close(mm, oo, rtol):
            continue
        d = diagnose_leaf(mm, oo, ctx, k, rtol)
        if d.kind == "unknown" and path.startswith("[1]") and ctx.cross_sample is not None:
            words = ctx.cross_sample()
            if words:
                d = Diagnosis("cross-sample", words, index=d.index)
        return Diagnosis(d.kind, d.words, d.constant, leaf_name(path), d.index)
    return None


def per_sample_gradients(
    vjp_fn: Callable, dy: Any, n: int | None
) -> Callable[[], list[np.ndarray] | None]:
    """A lazy, cached ``per_sample`` for :class:`Context`: the oracle's flat gradient leaves for
    ``dy`` masked to each sample, stacked (batch, *leaf shape); None above :data:`MAX_PER_SAMPLE`."""
    memo: dict[str, list[np.ndarray] | None] = {}

    def get() -> list[np.ndarray] | None:
        if "v" not in memo:
            if not n or n > MAX_PER_SAMPLE:
                memo["v"] = None
            else:
                rows = [jax.tree.leaves(vjp_fn(mask_sample(dy, i, n))) for i in range(n)]
                memo["v"] = [
                    np.stack([np.asarray(r[k], np.float64) for r in rows])
                    if is_float(rows[0][k])
                    else np.zeros((n, 0))  # an integer input's float0 cotangent
                    for k in range(len(rows[0]))
                ]
        return memo["v"]

    return get


def cross_sample_check(
    backward: Callable[[Any], Any], vjp_fn: Callable, dy: Any, n: int | None, samples: int = 3
) -> Callable[[], str | None]:
    """A ``cross_sample`` for :class:`Context`: for a cotangent on sample i alone (first
    ``samples`` samples), is the oracle's dx zero on the other samples while the manual's is not?"""

    def check() -> str | None:
        if not n or n < 2:
            return None
        for i in range(min(n, samples)):
            dy_i = mask_sample(dy, i, n)
            m_dx, o_dx = jax.tree.leaves(backward(dy_i)[1]), jax.tree.leaves(vjp_fn(dy_i)[1])
            for m, o in zip(m_dx, o_dx, strict=False):
                if not is_float(o) or np.ndim(o) == 0 or np.shape(o)[0] != n:
                    continue
                m, o = np.asarray(m, np.float64), np.asarray(o, np.float64)
                others = [j for j in range(n) if j != i]
                scale = float(np.max(np.abs(o[i]))) or 1.0
                if np.max(np.abs(o[others])) <= 1e-12 * scale < np.max(np.abs(m[others])):
                    j = others[
                        int(np.argmax(np.abs(m[others]).reshape(len(others), -1).max(axis=1)))
                    ]
                    return (
                        f"looks like samples mixed: the manual dx of sample {j} depends on the dy "
                        f"of sample {i} (the op is per-sample: the oracle's does not)"
                    )
        return None

    return check
