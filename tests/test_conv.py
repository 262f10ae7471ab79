"""Chapter 5: conv2d, max_pool2d, flatten and conv_layer against the oracle, the book's 1-D check,
and the two known convolution bugs (the oracle must catch both).

Shapes are small (batch 2, C_in 3 != C_out 4, non-square 7x6 images) so that compilation, not
arithmetic, dominates; the full configuration grid for every method is marked slow.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxscratch.core import apply, init_params, serial
from jaxscratch.ops import conv, registry
from jaxscratch.ops.conv import conv2d, conv_axis, conv_layer
from jaxscratch.ops.dense import dense
from jaxscratch.ops.losses import softmax_cross_entropy
from jaxscratch.ops.pool import flatten, make_max_pool2d, max_pool2d
from jaxscratch.optim.optimizers import sgd_momentum
from jaxscratch.oracle.check import check_op
from jaxscratch.train.loop import fit, make_step

N, C_IN, C_OUT, H, W = 2, 3, 4, 7, 6


def _normal(rng: np.random.Generator, shape: tuple[int, ...]) -> jax.Array:
    return jnp.asarray(rng.standard_normal(shape), jnp.float64)


def _example(kernel, bias: bool, *, n=N, c_in=C_IN, c_out=C_OUT, h=H, w=W, seed=0):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    rng = np.random.default_rng(seed)  # numpy draws: no compilation per shape
    params = {"W": _normal(rng, (c_out, c_in, kh, kw))}
    if bias:
        params["B"] = _normal(rng, (1, c_out, 1, 1))
    return params, _normal(rng, (n, c_in, h, w))


def _lax_reference(params, x, stride, padding):
    """Forward pass by jax.lax.conv_general_dilated, with our padding computed independently."""
    kh, kw = params["W"].shape[2:]
    if padding == "same":
        pad = "SAME"  # XLA's own SAME: the extra zero of an even kernel at the bottom/right
    else:
        p = 0 if padding == "valid" else padding
        pad = [(p, p), (p, p)]
    y = lax.conv_general_dilated(
        x,
        params["W"],
        (stride, stride),
        pad,
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
        precision=lax.Precision.HIGHEST,
    )
    return y + params["B"] if "B" in params else y


# ------------------------------------------------------------------------------------------------
# Oracle: jax.vjp (random cotangent) and finite differences, float64, rtol 1e-10
# ------------------------------------------------------------------------------------------------

# Every value of each dimension appears for the default method (im2col): odd and even kernels,
# stride 1 and 2, same / valid / int padding, bias on and off; (7, 6) inputs with stride 2 and a
# 4x4 valid kernel leave a row that no window reaches (zero gradient there). The book's 1x3 kernel
# is in the registry; a wider grid, every method, is in the slow test below.
DEFAULT_GRID = [
    (3, 1, "same", False),
    (4, 2, "valid", True),
    (4, 1, "same", True),  # even kernel, "same": the extra zero at the bottom/right
    (3, 2, 1, True),  # int padding; output 4x3
]
OTHER_GRID = [(4, 2, "valid", True)]


@pytest.mark.parametrize(("kernel", "stride", "padding", "bias"), DEFAULT_GRID)
def test_conv2d_passes_the_oracle(kernel, stride, padding, bias):
    """The forward against XLA's convolution, and the backward against the oracle unless the
    configuration is a registry entry (the registry sweep, tests/test_oracle.py, checks those)."""
    op = conv2d(C_OUT, kernel, stride=stride, padding=padding, bias=bias)
    params, x = _example(kernel, bias)
    if op.name not in registry():
        report = check_op(op, params, x)
        assert report.passed, report.detail
    y, _ = op.forward(params, x)
    np.testing.assert_allclose(
        y, _lax_reference(params, x, stride, padding), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("method", ["taps", "xla"])
@pytest.mark.parametrize(("kernel", "stride", "padding", "bias"), OTHER_GRID)
def test_other_methods_pass_the_oracle(method, kernel, stride, padding, bias):
    op = conv2d(C_OUT, kernel, stride=stride, padding=padding, bias=bias, method=method)
    params, x = _example(kernel, bias, seed=1)
    report = check_op(op, params, x)
    assert report.passed, report.detail


@pytest.mark.slow
@pytest.mark.parametrize("method", conv.METHODS)
def test_full_grid_passes_the_oracle(method):
    failures = []
    for k, s, p, b in itertools.product((1, 2, 3, 4, 5), (1, 2, 3), ("same", "valid", 1), (0, 1)):
        op = conv2d(C_OUT, k, stride=s, padding=p, bias=bool(b), method=method)
        params, x = _example(k, bool(b), seed=k + 10 * s)
        report = check_op(op, params, x)
        if not report.passed:
            failures.append((op.name, report.detail))
    assert not failures, failures


def test_registry_holds_the_conv_configurations():
    names = set(registry())
    for name in (
        "conv2d[k3,s1,same]",
        "conv2d[k4,s2,valid,bias]",
        "conv2d[k1x3,s1,same]",
        "max_pool2d",
        "flatten",
        "conv_layer[4,k3,s1,same,bias,tanh,flatten]",
    ):
        assert name in names, name


# ------------------------------------------------------------------------------------------------
# Geometry
# ------------------------------------------------------------------------------------------------


def test_same_padding_geometry_puts_the_extra_zero_bottom_right():
    assert conv_axis(6, 3, 1, "same") == (6, 1, 1)
    assert conv_axis(6, 4, 1, "same") == (6, 1, 2)  # even kernel: more after
    assert conv_axis(6, 2, 1, "same") == (6, 0, 1)
    assert conv_axis(7, 4, 2, "same") == (4, 1, 2)  # ceil(7/2) = 4, total (4-1)*2+4-7 = 3
    assert conv_axis(8, 3, 2, "same") == (4, 0, 1)
    assert conv_axis(7, 3, 1, "valid") == (5, 0, 0)
    assert conv_axis(7, 4, 2, "valid") == (2, 0, 0)  # floor; the last row is never reached
    assert conv_axis(7, 3, 2, 2) == (5, 2, 2)


def test_init_shapes_and_scales():
    op = conv2d(8, 3, bias=True, init="glorot", dtype=jnp.float32)
    out_shape, params = init_params(op, jax.random.key(0), (3, 11, 9))
    assert out_shape == (8, 11, 9)
    assert params["W"].shape == (8, 3, 3, 3) and params["W"].dtype == jnp.float32
    assert params["B"].shape == (1, 8, 1, 1) and not np.any(params["B"])
    strided = conv2d(2, 4, stride=2, padding="valid")
    assert strided.init(jax.random.key(0), (1, 9, 8))[0] == (2, 3, 3)  # (9-4)//2+1, (8-4)//2+1

    _, p = init_params(conv2d(16, 5, init="glorot"), jax.random.key(1), (8, 8, 8))
    assert p["W"].shape == (16, 8, 5, 5)  # fan_in 8*25 = 200, fan_out 16*25 = 400
    np.testing.assert_allclose(float(jnp.std(p["W"])), np.sqrt(2 / (200 + 400)), rtol=0.05)
    assert "B" not in p


# ------------------------------------------------------------------------------------------------
# The book's 1-D check (REFERENCE.md, chapter 5) as conv2d on 1x1x1x5 with a 1x1x1x3 kernel
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", conv.METHODS)
def test_book_1d_example(method):
    op = conv2d(1, (1, 3), padding="same", method=method)
    x = jnp.array([1.0, 2, 3, 4, 5]).reshape(1, 1, 1, 5)
    params = {"W": jnp.ones((1, 1, 1, 3))}
    y, cache = op.forward(params, x)
    np.testing.assert_allclose(y.ravel(), [3, 6, 9, 12, 9])
    assert float(jnp.sum(y)) == 39.0
    grads, dx = op.backward(cache, jnp.ones_like(y))  # gradient of the sum
    np.testing.assert_allclose(dx.ravel(), [2, 3, 3, 3, 2])
    np.testing.assert_allclose(grads["W"].ravel(), [10, 15, 14])


@pytest.mark.parametrize("method", conv.METHODS)
def test_book_1d_example_batched(method):
    """Two different inputs: the kernel gradient is the sum of the per-sample ones."""
    op = conv2d(1, (1, 3), padding="same", method=method)
    params = {"W": jnp.ones((1, 1, 1, 3))}
    x1 = jnp.array([1.0, 2, 3, 4, 5]).reshape(1, 1, 1, 5)
    x2 = jnp.array([2.0, -1, 0, 3, 1]).reshape(1, 1, 1, 5)
    x = jnp.concatenate([x1, x2])
    y, cache = op.forward(params, x)
    grads, dx = op.backward(cache, jnp.ones_like(y))
    g2 = [2 - 1 + 0 + 3, 2 - 1 + 0 + 3 + 1, -1 + 0 + 3 + 1]  # padded x2 against a window of ones
    np.testing.assert_allclose(grads["W"].ravel(), np.add([10, 15, 14], g2))
    np.testing.assert_allclose(dx[:, 0, 0], [[2, 3, 3, 3, 2]] * 2)
    per_sample = [
        op.backward(op.forward(params, xi)[1], jnp.ones((1, 1, 1, 5)))[0] for xi in (x1, x2)
    ]
    np.testing.assert_allclose(per_sample[0]["W"].ravel(), [10, 15, 14])
    np.testing.assert_allclose(grads["W"], per_sample[0]["W"] + per_sample[1]["W"])


# ------------------------------------------------------------------------------------------------
# The two known convolution bugs (book companion code): the unflipped input gradient and the
# batch-mixed kernel gradient are mutants in jaxscratch.book.errata, caught in tests/test_errata.py;
# here the batch mixing on the book's own 1-d example
# ------------------------------------------------------------------------------------------------


def test_batch_mixed_bug_on_the_book_1d_batch():
    good = conv2d(1, (1, 3), padding="same")
    x = jnp.array([[1.0, 2, 3, 4, 5], [2.0, -1, 0, 3, 1]]).reshape(2, 1, 1, 5)
    params = {"W": jnp.ones((1, 1, 1, 3))}
    y, cache = good.forward(params, x)
    dy = jnp.ones_like(y)
    right = good.backward(cache, dy)[0]["W"].ravel()
    mixed = jnp.einsum("ohw,ncthw->oct", dy.sum(0), cache.cols).ravel()
    np.testing.assert_allclose(right, [14, 20, 17])
    np.testing.assert_allclose(mixed, 2 * right)  # each input meets both samples' dy


# ------------------------------------------------------------------------------------------------
# The book's Conv2D layer composed with dense layers
# ------------------------------------------------------------------------------------------------


def test_conv_layer_composes_with_dense_layers():
    """conv_layer (tanh, Glorot, flatten) in ``serial`` with a dense layer: shapes and oracle."""
    net = serial(conv_layer(3, 3, "tanh", init="glorot", flatten=True), dense(4, init="glorot"))
    out_shape, params = init_params(net, jax.random.key(0), (1, 6, 5))
    assert out_shape == (4,)
    assert params[0][0]["W"].shape == (3, 1, 3, 3) and params[1]["W"].shape == (90, 4)
    x = _normal(np.random.default_rng(1), (2, 1, 6, 5))
    report = check_op(net, params, x)
    assert report.passed, report.detail


@pytest.mark.slow
def test_book_conv_layer_with_dropout_composes_with_dense_layers():
    """The book's layer (tanh, Glorot, dropout 0.8, flatten) with a dense layer, one fixed mask."""
    layer = conv_layer(3, 5, "tanh", init="glorot", dropout=0.8, flatten=True)
    assert layer.stochastic and layer.name == "conv_layer[3,k5,s1,same,tanh,keep0.8,flatten]"
    net = serial(layer, dense(4, "linear", init="glorot"))
    out_shape, params = init_params(net, jax.random.key(0), (1, 6, 5))
    assert out_shape == (4,) and params[0][0]["W"].shape == (3, 1, 5, 5)
    x = _normal(np.random.default_rng(1), (2, 1, 6, 5))
    report = check_op(net, params, x, key=jax.random.key(2))
    assert report.passed, report.detail


