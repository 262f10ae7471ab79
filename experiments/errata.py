"""The book's errata, proven: each mistake replayed as a mutant of the correct op, the oracle's
verdict, and what it does to the figure the book printed.

The mutants and their checks are :data:`jaxscratch.book.errata.ERRATA` (float64; the gradient
mistakes through :func:`jaxscratch.oracle.check_op` / ``check_loss``, with a random cotangent and
finite differences, the correct op checked on the same inputs). The effects are measured here:

- ch.2 (Boston, embedded): the book's linear and network runs with the book's numpy draws, with the
  book's gradient and with the corrected one (same draws, same learning rate).
- ch.4 (MNIST): the "Glorot" row trained with the book's init (std squared) and with the correct
  one, same keys; its early stop gives the epoch label; its test logits give the loss value the
  book's softmax cross-entropy would print.
- ch.5 (MNIST): the book's CNN one epoch with the batch-mixed kernel gradient and with the correct
  one, same keys; the unflipped input gradient's effect on the CNN's parameter gradients.
Without MNIST (``--data-dir`` absent or lacking the files) the MNIST effects are reported as not
measured and everything else runs.

Usage:
    python experiments/errata.py --data-dir /work/shared/data/mnist
    python experiments/errata.py                 # no MNIST: findings, ch.2 and computed effects
Options: --dataset mnist|fashion-mnist; --epochs N (ch.4 row, book 50); --batches N (ch.5, book
1000); --no-mnist; --out DIR (default results/errata). Writes DIR/results.json and DIR/errata.md
(the README's table).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxscratch.book import errata as E
from jaxscratch.book import stepwise as sw
from jaxscratch.book import stepwise_train as swt
from jaxscratch.core import init_params, serial
from jaxscratch.data import boston_book_data
from jaxscratch.fileio import atomic_write, write_json_atomic
from jaxscratch.ops.activations import get_activation
from jaxscratch.ops.conv import conv2d, flatten, max_pool2d
from jaxscratch.ops.dense import dense
from jaxscratch.ops.dropout import dropout
from jaxscratch.ops.init import glorot_scale
from jaxscratch.train import TrainingDiverged, predict
from jaxscratch.train.compile_cache import cache_from_env

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

NO_FIGURE = "none: no printed figure uses it"


# ------------------------------------------------------------------------------------ ch.2


def _ch2_scores(model: str, mode: str) -> tuple[float, float]:
    import ch2_fundamentals as ch2  # (turns float64 on, as the ch.2 experiment runs)

    X_train, X_test, y_train, y_test = boston_book_data()
    r = swt.train(
        X_train, y_train, model=model, mode=mode, rng="book", dtype=jnp.float64, **ch2.RUNS[model]
    )
    P = np.asarray(sw.predict_weights(X_test, r.weights))
    return float(np.mean(np.abs(P - y_test))), float(np.sqrt(np.mean((P - y_test) ** 2)))


def _ch2_effect(model: str, fixed_mode: str, fixed_key: str, bug: str, fix: str) -> dict:
    """One ch.2 run (the book's numpy draws and hyperparameters) with the book's gradient and
    with ``fixed_mode``'s, beside the printed figure."""
    import ch2_fundamentals as ch2

    book, fixed = _ch2_scores(model, "book"), _ch2_scores(model, fixed_mode)
    printed = ch2.BOOK[model]
    return {
        "book_figure": {"mae": printed[0], "rmse": printed[1]},
        "with_the_book_gradient": dict(zip(("mae", "rmse"), book, strict=True)),
        fixed_key: dict(zip(("mae", "rmse"), fixed, strict=True)),
        "text": (
            f"MAE/RMSE {printed[0]:.4f}/{printed[1]:.4f} printed; the book's draws give "
            f"{book[0]:.4f}/{book[1]:.4f} with {bug}, {fixed[0]:.4f}/{fixed[1]:.4f} {fix}"
        ),
    }


def effect_ch2() -> dict[str, dict[str, Any]]:
    """The book's two ch.2 runs with and without each quirk."""
    return {
        "ch2_sum_vs_mean": _ch2_effect(
            "linear", "mean", "with_the_printed_loss_gradient", "the sum's gradient",
            "with the printed loss's (same lr)",
        ),
        "ch2_hidden_bias": _ch2_effect(
            "network", "book_unit_bias", "with_the_per_unit_gradient", "the scalar gradient",
            "per unit",
        ),
    }  # fmt: skip


# ------------------------------------------------------------------------------- ch.4 / ch.5


def _book_ce(logits: Any, onehot: Any) -> tuple[float, float]:
    """(correct softmax CE, the book's value with the extra term) of logits (n, k) against
    one-hot targets, in numpy float64 whatever the logits' dtype (p clipped like the book)."""
    z = np.asarray(logits, np.float64)
    y = np.asarray(onehot, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    p = np.clip(np.exp(logp), E.BOOK_EPS, 1 - E.BOOK_EPS)
    n = z.shape[0]
    book = -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)) / n
    return float(-np.sum(y * logp) / n), float(book)


