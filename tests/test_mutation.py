"""Mutation testing of the oracle: every generated mutant of a hand-written backward is killed
(or named equivalent, with its reason), and the harness itself can report a survivor."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from jaxscratch.core import Op
from jaxscratch.ops import registry
from jaxscratch.oracle import mutation

# one entry per kind of backward (matrix products, a recurrent cell, normalisation
# with state, a loss); the whole registry (about a minute) runs in the
# slow suite and with `jaxscratch gradcheck --mutants`
SAMPLE = [
    "dense[tanh]",
    "rnn_cell",
    "batch_norm[2d]",
    "loss:softmax_cross_entropy",
]


def _check(results: list[mutation.MutantResult]) -> None:
    survivors = {r.name: [f"{m.kind} at {m.where}" for m in r.survived] for r in results}
    assert not any(survivors.values()), survivors
    for r in results:
        assert r.killed, f"{r.name}: no mutant generated"
        for m, why in r.equivalent:
            assert why, (r.name, m)


def test_every_mutant_of_a_sample_of_ops_is_killed():
    """100% of the non-equivalent mutants of each sampled op and loss are killed; the equivalent
    ones carry a reason (e.g. batch norm's running statistics have a zero training gradient)."""
    results = list(mutation.mutation_report(SAMPLE))
    assert {r.name for r in results} == set(SAMPLE)
    _check(results)
    bn = next(r for r in results if r.name == "batch_norm[2d]")
    assert any("zero on this example" in why for _, why in bn.equivalent)


@pytest.mark.slow
def test_every_mutant_of_every_registered_op_is_killed():
    """The whole registry (about a minute): 100% killed."""
    _check(list(mutation.mutation_report()))


def test_the_harness_reports_a_survivor_when_the_oracle_is_blind():
    """With a tolerance of 10 (an oracle that accepts anything within 10x), scaled mutants
    survive and are reported as such, so a 100% kill rate above is not vacuous."""
    entry = registry()["weight_multiply"]
    with jax.enable_x64(True):
        params, x = entry.example(jax.random.key(0))
    old = mutation.RTOL
    try:
        mutation.RTOL = 10.0
        r = mutation.mutate_op(entry.op, params, x, name="weight_multiply")
    finally:
        mutation.RTOL = old
    assert {m.kind for m in r.survived} >= {"scale 2"}
    assert r.kill_rate < 1.0
    assert "SURVIVED scale 2" in mutation.format_mutants(r)


def test_weak_examples_are_named():
    """A batch of one, a square leaf and an all-zero bias are flagged; an op whose example is
    weak gets equivalent mutants, not silent passes."""
    weak = mutation.weak_example({"W": jnp.eye(3), "B": jnp.zeros((1, 3))}, jnp.ones((1, 3)))
    assert "batch size 1" in weak
    assert any("square params leaf (3, 3) (symmetric)" in w for w in weak)
    assert any("all-zero params leaf (1, 3)" in w for w in weak)
    ident = Op("ident", lambda p, x: (x, None), lambda c, dy: ((), dy))
    r = mutation.mutate_op(ident, (), jnp.zeros((1, 2)) + 1.0)
    assert not r.survived
