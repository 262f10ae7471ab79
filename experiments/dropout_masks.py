"""Hash vs threefry dropout masks: the mask statistics, and one ch.4 row trained with each.

The masks (:func:`jaxscratch.ops.dropout.keep_mask`) at the book's layer shapes, over many keys:
the kept fraction, the variance of the kept count per sample and per unit against the binomial
variance, and the correlation of neighbouring samples and units. Then (with MNIST) one chapter 4
row with dropout trained for ``--seeds`` seeds with each mask (``fit_many``, the same seeds,
everything else equal), the two means compared by their standard error.

Usage:
    python experiments/dropout_masks.py --data-dir /work/shared/data/mnist --seeds 20
    python experiments/dropout_masks.py --no-mnist          # the mask statistics only
Writes results/dropout_masks/results.json (``--out DIR``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxscratch import data as D
from jaxscratch.fileio import write_json_atomic
from jaxscratch.ops.dropout import MASKS, keep_mask

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

SHAPES = ((60, 89), (60, 178), (60, 46))  # the ch.4 hidden layers, batch 60


def mask_statistics(n_keys: int = 4000, keep: float = 0.8) -> list[dict[str, Any]]:
    """Per shape and mask: kept fraction, per-sample and per-unit count variance (and their
    binomial values), correlation of the same unit in consecutive samples and of neighbours."""
    keys = jax.random.split(jax.random.key(0), n_keys)
    out = []
    for shape in SHAPES:
        for mask in MASKS:
            draw = jax.vmap(lambda k, mask=mask, shape=shape: keep_mask(k, keep, shape, mask))
            m = np.asarray(draw(keys), np.float64)  # (keys, batch, units)
            var = keep * (1 - keep)
            out.append(
                {
                    "shape": list(shape),
                    "mask": mask,
                    "kept": float(m.mean()),
                    "per_sample_var": float(m.sum(2).var()),
                    "per_sample_var_binomial": shape[1] * var,
                    "per_unit_var": float(m.sum(1).var()),
                    "per_unit_var_binomial": shape[0] * var,
                    "corr_next_sample": float(
                        np.corrcoef(m[:, :-1].ravel(), m[:, 1:].ravel())[0, 1]
                    ),
                    "corr_next_unit": float(
                        np.corrcoef(m[:, :, :-1].ravel(), m[:, :, 1:].ravel())[0, 1]
                    ),
                }
            )
    return out


def train_both(data_dir: str | None, seeds: int, row_key: str) -> dict[str, Any]:
    import ch4_extensions as ch4

    ds = D.book_preprocess(D.load_mnist("mnist", data_dir, download=False))
    row = next(r for r in ch4.ROWS if r.key == row_key)
    acc = {}
    for mask in MASKS:
        r = ch4.train_row_seeds(row, ds, 50, ch4.BOOK_SEED, seeds, 10, print, dropout_mask=mask)
        acc[mask] = np.asarray(r["accuracy_per_seed"])
    a, b = acc["threefry"], acc["hash"]
    se = float(np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size))
    diff = float(b.mean() - a.mean())
    return {
        "row": row_key,
        "seeds": seeds,
        "accuracy_per_seed": {k: v.tolist() for k, v in acc.items()},
        "mean": {k: float(v.mean()) for k, v in acc.items()},
        "std": {k: float(v.std(ddof=1)) for k, v in acc.items()},
        "hash_minus_threefry": diff,
        "standard_error": se,
        "z": diff / se,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--no-mnist", action="store_true")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--row", default="dropout", choices=["dropout", "deep"])
    ap.add_argument("--out", default="results/dropout_masks")
    args = ap.parse_args(argv)
    if args.seeds < 2:
        ap.error("--seeds must be at least 2")
    t0 = time.perf_counter()
    stats = mask_statistics()
    print("mask statistics, keep 0.8, 4000 keys per shape:")
    print(f"{'shape':>10s} {'mask':>9s} {'kept':>8s} {'var/sample':>16s} {'var/unit':>14s} "
          f"{'corr next sample':>17s} {'corr next unit':>15s}")  # fmt: skip
    for s in stats:
        print(f"{str(tuple(s['shape'])):>10s} {s['mask']:>9s} {s['kept']:8.5f} "
              f"{s['per_sample_var']:7.3f} ({s['per_sample_var_binomial']:6.3f}) "
              f"{s['per_unit_var']:6.3f} ({s['per_unit_var_binomial']:5.3f}) "
              f"{s['corr_next_sample']:17.5f} {s['corr_next_unit']:15.5f}")  # fmt: skip
    result: dict[str, Any] = {"mask_statistics": stats}
    if not args.no_mnist:
        ab = train_both(args.data_dir, args.seeds, args.row)
        result["training"] = ab
        print(f"\nch.4 row {args.row!r}, {args.seeds} seeds each: threefry "
              f"{ab['mean']['threefry']:.3f} ± {ab['std']['threefry']:.3f}%, hash "
              f"{ab['mean']['hash']:.3f} ± {ab['std']['hash']:.3f}%; hash - threefry "
              f"{ab['hash_minus_threefry']:+.3f} points, {ab['z']:+.2f} standard errors")  # fmt: skip
    result["total_seconds"] = time.perf_counter() - t0
    write_json_atomic(Path(args.out) / "results.json", result)
    print(f"wrote {args.out}/results.json")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except FileNotFoundError as exc:  # the data set is not on this machine: no traceback
        print(f"dropout_masks.py: {exc}", file=sys.stderr)
        sys.exit(2)
