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
    is nothing to plot.
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
            ax1.plot(epochs, [np.nan if y is None else y for y in ys], style, ms=3, label=key)
    losses = [r.get(k) for r in records for k in ("train_loss", "eval_loss")]
    values: list[float] = [v for v in losses if v is not None and math.isfinite(v)]
    if values and min(values) > 0 and max(values) < 1e100:  # a diverging run: linear scale
        ax1.set_yscale("log")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax1.grid(alpha=0.3)
    metric_keys = [k for k in ("accuracy", "mae", "rmse") if k in records[-1]]
    for k in metric_keys:
        ax2.plot(epochs, [r.get(k, np.nan) for r in records], "o-", ms=3, label=k)
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
