"""The oracle says how and where a backward pass is wrong: one deliberately broken op per
diagnosis, the first wrong layer of a network, the wrong step and gate of an LSTM, the property
checks, and the helpers for user code (check_custom_vjp, assert_backward, report_json)."""

from __future__ import annotations

import json
from functools import partial

import jax
import jax.numpy as jnp
import pytest

from jaxscratch.core import Loss, Op, register, serial
from jaxscratch.ops import registry
from jaxscratch.ops.cells import LSTM, _lstm_recur_backward
from jaxscratch.ops.combinators import parallel
from jaxscratch.ops.dense import dense
from jaxscratch.ops.rnn import sequence
from jaxscratch.oracle import (
    KINDS,
    assert_backward,
    assert_registry,
    check_custom_vjp,
    check_loss,
    check_op,
    format_report,
    report_json,
)
from jaxscratch.oracle.localise import wrong_dx_step


def _normal(seed, shape):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float64)


def _matmul(bwd, name="broken_matmul"):
    """y = x @ W, cache (x, W), with the given backward."""
    return Op(name, lambda p, x: (x @ p["W"], (x, p["W"])), bwd)


W43, X64 = _normal(1, (4, 3)), _normal(2, (6, 4))  # non-square: batch 6, in 4, out 3


def _good_dx(c, dy):
    return dy @ c[1].T


@pytest.mark.parametrize(
    ("kind", "bwd", "words"),
    [
        ("scale", lambda c, dy: ({"W": 6.0 * c[0].T @ dy}, _good_dx(c, dy)), "= the batch size"),
        ("scale", lambda c, dy: ({"W": 2.0 * c[0].T @ dy}, _good_dx(c, dy)), "= 2"),
        ("scale", lambda c, dy: ({"W": 0.5 * c[0].T @ dy}, _good_dx(c, dy)), "= 1/2"),
        ("sign", lambda c, dy: ({"W": -c[0].T @ dy}, _good_dx(c, dy)), "sign flip"),
        ("transpose", lambda c, dy: ({"W": dy.T @ c[0]}, _good_dx(c, dy)), "transpose"),
        ("non-finite", lambda c, dy: ({"W": c[0].T @ dy / 0.0}, _good_dx(c, dy)), "not finite"),
        ("structure", lambda c, dy: ({"V": c[0].T @ dy}, _good_dx(c, dy)), "gradient tree"),
        ("shape", lambda c, dy: ({"W": (c[0].T @ dy)[:3]}, _good_dx(c, dy)), "wrong shape"),
        (
            "cross-sample",
            lambda c, dy: ({"W": c[0].T @ dy}, jnp.roll(_good_dx(c, dy), 1, 0)),
            "mixed",
        ),
        ("unknown", lambda c, dy: ({"W": c[0].T @ dy + 0.1}, _good_dx(c, dy)), "no known pattern"),
    ],
)
def test_each_diagnosis_on_a_broken_matmul(kind, bwd, words):
    report = check_op(_matmul(bwd), {"W": W43}, X64)
    assert not report.passed and report.diagnosis == kind and kind in KINDS
    assert words in format_report(report)
    if kind == "scale":
        assert report.constant == pytest.approx(
            {"= the batch size": 6.0, "= 2": 2.0}.get(words, 0.5)
        )


def test_the_printed_row_for_a_missing_one_over_n():
    def fwd(pred, target):
        diff = pred - target
        return jnp.sum(diff * diff) / pred.shape[0], diff

    broken = Loss("mse_sum", fwd, lambda diff: 2.0 * diff)  # the sum's gradient, not the mean's
    report = check_loss(broken, _normal(3, (32, 2)), _normal(4, (32, 2)))
    assert report.diagnosis == "scale" and report.constant == pytest.approx(32.0)
    assert "looks like a missing 1/N: the ratio is 32.000 = the batch size" in format_report(report)
    assert report.location is not None and report.location.leaf == "dx"


def test_transpose_of_a_square_weight_gradient_names_the_leaf_and_entry():
    op = _matmul(lambda c, dy: ({"W": (c[0].T @ dy).T}, _good_dx(c, dy)))
    report = check_op(op, {"W": _normal(1, (4, 4))}, X64)
    assert report.diagnosis == "transpose" and "axes 0 and 1 swapped" in report.diagnosis_detail
    assert report.location.leaf == "dparams['W']" and len(report.location.index) == 2


def _bias_add(bwd):
    return Op("broken_bias_add", lambda p, x: (x + p["B"], None), bwd)


@pytest.mark.parametrize("batch", [3, 5])  # square: shapes agree; 5: the shape is wrong too
def test_bias_gradient_summed_over_the_wrong_axis(batch):
    op = _bias_add(lambda c, dy: ({"B": jnp.sum(dy, axis=1)[None, :]}, dy))
    report = check_op(op, {"B": _normal(5, (1, 3))}, _normal(6, (batch, 3)))
    assert report.diagnosis == "wrong-axis", format_report(report)
    assert "summed over axes (1,)" in report.diagnosis_detail
    assert report.location.leaf == "dparams['B']"


