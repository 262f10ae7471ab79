"""The book's errata (jaxscratch.book.errata): every mistake is caught, with the diagnosis we claim,
and the correct op passes the same check on the same inputs; the experiment's pieces."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch.book import errata as E
from jaxscratch.core import init_params, serial
from jaxscratch.ops.dense import dense
from jaxscratch.ops.init import glorot_scale
from jaxscratch.ops.losses import softmax_cross_entropy
from jaxscratch.oracle import KINDS, check_op

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import errata as experiment  # noqa: E402

# key -> (diagnosis kind, words it must contain, where it must point)
EXPECTED = {
    "ch2_sum_vs_mean": ("scale", "missing 1/N: the ratio is 23.000 = the batch size", "dparams['B']"),
    "ch2_hidden_bias": ("wrong-axis", "summed over axes (0, 1), that one number in all 5", "dparams['B1']"),
    "relu_mask": ("missing-mask", "non-zero at 15 of the 15 entries", "dx"),
    "softmax_ce": ("unknown", "no known pattern", "dx"),
    "glorot_sqrt": ("scale", "sqrt(2 / (784 + 89)): the std is squared", "W"),
    "stop_label": ("label", "'using the model from epoch 30'", "History"),
    "conv_input_gradient": ("unknown", "no known pattern", "dx"),
    "conv_kernel_gradient": ("unknown", "no known pattern", "dparams['W']"),
    "gru_update_gate": ("unknown", "no known pattern", "dparams['B_r']"),
}  # fmt: skip


def test_every_erratum_the_issue_names_is_replayed():
    assert [e.key for e in E.ERRATA] == list(EXPECTED)


@pytest.mark.parametrize("erratum", E.ERRATA, ids=lambda e: e.key)
def test_each_erratum_is_caught_and_the_correct_op_passes(erratum):
    finding = erratum.find()
    kind, words, where = EXPECTED[erratum.key]
    assert finding.caught, finding
    assert finding.correct_passes, finding
    assert finding.kind == kind and (kind in KINDS or kind == "label"), finding
    assert words in finding.words, finding.words
    assert finding.where.startswith(where), finding.where


def test_the_batch_mixed_kernel_gradient_is_exact_for_one_sample():
    """Why the oracle's conv examples use batch >= 2: with one sample nothing is mixed."""
    params, x = E._conv_example()
    assert check_op(E.batch_mixed_conv(3), params, x[:1]).passed


def test_book_stop_label_names_the_evaluated_epoch_not_the_returned_params():
    assert E.book_stop_label(40, 10) == (30, 39)
    assert E.book_stop_label(15, 5) == (10, 14)


def test_book_glorot_squares_the_std_of_every_dense_weight():
    net = serial(dense(7, "tanh"), dense(3, "linear"))
    _, params = init_params(net, jax.random.key(0), (5,))
    book = experiment.book_glorot(params)
    for p, b in zip(jax.tree.leaves(params), jax.tree.leaves(book), strict=True):
        if p.ndim == 2 and p.shape[0] > 1:  # W (fan_in, fan_out); biases (1, n) untouched
            np.testing.assert_allclose(b, p * glorot_scale(*p.shape), rtol=1e-12)
        else:
            np.testing.assert_array_equal(b, p)


def test_the_books_softmax_ce_value_at_a_uniform_prediction():
    fx = experiment.effect_softmax_uniform(10)
    assert fx["correct"] == pytest.approx(math.log(10), rel=1e-12)
    assert fx["book"] == pytest.approx(math.log(10) + 9 * math.log(10 / 9), rel=1e-12)
    assert fx["book"] == pytest.approx(fx["book_closed_form"], rel=1e-12)


def test_the_experiments_float64_loss_values_are_the_losses_own():
    """The effect column's numpy values equal the mutant's and the correct loss's forward."""
    logits = 3.0 * jax.random.normal(jax.random.key(1), (7, 4), jnp.float64)
    target = jax.nn.one_hot(jnp.arange(7) % 4, 4, dtype=jnp.float64)
    good, book = experiment._book_ce(logits, target)
    assert good == pytest.approx(float(softmax_cross_entropy.forward(logits, target)[0]), rel=1e-12)
    assert book == pytest.approx(float(E.BOOK_SOFTMAX_CE.forward(logits, target)[0]), rel=1e-12)
    # at float32 logits of a confident network the book's value stays finite (p is clipped)
    assert np.isfinite(experiment._book_ce(np.float32([[80.0, 0, 0]]), np.eye(3)[:1])[1])


def test_the_unflipped_input_gradient_leaves_the_books_cnn_alone():
    rel = experiment.effect_conv_input(n=2, size=8, nets=("book_cnn",))["max_rel_param_grad_diff"]
    assert rel == {"book_cnn": 0.0}  # the ch.5 figure cannot move: the conv's dx is discarded


def test_the_markdown_table_says_missed_when_a_mutant_survives():
    row = {"chapter": "9", "title": "t", "book": "b", "caught": False, "where": "dx",
           "kind": "scale", "words": "x: the ratio is 2", "effect": "e"}  # fmt: skip
    table = experiment.markdown([row])
    assert "| 9 | t | `b` | **missed**: scale (the ratio is 2) at `dx` | e |" in table


@pytest.mark.slow
def test_the_experiment_without_mnist(tmp_path):
    assert experiment.main(["--no-mnist", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["all_caught_and_correct_passes"] and not res["mnist"]
    fx = res["effects"]
    assert fx["ch2_sum_vs_mean"]["with_the_book_gradient"]["mae"] == pytest.approx(3.5644, abs=5e-5)
    assert fx["ch2_hidden_bias"]["with_the_book_gradient"]["mae"] == pytest.approx(2.5951, abs=5e-5)
    assert "needs MNIST" in fx["glorot_sqrt"]["text"]
    rel = fx["conv_input_gradient"]["max_rel_param_grad_diff"]
    assert rel["book_cnn"] == 0.0 and rel["two_conv"] > 0.1  # a conv under a conv is hurt
    assert (tmp_path / "errata.md").read_text().count("\n") == 2 + len(E.ERRATA)
