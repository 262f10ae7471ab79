"""The book's gradient mistakes, replayed as mutants of the correct ops and caught by the oracle.

Each :class:`Erratum` names the book's formula and the correct one, and builds the book's version
as a *mutant* of jaxscratch's correct op: the same forward, the book's backward (or, for the GRU,
the book's forward with the correct hand backward: the two no longer agree). :func:`find` runs
the checker that catches it and returns a :class:`Finding`: whether the mutant fails, whether the
correct op passes on the same inputs, and the diagnosis the oracle prints.

The gradient mistakes go through :func:`jaxscratch.oracle.check_op` / ``check_loss`` (float64,
random cotangent, finite differences). Two errata are not gradients and have their own checks,
both named in the finding: Glorot without the square root (the book's draws against the correct
draws from the same normal numbers, diagnosed like a gradient leaf: a scale) and the early-stopping
epoch label (the epoch the book prints against the epoch whose params it returns).

The effect of each on the book's printed figures is measured by ``experiments/errata.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxscratch.book import stepwise as sw
from jaxscratch.core import Loss, Op
from jaxscratch.ops import conv, registry, rnn
from jaxscratch.ops.activations import relu
from jaxscratch.ops.init import glorot_scale
from jaxscratch.ops.losses import softmax_cross_entropy
from jaxscratch.oracle import check_loss, check_op
from jaxscratch.oracle.diagnose import diagnose

Array = jax.Array


@dataclass(frozen=True)
class Finding:
    """What the checker said. caught: the mutant fails. correct_passes: the correct op passes
    on the same inputs. kind / words: the diagnosis (:data:`jaxscratch.oracle.KINDS`) and its
    words. where: the failing leaf and entry (or layer). checker: which check caught it."""

    caught: bool
    correct_passes: bool
    kind: str
    words: str
    where: str
    checker: str


@dataclass(frozen=True)
class Erratum:
    """key, chapter, title; book: the book's formula; correct: the right one; find: the check."""

    key: str
    chapter: str
    title: str
    book: str
    correct: str
    find: Callable[[], Finding]


def _normal(seed: int, shape: tuple[int, ...]) -> Array:
    return jax.random.normal(jax.random.key(seed), shape, jnp.float64)


def _where(report) -> str:
    loc = report.location
    if loc is None:
        return report.detail.split(":")[0]
    index = "" if loc.index is None else str(list(loc.index))
    return f"{loc.leaf}{index}"


def _op_finding(mutant: Op, correct: Op, params, x) -> Finding:
    bad, good = check_op(mutant, params, x), check_op(correct, params, x)
    return Finding(
        not bad.passed,
        good.passed,
        bad.diagnosis or "",
        bad.diagnosis_detail,
        _where(bad),
        "check_op",
    )


# ------------------------------------------------------------------------------- ch.3 / ch.4


def relu_mask() -> Finding:
    """ReLU whose backward passes every gradient (the mask x > 0 forgotten)."""
    mutant = Op("relu_book", relu.forward, lambda cache, dy: ((), dy))
    return _op_finding(mutant, relu, (), _normal(0, (5, 7)))


BOOK_EPS = 1e-9  # the book's SoftmaxCrossEntropy clips p to [eps, 1 - eps]


def _book_sce_forward(pred: Array, target: Array) -> tuple[Array, tuple]:
    """The book's loss value: -sum(y log p + (1 - y) log(1 - p)) / n, p = softmax(pred) clipped
    to [1e-9, 1 - 1e-9] as the book does. Cache: (p, target, n)."""
    p = jnp.clip(jax.nn.softmax(pred, axis=1), BOOK_EPS, 1 - BOOK_EPS)
    n = pred.shape[0]
    value = -jnp.sum(target * jnp.log(p) + (1 - target) * jnp.log(1 - p)) / n
    return value, (p, target, n)


BOOK_SOFTMAX_CE = Loss(
    "softmax_cross_entropy_book",
    _book_sce_forward,
    lambda cache: (cache[0] - cache[1]) / cache[2],  # the gradient of the loss WITHOUT the term
)


def softmax_ce() -> Finding:
    """Softmax cross-entropy whose value adds (1 - y) log(1 - p) that its gradient p - y ignores."""
    logits = _normal(1, (6, 4))
    target = jax.nn.one_hot(jnp.array([0, 3, 1, 1, 2, 0]), 4, dtype=jnp.float64)
    bad = check_loss(BOOK_SOFTMAX_CE, logits, target)
    good = check_loss(softmax_cross_entropy, logits, target)
    return Finding(
        not bad.passed, good.passed, bad.diagnosis or "", bad.diagnosis_detail, _where(bad),
        "check_loss",
    )  # fmt: skip


