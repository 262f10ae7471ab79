"""Chapter 2 (jaxscratch.book.stepwise): every hand-derived partial against jax.vjp / jax.grad and finite
differences, which loss each gradient mode belongs to, the book's figures, and bad input."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest

from jaxscratch.book import stepwise as sw
from jaxscratch.book import stepwise_train as swt
from jaxscratch.data import boston_book_data
from jaxscratch.train.metrics import mae, rmse

RTOL = 1e-10
N, D, H = 7, 5, 3  # non-square on purpose: a missing transpose is a shape error


def close(a, b, rtol=RTOL, atol=1e-12):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def sample(seed: int, model: str):
    k = jax.random.split(jax.random.key(seed), 3)
    X = jax.random.normal(k[0], (N, D), jnp.float64)
    y = 3.0 * jax.random.normal(k[1], (N, 1), jnp.float64)
    w = sw.init_weights(k[2], D, model=model, hidden_size=H)
    return X, y, w


def cotangent(seed: int, like):
    return jax.random.normal(jax.random.key(seed), like.shape, like.dtype)


# The losses written out here, independently of stepwise.implied_loss.
SSE = lambda P, y: jnp.sum((y - P) ** 2)
HALF_SSE = lambda P, y: 0.5 * jnp.sum((y - P) ** 2)
MSE = lambda P, y: jnp.mean((y - P) ** 2)


def linear_P(X, w):
    return X @ w["W"] + w["B"]


def network_P(X, w):
    return jax.nn.sigmoid(X @ w["W1"] + w["B1"]) @ w["W2"] + w["B2"]


# --------------------------------------------------------------------------------------------------
# forward passes


@pytest.mark.parametrize("seed", [0, 1])
def test_forward_linear_regression_values(seed):
    X, y, w = sample(seed, "linear")
    loss, info = sw.forward_linear_regression(X, y, w)
    Xn, yn = np.asarray(X), np.asarray(y)
    N_ = Xn @ np.asarray(w["W"])
    P_ = N_ + np.asarray(w["B"])
    close(info["N"], N_)
    close(info["P"], P_)
    close(loss, np.mean((yn - P_) ** 2))
    assert set(info) == {"X", "N", "P", "y"}
    assert info["P"].shape == (N, 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_forward_loss_values(seed):
    X, y, w = sample(seed, "network")
    loss, info = sw.forward_loss(X, y, w)
    Xn, yn = np.asarray(X), np.asarray(y)
    wn = {k: np.asarray(v) for k, v in w.items()}
    M1 = Xn @ wn["W1"]
    N1 = M1 + wn["B1"]
    O1 = 1.0 / (1.0 + np.exp(-N1))
    M2 = O1 @ wn["W2"]
    P_ = M2 + wn["B2"]
    for name, ref in {"M1": M1, "N1": N1, "O1": O1, "M2": M2, "P": P_}.items():
        close(info[name], ref)
    close(loss, np.mean((yn - P_) ** 2))
    assert set(info) == {"X", "M1", "N1", "O1", "M2", "P", "y"}
    close(sw.predict_network(X, w), P_)
    close(sw.predict_weights(X, w), P_)


def test_sigmoid_network_finite_at_extremes():
    X, y, w = sample(3, "network")
    w = dict(w, W1=w["W1"] * 1e4)
    loss, info = sw.forward_loss(X, y, w)
    grads, partials = sw.loss_gradients_network(info, w, "mean")
    assert np.isfinite(loss)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves((grads, partials)))


# --------------------------------------------------------------------------------------------------
# every partial against jax.vjp with a random cotangent


@pytest.mark.parametrize("mode", sw.MODES)
@pytest.mark.parametrize("seed", [0, 1])
def test_linear_partials_against_vjp(mode, seed):
    X, y, w = sample(seed, "linear")
    _, info = sw.forward_linear_regression(X, y, w)
    grads, p = sw.loss_gradients_linear(info, w, mode)
    L = sw.implied_loss("linear", mode)[1]
    Nv, B = info["N"], w["B"]
    # dL/dP, dL/dN: gradient of the loss as a function of that intermediate
    close(p["dLdP"], jax.grad(L)(info["P"], y))
    close(p["dLdN"], jax.grad(lambda N_: L(N_ + B, y))(Nv))
    # local partials: P = N + B, N = X @ W, through vjp with a random cotangent c (n, 1)
    c = cotangent(seed + 10, Nv)
    _, vjp_N = jax.vjp(lambda N_: N_ + B, Nv)
    close(vjp_N(c)[0], c * p["dPdN"])
    _, vjp_B = jax.vjp(lambda B_: Nv + B_, B)
    close(vjp_B(c)[0], jnp.sum(c * p["dPdB"], axis=0, keepdims=True))
    _, vjp_W = jax.vjp(lambda W_: X @ W_, w["W"])
    close(vjp_W(c)[0], p["dNdW"] @ c)
    # parameter gradients
    g_ref = jax.grad(lambda w_: L(linear_P(X, w_), y))(w)
    close(p["dLdW"], g_ref["W"])
    close(p["dLdB"], g_ref["B"])
    close(grads["W"], g_ref["W"])
    close(grads["B"], g_ref["B"])
    assert jax.tree.map(jnp.shape, grads) == jax.tree.map(jnp.shape, w)


@pytest.mark.parametrize("mode", sw.MODES)
@pytest.mark.parametrize("seed", [0, 1])
def test_network_partials_against_vjp(mode, seed):
    X, y, w = sample(seed, "network")
    _, info = sw.forward_loss(X, y, w)
    grads, p = sw.loss_gradients_network(info, w, mode)
    L = sw.implied_loss("network", mode)[1]
    W1, B1, W2, B2 = (w[k] for k in sw.NETWORK_KEYS)

    def from_N1(N1):
        return jax.nn.sigmoid(N1) @ W2 + B2

    # dL/d(each intermediate): gradient of the loss as a function of it
    close(p["dLdP"], jax.grad(L)(info["P"], y))
    close(p["dLdM2"], jax.grad(lambda M2: L(M2 + B2, y))(info["M2"]))
    close(p["dLdO1"], jax.grad(lambda O1: L(O1 @ W2 + B2, y))(info["O1"]))
    close(p["dLdN1"], jax.grad(lambda N1: L(from_N1(N1), y))(info["N1"]))
    close(p["dLdM1"], jax.grad(lambda M1: L(from_N1(M1 + B1), y))(info["M1"]))
    # local partials through vjp with random cotangents
    c1 = cotangent(seed + 20, info["P"])  # (n, 1)
    _, vjp = jax.vjp(lambda M2: M2 + B2, info["M2"])
    close(vjp(c1)[0], c1 * p["dPdM2"])
    _, vjp = jax.vjp(lambda B2_: info["M2"] + B2_, B2)
    close(vjp(c1)[0], jnp.sum(c1 * p["dPdB2"], axis=0, keepdims=True))
    _, vjp = jax.vjp(lambda W2_: info["O1"] @ W2_, W2)
    close(vjp(c1)[0], p["dM2dW2"] @ c1)
    _, vjp = jax.vjp(lambda O1: O1 @ W2, info["O1"])
    close(vjp(c1)[0], c1 @ p["dM2dO1"])
    ch = cotangent(seed + 30, info["N1"])  # (n, h)
    _, vjp = jax.vjp(jax.nn.sigmoid, info["N1"])
    close(vjp(ch)[0], ch * p["dO1dN1"])
    _, vjp = jax.vjp(lambda M1: M1 + B1, info["M1"])
    close(vjp(ch)[0], ch * p["dN1dM1"])
    _, vjp = jax.vjp(lambda B1_: info["M1"] + B1_, B1)
    close(vjp(ch)[0], jnp.sum(ch * p["dN1dB1"], axis=0, keepdims=True))
    _, vjp = jax.vjp(lambda W1_: X @ W1_, W1)
    close(vjp(ch)[0], p["dM1dW1"] @ ch)
    # per-unit parameter partials, and the weight gradients
    g_ref = jax.grad(lambda w_: L(network_P(X, w_), y))(w)
    for name, key in [("dLdW1", "W1"), ("dLdB1", "B1"), ("dLdW2", "W2"), ("dLdB2", "B2")]:
        close(p[name], g_ref[key])
    close(grads["W1"], g_ref["W1"])
    close(grads["W2"], g_ref["W2"])
    close(grads["B2"], g_ref["B2"])  # one output unit: the book's double sum changes nothing
    assert jax.tree.map(jnp.shape, grads) == jax.tree.map(jnp.shape, w)


# --------------------------------------------------------------------------------------------------
# which loss each mode's gradients belong to (losses written out in this file)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_book_mode_is_gradient_of_sum_of_squares(seed):
    X, y, w = sample(seed, "linear")
    _, info = sw.forward_linear_regression(X, y, w)
    book, _ = sw.loss_gradients_linear(info, w, "book")
    unit, _ = sw.loss_gradients_linear(info, w, "book_unit_bias")
    mean, _ = sw.loss_gradients_linear(info, w, "mean")
    sse = jax.grad(lambda w_: SSE(linear_P(X, w_), y))(w)
    mse = jax.grad(lambda w_: MSE(linear_P(X, w_), y))(w)
    for k in sw.LINEAR_KEYS:
        close(book[k], sse[k])
        close(unit[k], sse[k])
        close(mean[k], mse[k])
        close(book[k], N * mse[k])  # the book's step is n times the printed loss's gradient
        assert not np.allclose(book[k], mse[k])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_network_book_mode_is_half_sum_of_squares_except_hidden_bias(seed):
    X, y, w = sample(seed, "network")
    _, info = sw.forward_loss(X, y, w)
    book, p = sw.loss_gradients_network(info, w, "book")
    unit, _ = sw.loss_gradients_network(info, w, "book_unit_bias")
    mean, _ = sw.loss_gradients_network(info, w, "mean")
    half = jax.grad(lambda w_: HALF_SSE(network_P(X, w_), y))(w)
    mse = jax.grad(lambda w_: MSE(network_P(X, w_), y))(w)
    for k in ("W1", "W2", "B2"):
        close(book[k], half[k])
    # the quirk: the hidden-bias gradient summed over the batch AND the units, one scalar for all
    close(book["B1"], jnp.full((1, H), jnp.sum(half["B1"])))
    assert np.ptp(np.asarray(book["B1"])) == 0.0
    assert not np.allclose(book["B1"], half["B1"], rtol=1e-3)
    close(p["dLdB1"], half["B1"])  # the per-unit partial itself is right
    for k in sw.NETWORK_KEYS:
        close(unit[k], half[k])  # book scaling + per-unit bias: exactly half the SSE
        close(mean[k], mse[k])  # mean mode: exactly the printed loss's gradient


def test_implied_loss_names():
    assert sw.implied_loss("linear", "book")[0] == "sum of squared errors"
    assert sw.implied_loss("network", "book")[0] == "half the sum of squared errors"
    assert sw.implied_loss("network", "mean")[0] == "mean squared error"
    P, y = jnp.arange(3.0).reshape(3, 1), jnp.ones((3, 1))
    close(sw.implied_loss("linear", "book")[1](P, y), SSE(P, y))
    close(sw.implied_loss("network", "book_unit_bias")[1](P, y), HALF_SSE(P, y))
    close(sw.implied_loss("linear", "mean")[1](P, y), MSE(P, y))


# --------------------------------------------------------------------------------------------------
# finite differences (no JAX autodiff involved)


def _numpy_loss(model, mode, X, y, w):
    X, y = np.asarray(X), np.asarray(y)
    w = {k: np.asarray(v) for k, v in w.items()}
    if model == "linear":
        P = X @ w["W"] + w["B"]
    else:
        P = 1.0 / (1.0 + np.exp(-(X @ w["W1"] + w["B1"]))) @ w["W2"] + w["B2"]
    r2 = (y - P) ** 2
    if mode == "mean":
        return r2.mean()
    return r2.sum() if model == "linear" else 0.5 * r2.sum()


@pytest.mark.parametrize("model", sw.MODEL_NAMES)
@pytest.mark.parametrize("mode", ["book_unit_bias", "mean"])
def test_param_gradients_central_differences(model, mode):
    X, y, w = sample(5, model)
    forward = sw.forward_linear_regression if model == "linear" else sw.forward_loss
    gradients = sw.loss_gradients_linear if model == "linear" else sw.loss_gradients_network
    _, info = forward(X, y, w)
    grads, _ = gradients(info, w, mode)
    wn = {k: np.asarray(v).copy() for k, v in w.items()}
    eps = 1e-6
    for k, a in wn.items():
        num = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            orig = a[idx]
            a[idx] = orig + eps
            up = _numpy_loss(model, mode, X, y, wn)
            a[idx] = orig - eps
            down = _numpy_loss(model, mode, X, y, wn)
            a[idx] = orig
            num[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(np.asarray(grads[k]), num, rtol=1e-6, atol=1e-7, err_msg=k)


def _hand_vjp(model, mode, X, y):
    """A vjp of the loss with respect to the weights, built from the hand-derived gradients."""
    forward = sw.forward_linear_regression if model == "linear" else sw.forward_loss
    gradients = sw.loss_gradients_linear if model == "linear" else sw.loss_gradients_network

    def f_vjp(w):
        _, info = forward(X, y, w)
        grads, _ = gradients(info, w, mode)
        loss = sw.implied_loss(model, mode)[1](info["P"], y)
        return loss, lambda ct: (jax.tree.map(lambda g: ct * g, grads),)

    return f_vjp


@pytest.mark.parametrize("model", sw.MODEL_NAMES)
@pytest.mark.parametrize("mode", ["book_unit_bias", "mean"])
def test_check_vjp_finite_differences(model, mode):
    X, y, w = sample(6, model)
    L = sw.implied_loss(model, mode)[1]
    P = linear_P if model == "linear" else network_P
    f = lambda w_: L(P(X, w_), y)
    jax.test_util.check_vjp(f, _hand_vjp(model, mode, X, y), (w,), rtol=1e-6, atol=1e-6, eps=1e-5)


def test_check_vjp_flags_the_book_bias_quirk():
    """Finite differences catch the network's book-mode hidden-bias gradient (the check can fail)."""
    X, y, w = sample(7, "network")
    f = lambda w_: HALF_SSE(network_P(X, w_), y)
    jax.test_util.check_vjp(f, _hand_vjp("network", "book_unit_bias", X, y), (w,), rtol=1e-6)
    with pytest.raises(AssertionError):
        jax.test_util.check_vjp(f, _hand_vjp("network", "book", X, y), (w,), rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# training: the book's schedule, replayed against a transcription of the book's numpy code


def book_numpy_train(X, y, model, n_iter, lr, batch_size, seed, hidden=13):
    """The book's chapter-2 train loop (generate_batch, permute_data), transcribed.

    The book calls ``np.random.seed(seed)`` and then the global ``np.random`` functions; a
    ``RandomState(seed)`` gives the same stream without touching the global state.
    """
    rs = np.random.RandomState(seed)
    if model == "linear":
        w = {"W": rs.randn(X.shape[1], 1), "B": rs.randn(1, 1)}
    else:
        w = {
            "W1": rs.randn(X.shape[1], hidden),
            "B1": rs.randn(1, hidden),
            "W2": rs.randn(hidden, 1),
            "B2": rs.randn(1, 1),
        }
    perm = rs.permutation(X.shape[0])
    X, y = X[perm], y[perm]
    start, losses = 0, []
    for _ in range(n_iter):
        if start >= X.shape[0]:
            perm = rs.permutation(X.shape[0])
            X, y = X[perm], y[perm]
            start = 0
        bs = min(batch_size, X.shape[0] - start)
        Xb, yb = X[start : start + bs], y[start : start + bs]
        start += batch_size
        if model == "linear":
            P = Xb @ w["W"] + w["B"]
            dLdP = -2 * (yb - P)
            g = {"W": Xb.T @ dLdP, "B": dLdP.sum(axis=0)}
        else:
            O1 = 1 / (1 + np.exp(-(Xb @ w["W1"] + w["B1"])))
            P = O1 @ w["W2"] + w["B2"]
            dLdP = -(yb - P)
            dLdN1 = (dLdP @ w["W2"].T) * O1 * (1 - O1)
            g = {
                "W2": O1.T @ dLdP,
                "B2": dLdP.sum(axis=0).sum(axis=0),
                "W1": Xb.T @ dLdN1,
                "B1": dLdN1.sum(axis=0).sum(axis=0),
            }
        losses.append(np.mean((yb - P) ** 2))
        for k in w:
            w[k] -= lr * g[k]
    return w, np.array(losses)


@pytest.fixture(scope="module")
def boston():
    return boston_book_data()


@pytest.mark.parametrize(
    "model,batch_size,n_iter",
    [
        ("linear", 23, 1000),  # the book's run: 62 passes of 16 (15 x 23 + 9) and 8 more batches
        ("linear", 59, 13),  # 354 = 6 x 59: no short batch
        ("linear", 354, 3),  # one batch per pass
        ("linear", 50, 5),  # fewer iterations than one pass (7 x 50 + 4)
        ("network", 23, 100),
        ("network", 1, 400),  # one pass of 354 then 46 more
    ],
)
def test_train_matches_book_numpy_loop(boston, model, batch_size, n_iter):
    X_train, _, y_train, _ = boston
    seed, lr = 180708, 0.001
    w_ref, loss_ref = book_numpy_train(X_train, y_train, model, n_iter, lr, batch_size, seed)
    res = swt.train(
        X_train, y_train, model=model, n_iter=n_iter, lr=lr, batch_size=batch_size, seed=seed,
        mode="book",
    )  # fmt: skip
    assert res.losses.shape == (n_iter,)
    close(res.losses, loss_ref, rtol=1e-9)
    for k in w_ref:
        close(res.weights[k], w_ref[k], rtol=1e-9)


def test_batch_plan():
    s = swt.batch_plan(354, 23, 1000)
    assert s == swt.BatchPlan(n_full=15, rem=9, per_pass=16, passes=62, extra=8, n_passes=63)
    assert swt.batch_plan(354, 59, 12) == swt.BatchPlan(6, 0, 6, 2, 0, 2)


def test_book_permutations_compose_like_the_book():
    r1, r2 = np.random.RandomState(3), np.random.RandomState(3)
    orders = swt.book_permutations(r1, 10, 3)
    p0, p1, p2 = (r2.permutation(10) for _ in range(3))
    np.testing.assert_array_equal(orders, np.stack([p0, p0[p1], p0[p1][p2]]))


def _figures(res, X_test, y_test):
    P = np.asarray(sw.predict_weights(X_test, res.weights))
    return f"{mae(P, y_test):.4f}", f"{rmse(P, y_test):.4f}"


def test_book_figures_chapter2(boston):
    """The book's printed figures, float64, book RNG and book gradients (fast: one jit call)."""
    X_train, X_test, y_train, y_test = boston
    t0 = time.perf_counter()
    lin = swt.train(
        X_train, y_train, model="linear", n_iter=1000, lr=0.001, batch_size=23, seed=180708,
        mode="book",
    )  # fmt: skip
    net = swt.train(
        X_train, y_train, model="network", n_iter=10_000, lr=0.001, batch_size=23, seed=180807,
        mode="book",
    )  # fmt: skip
    assert _figures(lin, X_test, y_test) == ("3.5644", "5.0497")
    assert _figures(net, X_test, y_test) == ("2.5951", "3.8851")
    assert time.perf_counter() - t0 < 10.0
    # with a per-unit hidden-bias gradient the same run lands elsewhere (REFERENCE.md)
    unit = swt.train(
        X_train, y_train, model="network", n_iter=10_000, lr=0.001, batch_size=23, seed=180807,
        mode="book_unit_bias",
    )  # fmt: skip
    assert _figures(unit, X_test, y_test) == ("2.5409", "3.9517")


def test_least_squares_reference(boston):
    X_train, X_test, y_train, y_test = boston
    w = sw.least_squares_weights(X_train, y_train)
    P = sw.predict_linear(X_test, w)
    assert (f"{mae(P, y_test):.4f}", f"{rmse(P, y_test):.4f}") == ("3.5671", "5.0476")


def test_jax_rng_mean_mode(boston):
    X_train, X_test, y_train, y_test = boston
    kw = dict(model="network", n_iter=300, lr=0.01, batch_size=23, mode="mean")
    a = swt.train(X_train, y_train, seed=1, **kw)
    b = swt.train(X_train, y_train, seed=1, **kw)
    c = swt.train(X_train, y_train, seed=2, **kw)
    for k in sw.NETWORK_KEYS:
        np.testing.assert_array_equal(a.weights[k], b.weights[k])
    assert not np.allclose(a.weights["W1"], c.weights["W1"])
    losses = np.asarray(a.losses)
    assert losses.shape == (300,) and np.all(np.isfinite(losses))
    assert losses[-32:].mean() < losses[:32].mean()


def test_float32_smoke(boston):
    X_train, X_test, y_train, y_test = boston
    res = swt.train(
        X_train, y_train, model="linear", n_iter=200, lr=0.02, batch_size=23, seed=0,
        mode="mean", rng="book", dtype=jnp.float32,
    )  # fmt: skip
    assert res.weights["W"].dtype == jnp.float32 and res.losses.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(res.losses)))