def test_book_conv_layer_needs_a_key_in_training():
    layer = conv_layer(3, 5, "tanh", init="glorot", dropout=0.8, flatten=True)
    assert layer.stochastic and layer.name == "conv_layer[3,k5,s1,same,tanh,keep0.8,flatten]"
    _, params = init_params(layer, jax.random.key(0), (1, 6, 5))
    with pytest.raises(ValueError, match="key"):  # dropout needs a key in training
        apply(layer, params, jnp.ones((2, 1, 6, 5)), train=True)


def test_conv_pool_network_trains_under_jit():
    """conv (dropout 0.9) + relu + pool + flatten + dense, hand-derived gradients, one jitted step."""
    net = serial(
        conv_layer(2, 3, "relu", init="glorot", bias=True, dropout=0.9),
        max_pool2d,
        flatten,
        dense(3, "linear", init="glorot"),
    )
    X = _normal(np.random.default_rng(0), (6, 1, 6, 4))
    y = jax.nn.one_hot(jnp.arange(6) % 3, 3, dtype=jnp.float64)
    _, params = init_params(net, jax.random.key(1), (1, 6, 4))
    opt = sgd_momentum(0.9)
    step = jax.jit(make_step(net, softmax_cross_entropy, opt))
    state = opt.init(params)
    losses = []
    for i in range(8):
        params, state, value = step(params, state, X, y, 0.05, jax.random.key(i))
        losses.append(float(value))
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_conv_pool_network_trains_the_same_in_scan_and_step_modes():
    net = serial(
        conv_layer(2, 3, "relu", init="glorot", bias=True, dropout=0.9),
        max_pool2d,
        flatten,
        dense(3, "linear", init="glorot"),
    )
    X = _normal(np.random.default_rng(0), (10, 1, 6, 4))
    y = jax.nn.one_hot(jnp.arange(10) % 3, 3, dtype=jnp.float64)
    _, params = init_params(net, jax.random.key(1), (1, 6, 4))
    results = [
        fit(
            net,
            softmax_cross_entropy,
            sgd_momentum(0.9),
            params,
            X,
            y,
            epochs=2,
            batch_size=4,
            key=jax.random.key(2),
            lr=0.1,
            step_mode=mode,
        )
        for mode in ("scan", "step")
    ]
    leaves = zip(
        jax.tree.leaves(results[0].params), jax.tree.leaves(results[1].params), strict=True
    )
    for a, b in leaves:
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert results[0].history.train_loss[1] < results[0].history.train_loss[0]


