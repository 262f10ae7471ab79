"""Mutation testing of the oracle itself: how many wrong backward passes would it catch?

For every registered op (and loss) :func:`mutation_report` builds mutants of its hand-written
backward, the mistakes people make when deriving one by hand, and asks the oracle's vjp
comparison (:func:`jaxscratch.oracle.compare.compare`, rtol 1e-10, float64, random cotangent) whether
each is wrong. A mutant rewrites one leaf of the backward's output ``(dparams, dx)`` (a loss's
``dpred``), or the cache it reads:

* ``scale 1/N`` (N the batch size: a missing or extra mean), ``scale 2`` (a square's factor),
  ``sign`` (a flipped sign), ``zero`` (a dropped term: the whole leaf missing);
* ``transpose`` (a square 2-D leaf transposed; a non-square one is a shape error);
* ``wrong axis`` (the leaf replaced by its sum over one axis, spread back: a reduction over the
  wrong axis, as a bias gradient summed over the features);
* ``swap cache`` (two cached arrays of the same shape exchanged before ``backward`` runs: the
  wrong saved value used).

A mutant is **killed** when the oracle reports the mutated gradient wrong (or the backward raises);
it is **equivalent** when, on this example, it computes the same gradient as the real backward
(to 1e-12): no test on this example could tell them apart, and the reason is given (a zero leaf
scaled, a symmetric leaf transposed, equal cached arrays). Anything else is a **survivor**: a
wrong backward the oracle would let through. Equivalent mutants flag **weak examples** (batch size
1, square or symmetric leaves, zero gradients), which :func:`weak_example` also names.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxscratch.ops import loss_registry, registry
from jaxscratch.oracle.compare import batch_size, compare, is_float, random_like, to64
from jaxscratch.oracle.explain import call

RTOL = 1e-10
Mutate = Callable[[Any], Any]


class Mutant(NamedTuple):
    """One mutant: ``kind`` (see the module docstring), ``where`` (the leaf or cache entries)."""

    kind: str
    where: str


class MutantResult(NamedTuple):
    """The fate of every mutant of one op: ``killed``, ``equivalent`` (with reasons) and
    ``survived`` lists of :class:`Mutant`; ``weak``: what makes the example weak, if anything."""

    name: str
    killed: list[Mutant]
    equivalent: list[tuple[Mutant, str]]
    survived: list[Mutant]
    weak: list[str]

    @property
    def kill_rate(self) -> float:
        """Killed / (killed + survived): equivalent mutants are not counted."""
        n = len(self.killed) + len(self.survived)
        return 1.0 if n == 0 else len(self.killed) / n


def _leaf_mutations(leaf: np.ndarray, n: int | None) -> Iterator[tuple[str, Callable]]:
    """``(kind, f)`` for every mutation of one float gradient leaf."""
    if n is not None and n > 1:
        yield "scale 1/N", lambda a: a / n
    yield "scale 2", lambda a: a * 2.0
    yield "sign", lambda a: -a
    yield "zero", lambda a: jnp.zeros_like(a)
    if leaf.ndim == 2:
        yield "transpose", lambda a: a.T
    for ax in range(leaf.ndim):
        if leaf.shape[ax] > 1:
            yield (
                f"wrong axis {ax}",
                (lambda a, ax=ax: jnp.broadcast_to(jnp.sum(a, axis=ax, keepdims=True), a.shape)),
            )


def _with_leaf(tree: Any, i: int, f: Callable) -> Any:
    leaves, treedef = jax.tree.flatten(tree)
    leaves = list(leaves)
    leaves[i] = f(leaves[i])
    return jax.tree.unflatten(treedef, leaves)


def _cache_swaps(cache: Any) -> Iterator[tuple[str, Callable]]:
    """Swaps of two cached float arrays of one shape and dtype (``i < j`` in leaf order)."""
    leaves = jax.tree.leaves(cache)
    arrays = [(i, a) for i, a in enumerate(leaves) if is_float(a) and jnp.ndim(a) > 0]
    for p, (i, a) in enumerate(arrays):
        for j, b in arrays[p + 1 :]:
            if jnp.shape(a) == jnp.shape(b) and jnp.result_type(a) == jnp.result_type(b):

                def swap(c, i=i, j=j):
                    ls, td = jax.tree.flatten(c)
                    ls = list(ls)
                    ls[i], ls[j] = ls[j], ls[i]
                    return jax.tree.unflatten(td, ls)

                yield f"cache[{i}]<->cache[{j}]", swap


def _why_equivalent(kind: str, leaf: np.ndarray) -> str:
    if not np.any(leaf):
        return "the gradient leaf is zero on this example"
    if kind == "transpose" and leaf.shape[0] == leaf.shape[1] and np.allclose(leaf, leaf.T):
        return "the leaf is symmetric"
    if kind.startswith("wrong axis"):
        return "the leaf is constant along that axis"
    return "the mutated gradient equals the real one on this example"


def weak_example(params: Any, x: Any) -> list[str]:
    """What makes an oracle example weak: batch size 1, square 2-D leaves (a transpose keeps the
    shape), all-zero leaves (a zero bias hides a dropped term), symmetric inputs."""
    weak = []
    n = batch_size(x)
    if n == 1:
        weak.append("batch size 1")
    for kind, tree in (("params", params), ("x", x)):
        for leaf in jax.tree.leaves(tree):
            if not is_float(leaf) or jnp.ndim(leaf) == 0:
                continue
            a = np.asarray(leaf)
            if not np.any(a):
                weak.append(f"an all-zero {kind} leaf {a.shape}")
            elif a.ndim == 2 and a.shape[0] == a.shape[1]:
                weak.append(
                    f"a square {kind} leaf {a.shape}"
                    + (" (symmetric)" if np.allclose(a, a.T) else "")
                )
    return weak


class _Target(NamedTuple):
    """What the mutants of one entry are judged against."""

    backward: Callable[[Any], Any]  # cache -> gradient tree
    cache: Any
    true: Any  # the real backward's gradient
    oracle: Any  # jax.vjp's
    batch: int | None


def _op_target(op: Any, params: Any, x: Any, key: jax.Array) -> _Target:
    drop_key, ct_key = jax.random.split(key)
    y, cache = call(op, params, x, drop_key)
    dy = random_like(ct_key, y)
    _, vjp_fn = jax.vjp(lambda p, xx: call(op, p, xx, drop_key)[0], params, x)
    backward = jax.jit(lambda c: tuple(op.backward(c, dy)))  # one compile for every cache swap
    return _Target(backward, cache, tuple(op.backward(cache, dy)), tuple(vjp_fn(dy)),
                   batch_size(x))  # fmt: skip


def _loss_target(loss: Any, pred: Any, target: Any) -> _Target:
    _, cache = loss.forward(pred, target)
    oracle = jax.grad(lambda p: loss.forward(p, target)[0])(pred)
    return _Target(jax.jit(loss.backward), cache, loss.backward(cache), oracle, batch_size(pred))


def _judge(
    t: _Target, name: str, mutants: Iterator[tuple[Mutant, Callable[[], Any], np.ndarray | None]]
) -> MutantResult:
    killed, equivalent, survived = [], [], []
    for mutant, run, leaf in mutants:
        try:
            grads = run()
            wrong = bool(compare(grads, t.oracle, RTOL)[2])
        except (ValueError, TypeError, IndexError):
            killed.append(mutant)
            continue
        if wrong:
            killed.append(mutant)
        elif not compare(grads, t.true, 1e-12)[2]:
            reason = (
                _why_equivalent(mutant.kind, leaf)
                if leaf is not None
                else "the swapped arrays are equal"
            )
            equivalent.append((mutant, reason))
        else:
            survived.append(mutant)
    return MutantResult(name, killed, equivalent, survived, [])


def _mutants(t: _Target) -> Iterator[tuple[Mutant, Callable[[], Any], np.ndarray | None]]:
    leaves = jax.tree.leaves(t.true)
    for i, leaf in enumerate(leaves):
        if not is_float(leaf):
            continue
        a = np.asarray(leaf)
        for kind, f in _leaf_mutations(a, t.batch):
            yield (
                Mutant(kind, f"leaf {i} {a.shape}"),
                functools.partial(_with_leaf, t.true, i, f),
                a,
            )
    for where, swap in _cache_swaps(t.cache):
        yield Mutant("swap cache", where), functools.partial(_swapped, t, swap), None


def _swapped(t: _Target, swap: Callable[[Any], Any]) -> Any:
    return t.backward(swap(t.cache))


def mutate_op(
    op: Any, params: Any, x: Any, *, name: str | None = None, seed: int = 0
) -> MutantResult:
    """Every mutant of ``op``'s backward at ``(params, x)``, judged by the oracle (float64)."""
    label = name or str(getattr(op, "name", "op"))
    with jax.enable_x64(True):
        params, x = to64(params), to64(x)
        t = _op_target(op, params, x, jax.random.key(seed))
        res = _judge(t, label, _mutants(t))
    return res._replace(weak=weak_example(params, x))