# --------------------------------------------------------------------------------------------------
# bad input


def test_bad_input_rows_mismatch():
    X, y, w = sample(0, "linear")
    with pytest.raises(ValueError, match=r"forward_linear_regression: X has 7 rows but y has 6"):
        sw.forward_linear_regression(X, y[:6], w)
    Xn, yn, wn = sample(0, "network")
    with pytest.raises(ValueError, match=r"forward_loss: X has 7 rows but y has 5"):
        sw.forward_loss(Xn, yn[:5], wn)
    with pytest.raises(ValueError, match=r"train: X has 7 rows but y has 6"):
        swt.train(X, y[:6], model="linear", n_iter=3, lr=0.1, batch_size=2, seed=0)


def test_bad_input_flat_y():
    X, y, w = sample(0, "linear")
    with pytest.raises(ValueError, match=r"forward_linear_regression: y has shape \(7,\)"):
        sw.forward_linear_regression(X, y[:, 0], w)
    Xn, yn, wn = sample(0, "network")
    with pytest.raises(ValueError, match=r"forward_loss: y has shape \(7,\).*\(7, 1\)"):
        sw.forward_loss(Xn, yn[:, 0], wn)
    with pytest.raises(ValueError, match=r"train: y has shape \(7,\)"):
        swt.train(X, y[:, 0], model="network", n_iter=3, lr=0.1, batch_size=2, seed=0)