# ------------------------------------------------------------------------------------------------
# Errors and float32
# ------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_naming_the_op_and_shapes():
    op = conv2d(4, 3)
    params, x = _example(3, False)
    with pytest.raises(ValueError, match=r"conv2d\[k3,s1,same\]: x\(2, 2, 7, 6\) does not fit W"):
        op.forward(params, x[:, :2])
    with pytest.raises(ValueError, match="W must have shape"):
        op.forward({"W": params["W"][:, :, :2]}, x)
    with pytest.raises(ValueError, match="does not fit"):
        op.forward(params, x[0])
    with pytest.raises(ValueError, match="B must have shape"):
        conv2d(4, 3, bias=True).forward(params, x)
    with pytest.raises(ValueError, match="bias=False"):
        op.forward({**params, "B": jnp.zeros((1, 4, 1, 1))}, x)
    with pytest.raises(ValueError, match="exceeds the padded input"):
        conv2d(4, 9, padding="valid").forward({"W": jnp.ones((4, 3, 9, 9))}, x)
    y, cache = op.forward(params, x)
    with pytest.raises(ValueError, match="dy"):
        op.backward(cache, y[:, :, :-1])
    for bad in (
        lambda: conv2d(4, 3, padding="full"),
        lambda: conv2d(4, 3, padding=-1),
        lambda: conv2d(4, 3, stride=0),
        lambda: conv2d(4, 0),
        lambda: conv2d(4, (3, 3, 3)),
        lambda: conv2d(0, 3),
        lambda: conv2d(4, 3, init="kaiming"),
        lambda: conv2d(4, 3, method="fft"),
        lambda: conv_layer(4, 3, dropout=0.0),
        lambda: conv_layer(4, 3, dropout=1.5),
        lambda: make_max_pool2d(0),
    ):
        with pytest.raises(ValueError, match="conv2d|conv_layer|max_pool2d|init"):
            bad()
    for bad in (
        lambda: conv2d(4, True),
        lambda: conv2d(4, 3, stride="2"),
        lambda: conv2d(4, 3, padding=1.0),
        lambda: conv_layer(4, 3, dropout="0.8"),
        lambda: make_max_pool2d(2.0),
    ):
        with pytest.raises(TypeError, match="conv2d|conv_layer|max_pool2d"):
            bad()
    with pytest.raises(ValueError, match="per-row"):
        init_params(op, jax.random.key(0), (28, 28))


