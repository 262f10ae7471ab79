"""Chapter 3: the book's Boston table with ops, layers, a network, SGD and the jit-compiled trainer.

    python experiments/ch3_boston.py          # JAX keys, float32: ours next to the book's figures
    python experiments/ch3_boston.py --book   # float64, the book's numpy draws: the book's table

Three models (linear; 13 sigmoid + linear; 13, 13 sigmoid + linear), SGD lr 0.01, 50 epochs,
batch 32, evaluation every 10 epochs with the book's early stopping (``book_rule(10)``), loss sum((pred - y)^2)/batch.
Writes ``results.json`` and two plots into ``--out`` (default ``results/ch3_boston``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from jaxscratch.fileio import write_json_atomic
from jaxscratch.train.compile_cache import cache_from_env

BOOK = {  # REFERENCE.md, chapter 3: MAE, RMSE on the 152 test rows
    "linear": (3.52, 5.01),
    "one_hidden": (2.60, 4.03),
    "two_hidden": (2.45, 3.83),
}
MODELS = {"linear": (1,), "one_hidden": (13, 1), "two_hidden": (13, 13, 1)}
SEED, LR, EPOCHS, BATCH, EVAL_EVERY = 20190501, 0.01, 50, 32, 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--book", action="store_true", help="float64 and the book's numpy draws")
    p.add_argument("--seed", type=int, default=SEED, help=f"seed (default {SEED}, the book's)")
    p.add_argument("--out", type=Path, default=Path("results/ch3_boston"), help="output directory")
    p.add_argument("--figures", type=Path, default=None, help="also copy the README plot here")
    p.add_argument("--no-plots", action="store_true", help="skip the plots (timing runs)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cache_from_env()  # the persistent compilation cache (JAXSCRATCH_COMPILE_CACHE=off)
    t_start = time.perf_counter()
    import jax

    if args.book:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    from jaxscratch.book import bookmode
    from jaxscratch.core import serial
    from jaxscratch.data import boston_book_data
    from jaxscratch.ops.dense import dense
    from jaxscratch.ops.losses import mean_squared_error
    from jaxscratch.optim.optimizers import sgd
    from jaxscratch.train import book_rule, fit, metrics, predict

    dtype = jnp.float64 if args.book else jnp.float32
    X_train, X_test, y_train, y_test = boston_book_data()
    Xtr, Xte = np.asarray(X_train, dtype), np.asarray(X_test, dtype)
    ytr, yte = np.asarray(y_train, dtype), np.asarray(y_test, dtype)
    optimizer = sgd()
    mode = "book" if args.book else "jax"
    results: dict = {"mode": mode, "dtype": str(np.dtype(dtype)), "seed": args.seed, "models": {}}
    preds = {}
    for i, (name, sizes) in enumerate(MODELS.items()):
        acts = ["sigmoid"] * (len(sizes) - 1) + ["linear"]
        net = serial(*(dense(n, a) for n, a in zip(sizes, acts, strict=True)), name=name)
        if args.book:
            params, orders = bookmode.ch3_init_and_orders(sizes, 13, len(Xtr), EPOCHS, args.seed)
            params = jax.tree.map(jnp.asarray, params)
            kw = {"permutations": orders}
        else:
            key = jax.random.fold_in(jax.random.key(args.seed), i)
            init_key, key = jax.random.split(key)
            _, params = net.init(init_key, (13,))
            params = jax.tree.map(lambda a: a.astype(dtype), params)
            kw = {"key": key}
        result = fit(
            net,
            mean_squared_error,
            optimizer,
            params,
            Xtr,
            ytr,
            epochs=EPOCHS,
            batch_size=BATCH,
            lr=LR,
            eval_data=(Xte, yte),
            eval_every=EVAL_EVERY,
            stopping=book_rule(EVAL_EVERY),
            **kw,
        )
        pred = np.asarray(predict(net, result.params, Xte), np.float64)
        preds[name] = pred
        h = result.history
        results["models"][name] = {
            "mae": metrics.mae(pred, yte),
            "rmse": metrics.rmse(pred, yte),
            "r2": metrics.r2(pred, yte),
            "eval_epochs": h.eval_epochs,
            "eval_losses": h.eval_loss,
            "train_losses": h.train_loss,
            "stopped_early": h.stopped_early,
            "restored_to_epoch": h.restored_to_epoch,
            "book_mae": BOOK[name][0],
            "book_rmse": BOOK[name][1],
        }
    wall = time.perf_counter() - t_start
    results["wall_seconds"] = wall

    print(f"Chapter 3, Boston (test set, 152 rows), mode: {mode} ({np.dtype(dtype)})")
    print(
        f"{'model':<12} {'book MAE':>9} {'ours MAE':>9} {'book RMSE':>10} {'ours RMSE':>10}  eval loss at epochs"
    )
    for name, r in results["models"].items():
        losses = " ".join(
            f"{e}:{v:.3f}" for e, v in zip(r["eval_epochs"], r["eval_losses"], strict=True)
        )
        stop = f" (stopped, restored epoch {r['restored_to_epoch']})" if r["stopped_early"] else ""
        print(
            f"{name:<12} {r['book_mae']:>9.2f} {r['mae']:>9.2f} {r['book_rmse']:>10.2f} "
            f"{r['rmse']:>10.2f}  {losses}{stop}"
        )
    if args.book:
        match = all(
            round(r["mae"], 2) == r["book_mae"] and round(r["rmse"], 2) == r["book_rmse"]
            for r in results["models"].values()
        )
        results["matches_book"] = match
        print(f"matches the book's table to the printed digits: {match}")
    print(f"wall time {wall:.2f} s (including compilation)")

    args.out.mkdir(parents=True, exist_ok=True)
    if not args.no_plots:
        plot(results, preds, yte, args.out, args.figures)
    write_json_atomic(args.out / "results.json", results)
    print(f"wrote {args.out / 'results.json'}")
    return 0 if (not args.book or results["matches_book"]) else 1


def plot(results: dict, preds: dict, y_test, out: Path, figures: Path | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=90)
    for name, r in results["models"].items():
        axes[0].plot(r["eval_epochs"], r["eval_losses"], marker="o", label=name)
        axes[1].scatter(y_test.ravel(), preds[name].ravel(), s=8, alpha=0.6, label=name)
    axes[0].set(xlabel="epoch", ylabel="test loss (sum sq / n)", title="Eval loss", yscale="log")
    lo, hi = float(y_test.min()), float(y_test.max())
    axes[1].plot([lo, hi], [lo, hi], "k--", lw=1)
    axes[1].set(xlabel="actual MEDV", ylabel="predicted", title="Predicted vs actual")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle(f"Chapter 3, Boston ({results['mode']} mode)", fontsize=10)
    fig.tight_layout()
    path = out / "ch3_boston.png"
    fig.savefig(path)
    plt.close(fig)
    if figures is not None:
        figures.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, figures / "ch3_boston.png")


if __name__ == "__main__":
    sys.exit(main())