def test_one_sum_in_every_entry_of_the_bias_is_a_wrong_axis():
    """The book's ch.2 hidden bias: dL/dB summed over the batch and the units, that one number
    given to every unit."""
    op = _bias_add(lambda c, dy: ({"B": jnp.full((1, 3), jnp.sum(dy))}, dy))
    report = check_op(op, {"B": _normal(5, (1, 3))}, _normal(6, (4, 3)))
    assert report.diagnosis == "wrong-axis", format_report(report)
    assert "summed over axes (0, 1), that one number in all 3 entries" in report.diagnosis_detail


def _relu_op(bwd):
    return Op("broken_relu", lambda p, x: (jnp.maximum(x, 0.0), x), bwd)


def test_a_forgotten_mask_is_named_and_a_wrong_value_under_the_mask_is_not():
    x = _normal(7, (6, 5))
    leaky = check_op(_relu_op(lambda x, dy: ((), dy)), (), x)
    assert leaky.diagnosis == "missing-mask", format_report(leaky)
    n_zero = int(jnp.sum(x <= 0))
    assert f"non-zero at {n_zero} of the {n_zero} entries" in leaky.diagnosis_detail
    # the mask is right but one kept entry is wrong: not a mask problem
    wrong = check_op(_relu_op(lambda x, dy: ((), (dy * (x > 0)).at[0, :].mul(1.5))), (), x)
    assert not wrong.passed and wrong.diagnosis != "missing-mask", format_report(wrong)


def test_missing_term_of_an_op_that_says_its_paths():
    """y = x @ W + tanh(x) @ V: two paths; the backward forgets the tanh path's dx."""

    def fwd(p, x):
        return x @ p["W"] + jnp.tanh(x) @ p["V"], (x, p)

    def bwd(c, dy):
        x, p = c
        t = jnp.tanh(x)
        return {"V": t.T @ dy, "W": x.T @ dy}, dy @ p["W"].T  # missing (dy @ V.T) * (1 - t^2)

    paths = {
        "x @ W": lambda p, x: x @ p["W"],
        "tanh(x) @ V": lambda p, x: jnp.tanh(x) @ p["V"],
    }
    params = {"V": _normal(7, (4, 3)), "W": W43}
    report = check_op(Op("two_paths", fwd, bwd), params, X64, paths=paths)
    assert report.diagnosis == "missing-term"
    assert "minus the path 'tanh(x) @ V'" in report.diagnosis_detail
    assert report.location.leaf == "dx"


def _double_dx(layer):
    def bwd(c, dy):
        g, dx = layer.backward(c, dy)
        return g, 2.0 * dx

    return Op("dense_doubled_dx", layer.forward, bwd, layer.init)


def test_a_wrong_layer_of_a_network_is_named():
    net = serial(dense(6, "sigmoid"), _double_dx(dense(5, "tanh")), dense(2))
    _, params = net.init(jax.random.key(0), (7,))
    report = check_op(net, params, _normal(1, (5, 7)))
    assert not report.passed and report.location.layer == 1
    assert report.location.layer_name == "dense_doubled_dx"
    assert report.diagnosis == "scale" and report.constant == pytest.approx(2.0)
    assert "layer 1 (dense_doubled_dx)" in format_report(report)


def test_a_wrong_branch_of_a_parallel_is_named():
    net = parallel(dense(3), _double_dx(dense(2, "tanh")), combine="concat")
    _, params = net.init(jax.random.key(0), (5,))
    report = check_op(net, params, _normal(1, (4, 5)))
    assert (report.location.kind, report.location.layer) == ("branch", 1)
    assert report.diagnosis == "scale" and "branch 1 (dense_doubled_dx)" in format_report(report)


def _no_forget(W_h, h_prev, cache, dstate):  # the LSTM's c_prev -> c path dropped
    dxp, (dh_prev, dc_prev) = _lstm_recur_backward(W_h, h_prev, cache, dstate)
    return dxp, (dh_prev, jnp.zeros_like(dc_prev))


def test_a_dropped_lstm_forget_path_names_the_step_and_gate():
    broken = LSTM._replace(recur_backward=_no_forget)
    params, x = registry()["sequence[lstm]"].example(jax.random.key(0))  # T = 6
    report = check_op(sequence(broken), params, x)
    assert not report.passed and report.diagnosis == "missing-term"
    loc = report.location
    assert (loc.step, loc.cell) == (5, "lstm") and "forget" in loc.part
    assert "lstm[t=5] dc_prev via the forget gate" in format_report(report)


def test_wrong_dx_step_is_the_latest_wrong_time_step():
    good = _normal(0, (3, 6, 4))
    bad = good.at[:, 2].add(1.0).at[:, 4].add(1.0)
    assert wrong_dx_step(bad, good, 1e-10) == 4
    assert wrong_dx_step(good, good, 1e-10) is None


# ------------------------------------------------------------------------------ property checks


def _centre():
    """y = x - mean over the batch: correct, and not per-sample (every dx row sees every dy)."""

    def bwd(c, dy):
        return (), dy - jnp.mean(dy, axis=0, keepdims=True)

    return Op("centre", lambda p, x: (x - jnp.mean(x, axis=0, keepdims=True), None), bwd)


