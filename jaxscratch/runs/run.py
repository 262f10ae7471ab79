"""Scripted training runs: the run directory, ``metrics.jsonl``, progress display, plots, summary.

A run directory holds::

    config.toml        the resolved config (every default filled in; paths absolute)
    data.json          preprocessing constants (task, classes, feature mean/std) for evaluate
    metrics.jsonl      one JSON line per evaluation: epoch, lr, train_loss, eval_loss,
                       accuracy or mae/rmse, wall_time (seconds since the run began, across resumes)
    checkpoints/       epoch-NNNNNN.npz + .json manifest (see jaxscratch.runs.checkpoint); epoch 0 is
                       the initial params, then one per evaluation (the last two are kept)
    loss_curves.png    train/eval loss and the eval metrics against the epoch
    summary.json       status, epochs, final and best metrics, the last checkpoint, wall time

:func:`train` runs a resolved config (see :mod:`jaxscratch.runs.config`) from scratch or resumes it from
its last checkpoint. The trainer compiles the epochs between two evaluations into one call, so the
host sees the run at every evaluation: that is when a metrics line is written, a checkpoint saved
and the progress display advanced. Every epoch's shuffle and dropout keys derive from the seed and
the epoch number (``fold_in``), so a resumed run repeats the uninterrupted one bit for bit.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from jaxscratch.runs import checkpoint
from jaxscratch.runs import config as cfgmod
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


class _StopRequested(Exception):
    """Raised from the fit callback to end a run after a checkpoint (``--stop-after``)."""


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------


def write_text(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text`` (temp file, fsync, ``os.replace``)."""
    checkpoint.atomic_write(Path(path), lambda f: f.write(text), mode="w")


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(_jsonable(obj), indent=1) + "\n")


