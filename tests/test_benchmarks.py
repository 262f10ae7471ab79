"""The benchmark harness: the --quick smoke run, the numpy reference models, the jax.grad twin.

The numpy reference (experiments/numpy_reference.py, the book's classes) must be the *same model*
as the jaxscratch one it is timed against, so its gradients are checked against ``jax.vjp`` of the
jaxscratch forward pass (float64, random cotangents, non-square shapes).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch import core
from jaxscratch import train as trainer
from jaxscratch.book import charlm
from jaxscratch.ops import conv, losses, rnn
from jaxscratch.ops import dense as layers
from jaxscratch.optim import optimizers

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import benchmarks  # noqa: E402
import numpy_reference as ref  # noqa: E402


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _quick_benchmark(tmp_path: Path, workloads: tuple[str, ...]) -> dict:
    cmd = [sys.executable, str(EXPERIMENTS / "benchmarks.py"), "--quick", "--out", str(tmp_path)]
    cmd += ["--workloads", ",".join(workloads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res["workloads"]) == set(workloads)
    return res


@pytest.mark.subprocess
def test_quick_benchmark_smoke_on_one_workload(tmp_path: Path) -> None:
    """The default suite's smoke run: ``--quick`` on the cheapest workload, every column (all
    four workloads: the slow test below)."""
    res = _quick_benchmark(tmp_path, ("boston",))
    for name, w in res["workloads"].items():
        for key in ("jaxscratch", "numpy", "jax_grad", "per_step"):
            assert w[key] > 0, (name, key)
        assert ("pytorch" in w["impls"]) == (benchmarks.TORCH is not None), name
    assert "| boston | jaxscratch |" in (tmp_path / "benchmarks.md").read_text()


@pytest.mark.slow
@pytest.mark.subprocess
def test_quick_benchmark_smoke(tmp_path: Path) -> None:
    """``benchmarks.py --quick`` runs every implementation and writes the promised keys."""
    res = _quick_benchmark(tmp_path, tuple(benchmarks.WORKLOADS))
    for name, w in res["workloads"].items():
        for key in ("jaxscratch", "numpy", "jax_grad", "per_step"):
            assert w[key] > 0, (name, key)
        assert w["gemm"]["numpy_gflops"] > 0 and w["gemm"]["xla_gflops"] > 0
        assert all(
            v["compile_s"] > 0 for k, v in w["impls"].items() if not benchmarks._is_peer(k)
        ), name
        # the PyTorch column exactly when torch is importable (never a dependency)
        assert ("pytorch" in w["impls"]) == (benchmarks.TORCH is not None), name
    assert "charlm" in res["workloads"]["lstm"]["impls"]
    table = (tmp_path / "benchmarks.md").read_text()
    assert "| mlp | jaxscratch |" in table and "GEMM" in table
    assert ("PyTorch" in table) == (benchmarks.TORCH is not None)
    if benchmarks.TORCH is not None:
        assert set(res["goals"]["pytorch_over_jaxscratch"]) == set(benchmarks.WORKLOADS)


def _fake_results(with_torch: bool) -> dict:
    times = {"jaxscratch": [1.0, 1.2, 1.1], "numpy": [4.0, 4.0, 4.0], "pytorch": [2.0, 2.4, 0.9]}
    if not with_torch:
        del times["pytorch"]
    impls = {k: {"median_s": float(np.median(v)), "times_s": v} for k, v in times.items()}
    workload = {"impls": impls, **{k: v["median_s"] for k, v in impls.items()}}
    return {"machine": {"torch": "x", "torch_threads": 2}, "workloads": {"lstm": workload}}


def test_pytorch_column_is_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without torch: no PyTorch rows, no PyTorch goals; with: the side-by-side row and ratio."""
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    assert benchmarks._load_torch() is None
    assert benchmarks.peer_table(_fake_results(False)) == []
    lines = benchmarks.peer_table(_fake_results(True))
    row = next(line for line in lines if line.startswith("| lstm |"))
    # medians 2.0 s (PyTorch) / 1.1 s (jaxscratch); per round 2.0, 2.0, 0.82 -> median 2.0
    assert "| 1.10 s | 2.00 s | 4.00 s | 1.82x faster | 2.00x faster |" in row
    slow = _fake_results(True)
    slow["workloads"]["lstm"]["impls"]["pytorch"] = {"median_s": 0.55, "times_s": [0.55] * 3}
    assert "**2.00x slower**" in next(
        line for line in benchmarks.peer_table(slow) if line.startswith("| lstm |")
    )
    assert benchmarks._is_peer("pytorch") and benchmarks._is_peer("numpy_f32")
    assert not benchmarks._is_peer("jaxscratch")


