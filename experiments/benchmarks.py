"""Benchmarks: jaxscratch's trainer vs the book's numpy code vs a ``jax.grad`` twin, one process.

Workloads (the shapes of the book's experiments; synthetic data of the same shapes, except Boston):

* ``boston``: chapter 3, 13-13-1 (sigmoid hidden), MSE, SGD lr 0.01, 50 epochs of the 354 training
  rows, batch 32, evaluation every 10 epochs (no early stopping, so every run does the same
  work), float64, the real Boston data.
* ``mlp``: chapter 4, 784-89-10 (tanh hidden), softmax cross-entropy, SGD momentum 0.9, one epoch
  of 60,000 rows, batch 60, float32.
* ``cnn``: chapter 5, conv 16 x 5x5 ("same", tanh, Glorot, dropout keep 0.8, flatten) -> dense 10,
  softmax cross-entropy, momentum (lr 0.01, 0.9), 100 batches of 60 (6,000 rows), float32.
* ``lstm``: chapter 6, one LSTM layer (hidden 256, output 62, weight scale 0.01) on characters
  (62 symbols), sequences of 25, batch 32, mean softmax cross-entropy over batch and time,
  AdaGrad lr 0.01 with element-wise clipping to [-2, 2], 100 steps, float32. numpy and PyTorch
  get one-hot inputs; jaxscratch gets the same characters as int ids, which its LSTM layer
  reads as the one-hot rows they stand for (the input projection a row gather, its gradient a
  scatter-add: the same numbers without multiplying the zeros). Besides ``fit`` on the book's
  consecutive windows, ``charlm`` times :func:`jaxscratch.book.charlm.train_char_lm` (random
  windows).

Implementations, each timed on the whole workload (``fit`` from Python to finished params; the
data arrays are made device arrays once, before the timing, as PyTorch's are wrapped by
``torch.from_numpy``: a numpy array would cost jaxscratch one copy per ``fit`` call, ~45 ms for
the MLP's 60,000 x 784 floats here, when it is not 64-byte aligned):

* ``jaxscratch``: :func:`jaxscratch.train.fit` with the hand-derived backward passes, in the
  trainer's default step mode; ``scan`` and ``per_step`` force ``step_mode="scan"`` / ``"step"``.
* ``jax_grad`` (``_scan``, ``_per_step``): the same ``fit`` on a twin of the network whose
  ``backward`` is ``jax.vjp`` of its forward (and of the loss): the jax.grad gradients of the same
  model with the same fit structure. ``jax_grad`` is the twin in jaxscratch's mode.
* ``numpy``: :mod:`experiments.numpy_reference`, the book's classes and trainer, same model, in
  float64 as the book's code runs (its preprocessing and ``np.random.normal`` give float64);
  ``numpy_f32`` (MLP, LSTM): the same code on float32 arrays, the like-for-like precision.
* ``pytorch`` (only when ``import torch`` works; torch is never a dependency of the package:
  ``pip install torch==2.13.0`` or ``pip install -e '.[peers]'`` adds it to the current
  environment): the same model written as a PyTorch user would, eager on CPU with
  ``torch.set_num_threads(2)``, the same data, initial weights, batch order rule and optimizer
  (``nn.LSTM`` for the LSTM, ``F.conv2d`` for the CNN, ``addmm`` for dense layers); the table
  "Side by side" gives jaxscratch, PyTorch and numpy medians of the same run with the ratio
  time(PyTorch) / time(jaxscratch). Without torch the column is left out.
* CNN only: ``conv_im2col`` / ``conv_xla`` (jaxscratch's other convolution formulations, hand
  backward) and ``jax_grad_conv_im2col`` / ``jax_grad_conv_xla`` (their jax.grad twins; the last
  is the autodiff of ``lax.conv_general_dilated``, i.e. what plain JAX code would run).

Protocol: every implementation is run once to warm up (its compile time is measured from JAX's
compile events during that run), then ``--repeats`` rounds run every implementation once each,
in a new random order every round, each run after a 0.25 s pause (numpy's OpenBLAS threads and
XLA's worker threads spin for a while after their own work and would otherwise slow down whatever
runs next); the table gives medians and min-max. GFLOP/s counts the model's
matmul/convolution FLOPs (forward, weight gradients, and input gradients except the first
layer's); the GEMM reference times numpy's ``matmul`` and an XLA ``dot`` (in a ``lax.scan``) at
the model's own matmul shapes, in the same process. Peak RSS: ``resource.getrusage``'s ``ru_maxrss``
after each implementation's first run, the process's high-water mark having been reset just
before it (``/proc/self/clear_refs``), so each figure is the process's peak while that
implementation ran (the data and earlier allocations included); ``peak_rss_process_mb`` is the
largest seen.

Usage:
    python experiments/benchmarks.py                   # all workloads, 5 repeats
    python experiments/benchmarks.py --quick           # tiny shapes, a smoke test (~seconds)
    python experiments/benchmarks.py --workloads boston,mlp --repeats 7 --ch3
Writes ``results.json`` (per workload the median seconds under ``jaxscratch``, ``numpy``,
``jax_grad``, ``per_step``, ``scan``, ... plus details) and ``benchmarks.md`` into ``--out``
(default ``results/benchmarks``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax

jax.config.update("jax_enable_x64", True)  # Boston is float64; the other models are float32

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxscratch.fileio import write_json_atomic  # noqa: E402

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import numpy_reference as ref  # noqa: E402

from jaxscratch import core  # noqa: E402
from jaxscratch import train as trainer  # noqa: E402
from jaxscratch.book import charlm  # noqa: E402
from jaxscratch.core import Loss, Op  # noqa: E402
from jaxscratch.ops import conv, losses, rnn  # noqa: E402
from jaxscratch.ops import dense as layers  # noqa: E402
from jaxscratch.optim import clipping, optimizers  # noqa: E402
from jaxscratch.train import shuffle  # noqa: E402

WORKLOADS = ("boston", "mlp", "cnn", "lstm")

# ------------------------------------------------------------------------------------------------
# the jax.grad twin: same forward, backward from jax.vjp (benchmarks only, never in the library)
# ------------------------------------------------------------------------------------------------


def vjp_twin(op: Op) -> Op:
    """``op`` with ``backward`` replaced by ``jax.vjp`` of its forward; the cache is the vjp."""

    def forward(params: Any, x: Any, *, key: Any = None, train: bool = True) -> tuple[Any, Any]:
        def f(p, v):
            return core.apply(op, p, v, key=key, train=train)[0]

        return jax.vjp(f, params, x)

    def backward(cache: Any, dy: Any) -> tuple[Any, Any]:
        return cache(dy)

    return Op(f"{op.name}[jax.vjp]", forward, backward, op.init, op.stochastic)


def vjp_loss(loss: Loss) -> Loss:
    """``loss`` with ``backward`` from ``jax.vjp`` of its forward value."""

    def forward(pred: Any, target: Any) -> tuple[Any, Any]:
        value, vjp = jax.vjp(lambda p: loss.forward(p, target)[0], pred)
        return value, (vjp, value)

    def backward(cache: Any) -> Any:
        vjp, value = cache
        return vjp(jnp.ones_like(value))[0]

    return Loss(f"{loss.name}[jax.vjp]", forward, backward)


# ------------------------------------------------------------------------------------------------
# the PyTorch eager peer (optional: only when torch is importable; never a package dependency)
# ------------------------------------------------------------------------------------------------

PEERS = ("numpy", "pytorch")  # implementations that are not jaxscratch (no JAX compile time)


def _load_torch() -> Any:
    """torch with 2 intra-op threads, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(2)
    return torch


TORCH = _load_torch()


