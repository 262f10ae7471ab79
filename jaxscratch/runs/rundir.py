"""The run directory: its files, the metrics log, the default location, the run's errors.

A run directory holds::

    config.toml        the resolved config (every default filled in; paths absolute)
    data.json          preprocessing constants (task, classes, feature mean/std) for evaluate
    metrics.jsonl      one JSON line per evaluation: epoch, lr, train_loss, eval_loss,
                       accuracy or mae/rmse, wall_time (seconds since the run began, across resumes)
    checkpoints/       epoch-NNNNNN.npz + .json manifest of the whole TrainState (see
                       jaxscratch.runs.checkpoint): epoch 0, one per evaluation (the latest two and
                       the best evaluated one are kept), and the final one
    loss_curves.png    train/eval loss and the eval metrics against the epoch
    summary.json       status, epochs, the final checkpoint and its metrics, the best epoch

Every file is written atomically (:mod:`jaxscratch.fileio`); the metrics log is appended one
fsync'd line at a time, and a torn last line (a run killed mid-write) is skipped when read.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from jaxscratch import fileio

CONFIG_FILE = "config.toml"
DATA_FILE = "data.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
PLOT_FILE = "loss_curves.png"
CHECKPOINT_DIR = "checkpoints"

#: Exit status of each run outcome (the CLI returns these).
EXIT_CODES = {"completed": 0, "stopped": 0, "diverged": 1, "failed": 1, "interrupted": 130}


class RunError(Exception):
    """A run that cannot start or go on; ``exit_code`` 2 for usage/config/data, 1 otherwise."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def jsonable(obj: Any) -> Any:
    """Non-finite floats as None, numpy scalars as Python numbers, so the JSON is strict."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as strict JSON (:func:`jsonable`), written atomically."""
    fileio.write_json_atomic(path, jsonable(obj))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file of the run directory, or ``{}`` when it does not exist."""
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path} is corrupt (not valid JSON: {e})") from None


def default_run_dir(name: str, root: str | Path = "runs") -> Path:
    """``root/<name>-<YYYYmmdd-HHMMSS>`` (with ``-2``, ``-3``... if that exists already)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{name}-{stamp}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``; a torn last line (a run killed mid-write) is skipped."""
    p = Path(path)
    if not p.exists():
        return []
    records = []
    lines = p.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise RunError(f"{p}: line {i + 1} is not valid JSON") from None
    return records


class MetricsLog:
    """Append-only ``metrics.jsonl``: one JSON object per line, flushed and fsync'd per line."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def start(self) -> None:
        """An empty log (a new run)."""
        fileio.atomic_write(self.path, lambda f: None, mode="w")

    def append(self, record: dict[str, Any]) -> None:
        """Append one record as a line, flushed and fsync'd (a crash loses at most this line)."""
        line = json.dumps(jsonable(record)) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def keep_until(self, epoch: int) -> list[dict[str, Any]]:
        """Drop the records after ``epoch`` (written after the last checkpoint), atomically."""
        records = [r for r in read_metrics(self.path) if r["epoch"] <= epoch]
        text = "".join(json.dumps(r) + "\n" for r in records)
        fileio.atomic_write(self.path, lambda f: f.write(text), mode="w")
        return records