def effect_softmax_uniform(k: int = 10) -> dict[str, Any]:
    """The book's loss value at the untrained network's uniform prediction (k classes)."""
    good, book = _book_ce(np.zeros((1, k)), np.eye(k)[:1])
    expected = math.log(k) + (k - 1) * math.log(k / (k - 1))
    return {"k": k, "correct": good, "book": book, "book_closed_form": expected}


def book_glorot(params: Any) -> Any:
    """The book's Glorot from the correct one: every dense ``W`` (fan_in, fan_out) times
    sqrt(2 / (fan_in + fan_out)), i.e. std 2 / (fan_in + fan_out)."""

    def scale(path, leaf):
        last = path[-1] if path else None
        if getattr(last, "key", None) == "W" and leaf.ndim == 2:
            return leaf * glorot_scale(*leaf.shape)
        return leaf

    return jax.tree_util.tree_map_with_path(scale, params)


def effect_ch4(ds: Any, epochs: int) -> dict[str, Any]:
    """The Glorot row (seed 20190119) with the correct and the book's init; the stop label and the
    book's loss value from the correct run."""
    import ch4_extensions as ch4

    row = next(r for r in ch4.ROWS if r.key == "glorot")
    quiet = lambda msg: None  # noqa: E731
    runs = {}
    for name, transform in (("correct", None), ("book", book_glorot)):
        t0 = time.perf_counter()
        r = ch4.train_row(row, ds, epochs, ch4.BOOK_SEED, 10, quiet, init_transform=transform)
        runs[name] = r
        print(f"  ch.4 glorot row, {name} init: {r['accuracy']:.2f}% after {r['epochs_run']} "
              f"epochs (kept {r['kept_epoch']}), {time.perf_counter() - t0:.1f} s")  # fmt: skip
    good = runs["correct"]
    net, _, _ = ch4.build(row)
    logits = predict(net, good["_params"], jnp.asarray(ds.X_test), batch_size=10000)
    ce, ce_book = _book_ce(logits, ds.y_test)
    out: dict[str, Any] = {
        "glorot_sqrt": {
            "book_figure": row.book,
            "correct_init": good["accuracy"],
            "book_init": runs["book"]["accuracy"],
            "epochs": epochs,
            "text": (
                f"Glorot row, {row.book:.2f}% printed: {good['accuracy']:.2f}% with the right "
                f"init, {runs['book']['accuracy']:.2f}% with the book's (same keys, {epochs} "
                "epochs)"
            ),
        },
        "softmax_ce_trained": {"correct": ce, "book": ce_book},
    }
    if good["stopped_early"]:
        stop = good["epochs_run"]
        label, kept = E.book_stop_label(stop, 10)
        curve = {c["epoch"]: c["eval_loss"] for c in good["curve"]}
        out["stop_label"] = {
            "stopped_at": stop,
            "book_prints_epoch": label,
            "params_of_epoch": kept,
            "printed_loss": curve[label],
            "loss_of_the_params": ce,
            "text": (
                f"the Glorot row stops at epoch {stop}: the book prints 'model from epoch "
                f"{label}' (loss {curve[label]:.4f}) and returns epoch {kept}'s params (loss "
                f"{ce:.4f})"
            ),
        }
    else:
        out["stop_label"] = {"text": f"the Glorot row did not stop early in {epochs} epochs"}
    return out


def mixed_book_cnn() -> Any:
    """The book's CNN (ch5_cnn.book_cnn) with the batch-mixed kernel gradient."""
    return serial(
        serial(
            E.batch_mixed_conv(5, 16), get_activation("tanh"), dropout(0.8), flatten,
            name="conv_layer_book_mixed",
        ),
        dense(10, "linear", init="glorot"),
        name="book_cnn[batch_mixed]",
    )  # fmt: skip


