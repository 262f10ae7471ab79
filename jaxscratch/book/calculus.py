"""Chapter 1: derivatives, nested functions and the chain rule, by hand, in ``jax.numpy``.

The book's first chapter builds everything a neural network needs from three ideas, and this
module mirrors it:

1. **Elementary functions carry their derivative.** :class:`Elementary` pairs a function ``f``
   with its hand-derived derivative ``df`` (``square``, ``sigmoid``, ``leaky_relu``, ``relu``,
   ``tanh``). Calling one applies ``f``; ``.deriv(x)`` applies ``df``. All act elementwise, so
   their derivative is an array of the same shape as ``x``.
2. **The chain rule.** :func:`chain` applies a list of elementary functions (``fs[0]`` first) and
   :func:`chain_deriv` differentiates the composition by multiplying the derivatives of the links,
   each evaluated at that link's input: ``(f_n o ... o f_1)'(x) = f_n'(u_{n-1}) ... f_1'(x)``.
   The book's fixed-length ``chain_length_2/3`` and ``chain_deriv_2/3`` are thin wrappers.
3. **Functions of several inputs and of matrices.** ``sigma(x + y)``, ``sigma(x * y)`` and
   ``sum(sigma(X @ W))``, each with a backward function written out from the chain rule.

:func:`deriv` is the book's central difference, the numerical check that needs no calculus.
No function here calls ``jax.grad``; tests use it (and finite differences) as an oracle.

Chapter 1 predates the op contract of later chapters (``forward(params, x) -> (y, cache)``); its
functions keep the book's signatures. Matrices are 2-D: ``X`` is (batch, n), ``W`` is (n, m). Bad
shapes raise ``ValueError`` naming the function and both shapes; an argument that must carry a
derivative but is a plain callable raises ``TypeError``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxscratch.validate import check_positive

Array = jax.Array

LEAKY_SLOPE = 0.2
"""Slope of :data:`leaky_relu` for negative inputs (the book's ``max(0.2 * x, x)``)."""


@dataclass(frozen=True)
class Elementary:
    """An elementwise function with its hand-derived derivative.

    ``name``: label used in messages; ``f``: x -> f(x); ``df``: x -> f'(x), both elementwise, so
    every shape maps to the same shape. Instances are callable (``e(x) == e.f(x)``) and hashable,
    so they can be static arguments of ``jax.jit``.
    """

    name: str
    f: Callable[[Array], Array]
    df: Callable[[Array], Array]

    def __call__(self, x: ArrayLike) -> Array:
        """f(x), elementwise; same shape as x."""
        return self.f(_as_float(x))

    def deriv(self, x: ArrayLike) -> Array:
        """f'(x), elementwise; same shape as x."""
        return self.df(_as_float(x))

    def __repr__(self) -> str:
        return f"Elementary({self.name!r})"


def _as_float(x: ArrayLike) -> Array:
    """x as a jax array; integers become the default float dtype (float64 under x64)."""
    a = jnp.asarray(x)
    if not jnp.issubdtype(a.dtype, jnp.inexact):
        a = a.astype(jnp.result_type(float))
    return a


# --- elementary functions -------------------------------------------------------------------


def _square(x: Array) -> Array:
    return x * x


def _square_deriv(x: Array) -> Array:
    return 2.0 * x


def _sigmoid(x: Array) -> Array:
    # jax.nn.sigmoid is finite at +-1000, unlike 1 / (1 + exp(-x)) whose exp overflows.
    return jax.nn.sigmoid(x)


def _sigmoid_deriv(x: Array) -> Array:
    s = jax.nn.sigmoid(x)
    return s * (1.0 - s)


def _leaky_relu(x: Array) -> Array:
    return jnp.maximum(LEAKY_SLOPE * x, x)


def _leaky_relu_deriv(x: Array) -> Array:
    # Kink at 0: the left slope (0.2) is used, like relu's derivative 0 at 0.
    return jnp.where(x > 0, jnp.ones_like(x), jnp.full_like(x, LEAKY_SLOPE))


def _relu(x: Array) -> Array:
    return jnp.maximum(x, jnp.zeros_like(x))


def _relu_deriv(x: Array) -> Array:
    # Kink at 0: derivative 0 there (the usual convention, and jax.nn.relu's).
    return jnp.where(x > 0, jnp.ones_like(x), jnp.zeros_like(x))


def _tanh(x: Array) -> Array:
    return jnp.tanh(x)


def _tanh_deriv(x: Array) -> Array:
    t = jnp.tanh(x)
    return 1.0 - t * t


square = Elementary("square", _square, _square_deriv)
"""x^2; derivative 2x."""
sigmoid = Elementary("sigmoid", _sigmoid, _sigmoid_deriv)
"""1 / (1 + exp(-x)); derivative s(1 - s) with s = sigmoid(x). Finite at +-1000."""
leaky_relu = Elementary("leaky_relu", _leaky_relu, _leaky_relu_deriv)
"""max(0.2x, x); derivative 1 for x > 0, 0.2 for x <= 0."""
relu = Elementary("relu", _relu, _relu_deriv)
"""max(x, 0); derivative 1 for x > 0, 0 for x <= 0."""
tanh = Elementary("tanh", _tanh, _tanh_deriv)
"""tanh(x); derivative 1 - tanh(x)^2. Finite at +-1000."""

ELEMENTARY: tuple[Elementary, ...] = (square, sigmoid, leaky_relu, relu, tanh)
"""Every elementary function of chapter 1."""


def _require_elementary(fname: str, what: str, e: object) -> Elementary:
    if not isinstance(e, Elementary):
        raise TypeError(
            f"{fname}: {what} must be an Elementary (a function with its derivative), "
            f"got {type(e).__name__} {e!r}"
        )
    return e


# --- numerical derivative -------------------------------------------------------------------


def deriv(func: Callable[[Array], Array], x: ArrayLike, delta: float = 0.001) -> Array:
    """The book's central difference: (f(x + delta) - f(x - delta)) / (2 delta).

    ``func`` must be elementwise; x: any shape -> same shape. Its error is O(delta^2) from
    truncation plus O(eps / delta) from rounding.
    """
    delta = check_positive("deriv", "delta", delta)
    x = _as_float(x)
    return (func(x + delta) - func(x - delta)) / (2.0 * delta)


# --- chains ---------------------------------------------------------------------------------


def _check_chain(fname: str, fs: Sequence[Callable[[Array], Array]]) -> None:
    if isinstance(fs, Elementary) or not isinstance(fs, Sequence):
        raise TypeError(f"{fname}: fs must be a sequence of functions, got {fs!r}")
    if len(fs) == 0:
        raise ValueError(f"{fname}: the chain is empty; it needs at least one function")


def chain(fs: Sequence[Callable[[Array], Array]], x: ArrayLike) -> Array:
    """f_n(...f_2(f_1(x))) for fs = [f_1, ..., f_n] (fs[0] is applied first).

    Elementwise functions: x: any shape -> same shape. An empty chain is a ``ValueError``.
    """
    _check_chain("chain", fs)
    u = _as_float(x)
    for f in fs:
        u = f(u)
    return u


def chain_deriv(fs: Sequence[Elementary], x: ArrayLike) -> Array:
    """Derivative of :func:`chain` by the chain rule, for a chain of any length.

    With u_0 = x and u_k = f_k(u_{k-1}): d/dx = f_n'(u_{n-1}) * ... * f_2'(u_1) * f_1'(u_0).
    Every link must be an :class:`Elementary`. x: any shape -> same shape (elementwise).
    """
    _check_chain("chain_deriv", fs)
    for i, f in enumerate(fs):
        _require_elementary("chain_deriv", f"fs[{i}]", f)
    u = _as_float(x)
    d = jnp.ones_like(u)
    for f in fs:
        d = d * f.deriv(u)  # derivative of this link, at its own input
        u = f(u)
    return d


def _check_length(fname: str, fs: Sequence[Callable[[Array], Array]], n: int) -> None:
    _check_chain(fname, fs)
    if len(fs) != n:
        raise ValueError(f"{fname}: expects a chain of {n} functions, got {len(fs)}")


def chain_length_2(fs: Sequence[Callable[[Array], Array]], x: ArrayLike) -> Array:
    """The book's two-link chain: fs[1](fs[0](x)). ``ValueError`` unless len(fs) == 2."""
    _check_length("chain_length_2", fs, 2)
    return chain(fs, x)


def chain_length_3(fs: Sequence[Callable[[Array], Array]], x: ArrayLike) -> Array:
    """The book's three-link chain: fs[2](fs[1](fs[0](x))). ``ValueError`` unless len(fs) == 3."""
    _check_length("chain_length_3", fs, 3)
    return chain(fs, x)


def chain_deriv_2(fs: Sequence[Elementary], x: ArrayLike) -> Array:
    """The book's f_2'(f_1(x)) * f_1'(x). ``ValueError`` unless len(fs) == 2."""
    _check_length("chain_deriv_2", fs, 2)
    return chain_deriv(fs, x)


def chain_deriv_3(fs: Sequence[Elementary], x: ArrayLike) -> Array:
    """The book's f_3'(f_2(f_1(x))) * f_2'(f_1(x)) * f_1'(x). ``ValueError`` unless len(fs) == 3."""
    _check_length("chain_deriv_3", fs, 3)
    return chain_deriv(fs, x)


# --- functions of several inputs ------------------------------------------------------------


def _same_shape(fname: str, x: ArrayLike, y: ArrayLike) -> tuple[Array, Array]:
    x, y = _as_float(x), _as_float(y)
    if x.shape != y.shape:
        raise ValueError(
            f"{fname}: x{tuple(x.shape)} and y{tuple(y.shape)} must have the same shape "
            "(no broadcasting)"
        )
    return x, y


def multiple_inputs_add(x: ArrayLike, y: ArrayLike, sigma: Callable[[Array], Array]) -> Array:
    """sigma(x + y). x, y: the same shape -> that shape."""
    x, y = _same_shape("multiple_inputs_add", x, y)
    return sigma(x + y)


def multiple_inputs_add_backward(
    x: ArrayLike, y: ArrayLike, sigma: Elementary
) -> tuple[Array, Array]:
    """(df/dx, df/dy) of f = sigma(a), a = x + y, elementwise.

    da/dx = da/dy = 1, so both are sigma'(x + y). x, y: the same shape -> two arrays of it.
    """
    x, y = _same_shape("multiple_inputs_add_backward", x, y)
    sigma = _require_elementary("multiple_inputs_add_backward", "sigma", sigma)
    dsda = sigma.deriv(x + y)
    dadx = jnp.ones_like(x)
    dady = jnp.ones_like(y)
    return dsda * dadx, dsda * dady


def multiple_inputs_multiply(x: ArrayLike, y: ArrayLike, sigma: Callable[[Array], Array]) -> Array:
    """sigma(x * y), elementwise. x, y: the same shape -> that shape."""
    x, y = _same_shape("multiple_inputs_multiply", x, y)
    return sigma(x * y)


def multiple_inputs_multiply_backward(
    x: ArrayLike, y: ArrayLike, sigma: Elementary
) -> tuple[Array, Array]:
    """(df/dx, df/dy) of f = sigma(a), a = x * y, elementwise.

    da/dx = y and da/dy = x, so the result is (sigma'(xy) y, sigma'(xy) x).
    x, y: the same shape -> two arrays of it.
    """
    x, y = _same_shape("multiple_inputs_multiply_backward", x, y)
    sigma = _require_elementary("multiple_inputs_multiply_backward", "sigma", sigma)
    dsda = sigma.deriv(x * y)
    dadx = y
    dady = x
    return dsda * dadx, dsda * dady


# --- functions of matrices ------------------------------------------------------------------


def _check_matmul(fname: str, X: ArrayLike, W: ArrayLike) -> tuple[Array, Array]:
    X, W = _as_float(X), _as_float(W)
    if X.ndim != 2 or W.ndim != 2:
        raise ValueError(
            f"{fname}: X{tuple(X.shape)} and W{tuple(W.shape)} must both be 2-D, "
            "X (batch, n) and W (n, m)"
        )
    if X.shape[1] != W.shape[0]:
        raise ValueError(
            f"{fname}: X{tuple(X.shape)} does not fit W{tuple(W.shape)}; X's {X.shape[1]} "
            f"columns must equal W's {W.shape[0]} rows"
        )
    return X, W


def matmul_forward(X: ArrayLike, W: ArrayLike) -> Array:
    """N = X @ W. X: (batch, n), W: (n, m) -> N: (batch, m)."""
    X, W = _check_matmul("matmul_forward", X, W)
    return X @ W


def matmul_backward_first(X: ArrayLike, W: ArrayLike) -> Array:
    """dN/dX for N = X @ W, as the book writes it: W^T.

    X: (batch, n), W: (n, m) -> (m, n). Row j holds dN[i, j]/dX[i, :] (the same for every row i).
    For the book's X (1, n) and W (n, 1) it is (1, n), the shape of X.
    """
    X, W = _check_matmul("matmul_backward_first", X, W)
    return W.T


def matrix_forward_extra(X: ArrayLike, W: ArrayLike, sigma: Callable[[Array], Array]) -> Array:
    """S = sigma(X @ W). X: (batch, n), W: (n, m) -> S: (batch, m)."""
    X, W = _check_matmul("matrix_forward_extra", X, W)
    return sigma(X @ W)


def matrix_function_backward_1(X: ArrayLike, W: ArrayLike, sigma: Elementary) -> Array:
    """dS/dX for S = sigma(X @ W) with one output column: sigma'(N) @ W^T.

    X: (batch, n), W: (n, 1) -> (batch, n); row i holds dS[i, 0]/dX[i, :] (row i of S depends only
    on row i of X). With m > 1 outputs dS/dX is no longer a matrix: a ``ValueError`` points to
    :func:`matrix_function_backward_sum`.
    """
    X, W = _check_matmul("matrix_function_backward_1", X, W)
    sigma = _require_elementary("matrix_function_backward_1", "sigma", sigma)
    if W.shape[1] != 1:
        raise ValueError(
            f"matrix_function_backward_1: X{tuple(X.shape)} and W{tuple(W.shape)}: W must have "
            "one column (S = sigma(X @ W) a column); use matrix_function_backward_sum for m > 1"
        )
    N = X @ W  # (batch, 1)
    dSdN = sigma.deriv(N)  # (batch, 1)
    dNdX = W.T  # (1, n)
    return dSdN @ dNdX  # (batch, n)


def matrix_function_forward_sum(
    X: ArrayLike, W: ArrayLike, sigma: Callable[[Array], Array]
) -> Array:
    """L = sum(sigma(X @ W)), a scalar. X: (batch, n), W: (n, m) -> L: ()."""
    X, W = _check_matmul("matrix_function_forward_sum", X, W)
    return jnp.sum(sigma(X @ W))


def matrix_function_backward_sum(
    X: ArrayLike, W: ArrayLike, sigma: Elementary
) -> tuple[Array, Array]:
    """(dL/dX, dL/dW) for L = sum(sigma(N)), N = X @ W.

    dL/dS = 1, so dL/dN = sigma'(N); then dL/dX = dL/dN @ W^T and dL/dW = X^T @ dL/dN.
    X: (batch, n), W: (n, m) -> ((batch, n), (n, m)). The book returns only dL/dX.
    """
    X, W = _check_matmul("matrix_function_backward_sum", X, W)
    sigma = _require_elementary("matrix_function_backward_sum", "sigma", sigma)
    N = X @ W  # (batch, m)
    dLdS = jnp.ones_like(N)
    dLdN = dLdS * sigma.deriv(N)  # (batch, m)
    dLdX = dLdN @ W.T  # (batch, n)
    dLdW = X.T @ dLdN  # (n, m)
    return dLdX, dLdW
