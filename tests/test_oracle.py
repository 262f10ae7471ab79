"""The gradient oracle: every registered op and loss passes (the one registry-wide check of the
default suite), deliberately broken ops are caught, and the streaming API behind ``gradcheck``."""

from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxscratch.core import Loss, Op, serial
from jaxscratch.ops import loss_registry, registry
from jaxscratch.ops.dense import dense
from jaxscratch.ops.losses import mean_squared_error
from jaxscratch.optim.optimizers import sgd
from jaxscratch.oracle.check import (
    HEADER,
    Report,
    check_loss,
    check_op,
    check_registry,
    format_report,
    format_reports,
    format_summary,
    iter_registry,
)
from jaxscratch.oracle.localise import Location
from jaxscratch.runs.cli import main as cli_main
from jaxscratch.train.loop import make_step

OPS = sorted(registry())
LOSSES = sorted(loss_registry())
ENTRIES = OPS + [f"loss:{name}" for name in LOSSES]


@pytest.mark.parametrize("name", ENTRIES)
def test_registry_entry_passes_the_oracle(name):
    """THE registry check of the default suite: every op and loss once, on its oracle example,
    exactly as ``jaxscratch gradcheck`` runs it (vjp at rtol 1e-10, finite differences per leaf)."""
    [report] = check_registry([name])
    assert report.name == name
    assert report.passed, format_report(report)
    assert report.vjp_max_rel < 1e-9 and report.fd_max_rel < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("name", OPS)
