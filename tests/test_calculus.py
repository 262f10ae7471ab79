"""Chapter 1 (jaxscratch.book.calculus): every hand-derived derivative against two oracles.

Oracle 1 is JAX's autodiff (jax.vjp with a random cotangent, float64, rtol 1e-10); oracle 2 is a
central finite difference (delta 1e-6, float64), which does not rely on autodiff at all. Shapes are
non-square so a missing transpose is a shape error, and inputs stay away from the kinks at 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxscratch.book import calculus as C
from jaxscratch.book.calculus import Elementary

RTOL = 1e-10
ATOL = 1e-12
FD_DELTA = 1e-6
FD_TOL = 1e-6


def _away_from_kinks(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Normal draws pushed at least 0.1 away from 0 (the kink of relu and leaky_relu)."""
    z = jax.random.normal(key, shape, dtype=jnp.float64)
    return jnp.where(z >= 0, z + 0.1, z - 0.1)


def _assert_close(name: str, got, want, rtol: float = RTOL, atol: float = ATOL) -> None:
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        raise AssertionError(f"{name}: shape {got.shape} != oracle shape {want.shape}")
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)


def check_elementary(e: Elementary, x: jax.Array, ct: jax.Array) -> None:
    """Compare e.deriv against jax.vjp (random cotangent) and central differences.

    Raises AssertionError on a mismatch; that it can raise is tested below.
    """
    y, vjp = jax.vjp(e.f, x)
    _assert_close(f"{e.name} forward", e(x), y)
    (want,) = vjp(ct)
    _assert_close(f"{e.name} vs jax.vjp", ct * e.deriv(x), want)
    fd = (e.f(x + FD_DELTA) - e.f(x - FD_DELTA)) / (2 * FD_DELTA)
    _assert_close(f"{e.name} vs finite difference", e.deriv(x), fd, rtol=FD_TOL, atol=FD_TOL)


def _fd_grad(f, X: np.ndarray, delta: float = FD_DELTA) -> np.ndarray:
    """Central-difference gradient of a scalar function of one array, entry by entry."""
    X = np.asarray(X, dtype=np.float64)
    g = np.zeros_like(X)
    for idx in np.ndindex(X.shape):
        Xp, Xm = X.copy(), X.copy()
        Xp[idx] += delta
        Xm[idx] -= delta
        g[idx] = (float(f(jnp.asarray(Xp))) - float(f(jnp.asarray(Xm)))) / (2 * delta)
    return g


# --- elementary functions -------------------------------------------------------------------


@pytest.mark.parametrize("e", C.ELEMENTARY, ids=lambda e: e.name)
def test_elementary_derivative_matches_oracles(e: Elementary) -> None:
    kx, kc = jax.random.split(jax.random.key(0))
    x = _away_from_kinks(kx, (4, 3))
    ct = jax.random.normal(kc, (4, 3), dtype=jnp.float64)
    check_elementary(e, x, ct)


@pytest.mark.parametrize("e", C.ELEMENTARY, ids=lambda e: e.name)
def test_elementary_derivative_matches_grad_pointwise(e: Elementary) -> None:
    x = _away_from_kinks(jax.random.key(1), (7,))
    want = jax.vmap(jax.grad(e.f))(x)
    _assert_close(e.name, e.deriv(x), want)


def test_elementary_values() -> None:
    x = jnp.array([-2.0, -0.5, 0.0, 1.5])
    _assert_close("square", C.square(x), x**2)
    _assert_close("relu", C.relu(x), np.array([0.0, 0.0, 0.0, 1.5]))
    _assert_close("leaky_relu", C.leaky_relu(x), np.array([-0.4, -0.1, 0.0, 1.5]))
    _assert_close("sigmoid", C.sigmoid(x), 1 / (1 + np.exp(-np.asarray(x))))
    _assert_close("tanh", C.tanh(x), np.tanh(np.asarray(x)))


def test_kink_conventions() -> None:
    zero = jnp.zeros(3)
    _assert_close("relu'(0)", C.relu.deriv(zero), np.zeros(3))
    _assert_close("leaky_relu'(0)", C.leaky_relu.deriv(zero), np.full(3, 0.2))


