"""Batch norm: the hand backward in training and inference mode, the running statistics (state
that is not a parameter) updated by the step and never by an optimizer, used by inference, and
restored bitwise by a resume."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch.core import Op, init_params, registered, serial
from jaxscratch.ops.batchnorm import _example, batch_norm, inference
from jaxscratch.ops.dense import dense
from jaxscratch.ops.losses import mean_squared_error
from jaxscratch.optim import optimizers
from jaxscratch.oracle.check import check_op
from jaxscratch.runs import config
from jaxscratch.runs.cli import main
from jaxscratch.runs.loader import load_run
from jaxscratch.train.programs import make_step, predict

NAMES = ["batch_norm[2d]", "batch_norm[nchw]", "batch_norm[2d,eval]", "batch_norm[nchw,eval]"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 1])
def test_the_backward_passes_the_oracle_in_both_modes(name, seed):
    """vjp with a random cotangent and central finite differences, float64, non-square."""
    entry = registered()[name]
    params, x = entry.example(jax.random.key(seed))
    report = check_op(entry.op, params, x)
    assert report.passed, report


def _broken(path: str) -> Op:
    """batch_norm whose training backward drops the path through the mean or the variance."""
    bn = batch_norm()

    def backward(cache, dy):
        xhat, inv_std, gamma = cache[:3]
        axes = (0,) if dy.ndim == 2 else (0, 2, 3)
        grads, dx = bn.backward(cache, dy)
        g = dy * gamma
        mean = lambda a: jnp.mean(a, axis=axes, keepdims=True)  # noqa: E731
        if path == "mean":
            dx = dx + mean(g) * inv_std
        else:
            dx = dx + xhat * mean(g * xhat) * inv_std
        return grads, dx

    return bn._replace(backward=backward)


@pytest.mark.parametrize("path", ["mean", "variance"])
@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5, 2)])
def test_the_oracle_catches_a_backward_that_drops_a_path(path, shape):
    """Leaving out the term through mu or through var is caught."""
    params, x = _example(shape)(jax.random.key(3))
    assert not check_op(_broken(path), params, x).passed


def test_inference_uses_the_running_statistics():
    """train=False normalises with running_mean / running_var, train=True with the batch's."""
    bn = batch_norm(eps=1e-3)
    params, x = _example((6, 4))(jax.random.key(4))
    y_eval = bn.forward(params, x, train=False)[0]
    p, xn = {k: np.asarray(v) for k, v in params.items()}, np.asarray(x)
    want = p["gamma"] * (xn - p["running_mean"]) / np.sqrt(p["running_var"] + 1e-3) + p["beta"]
    np.testing.assert_allclose(y_eval, want, rtol=1e-12)
    y_train = bn.forward(params, x, train=True)[0]
    xhat = (xn - xn.mean(0)) / np.sqrt(xn.var(0) + 1e-3)
    np.testing.assert_allclose(y_train, p["gamma"] * xhat + p["beta"], rtol=1e-12)
    frozen = inference(bn)
    np.testing.assert_array_equal(frozen.forward(params, x)[0], y_eval)


