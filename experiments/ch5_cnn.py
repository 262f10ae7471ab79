"""Chapter 5 (convolution) on MNIST or Fashion-MNIST: the book's CNN and a stronger one, 1 epoch.

book:   Conv2D(16 filters 5x5, "same", no bias, tanh, Glorot, dropout keep 0.8, flatten)
        -> Dense(10, linear, Glorot) -> softmax cross-entropy; SGD momentum 0.9, lr 0.1; batch 60;
        1 epoch. The book printed 90.31% on MNIST.
strong: (our design) Conv(16, 5x5, relu, bias) -> max-pool 2x2 -> Conv(32, 3x3, relu, bias)
        -> max-pool 2x2 -> flatten -> Dense(10); Glorot; same loss, optimizer (lr 0.05), batch and
        single epoch.
bn:     (our design) the strong CNN with batch norm after each conv (conv biases dropped: beta
        takes their place); running statistics for the test evaluations (lr 0.02; 0.2 fails).
residual: (our design) conv 16x5x5 + BN + relu + pool, then a residual block (two 3x3 convs with
        BN, He init) + relu + pool -> Dense(10) (lr --lr-bn).

Every step runs the hand-derived backward passes of :mod:`jaxscratch.ops.conv` (``jax.grad`` is not
used). Training runs through :func:`jaxscratch.train.fit` with ``steps_per_epoch=100``: each of
fit's "epochs" is 100 consecutive batches of the one shuffled pass (``--step-mode scan``: one
``lax.scan`` over them per call; ``step``: one jitted step per batch; ``auto``: fit's rule), after
which the whole test set is evaluated (dropout off, the book's inference scaling by keep 0.8).
``--batches`` is rounded down to a multiple of 100. Our RNG is JAX's (seed 20190402, the book's),
so the draws differ from the book's numpy ones; our Glorot std is sqrt(2 / (fan_in + fan_out))
with conv fans C*k*k, where the 2019 book code used 2 / (C_in + C_out) for conv kernels.

Usage:
    python experiments/ch5_cnn.py --dataset mnist --data-dir /work/shared/data/mnist
    python experiments/ch5_cnn.py --dataset fashion-mnist --batches 200      # quick run
    python experiments/ch5_cnn.py --bench-only                               # speed table only
Options: --models book,strong[,bn,residual]; --method im2col|taps|xla (conv formulation); --step-mode
scan|step; --lr-book, --lr-strong, --lr-bn; --seed; --bench (also time the formulations and modes,
median of --bench-repeats runs); --out DIR (default results/ch5_cnn_<dataset>); --figures DIR
(copy the small PNGs there for the README).
Writes results.json, <dataset>_accuracy.png, <dataset>_filters.png and <dataset>_predictions.png.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxscratch import data as D
from jaxscratch.core import Op, init_params, serial
from jaxscratch.fileio import write_json_atomic as _write_json_atomic
from jaxscratch.ops import conv
from jaxscratch.ops.activations import get_activation
from jaxscratch.ops.batchnorm import batch_norm
from jaxscratch.ops.combinators import residual
from jaxscratch.ops.conv import conv_layer, flatten, max_pool2d
from jaxscratch.ops.dense import dense
from jaxscratch.ops.losses import softmax_cross_entropy
from jaxscratch.optim.optimizers import sgd_momentum
from jaxscratch.train import fit, make_step, metrics, predict
from jaxscratch.train.compile_cache import cache_from_env

BOOK_SEED = 20190402
BOOK_MNIST_ACCURACY = 90.31
BATCH = 60
EVAL_EVERY = 100
FASHION_CLASSES = (
    "T-shirt",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Boot",
)


# ------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------


def book_cnn(method: str = conv.DEFAULT_METHOD) -> Op:
    """The book's CNN: conv 16x5x5 tanh (Glorot, dropout 0.8, flatten) -> dense 10 (logits)."""
    return serial(
        conv_layer(16, 5, "tanh", init="glorot", dropout=0.8, flatten=True, method=method),
        dense(10, "linear", init="glorot"),
        name=f"book_cnn[{method}]",
    )


def strong_cnn(method: str = conv.DEFAULT_METHOD) -> Op:
    """Two conv + relu + 2x2 max-pool blocks (16x5x5, 32x3x3, biases) -> dense 10 (logits)."""
    return serial(
        conv_layer(16, 5, "relu", init="glorot", bias=True, method=method),
        max_pool2d,
        conv_layer(32, 3, "relu", init="glorot", bias=True, method=method),
        max_pool2d,
        flatten,
        dense(10, "linear", init="glorot"),
        name=f"strong_cnn[{method}]",
    )