def test_numpy_scalar_arguments_are_numbers_everywhere():
    """One validator: a numpy keep probability or size means the same in conv_layer and dense."""
    assert conv_layer(4, 3, dropout=np.float32(0.8)).name == conv_layer(4, 3, dropout=0.8).name
    assert dense(4, dropout=np.float32(0.8)).name == dense(4, dropout=0.8).name
    assert conv_layer(4, 3, dropout=np.float64(1.0)).name == conv_layer(4, 3).name
    assert conv2d(np.int64(4), np.int32(3), stride=np.int8(2)).name == conv2d(4, 3, stride=2).name


def test_float32_matches_float64():
    params, x = _example(3, True, seed=9, c_in=1, c_out=6, h=12, w=10)
    op = conv2d(6, 3, bias=True)
    dy = _normal(np.random.default_rng(8), (2, 6, 12, 10))

    def forward_backward(params, x, dy):
        y, cache = op.forward(params, x)
        return y, op.backward(cache, dy)

    f64 = forward_backward(params, x, dy)
    f32 = forward_backward(*jax.tree.map(lambda a: a.astype(jnp.float32), (params, x, dy)))
    for a, b in zip(jax.tree.leaves(f32), jax.tree.leaves(f64), strict=True):
        assert a.dtype == jnp.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