def glorot_sqrt(fan_in: int = 784, fan_out: int = 89) -> Finding:
    """Glorot with std 2 / (fan_in + fan_out) (the book) instead of sqrt(2 / (fan_in + fan_out)).

    Not a gradient: the book's draws and the correct ones from the same normal numbers, diagnosed
    as the oracle diagnoses a gradient leaf (the book's = c x correct)."""
    z = np.asarray(_normal(2, (fan_in, fan_out)))
    s = glorot_scale(fan_in, fan_out)
    book, right = z * s**2, z * s
    d = diagnose(book, right)
    if d is None:
        return Finding(False, True, "", "", "", "init draws")
    words = f"{d.words} = sqrt(2 / ({fan_in} + {fan_out})): the std is squared"
    return Finding(True, True, d.kind, words, "W", "init draws (same normals)")


def book_stop_label(stop_epoch: int, every: int) -> tuple[int, int]:
    """``(label, kept)``: the epoch the book's trainer prints when its eval loss rises at
    ``stop_epoch`` ("using the model from epoch stop - every") and the epoch whose params it
    really returns (a copy taken at the start of epoch ``stop_epoch``, i.e. after ``stop - 1``)."""
    return stop_epoch - every, stop_epoch - 1


def stop_label(stop_epoch: int = 40, every: int = 10) -> Finding:
    """The early-stopping message names the last evaluated epoch, not the params it returns."""
    label, kept = book_stop_label(stop_epoch, every)
    words = (
        f"stopping at epoch {stop_epoch} the book prints 'using the model from epoch {label}' "
        f"and its best loss, but returns the params after epoch {kept}, never evaluated"
    )
    return Finding(label != kept, True, "label", words, "History", "stopping policy")


# ------------------------------------------------------------------------------------ ch.5


C_OUT = 4


def _conv_example() -> tuple[dict, Array]:
    return {"W": _normal(3, (C_OUT, 3, 3, 3))}, _normal(4, (3, 3, 6, 5))


def unflipped_conv(kernel: int = 3, out_channels: int = C_OUT, init: str = "normal") -> Op:
    """conv2d (same padding) whose input gradient correlates dy with the channel-transposed
    kernel, NOT flipped in space (the book's ``_input_grad``). The kernel gradient is right."""
    good = conv.conv2d(out_channels, kernel, padding="same", init=init)

    def backward(cache, dy):
        grads, _ = good.backward(cache, dy)
        k = cache.W.shape[2]
        lo, hi = k - 1 - (k - 1) // 2, k - 1 - k // 2
        dx = lax.conv_general_dilated(
            dy, jnp.transpose(cache.W, (1, 0, 2, 3)), (1, 1), [(lo, hi), (lo, hi)],
            dimension_numbers=("NCHW", "OIHW", "NCHW"), precision=lax.Precision.HIGHEST,
        )  # fmt: skip
        return grads, dx

    return Op("conv2d_book_unflipped", good.forward, backward, good.init)


def batch_mixed_conv(kernel: int = 3, out_channels: int = C_OUT) -> Op:
    """conv2d (im2col) whose kernel gradient sums dy and the patches over the batch before
    multiplying: every sample's input meets every sample's dy (exact only for batch 1)."""
    good = conv.conv2d(out_channels, kernel, padding="same", init="glorot", method="im2col")

    def backward(cache, dy):
        grads, dx = good.backward(cache, dy)
        dW = jnp.einsum("ohw,cthw->oct", jnp.sum(dy, axis=0), jnp.sum(cache.cols, axis=0))
        return {**grads, "W": dW.reshape(cache.W.shape)}, dx

    return Op("conv2d_book_batch_mixed", good.forward, backward, good.init)


def conv_input_gradient() -> Finding:
    params, x = _conv_example()
    return _op_finding(unflipped_conv(3), conv.conv2d(C_OUT, 3, padding="same"), params, x)


def conv_kernel_gradient() -> Finding:
    params, x = _conv_example()
    good = conv.conv2d(C_OUT, 3, padding="same", method="im2col")
    return _op_finding(batch_mixed_conv(3), good, params, x)


# ------------------------------------------------------------------------------------ ch.6


def _book_gru_recur(W_h, xp, state):
    """The book's GRU step: the update gate reuses the reset gate's pre-activation."""
    W_ru, W_hh = W_h
    (h_prev,) = state
    n = h_prev.shape[1]
    pre_r = xp[:, :n] + h_prev @ W_ru[:, :n]
    r = jax.nn.sigmoid(pre_r)
    u = jax.nn.sigmoid(pre_r)  # should be x W_xu + h W_hu + B_u
    h_bar = jnp.tanh(xp[:, 2 * n :] + (r * h_prev) @ W_hh)
    return (u * h_prev + (1.0 - u) * h_bar,), (jnp.concatenate([r, u], axis=1), h_bar)


def gru_update_gate() -> Finding:
    mutant = rnn.cell_op(rnn.GRU._replace(name="gru_book", recur=_book_gru_recur))
    example = registry()["gru_cell"].example
    if example is None:  # every registered op has one (tests/test_oracle.py)
        raise RuntimeError("gru_update_gate: the gru_cell registry entry lost its example")
    params, x = example(jax.random.key(0))
    return _op_finding(mutant, rnn.gru_cell, params, x)