def _jsonable(obj: Any) -> Any:
    """Non-finite floats as None, numpy scalars as Python numbers, so the JSON is strict."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


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

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(_jsonable(record)) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def keep_until(self, epoch: int) -> list[dict[str, Any]]:
        """Drop the records after ``epoch`` (written after the last checkpoint), atomically."""
        records = [r for r in read_metrics(self.path) if r["epoch"] <= epoch]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in records))
        return records


# ------------------------------------------------------------------------------------------------
# Progress display
# ------------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def format_record(record: dict[str, Any], epochs: int) -> str:
    """``epoch  10/50  lr 0.01  train_loss 12.3  eval_loss 20.1  mae 3.1  rmse 4.4  1.2s``."""
    width = len(str(epochs))
    parts = [f"epoch {record['epoch']:>{width}}/{epochs}"]
    for k, v in record.items():
        if k in ("epoch", "wall_time"):
            continue
        parts.append(f"{k} {_fmt(v)}")
    parts.append(f"{record['wall_time']:.1f}s")
    return "  ".join(parts)


class Progress:
    """Progress of a run: a line per metrics record; on a terminal also a bar of epochs below them.

    Not a terminal (a file, a pipe, CI): the plain lines only. On a terminal the bar is redrawn in
    place every ``tick`` seconds by a background thread while the compiled epochs run (the host
    hears from the trainer only at evaluations): it shows the elapsed time and, once one
    evaluation period has been timed, the epoch reached by estimate (``~epoch``), never past the
    next evaluation. ``wall0``: seconds already spent (a resumed run).
    """

    def __init__(
        self,
        stream: TextIO,
        epochs: int,
        start_epoch: int = 0,
        *,
        eval_every: int = 1,
        wall0: float = 0.0,
        width: int = 30,
        tick: float | None = 0.5,
    ):
        self.stream, self.epochs, self.width = stream, epochs, width
        self.eval_every, self.wall0, self.tick = eval_every, wall0, tick
        isatty = getattr(stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.epoch = start_epoch
        self._t0 = time.perf_counter()
        self._t_last = self._t0
        self._sec_per_epoch: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar_shown = False

    def _estimate(self, now: float) -> tuple[int, bool]:
        """(epoch to show, whether it is an estimate)."""
        if self._sec_per_epoch is None or self._sec_per_epoch <= 0:
            return self.epoch, False
        ahead = int((now - self._t_last) / self._sec_per_epoch)
        next_eval = min((self.epoch // self.eval_every + 1) * self.eval_every, self.epochs)
        shown = min(self.epoch + ahead, next_eval - 1)
        return max(shown, self.epoch), shown > self.epoch

    def _bar(self, now: float) -> str:
        epoch, estimated = self._estimate(now)
        done = int(self.width * epoch / self.epochs)
        bar = "#" * done + "-" * (self.width - done)
        mark = "~" if estimated else ""
        wall = self.wall0 + now - self._t0
        return f"[{bar}] {mark}{epoch}/{self.epochs} epochs  {wall:.1f}s"

    def _redraw(self) -> None:
        self.stream.write("\r\x1b[2K" + self._bar(time.perf_counter()))
        self.stream.flush()
        self._bar_shown = True

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            with self._lock:
                self._redraw()

    def start(self) -> None:
        if not self.tty:
            return
        with self._lock:
            self._redraw()
        if self.tick:
            self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
            self._thread.start()

    def update(self, record: dict[str, Any]) -> None:
        now = time.perf_counter()
        with self._lock:
            done = record["epoch"] - self.epoch
            if done > 0 and self._t_last > self._t0:  # the first period includes compilation
                self._sec_per_epoch = (now - self._t_last) / done
            self.epoch, self._t_last = record["epoch"], now
            line = format_record(record, self.epochs)
            if self.tty:
                self.stream.write("\r\x1b[2K" + line + "\n")
                self._redraw()
            else:
                self.stream.write(line + "\n")
                self.stream.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            if self.tty and self._bar_shown:
                self.stream.write("\n")
                self.stream.flush()
                self._bar_shown = False


# ------------------------------------------------------------------------------------------------
# Plots
# ------------------------------------------------------------------------------------------------


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
    values = [r.get(k) for r in records for k in ("train_loss", "eval_loss")]
    values = [v for v in values if v is not None and math.isfinite(v)]
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
        checkpoint.atomic_write(Path(path), lambda f: fig.savefig(f, format="png"))
    return Path(path)


# ------------------------------------------------------------------------------------------------
# Summary
# ------------------------------------------------------------------------------------------------


def format_summary(summary: dict[str, Any]) -> str:
    """A few human-readable lines from a summary dict."""
    s = summary
    status, done, total, wall = s["status"], s["epochs_done"], s["epochs"], s["wall_time"]
    resume = f"; continue with: jaxscratch train --resume {s['run_dir']}"
    if status == "completed":
        head = f"completed {done}/{total} epochs in {wall:.1f} s"
    elif status == "stopped":
        head = f"stopped after epoch {done}/{total} (--stop-after) in {wall:.1f} s{resume}"
    elif status == "diverged":
        d = s.get("diverged", {})
        head = (
            f"diverged at epoch {d.get('epoch')}/{total}, batch {d.get('batch')}: loss "
            f"{d.get('loss')} (after {wall:.1f} s); the last good checkpoint is epoch {done}"
        )
    elif status == "interrupted":
        head = f"interrupted after epoch {done}/{total} ({wall:.1f} s){resume}"
    else:
        head = f"{status} after epoch {done}/{total} ({wall:.1f} s)"
    lines = [f"summary: {head}"]
    if s.get("stopped_early"):
        lines.append(
            f"  early stopping at epoch {s['epochs_done']}: eval loss did not improve; "
            f"params restored to epoch {s['restored_to_epoch']}"
        )
    final = s.get("final")
    if final:
        rest = {k: v for k, v in final.items() if k not in ("epoch", "lr", "wall_time")}
        lines.append(
            f"  final (epoch {final['epoch']}): "
            + "  ".join(f"{k} {_fmt(v)}" for k, v in rest.items())
        )
    if s.get("best_eval_loss") is not None:
        lines.append(f"  best eval_loss {_fmt(s['best_eval_loss'])} at epoch {s['best_epoch']}")
    if s.get("checkpoint"):
        lines.append(f"  checkpoint: {s['checkpoint']} (epoch {s['checkpoint_epoch']})")
    if s.get("plot"):
        lines.append(f"  plot: {s['plot']}")
    lines.append(f"  run dir: {s['run_dir']}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------


def _count_params(params: Any) -> int:
    import jax

    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


def _x64(cfg: dict[str, Any]):
    """The run's precision as a scoped JAX setting (restored afterwards)."""
    import jax

    return jax.enable_x64(cfg["dtype"] == "float64")


def _templates(
    model: cfgmod.Model, cfg: dict[str, Any], in_shape: tuple[int, ...], *, abstract: bool = False
) -> tuple:
    """``(params, opt_state, fit_key)``: the model's initial params and optimizer state from the
    seed, or with ``abstract`` only their shapes and dtypes (``jax.ShapeDtypeStruct`` leaves,
    traced, nothing computed), which is all a checkpoint template needs."""
    import jax

    from jaxscratch.core import init_params

    init_key, fit_key = jax.random.split(jax.random.key(cfg["seed"]))

    def init(key):
        params = init_params(model.net, key, in_shape)[1]
        return params, model.optimizer.init(params)

    params, opt_state = jax.eval_shape(init, init_key) if abstract else init(init_key)
    return params, opt_state, fit_key