def _is_peer(name: str) -> bool:
    return name.startswith(PEERS)


def _t(a: Any, dtype: Any = None) -> Any:
    """A numpy/JAX array as a torch tensor (a copy: the benchmark's arrays stay untouched)."""
    return TORCH.tensor(np.asarray(a, dtype=dtype))


def _torch_dense(params: Any, acts: list[str]) -> tuple[Any, list[Any]]:
    """The jaxscratch dense stack (W (in, out), B (1, out) per layer) as torch leaf tensors and
    its forward function."""
    leaves = []
    for p in params:
        leaves += [_t(p["W"]).requires_grad_(), _t(p["B"]).requires_grad_()]
    act = {"sigmoid": TORCH.sigmoid, "tanh": TORCH.tanh, "linear": lambda v: v}

    def forward(x: Any) -> Any:
        for n, a in enumerate(acts):
            x = act[a](TORCH.addmm(leaves[2 * n + 1], x, leaves[2 * n]))
        return x

    return forward, leaves


def _torch_epochs(forward, loss_fn, opt, X, Y, epochs, bs, g) -> float:
    """The training loop a PyTorch user writes: mini-batches shuffled by the generator ``g``
    (``None``: row order), backward, step. Returns the last batch's loss."""
    n, loss = X.shape[0], TORCH.zeros(())
    for _ in range(epochs):
        order = TORCH.randperm(n, generator=g) if g is not None else TORCH.arange(n)
        for s in range(0, n, bs):
            idx = order[s : s + bs]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(forward(X[idx]), Y[idx])
            loss.backward()
            opt.step()
    return float(loss.detach())


def torch_boston(params: Any, Xtr, ytr, Xte, yte, epochs: int) -> Callable[[], float]:
    """13-13-1 sigmoid, the book's MSE (sum of squares / batch), SGD, float64, evaluation of the
    test rows every 10 epochs, as the jaxscratch run."""

    def mse(p: Any, y: Any) -> Any:
        return ((p - y) ** 2).sum() / p.shape[0]

    def run() -> float:
        forward, leaves = _torch_dense(params, ["sigmoid", "linear"])
        opt = TORCH.optim.SGD(leaves, lr=0.01)
        X, Y, Xe, Ye = (TORCH.from_numpy(np.asarray(a)) for a in (Xtr, ytr, Xte, yte))
        g, value = TORCH.Generator().manual_seed(1), 0.0
        for start in range(0, epochs, 10):
            _torch_epochs(forward, mse, opt, X, Y, min(10, epochs - start), 32, g)
            with TORCH.no_grad():
                value = float(mse(forward(Xe), Ye))
        return value

    return run


def torch_mlp(params: Any, X: np.ndarray, Y: np.ndarray) -> Callable[[], float]:
    """784-89-10 tanh, cross-entropy, SGD momentum 0.9 (the book's rule for a constant lr), one
    shuffled epoch, batch 60, float32."""
    labels = TORCH.from_numpy(np.argmax(Y, axis=1))
    F = TORCH.nn.functional

    def run() -> float:
        forward, leaves = _torch_dense(params, ["tanh", "linear"])
        opt = TORCH.optim.SGD(leaves, lr=0.01, momentum=0.9)
        return _torch_epochs(forward, F.cross_entropy, opt, TORCH.from_numpy(X), labels, 1, 60,
                             TORCH.Generator().manual_seed(1))  # fmt: skip

    return run