@pytest.mark.parametrize("e", [C.sigmoid, C.tanh], ids=lambda e: e.name)
def test_saturating_functions_finite_at_extremes(e: Elementary) -> None:
    x = jnp.array([-1000.0, 1000.0])
    y, dy = e(x), e.deriv(x)
    assert bool(jnp.all(jnp.isfinite(y))) and bool(jnp.all(jnp.isfinite(dy)))
    lo = 0.0 if e is C.sigmoid else -1.0
    _assert_close(f"{e.name}(+-1000)", y, np.array([lo, 1.0]))
    _assert_close(f"{e.name}'(+-1000)", dy, np.zeros(2))


def test_integer_input_is_promoted_to_float() -> None:
    assert C.square(3).dtype == jnp.float64
    _assert_close("chain_deriv at int", C.chain_deriv([C.square], 3), 6.0)


def test_elementary_is_hashable_and_jittable() -> None:
    f = jax.jit(C.chain_deriv, static_argnums=0)
    fs = (C.square, C.sigmoid)
    _assert_close("jit chain_deriv", f(fs, jnp.array(2.0)), C.chain_deriv(fs, 2.0))


# --- the comparison helper catches a wrong derivative ---------------------------------------


def test_wrong_sigmoid_derivative_is_detected() -> None:
    bad = Elementary("bad_sigmoid", jax.nn.sigmoid, jax.nn.sigmoid)  # s instead of s(1 - s)
    kx, kc = jax.random.split(jax.random.key(2))
    x = _away_from_kinks(kx, (4, 3))
    ct = jax.random.normal(kc, (4, 3), dtype=jnp.float64)
    with pytest.raises(AssertionError, match="bad_sigmoid vs jax.vjp"):
        check_elementary(bad, x, ct)


def test_wrong_relu_kink_side_is_detected() -> None:
    """relu with derivative 1 everywhere (the book's ReLU backward bug) is caught."""
    bad = Elementary("bad_relu", C.relu.f, jnp.ones_like)
    kx, kc = jax.random.split(jax.random.key(3))
    x = _away_from_kinks(kx, (4, 3))
    ct = jax.random.normal(kc, (4, 3), dtype=jnp.float64)
    with pytest.raises(AssertionError):
        check_elementary(bad, x, ct)


def test_wrong_derivative_in_chain_is_detected() -> None:
    bad = Elementary("bad_sigmoid", jax.nn.sigmoid, jax.nn.sigmoid)
    fs = [C.square, bad]
    want = jax.grad(lambda x: C.chain(fs, x))(1.3)
    assert not np.isclose(float(C.chain_deriv(fs, 1.3)), float(want), rtol=1e-3)


# --- central difference ---------------------------------------------------------------------


def test_deriv_central_difference() -> None:
    x = jnp.array([-1.5, 0.3, 2.0])
    # exact for a quadratic: (x+d)^2 - (x-d)^2 = 4xd
    _assert_close("deriv(square)", C.deriv(C.square, x), 2 * x, rtol=1e-9)
    _assert_close("deriv(tanh)", C.deriv(C.tanh, x, delta=1e-6), C.tanh.deriv(x), 1e-6, 1e-6)
    # default delta 0.001: O(delta^2) truncation error
    _assert_close("deriv(sigmoid)", C.deriv(C.sigmoid, x), C.sigmoid.deriv(x), 1e-6, 1e-6)
    with pytest.raises(ValueError, match="deriv: delta must be positive"):
        C.deriv(C.square, x, delta=0.0)
    with pytest.raises(TypeError, match="deriv: delta must be a number"):
        C.deriv(C.square, x, delta="0.001")
    _assert_close("deriv(np delta)", C.deriv(C.square, x, delta=np.float32(0.5)), 2 * x, 1e-6)


# --- chains ---------------------------------------------------------------------------------


@settings(derandomize=True, max_examples=30, deadline=None)
@given(
    fs=st.lists(st.sampled_from(C.ELEMENTARY), min_size=1, max_size=5),
    x=st.floats(min_value=0.05, max_value=3.0),
    negative=st.booleans(),
)
def test_chain_deriv_matches_grad(fs: list[Elementary], x: float, negative: bool) -> None:
    # |x| >= 0.05 keeps x off the kinks; an intermediate can only reach a kink (exactly 0)
    # after a relu clipped it, and then the product already holds a factor 0.
    x = -x if negative else x
    want = jax.grad(lambda v: C.chain(fs, v))(jnp.float64(x))
    _assert_close(f"chain_deriv {[f.name for f in fs]} at {x}", C.chain_deriv(fs, x), want)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_chain_deriv_arrays_vs_vjp_and_fd(n: int) -> None:
    key = jax.random.key(10 + n)
    kf, kx, kc = jax.random.split(key, 3)
    idx = np.asarray(jax.random.randint(kf, (n,), 0, len(C.ELEMENTARY)))
    fs = [C.ELEMENTARY[i] for i in idx]
    x = _away_from_kinks(kx, (5, 2)) * 0.5
    ct = jax.random.normal(kc, (5, 2), dtype=jnp.float64)
    y, vjp = jax.vjp(lambda v: C.chain(fs, v), x)
    (want,) = vjp(ct)
    _assert_close("chain_deriv vs vjp", ct * C.chain_deriv(fs, x), want)
    fd = C.deriv(lambda v: C.chain(fs, v), x, delta=FD_DELTA)
    _assert_close("chain_deriv vs fd", C.chain_deriv(fs, x), fd, FD_TOL, FD_TOL)