@pytest.mark.slow  # the benchmark's twins are the same model: with the full benchmark smoke
def test_pytorch_lstm_is_the_same_model() -> None:
    """torch.nn.LSTM holding the jaxscratch weights computes the same loss (float32)."""
    if benchmarks.TORCH is None:
        pytest.skip("torch is not installed (the PyTorch column is optional)")
    B, T, V, H = 4, 6, 5, 7
    f32 = jnp.float32
    net = charlm.char_model("lstm", V, H, weight_scale=0.5, dtype=f32)
    _, params = net.init(jax.random.key(0), (T, V))
    params = dict(params, start_H=0.3 * jnp.ones((1, H), f32), start_C=-0.2 * jnp.ones((1, H), f32))
    ids = _rng(20).integers(0, V, size=(B, T + 1))
    eye = np.eye(V, dtype=np.float32)
    X, Y = eye[ids[:, :T]], eye[ids[:, 1:]]
    loss = rnn.sequence_softmax_cross_entropy.forward(net.forward(params, jnp.asarray(X))[0], Y)[0]
    values = {k: np.asarray(v) for k, v in params.items()}
    got = benchmarks.torch_lstm(values, X, Y, B)()  # one batch: the loss before its update
    np.testing.assert_allclose(got, float(loss), rtol=1e-5)