def torch_cnn(params: Any, X: np.ndarray, Y: np.ndarray, bs: int) -> Callable[[], float]:
    """conv 16 x k x k "same" (tanh, dropout keep 0.8, flatten) -> dense 10, cross-entropy,
    momentum, one epoch in batches of ``bs``, float32, NCHW (PyTorch's native layout)."""
    labels = TORCH.from_numpy(np.argmax(Y, axis=1))
    F = TORCH.nn.functional
    conv_p, dense_p = params[0][0], params[1]

    def run() -> float:
        K = _t(conv_p["W"]).requires_grad_()  # (C_out, C_in, k, k), as torch's conv2d
        cb = _t(np.ravel(conv_p["B"])).requires_grad_() if "B" in conv_p else None
        W, B = _t(dense_p["W"]).requires_grad_(), _t(dense_p["B"]).requires_grad_()
        leaves = [v for v in (K, cb, W, B) if v is not None]

        def forward(x: Any) -> Any:
            h = F.dropout(TORCH.tanh(F.conv2d(x, K, cb, padding=K.shape[-1] // 2)), 0.2, True)
            return TORCH.addmm(B, h.flatten(1), W)

        opt = TORCH.optim.SGD(leaves, lr=0.01, momentum=0.9)
        return _torch_epochs(forward, F.cross_entropy, opt, TORCH.from_numpy(X), labels, 1, bs,
                             TORCH.Generator().manual_seed(1))  # fmt: skip

    return run


def _torch_lstm_module(params: dict[str, Any], n_in: int, hidden: int) -> Any:
    """``torch.nn.LSTM`` holding the jaxscratch LSTM's weights (gate order i, f, g, o)."""
    m = TORCH.nn.LSTM(n_in, hidden, batch_first=True)
    order = ("i", "f", "c", "o")
    with TORCH.no_grad():
        m.weight_ih_l0.copy_(_t(np.concatenate([params[f"W_{g}"][:n_in].T for g in order])))
        m.weight_hh_l0.copy_(_t(np.concatenate([params[f"W_{g}"][n_in:].T for g in order])))
        m.bias_ih_l0.copy_(_t(np.concatenate([np.ravel(params[f"B_{g}"]) for g in order])))
        m.bias_hh_l0.zero_()
    return m


def torch_lstm(
    params: dict[str, Any], X: np.ndarray, Y: np.ndarray, bs: int, lr: float = 0.01
) -> Callable[[], float]:
    """``nn.LSTM`` (hidden 256) on the one-hot windows, a learned initial state, the per-step
    projection, cross-entropy mean over batch and time, element-wise clipping to [-2, 2], AdaGrad
    (eps 1e-7 outside the root, as jaxscratch's), consecutive batches, float32."""
    labels = TORCH.from_numpy(np.argmax(Y, axis=-1))
    F = TORCH.nn.functional
    n_in, hidden = X.shape[-1], params["start_H"].shape[1]

    def run() -> float:
        lstm = _torch_lstm_module(params, n_in, hidden)
        h0, c0 = _t(params["start_H"]).requires_grad_(), _t(params["start_C"]).requires_grad_()
        W, B = _t(params["W_v"]).requires_grad_(), _t(params["B_v"]).requires_grad_()
        leaves = [*lstm.parameters(), h0, c0, W, B]

        def forward(x: Any) -> Any:
            n = x.shape[0]
            hs, _ = lstm(x, (h0.expand(n, -1)[None], c0.expand(n, -1)[None]))
            return TORCH.addmm(B, hs.reshape(-1, hidden), W)

        def loss_fn(logits: Any, y: Any) -> Any:
            return F.cross_entropy(logits, y.reshape(-1))

        opt = TORCH.optim.Adagrad(leaves, lr=lr, eps=1e-7)
        Xt, loss = TORCH.from_numpy(X), TORCH.zeros(())
        for s in range(0, X.shape[0], bs):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(forward(Xt[s : s + bs]), labels[s : s + bs])
            loss.backward()
            TORCH.nn.utils.clip_grad_value_(leaves, 2.0)
            opt.step()
        return float(loss.detach())

    return run


# ------------------------------------------------------------------------------------------------
# workloads
# ------------------------------------------------------------------------------------------------


@dataclass
class Workload:
    """One benchmark: implementations (each runs the whole workload once, blocking), FLOPs and
    the matmul shapes of one run (``(m, k, n, count)``) for the GEMM reference."""

    name: str
    title: str
    dtype: Any
    steps: int
    flops: float
    gemms: list[tuple[int, int, int, int]]
    impls: dict[str, Callable[[], float]] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)
    same_as: dict[str, str] = field(default_factory=dict)  # "jaxscratch" is also the "scan" row


def _batches(n: int, bs: int) -> list[int]:
    return [bs] * (n // bs) + ([n % bs] if n % bs else [])


def _dense_gemms(sizes: list[int], batches: list[int]) -> list[tuple[int, int, int, int]]:
    """Forward x@W, weight gradient x.T@dz, and input gradient dz@W.T except for layer 1."""
    out: dict[tuple[int, int, int], int] = {}
    for m in batches:
        for li, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            for shape in [(m, a, b), (a, m, b)] + ([(m, b, a)] if li else []):
                out[shape] = out.get(shape, 0) + 1
    return [(m, k, n, c) for (m, k, n), c in out.items()]


def _flops(gemms: list[tuple[int, int, int, int]]) -> float:
    return float(sum(2.0 * m * k * n * c for m, k, n, c in gemms))


def _jax_impls(
    w: Workload,
    quick: bool,
    net: Op,
    loss: Loss,
    opt: optimizers.Optimizer,
    params: Any,
    X: Any,
    y: Any,
    **kw: Any,
) -> None:
    """jaxscratch (the default, ``auto``, mode) and the other step mode (``per_step`` or
    ``scan``); the jax.grad twin in the mode ``auto`` picks for it (and, full runs, the other)."""
    twin, twin_loss = vjp_twin(net), vjp_loss(loss)
    default = trainer.fit.__kwdefaults__["step_mode"]
    # the data on the device once, as a user who trains more than once holds them (the PyTorch
    # runs wrap the same arrays with torch.from_numpy, numpy's use them in place)
    X, y = jnp.asarray(X), jnp.asarray(y)

    def runner(n: Op, lo: Loss, mode: str) -> Callable[[], float]:
        def run() -> float:
            r = trainer.fit(n, lo, opt, params, X, y, step_mode=mode, **kw)
            jax.block_until_ready(r.params)
            return r.history.train_loss[-1]

        return run

    def resolved(n: Op, lo: Loss) -> str:
        if default != "auto":
            return default
        x = jax.ShapeDtypeStruct((kw["batch_size"], *np.shape(X)[1:]), np.asarray(X).dtype)
        key = kw.get("key")
        return trainer.auto_step_mode(n, lo, opt, params, opt.init(params), x, y, x.shape[0], key)

    labels = {"scan": "scan", "step": "per_step"}
    mode = resolved(net, loss)
    w.impls["jaxscratch"] = runner(net, loss, default)
    w.modes["jaxscratch"] = f"{default}: {mode}" if default == "auto" else mode
    other = "step" if mode == "scan" else "scan"
    w.impls[labels[other]] = runner(net, loss, other)
    w.modes[labels[other]] = other
    w.same_as["jaxscratch"] = labels[mode]
    tmode = resolved(twin, twin_loss)
    w.impls["jax_grad"] = runner(twin, twin_loss, default)
    w.modes["jax_grad"] = f"{default}: {tmode}" if default == "auto" else tmode
    w.same_as["jax_grad"] = f"jax_grad_{labels[tmode]}"
    if not quick:  # the smoke test: one jax.grad variant is enough
        tother = "step" if tmode == "scan" else "scan"
        w.impls[f"jax_grad_{labels[tother]}"] = runner(twin, twin_loss, tother)
        w.modes[f"jax_grad_{labels[tother]}"] = tother


def _numpy_dense_net(sizes: list[int], acts: list[str], loss: ref.Loss) -> ref.NeuralNetwork:
    make = {"sigmoid": ref.Sigmoid, "tanh": ref.Tanh, "linear": ref.Linear}
    layers_ = [ref.Dense(n, make[a]()) for n, a in zip(sizes[1:], acts, strict=True)]
    return ref.NeuralNetwork(layers_, loss, seed=0)


def _load_numpy_params(net: ref.NeuralNetwork, X: np.ndarray, values: list[np.ndarray]) -> None:
    net.forward(X[:2])  # lazy set-up, as the book's layers do
    for layer in net.layers:
        layer.first = False
    ref.set_params(net, values)


def _dense_values(params: Any) -> list[np.ndarray]:
    return [np.asarray(v) for p in params for v in (p["W"], p["B"])]


def boston(quick: bool) -> Workload:
    from jaxscratch.data import boston_book_data

    Xtr, Xte, ytr, yte = boston_book_data()
    epochs = 5 if quick else 50
    sizes, acts = [13, 13, 1], ["sigmoid", "linear"]
    net = core.serial(*(layers.dense(n, a) for n, a in zip(sizes[1:], acts, strict=True)))
    _, params = core.init_params(net, jax.random.key(0), (13,))
    batches = _batches(len(Xtr), 32) * epochs
    gemms = _dense_gemms(sizes, batches)
    w = Workload(
        "boston",
        f"ch.3 Boston 13-13-1, {epochs} epochs, batch 32, f64",
        np.float64,
        len(batches),
        _flops(gemms),
        gemms,
    )
    _jax_impls(
        w,
        quick,
        net,
        losses.mean_squared_error,
        optimizers.sgd(),
        params,
        Xtr,
        ytr,
        epochs=epochs,
        batch_size=32,
        key=jax.random.key(1),
        lr=0.01,
        eval_data=(Xte, yte),
        eval_every=10,
        stopping=None,
    )
    values = _dense_values(params)

    def run_numpy() -> float:
        nnet = _numpy_dense_net(sizes, acts, ref.MeanSquaredError())
        _load_numpy_params(nnet, Xtr, values)
        tr = ref.Trainer(nnet, ref.SGD(lr=0.01))
        tr.fit(Xtr, ytr, Xte, yte, epochs=epochs, eval_every=10, batch_size=32, seed=1,
               restart=False, early_stopping=False)  # fmt: skip
        return float(tr.net.loss.forward(tr.net.forward(Xte, inference=True), yte))

    w.impls["numpy"] = run_numpy
    if TORCH is not None:
        w.impls["pytorch"] = torch_boston(params, Xtr, ytr, Xte, yte, epochs)
    return w


def _classification_data(n: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, ...]:
    """Synthetic float32 inputs (standard normal) with labels from a random linear teacher."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, *shape), dtype=np.float32)
    teacher = rng.standard_normal((int(np.prod(shape)), 10)).astype(np.float32)
    labels = np.argmax(X.reshape(n, -1) @ teacher, axis=1)
    return X, np.eye(10, dtype=np.float32)[labels]


def mlp(quick: bool) -> Workload:
    n, hidden = (1200, 89) if quick else (60000, 89)
    X, Y = _classification_data(n, (784,), 0)
    f32 = jnp.float32
    sizes, acts = [784, hidden, 10], ["tanh", "linear"]
    net = core.serial(layers.dense(hidden, "tanh", dtype=f32), layers.dense(10, dtype=f32))
    _, params = core.init_params(net, jax.random.key(0), (784,))
    params = jax.tree.map(lambda a: a * 0.05, params)  # small logits: no saturation
    batches = _batches(n, 60)
    gemms = _dense_gemms(sizes, batches)
    w = Workload(
        "mlp",
        f"ch.4 MLP 784-{hidden}-10, softmax CE, momentum, 1 epoch of {n}, batch 60, f32",
        np.float32,
        len(batches),
        _flops(gemms),
        gemms,
    )
    opt = optimizers.sgd_momentum(0.9)
    _jax_impls(w, quick, net, losses.softmax_cross_entropy, opt, params, X, Y, epochs=1,
               batch_size=60, key=jax.random.key(1), lr=0.01)  # fmt: skip
    values = _dense_values(params)

    def numpy_run(dtype: Any) -> Callable[[], float]:
        Xn, Yn = X.astype(dtype), Y.astype(dtype)  # the book's preprocessing gives float64

        def run() -> float:
            nnet = _numpy_dense_net(sizes, acts, ref.SoftmaxCrossEntropy())
            _load_numpy_params(nnet, Xn, values)
            tr = ref.Trainer(nnet, ref.SGDMomentum(lr=0.01, momentum=0.9))
            tr.fit(Xn, Yn, None, None, epochs=1, batch_size=60, seed=1, restart=False)
            return float(nnet.loss.forward(nnet.forward(Xn[:600], inference=True), Yn[:600]))

        return run

    w.impls["numpy"] = numpy_run(np.float64)
    w.impls["numpy_f32"] = numpy_run(np.float32)
    if TORCH is not None:
        w.impls["pytorch"] = torch_mlp(params, X, Y)
    return w


def cnn(quick: bool) -> Workload:
    n_batches, bs, side = (4, 12, 12) if quick else (100, 60, 28)
    k = 3 if quick else 5  # quick: 9 taps instead of 25, to compile faster
    n = n_batches * bs
    X, Y = _classification_data(n, (1, side, side), 2)
    f32 = jnp.float32
    conv_op = conv.conv_layer(16, k, "tanh", init="glorot", dropout=0.8, flatten=True, dtype=f32)
    net = core.serial(conv_op, layers.dense(10, init="glorot", dtype=f32))
    _, params = core.init_params(net, jax.random.key(0), (1, side, side))
    pix = side * side
    feat = 16 * pix
    gemms = [
        (bs * pix, k * k, 16, n_batches),  # forward conv as im2col GEMM
        (k * k, bs * pix, 16, n_batches),  # kernel gradient
        (bs, feat, 10, n_batches),  # dense forward
        (feat, bs, 10, n_batches),  # dense weight gradient
        (bs, 10, feat, n_batches),  # dense input gradient
    ]
    w = Workload(
        "cnn",
        f"ch.5 CNN 16x{k}x{k} (tanh, dropout 0.8) + dense 10, {n_batches} batches of {bs}, "
        f"{side}x{side}, f32",
        np.float32,
        n_batches,
        _flops(gemms),
        gemms,
    )
    opt = optimizers.sgd_momentum(0.9)
    sce = losses.softmax_cross_entropy
    fit_kw = dict(epochs=1, batch_size=bs, key=jax.random.key(1), lr=0.01)
    _jax_impls(w, quick, net, sce, opt, params, X, Y, **fit_kw)
    if not quick:  # the other conv formulations of jaxscratch.ops.conv, same params
        twin_sce = vjp_loss(sce)
        xs = jax.ShapeDtypeStruct((bs, 1, side, side), jnp.float32)
        variants: list[tuple[str, Op, Loss, str]] = []
        for method in ("im2col", "xla"):
            other = conv.conv_layer(16, k, "tanh", init="glorot", dropout=0.8, flatten=True,
                                    method=method, dtype=f32)  # fmt: skip
            onet = core.serial(other, layers.dense(10, init="glorot", dtype=f32))
            otwin = vjp_twin(onet)
            variants.append((f"conv_{method}", onet, sce, "auto"))
            variants.append((f"jax_grad_conv_{method}", otwin, twin_sce, "auto"))
        # jax.grad of lax.conv inside a scanned epoch: the setting the issue measured
        variants.append(("jax_grad_conv_xla_scan", otwin, twin_sce, "scan"))
        for label, n_, l_, mode in variants:

            def run(n_: Op = n_, l_: Loss = l_, mode: str = mode) -> float:
                r = trainer.fit(n_, l_, opt, params, X, Y, step_mode=mode, **fit_kw)
                jax.block_until_ready(r.params)
                return r.history.train_loss[-1]

            w.impls[label] = run
            if mode == "auto":
                key = jax.random.key(1)
                chosen = trainer.auto_step_mode(
                    n_, l_, opt, params, opt.init(params), xs, Y, bs, key
                )
                mode = f"auto: {chosen}"
            w.modes[label] = mode
    K = np.asarray(params[0][0]["W"])  # (C_out, C_in, k, k) -> the book's (C_in, C_out, k, k)
    values = [np.ascontiguousarray(K.transpose(1, 0, 2, 3))] + _dense_values(params[1:])

    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)  # the book's arrays are float64

    def run_numpy() -> float:
        layers_ = [
            ref.Conv2D(
                16, k, dropout=0.8, weight_init="glorot", activation=ref.Tanh(), flatten=True
            ),  # fmt: skip
            ref.Dense(10, ref.Linear(), weight_init="glorot"),
        ]
        nnet = ref.NeuralNetwork(layers_, ref.SoftmaxCrossEntropy(), seed=0)
        _load_numpy_params(nnet, X64, values)
        tr = ref.Trainer(nnet, ref.SGDMomentum(lr=0.01, momentum=0.9))
        tr.fit(X64, Y64, None, None, epochs=1, batch_size=bs, seed=1, restart=False)
        return 0.0

    w.impls["numpy"] = run_numpy
    if TORCH is not None:
        w.impls["pytorch"] = torch_cnn(params, X, Y, bs)
    return w


def _char_text(n_chars: int, vocab: int, seed: int) -> str:
    """Synthetic text over ``vocab`` symbols (a Markov chain, so it is learnable)."""
    symbols = [chr(c) for c in range(48, 48 + vocab)]
    rng = np.random.default_rng(seed)
    trans = rng.dirichlet(np.full(vocab, 0.3), size=vocab)
    idx = [0]
    for _ in range(n_chars - 1):
        idx.append(int(rng.choice(vocab, p=trans[idx[-1]])))
    return "".join(symbols[i] for i in idx)


def lstm(quick: bool) -> Workload:
    steps, bs, T, hidden, vocab = (5, 8, 10, 32, 62) if quick else (100, 32, 25, 256, 62)
    text = _char_text(steps * bs + T + bs + 2, vocab, 3)
    chars = sorted(set(text))
    vocab = len(chars)
    ids = np.array([chars.index(c) for c in text])
    n = steps * bs  # window i starts at character i: consecutive batches, as the book's trainer
    win = np.stack([ids[i : i + T + 1] for i in range(n)])
    eye = np.eye(vocab, dtype=np.float32)
    X, Y = eye[win[:, :T]], eye[win[:, 1:]]  # one-hot, as numpy and PyTorch get them
    ids_x, ids_y = win[:, :T].astype(np.int32), win[:, 1:].astype(np.int32)
    f32 = jnp.float32
    net = charlm.char_model("lstm", vocab, hidden, weight_scale=0.01, dtype=f32)
    _, params = core.init_params(net, jax.random.key(0), (T, vocab))
    z = vocab + hidden
    per_step = [(bs, z, hidden, 4), (bs, hidden, vocab, 1), (hidden, bs, vocab, 1),
                (bs, vocab, hidden, 1), (z, bs, hidden, 4), (bs, hidden, z, 4)]  # fmt: skip
    gemms = [(m, k, nn, c * T * steps) for m, k, nn, c in per_step]
    w = Workload(
        "lstm",
        f"ch.6 LSTM char model, hidden {hidden}, vocab {vocab}, seq {T}, batch {bs}, "
        f"{steps} steps, AdaGrad, clipping [-2, 2], f32",
        np.float32,
        steps,
        _flops(gemms),
        gemms,
    )
    opt = clipping.clip_elementwise(optimizers.adagrad(), 2.0)
    # jaxscratch reads the windows as ids (its LSTM gathers the input projection's rows: the
    # numbers of the one-hot product); numpy and PyTorch multiply the one-hot rows
    _jax_impls(w, quick, net, rnn.sequence_softmax_cross_entropy, opt, params, ids_x, ids_y,
               epochs=1, batch_size=bs, shuffle=False, lr=0.01)  # fmt: skip
    vocab_obj = charlm.build_vocabulary(text)
    ids_all = charlm.encode(vocab_obj, text)

    def run_charlm() -> float:
        r = charlm.train_char_lm(
            net, params, vocab_obj, ids_all, optimizer=opt, lr=0.01, iterations=steps,
            batch_size=bs, seq_len=T, key=jax.random.key(4), sample_every=None, sample_length=1,
        )  # fmt: skip
        jax.block_until_ready(r.params)
        return float(r.losses[-1])

    w.impls["charlm"] = run_charlm
    w.modes["charlm"] = "scan"
    values = {k: np.asarray(v) for k, v in params.items()}

    def numpy_run(dtype: Any) -> Callable[[], float]:
        def run() -> float:
            layer = ref.LSTMLayer(hidden, vocab, weight_scale=0.01)
            model = ref.RNNModel([layer], ref.SequenceSoftmaxCrossEntropy())
            layer.forward(X[:1].astype(dtype))
            layer.first = False
            for k, v in values.items():
                layer.params[k]["value"][...] = v
            optim = ref.AdaGrad(lr=0.01, gradient_clipping=True)
            tr = ref.RNNTrainer(text, model, optim, batch_size=bs, sequence_length=T)
            return tr.train(steps, dtype=dtype)[-1]

        return run

    w.impls["numpy"] = numpy_run(np.float64)  # the book's one-hot arrays are float64
    w.impls["numpy_f32"] = numpy_run(np.float32)
    if TORCH is not None:
        w.impls["pytorch"] = torch_lstm(values, X, Y, bs)
    return w


BUILDERS: dict[str, Callable[[bool], Workload]] = {
    "boston": boston,
    "mlp": mlp,
    "cnn": cnn,
    "lstm": lstm,
}

# ------------------------------------------------------------------------------------------------
# measurement helpers
# ------------------------------------------------------------------------------------------------

_COMPILE_EVENTS: list[float] = []  # tracing, lowering and XLA compilation, seconds
_BACKEND_COMPILES: list[float] = []  # XLA compilations only


def _on_event(name: str, duration: float, **kwargs: Any) -> None:
    if name.startswith("/jax/core/compile/"):
        _COMPILE_EVENTS.append(duration)
    if name == "/jax/core/compile/backend_compile_duration":
        _BACKEND_COMPILES.append(duration)


jax.monitoring.register_event_duration_secs_listener(_on_event)


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


_PEAKS: list[float] = []  # every high-water mark read, for the process peak across resets


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def gemm_reference(
    gemms: list[tuple[int, int, int, int]], dtype: Any, quick: bool
) -> dict[str, float]:
    """Seconds that numpy's matmul and an XLA dot (inside a ``lax.scan``, fresh left operand per
    iteration) take for the workload's matmuls, and the GFLOP/s that makes. ``quick``: only the
    shapes carrying at least 10% of the FLOPs, few repetitions."""
    rng = np.random.default_rng(5)
    if quick:  # the smoke test: only the shapes that carry >= 10% of the FLOPs (fewer compiles)
        share = _flops(gemms)
        gemms = [g for g in gemms if _flops([g]) >= 0.1 * share]
    total_flops = _flops(gemms)
    t_np = t_xla = 0.0
    for m, k, n, count in gemms:
        flops = 2.0 * m * k * n
        reps = int(min(max(2e8 / flops, 4), 2000, max(4, 64e6 / (m * k * 4))))
        if quick:
            reps = min(reps, 8)
        A = rng.standard_normal((reps, m, k)).astype(dtype)
        B = rng.standard_normal((k, n)).astype(dtype)

        def np_run(A=A, B=B) -> None:
            for a in A:
                np.matmul(a, B)

        @jax.jit
        def xla_run(As, Bm):
            def body(c, a):
                return c + jnp.sum(a @ Bm), None

            return jax.lax.scan(body, jnp.zeros((), As.dtype), As)[0]

        Ad, Bd = jnp.asarray(A), jnp.asarray(B)
        xla_run(Ad, Bd).block_until_ready()
        np_run()
        r = 3 if quick else 5
        time.sleep(0.02 if quick else 0.25)
        t_np += _median_time(np_run, r) / reps * count
        time.sleep(0.02 if quick else 0.25)
        t_xla += (
            _median_time(lambda Ad=Ad, Bd=Bd: xla_run(Ad, Bd).block_until_ready(), r) / reps * count
        )
    return {
        "numpy_s": t_np,
        "xla_s": t_xla,
        "numpy_gflops": total_flops / t_np / 1e9,
        "xla_gflops": total_flops / t_xla / 1e9,
    }


def run_workload(w: Workload, repeats: int, quick: bool, log: Callable[[str], None]) -> dict:
    names = list(w.impls)
    res: dict[str, Any] = {"title": w.title, "steps": w.steps, "model_gflop": w.flops / 1e9}
    first: dict[str, float] = {}
    compile_s: dict[str, float] = {}
    peak: dict[str, float | None] = {}
    for name in names:
        can_reset = _reset_peak_rss()
        _COMPILE_EVENTS.clear()
        t = time.perf_counter()
        w.impls[name]()
        first[name] = time.perf_counter() - t
        compile_s[name] = float(sum(_COMPILE_EVENTS))
        # after the reset, getrusage's ru_maxrss follows the same (reset) high-water mark
        peak[name] = _maxrss_mb() if can_reset else None
        _PEAKS.append(_maxrss_mb())
        log(f"  {w.name}/{name}: first run {first[name]:.3f} s (compile {compile_s[name]:.3f} s)")
    times: dict[str, list[float]] = {name: [] for name in names}
    shuffle = np.random.default_rng(0)
    settle = 0.02 if quick else 0.25
    for r in range(repeats):
        # a new random order every round: no implementation always follows the same one (numpy's
        # OpenBLAS threads, and XLA's, keep spinning for a while after their work)
        order = [names[i] for i in shuffle.permutation(len(names))]
        for name in order:
            time.sleep(settle)  # let the other library's worker threads go idle first
            _BACKEND_COMPILES.clear()
            t = time.perf_counter()
            w.impls[name]()
            times[name].append(time.perf_counter() - t)
            if _BACKEND_COMPILES:  # a re-trace that hits the compiled program is not one
                log(f"  warning: {w.name}/{name} compiled again in repeat {r} "
                    f"({sum(_BACKEND_COMPILES):.3f} s inside the timed run)")  # fmt: skip
    gemm = gemm_reference(w.gemms, w.dtype, quick)
    impls = {}
    for name in names:
        ts = times[name]
        med = statistics.median(ts)
        impls[name] = {
            "median_s": med,
            "min_s": min(ts),
            "max_s": max(ts),
            "times_s": ts,
            "first_run_s": first[name],
            "compile_s": compile_s[name] if not _is_peer(name) else 0.0,
            "mode": w.modes.get(name),
            "gflops": w.flops / med / 1e9,
            "peak_rss_mb": peak[name],
        }
    res["impls"] = impls
    res["gemm"] = gemm
    for name in names:  # the keys results.json promises: median seconds per implementation
        res[name] = impls[name]["median_s"]
    for name, alias in w.same_as.items():  # e.g. jaxscratch ran in scan mode: it is "scan" too
        res.setdefault(alias, impls[name]["median_s"])
    res["aliases"] = dict(w.same_as)
    return res


def _impl(r: dict, label: str) -> dict | None:
    """An implementation's record by name, or by the alias it also stands for ("scan")."""
    if label in r["impls"]:
        return r["impls"][label]
    for name, alias in r.get("aliases", {}).items():
        if alias == label:
            return r["impls"][name]
    return None


def _paired_ratio(r: dict, a: str, b: str) -> float:
    """Median over rounds of time(a) / time(b) within the same round (robust to slow drifts)."""
    ta, tb = r["impls"][a]["times_s"], r["impls"][b]["times_s"]
    return statistics.median(x / y for x, y in zip(ta, tb, strict=True))


def _fmt_s(s: float) -> str:
    if s >= 10:
        return f"{s:.1f} s"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 0.01:
        return f"{s * 1e3:.0f} ms"
    return f"{s * 1e3:.2f} ms"


def _versus(ratio: float) -> str:
    """``time(peer) / time(jaxscratch)`` in words."""
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"**{1 / ratio:.2f}x slower**"


def peer_table(results: dict) -> list[str]:
    """Markdown lines: jaxscratch, PyTorch eager and the book's numpy side by side (same run,
    medians), with time(PyTorch) / time(jaxscratch) as a ratio of medians and as the median of
    the per-round ratios. Empty when no workload has a ``pytorch`` run (torch not installed)."""
    rows = {k: r for k, r in results["workloads"].items() if "pytorch" in r["impls"]}
    if not rows:
        return []
    torch_v = results["machine"].get("torch", "?")
    lines = [
        f"Side by side (same run, medians; PyTorch {torch_v} eager on CPU, "
        f"{results['machine'].get('torch_threads', '?')} threads):",
        "",
        "| workload | jaxscratch | PyTorch eager | numpy (book) | jaxscratch vs PyTorch | "
        "per-round median |",
        "|---|---|---|---|---|---|",
    ]
    for wname, r in rows.items():
        ours, peer = r["impls"]["jaxscratch"]["median_s"], r["impls"]["pytorch"]["median_s"]
        lines.append(
            f"| {wname} | {_fmt_s(ours)} | {_fmt_s(peer)} | "
            f"{_fmt_s(r['impls']['numpy']['median_s'])} | {_versus(peer / ours)} | "
            f"{_versus(_paired_ratio(r, 'pytorch', 'jaxscratch'))} |"
        )
    return lines


def markdown(results: dict) -> str:
    lines = []
    m = results["machine"]
    lines.append(
        f"Machine: {m['cpu']}, {m['nproc']} cores; {m['platform']}; jax {m['jax']}, "
        f"numpy {m['numpy']} ({m['blas']}); load average {m['load_start']} at the start, "
        f"{m['load_end']} at the end; {results['repeats']} repeats, medians (min-max)."
    )
    lines.append("")
    lines.append(
        "| workload | implementation | mode | time | min-max | compile | vs numpy | GFLOP/s | "
        "% numpy GEMM | peak RSS |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for wname, r in results["workloads"].items():
        g = r["gemm"]
        np_med = r["impls"]["numpy"]["median_s"]
        for name, v in r["impls"].items():
            speed = np_med / v["median_s"]
            rss = f"{v['peak_rss_mb']:.0f} MB" if v["peak_rss_mb"] is not None else "n/a"
            comp = _fmt_s(v["compile_s"]) if not _is_peer(name) else "-"
            lines.append(
                f"| {wname} | {name} | {v['mode'] or '-'} | {_fmt_s(v['median_s'])} | "
                f"{_fmt_s(v['min_s'])}-{_fmt_s(v['max_s'])} | {comp} | {speed:.1f}x | "
                f"{v['gflops']:.1f} | {100 * v['gflops'] / g['numpy_gflops']:.0f}% | {rss} |"
            )
    lines.append("")
    lines.append("GEMM reference at each model's matmul shapes (same run):")
    lines.append("")
    lines.append("| workload | model GFLOP per run | numpy GEMM GFLOP/s | XLA dot GFLOP/s |")
    lines.append("|---|---|---|---|")
    for wname, r in results["workloads"].items():
        g = r["gemm"]
        lines.append(
            f"| {wname} | {r['model_gflop']:.3f} | {g['numpy_gflops']:.1f} | "
            f"{g['xla_gflops']:.1f} |"
        )
    lines.append("")
    lines.append(
        "Ratios (same run): hand-derived / jax.grad twin in the same step mode, as a ratio of "
        "medians and as the median of the per-round ratios (both ran in every round); numpy / ours."
    )
    lines.append("")
    lines.append("| workload | hand / jax.grad | per-round median | scan | per step "
                 "| numpy / jaxscratch |")  # fmt: skip
    lines.append("|---|---|---|---|---|---|")
    for wname, r in results["workloads"].items():

        def ratio(a: str, b: str, r: dict = r) -> str:
            x, y = _impl(r, a), _impl(r, b)
            return f"{x['median_s'] / y['median_s']:.2f}" if x and y else "-"

        paired = _paired_ratio(r, "jaxscratch", "jax_grad")
        lines.append(
            f"| {wname} | {ratio('jaxscratch', 'jax_grad')} | {paired:.2f} | "
            f"{ratio('scan', 'jax_grad_scan')} | {ratio('per_step', 'jax_grad_per_step')} | "
            f"{ratio('numpy', 'jaxscratch')} |"
        )
    peers = peer_table(results)
    if peers:
        lines += ["", *peers]
    if "ch3" in results:
        c = results["ch3"]
        lines.append("")
        lines.append(
            f"`{c['command']}`: {c['wall_s']:.2f} s wall (median of {len(c['runs_s'])}, "
            f"runs {', '.join(f'{t:.2f}' for t in c['runs_s'])} s), including imports and "
            "compilation (the persistent compilation cache on, as the experiments run)."
        )
    if "many" in results:
        lines += [
            "",
            "Many runs in one program (fit_many) against one fit, alternating, medians:",
            "",
        ]
        lines += ["| case | runs | one fit | fit_many | ratio |", "|---|---|---|---|---|"]
        for name, v in results["many"].items():
            lines.append(f"| {name} | {v['runs']} | {_fmt_s(v['one_s'])} | "
                         f"{_fmt_s(v['many_s'])} | {v['ratio']:.2f}x |")  # fmt: skip
    if "many_parts" in results:
        mp = results["many_parts"]
        pr, pj = mp["products_us_per_step"], mp["permutation_jax_us_per_epoch"]
        pf, pa = mp["permutation_fit_us_per_epoch"], mp["activation_us_per_step"]
        big = 1200 if results["quick"] else 60000
        lines += [
            "",
            f"Inside the {mp['runs']}-run Boston program, measured apart (jitted `lax.scan`): a "
            f"step's five matrix products {pr['one']:.1f} us for one run, {pr['many']:.1f} us "
            f"vmapped over {mp['runs']} ({pr['ratio']:.1f}x; "
            f"{mp['products_ms_in_the_program']:.0f} ms of the program); the hidden layer's "
            f"product, sigmoid and derivative {pa['one']:.1f} us and {pa['many']:.1f} us "
            f"({pa['ratio']:.1f}x); an epoch's permutation "
            f"of 354 rows, `jax.random.permutation` {pj['one']:.1f} us for one key and "
            f"{pj['many']:.1f} us for {mp['runs']}, fit's (the same permutation) {pf['one']:.1f} "
            f"us and {pf['many']:.1f} us ({mp['permutations_fit_ms_in_the_program']:.0f} ms of "
            f"the program); of {big} rows (the MLP's epoch), jax's {mp[f'permutation_jax_{big}_us'] / 1e3:.1f} "
            f"ms, fit's {mp[f'permutation_fit_{big}_us'] / 1e3:.1f} ms.",
        ]
    return "\n".join(lines) + "\n"


def goals(results: dict) -> dict[str, Any]:
    """The performance goals of the issue, evaluated on this run."""
    W = results["workloads"]
    out: dict[str, Any] = {}
    hand = {}
    for wname, r in W.items():
        hand[wname] = {}
        for a, b in (("jaxscratch", "jax_grad"), ("scan", "jax_grad_scan"),
                     ("per_step", "jax_grad_per_step")):  # fmt: skip
            x, y = _impl(r, a), _impl(r, b)
            if x and y:
                hand[wname][a] = x["median_s"] / y["median_s"]
        hand[wname]["per_round_median"] = _paired_ratio(r, "jaxscratch", "jax_grad")
        if wname == "cnn" and "jax_grad_conv_xla" in r["impls"]:
            hand[wname]["vs_jax_grad_of_lax_conv"] = (
                r["jaxscratch"] / r["impls"]["jax_grad_conv_xla"]["median_s"]
            )
            hand[wname]["vs_jax_grad_of_lax_conv_in_scan"] = (
                r["jaxscratch"] / r["impls"]["jax_grad_conv_xla_scan"]["median_s"]
            )
    out["hand_over_jax_grad"] = hand
    vs_torch = {k: r["pytorch"] / r["jaxscratch"] for k, r in W.items() if "pytorch" in r}
    if vs_torch:  # time(PyTorch eager) / time(jaxscratch): > 1 means jaxscratch is faster
        out["pytorch_over_jaxscratch"] = vs_torch
        out["faster_than_pytorch_everywhere"] = all(v > 1.0 for v in vs_torch.values())
    out["hand_le_jax_grad_everywhere"] = all(v["jaxscratch"] <= 1.0 for v in hand.values())
    out["hand_le_jax_grad_everywhere_per_round"] = all(
        v["per_round_median"] <= 1.0 for v in hand.values()
    )
    if "cnn" in W:
        out["cnn_hand_le_half_jax_grad"] = hand["cnn"]["jaxscratch"] <= 0.5
        if "vs_jax_grad_of_lax_conv" in hand["cnn"]:
            out["cnn_hand_le_half_jax_grad_of_lax_conv"] = (
                hand["cnn"]["vs_jax_grad_of_lax_conv"] <= 0.5
            )
            out["cnn_hand_le_half_jax_grad_of_lax_conv_in_scan"] = (
                hand["cnn"]["vs_jax_grad_of_lax_conv_in_scan"] <= 0.5
            )
        out["cnn_speedup_vs_numpy"] = W["cnn"]["numpy"] / W["cnn"]["jaxscratch"]
        out["cnn_ge_50x_numpy"] = out["cnn_speedup_vs_numpy"] >= 50
    if "mlp" in W:
        r = W["mlp"]
        out["mlp_speedup_vs_numpy"] = r["numpy"] / r["jaxscratch"]
        if "numpy_f32" in r:
            out["mlp_speedup_vs_numpy_f32"] = r["numpy_f32"] / r["jaxscratch"]
        out["mlp_ge_5x_numpy"] = out["mlp_speedup_vs_numpy"] >= 5
        frac = r["impls"]["jaxscratch"]["gflops"] / r["gemm"]["numpy_gflops"]
        out["mlp_fraction_of_numpy_gemm"] = frac
        out["mlp_ge_70pc_numpy_gemm"] = frac >= 0.7
        out["mlp_xla_dot_fraction_of_numpy_gemm"] = (
            r["gemm"]["xla_gflops"] / r["gemm"]["numpy_gflops"]
        )
    if "boston" in W:
        out["boston_speedup_vs_numpy"] = W["boston"]["numpy"] / W["boston"]["jaxscratch"]
        out["boston_ge_10x_numpy"] = out["boston_speedup_vs_numpy"] >= 10
    if "ch3" in results:
        out["ch3_wall_s"] = results["ch3"]["wall_s"]
        out["ch3_under_3s"] = results["ch3"]["wall_s"] < 3.0
    if "many" in results:
        for name, limit in (("boston_16", 2.0), ("mlp_10", 4.0)):
            if name in results["many"]:
                out[f"many_{name}_ratio"] = results["many"][name]["ratio"]
                out[f"many_{name}_le_{limit:g}x"] = results["many"][name]["ratio"] <= limit
        m = results["many"].get("mlp_10")
        if m is not None and "mlp" in W:  # the same epoch as the mlp workload
            flop = W["mlp"]["model_gflop"]
            out["many_mlp_10_gflops"] = m["runs"] * flop / m["many_s"]
            out["many_mlp_10_one_gflops"] = flop / m["one_s"]
            # the rate 10 runs in 4x one run's time would need, against numpy's GEMM
            out["many_mlp_10_4x_needs_gflops"] = m["runs"] * flop / (4.0 * m["one_s"])
            out["many_mlp_10_numpy_gemm_gflops"] = W["mlp"]["gemm"]["numpy_gflops"]
    return out


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas_s = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # noqa: BLE001 - informational only
        blas_s = "unknown BLAS"
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "blas": blas_s,
        "devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "torch": TORCH.__version__ if TORCH is not None else None,
        "torch_threads": TORCH.get_num_threads() if TORCH is not None else None,
    }


def time_ch3(runs: int) -> dict[str, Any]:
    """Wall time of the chapter 3 experiment as a user runs it (fresh process each time)."""
    script = HERE / "ch3_boston.py"
    cmd = [sys.executable, str(script), "--no-plots", "--out"]
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(runs):
            t = time.perf_counter()
            subprocess.run(cmd + [tmp], check=True, capture_output=True)
            times.append(time.perf_counter() - t)
    return {
        "command": "python experiments/ch3_boston.py --no-plots",
        "runs_s": times,
        "wall_s": statistics.median(times),
    }


def _many_pair(net: Op, loss: Loss, opt: Any, in_shape: tuple, X: Any, y: Any, n: int,
               **kw: Any) -> tuple[Callable[[], Any], Callable[[], Any]]:  # fmt: skip
    """``(one, many)``: ``fit`` of run 0 and ``fit_many`` of runs 0..n-1 (init keys from key 0,
    run keys from key 1), the data on the device once."""
    X, y = jnp.asarray(X), jnp.asarray(y)
    init_keys = jax.random.split(jax.random.key(0), n)
    keys = jax.random.split(jax.random.key(1), n)
    stacked = trainer.init_many(net, init_keys, in_shape)
    first = core.init_params(net, init_keys[0], in_shape)[1]

    def one() -> Any:
        r = trainer.fit(net, loss, opt, first, X, y, key=keys[0], stopping=None, **kw)
        return jax.block_until_ready(r.params)

    def many() -> Any:
        return jax.block_until_ready(trainer.fit_many(net, loss, opt, stacked, X, y, keys=keys,
                                                      **kw).params)  # fmt: skip

    return one, many


def _scan_us(fn: Callable[[Any, Any], Any], xs: Any, w: Any, repeats: int) -> float:
    """Microseconds per iteration of ``fn(x_t, w)`` inside one jitted ``lax.scan`` over ``xs``
    (a carry feeds each result into the next iteration so XLA can hoist nothing), median."""

    @jax.jit
    def run(xs: Any, w: Any) -> Any:
        def body(c: Any, x: Any) -> tuple[Any, None]:
            out = fn(x, jax.tree.map(lambda a: a + c, w))
            return c + 1e-30 * sum(jnp.sum(o) for o in jax.tree.leaves(out)), None

        return jax.lax.scan(body, jnp.zeros((), jnp.float64), xs)[0]

    jax.block_until_ready(run(xs, w))
    steps = len(jax.tree.leaves(xs)[0])
    return 1e6 * _median_time(lambda: jax.block_until_ready(run(xs, w)), repeats) / steps


def time_many_parts(repeats: int, quick: bool) -> dict[str, Any]:
    """What one step of the 16-run Boston program is made of, measured apart: the step's five
    matrix products (13-13-1, batch 32: two forward, three backward) and the hidden layer's
    sigmoid with its derivative, for one run and ``vmap``-ed over 16, and the epoch's permutation
    of the 354 training rows (``jax.random.permutation`` and fit's), one key and 16 keys; each
    inside a jitted ``lax.scan``, microseconds per step / per epoch."""
    runs, n_rows, bs = 16, 354, 32
    steps = 60 if quick else 600
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((steps, runs, bs, 13)))
    w = (jnp.asarray(rng.standard_normal((runs, 13, 13))),
         jnp.asarray(rng.standard_normal((runs, 13, 1))))  # fmt: skip

    def products(x: Any, w: Any) -> tuple[Any, ...]:
        W1, W2 = w
        h = x @ W1  # (32, 13)
        z = h @ W2  # (32, 1)
        return h.T @ z, z @ W2.T, x.T @ h  # dW2, dh, dW1 shapes

    def activation(x: Any, w: Any) -> tuple[Any, ...]:
        s = jax.nn.sigmoid(x @ w[0])  # the hidden layer's sigmoid and its derivative
        return (s * (1.0 - s),)

    one = _scan_us(products, x[:, 0], jax.tree.map(lambda a: a[0], w), repeats)
    many = _scan_us(jax.vmap(products), x, w, repeats)
    a_one = _scan_us(activation, x[:, 0], jax.tree.map(lambda a: a[0], w), repeats)
    a_many = _scan_us(jax.vmap(activation), x, w, repeats)
    epochs = 5 if quick else 50
    keys = jax.random.split(jax.random.key(0), (epochs, runs))

    out: dict[str, Any] = {
        "runs": runs,
        "products_us_per_step": {"one": one, "many": many, "ratio": many / one},
        # in the 16-run Boston program of time_many: 50 epochs of 12 steps
        "products_ms_in_the_program": many * 600 / 1e3,
        # x @ W1 then sigmoid and its derivative: the float64 exp grows with the elements
        "activation_us_per_step": {"one": a_one, "many": a_many, "ratio": a_many / a_one},
    }
    # jax's own and fit's (the same permutation, one packed 64-bit sort key)
    for label, draw in (("jax", jax.random.permutation), ("fit", shuffle.permutation)):

        def perm(k: Any, _: Any, draw: Callable[[Any, int], Any] = draw) -> Any:
            return draw(k, n_rows)

        p_one = _scan_us(perm, keys[:, 0], jnp.zeros(()), repeats)
        p_many = _scan_us(jax.vmap(perm, in_axes=(0, None)), keys, jnp.zeros(()), repeats)
        out[f"permutation_{label}_us_per_epoch"] = {
            "one": p_one,
            "many": p_many,
            "ratio": p_many / p_one,
        }
        out[f"permutations_{label}_ms_in_the_program"] = p_many * 50 / 1e3
        # the MLP's epoch: 60,000 rows, two sorts
        big = (1200 if quick else 60000, 3 if quick else 10)
        out[f"permutation_{label}_{big[0]}_us"] = _scan_us(
            lambda k, _, draw=draw, m=big[0]: draw(k, m), keys[: big[1], 0], jnp.zeros(()), repeats
        )
    return out


def time_many(repeats: int, quick: bool) -> dict[str, Any]:
    """``fit_many`` of N seeds against ``fit`` of one, alternating, medians: 16 seeds of the
    boston workload (50 epochs, evaluation every 10) and 10 seeds of the MLP's epoch."""
    from jaxscratch.data import boston_book_data

    Xtr, Xte, ytr, yte = boston_book_data()
    cases = {}
    b_net = core.serial(layers.dense(13, "sigmoid"), layers.dense(1))
    cases["boston_16"] = _many_pair(
        b_net, losses.mean_squared_error, optimizers.sgd(), (13,), Xtr, ytr, 16,
        epochs=5 if quick else 50, batch_size=32, lr=0.01, eval_data=(Xte, yte), eval_every=10,
    )  # fmt: skip
    n = 1200 if quick else 60000
    Xm, Ym = _classification_data(n, (784,), 0)
    f32 = jnp.float32
    m_net = core.serial(layers.dense(89, "tanh", dtype=f32), layers.dense(10, dtype=f32))
    cases["mlp_10"] = _many_pair(m_net, losses.softmax_cross_entropy,
                                 optimizers.sgd_momentum(0.9), (784,), Xm, Ym, 10, epochs=1,
                                 batch_size=60, lr=0.01)  # fmt: skip
    out: dict[str, Any] = {}
    for name, (one, many) in cases.items():
        one(), many()  # compile both
        t_one, t_many = [], []
        for _ in range(repeats):
            for fn, ts in ((one, t_one), (many, t_many)):
                time.sleep(0.02 if quick else 0.25)
                t = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t)
        med_one, med_many = statistics.median(t_one), statistics.median(t_many)
        runs = int(name.split("_")[1])
        out[name] = {"runs": runs, "one_s": med_one, "many_s": med_many,
                     "ratio": med_many / med_one, "one_times_s": t_one, "many_times_s": t_many}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny shapes, 2 repeats: a smoke test")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5; quick 2)")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset")
    p.add_argument("--ch3", type=int, default=0, metavar="N",
                   help="also time `python experiments/ch3_boston.py` N times")  # fmt: skip
    p.add_argument("--many", action="store_true",
                   help="also time fit_many (16 Boston seeds, 10 MLP seeds) against one fit")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("results/benchmarks"), help="output directory")
    args = p.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    names = [s.strip() for s in args.workloads.split(",") if s.strip()]
    unknown = [s for s in names if s not in BUILDERS]
    if unknown:
        p.error(f"unknown workloads {unknown}; choose from {list(BUILDERS)}")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    results: dict[str, Any] = {
        "machine": machine_info(),
        "quick": args.quick,
        "repeats": repeats,
        "command": "python experiments/benchmarks.py " + " ".join(argv or sys.argv[1:]),
        "workloads": {},
    }
    for name in names:
        log(f"{name}: building")
        w = BUILDERS[name](args.quick)
        results["workloads"][name] = run_workload(w, repeats, args.quick, log)
    if args.many:
        log("many: fit_many of N seeds against one fit")
        results["many"] = time_many(repeats, args.quick)
        results["many_parts"] = time_many_parts(repeats, args.quick)
    if args.ch3:
        log("ch3: timing python experiments/ch3_boston.py")
        results["ch3"] = time_ch3(args.ch3)
    results["machine"]["load_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    # the process peak: the largest high-water mark seen (the per-implementation resets lower
    # what getrusage reports afterwards)
    results["machine"]["peak_rss_process_mb"] = max([_maxrss_mb(), *_PEAKS])
    results["goals"] = goals(results)
    results["total_s"] = time.perf_counter() - t0
    table = markdown(results)
    print(table)
    print("goals:", json.dumps(results["goals"], indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks.md").write_text(table)
    write_json_atomic(args.out / "results.json", results)
    print(f"wrote {args.out / 'results.json'} and {args.out / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