def test_chain_applies_first_function_first() -> None:
    # square then leaky_relu at -2: leaky(4) = 4; leaky then square: (-0.4)^2 = 0.16
    _assert_close("order", C.chain([C.square, C.leaky_relu], -2.0), 4.0)
    _assert_close("order", C.chain([C.leaky_relu, C.square], -2.0), 0.16)


def test_fixed_length_wrappers() -> None:
    fs2, fs3 = [C.square, C.sigmoid], [C.leaky_relu, C.square, C.sigmoid]
    _assert_close("chain_length_2", C.chain_length_2(fs2, 0.7), C.chain(fs2, 0.7))
    _assert_close("chain_length_3", C.chain_length_3(fs3, 0.7), C.chain(fs3, 0.7))
    _assert_close("chain_deriv_2", C.chain_deriv_2(fs2, 0.7), C.chain_deriv(fs2, 0.7))
    _assert_close("chain_deriv_3", C.chain_deriv_3(fs3, 0.7), C.chain_deriv(fs3, 0.7))
    with pytest.raises(ValueError, match="chain_length_2: expects a chain of 2 functions, got 3"):
        C.chain_length_2(fs3, 0.7)
    with pytest.raises(ValueError, match="chain_deriv_3: expects a chain of 3 functions, got 2"):
        C.chain_deriv_3(fs2, 0.7)


def test_empty_or_bad_chain() -> None:
    with pytest.raises(ValueError, match="chain: the chain is empty"):
        C.chain([], 1.0)
    with pytest.raises(ValueError, match="chain_deriv: the chain is empty"):
        C.chain_deriv([], 1.0)
    with pytest.raises(TypeError, match="chain_deriv: fs\\[1\\] must be an Elementary"):
        C.chain_deriv([C.square, jnp.sin], 1.0)
    with pytest.raises(TypeError, match="chain: fs must be a sequence"):
        C.chain(C.square, 1.0)


# --- several inputs -------------------------------------------------------------------------


@pytest.mark.parametrize("e", C.ELEMENTARY, ids=lambda e: e.name)
@pytest.mark.parametrize(
    "forward, backward",
    [
        (C.multiple_inputs_add, C.multiple_inputs_add_backward),
        (C.multiple_inputs_multiply, C.multiple_inputs_multiply_backward),
    ],
    ids=["add", "multiply"],
)
def test_multiple_inputs_backward(forward, backward, e: Elementary) -> None:
    kx, ky, kc = jax.random.split(jax.random.key(20), 3)
    x = jax.random.normal(kx, (4, 3), dtype=jnp.float64)
    y = jax.random.normal(ky, (4, 3), dtype=jnp.float64)
    # keep the argument of sigma (x + y or x * y) away from the kink at 0
    a = x + y if forward is C.multiple_inputs_add else x * y
    y = jnp.where(jnp.abs(a) < 0.05, y + 0.3, y)
    ct = jax.random.normal(kc, (4, 3), dtype=jnp.float64)
    out, vjp = jax.vjp(lambda u, v: forward(u, v, e), x, y)
    want_x, want_y = vjp(ct)
    dx, dy = backward(x, y, e)
    _assert_close("d/dx vs vjp", ct * dx, want_x)
    _assert_close("d/dy vs vjp", ct * dy, want_y)
    fd_x = C.deriv(lambda u: forward(u, y, e), x, delta=FD_DELTA)
    fd_y = C.deriv(lambda v: forward(x, v, e), y, delta=FD_DELTA)
    _assert_close("d/dx vs fd", dx, fd_x, FD_TOL, FD_TOL)
    _assert_close("d/dy vs fd", dy, fd_y, FD_TOL, FD_TOL)