def _load_data(cfg: dict[str, Any]) -> cfgmod.Dataset:
    try:
        return cfgmod.load_data(cfg)
    except (ValueError, OSError) as e:
        raise RunError(f"data error: {e}", exit_code=2) from None


def train(
    cfg: dict[str, Any] | None = None,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    out: TextIO | None = None,
) -> dict[str, Any]:
    """Run a resolved config in ``run_dir`` (fresh), or continue the run in ``run_dir`` (``resume``).

    ``stop_after``: end the run after the first evaluation at an epoch >= this (status
    ``"stopped"``, resumable). Prints progress and a summary to ``out``; returns the summary dict
    (also written to ``summary.json``). Raises :class:`RunError` when the run cannot start.
    """
    out = out if out is not None else sys.stdout
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg["name"])
    ckpt_dir = run_dir / CHECKPOINT_DIR
    if resume:
        cfg = _resume_config(run_dir)
    else:
        if run_dir.exists() and any(run_dir.iterdir()):
            raise RunError(
                f"run directory {run_dir} exists and is not empty; continue it with "
                f"`jaxscratch train --resume {run_dir}` or choose another --run-dir",
                exit_code=2,
            )
    with _x64(cfg):
        return _train(cfg, run_dir, ckpt_dir, resume, stop_after, out)


def _resume_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise RunError(f"--resume {run_dir}: no {CONFIG_FILE} there (not a run directory)", 2)
    try:
        return cfgmod.load_config(path)
    except cfgmod.ConfigError as e:
        raise RunError(f"config error: {e}", 2) from None


