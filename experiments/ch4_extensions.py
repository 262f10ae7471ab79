"""Chapter 4 (extensions) on MNIST or Fashion-MNIST: the book's progression, one row per step.

Every row trains a 784-89-10 network (tanh hidden layer, batch 60, the book's preprocessing) with
hand-derived gradients and adds one of the chapter's extensions:

1. MSE loss, sigmoid output, SGD lr 0.1          5. + exponential decay 0.2 -> 0.05
2. softmax cross-entropy (linear output)         6. + Glorot init (linear decay 0.15 -> 0.05)
3. + SGD momentum 0.9 (lr 0.1)                   7. + dropout keep 0.8 (Glorot, exponential decay)
4. + linear lr decay 0.15 -> 0.05                8. deeper 178-46-10, tanh, Glorot, dropout 0.8,
                                                    exponential decay, 100 epochs

Settings follow the book's notebook (seed 20190119, 50 epochs, early stopping checked every 10
epochs: if the test loss did not improve, the parameters from the start of that epoch are kept and
training stops). Our RNG is JAX's, so the draws differ from the book's numpy ones. The test loss
and accuracy are also computed after every epoch, for the progress display and the curves.

Usage:
    python experiments/ch4_extensions.py --dataset mnist --data-dir /work/shared/data/mnist
    python experiments/ch4_extensions.py --dataset fashion-mnist --epochs 10 --rows 1,2,3
Options: --epochs N (the 50-epoch rows; the deep row runs 2N), --deep-epochs, --rows, --seed,
--eval-every (early-stopping period), --seeds N (each row as N seeds trained at once with
fit_many; writes results_seeds.json and prints mean ± std), --out DIR (default results/ch4_extensions_<dataset>),
--figures DIR (copy the small eval-loss PNG there for the README).
Writes results.json, eval_loss.png and misclassified.png into the out dir.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxscratch import data as D
from jaxscratch.core import Loss, Op, init_params, serial
from jaxscratch.fileio import write_json_atomic as _write_json_atomic
from jaxscratch.ops.dense import dense
from jaxscratch.ops.dropout import DEFAULT_MASK
from jaxscratch.ops.losses import mean_squared_error, softmax_cross_entropy
from jaxscratch.optim.optimizers import Optimizer, sgd, sgd_momentum
from jaxscratch.optim.schedules import constant, exponential_decay, linear_decay
from jaxscratch.train import book_rule, fit, fit_many, init_many, metrics, predict
from jaxscratch.train.compile_cache import cache_from_env

BOOK_SEED = 20190119
HIDDEN = 89
BATCH = 60


class Row(NamedTuple):
    key: str
    label: str
    book: float  # book-era MNIST accuracy (%), seed 20190119
    rerun: float | None  # the later re-run (seed 190119, sigmoid hidden), where it has the step
    layers: tuple[tuple[int, str], ...]  # hidden (neurons, activation); output is added
    output: str
    loss: str
    init: str
    dropout: float | None
    momentum: float | None
    schedule: tuple  # ("constant", lr) | ("linear"/"exponential", lr, final_lr)
    deep: bool = False


ROWS = [
    Row("mse", "MSE loss, sigmoid output", 72.80, 57.16, ((HIDDEN, "tanh"),), "sigmoid", "mse",
        "normal", None, None, ("constant", 0.1)),
    Row("softmax_ce", "softmax cross-entropy", 90.92, 92.61, ((HIDDEN, "tanh"),), "linear", "ce",
        "normal", None, None, ("constant", 0.1)),
    Row("momentum", "+ momentum 0.9", 95.36, 94.10, ((HIDDEN, "tanh"),), "linear", "ce",
        "normal", None, 0.9, ("constant", 0.1)),
    Row("linear_decay", "+ linear decay 0.15->0.05", 95.98, 94.76, ((HIDDEN, "tanh"),), "linear",
        "ce", "normal", None, 0.9, ("linear", 0.15, 0.05)),
    Row("exp_decay", "+ exponential decay 0.2->0.05", 95.75, 94.81, ((HIDDEN, "tanh"),),
        "linear", "ce", "normal", None, 0.9, ("exponential", 0.2, 0.05)),
    Row("glorot", "+ Glorot init (linear decay)", 96.69, None, ((HIDDEN, "tanh"),), "linear",
        "ce", "glorot", None, 0.9, ("linear", 0.15, 0.05)),
    Row("dropout", "+ dropout 0.8 (exp. decay)", 96.77, None, ((HIDDEN, "tanh"),), "linear",
        "ce", "glorot", 0.8, 0.9, ("exponential", 0.2, 0.05)),
    Row("deep", "deeper 178-46-10 + dropout", 97.34, None, ((178, "tanh"), (46, "tanh")),
        "linear", "ce", "glorot", 0.8, 0.9, ("exponential", 0.2, 0.05), deep=True),
]  # fmt: skip


def build(row: Row, dropout_mask: str = DEFAULT_MASK) -> tuple[Op, Loss, Optimizer]:
    layers = [
        dense(n, act, init=row.init, dropout=row.dropout, dropout_mask=dropout_mask)
        for n, act in row.layers
    ]
    layers.append(dense(10, row.output, init=row.init))
    net = serial(*layers, name=f"ch4[{row.key}]")
    loss = mean_squared_error if row.loss == "mse" else softmax_cross_entropy
    opt = sgd() if row.momentum is None else sgd_momentum(row.momentum)
    return net, loss, opt


def make_schedule(row: Row, epochs: int):
    kind, *vals = row.schedule
    if kind == "constant":
        return constant(vals[0])
    return (linear_decay if kind == "linear" else exponential_decay)(vals[0], vals[1], epochs)


def describe(row: Row, epochs: int) -> dict[str, Any]:
    arch = "-".join(str(n) for n, _ in row.layers) + "-10"
    return {
        "architecture": f"784-{arch}",
        "hidden_activation": row.layers[0][1],
        "output": row.output,
        "loss": "mean_squared_error" if row.loss == "mse" else "softmax_cross_entropy",
        "init": row.init,
        "dropout_keep": row.dropout,
        "optimizer": "sgd" if row.momentum is None else f"sgd_momentum({row.momentum})",
        "lr": make_schedule(row, epochs).describe(),
        "epochs": epochs,
        "batch_size": BATCH,
    }


def train_row(
    row, ds, epochs: int, seed: int, eval_every: int, log, init_transform=None
) -> dict[str, Any]:
    """Train one row with per-epoch evaluation and the book's early stopping (see module doc).

    ``init_transform(params) -> params``, if given, changes the initial params (the errata
    experiment gives Glorot its book form). The result's ``_params`` are the returned params."""
    net, loss, opt = build(row)
    init_key, fit_key = jax.random.split(jax.random.key(seed))
    _, params = init_params(net, init_key, (ds.X_train.shape[1],))
    if init_transform is not None:
        params = init_transform(params)
    sched = make_schedule(row, epochs)
    curve: list[dict[str, float]] = []

    def callback(info: dict[str, Any]) -> None:
        e = info["epoch"]
        curve.append(
            {
                "epoch": e,
                "train_loss": info["train_loss"],
                "eval_loss": info["eval_loss"],
                "accuracy": info["accuracy"],
                "lr": info["lr"],
            }
        )
        log(
            f"  [{row.key}] epoch {e:3d}/{epochs}  lr {info['lr']:.4f}  "
            f"train {info['train_loss']:.4f}  test loss {info['eval_loss']:.4f}  "
            f"acc {100 * info['accuracy']:.2f}%"
        )
        if info["stopped"]:
            kept = info["state"].epoch
            log(f"  [{row.key}] test loss rose at epoch {e}: keeping the model of epoch {kept}")

    t0 = time.perf_counter()
    res = fit(
        net, loss, opt, params, ds.X_train, ds.y_train,
        epochs=epochs, batch_size=BATCH, key=fit_key, lr=sched,
        eval_data=(ds.X_test, ds.y_test), eval_every=1, stopping=book_rule(eval_every),
        metrics={"accuracy": metrics.accuracy}, callback=callback,
    )  # fmt: skip
    final = res.params
    stopped_at = res.history.stopped_epoch if res.history.stopped_early else None
    seconds = time.perf_counter() - t0
    pred = np.asarray(predict(net, final, ds.X_test, batch_size=10000))
    guess = pred.argmax(axis=1)
    acc = 100.0 * float(np.mean(guess == ds.labels_test))
    kept = res.state.epoch
    return {
        "key": row.key,
        "label": row.label,
        "accuracy": acc,
        "book_mnist": row.book,
        "rerun_mnist": row.rerun,
        "settings": describe(row, epochs),
        "epochs_run": len(curve),
        "kept_epoch": kept,
        "stopped_early": stopped_at is not None,
        "seconds": seconds,
        "curve": curve,
        "_pred": guess,
        "_params": final,
    }