def effect_ch5(data: dict[str, Any], n_batches: int) -> dict[str, Any]:
    """The book's CNN, one epoch, the correct and the batch-mixed kernel gradient, same keys."""
    import ch5_cnn as ch5

    key = jax.random.fold_in(jax.random.key(ch5.BOOK_SEED), 0)
    acc = {}
    for name, net in (("correct", ch5.book_cnn("im2col")), ("book", mixed_book_cnn())):
        try:
            r = ch5.train(name, net, data, lr=0.1, key=key, n_batches=n_batches, mode="scan")
            acc[name] = r["final_test_accuracy"]
        except TrainingDiverged as exc:
            acc[name] = None
            print(f"  ch.5 {name}: diverged: {exc}")
    book_txt = "diverged" if acc["book"] is None else f"{acc['book']:.2f}%"
    return {
        "book_figure": ch5.BOOK_MNIST_ACCURACY,
        "correct_gradient": acc["correct"],
        "book_gradient": acc["book"],
        "batches": n_batches,
        "text": (
            f"CNN, {ch5.BOOK_MNIST_ACCURACY:.2f}% printed: {acc['correct']:.2f}% with the right "
            f"kernel gradient, {book_txt} with the batch-mixed one (same keys, {n_batches} "
            "batches)"
        ),
    }


def effect_conv_input(
    seed: int = 0, n: int = 4, size: int = 28, nets: tuple[str, ...] = ("book_cnn", "two_conv")
) -> dict[str, Any]:
    """Parameter gradients with the unflipped input gradient vs the correct one, on one batch:
    the book's CNN (conv first: its dx is discarded) and a two-conv net (the first conv's
    gradient flows through the second's dx)."""
    kx, kp = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (n, 1, size, size), jnp.float64)

    def one_conv(c):
        return serial(c, get_activation("tanh"), flatten, dense(10, "linear", init="glorot"))

    def two_conv(c):
        return serial(
            conv2d(8, 5, padding="same", init="glorot"), get_activation("tanh"), max_pool2d,
            c, get_activation("tanh"), flatten, dense(10, "linear", init="glorot"),
        )  # fmt: skip

    rel = {}
    for name, build, c_out in (("book_cnn", one_conv, 16), ("two_conv", two_conv, 8)):
        if name not in nets:
            continue
        good_net = build(conv2d(c_out, 5, padding="same", init="glorot"))
        bad_net = build(E.unflipped_conv(5, c_out, init="glorot"))
        _, params = init_params(good_net, kp, x.shape[1:])
        dy = jax.random.normal(jax.random.key(seed + 1), good_net.forward(params, x)[0].shape)

        @jax.jit
        def both(params, x, dy, good_net=good_net, bad_net=bad_net):
            g_good, _ = good_net.backward(good_net.forward(params, x)[1], dy)
            return g_good, bad_net.backward(bad_net.forward(params, x)[1], dy)[0]

        g_good, g_bad = both(params, x, dy.astype(x.dtype))
        diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), g_good, g_bad)
        scale = max(float(jnp.max(jnp.abs(v))) for v in jax.tree.leaves(g_good))
        rel[name] = max(jax.tree.leaves(diff)) / scale
    if set(nets) != {"book_cnn", "two_conv"}:
        return {"max_rel_param_grad_diff": rel}
    return {
        "max_rel_param_grad_diff": rel,
        "text": (
            f"none: the CNN's one conv is its first layer, whose dx is discarded (parameter "
            f"gradients differ by {rel['book_cnn']:.0g}); under a second conv they are off by "
            f"{rel['two_conv']:.0%} of the largest"
        ),
    }


# ------------------------------------------------------------------------------------ main