def test_multiple_inputs_values() -> None:
    x, y = jnp.array([1.0, -2.0]), jnp.array([0.5, 3.0])
    _assert_close("add", C.multiple_inputs_add(x, y, C.square), (x + y) ** 2)
    _assert_close("multiply", C.multiple_inputs_multiply(x, y, C.square), (x * y) ** 2)


@pytest.mark.parametrize(
    "fn",
    [
        C.multiple_inputs_add,
        C.multiple_inputs_add_backward,
        C.multiple_inputs_multiply,
        C.multiple_inputs_multiply_backward,
    ],
    ids=lambda f: f.__name__,
)
def test_multiple_inputs_shape_mismatch(fn) -> None:
    x, y = jnp.ones((3, 1)), jnp.ones((3,))
    with pytest.raises(ValueError, match=rf"{fn.__name__}: x\(3, 1\) and y\(3,\)"):
        fn(x, y, C.sigmoid)


def test_backward_needs_a_derivative() -> None:
    x = jnp.ones(3)
    with pytest.raises(TypeError, match="multiple_inputs_add_backward: sigma must be an Elem"):
        C.multiple_inputs_add_backward(x, x, jax.nn.sigmoid)
    with pytest.raises(TypeError, match="matrix_function_backward_sum: sigma must be an Elem"):
        C.matrix_function_backward_sum(jnp.ones((2, 3)), jnp.ones((3, 1)), jax.nn.sigmoid)


# --- matrices -------------------------------------------------------------------------------


def _xw(seed: int, b: int = 4, n: int = 3, m: int = 2) -> tuple[jax.Array, jax.Array]:
    kx, kw = jax.random.split(jax.random.key(seed))
    return (
        jax.random.normal(kx, (b, n), dtype=jnp.float64),
        jax.random.normal(kw, (n, m), dtype=jnp.float64),
    )


def test_matmul_forward_and_backward_first() -> None:
    X, W = _xw(30)
    _assert_close("matmul_forward", C.matmul_forward(X, W), np.asarray(X) @ np.asarray(W))
    dNdX = C.matmul_backward_first(X, W)
    assert dNdX.shape == (2, 3)
    J = jax.jacobian(C.matmul_forward)(X, W)  # (b, m, b, n)
    for i in range(X.shape[0]):
        _assert_close(f"dN[{i}, :]/dX[{i}, :]", J[i, :, i, :], dNdX)
    # the book's case: X (1, n), W (n, 1) -> (1, n), the shape of X
    X1, W1 = _xw(31, b=1, n=3, m=1)
    assert C.matmul_backward_first(X1, W1).shape == (1, 3)
    _assert_close(
        "book case",
        C.matmul_backward_first(X1, W1),
        jax.grad(lambda X: C.matmul_forward(X, W1)[0, 0])(X1),
    )


@pytest.mark.parametrize("e", C.ELEMENTARY, ids=lambda e: e.name)
def test_matrix_function_backward_1(e: Elementary) -> None:
    X, W = _xw(40, b=4, n=3, m=1)
    ct = jax.random.normal(jax.random.key(41), (4, 1), dtype=jnp.float64)
    S, vjp = jax.vjp(lambda X: C.matrix_forward_extra(X, W, e), X)
    _assert_close("forward", S, e(np.asarray(X) @ np.asarray(W)))
    (want,) = vjp(ct)
    dSdX = C.matrix_function_backward_1(X, W, e)
    assert dSdX.shape == (4, 3)
    # S[i] depends only on X[i], so the VJP is row i of dS/dX scaled by ct[i]
    _assert_close("dS/dX vs vjp", ct * dSdX, want)
    for i in range(4):
        fd = _fd_grad(lambda Xp, i=i: C.matrix_forward_extra(Xp, W, e)[i, 0], X)
        _assert_close(f"dS[{i}]/dX[{i}] vs fd", dSdX[i], fd[i], FD_TOL, FD_TOL)
        np.testing.assert_allclose(np.delete(fd, i, axis=0), 0.0, atol=FD_TOL)  # other rows


def test_matrix_function_backward_1_needs_one_column() -> None:
    X, W = _xw(42)
    with pytest.raises(ValueError, match=r"matrix_function_backward_1: X\(4, 3\) and W\(3, 2\)"):
        C.matrix_function_backward_1(X, W, C.sigmoid)