@settings(
    max_examples=30,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(seed=st.integers(0, 2**31 - 1))
def test_oracle_hypothesis(name, seed):
    """Values (and, for examples that draw them from the key, shapes) drawn by hypothesis.

    Finite differences along one random direction here; the fixed-example test above does one
    per input leaf. Slow (30 examples per op), so outside the default suite: ``-m slow``.
    """
    entry = registry()[name]
    params, x = entry.example(jax.random.key(seed))
    report = check_op(entry.op, params, x, name=name, fd_per_leaf=False)
    assert report.passed, report.detail


# ---------------------------------------------------------------- deliberately broken backward passes


def _normal(key, shape):
    return jax.random.normal(key, shape, jnp.float64)


def _relu_passes_everything():
    def fwd(p, x):
        return jnp.maximum(x, 0.0), x

    def bwd(cache, dy):  # the book's bug: the mask is forgotten
        return (), dy

    return Op("broken_relu", fwd, bwd)


def _wm(bwd):
    def fwd(p, x):
        return x @ p["W"], (x, p["W"])

    return Op("broken_weight_multiply", fwd, bwd)


def test_oracle_catches_relu_that_passes_every_gradient():
    x = _normal(jax.random.key(0), (5, 7))
    report = check_op(_relu_passes_everything(), (), x)
    assert not report.passed and report.diagnosis is not None
    assert report.location.leaf == "dx"


def test_oracle_catches_missing_transpose():
    # dx = dy @ W (no transpose): with a square W the shapes fit and only the values are wrong
    op = _wm(lambda c, dy: ({"W": c[0].T @ dy}, dy @ c[1]))
    W = _normal(jax.random.key(1), (4, 4))
    x = _normal(jax.random.key(2), (6, 4))
    report = check_op(op, {"W": W}, x)
    assert not report.passed and "gradient" in report.detail
    # non-square: the wrong transpose is a shape error, also reported as a failure
    op2 = _wm(lambda c, dy: ({"W": dy.T @ c[0]}, dy @ c[1].T))
    report2 = check_op(op2, {"W": _normal(jax.random.key(1), (4, 3))}, x)
    assert not report2.passed


def test_oracle_catches_missing_one_over_n():
    def fwd(pred, target):
        diff = pred - target
        return jnp.sum(diff * diff) / pred.shape[0], diff

    broken = Loss("mse_missing_1_over_n", fwd, lambda diff: 2.0 * diff)
    pred, target = _normal(jax.random.key(3), (4, 2)), _normal(jax.random.key(4), (4, 2))
    report = check_loss(broken, pred, target)
    assert not report.passed
    assert report.diagnosis == "scale" and report.constant == pytest.approx(4.0)  # the batch
    assert "= the batch size" in format_report(report)
    assert check_loss(mean_squared_error, pred, target).passed


def test_oracle_catches_bias_gradient_over_the_wrong_axis():
    def fwd(p, x):
        return x + p["B"], None

    def bwd(cache, dy):
        return {"B": jnp.sum(dy, axis=1, keepdims=True).T[:, : dy.shape[1]]}, dy

    op = Op("broken_bias_add", fwd, bwd)
    B = _normal(jax.random.key(5), (1, 3))
    x = _normal(jax.random.key(6), (5, 3))
    assert not check_op(op, {"B": B}, x).passed

    def bwd_square(cache, dy):  # square batch x units: shapes agree, values do not
        return {"B": jnp.sum(dy, axis=1)[None, :]}, dy

    x_sq = _normal(jax.random.key(6), (3, 3))
    report = check_op(Op("broken_bias_sq", fwd, bwd_square), {"B": B}, x_sq)
    assert not report.passed and report.diagnosis == "wrong-axis"


def test_oracle_catches_one_percent_error_in_one_entry_of_a_64x200_gradient():
    def bwd(cache, dy):
        x, W = cache
        dW = (x.T @ dy).at[17, 123].multiply(1.01)
        return {"W": dW}, dy @ W.T

    W = _normal(jax.random.key(8), (64, 200))
    x = _normal(jax.random.key(9), (3, 64))
    report = check_op(_wm(bwd), {"W": W}, x)
    assert not report.passed
    assert "[17, 123]" in report.detail
    assert report.diagnosis == "unknown"  # one entry off: no pattern, but the place
    assert report.location.leaf == "dparams['W']" and report.location.index == (17, 123)


def test_oracle_catches_wrong_structure_and_non_tuple():
    op = _wm(lambda c, dy: ({"V": c[0].T @ dy}, dy @ c[1].T))
    W = _normal(jax.random.key(1), (4, 3))
    x = _normal(jax.random.key(2), (6, 4))
    report = check_op(op, {"W": W}, x)
    assert "structure" in report.detail and report.diagnosis == "structure"
    op2 = _wm(lambda c, dy: dy @ c[1].T)
    report2 = check_op(op2, {"W": W}, x)
    assert not report2.passed and report2.diagnosis == "structure"


def test_finite_differences_alone_catch_an_error_the_vjp_would_too():
    """The finite-difference half is independent: it flags a wrong gradient on its own."""
    from jaxscratch.oracle.check import _fd_check

    W = _normal(jax.random.key(1), (4, 3))
    x = _normal(jax.random.key(2), (6, 4))
    dy = _normal(jax.random.key(3), (6, 3))
    f = lambda p, xx: jnp.vdot(dy, xx @ p["W"])  # noqa: E731
    good = ({"W": x.T @ dy}, dy @ W.T)
    bad = ({"W": 1.001 * x.T @ dy}, dy @ W.T)
    assert _fd_check(f, ({"W": W}, x), good, jax.random.key(0), 1e-6)[0] < 1e-6
    assert _fd_check(f, ({"W": W}, x), bad, jax.random.key(0), 1e-6)[0] > 1e-5


def test_check_registry_and_cli(capsys):
    reports = check_registry(["sigmoid", "dense[tanh]"])
    assert [r.name for r in reports] == ["dense[tanh]", "sigmoid"]
    assert "2/2" in format_reports(reports)
    assert cli_main(["gradcheck", "sigmoid", "dense[tanh]"]) == 0
    assert capsys.readouterr().out == format_reports(reports) + "\n"  # the table, unchanged
    assert cli_main(["gradcheck", "sigmoid"]) == 0
    out = capsys.readouterr().out
    assert "sigmoid" in out and "PASS" in out
    assert cli_main(["gradcheck", "no_such_op"]) == 2


def test_iter_registry_yields_each_row_as_it_finishes():
    rows = iter_registry(["tanh", "loss:mean_squared_error", "relu"], seed=0)
    assert isinstance(rows, Iterator)
    first = next(rows)  # one row computed, the others not yet
    assert first.name == "relu" and first.passed
    assert [r.name for r in rows] == ["tanh", "loss:mean_squared_error"]
    with pytest.raises(TypeError, match="iter_registry: seed must be an integer"):
        next(iter_registry(["tanh"], seed=0.5))


def test_iter_registry_enables_float64_only_while_a_row_is_computed():
    with jax.enable_x64(False):
        rows = iter_registry(["tanh", "relu"])
        assert next(rows).passed
        assert not jax.config.jax_enable_x64  # the caller's setting between rows
        assert next(rows).passed


def test_format_report_and_summary():
    ok = Report("op_a", True, 1e-17, 2e-16, 3e-10)
    bad = Report("op_b", False, 1.0, 0.5, np.inf, "dx: 3 entries off")
    assert format_report(ok) == f"{'op_a':<40} {1e-17:10.2e} {2e-16:10.2e} {3e-10:10.2e}  PASS"
    assert format_report(bad).endswith("FAIL  dx: 3 entries off")
    assert len(format_report(ok)) == len(HEADER) - len("result") + len("PASS")  # aligned columns
    assert format_summary([ok, bad]) == "oracle: 1/2 ops and losses pass (1 FAIL)"
    diagnosed = Report("op_c", False, 1.0, 0.5, 0.4, "gradient[1][0, 1]: manual 2, oracle 1")
    diagnosed.diagnosis, diagnosed.diagnosis_detail = "scale", "looks like a missing 1/2"
    diagnosed.location = Location("dx", (0, 1))
    assert format_report(diagnosed).endswith("FAIL  looks like a missing 1/2 (at dx[0, 1])")
    assert format_reports([ok]).splitlines() == [HEADER, format_report(ok), format_summary([ok])]


def test_whole_networks_pass_the_oracle():
    net = serial(dense(6, "sigmoid"), dense(5, "tanh"), dense(4, "relu"), dense(2))
    _, params = net.init(jax.random.key(0), (7,))
    x = _normal(jax.random.key(1), (5, 7))
    assert check_op(net, params, x).passed


def test_end_to_end_hand_gradients_match_jax_grad_over_100_steps():
    """Train 100 steps with hand-derived and with jax.grad gradients: same parameters."""
    net = serial(dense(8, "sigmoid"), dense(5, "sigmoid"), dense(1), name="e2e")

    def oracle_backward(cache, dy):
        params, x = cache
        _, vjp = jax.vjp(lambda p, xx: net.forward(p, xx)[0], params, x)
        return vjp(dy)

    twin = Op("e2e_jax_grad", lambda p, x: (net.forward(p, x)[0], (p, x)), oracle_backward)
    _, params = net.init(jax.random.key(0), (6,))
    X = _normal(jax.random.key(1), (100, 16, 6))
    y = jnp.sum(X[..., :2], axis=-1, keepdims=True)
    opt = sgd()

    def train(op):
        step = make_step(op, mean_squared_error, opt)

        def body(carry, batch):
            p, s = carry
            p, s, loss = step(p, s, batch[0], batch[1], 0.05, None)
            return (p, s), loss

        (p, _), losses = jax.lax.scan(body, (params, opt.init(params)), (X, y))
        return p, losses

    p_hand, l_hand = jax.jit(lambda: train(net))()
    p_grad, l_grad = jax.jit(lambda: train(twin))()
    assert float(l_hand[-1]) < float(l_hand[0])  # it trained
    for a, b in zip(jax.tree.leaves(p_hand), jax.tree.leaves(p_grad), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