# ------------------------------------------------------------------------------------ ch.2


def _stepwise_linear_op(mode: str, y: Array) -> Op:
    """The ch.2 linear model as an op: params = its weights, x = X (n, d), y bound; the output is
    the printed loss, the scalar mean((y - P)^2); the backward is
    :mod:`jaxscratch.book.stepwise`'s chain rule in ``mode``, and dX = dL/dP @ W^T."""
    _, mse = sw.implied_loss("linear", "mean")

    def forward(w, X):
        _, info = sw.forward_linear_regression(X, y, w)
        return mse(info["P"], y), (info, w)

    def backward(cache, dL):
        info, w = cache
        grads, parts = sw.GRADIENTS["linear"](info, w, mode)
        return jax.tree.map(lambda g: dL * g, grads), dL * (parts["dLdP"] @ w["W"].T)

    return Op(f"stepwise_linear_{mode}", forward, backward)


def _stepwise_example(model: str) -> tuple[dict, Array, Array]:
    X, y = _normal(5, (23, 4)), _normal(6, (23, 1))
    h = 5
    keys = ("W", "B") if model == "linear" else ("W1", "B1", "W2", "B2")
    shapes = [(4, 1), (1, 1)] if model == "linear" else [(4, h), (1, h), (h, 1), (1, 1)]
    w = {k: _normal(10 + i, s) for i, (k, s) in enumerate(zip(keys, shapes, strict=True))}
    return w, X, y


def _stepwise_network_op(mode: str) -> Op:
    """The ch.2 network as an op P = f(X; weights) (n, 1); the backward is
    :mod:`jaxscratch.book.stepwise`'s chain rule in ``mode`` from dL/dP = dy: those modes
    differentiate half the sum of squares, dL/dP = P - y, so the forward info gets y = P - dy."""

    def forward(w, X):
        _, info = sw.forward_loss(X, jnp.zeros((X.shape[0], 1), X.dtype), w)
        return info["P"], (info, w)

    def backward(cache, dy):
        info, w = cache
        grads, parts = sw.GRADIENTS["network"]({**info, "y": info["P"] - dy}, w, mode)
        return grads, parts["dLdM1"] @ w["W1"].T

    return Op(f"stepwise_network_{mode}", forward, backward)


def ch2_hidden_bias() -> Finding:
    """dL/dB1 summed over the batch and then over the hidden units (one scalar for every bias)."""
    w, X, _ = _stepwise_example("network")
    mutant = _stepwise_network_op("book")
    return _op_finding(mutant, _stepwise_network_op("book_unit_bias"), w, X)


def ch2_sum_vs_mean() -> Finding:
    """The linear model prints the MEAN squared error but steps along dL/dP = -2 (y - P), the
    gradient of the SUM."""
    w, X, y = _stepwise_example("linear")
    return _op_finding(_stepwise_linear_op("book", y), _stepwise_linear_op("mean", y), w, X)


ERRATA: tuple[Erratum, ...] = (
    Erratum("ch2_sum_vs_mean", "2", "linear regression: loss printed vs loss stepped",
            "L = mean((y-P)^2), dL/dP = -2 (y - P)", "dL/dP = -2 (y - P) / n", ch2_sum_vs_mean),
    Erratum("ch2_hidden_bias", "2", "network: hidden-bias gradient",
            "dL/dB1 = sum over batch AND units (one scalar)", "dL/dB1 = sum over the batch (1, h)",
            ch2_hidden_bias),
    Erratum("relu_mask", "3", "ReLU backward", "dx = dy", "dx = dy * (x > 0)", relu_mask),
    Erratum("softmax_ce", "4", "softmax cross-entropy: value vs gradient",
            "L = -sum(y log p + (1-y) log(1-p)) / n, dL/dz = (p - y) / n",
            "L = -sum(y log p) / n", softmax_ce),
    Erratum("glorot_sqrt", "4", "Glorot initialisation", "std = 2 / (fan_in + fan_out)",
            "std = sqrt(2 / (fan_in + fan_out))", glorot_sqrt),
    Erratum("stop_label", "3-4", "early-stopping message", "'model from epoch e - every'",
            "the params of epoch e - 1 (a copy at the start of epoch e)", stop_label),
    Erratum("conv_input_gradient", "5", "conv input gradient", "dx = correlate(dy, W^T)",
            "dx = correlate(dy, W^T flipped in space)", conv_input_gradient),
    Erratum("conv_kernel_gradient", "5", "conv kernel gradient",
            "dW = (sum_n dy_n) * (sum_n patches_n)", "dW = sum_n dy_n * patches_n",
            conv_kernel_gradient),
    Erratum("gru_update_gate", "6", "GRU update gate", "u = sigmoid(x W_xr + h W_hr + B_r)",
            "u = sigmoid(x W_xu + h W_hu + B_u)", gru_update_gate),
)  # fmt: skip