def bn_cnn(method: str = conv.DEFAULT_METHOD) -> Op:
    """The strong CNN with batch norm after each conv (no conv bias: beta takes its place)."""
    relu = get_activation("relu")
    return serial(
        conv_layer(16, 5, "linear", init="glorot", method=method),
        batch_norm(),
        relu,
        max_pool2d,
        conv_layer(32, 3, "linear", init="glorot", method=method),
        batch_norm(),
        relu,
        max_pool2d,
        flatten,
        dense(10, "linear", init="glorot"),
        name=f"bn_cnn[{method}]",
    )


def residual_cnn(method: str = conv.DEFAULT_METHOD) -> Op:
    """Conv + batch norm, then a residual block of two 3x3 convs with batch norm, pooled twice."""
    relu = get_activation("relu")
    block = serial(
        conv_layer(16, 3, "linear", init="he", method=method),
        batch_norm(),
        relu,
        conv_layer(16, 3, "linear", init="he", method=method),
        batch_norm(),
    )
    return serial(
        conv_layer(16, 5, "linear", init="he", method=method),
        batch_norm(),
        relu,
        max_pool2d,
        residual(block),
        relu,
        max_pool2d,
        flatten,
        dense(10, "linear", init="glorot"),
        name=f"residual_cnn[{method}]",
    )


MODELS = {
    "book": (book_cnn, "Conv(16, 5x5, tanh, dropout 0.8, flatten) -> Dense(10)"),
    "strong": (
        strong_cnn,
        "Conv(16, 5x5, relu) -> pool -> Conv(32, 3x3, relu) -> pool -> Dense(10)",
    ),
    "bn": (
        bn_cnn,
        "Conv(16, 5x5) -> batch norm -> relu -> pool -> Conv(32, 3x3) -> batch norm -> relu "
        "-> pool -> Dense(10)",
    ),
    "residual": (
        residual_cnn,
        "Conv(16, 5x5) -> BN -> relu -> pool -> x + [Conv(16, 3x3) -> BN -> relu -> Conv(16, 3x3) "
        "-> BN](x) -> relu -> pool -> Dense(10)",
    ),
}


# ------------------------------------------------------------------------------------------------
# Training: fit, one "epoch" = 100 batches of the one pass, evaluation in between
# ------------------------------------------------------------------------------------------------


