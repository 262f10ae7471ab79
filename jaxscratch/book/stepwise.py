"""Chapter 2, step by step: linear regression and a one-hidden-layer sigmoid network.

The book builds both models out of named intermediate quantities and writes every partial
derivative out by hand; this module keeps the book's names so the two read side by side.

Linear regression, weights ``{"W": (d, 1), "B": (1, 1)}``::

    N = X @ W          P = N + B          L = mean((y - P)^2)

One hidden layer of ``h`` sigmoid units, weights ``{"W1": (d, h), "B1": (1, h), "W2": (h, 1),
"B2": (1, 1)}``::

    M1 = X @ W1   N1 = M1 + B1   O1 = sigmoid(N1)   M2 = O1 @ W2   P = M2 + B2   L = mean((y - P)^2)

Shapes: ``X`` (n, d), ``y`` (n, 1) (a column, never (n,)), ``P`` (n, 1). The forward functions
return ``(loss, forward_info)``, where ``forward_info`` is a dict of the intermediates above
(``X, N, P, y`` or ``X, M1, N1, O1, M2, P, y``), and the loss is the **mean** squared error, the
number the book prints. The ``loss_gradients_*`` functions take ``(forward_info, weights, mode)`` and
return ``(grads, partials)``: ``grads`` has the structure of ``weights``; ``partials`` holds every
partial derivative the book names (``dLdP``, ``dPdN``, ... ``dLdW1``).

Gradient modes (:data:`MODES`), i.e. which loss the returned gradients are the gradient of:

* ``"book"``: the gradients the book's code used. The linear model takes dL/dP = -2 (y - P), the
  gradient of the **sum** of squared errors; the network takes dL/dP = -(y - P), the gradient of
  **half** the sum of squared errors, and sums its bias gradients twice: dL/dB1 is summed over the
  batch *and then over the hidden units*, so one scalar is subtracted from every hidden bias (B2
  likewise, which changes nothing with one output unit). Needed to reproduce the printed figures.
* ``"book_unit_bias"``: the book's loss scaling with per-unit bias gradients, i.e. the exact
  gradient of the sum (linear) or half sum (network) of squared errors. Same as ``"book"`` for the
  linear model.
* ``"mean"``: the exact gradient of the mean squared error that the forward pass returns.

:func:`implied_loss` names and returns the loss each mode's gradients belong to; the tests check
this with ``jax.grad``, which is never used here.

Training on the book's schedule (:func:`~jaxscratch.book.stepwise_train.train`) lives in
:mod:`jaxscratch.book.stepwise_train`. Arguments are checked by :mod:`jaxscratch.validate`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxscratch.validate import check_choice, check_positive_int

Array = jax.Array
Weights = dict[str, Array]
ForwardInfo = dict[str, Array]
Mode = Literal["book", "book_unit_bias", "mean"]
ModelName = Literal["linear", "network"]

MODES: tuple[str, ...] = ("book", "book_unit_bias", "mean")
MODEL_NAMES: tuple[str, ...] = ("linear", "network")
LINEAR_KEYS: tuple[str, ...] = ("W", "B")
NETWORK_KEYS: tuple[str, ...] = ("W1", "B1", "W2", "B2")


# --------------------------------------------------------------------------------------------------
# checks (shapes at trace time; values only where the arrays are concrete)


def _shape(a: Any) -> tuple[int, ...]:
    return tuple(getattr(a, "shape", np.shape(a)))


def _check_keys(fn: str, weights: object, keys: tuple[str, ...]) -> None:
    if not isinstance(weights, dict) or set(weights) != set(keys):
        got = sorted(weights) if isinstance(weights, dict) else type(weights).__name__
        raise ValueError(f"{fn}: weights must be a dict with keys {list(keys)}, got {got}")


def _check_X(fn: str, X: Array, n_in: int) -> None:
    if X.ndim != 2 or X.shape[1] != n_in:
        raise ValueError(f"{fn}: X has shape {_shape(X)}, expected (n, {n_in})")
    if X.shape[0] == 0:
        raise ValueError(f"{fn}: X is empty (shape {_shape(X)})")


def _check_y(fn: str, X: Array | np.ndarray, y: Array | np.ndarray) -> None:
    if y.ndim != 2 or y.shape[1] != 1:
        raise ValueError(
            f"{fn}: y has shape {_shape(y)}, expected a column vector ({X.shape[0]}, 1); "
            "reshape with y.reshape(-1, 1)"
        )
    if y.shape[0] != X.shape[0]:
        raise ValueError(
            f"{fn}: X has {X.shape[0]} rows but y has {y.shape[0]} (X {_shape(X)}, y {_shape(y)})"
        )


def _check_param(fn: str, name: str, a: Array, shape: tuple[int, ...]) -> None:
    if _shape(a) != shape:
        raise ValueError(f"{fn}: weights['{name}'] has shape {_shape(a)}, expected {shape}")


def _check_linear(fn: str, X: Array, weights: Weights) -> None:
    _check_keys(fn, weights, LINEAR_KEYS)
    W = weights["W"]
    if W.ndim != 2 or W.shape[1] != 1:
        raise ValueError(f"{fn}: weights['W'] has shape {_shape(W)}, expected (d, 1)")
    _check_param(fn, "B", weights["B"], (1, 1))
    _check_X(fn, X, W.shape[0])


def _check_network(fn: str, X: Array, weights: Weights) -> None:
    _check_keys(fn, weights, NETWORK_KEYS)
    W1 = weights["W1"]
    if W1.ndim != 2:
        raise ValueError(f"{fn}: weights['W1'] has shape {_shape(W1)}, expected (d, h)")
    d, h = W1.shape
    _check_param(fn, "B1", weights["B1"], (1, h))
    _check_param(fn, "W2", weights["W2"], (h, 1))
    _check_param(fn, "B2", weights["B2"], (1, 1))
    _check_X(fn, X, d)


def _check_finite(fn: str, **arrays: object) -> None:
    """NaN/inf check for concrete arrays (skipped for tracers, i.e. inside jit)."""
    for name, a in arrays.items():
        if isinstance(a, jax.core.Tracer):
            continue
        v = np.asarray(a)
        if not np.all(np.isfinite(v)):
            bad = np.argwhere(~np.isfinite(v))[0].tolist()
            raise ValueError(f"{fn}: {name} holds NaN or infinite values (first at index {bad})")


def _check_mode(fn: str, mode: str) -> None:
    check_choice(fn, "mode", mode, MODES)


def _check_forward_info(fn: str, info: object, keys: tuple[str, ...]) -> None:
    if not isinstance(info, dict) or not set(keys) <= set(info):
        got = sorted(info) if isinstance(info, dict) else type(info).__name__
        raise ValueError(f"{fn}: forward_info must hold {list(keys)}, got {got}")


# --------------------------------------------------------------------------------------------------
# linear regression


def forward_linear_regression(X: Array, y: Array, weights: Weights) -> tuple[Array, ForwardInfo]:
    """N = X @ W, P = N + B, loss = mean((y - P)^2).

    X: (n, d), y: (n, 1), weights {"W": (d, 1), "B": (1, 1)}. Returns ``(loss, forward_info)``:
    loss a scalar, forward_info {"X": (n, d), "N": (n, 1), "P": (n, 1), "y": (n, 1)}.
    """
    fn = "forward_linear_regression"
    _check_linear(fn, X, weights)
    _check_y(fn, X, y)
    N = X @ weights["W"]
    P = N + weights["B"]
    loss = jnp.mean((y - P) ** 2)
    return loss, {"X": X, "N": N, "P": P, "y": y}


def _dLdP(fn: str, model: str, y: Array, P: Array, mode: str) -> Array:
    """dL/dP of the loss that ``mode`` differentiates (see :func:`implied_loss`)."""
    _check_mode(fn, mode)
    if mode == "mean":
        return -2.0 * (y - P) / P.shape[0]  # L = mean((y - P)^2)
    if model == "linear":
        return -2.0 * (y - P)  # L = sum((y - P)^2)
    return -(y - P)  # L = sum((y - P)^2) / 2


def loss_gradients_linear(
    forward_info: ForwardInfo, weights: Weights, mode: Mode = "mean"
) -> tuple[Weights, dict[str, Array]]:
    """The chain rule for the linear model, written out with the book's partials.

    dLdP (n,1) by ``mode``; dPdN = 1 (n,1); dPdB = 1 (1,1); dLdN = dLdP * dPdN (n,1);
    dNdW = X^T (d,n); dLdW = dNdW @ dLdN (d,1); dLdB = sum_rows(dLdP * dPdB) (1,1).
    Returns ``(grads {"W": dLdW, "B": dLdB}, partials)`` with every partial above.
    """
    fn = "loss_gradients_linear"
    _check_forward_info(fn, forward_info, ("X", "N", "P", "y"))
    X, N, P, y = (forward_info[k] for k in ("X", "N", "P", "y"))
    _check_linear(fn, X, weights)
    dLdP = _dLdP(fn, "linear", y, P, mode)
    dPdN = jnp.ones_like(N)
    dPdB = jnp.ones_like(weights["B"])
    dLdN = dLdP * dPdN
    dNdW = X.T
    dLdW = dNdW @ dLdN
    dLdB = jnp.sum(dLdP * dPdB, axis=0, keepdims=True)
    partials = {
        "dLdP": dLdP,
        "dPdN": dPdN,
        "dPdB": dPdB,
        "dLdN": dLdN,
        "dNdW": dNdW,
        "dLdW": dLdW,
        "dLdB": dLdB,
    }
    return {"W": dLdW, "B": dLdB}, partials


def predict_linear(X: Array, weights: Weights) -> Array:
    """P = X @ W + B.  X: (n, d), weights {"W": (d, 1), "B": (1, 1)} -> P: (n, 1)."""
    _check_linear("predict_linear", X, weights)
    _check_finite("predict_linear", X=X)
    return X @ weights["W"] + weights["B"]


def least_squares_weights(X: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Closed-form least squares with an intercept (numpy ``lstsq``), as linear-model weights.

    X: (n, d), y: (n, 1) -> {"W": (d, 1), "B": (1, 1)} float64, for :func:`predict_linear`.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"least_squares_weights: X has shape {X.shape}, expected (n, d)")
    _check_y("least_squares_weights", X, y)
    _check_finite("least_squares_weights", X=X, y=y)
    A = np.hstack([X, np.ones((X.shape[0], 1))])
    coef = np.linalg.lstsq(A, y, rcond=None)[0]
    return {"W": coef[:-1], "B": coef[-1:]}


# --------------------------------------------------------------------------------------------------
# one-hidden-layer network


def forward_loss(X: Array, y: Array, weights: Weights) -> tuple[Array, ForwardInfo]:
    """The network's forward pass and mean squared error (the book's ``forward_loss``).

    M1 = X @ W1, N1 = M1 + B1, O1 = sigmoid(N1), M2 = O1 @ W2, P = M2 + B2, loss = mean((y - P)^2).
    X: (n, d), y: (n, 1), weights {"W1": (d, h), "B1": (1, h), "W2": (h, 1), "B2": (1, 1)}.
    Returns ``(loss, forward_info)`` with forward_info {"X": (n, d), "M1", "N1", "O1": (n, h),
    "M2", "P", "y": (n, 1)}. (The book returns ``(forward_info, loss)``; the order here matches
    :func:`forward_linear_regression`.)
    """
    fn = "forward_loss"
    _check_network(fn, X, weights)
    _check_y(fn, X, y)
    M1 = X @ weights["W1"]
    N1 = M1 + weights["B1"]
    O1 = jax.nn.sigmoid(N1)  # finite at +-1000, unlike 1 / (1 + exp(-x))
    M2 = O1 @ weights["W2"]
    P = M2 + weights["B2"]
    loss = jnp.mean((y - P) ** 2)
    return loss, {"X": X, "M1": M1, "N1": N1, "O1": O1, "M2": M2, "P": P, "y": y}


forward_network = forward_loss


def loss_gradients_network(
    forward_info: ForwardInfo, weights: Weights, mode: Mode = "mean"
) -> tuple[Weights, dict[str, Array]]:
    """The chain rule for the network, written out with the book's partials.

    dLdP (n,1) by ``mode``; dPdM2 = 1 (n,1); dLdM2 = dLdP * dPdM2; dPdB2 = 1 (1,1);
    dLdB2 = sum_rows(dLdP * dPdB2) (1,1); dM2dW2 = O1^T (h,n); dLdW2 = dM2dW2 @ dLdM2 (h,1);
    dM2dO1 = W2^T (1,h); dLdO1 = dLdM2 @ dM2dO1 (n,h); dO1dN1 = O1 (1 - O1) (n,h);
    dLdN1 = dLdO1 * dO1dN1; dN1dB1 = 1 (1,h); dN1dM1 = 1 (n,h); dLdB1 = sum_rows(dLdN1 * dN1dB1)
    (1,h); dLdM1 = dLdN1 * dN1dM1; dM1dW1 = X^T (d,n); dLdW1 = dM1dW1 @ dLdM1 (d,h).

    Bias gradients: per unit (``grads["B1"] = dLdB1``) except in ``"book"`` mode, where the book
    sums dLdB1 over the units as well and subtracts that one scalar from every hidden bias:
    ``grads["B1"] = full((1, h), sum(dLdB1))`` (and ``grads["B2"]`` likewise, the same value for
    one output). Returns ``(grads {"W1","B1","W2","B2"}, partials)``.
    """
    fn = "loss_gradients_network"
    keys = ("X", "M1", "N1", "O1", "M2", "P", "y")
    _check_forward_info(fn, forward_info, keys)
    X, M1, _, O1, M2, P, y = (forward_info[k] for k in keys)
    _check_network(fn, X, weights)
    dLdP = _dLdP(fn, "network", y, P, mode)
    dPdM2 = jnp.ones_like(M2)
    dLdM2 = dLdP * dPdM2
    dPdB2 = jnp.ones_like(weights["B2"])
    dLdB2 = jnp.sum(dLdP * dPdB2, axis=0, keepdims=True)
    dM2dW2 = O1.T
    dLdW2 = dM2dW2 @ dLdM2
    dM2dO1 = weights["W2"].T
    dLdO1 = dLdM2 @ dM2dO1
    dO1dN1 = O1 * (1.0 - O1)
    dLdN1 = dLdO1 * dO1dN1
    dN1dB1 = jnp.ones_like(weights["B1"])
    dN1dM1 = jnp.ones_like(M1)
    dLdB1 = jnp.sum(dLdN1 * dN1dB1, axis=0, keepdims=True)
    dLdM1 = dLdN1 * dN1dM1
    dM1dW1 = X.T
    dLdW1 = dM1dW1 @ dLdM1
    if mode == "book":  # the book's .sum(axis=0) applied a second time, across the units
        gB1 = jnp.full_like(weights["B1"], jnp.sum(dLdB1))
        gB2 = jnp.full_like(weights["B2"], jnp.sum(dLdB2))
    else:
        gB1, gB2 = dLdB1, dLdB2
    partials = {
        "dLdP": dLdP,
        "dPdM2": dPdM2,
        "dLdM2": dLdM2,
        "dPdB2": dPdB2,
        "dLdB2": dLdB2,
        "dM2dW2": dM2dW2,
        "dLdW2": dLdW2,
        "dM2dO1": dM2dO1,
        "dLdO1": dLdO1,
        "dO1dN1": dO1dN1,
        "dLdN1": dLdN1,
        "dN1dB1": dN1dB1,
        "dN1dM1": dN1dM1,
        "dLdB1": dLdB1,
        "dLdM1": dLdM1,
        "dM1dW1": dM1dW1,
        "dLdW1": dLdW1,
    }
    return {"W1": dLdW1, "B1": gB1, "W2": dLdW2, "B2": gB2}, partials


def predict_network(X: Array, weights: Weights) -> Array:
    """P = sigmoid(X @ W1 + B1) @ W2 + B2.  X: (n, d) -> P: (n, 1)."""
    _check_network("predict_network", X, weights)
    _check_finite("predict_network", X=X)
    O1 = jax.nn.sigmoid(X @ weights["W1"] + weights["B1"])
    return O1 @ weights["W2"] + weights["B2"]


# --------------------------------------------------------------------------------------------------
# which loss each gradient mode differentiates


def implied_loss(model: ModelName, mode: Mode) -> tuple[str, Callable[[Array, Array], Array]]:
    """The loss whose exact gradient ``mode`` returns, as ``(description, loss(P, y))``.

    For the network in ``"book"`` mode this holds for every parameter except the biases, whose
    gradient is additionally summed over the units (see :func:`loss_gradients_network`).
    """
    _check_model("implied_loss", model)
    _check_mode("implied_loss", mode)
    if mode == "mean":
        return "mean squared error", lambda P, y: jnp.mean((y - P) ** 2)
    if model == "linear":
        return "sum of squared errors", lambda P, y: jnp.sum((y - P) ** 2)
    return "half the sum of squared errors", lambda P, y: 0.5 * jnp.sum((y - P) ** 2)


# --------------------------------------------------------------------------------------------------
# initialisation


def _check_model(fn: str, model: str) -> None:
    check_choice(fn, "model", model, MODEL_NAMES)


def init_weights(
    key: Array,
    n_in: int,
    *,
    model: ModelName = "linear",
    hidden_size: int = 13,
    dtype: jnp.dtype = jnp.float64,
) -> Weights:
    """Standard-normal weights from a ``jax.random`` key (the book's distribution, jax's RNG).

    linear: {"W": (n_in, 1), "B": (1, 1)}; network: {"W1": (n_in, h), "B1": (1, h),
    "W2": (h, 1), "B2": (1, 1)}, one subkey per array.
    """
    _check_model("init_weights", model)
    shapes = _weight_shapes("init_weights", model, n_in, hidden_size)
    keys = jax.random.split(key, len(shapes))
    return {
        k: jax.random.normal(kk, s, dtype) for kk, (k, s) in zip(keys, shapes.items(), strict=True)
    }


def book_init_weights(
    rng: np.random.RandomState, n_in: int, *, model: ModelName = "linear", hidden_size: int = 13
) -> dict[str, np.ndarray]:
    """The book's ``init_weights``: ``rng.randn`` draws in the book's order (float64 numpy).

    linear: W (n_in, 1), B (1, 1); network: W1 (n_in, h), B1 (1, h), W2 (h, 1), B2 (1, 1).
    ``rng = np.random.RandomState(seed)`` gives the same stream as the book's
    ``np.random.seed(seed)`` followed by ``np.random.randn``, without touching the global state.
    """
    _check_model("book_init_weights", model)
    shapes = _weight_shapes("book_init_weights", model, n_in, hidden_size)
    return {k: rng.randn(*s) for k, s in shapes.items()}


def _weight_shapes(fn: str, model: str, n_in: int, hidden_size: int) -> dict[str, tuple[int, int]]:
    n_in = check_positive_int(fn, "n_in", n_in)
    hidden_size = check_positive_int(fn, "hidden_size", hidden_size)
    if model == "linear":
        return {"W": (n_in, 1), "B": (1, 1)}
    return {"W1": (n_in, hidden_size), "B1": (1, hidden_size), "W2": (hidden_size, 1), "B2": (1, 1)}


# --------------------------------------------------------------------------------------------------
# either model


def predict_weights(X: Array, weights: Weights) -> Array:
    """Predictions of the chapter-2 model that ``weights`` describe, chosen by their keys:
    {"W","B"} is :func:`predict_linear`, {"W1","B1","W2","B2"} :func:`predict_network`.

    X: (n, d) -> (n, 1). (For a :class:`~jaxscratch.core.Op` network use
    ``jaxscratch.train.loop.predict(net, params, X)``.)
    """
    if isinstance(weights, dict) and set(weights) == set(NETWORK_KEYS):
        return predict_network(X, weights)
    return predict_linear(X, weights)


FORWARD = {"linear": forward_linear_regression, "network": forward_loss}
GRADIENTS = {"linear": loss_gradients_linear, "network": loss_gradients_network}
