"""Second order (the hand backward differentiated against jax.vjp of jax.vjp) and hand JVPs
(against jax.jvp and, by the adjoint identity, the hand backward)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from jaxscratch.core import Op, registered
from jaxscratch.ops.activations import sigmoid, tanh
from jaxscratch.ops.dense import weight_multiply
from jaxscratch.oracle.check import check_op

X = jax.random.normal(jax.random.key(0), (5, 3), jnp.float64)


@pytest.mark.parametrize("name", ["dense[tanh]", "lstm_cell"])
def test_registered_backwards_are_right_at_second_order(name):
    """The hand backward of real ops, differentiated by jax, equals jax.vjp of jax.vjp."""
    entry = registered()[name]
    with jax.enable_x64(True):
        params, x = entry.example(jax.random.key(1))
    report = check_op(entry.op, params, x, order=2)
    assert report.passed and report.checks["second order"].passed, report


def test_a_backward_that_freezes_its_cache_passes_first_order_and_fails_second():
    """sigmoid's backward with stop_gradient on the cached y: the same gradient, but its own
    derivative is wrong (a Hessian-vector product through it would be silently wrong)."""
    frozen = Op(
        "sigmoid_frozen",
        sigmoid.forward,
        lambda y, dy: ((), dy * jax.lax.stop_gradient(y * (1.0 - y))),
    )
    assert check_op(frozen, (), X).passed
    report = check_op(frozen, (), X, order=2)
    assert not report.passed
    assert report.diagnosis_detail.startswith("the second order check fails: ")


def test_hand_jvps_are_checked_and_a_wrong_one_is_caught():
    """tanh and weight_multiply carry hand JVPs that pass; a JVP with a flipped term fails
    against jax.jvp, and one that agrees with nothing but itself fails the adjoint identity."""
    params = {"W": jax.random.normal(jax.random.key(2), (3, 4), jnp.float64)}
    assert check_op(tanh, (), X).checks["jvp"].passed
    assert check_op(weight_multiply, params, X).checks["jvp"].passed
    wrong = weight_multiply._replace(jvp=lambda p, x, dp, dx: dx @ p["W"] - x @ dp["W"])
    report = check_op(wrong, params, X)
    assert not report.passed and "jvp check fails" in report.diagnosis_detail
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        check_op(tanh, (), X, order=3)