def test_numpy_dense_matches_jax() -> None:
    """Book-style Dense/sigmoid/tanh/MSE gradients equal jax.grad of the jaxscratch model."""
    net = core.serial(layers.dense(5, "sigmoid"), layers.dense(3, "tanh"), layers.dense(2))
    _, params = core.init_params(net, jax.random.key(0), (4,))
    X, y = _rng(1).normal(size=(7, 4)), _rng(2).normal(size=(7, 2))

    def loss_fn(p):
        return losses.mean_squared_error.forward(net.forward(p, X)[0], y)[0]

    value, grads = jax.value_and_grad(loss_fn)(params)
    nnet = ref.NeuralNetwork(
        [ref.Dense(5, ref.Sigmoid()), ref.Dense(3, ref.Tanh()), ref.Dense(2, ref.Linear())],
        ref.MeanSquaredError(),
    )
    nnet.forward(X)
    ref.set_params(nnet, [np.asarray(v) for p in params for v in (p["W"], p["B"])])
    nvalue = nnet.train_batch(X, y)
    np.testing.assert_allclose(nvalue, float(value), rtol=1e-12)
    expected = [np.asarray(v) for g in grads for v in (g["W"], g["B"])]
    for got, want in zip(nnet.param_grads(), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_numpy_softmax_cross_entropy_and_momentum() -> None:
    logits, labels = _rng(3).normal(size=(6, 4)) * 3, _rng(4).integers(0, 4, 6)
    target = np.eye(4)[labels]
    value, g = jax.value_and_grad(
        lambda z: losses.softmax_cross_entropy.forward(z, jnp.asarray(target))[0]
    )(jnp.asarray(logits))
    loss = ref.SoftmaxCrossEntropy(eps=1e-300)
    np.testing.assert_allclose(loss.forward(logits, target), float(value), rtol=1e-12)
    np.testing.assert_allclose(loss.backward(), np.asarray(g), rtol=1e-10, atol=1e-14)
    # the book's momentum rule, as optimizers.sgd_momentum
    p, grad = _rng(5).normal(size=(3, 2)), _rng(6).normal(size=(3, 2))
    opt = optimizers.sgd_momentum(0.9)
    jp, js = jnp.asarray(p), opt.init(jnp.asarray(p))
    holder = type("Net", (), {})()
    nopt = ref.SGDMomentum(lr=0.1, momentum=0.9)
    holder.params = lambda: iter([p])
    holder.param_grads = lambda: iter([grad])
    nopt.net = holder
    for _ in range(3):
        jp, js = opt.update(jnp.asarray(grad), js, jp, 0.1)
        nopt.step()
    np.testing.assert_allclose(p, np.asarray(jp), rtol=1e-12)


def test_numpy_conv_matches_jax() -> None:
    """The book's im2col Conv2D_Op (bugs fixed) equals conv2d and its jax.vjp, batch > 1."""
    op = conv.conv2d(3, 3, padding="same")
    _, params = op.init(jax.random.key(0), (2, 6, 6))
    x = _rng(7).normal(size=(4, 2, 6, 6))
    y, vjp = jax.vjp(lambda p, v: op.forward(p, v)[0], params, jnp.asarray(x))
    dy = _rng(8).normal(size=y.shape)
    dparams, dx = vjp(jnp.asarray(dy))
    nop = ref.Conv2D_Op(np.ascontiguousarray(np.asarray(params["W"]).transpose(1, 0, 2, 3)))
    np.testing.assert_allclose(nop.forward(x), np.asarray(y), rtol=1e-10, atol=1e-12)
    ndx = nop.backward(dy)
    np.testing.assert_allclose(ndx, np.asarray(dx), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        nop.param_grad.transpose(1, 0, 2, 3), np.asarray(dparams["W"]), rtol=1e-10, atol=1e-12
    )


@pytest.mark.slow  # the benchmark's twins are the same model: with the full benchmark smoke
def test_numpy_lstm_matches_jax() -> None:
    """The book's LSTMNode/LSTMLayer with the mean sequence loss equals jax.grad of lstm_layer."""
    B, T, V, H = 3, 5, 4, 6
    net = charlm.char_model("lstm", V, H, weight_scale=0.5, dtype=jnp.float64)
    _, params = net.init(jax.random.key(0), (T, V))
    params = dict(params, start_H=jnp.asarray(_rng(9).normal(size=(1, H))))
    ids = _rng(10).integers(0, V, size=(B, T + 1))
    X, Y = np.eye(V)[ids[:, :T]], np.eye(V)[ids[:, 1:]]
    loss = rnn.sequence_softmax_cross_entropy

    def loss_fn(p):
        return loss.forward(net.forward(p, jnp.asarray(X))[0], jnp.asarray(Y))[0]

    value, grads = jax.value_and_grad(loss_fn)(params)
    layer = ref.LSTMLayer(H, V)
    model = ref.RNNModel([layer], ref.SequenceSoftmaxCrossEntropy(eps=1e-300))
    layer.forward(X)
    layer.first = False
    for k, v in params.items():
        layer.params[k]["value"][...] = np.asarray(v)
    np.testing.assert_allclose(model.single_step(X, Y), float(value), rtol=1e-12)
    assert set(layer.params) == set(grads)
    for k, g in grads.items():
        np.testing.assert_allclose(layer.params[k]["deriv"], np.asarray(g), rtol=1e-9, atol=1e-12)


@pytest.mark.slow  # the benchmark's twins are the same model: with the full benchmark smoke
def test_vjp_twin_matches_hand_derived() -> None:
    """The benchmark's jax.grad twin computes the same training step (dropout included)."""
    from jaxscratch.ops.dropout import dropout

    net = core.serial(layers.dense(5, "tanh"), dropout(0.8), layers.dense(3))
    _, params = core.init_params(net, jax.random.key(0), (4,))
    X = jnp.asarray(_rng(11).normal(size=(6, 4)))
    Y = jnp.asarray(np.eye(3)[_rng(12).integers(0, 3, 6)])
    opt = optimizers.sgd_momentum(0.9)
    sce = losses.softmax_cross_entropy
    hand = trainer.make_step(net, sce, opt)
    twin = trainer.make_step(benchmarks.vjp_twin(net), benchmarks.vjp_loss(sce), opt)
    key = jax.random.key(3)
    a = hand(params, opt.init(params), X, Y, 0.1, key)
    b = twin(params, opt.init(params), X, Y, 0.1, key)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("mode", ["scan", "step"])
def test_float32_params_keep_their_dtype_under_x64(mode: str) -> None:
    """fit with float32 params in an x64 process (the benchmarks): float32 learning rates."""
    f32 = jnp.float32
    net = core.serial(layers.dense(5, "tanh", dtype=f32), layers.dense(3, dtype=f32))
    _, params = core.init_params(net, jax.random.key(0), (4,))
    X = _rng(13).normal(size=(20, 4)).astype(np.float32)
    y = _rng(14).normal(size=(20, 3)).astype(np.float32)
    r = trainer.fit(net, losses.mean_squared_error, optimizers.sgd_momentum(0.9), params, X, y,
                    epochs=2, batch_size=6, key=jax.random.key(1), step_mode=mode)  # fmt: skip
    assert {leaf.dtype for leaf in jax.tree.leaves((r.params, r.opt_state))} == {np.dtype(f32)}


def test_auto_step_mode_rule() -> None:
    """auto: per-step dispatch only for channels-first XLA convolutions (slow inside lax.scan)."""
    f32 = jnp.float32
    opt, sce = optimizers.sgd_momentum(0.9), losses.softmax_cross_entropy
    X = np.zeros((12, 1, 8, 8), np.float32)
    Y = np.eye(10, dtype=np.float32)[np.arange(12) % 10]
    modes = {}
    for method in ("taps", "xla"):
        net = core.serial(
            conv.conv_layer(2, 3, "tanh", flatten=True, method=method, dtype=f32),
            layers.dense(10, dtype=f32),
        )
        _, params = core.init_params(net, jax.random.key(0), (1, 8, 8))
        modes[method] = trainer.auto_step_mode(net, sce, opt, params, opt.init(params), X, Y, 6)
    assert modes == {"taps": "scan", "xla": "step"}

    def nhwc_forward(params, x):  # a channels-last convolution: no layout penalty in a scan
        y = jax.lax.conv_general_dilated(
            x, params["W"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return y.reshape(x.shape[0], -1), (x, params["W"])

    nhwc = core.Op("nhwc_conv", nhwc_forward, lambda cache, dy: ({"W": cache[1]}, cache[0]))
    net = core.serial(nhwc, layers.dense(10, dtype=f32))
    params = ({"W": jnp.zeros((3, 3, 1, 2), f32)}, net.init(jax.random.key(0), (128,))[1][1])
    Xl = np.zeros((12, 8, 8, 1), np.float32)
    assert trainer.auto_step_mode(net, sce, opt, params, opt.init(params), Xl, Y, 6) == "scan"
    dense_net = core.serial(layers.dense(4, "sigmoid"), layers.dense(1))
    _, dp = core.init_params(dense_net, jax.random.key(0), (3,))
    Xd, yd = np.zeros((9, 3)), np.zeros((9, 1))
    mse = losses.mean_squared_error
    assert trainer.auto_step_mode(dense_net, mse, opt, dp, opt.init(dp), Xd, yd, 4) == "scan"