def test_bad_input_nan():
    X, y, w = sample(0, "linear")
    Xbad = np.asarray(X).copy()
    Xbad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"train: X holds NaN.*\[2, 1\]"):
        swt.train(Xbad, y, model="linear", n_iter=3, lr=0.1, batch_size=2, seed=0)
    ybad = np.asarray(y).copy()
    ybad[4, 0] = np.inf
    with pytest.raises(ValueError, match=r"train: y holds NaN or infinite"):
        swt.train(X, ybad, model="network", n_iter=3, lr=0.1, batch_size=2, seed=0, mode="book")
    with pytest.raises(ValueError, match=r"predict_linear: X holds NaN"):
        sw.predict_linear(Xbad, w)


def test_bad_input_shapes_and_options():
    X, y, w = sample(0, "network")
    with pytest.raises(ValueError, match=r"forward_loss: X has shape \(7, 4\), expected \(n, 5\)"):
        sw.forward_loss(X[:, :4], y, w)
    with pytest.raises(ValueError, match=r"forward_loss: weights\['B1'\] has shape \(3,\)"):
        sw.forward_loss(X, y, dict(w, B1=w["B1"][0]))
    with pytest.raises(ValueError, match=r"forward_linear_regression: weights must be a dict"):
        sw.forward_linear_regression(X, y, w)
    _, info = sw.forward_loss(X, y, w)
    with pytest.raises(ValueError, match=r"loss_gradients_network: mode must be one of"):
        sw.loss_gradients_network(info, w, "sum")
    with pytest.raises(ValueError, match=r"loss_gradients_linear: forward_info must hold"):
        sw.loss_gradients_linear(info, {"W": w["W2"], "B": w["B2"]})
    with pytest.raises(ValueError, match=r"train: batch_size must be an integer in \[1, 7\]"):
        swt.train(X, y, model="network", n_iter=3, lr=0.1, batch_size=8, seed=0)
    with pytest.raises(ValueError, match=r"train: model must be one of"):
        swt.train(X, y, model="cnn", n_iter=3, lr=0.1, batch_size=2, seed=0)
    with pytest.raises(ValueError, match=r"train: n_iter must be an integer in \[1, inf\)"):
        swt.train(X, y, model="linear", n_iter=0, lr=0.1, batch_size=2, seed=0)
    with pytest.raises(TypeError, match=r"train: lr must be a number"):
        swt.train(X, y, model="linear", n_iter=3, lr="0.1", batch_size=2, seed=0)
    with pytest.raises(ValueError, match=r"train: lr must be positive"):
        swt.train(X, y, model="linear", n_iter=3, lr=float("nan"), batch_size=2, seed=0)
    with pytest.raises(TypeError, match=r"train: batch_size must be an integer"):
        swt.train(X, y, model="linear", n_iter=3, lr=0.1, batch_size=2.0, seed=0)
    with pytest.raises(ValueError, match=r"train: rng must be one of 'book', 'jax'"):
        swt.train(X, y, model="linear", n_iter=3, lr=0.1, batch_size=2, seed=0, rng="numpy")
    with pytest.raises(ValueError, match=r"train: seed must be an integer in \[0, "):
        swt.train(X, y, model="linear", n_iter=3, lr=0.1, batch_size=2, seed=-1, rng="book")
    with pytest.raises(ValueError, match=r"init_weights: hidden_size must be an integer"):
        sw.init_weights(jax.random.key(0), 3, model="network", hidden_size=0)


def test_numpy_scalar_arguments_train_the_same():
    X, y, _ = sample(0, "linear")
    args = dict(model="network", mode="book", hidden_size=3)
    a = swt.train(X, y, n_iter=5, lr=0.01, batch_size=3, seed=1, **args)
    b = swt.train(X, y, n_iter=np.int64(5), lr=np.float32(0.01), batch_size=np.int32(3),
                  seed=np.int64(1), **args)  # fmt: skip
    close(a.losses, b.losses, rtol=1e-6)
