"""Chapter 7: the book's convolutional autoencoder on MNIST, every backward pass by hand.

The book builds it in PyTorch (chapter 7, "PyTorch"); here it is the same architecture on
jaxscratch's ops, trained by :func:`jaxscratch.train.fit` with hand-derived gradients:

    encoder: conv 1->14 5x5 tanh -> conv 14->7 5x5 tanh -> flatten -> dense 7*28*28 -> 28 tanh
    decoder: dense 28 -> 7*28*28 tanh -> unflatten (7, 28, 28) -> conv 7->14 5x5 tanh
             -> conv 14->1 5x5 tanh
    loss: mean squared error against the input, averaged over every pixel (PyTorch's
    ``MSELoss()``, which the book's chapter 7 uses);
    SGD with momentum 0.9, lr 0.01, batch 60; pixels scaled to [-1, 1] (so tanh can reach them).

"same" padding keeps every image 28x28, as the book's ``padding=2``. The book prints no number for
this model, so the table reports ours: the test reconstruction loss after each stretch of
batches, against the loss of predicting the mean training image for every input (the baseline a
useless code would reach). Figures: originals above their reconstructions, and the 28-d codes of
the test set projected on their first two principal components (PCA by hand: the covariance's
eigenvectors), coloured by digit.

Usage:
    python experiments/ch7_autoencoder.py --data-dir /work/shared/data/mnist          # 1 epoch
    python experiments/ch7_autoencoder.py --batches 200                              # quick
Options: --epochs, --batches (cap per epoch, rounded down to a multiple of --eval-every),
--eval-every (batches between test evaluations, default 100), --lr, --seed, --out DIR (default
results/ch7_autoencoder), --figures DIR (copy the PNGs there for the README).
Writes results.json, reconstructions.png and codes.png.
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
from jaxscratch.fileio import write_json_atomic
from jaxscratch.ops.conv import conv_layer
from jaxscratch.ops.dense import dense
from jaxscratch.ops.losses import elementwise_mean_squared_error
from jaxscratch.ops.pool import flatten
from jaxscratch.ops.reshape import unflatten
from jaxscratch.optim.optimizers import sgd_momentum
from jaxscratch.train import fit, predict
from jaxscratch.train.compile_cache import cache_from_env

BOOK_SEED = 20190501
BATCH = 60
CODE = 28


def encoder() -> Op:
    """(batch, 1, 28, 28) in [-1, 1] -> (batch, 28) codes in (-1, 1)."""
    return serial(
        conv_layer(14, 5, "tanh", init="glorot"),
        conv_layer(7, 5, "tanh", init="glorot"),
        flatten,
        dense(CODE, "tanh", init="glorot"),
        name="encoder",
    )


def decoder() -> Op:
    """(batch, 28) codes -> (batch, 1, 28, 28) images in (-1, 1)."""
    return serial(
        dense(7 * 28 * 28, "tanh", init="glorot"),
        unflatten((7, 28, 28)),
        conv_layer(14, 5, "tanh", init="glorot"),
        conv_layer(1, 5, "tanh", init="glorot"),
        name="decoder",
    )


def load(data_dir: str | None) -> dict[str, Any]:
    """MNIST images as (n, 1, 28, 28) float32 in [-1, 1], and the test labels."""
    raw = D.load_mnist("mnist", data_dir)
    scale = lambda a: (a.astype(np.float32) / 127.5 - 1.0)[:, None]  # noqa: E731
    return {
        "X_train": scale(raw.train_images),
        "X_test": scale(raw.test_images),
        "labels_test": np.asarray(raw.test_labels),
    }


def mse(pred: Any, X: Any) -> float:
    """The training loss over a whole set: the mean squared error per pixel."""
    return float(jnp.mean((jnp.asarray(pred) - X) ** 2))


def pca_2d(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(projection (n, 2), explained variance ratio (2,))``: the codes centred and projected on
    the two eigenvectors of their covariance with the largest eigenvalues (float64)."""
    c = np.asarray(codes, np.float64)
    c = c - c.mean(axis=0)
    cov = c.T @ c / (len(c) - 1)
    values, vectors = np.linalg.eigh(cov)  # ascending
    top = vectors[:, ::-1][:, :2]
    return c @ top, values[::-1][:2] / values.sum()


