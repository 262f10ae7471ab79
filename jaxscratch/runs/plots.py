"""The loss curves of a run as a PNG (matplotlib's Agg canvas, written atomically)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from jaxscratch import fileio


def plot_curves(records: list[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """Train and eval loss (left) and eval metrics (right) against the epoch, as a PNG.

    Uses matplotlib's Agg canvas directly (no global backend state). Returns ``None`` when there
    is nothing to plot. Records of a multi-seed run (with ``per_seed`` values) plot their mean
    with a shaded band from the smallest to the largest seed's value.
    """
    if not records:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in records]
    fig = Figure(figsize=(9, 3.6), dpi=90)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    for key, style in (("train_loss", "o-"), ("eval_loss", "s-")):
        ys = [r.get(key) for r in records]
        if any(y is not None for y in ys):
            line = ax1.plot(epochs, [np.nan if y is None else y for y in ys], style, ms=3,
                            label=key)  # fmt: skip
            _band(ax1, epochs, records, key, line[0].get_color())
    losses = [r.get(k) for r in records for k in ("train_loss", "eval_loss")]
    values: list[float] = [v for v in losses if v is not None and math.isfinite(v)]
    if values and min(values) > 0 and max(values) < 1e100:  # a diverging run: linear scale
        ax1.set_yscale("log")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    if ax1.get_legend_handles_labels()[0]:  # every seed diverged: nothing evaluated to label
        ax1.legend()
    ax1.grid(alpha=0.3)
    metric_keys = [k for k in ("accuracy", "mae", "rmse") if k in records[-1]]
    for k in metric_keys:
        line = ax2.plot(epochs, [r.get(k, np.nan) for r in records], "o-", ms=3, label=k)
        _band(ax2, epochs, records, k, line[0].get_color())
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("eval metric")
    if metric_keys:
        ax2.legend()
    ax2.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    with warnings.catch_warnings():  # huge values of a diverged run make the tickers complain
        warnings.simplefilter("ignore", RuntimeWarning)
        fig.tight_layout()
        fileio.atomic_write(Path(path), lambda f: fig.savefig(f, format="png"))
    return Path(path)


def _band(ax: Any, epochs: list[int], records: list[dict[str, Any]], key: str, color: Any) -> None:
    """Shade min..max of the records' ``per_seed[key]`` values (multi-seed runs only)."""
    rows = [r.get("per_seed", {}).get(key) for r in records]
    if not any(rows):
        return
    values = np.array(
        [[np.nan if v is None else v for v in row] if row else [np.nan] for row in rows], float
    )
    with warnings.catch_warnings():  # an epoch at which no run was evaluated: an all-NaN row
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanmin(values, axis=1), np.nanmax(values, axis=1)
    ax.fill_between(epochs, lo, hi, color=color, alpha=0.2, linewidth=0)