def accuracy(net: Op, params, X, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Test accuracy (%) with dropout off, and the predicted classes."""
    logits = predict(net, params, X, batch_size=1000)
    pred = np.asarray(jnp.argmax(logits, axis=1))
    return 100.0 * float(metrics.accuracy(np.asarray(logits), labels)), pred


def train(
    name: str,
    net: Op,
    data: dict[str, Any],
    *,
    lr: float,
    key: jax.Array,
    n_batches: int,
    mode: str,
) -> dict[str, Any]:
    """One epoch (or ``n_batches``) of batch-60 SGD with momentum 0.9; test accuracy every 100.

    Trains through :func:`jaxscratch.train.fit` with ``steps_per_epoch=100``: fit's "epochs" are
    the consecutive 100-batch stretches of one shuffled pass; after each, the callback scores the
    whole test set (dropout off, in batches of 1000) outside the timed training.
    """
    init_key, fit_key = jax.random.split(key)
    _, params = init_params(net, init_key, data["X_train"].shape[1:])
    steps = min(EVAL_EVERY, n_batches)
    periods = n_batches // steps
    evals: list[dict[str, float]] = []
    period_s: list[float] = []  # training time of each period, the test evaluation excluded
    mark = [time.perf_counter()]
    print(f"[{name}] {net.name}: {periods * steps} batches of {BATCH}, mode {mode}, lr {lr}")

    def on_eval(info: dict[str, Any]) -> None:
        period_s.append(time.perf_counter() - mark[0])
        acc, _ = accuracy(net, info["state"].params, data["X_test"], data["labels_test"])
        done, loss = info["epoch"] * steps, info["train_loss"]
        evals.append({"batches": done, "train_loss": loss, "test_accuracy": acc})
        print(
            f"[{name}] batch {done:5d}: mean train loss {loss:.4f}  test accuracy {acc:6.2f}%",
            flush=True,
        )
        mark[0] = time.perf_counter()

    res = fit(
        net, softmax_cross_entropy, sgd_momentum(0.9), params, data["X_train"], data["y_train"],
        epochs=periods, batch_size=BATCH, steps_per_epoch=steps, key=fit_key, lr=lr,
        eval_every=1, stopping=None, step_mode=mode, callback=on_eval,
    )  # fmt: skip
    final, pred = accuracy(net, res.params, data["X_test"], data["labels_test"])
    steady = float(np.median(period_s[1:])) if len(period_s) > 1 else float(period_s[0])
    compile_s = max(float(period_s[0]) - steady, 0.0)
    train_s = float(np.sum(period_s)) - compile_s
    per_batch_ms = 1000.0 * train_s / (periods * steps)
    print(
        f"[{name}] compile ~{compile_s:.2f} s; training {train_s:.2f} s "
        f"({per_batch_ms:.2f} ms per batch, test evaluations excluded)"
    )
    return {
        "net": net.name,
        "lr": lr,
        "momentum": 0.9,
        "batch_size": BATCH,
        "batches": periods * steps,
        "step_mode": mode,
        "evals": evals,
        "final_test_accuracy": final,
        "compile_s": compile_s,
        "train_s": train_s,
        "ms_per_batch": per_batch_ms,
        "_params": res.params,
        "_pred": pred,
    }


# ------------------------------------------------------------------------------------------------
# Speed: forward, backward and full training step, per batch of 60, both modes
# ------------------------------------------------------------------------------------------------


def _median_ms(fns: dict[str, tuple[Any, tuple, int]], repeats: int) -> dict[str, float]:
    """Run every ``fn(*args)`` (``per`` batches per call) round-robin; median ms per batch."""
    for fn, args, _ in fns.values():
        jax.block_until_ready(fn(*args))  # compile and warm up
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, (fn, args, per) in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[k].append(1000.0 * (time.perf_counter() - t0) / per)
    return {k: float(np.median(v)) for k, v in times.items()}


def _bench_method(method: str, X: jax.Array, Y: jax.Array, k: int, repeats: int) -> dict:
    xs = X[: k * BATCH].reshape(k, BATCH, *X.shape[1:])
    ys = Y[: k * BATCH].reshape(k, BATCH, *Y.shape[1:])
    op = conv.conv2d(16, 5, init="glorot", method=method)
    _, p = op.init(jax.random.key(0), X.shape[1:])
    dys = jax.random.normal(jax.random.key(1), (k, BATCH, 16, 28, 28), X.dtype)
    caches = jax.jit(jax.vmap(lambda x: op.forward(p, x)[1]))(xs)  # k stacked caches

    fwd_jit = jax.jit(lambda p, x: op.forward(p, x)[0])
    bwd_jit = jax.jit(op.backward)

    @jax.jit
    def fwd_scan(p, xs):
        return jax.lax.scan(lambda c, x: (c + jnp.sum(op.forward(p, x)[0]), None), 0.0, xs)[0]

    @jax.jit
    def bwd_scan(caches, dys):
        def body(c, inp):
            g, dx = op.backward(*inp)
            return c + jnp.sum(g["W"]) + jnp.sum(dx), None

        return jax.lax.scan(body, 0.0, (caches, dys))[0]

    net = book_cnn(method)
    _, params = init_params(net, jax.random.key(2), X.shape[1:])
    opt = sgd_momentum(0.9)
    state = opt.init(params)
    step = make_step(net, softmax_cross_entropy, opt)
    keys = jax.vmap(lambda b: jax.random.fold_in(jax.random.key(3), b))(jnp.arange(k))
    step_jit = jax.jit(step)

    @jax.jit
    def step_scan(params, state, xs, ys, keys):
        def body(carry, inp):
            p, s, v = step(*carry, inp[0], inp[1], 0.1, inp[2])
            return (p, s), v

        return jax.lax.scan(body, (params, state), (xs, ys, keys))

    first = lambda tree: jax.tree.map(lambda a: a[0], tree)  # noqa: E731
    return _median_ms(
        {
            "forward/jit": (fwd_jit, (p, xs[0]), 1),
            "forward/scan": (fwd_scan, (p, xs), k),
            "backward/jit": (bwd_jit, (first(caches), dys[0]), 1),
            "backward/scan": (bwd_scan, (caches, dys), k),
            "train_step/jit": (step_jit, (params, state, xs[0], ys[0], 0.1, keys[0]), 1),
            "train_step/scan": (step_scan, (params, state, xs, ys, keys), k),
        },
        repeats,
    )


def bench(X: jax.Array, Y: jax.Array, repeats: int, methods: tuple[str, ...]) -> dict[str, Any]:
    """Per-batch (60) milliseconds of the book's conv layer forward / backward and of a full
    training step of the book CNN, each in jit mode (one dispatch per batch) and scan mode
    (``lax.scan`` over 20 batches in one call), for each conv formulation."""
    load_before = os.getloadavg()[0]
    rows = {}
    for method in methods:
        rows[method] = ms = _bench_method(method, X, Y, 20, repeats)
        print(
            f"[bench] {method:7s} "
            + "  ".join(f"{name} {value:7.2f}" for name, value in ms.items())
            + "  (ms per batch of 60, median)",
            flush=True,
        )
    return {
        "what": "per batch of 60 (1x28x28), book conv layer 16x5x5 'same' and the full book-CNN "
        "training step (forward, loss, hand-derived backward, momentum update); jit = one "
        "dispatch per batch, scan = lax.scan over 20 batches per call; median of "
        f"{repeats} interleaved runs, float32",
        "ms": rows,
        "load_average_1m": [load_before, os.getloadavg()[0]],
        "cpu_count": os.cpu_count(),
    }


# ------------------------------------------------------------------------------------------------
# Plots and output
# ------------------------------------------------------------------------------------------------


def _plots(out: Path, dataset: str, runs: dict[str, dict], data: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    # accuracy every 100 batches
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=90)
    for name, r in runs.items():
        xs = [e["batches"] for e in r["evals"]]
        ys = [e["test_accuracy"] for e in r["evals"]]
        ax.plot(xs, ys, "o-", ms=3, label=f"{name}: {r['final_test_accuracy']:.2f}%")
    if dataset == "mnist":
        ax.axhline(BOOK_MNIST_ACCURACY, color="gray", ls="--", lw=1, label="book (1 epoch): 90.31%")
    ax.set_xlabel("batches of 60")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{dataset}: test accuracy during one epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    files.append(f"{dataset}_accuracy.png")
    fig.savefig(out / files[-1])
    plt.close(fig)

    # learned first-layer filters (16 of 5x5 per model)
    fig, axes = plt.subplots(len(runs), 16, figsize=(9, 0.6 * len(runs) + 0.35), dpi=90)
    axes = np.atleast_2d(axes)
    for row, (name, r) in zip(axes, runs.items(), strict=True):
        Wt = np.asarray(r["_params"][0][0]["W"])[:, 0]  # (16, 5, 5)
        for i, ax in enumerate(row):
            lim = np.abs(Wt[i]).max()
            ax.imshow(Wt[i], cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(f"{dataset}: learned first-layer 5x5 filters (red +, blue -)", fontsize=9)
    fig.tight_layout()
    files.append(f"{dataset}_filters.png")
    fig.savefig(out / files[-1])
    plt.close(fig)

    # a few test predictions: the first 8 images and the first 4 the book CNN got wrong
    first = next(iter(runs.values()))
    labels = data["labels_test"]
    wrong = np.flatnonzero(first["_pred"] != labels)[:4]
    picks = list(range(8)) + [int(i) for i in wrong]
    names = FASHION_CLASSES if dataset == "fashion-mnist" else tuple(str(i) for i in range(10))
    fig, axes = plt.subplots(1, len(picks), figsize=(0.95 * len(picks), 1.75), dpi=90)
    for ax, i in zip(np.atleast_1d(axes), picks, strict=True):
        ax.imshow(data["images_test"][i], cmap="gray_r")
        ax.set_xticks([])
        ax.set_yticks([])
        lines = [f"true {names[labels[i]]}"]
        for name, r in runs.items():
            lines.append(f"{name} {names[r['_pred'][i]]}")
        ok = all(r["_pred"][i] == labels[i] for r in runs.values())
        ax.set_title("\n".join(lines), fontsize=6, color="black" if ok else "red")
    fig.suptitle(
        f"{dataset}: test predictions (first 8, then 4 the first model got wrong; red: a miss)",
        fontsize=8,
    )
    fig.tight_layout()
    files.append(f"{dataset}_predictions.png")
    fig.savefig(out / files[-1])
    plt.close(fig)
    return files


def load(dataset: str, data_dir: str | None) -> dict[str, Any]:
    raw = D.load_mnist(dataset, data_dir)
    book = D.book_preprocess(raw)
    n_tr, n_te = book.X_train.shape[0], book.X_test.shape[0]
    return {
        "X_train": jnp.asarray(book.X_train.reshape(n_tr, 1, 28, 28)),
        "y_train": jnp.asarray(book.y_train),
        "X_test": jnp.asarray(book.X_test.reshape(n_te, 1, 28, 28)),
        "labels_test": np.asarray(book.labels_test),
        "images_test": np.asarray(raw[2]),
        "mean": book.mean,
        "std": book.std,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default="mnist")
    ap.add_argument("--data-dir", default=None, help="directory holding the four IDX files")
    ap.add_argument("--out", default=None, help="output directory")
    ap.add_argument("--figures", default=None, help="also copy the PNGs into this directory")
    ap.add_argument("--batches", type=int, default=None, help="train on only N batches (quick)")
    ap.add_argument("--models", default="book,strong")
    ap.add_argument("--method", choices=conv.METHODS, default=conv.DEFAULT_METHOD)
    ap.add_argument("--step-mode", choices=("scan", "step", "auto"), default="scan")
    ap.add_argument("--lr-book", type=float, default=0.1)
    ap.add_argument("--lr-strong", type=float, default=0.05)
    ap.add_argument("--lr-bn", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=BOOK_SEED)
    ap.add_argument("--bench", action="store_true", help="also time formulations and modes")
    ap.add_argument("--bench-only", action="store_true", help="only the speed table")
    ap.add_argument("--bench-repeats", type=int, default=15)
    args = ap.parse_args(argv)
    cache_from_env()  # the persistent compilation cache (JAXSCRATCH_COMPILE_CACHE=off)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            ap.error(f"unknown model {m!r}; choose from {sorted(MODELS)}")
    out = Path(args.out or f"results/ch5_cnn_{args.dataset}")
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    data = load(args.dataset, args.data_dir)
    n_train = data["X_train"].shape[0]
    print(
        f"{args.dataset}: {n_train} train / {data['X_test'].shape[0]} test images, "
        f"book preprocessing (mean {data['mean']:.4f}, std {data['std']:.4f}), "
        f"loaded in {time.perf_counter() - t0:.1f} s"
    )
    result: dict[str, Any] = {
        "experiment": "ch5_cnn",
        "dataset": args.dataset,
        "dtype": "float32",
        "jax_version": jax.__version__,
        "seed": args.seed,
        "conv_method": args.method,
        "cpu_count": os.cpu_count(),
    }
    if args.bench or args.bench_only:
        result["speed"] = bench(data["X_train"], data["y_train"], args.bench_repeats, conv.METHODS)
    if args.bench_only:
        _write_json_atomic(out / "results.json", result)
        print(f"wrote {out / 'results.json'}")
        return 0

    n_batches = n_train // BATCH if args.batches is None else min(args.batches, n_train // BATCH)
    runs = {}
    key = jax.random.key(args.seed)
    for i, name in enumerate(models):
        build, _ = MODELS[name]
        lr = {"book": args.lr_book, "strong": args.lr_strong}.get(name, args.lr_bn)  # bn, residual
        runs[name] = train(
            name,
            build(args.method),
            data,
            lr=lr,
            key=jax.random.fold_in(key, i),
            n_batches=n_batches,
            mode=args.step_mode,
        )

    print()
    n_batches = next(iter(runs.values()))["batches"] if runs else n_batches
    print(f"Chapter 5 CNNs on {args.dataset}, {n_batches} batches of {BATCH} (1 epoch = 1000)")
    print(f"{'model':<8} {'book':>8} {'jaxscratch':>11}  {'ms/batch':>9}  description")
    for name, r in runs.items():
        book = f"{BOOK_MNIST_ACCURACY:.2f}%" if name == "book" and args.dataset == "mnist" else "-"
        print(
            f"{name:<8} {book:>8} {r['final_test_accuracy']:>10.2f}%  {r['ms_per_batch']:9.2f}  "
            f"{MODELS[name][1]}"
        )
    files = _plots(out, args.dataset, runs, data)
    if args.figures:
        fig_dir = Path(args.figures)
        fig_dir.mkdir(parents=True, exist_ok=True)
        for f in files:
            target = fig_dir / f"ch5_{f.replace('-', '_')}"
            shutil.copyfile(out / f, target)
            print(f"copied {f} to {target} ({target.stat().st_size} bytes)")
    result.update(
        {
            "batches": n_batches,
            "full_epoch": n_batches == n_train // BATCH,
            "book_mnist_accuracy": BOOK_MNIST_ACCURACY if args.dataset == "mnist" else None,
            "models": {
                name: {"description": MODELS[name][1]}
                | {k: v for k, v in r.items() if not k.startswith("_")}
                for name, r in runs.items()
            },
            "plots": files,
            "load_average_1m": os.getloadavg()[0],
        }
    )
    _write_json_atomic(out / "results.json", result)
    print(f"wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except FileNotFoundError as exc:  # the data set is not on this machine: no traceback
        print(f"ch5_cnn.py: {exc}", file=sys.stderr)
        sys.exit(2)