def mutate_loss(loss: Any, pred: Any, target: Any, *, name: str | None = None) -> MutantResult:
    """Every mutant of ``loss.backward`` at ``(pred, target)``, judged by the oracle."""
    label = name or f"loss:{loss.name}"
    with jax.enable_x64(True):
        pred, target = to64(pred), to64(target)
        t = _loss_target(loss, pred, target)
        res = _judge(t, label, _mutants(t))
    return res._replace(weak=weak_example(pred, target))


def mutation_report(names: Sequence[str] | None = None, seed: int = 0) -> Iterator[MutantResult]:
    """:func:`mutate_op` / :func:`mutate_loss` on every registered entry's oracle example (or
    those in ``names``), drawn as ``jaxscratch gradcheck`` draws them."""
    key = jax.random.key(seed)
    for name, entry in sorted(registry().items()):
        if (names and name not in names) or entry.example is None:
            continue
        with jax.enable_x64(True):
            params, x = entry.example(jax.random.fold_in(key, zlib.crc32(name.encode())))
        yield mutate_op(entry.op, params, x, name=name)
    for name, lentry in sorted(loss_registry().items()):
        label = f"loss:{name}"
        if (names and name not in names and label not in names) or lentry.example is None:
            continue
        with jax.enable_x64(True):
            pred, target = lentry.example(jax.random.fold_in(key, zlib.crc32(label.encode())))
        yield mutate_loss(lentry.loss, pred, target, name=label)