def _train(
    cfg: dict[str, Any],
    run_dir: Path,
    ckpt_dir: Path,
    resume: bool,
    stop_after: int | None,
    out: TextIO,
) -> dict[str, Any]:
    from jaxscratch.train.loop import TrainingDiverged, fit

    data = _load_data(cfg)
    model = cfgmod.build_model(cfg)
    in_shape = tuple(data.X_train.shape[1:])
    params, opt_state, fit_key = _templates(model, cfg, in_shape, abstract=resume)
    metrics_log = MetricsLog(run_dir / METRICS_FILE)
    epochs = cfg["epochs"]

    start_epoch, best, elapsed0 = 0, math.inf, 0.0
    resumed_from = None
    if resume:
        manifest = checkpoint.latest(ckpt_dir)
        if manifest is None:
            raise RunError(f"--resume {run_dir}: no checkpoint in {ckpt_dir}")
        try:
            loaded = checkpoint.load(manifest, {"params": params, "opt_state": opt_state})
        except checkpoint.CheckpointError as e:
            others = [m.name for m in checkpoint.manifests(ckpt_dir) if m != manifest]
            hint = (
                f"\n(older checkpoints: {', '.join(others)}; delete {manifest.name} to resume from "
                "the one before it)"
                if others
                else ""
            )
            raise RunError(f"cannot resume: {e}{hint}") from None
        meta = loaded.meta
        params, opt_state = loaded.trees["params"], loaded.trees["opt_state"]
        start_epoch = loaded.epoch
        best = meta["best_eval_loss"] if meta.get("best_eval_loss") is not None else math.inf
        elapsed0 = float(meta.get("wall_time", 0.0))
        resumed_from = start_epoch
        records = metrics_log.keep_until(start_epoch)
        if meta.get("finished"):
            out.write(f"run {run_dir} already finished at epoch {start_epoch}; nothing to resume\n")
            summary = _summary(cfg, run_dir, "completed", records, manifest, start_epoch, elapsed0)
            summary.update(stopped_early=meta.get("stopped_early", False))
            summary["restored_to_epoch"] = meta.get("restored_to_epoch")
            return summary
        out.write(
            f"resuming {cfg['name']} from epoch {start_epoch} ({manifest}); "
            f"{epochs - start_epoch} epochs to go\n"
        )
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / CONFIG_FILE, cfgmod.dumps_toml(cfg))
        write_json(run_dir / DATA_FILE, data.stats)
        metrics_log.path.write_text("", encoding="utf-8")
        manifest = checkpoint.save(
            ckpt_dir,
            0,
            {"params": params, "opt_state": opt_state},
            {"best_eval_loss": None, "finished": False, "stopped_early": False, "wall_time": 0.0},
        )
        out.write(
            f"training {cfg['name']}: {len(cfg['layers'])} layers, {_count_params(params)} "
            f"params; {data.description}\nrun dir: {run_dir}\n"
        )

    progress = Progress(out, epochs, start_epoch, eval_every=cfg["eval_every"], wall0=elapsed0)
    t0 = time.perf_counter()
    state: dict[str, Any] = {"manifest": manifest, "epoch": start_epoch}

    def wall() -> float:
        return elapsed0 + time.perf_counter() - t0

    def on_eval(info: dict[str, Any]) -> None:
        epoch = info["epoch"]
        record = {"epoch": epoch, "lr": info["lr"], "train_loss": info["train_loss"]}
        for k in ("eval_loss", "accuracy", "mae", "rmse"):
            if k in info:
                record[k] = info[k]
        record["wall_time"] = round(wall(), 3)
        metrics_log.append(record)
        finished = bool(info["stopped_early"]) or epoch >= epochs
        meta = {
            "best_eval_loss": info["best_eval_loss"]
            if math.isfinite(info["best_eval_loss"])
            else None,
            "finished": finished,
            "stopped_early": bool(info["stopped_early"]),
            "restored_to_epoch": epoch - 1 if info["stopped_early"] else None,
            "wall_time": record["wall_time"],
        }
        state["manifest"] = checkpoint.save(
            ckpt_dir, epoch, {"params": info["params"], "opt_state": info["opt_state"]}, meta
        )
        state["epoch"] = epoch
        state["stopped_early"] = bool(info["stopped_early"])
        progress.update(record)
        if stop_after is not None and epoch >= stop_after and not finished:
            raise _StopRequested

    status, error = "completed", None
    diverged: dict[str, Any] = {}
    progress.start()
    try:
        fit(
            model.net,
            model.loss,
            model.optimizer,
            params,
            data.X_train,
            data.y_train,
            epochs=epochs,
            batch_size=cfg["batch_size"],
            key=fit_key,
            lr=model.schedule,
            eval_data=(data.X_test, data.y_test),
            eval_every=cfg["eval_every"],
            early_stopping=cfg["early_stopping"],
            metrics=cfgmod.metric_fns(data.task),
            opt_state=opt_state,
            start_epoch=start_epoch,
            step_mode=cfg["step_mode"],
            best_eval_loss=best,
            callback=on_eval,
        )
    except _StopRequested:
        status = "stopped"
    except TrainingDiverged as e:
        status = "diverged"
        error = (
            f"training diverged at epoch {e.epoch}, batch {e.batch}: loss {e.loss}; "
            f"kept the last good checkpoint {state['manifest']} (epoch {state['epoch']})"
        )
        diverged = {"epoch": e.epoch, "batch": e.batch, "loss": e.loss}
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        progress.close()
    records = read_metrics(metrics_log.path)
    summary = _summary(cfg, run_dir, status, records, state["manifest"], state["epoch"], wall())
    summary["resumed_from"] = resumed_from
    summary["stopped_early"] = state.get("stopped_early", False)
    summary["restored_to_epoch"] = state["epoch"] - 1 if summary["stopped_early"] else None
    if error:
        summary["error"] = error
        summary["diverged"] = diverged
    try:
        plot = plot_curves(records, run_dir / PLOT_FILE, cfg["name"])
        summary["plot"] = str(plot) if plot is not None else None
    except Exception as e:  # a plot must not lose the run's summary
        summary["plot"] = None
        summary["plot_error"] = f"{type(e).__name__}: {e}"
    write_json(run_dir / SUMMARY_FILE, summary)
    out.write(format_summary(summary) + "\n")
    return summary


