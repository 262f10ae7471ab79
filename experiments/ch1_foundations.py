"""Chapter 1 (foundations): the book's printed figures, reproduced with jaxscratch.book.calculus.

Inputs replay the book's numpy draws (``np.random.seed(s); X = randn(...); W = randn(...)``, X
first). Every derivative comes from the hand-written chain rule in :mod:`jaxscratch.book.calculus`; a
figure matches when ours, rounded to the digits the book printed, equals the book's value.

Usage: python experiments/ch1_foundations.py [--out DIR] [--figures DIR]
Writes DIR/results.json and DIR/ch1_chain_deriv.png; --figures copies the PNG there too.
Exits with status 1 if any figure does not match.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from jaxscratch.fileio import write_json_atomic
from jaxscratch.train.compile_cache import cache_from_env

PLOT_NAME = "ch1_chain_deriv.png"


def _decimals(book: str) -> int:
    return len(book.split(".")[1]) if "." in book else 0


def _figure(name: str, book: str | list[str], ours) -> dict:
    """One row: book value(s) as printed, ours, and whether ours rounds to the book's digits."""
    books = [book] if isinstance(book, str) else list(book)
    vals = np.ravel(np.asarray(ours, dtype=np.float64)).tolist()
    if len(vals) != len(books):
        raise ValueError(f"{name}: {len(vals)} values for {len(books)} book figures")
    d = _decimals(books[0])
    match = all(round(v, _decimals(b)) == float(b) for v, b in zip(vals, books, strict=True))
    return {
        "name": name,
        "book": [float(b) for b in books] if len(books) > 1 else float(books[0]),
        "ours": vals if len(vals) > 1 else vals[0],
        "decimals": d,
        "match": bool(match),
    }


def _plot(path: Path, C) -> dict:
    """The book's figure: chain [leaky_relu, sigmoid, square] and its derivative on [-3, 3]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fs = [C.leaky_relu, C.sigmoid, C.square]
    x = np.linspace(-3.0, 3.0, 601)
    y = np.asarray(C.chain(fs, x))
    d_hand = np.asarray(C.chain_deriv(fs, x))
    delta = 0.001
    d_num = np.asarray(C.deriv(lambda v: C.chain(fs, v), x, delta=delta))
    off_kink = np.abs(x) > delta  # the central difference straddles leaky_relu's kink at 0
    max_diff = float(np.max(np.abs(d_hand - d_num)[off_kink]))

    fig, ax = plt.subplots(figsize=(6, 4), dpi=90)
    ax.plot(x, y, label="f(x) = square(sigmoid(leaky_relu(x)))")
    ax.plot(x, d_hand, label="df/dx, chain rule (by hand)")
    ax.plot(x[::20], d_num[::20], "o", ms=3, label=f"df/dx, central difference (delta={delta})")
    ax.set_xlabel("x")
    ax.set_title("Chain [leaky_relu, sigmoid, square] and its derivative")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return {
        "file": path.name,
        "chain": [f.name for f in fs],
        "x": [-3.0, 3.0, len(x)],
        "max_abs_diff_hand_vs_central_off_kink": max_diff,
    }


def main(argv: list[str] | None = None) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    from jaxscratch.book import calculus as C

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/ch1_foundations", help="output directory")
    ap.add_argument("--figures", default=None, help="also copy the README plot into this directory")
    args = ap.parse_args(argv)
    cache_from_env()  # the persistent compilation cache (JAXSCRATCH_COMPILE_CACHE=off)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rows = []

    # dS/dX for S = sigmoid(X @ W), X (1, 3), W (3, 1)
    rng = np.random.RandomState(190203)  # same stream as np.random.seed(190203)
    X, W = rng.randn(1, 3), rng.randn(3, 1)
    dSdX = C.matrix_function_backward_1(X, W, C.sigmoid)
    rows.append(
        _figure("seed 190203: dS/dX, S = sigmoid(X @ W)", ["0.0852", "-0.0557", "-0.1121"], dSdX)
    )

    # L = sum(sigmoid(X @ W)), X (3, 3), W (3, 2)
    rng = np.random.RandomState(190204)
    X, W = rng.randn(3, 3), rng.randn(3, 2)
    L = float(C.matrix_function_forward_sum(X, W, C.sigmoid))
    dLdX, _ = C.matrix_function_backward_sum(X, W, C.sigmoid)
    X1 = X.copy()
    X1[0, 0] += 0.001
    fd = (float(C.matrix_function_forward_sum(X1, W, C.sigmoid)) - L) / 0.001
    rows.append(_figure("seed 190204: L = sum(sigmoid(X @ W))", "2.3755", L))
    rows.append(_figure("seed 190204: dL/dX[0, 0] (chain rule)", "0.2489", dLdX[0, 0]))
    rows.append(_figure("seed 190204: dL/dX[0, 0] (X[0,0] + 0.001)", "0.2489", fd))

    fs2 = [C.square, C.sigmoid]
    rows.append(_figure("[square, sigmoid] at 2: f", "0.98201", C.chain_length_2(fs2, 2.0)))
    rows.append(_figure("[square, sigmoid] at 2: df/dx", "0.07065", C.chain_deriv_2(fs2, 2.0)))
    fs3 = [C.leaky_relu, C.square, C.sigmoid]
    rows.append(
        _figure("[leaky_relu, square, sigmoid] at -4: f", "0.65475", C.chain_length_3(fs3, -4.0))
    )
    rows.append(
        _figure(
            "[leaky_relu, square, sigmoid] at -4: df/dx", "-0.07234", C.chain_deriv_3(fs3, -4.0)
        )
    )

    w = max(len(r["name"]) for r in rows)
    print("Chapter 1: book vs jaxscratch (float64, hand-derived derivatives)")
    print(f"{'figure':<{w}}  {'book':>26}  {'jaxscratch':>26}  match")
    for r in rows:
        d = r["decimals"]
        fmt = lambda v, d=d: " ".join(f"{x:.{d}f}" for x in np.ravel(v))
        print(f"{r['name']:<{w}}  {fmt(r['book']):>26}  {fmt(r['ours']):>26}  {r['match']}")

    plot = _plot(out / PLOT_NAME, C)
    print(
        f"plot: {out / PLOT_NAME}; max |chain rule - central difference| off the kink: "
        f"{plot['max_abs_diff_hand_vs_central_off_kink']:.3e}"
    )
    if args.figures:
        fig_dir = Path(args.figures)
        fig_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / PLOT_NAME, fig_dir / PLOT_NAME)
        print(f"copied to {fig_dir / PLOT_NAME} ({(fig_dir / PLOT_NAME).stat().st_size} bytes)")

    all_match = all(r["match"] for r in rows)
    write_json_atomic(
        out / "results.json",
        {
            "experiment": "ch1_foundations",
            "dtype": "float64",
            "jax_version": jax.__version__,
            "inputs": "numpy legacy RNG: np.random.seed(s); X = randn(...); W = randn(...)",
            "figures": rows,
            "all_match": all_match,
            "plot": plot,
        },
    )
    print(f"all figures match: {all_match}; wrote {out / 'results.json'}")
    return 0 if all_match else 1


if __name__ == "__main__":
    sys.exit(main())