def test_properties_pass_and_per_sample_is_detected_from_the_oracle():
    x = _normal(0, (5, 3))
    for op, per_sample in ((registry()["tanh"].op, True), (_centre(), False)):
        report = check_op(op, (), x, properties=True)
        assert report.passed, format_report(report)
        assert set(report.checks) - {"jvp"} == {  # tanh also carries a hand JVP
            "linear-in-dy",
            "per-sample",
            "jit",
            "vmap",
            "scan",
            "float32",
        }
        assert all(c.passed for c in report.checks.values())
        assert report.checks["per-sample"].skipped is not per_sample
        assert report.checks["vmap"].skipped is not per_sample


def test_a_backward_that_only_works_eagerly_or_in_float64_fails_its_property():
    def host_bwd(c, dy):  # float() of the cotangent: fine eagerly, not under jit
        scale = float(jnp.max(jnp.abs(dy))) / float(jnp.max(jnp.abs(dy)))
        return {"W": scale * (c[0].T @ dy)}, _good_dx(c, dy)

    report = check_op(_matmul(host_bwd), {"W": W43}, X64, properties=True)
    assert not report.passed and report.vjp_max_rel < 1e-12  # the vjp alone passes
    assert not report.checks["jit"].passed and not report.checks["scan"].passed
    assert "jit check fails" in format_report(report)

    def f64_bwd(c, dy):
        return {"W": c[0].T @ dy.astype(jnp.float64)}, _good_dx(c, dy).astype(jnp.float64)

    report = check_op(_matmul(f64_bwd), {"W": W43}, X64, properties=True)
    assert not report.checks["float32"].passed and "float64" in report.checks["float32"].detail


# --------------------------------------------------------------------- helpers for user code


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def scaled_tanh_matmul(x, W, scale):
    return scale * jnp.tanh(x @ W)


def _fwd(x, W, scale):
    y = jnp.tanh(x @ W)
    return scale * y, (x, W, y)


def _bwd(scale, res, g):
    x, W, y = res
    d = scale * g * (1.0 - y * y)
    return d @ W.T, x.T @ d


def _bwd_mean(scale, res, g):  # a 1/N that the forward does not have
    dx, dW = _bwd(scale, res, g)
    return dx, dW / res[0].shape[0]


def test_check_custom_vjp_as_a_user_would():
    x, W = _normal(3, (5, 4)), _normal(4, (4, 3))
    scaled_tanh_matmul.defvjp(_fwd, _bwd)
    report = check_custom_vjp(scaled_tanh_matmul, x, W, 1.5)
    assert report.passed, format_report(report)
    scaled_tanh_matmul.defvjp(_fwd, _bwd_mean)
    report = check_custom_vjp(scaled_tanh_matmul, x, W, 1.5)
    assert not report.passed and report.diagnosis == "scale"
    assert "extra 1/N" in report.diagnosis_detail and report.location.leaf == "dx[1]"
    with pytest.raises(TypeError, match="check_custom_vjp: f must be a jax.custom_vjp"):
        check_custom_vjp(jnp.tanh, x)


def test_assert_backward_fails_with_the_diagnosis_and_report_json():
    good = _matmul(lambda c, dy: ({"W": c[0].T @ dy}, _good_dx(c, dy)))
    assert assert_backward(good, {"W": W43}, X64).passed
    bad = _matmul(lambda c, dy: ({"W": -c[0].T @ dy}, _good_dx(c, dy)))
    with pytest.raises(AssertionError, match="looks like a sign flip") as info:
        assert_backward(bad, {"W": W43}, X64)
    assert "location: dparams['W']" in str(info.value)
    shape = _matmul(lambda c, dy: ({"W": dy.T @ c[0]}, _good_dx(c, dy)))
    reports = [check_op(good, {"W": W43}, X64), check_op(shape, {"W": W43}, X64)]
    out = report_json(reports)
    text = json.dumps(out, allow_nan=False)  # infinite errors become null
    assert out["n"] == 2 and out["n_failed"] == 1 and not out["passed"]
    row = out["reports"][1]
    assert row["diagnosis"] == "transpose" and row["vjp_max_abs"] is None
    assert row["location"]["leaf"] == "dparams['W']" and "transpose" in text


def test_assert_registry_over_a_users_registered_ops(clean_registry):
    def example(key):
        return {"W": _normal(1, (4, 3))}, _normal(2, (6, 4))

    register(_matmul(lambda c, dy: ({"W": c[0].T @ dy}, _good_dx(c, dy)), "user_ok"), example)
    register(_matmul(lambda c, dy: ({"W": -c[0].T @ dy}, _good_dx(c, dy)), "user_bad"), example)
    assert [r.name for r in assert_registry(["user_ok"])] == ["user_ok"]
    with pytest.raises(AssertionError, match="user_bad: looks like a sign flip"):
        assert_registry(["user_ok", "user_bad"])
    with pytest.raises(AssertionError, match="no registered op"):
        assert_registry(["no_such_op"])
