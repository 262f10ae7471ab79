"""Chapter 6 (recurrent networks): character-level language models, RNN vs LSTM vs GRU vs a stack.

Every model trains on the same text with the same budget: the same iterations, batch, sequence
length, optimizer (AdaGrad by default, the book's choice, or SGD), learning rate, gradient clipping
(element-wise to [-2, 2] as in the book, or by global norm) and the same random windows (one data
key for all models). Gradients are the hand-derived BPTT of :mod:`jaxscratch.ops.rnn`; each
``--sample-every`` iterations run as one compiled period of :func:`jaxscratch.train.fit`.

The book prints no numbers for this chapter: it trains on ~100 KB of Shakespeare-like text (62
symbols) and shows that the loss curves fall steadily, the stacked LSTM lowest. Without a download
we use ~100 KB of English prose that ships with Python (``jaxscratch.book.charlm.default_text``) or any
``--text FILE``; the table therefore sets our losses beside two baselines of the same text: the
uniform guess ln(vocabulary) and the unigram entropy (the best loss without context).

Beside the book's models, ``transformer`` (not in the book): a small causal transformer built from
jaxscratch's hand-derived ops (:func:`jaxscratch.book.charlm.transformer_model`: two pre-norm
blocks, 4 heads, width --hidden), trained on the same windows with the same budget.

Usage: python experiments/ch6_rnn.py [--text FILE] [--iters N] [--seq-len T] [--hidden H]
       [--batch B] [--optimizer adagrad|sgd] [--lr LR] [--clip elementwise|global-norm|none]
       [--models rnn,lstm,gru,lstm-lstm,transformer] [--out DIR] [--figures DIR]
Writes DIR/results.json (final smoothed loss per model, samples, settings) and
DIR/ch6_loss_curves.png; --figures copies the PNG there too.
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxscratch.book import charlm
from jaxscratch.fileio import write_json_atomic as _write_json_atomic
from jaxscratch.optim import clipping, optimizers
from jaxscratch.train.compile_cache import cache_from_env

PLOT_NAME = "ch6_loss_curves.png"
BOOK = "book: no printed figures; loss curves fall steadily, LSTM->LSTM lowest (100 KB, 62 symbols)"


def _unigram_entropy(ids: np.ndarray, vocab_size: int) -> float:
    p = np.bincount(ids, minlength=vocab_size) / ids.size
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _optimizer(name: str, clip: str, clip_value: float, max_norm: float) -> optimizers.Optimizer:
    base = {"adagrad": optimizers.adagrad, "sgd": optimizers.sgd}[name]()
    if clip == "elementwise":
        return clipping.clip_elementwise(base, clip_value)
    if clip == "global-norm":
        return clipping.clip_global_norm(base, max_norm)
    return base


def _plot(path: Path, curves: dict[str, np.ndarray], baselines: dict[str, float], title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=80)
    for name, y in curves.items():
        ax.plot(np.arange(1, y.size + 1), y, label=name, linewidth=1.3)
    styles = iter([":", "--"])
    for name, v in baselines.items():
        ax.axhline(v, color="grey", linestyle=next(styles), linewidth=1, label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy per character (nats), smoothed")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--text", default=None, help="UTF-8 text file (default: Python's own docs)")
    ap.add_argument("--max-chars", type=int, default=charlm.DEFAULT_MAX_CHARS)
    ap.add_argument("--iters", type=int, default=3000)
    ap.add_argument("--seq-len", type=int, default=25)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--optimizer", choices=("adagrad", "sgd"), default="adagrad")
    ap.add_argument("--lr", type=float, default=None, help="default: 0.02 AdaGrad, 1.0 SGD")
    ap.add_argument("--clip", choices=("elementwise", "global-norm", "none"), default="elementwise")
    ap.add_argument("--clip-value", type=float, default=2.0, help="element-wise limit (book: 2)")
    ap.add_argument("--max-norm", type=float, default=5.0, help="global-norm limit")
    ap.add_argument("--models", default="rnn,lstm,gru,lstm-lstm,transformer")
    ap.add_argument("--sample-every", type=int, default=100)
    ap.add_argument("--sample-length", type=int, default=200)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument(
        "--weight-scale", type=float, default=None, help="init std (default: Glorot per matrix)"
    )
    ap.add_argument("--smooth", type=int, default=50, help="moving-average window (iterations)")
    ap.add_argument("--seed", type=int, default=20190601)
    ap.add_argument("--out", default="results/ch6_rnn")
    ap.add_argument("--figures", default=None, help="also copy the PNG into this directory")
    args = ap.parse_args(argv)
    cache_from_env()  # the persistent compilation cache (JAXSCRATCH_COMPILE_CACHE=off)
    lr = args.lr if args.lr is not None else {"adagrad": 0.02, "sgd": 1.0}[args.optimizer]
    models = [m.strip() for m in args.models.split(",") if m.strip()]

    t_start = time.perf_counter()
    text = charlm.load_text(args.text, args.max_chars)
    source = args.text if args.text else charlm.default_text_source()
    vocab = charlm.build_vocabulary(text)
    ids = charlm.encode(vocab, text)
    charlm.check_windows("ch6_rnn", ids.size, args.seq_len)
    uniform, unigram = math.log(vocab.size), _unigram_entropy(ids, vocab.size)
    opt = _optimizer(args.optimizer, args.clip, args.clip_value, args.max_norm)
    clip_desc = {
        "elementwise": f"element-wise [-{args.clip_value:g}, {args.clip_value:g}]",
        "global-norm": f"global norm <= {args.max_norm:g}",
        "none": "none",
    }[args.clip]
    print(f"text: {len(text)} characters from {source}; vocabulary {vocab.size} symbols")
    print(
        f"budget per model: {args.iters} iterations, batch {args.batch}, sequence length "
        f"{args.seq_len}, hidden {args.hidden}, {args.optimizer} lr {lr:g}, clipping {clip_desc}"
    )
    print(f"baselines: uniform ln({vocab.size}) = {uniform:.4f}; unigram entropy = {unigram:.4f}")

    key = jax.random.key(args.seed)
    init_key, train_key = jax.random.split(key)
    # prime: the seq_len characters that open the text's first paragraph (after a blank line)
    start = text.find("\n\n") + 2
    start = start if 2 <= start <= len(text) - args.seq_len else 0
    prime = text[start : start + args.seq_len]
    results = {}
    for n, kind in enumerate(models):
        net = charlm.char_model(
            kind, vocab.size, args.hidden, weight_scale=args.weight_scale, dtype=jnp.float32
        )
        _, params = net.init(jax.random.fold_in(init_key, n), (args.seq_len, vocab.size))
        t0 = time.perf_counter()

        def report(info, kind=kind):
            print(f"  {kind:<10} iter {info['iteration']:>6}  mean loss {info['loss']:.4f}")

        res = charlm.train_char_lm(
            net,
            params,
            vocab,
            ids,
            optimizer=opt,
            lr=lr,
            iterations=args.iters,
            batch_size=args.batch,
            seq_len=args.seq_len,
            key=train_key,
            sample_every=args.sample_every,
            sample_length=args.sample_length,
            temperature=args.temperature,
            prime=prime,
            callback=report if args.iters >= 5 * args.sample_every else None,
        )
        seconds = time.perf_counter() - t0
        sm = charlm.smooth(res.losses, args.smooth)
        results[kind] = {
            "params": charlm.count_params(params),
            "final_smoothed_loss": float(sm[-1]),
            "first_loss": float(res.losses[0]),
            "seconds": seconds,
            "smoothed_loss": [round(float(v), 4) for v in sm],
            "samples": [{"iteration": it, "text": s} for it, s in res.samples],
        }
        print(
            f"{kind}: {results[kind]['params']} params, loss {res.losses[0]:.4f} -> "
            f"{sm[-1]:.4f} (smoothed over {args.smooth}), {seconds:.1f} s"
        )

    print()
    print(BOOK)
    header = (
        f"{'model':<12} {'params':>8} {'first loss':>10} {'final (smoothed)':>17} {'time s':>7}"
    )
    print(header)
    for kind, r in results.items():
        print(
            f"{kind:<12} {r['params']:>8} {r['first_loss']:>10.4f} "
            f"{r['final_smoothed_loss']:>17.4f} {r['seconds']:>7.1f}"
        )
    print(f"{'uniform':<12} {'':>8} {'':>10} {uniform:>17.4f}")
    print(f"{'unigram':<12} {'':>8} {'':>10} {unigram:>17.4f}")
    best = min(results, key=lambda k: results[k]["final_smoothed_loss"])
    print(f"lowest final loss: {best}")
    for kind, r in results.items():
        first, last = r["samples"][0], r["samples"][-1]
        print(f"\n--- {kind}: sample at iteration {first['iteration']} (prime {prime!r}) ---")
        print(first["text"])
        print(f"--- {kind}: sample at iteration {last['iteration']} ---")
        print(last["text"])

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    title = (
        f"{len(text) // 1000} KB, {vocab.size} symbols; {args.iters} it, batch {args.batch}, "
        f"T {args.seq_len}, hidden {args.hidden}, {args.optimizer} {lr:g}"
    )
    curves = {k: np.asarray(r["smoothed_loss"]) for k, r in results.items()}
    baselines = {f"uniform ln({vocab.size})": uniform, "unigram entropy": unigram}
    _plot(out / PLOT_NAME, curves, baselines, title)
    if args.figures:
        fig_dir = Path(args.figures)
        fig_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / PLOT_NAME, fig_dir / PLOT_NAME)
        size = (fig_dir / PLOT_NAME).stat().st_size
        print(f"\ncopied {PLOT_NAME} ({size // 1024} KB) to {fig_dir}")
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "figures")} | {
        "lr": lr,
        "text_source": source,
        "text_chars": len(text),
        "vocab_size": vocab.size,
    }
    _write_json_atomic(
        out / "results.json",
        {
            "chapter": 6,
            "book": BOOK,
            "settings": settings,
            "baselines": {"uniform": uniform, "unigram_entropy": unigram},
            "models": results,
            "lowest_final_loss": best,
            "total_seconds": time.perf_counter() - t_start,
            "jax_backend": jax.default_backend(),
        },
    )
    print(
        f"wrote {out / 'results.json'} and {out / PLOT_NAME} ({time.perf_counter() - t_start:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