def train(data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Train the autoencoder; the test loss after every ``eval_every`` batches."""
    enc = encoder()
    net = serial(enc, decoder(), name="autoencoder")
    init_key, fit_key = jax.random.split(jax.random.key(args.seed))
    params = init_params(net, init_key, (1, 28, 28))[1]
    X, X_test = data["X_train"], data["X_test"]
    per_epoch = len(X) // BATCH if args.batches is None else min(args.batches, len(X) // BATCH)
    steps = min(args.eval_every, per_epoch)
    periods = args.epochs * (per_epoch // steps)
    evals: list[dict[str, float]] = []
    t0 = [time.perf_counter(), 0.0]

    def on_eval(info: dict[str, Any]) -> None:
        t0[1] += time.perf_counter() - t0[0]
        loss = mse(predict(net, info["state"].params, X_test, batch_size=500), X_test)
        done = info["epoch"] * steps
        evals.append({"batches": done, "train_loss": info["train_loss"], "test_loss": loss})
        print(f"batch {done:6d}: train loss {info['train_loss']:.4f}  test loss {loss:.4f}")
        t0[0] = time.perf_counter()

    print(f"{net.name}: {periods * steps} batches of {BATCH}, SGD momentum 0.9, lr {args.lr}")
    res = fit(
        net, elementwise_mean_squared_error, sgd_momentum(0.9), params, X, X, epochs=periods,
        batch_size=BATCH, steps_per_epoch=steps, key=fit_key, lr=args.lr, eval_every=1,
        stopping=None, callback=on_eval,
    )  # fmt: skip
    return {"net": net, "encoder": enc, "params": res.params, "evals": evals, "train_s": t0[1]}


def _plots(out: Path, data: dict[str, Any], recon: np.ndarray, proj: np.ndarray) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = 10
    fig, axes = plt.subplots(2, n, figsize=(n * 0.9, 2.1))
    for i in range(n):
        for row, img in ((0, data["X_test"][i, 0]), (1, recon[i, 0])):
            axes[row, i].imshow(img, cmap="gray", vmin=-1, vmax=1)
            axes[row, i].axis("off")
    axes[0, 0].set_title("original", fontsize=7, loc="left")
    axes[1, 0].set_title("reconstruction", fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(out / "reconstructions.png", dpi=80)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    sc = ax.scatter(proj[:, 0], proj[:, 1], c=data["labels_test"], cmap="tab10", s=2, alpha=0.6)
    fig.colorbar(sc, ax=ax, ticks=range(10), label="digit")
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title("28-d codes of the MNIST test set (PCA)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "codes.png", dpi=80)
    plt.close(fig)
    return ["reconstructions.png", "codes.png"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="directory holding the four IDX files")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batches", type=int, default=None, help="at most N batches per epoch")
    ap.add_argument("--eval-every", type=int, default=100, help="batches between evaluations")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=BOOK_SEED)
    ap.add_argument("--out", default="results/ch7_autoencoder")
    ap.add_argument("--figures", default=None, help="also copy the PNGs into this directory")
    args = ap.parse_args(argv)
    cache_from_env()  # the persistent compilation cache (JAXSCRATCH_COMPILE_CACHE=off)
    if args.epochs < 1 or args.eval_every < 1 or (args.batches is not None and args.batches < 1):
        ap.error("--epochs, --batches and --eval-every must be positive")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load(args.data_dir)
    X_test = data["X_test"]
    baseline = mse(np.broadcast_to(data["X_train"].mean(axis=0), X_test.shape), X_test)
    print(f"mnist: {len(data['X_train'])} train / {len(X_test)} test images in [-1, 1]")
    run = train(data, args)
    net, params = run["net"], run["params"]
    recon = np.asarray(predict(net, params, X_test, batch_size=500))
    codes = np.asarray(predict(run["encoder"], params[0], X_test, batch_size=500))
    proj, ratio = pca_2d(codes)
    final = run["evals"][-1]["test_loss"]
    print()
    print("Chapter 7 autoencoder on MNIST (test set, mean squared error per pixel)")
    print(f"{'':<34} {'book':>6} {'jaxscratch':>11}")
    print(f"{'mean-image baseline':<34} {'-':>6} {baseline:11.4f}")
    print(f"{'autoencoder, ' + str(run['evals'][-1]['batches']) + ' batches':<34} "
          f"{'-':>6} {final:11.4f}")  # fmt: skip
    print(f"(the book prints no figure for this model; PCA of the codes keeps "
          f"{100 * ratio.sum():.1f}% of their variance in 2-D; training {run['train_s']:.1f} s)")  # fmt: skip
    files = _plots(out, data, recon, proj)
    if args.figures:
        fig_dir = Path(args.figures)
        fig_dir.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(out / f, fig_dir / f"ch7_{f}")
            print(f"copied {f} to {fig_dir / ('ch7_' + f)}")
    write_json_atomic(
        out / "results.json",
        {
            "experiment": "ch7_autoencoder",
            "seed": args.seed,
            "lr": args.lr,
            "batch_size": BATCH,
            "epochs": args.epochs,
            "evals": run["evals"],
            "final_test_loss": final,
            "mean_image_baseline": baseline,
            "pca_explained_variance": ratio.tolist(),
            "train_s": run["train_s"],
            "jax_version": jax.__version__,
            "cpu_count": os.cpu_count(),
            "plots": files,
        },
    )
    print(f"wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except FileNotFoundError as exc:  # the data set is not on this machine: no traceback
        print(f"ch7_autoencoder.py: {exc}", file=sys.stderr)
        sys.exit(2)