HEADER = f"{'op':<40} {'mutants':>7} {'killed':>7} {'equiv.':>7} {'survived':>8} {'kill rate':>9}"


def format_mutants(r: MutantResult) -> str:
    """One row of the table; survivors, equivalent mutants and weak-example notes below it."""
    total = len(r.killed) + len(r.equivalent) + len(r.survived)
    row = (f"{r.name[:40]:<40} {total:>7} {len(r.killed):>7} {len(r.equivalent):>7} "
           f"{len(r.survived):>8} {100 * r.kill_rate:>8.1f}%")  # fmt: skip
    lines = [row]
    lines += [f"    SURVIVED {m.kind} at {m.where}" for m in r.survived]
    lines += [f"    equivalent: {m.kind} at {m.where}: {why}" for m, why in r.equivalent]
    if r.weak and (r.equivalent or r.survived):
        lines.append("    weak example: " + "; ".join(r.weak))
    return "\n".join(lines)


def run_mutants_cli(names: list[str] | None, seed: int = 0) -> int:
    """``jaxscratch gradcheck --mutants``: the table, row by row; 1 if any mutant survived."""
    results = []
    print(HEADER, flush=True)
    for r in mutation_report(names or None, seed):
        results.append(r)
        print(format_mutants(r), flush=True)
    killed = sum(len(r.killed) for r in results)
    counted = killed + sum(len(r.survived) for r in results)
    equiv = sum(len(r.equivalent) for r in results)
    rate = 100.0 * killed / counted if counted else 100.0
    print(f"mutants: {killed}/{counted} killed ({rate:.1f}%), {equiv} equivalent, "
          f"{len(results)} ops and losses")  # fmt: skip
    return 0 if killed == counted else 1