def _load(dataset: str, data_dir: str | None) -> tuple[Any, Any] | None:
    from jaxscratch import data as D

    try:
        raw = D.load_mnist(dataset, data_dir, download=False)
    except (FileNotFoundError, ValueError) as exc:
        print(f"  MNIST effects not measured: {exc}".splitlines()[0])
        return None
    import ch5_cnn as ch5

    return D.book_preprocess(raw), ch5.load(dataset, data_dir)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| ch. | the book's mistake | book | oracle's verdict | effect on the book's figure |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        verdict = ("caught" if r["caught"] else "**missed**") + f": {r['kind']}"
        if "the ratio is" in r["words"]:  # a scale: say the constant
            verdict += " (" + r["words"][r["words"].index("the ratio is") :] + ")"
        verdict += f" at `{r['where']}`"
        lines.append(
            f"| {r['chapter']} | {r['title']} | `{r['book']}` | {verdict} | {r['effect']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist")
    ap.add_argument("--data-dir", default=None, help="directory with the four IDX files")
    ap.add_argument("--no-mnist", action="store_true", help="skip the MNIST effects")
    ap.add_argument("--epochs", type=int, default=50, help="ch.4 Glorot row epochs (book: 50)")
    ap.add_argument("--batches", type=int, default=1000, help="ch.5 CNN batches (book: 1000)")
    ap.add_argument("--out", default="results/errata")
    args = ap.parse_args(argv)
    if args.epochs < 2 or args.batches < 100:
        ap.error("--epochs must be at least 2 and --batches at least 100")
    cache_from_env()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()

    # the MNIST effects first, in float32 like the ch.4 and ch.5 experiments (the same figures
    # for the correct runs); then float64 for the checks and ch.2
    loaded = None if args.no_mnist else _load(args.dataset, args.data_dir)
    effects: dict[str, Any] = {}
    trained = ""
    if loaded is None:
        missing = "not measured here (needs MNIST: --data-dir)"
        for key in ("glorot_sqrt", "stop_label", "conv_kernel_gradient"):
            effects[key] = {"text": missing}
    else:
        print(f"Effects on the book's MNIST figures ({args.dataset}, float32):")
        ds, data = loaded
        ch4_fx = effect_ch4(ds, args.epochs)
        effects["glorot_sqrt"], effects["stop_label"] = ch4_fx["glorot_sqrt"], ch4_fx["stop_label"]
        effects["conv_kernel_gradient"] = effect_ch5(data, args.batches)
        t = ch4_fx["softmax_ce_trained"]
        trained = f", {t['book']:.4f} for {t['correct']:.4f} on the trained Glorot row"
        effects["softmax_ce_trained"] = t

    jax.config.update("jax_enable_x64", True)
    print("The book's errata as mutants of the correct ops (float64):")
    findings = {}
    for e in E.ERRATA:
        t0 = time.perf_counter()
        findings[e.key] = e.find()
        f = findings[e.key]
        print(f"  {e.key:22s} {'caught' if f.caught else 'MISSED':6s} by {f.checker:26s} "
              f"correct one passes: {f.correct_passes}  ({time.perf_counter() - t0:.1f} s)")  # fmt: skip
    effects.update(
        {
            "relu_mask": {"text": NO_FIGURE + " (the book's runs use sigmoid and tanh)"},
            "gru_update_gate": {"text": NO_FIGURE + " (ch.6 shows loss curves only)"},
            "conv_input_gradient": effect_conv_input(),
            **effect_ch2(),
        }
    )
    uni = effect_softmax_uniform()
    effects["softmax_ce"] = {
        **uni,
        "text": (
            f"loss values only: {uni['book']:.4f} for {uni['correct']:.4f} at a uniform "
            f"output{trained}; the gradient is the right one, so accuracy is unchanged"
        ),
    }

    rows = []
    print()
    for e in E.ERRATA:
        f = findings[e.key]
        row = {
            "key": e.key, "chapter": e.chapter, "title": e.title, "book": e.book,
            "correct": e.correct, **asdict(f), "effect": effects[e.key]["text"],
        }  # fmt: skip
        rows.append(row)
        print(f"[ch.{e.chapter}] {e.title}")
        print(f"  book:    {e.book}")
        print(f"  correct: {e.correct}")
        verdict = "CAUGHT" if f.caught else "MISSED"
        print(f"  oracle:  {verdict} by {f.checker} at {f.where}; the correct one "
              f"{'passes' if f.correct_passes else 'FAILS'} the same check")  # fmt: skip
        print(f"  diagnosis: {f.kind}: {f.words}")
        print(f"  effect:  {row['effect']}")

    all_ok = all(r["caught"] and r["correct_passes"] for r in rows)
    table = markdown(rows)
    atomic_write(out / "errata.md", lambda f: f.write(table), mode="w")
    write_json_atomic(
        out / "results.json",
        {
            "experiment": "errata",
            "command": "python experiments/errata.py " + " ".join(argv or sys.argv[1:]),
            "all_caught_and_correct_passes": all_ok,
            "mnist": loaded is not None,
            "dataset": args.dataset,
            "errata": rows,
            "effects": effects,
            "total_seconds": time.perf_counter() - t_all,
        },
    )
    print(f"\n{sum(r['caught'] for r in rows)}/{len(rows)} caught; every correct op passes: "
          f"{all(r['correct_passes'] for r in rows)}. Wrote {out}/results.json and errata.md")  # fmt: skip
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