def train_row_seeds(
    row, ds, epochs: int, seed: int, n: int, eval_every: int, log, dropout_mask: str = DEFAULT_MASK
) -> dict:
    """The row trained with seeds ``seed .. seed + n - 1`` at once (:func:`jaxscratch.train.fit_many`,
    the book's early-stopping rule applied to each run); accuracy mean, std, min and max."""
    net, loss, opt = build(row, dropout_mask)
    pairs = [jax.random.split(jax.random.key(seed + i)) for i in range(n)]
    init_keys = jnp.stack([p[0] for p in pairs])
    fit_keys = jnp.stack([p[1] for p in pairs])
    t0 = time.perf_counter()
    res = fit_many(
        net, loss, opt, init_many(net, init_keys, (ds.X_train.shape[1],)), ds.X_train,
        ds.y_train, keys=fit_keys, epochs=epochs, batch_size=BATCH, lr=make_schedule(row, epochs),
        eval_data=(ds.X_test, ds.y_test), eval_every=eval_every, stopping="book",
        metrics={"accuracy": metrics.accuracy},
    )  # fmt: skip
    acc = 100.0 * res.history.final_metrics["accuracy"]
    seconds = time.perf_counter() - t0
    log(f"  [{row.key}] {n} seeds in {seconds:.1f} s: {acc.mean():.2f} +- {acc.std(ddof=1):.2f}% "
        f"(min {acc.min():.2f}, max {acc.max():.2f}); stopped at {res.history.stopped_epoch.tolist()}")  # fmt: skip
    return {
        "key": row.key,
        "label": row.label,
        "seeds": list(range(seed, seed + n)),
        "accuracy_per_seed": acc.tolist(),
        "accuracy_mean": float(acc.mean()),
        "accuracy_std": float(acc.std(ddof=1)),
        "stopped_epoch": res.history.stopped_epoch.tolist(),
        "diverged_epoch": res.history.diverged_epoch.tolist(),
        "book_mnist": row.book,
        "settings": describe(row, epochs),
        "seconds": seconds,
    }