OPTIMIZERS = {
    "sgd": optimizers.sgd(),
    "sgd_momentum": optimizers.sgd_momentum(0.9),
    "adam": optimizers.adam(),
    "rmsprop": optimizers.rmsprop(),
    "adagrad": optimizers.adagrad(),
}


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_the_step_updates_the_statistics_and_no_optimizer_moves_them(opt):
    """After each step, running stats = momentum * old + (1 - momentum) * the batch's (unbiased
    variance), exactly as that recurrence computed by hand; gamma and beta do train."""
    momentum = 0.8
    net = serial(dense(5, "linear"), batch_norm(momentum), dense(1, "linear"))
    key = jax.random.key(5)
    params = init_params(net, key, (3,))[1]
    X = jax.random.normal(jax.random.fold_in(key, 1), (4, 8, 3), jnp.float64)
    Y = jax.random.normal(jax.random.fold_in(key, 2), (4, 8, 1), jnp.float64)
    optimizer = OPTIMIZERS[opt]
    step = jax.jit(make_step(net, mean_squared_error, optimizer))
    state = optimizer.init(params)
    rm, rv = np.zeros(5), np.ones(5)
    for i in range(4):
        h = np.asarray(dense(5, "linear").forward(params[0], X[i])[0])  # the params used now
        rm = momentum * rm + (1 - momentum) * h.mean(0)
        rv = momentum * rv + (1 - momentum) * h.var(0, ddof=1)
        params, state, _ = step(params, state, X[i], Y[i], 0.05, None)
        np.testing.assert_allclose(params[1]["running_mean"], rm, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(params[1]["running_var"], rv, rtol=1e-12)
    assert not np.allclose(params[1]["gamma"], 1.0)
    # predict (inference mode) uses exactly those statistics
    h = dense(5, "linear").forward(params[0], X[0])[0]
    bn_out = batch_norm(momentum).forward(params[1], h, train=False)[0]
    want = dense(1, "linear").forward(params[2], bn_out)[0]
    np.testing.assert_allclose(predict(net, params, X[0]), want, rtol=1e-12)


def test_bad_input_is_a_named_error():
    """Features that do not fit gamma, a 3-D input, momentum 1, eps 0: ValueError naming them."""
    bn = batch_norm()
    params, _ = _example((6, 4))(jax.random.key(0))
    with pytest.raises(ValueError, match=r"x\(6, 3\) does not fit 4 features"):
        bn.forward(params, jnp.ones((6, 3)))
    with pytest.raises(ValueError, match="expected .batch, 4. or .batch, 4, H, W."):
        bn.forward(params, jnp.ones((6, 4, 2)))
    with pytest.raises(ValueError, match="momentum must be < 1"):
        batch_norm(momentum=1.0)
    with pytest.raises(ValueError, match="eps must be positive"):
        batch_norm(eps=0.0)
    with pytest.raises(TypeError, match="momentum must be a number"):
        batch_norm(momentum="0.9")


CONFIG = """\
seed = 11
epochs = 6
batch_size = 50
eval_every = 2
early_stopping = "off"
loss = "mean_squared_error"

[data]
name = "boston"

[[layers]]
type = "dense"
neurons = 7

[[layers]]
type = "batch_norm"
momentum = 0.7

[[layers]]
type = "activation"
activation = "tanh"

[[layers]]
type = "dense"
neurons = 1

[optimizer]
name = "adam"
lr = 0.01
"""


def test_statistics_survive_checkpoint_and_resume_bitwise(tmp_path):
    """A config with a batch_norm layer: stopped at epoch 2 and resumed, every leaf (running
    statistics included) equals the uninterrupted run's bitwise, and the statistics moved."""
    cfg = tmp_path / "bn.toml"
    cfg.write_text(CONFIG)
    assert main(["train", str(cfg), "--run-dir", str(tmp_path / "whole")]) == 0
    assert main(["train", str(cfg), "--run-dir", str(tmp_path / "cut"), "--stop-after", "2"]) == 0
    assert load_run(tmp_path / "cut").state.epoch == 2
    assert main(["train", "--resume", str(tmp_path / "cut")]) == 0
    whole, cut = (load_run(tmp_path / d).state for d in ("whole", "cut"))
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(cut.params), strict=True):
        np.testing.assert_array_equal(a, b)
    bn = whole.params[1]
    assert not np.allclose(bn["running_mean"], 0.0) and not np.allclose(bn["running_var"], 1.0)


def test_a_config_momentum_of_one_is_a_config_error():
    """layers[i].momentum outside [0, 1) names the key."""
    raw = {
        "name": "t",
        "seed": 0,
        "epochs": 1,
        "batch_size": 4,
        "loss": "mean_squared_error",
        "data": {"name": "boston"},
        "layers": [{"type": "batch_norm", "momentum": 1.0}, {"type": "dense", "neurons": 1}],
        "optimizer": {"name": "sgd", "lr": 0.1},
    }
    with pytest.raises(config.ConfigError, match=r"layers\[0\].momentum"):
        config.validate(raw)