def _summary(
    cfg: dict[str, Any],
    run_dir: Path,
    status: str,
    records: list[dict[str, Any]],
    manifest: Path | None,
    ckpt_epoch: int,
    wall_time: float,
) -> dict[str, Any]:
    evals = [r for r in records if r.get("eval_loss") is not None]
    best = min(evals, key=lambda r: r["eval_loss"]) if evals else None
    return {
        "name": cfg["name"],
        "status": status,
        "epochs": cfg["epochs"],
        "epochs_done": ckpt_epoch,
        "final": records[-1] if records else None,
        "best_eval_loss": best["eval_loss"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "checkpoint": str(manifest) if manifest else None,
        "checkpoint_epoch": ckpt_epoch,
        "wall_time": round(wall_time, 3),
        "run_dir": str(run_dir),
    }


# ------------------------------------------------------------------------------------------------
# Evaluation of a saved run
# ------------------------------------------------------------------------------------------------


def evaluate(
    run_dir: str | Path,
    *,
    data: str | None = None,
    split: str = "test",
    checkpoint_path: str | Path | None = None,
) -> dict[str, Any]:
    """Loss and metrics of a run's last (or given) checkpoint.

    ``data``: ``None`` (the run's own data set, ``split`` "test" or "train"), a data set name
    (``boston``, ``mnist``, ``fashion-mnist``: its ``split``), or a .csv/.npz file laid out like the
    run's data (all rows, preprocessed with the run's saved constants). Returns a dict with
    ``eval_loss``, the metrics, ``rows``, ``epoch`` and ``checkpoint``.
    """
    run_dir = Path(run_dir)
    cfg = _resume_config(run_dir)
    with _x64(cfg):
        return _evaluate(cfg, run_dir, data, split, checkpoint_path)


def _evaluate(cfg, run_dir, data, split, checkpoint_path) -> dict[str, Any]:
    import jax.numpy as jnp

    from jaxscratch.train.loop import predict

    if split not in ("test", "train"):
        raise RunError(f"evaluate: --split must be 'test' or 'train', got {split!r}", 2)
    model = cfgmod.build_model(cfg)
    stats_path = run_dir / DATA_FILE
    stats = json.loads(stats_path.read_text(encoding="utf-8")) if stats_path.exists() else {}
    if data is not None and (data.endswith(".csv") or data.endswith(".npz") or os.sep in data):
        if not Path(data).is_file():
            raise RunError(f"evaluate: --data {data}: no such file", 2)
        try:
            X, y = cfgmod.load_eval_file(cfg, data, stats)
        except (ValueError, OSError) as e:
            raise RunError(f"data error: {e}", 2) from None
        what = f"{data} (all {X.shape[0]} rows)"
    else:
        if data is not None:
            if data not in ("boston", "mnist", "fashion-mnist"):
                raise RunError(
                    f"evaluate: --data {data!r} is neither a .csv/.npz file nor one of "
                    "'boston', 'mnist', 'fashion-mnist'",
                    2,
                )
            cfg = dict(cfg)
            same = data == cfg["data"]["name"]
            keep = {
                k: v
                for k, v in cfg["data"].items()
                if k in cfgmod.DATA_SETS[data].fields and (same or k not in ("data_dir", "path"))
            }
            keep["name"] = data
            try:
                cfg["data"] = cfgmod.check_table("data", keep, cfgmod.DATA_SETS[data].fields)
            except cfgmod.ConfigError as e:
                raise RunError(f"evaluate: {e}", 2) from None
        ds = _load_data(cfg)
        X, y = (ds.X_test, ds.y_test) if split == "test" else (ds.X_train, ds.y_train)
        what = f"{cfg['data']['name']} {split} split ({X.shape[0]} rows)"
    in_shape = tuple(X.shape[1:])
    try:
        params, opt_state, _ = _templates(model, cfg, in_shape, abstract=True)
    except (ValueError, TypeError) as e:
        raise RunError(f"evaluate: the data do not fit the model: {e}", 2) from None
    manifest = (
        Path(checkpoint_path) if checkpoint_path else checkpoint.latest(run_dir / CHECKPOINT_DIR)
    )
    if manifest is None or not manifest.exists():
        raise RunError(f"evaluate: no checkpoint in {run_dir / CHECKPOINT_DIR}")
    try:
        loaded = checkpoint.load(manifest, {"params": params, "opt_state": opt_state})
    except checkpoint.CheckpointError as e:
        raise RunError(str(e)) from None
    params = loaded.trees["params"]
    Xd, yd = jnp.asarray(X), jnp.asarray(y)
    pred = predict(model.net, params, Xd, batch_size=10_000)
    try:
        value = float(model.loss.forward(pred, yd)[0])
    except ValueError as e:
        raise RunError(f"evaluate: the data do not fit the model: {e}", 2) from None
    task = stats.get("task") or cfgmod.data_task(cfg)
    result = {"eval_loss": value}
    for k, f in cfgmod.metric_fns(task).items():
        result[k] = float(f(pred, yd))
    restored = loaded.meta.get("restored_to_epoch")
    result.update(
        rows=int(X.shape[0]),
        data=what,
        epoch=loaded.epoch,
        params_epoch=restored if restored is not None else loaded.epoch,
        checkpoint=str(manifest),
    )
    return result


def format_evaluation(result: dict[str, Any]) -> str:
    when = f"epoch {result['epoch']}"
    if result["params_epoch"] != result["epoch"]:
        when += f"; params restored to epoch {result['params_epoch']} by early stopping"
    head = f"checkpoint {result['checkpoint']} ({when}), data: {result['data']}"
    keys = [k for k in ("eval_loss", "accuracy", "mae", "rmse") if k in result]
    return head + "\n" + "  ".join(f"{k} {_fmt(result[k])}" for k in keys)