def seeds_table(results: list[dict], dataset: str) -> str:
    n = len(results[0]["seeds"])
    lines = [
        f"| step | ours: {dataset} test accuracy, mean ± std over {n} seeds | min - max | "
        "book (MNIST, one seed) |",
        "|---|---|---|---|",
    ]
    for r in results:
        acc = r["accuracy_per_seed"]
        lines.append(f"| {r['label']} | {r['accuracy_mean']:.2f} ± {r['accuracy_std']:.2f}% | "
                     f"{min(acc):.2f} - {max(acc):.2f}% | {r['book_mnist']:.2f}% |")  # fmt: skip
    return "\n".join(lines)


def markdown_table(results: list[dict], dataset: str) -> str:
    book_col = "book (MNIST)" if dataset == "mnist" else "book (MNIST, for reference)"
    lines = [
        f"| step | ours: {dataset} test accuracy | {book_col} | epochs run (kept) | settings |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        s = r["settings"]
        drop = f", dropout {s['dropout_keep']}" if s["dropout_keep"] else ""
        settings = f"{s['architecture']} {s['hidden_activation']}, {s['init']}{drop}, {s['optimizer']}, {s['lr']}"
        stop = f"{r['epochs_run']} ({r['kept_epoch']})"
        lines.append(
            f"| {r['label']} | {r['accuracy']:.2f}% | {r['book_mnist']:.2f}% | {stop} | {settings} |"
        )
    return "\n".join(lines)


def plot_curves(path: Path, results: list[dict], dataset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=80)
    for r in results:
        ep = [c["epoch"] for c in r["curve"]]
        ax.plot(
            ep, [c["eval_loss"] for c in r["curve"]], label=f"{r['label']} ({r['accuracy']:.2f}%)"
        )
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test loss (MSE row: sum of squares / n)")
    ax.set_title(f"Chapter 4 extensions on {dataset}: test loss per epoch")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_misclassified(path: Path, images: np.ndarray, labels: np.ndarray, guess: np.ndarray,
                       title: str, class_names: list[str] | None) -> int:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wrong = np.flatnonzero(guess != labels)[:12]
    fig, axes = plt.subplots(2, 6, figsize=(8, 3.4), dpi=80)
    for ax, i in zip(axes.ravel(), list(wrong) + [None] * (12 - len(wrong)), strict=True):
        ax.axis("off")
        if i is None:
            continue
        ax.imshow(images[i], cmap="gray_r")
        name = (lambda c: class_names[c]) if class_names else str
        ax.set_title(f"#{i}: {name(int(labels[i]))}\nsaid {name(int(guess[i]))}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return int(np.sum(guess != labels))


FASHION_CLASSES = ["T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "boot"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist")
    ap.add_argument("--data-dir", default=None, help="directory with the four IDX files")
    ap.add_argument("--epochs", type=int, default=50, help="epochs of the 89-unit rows (book: 50)")
    ap.add_argument("--deep-epochs", type=int, default=None, help="deep row (default 2x --epochs)")
    ap.add_argument("--eval-every", type=int, default=10, help="early-stopping check period")
    ap.add_argument("--rows", default=None, help="comma-separated row numbers (1-8) or keys")
    ap.add_argument("--seed", type=int, default=BOOK_SEED)
    ap.add_argument("--seeds", type=int, default=None,
                    help="train each row with N seeds at once (fit_many); report mean ± std")  # fmt: skip
    ap.add_argument("--out", default=None)
    ap.add_argument("--figures", default=None, help="copy the eval-loss PNG here (README)")
    args = ap.parse_args(argv)
    cache_from_env()  # the persistent compilation cache (JAXSCRATCH_COMPILE_CACHE=off)
    if args.epochs < 2:
        ap.error("--epochs must be at least 2 (the decay schedules need 2 epochs)")
    deep_epochs = args.deep_epochs or 2 * args.epochs
    rows = ROWS
    if args.rows:
        wanted = [w.strip() for w in args.rows.split(",") if w.strip()]
        rows = [r for i, r in enumerate(ROWS, 1) if str(i) in wanted or r.key in wanted]
        if not rows:
            ap.error(
                f"--rows {args.rows!r} selects nothing; rows are 1-8 or {[r.key for r in ROWS]}"
            )
    out = Path(args.out or f"results/ch4_extensions_{args.dataset.replace('-', '_')}")
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    raw = D.load_mnist(args.dataset, args.data_dir, download=False)
    ds = D.book_preprocess(raw)
    log(f"{args.dataset}: train {ds.X_train.shape}, test {ds.X_test.shape}, "
        f"pixel mean {ds.mean:.4f}, std {ds.std:.4f}; jax {jax.__version__} on "
        f"{jax.devices()[0].platform}, float32")  # fmt: skip

    if args.seeds is not None:
        return run_seeds(args, rows, ds, deep_epochs, out, log)
    results = []
    t_all = time.perf_counter()
    for row in rows:
        epochs = deep_epochs if row.deep else args.epochs
        log(f"row {row.key}: {row.label}, {epochs} epochs")
        r = train_row(row, ds, epochs, args.seed, args.eval_every, log)
        log(f"row {row.key}: {r['accuracy']:.2f}% (book, MNIST: {row.book:.2f}%) "
            f"in {r['seconds']:.1f} s, kept epoch {r['kept_epoch']}")  # fmt: skip
        results.append(r)
    total = time.perf_counter() - t_all

    best = max(results, key=lambda r: r["accuracy"])
    n_wrong = plot_misclassified(
        out / "misclassified.png", raw.test_images, ds.labels_test, best.pop("_pred"),
        f"{args.dataset}: first misclassified test images, row '{best['label']}'",
        FASHION_CLASSES if args.dataset == "fashion-mnist" else None,
    )  # fmt: skip
    for r in results:
        r.pop("_pred", None)
        r.pop("_params", None)
    plot_curves(out / "eval_loss.png", results, args.dataset)

    table = markdown_table(results, args.dataset)
    print()
    print(table)
    print()
    print(f"total training time {total:.0f} s; misclassified by the best row: {n_wrong} / "
          f"{len(ds.labels_test)}")  # fmt: skip

    payload = {
        "experiment": "ch4_extensions",
        "dataset": args.dataset,
        "command": " ".join(
            [Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])
        ),
        "seed": args.seed,
        "epochs": args.epochs,
        "deep_epochs": deep_epochs,
        "eval_every": args.eval_every,
        "dtype": "float32",
        "jax": jax.__version__,
        "book_note": "book figures: MNIST, book-era run (seed 20190119); rerun_mnist: the later "
        "re-run (seed 190119, sigmoid hidden layer) where it has the step",
        "rows": results,
        "total_seconds": total,
        "table_markdown": table,
    }
    _write_json_atomic(out / "results.json", payload)
    if args.figures:
        figs = Path(args.figures)
        figs.mkdir(parents=True, exist_ok=True)
        name = f"ch4_{args.dataset.replace('-', '_')}_eval_loss.png"
        shutil.copyfile(out / "eval_loss.png", figs / name)
        size = (figs / name).stat().st_size
        log(f"copied eval_loss.png to {figs / name} ({size // 1024} KB)")
    log(f"wrote {out / 'results.json'}, {out / 'eval_loss.png'}, {out / 'misclassified.png'}")
    return 0


def run_seeds(args, rows, ds, deep_epochs: int, out: Path, log) -> int:
    """--seeds N: every row as N runs in one program; the table of means and spreads."""
    if args.seeds < 2:
        raise SystemExit("ch4_extensions: --seeds needs at least 2 seeds (a spread of one is 0)")
    results, t_all = [], time.perf_counter()
    for row in rows:
        epochs = deep_epochs if row.deep else args.epochs
        log(f"row {row.key}: {row.label}, {epochs} epochs, {args.seeds} seeds")
        results.append(
            train_row_seeds(row, ds, epochs, args.seed, args.seeds, args.eval_every, log)
        )
    table = seeds_table(results, args.dataset)
    print()
    print(table)
    total = time.perf_counter() - t_all
    print(f"\ntotal training time {total:.0f} s")
    _write_json_atomic(out / "results_seeds.json", {
        "experiment": "ch4_extensions --seeds", "dataset": args.dataset, "seeds": args.seeds,
        "first_seed": args.seed, "epochs": args.epochs, "deep_epochs": deep_epochs,
        "eval_every": args.eval_every, "rows": results, "total_seconds": total,
        "table_markdown": table,
    })  # fmt: skip
    log(f"wrote {out / 'results_seeds.json'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except FileNotFoundError as exc:  # the data set is not on this machine: no traceback
        print(f"ch4_extensions.py: {exc}", file=sys.stderr)
        sys.exit(2)