@pytest.mark.parametrize("e", C.ELEMENTARY, ids=lambda e: e.name)
def test_matrix_function_backward_sum(e: Elementary) -> None:
    X, W = _xw(50, b=4, n=3, m=2)
    N = X @ W
    W = jnp.where(jnp.abs(N).min() < 0.05, W + 0.1, W)  # keep N off the kinks
    L, vjp = jax.vjp(lambda X, W: C.matrix_function_forward_sum(X, W, e), X, W)
    _assert_close("forward", L, np.sum(e(np.asarray(X) @ np.asarray(W))))
    ct = jax.random.normal(jax.random.key(51), (), dtype=jnp.float64)
    want_X, want_W = vjp(ct)
    dX, dW = C.matrix_function_backward_sum(X, W, e)
    assert dX.shape == (4, 3) and dW.shape == (3, 2)
    _assert_close("dL/dX vs vjp", ct * dX, want_X)
    _assert_close("dL/dW vs vjp", ct * dW, want_W)
    fd_X = _fd_grad(lambda Xp: C.matrix_function_forward_sum(Xp, W, e), X)
    fd_W = _fd_grad(lambda Wp: C.matrix_function_forward_sum(X, Wp, e), W)
    _assert_close("dL/dX vs fd", dX, fd_X, FD_TOL, FD_TOL)
    _assert_close("dL/dW vs fd", dW, fd_W, FD_TOL, FD_TOL)


def test_missing_transpose_would_be_caught() -> None:
    """dL/dX without the transpose of W cannot even be formed with non-square W."""
    X, W = _xw(52)
    N = X @ W
    with pytest.raises(TypeError):
        C.sigmoid.deriv(N) @ W  # (4, 2) @ (3, 2)


@pytest.mark.parametrize(
    "fn",
    [
        lambda X, W: C.matmul_forward(X, W),
        lambda X, W: C.matmul_backward_first(X, W),
        lambda X, W: C.matrix_forward_extra(X, W, C.sigmoid),
        lambda X, W: C.matrix_function_backward_1(X, W, C.sigmoid),
        lambda X, W: C.matrix_function_forward_sum(X, W, C.sigmoid),
        lambda X, W: C.matrix_function_backward_sum(X, W, C.sigmoid),
    ],
    ids=[
        "matmul_forward",
        "matmul_backward_first",
        "matrix_forward_extra",
        "matrix_function_backward_1",
        "matrix_function_forward_sum",
        "matrix_function_backward_sum",
    ],
)
def test_matrix_shape_errors(fn, request) -> None:
    name = request.node.callspec.id
    with pytest.raises(ValueError, match=rf"^{name}: X\(3, 4\) does not fit W\(3, 2\)"):
        fn(jnp.ones((3, 4)), jnp.ones((3, 2)))
    with pytest.raises(ValueError, match=rf"^{name}: X\(3,\) and W\(3, 2\) must both be 2-D"):
        fn(jnp.ones((3,)), jnp.ones((3, 2)))


# --- the book's chapter 1 figures -----------------------------------------------------------


def test_book_figure_matrix_function_backward_1() -> None:
    rng = np.random.RandomState(190203)  # == np.random.seed(190203); X, then W
    X, W = rng.randn(1, 3), rng.randn(3, 1)
    got = np.round(np.asarray(C.matrix_function_backward_1(X, W, C.sigmoid)), 4)
    np.testing.assert_array_equal(got, [[0.0852, -0.0557, -0.1121]])


def test_book_figure_matrix_function_sum() -> None:
    rng = np.random.RandomState(190204)
    X, W = rng.randn(3, 3), rng.randn(3, 2)
    L = float(C.matrix_function_forward_sum(X, W, C.sigmoid))
    dX, _ = C.matrix_function_backward_sum(X, W, C.sigmoid)
    assert round(L, 4) == 2.3755
    assert round(float(dX[0, 0]), 4) == 0.2489
    X1 = X.copy()
    X1[0, 0] += 0.001  # the book's check: perturb X[0, 0] by 0.001
    fd = (float(C.matrix_function_forward_sum(X1, W, C.sigmoid)) - L) / 0.001
    assert round(fd, 4) == 0.2489


def test_book_figure_chains() -> None:
    fs2 = [C.square, C.sigmoid]
    assert round(float(C.chain_length_2(fs2, 2.0)), 5) == 0.98201
    assert round(float(C.chain_deriv_2(fs2, 2.0)), 5) == 0.07065
    fs3 = [C.leaky_relu, C.square, C.sigmoid]
    assert round(float(C.chain_length_3(fs3, -4.0)), 5) == 0.65475
    assert round(float(C.chain_deriv_3(fs3, -4.0)), 5) == -0.07234
