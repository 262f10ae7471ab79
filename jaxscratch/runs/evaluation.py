"""``jaxscratch evaluate``: the loss and metrics of a run's saved params on a data set.

The checkpoint is loaded for its params alone (no optimizer template), through
:func:`jaxscratch.runs.loader.load_state`; the metrics are :mod:`jaxscratch.train.metrics`'s.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from jaxscratch.runs import config as cfgmod
from jaxscratch.runs.checkpoint import manifest_epoch
from jaxscratch.runs.datasets import DATA_SETS, load_eval_file
from jaxscratch.runs.loader import load_state, resolve_checkpoint, run_config, x64
from jaxscratch.runs.progress import fmt
from jaxscratch.runs.rundir import DATA_FILE, RunError, read_json
from jaxscratch.runs.schema import ConfigError, check_table
from jaxscratch.train.loop import predict

NAMED_DATA = ("boston", "mnist", "fashion-mnist")


def _is_file(data: str) -> bool:
    return data.endswith(".csv") or data.endswith(".npz") or os.sep in data


def _file_arrays(cfg: dict[str, Any], data: str, stats: dict[str, Any]) -> tuple:
    if not Path(data).is_file():
        raise RunError(f"evaluate: --data {data}: no such file", 2)
    try:
        X, y = load_eval_file(cfg, data, stats)
    except (ValueError, OSError) as e:
        raise RunError(f"data error: {e}", 2) from None
    return X, y, f"{data} (all {X.shape[0]} rows)"


def _named_config(cfg: dict[str, Any], data: str) -> dict[str, Any]:
    """The config with its ``[data]`` table switched to the named data set ``data``."""
    if data not in NAMED_DATA:
        raise RunError(
            f"evaluate: --data {data!r} is neither a .csv/.npz file nor one of "
            + ", ".join(map(repr, NAMED_DATA)),
            2,
        )
    same = data == cfg["data"]["name"]
    fields = DATA_SETS[data].fields
    keep = {
        k: v
        for k, v in cfg["data"].items()
        if k in fields and (same or k not in ("data_dir", "path"))
    }
    keep["name"] = data
    try:
        return {**cfg, "data": check_table("data", keep, fields)}
    except ConfigError as e:
        raise RunError(f"evaluate: {e}", 2) from None


def eval_arrays(
    cfg: dict[str, Any], data: str | None, split: str, stats: dict[str, Any]
) -> tuple[Any, Any, str]:
    """``(X, y, description)``: the run's own data set (its ``split``), a named one, or a file."""
    if split not in ("test", "train"):
        raise RunError(f"evaluate: --split must be 'test' or 'train', got {split!r}", 2)
    if data is not None and _is_file(data):
        return _file_arrays(cfg, data, stats)
    if data is not None:
        cfg = _named_config(cfg, data)
    try:
        ds = cfgmod.load_data(cfg)
    except (ValueError, OSError) as e:
        raise RunError(f"data error: {e}", 2) from None
    X, y = (ds.X_test, ds.y_test) if split == "test" else (ds.X_train, ds.y_train)
    return X, y, f"{cfg['data']['name']} {split} split ({X.shape[0]} rows)"


def score(model: cfgmod.Model, params: Any, X: Any, y: Any, task: str) -> dict[str, float]:
    """``{"eval_loss": ..., metric: ...}`` of ``params`` on ``(X, y)``."""
    Xd, yd = jnp.asarray(X), jnp.asarray(y)
    pred = predict(model.net, params, Xd, batch_size=10_000)
    try:
        result = {"eval_loss": float(model.loss.forward(pred, yd)[0])}
        for k, f in cfgmod.metric_fns(task).items():
            result[k] = float(f(pred, yd))
    except ValueError as e:
        raise RunError(f"evaluate: the data do not fit the model: {e}", 2) from None
    return result


def evaluate(
    run_dir: str | Path,
    *,
    data: str | None = None,
    split: str = "test",
    checkpoint: str | Path = "final",
) -> dict[str, Any]:
    """Loss and metrics of a run's checkpoint (``final``, ``best``, ``latest`` or a manifest).

    ``data``: ``None`` (the run's own data set, ``split`` "test" or "train"), a data set name
    (``boston``, ``mnist``, ``fashion-mnist``: its ``split``), or a .csv/.npz file laid out like the
    run's data (all rows, preprocessed with the run's saved constants). Returns a dict with
    ``eval_loss``, the metrics, ``rows``, ``data``, ``epoch`` (the checkpoint's),
    ``params_epoch`` (whose params it holds) and ``checkpoint``. A ``seeds = N`` run: every
    seed's numbers (``per_seed``) and their mean (the top-level keys) and ``std`` over the seeds
    that did not diverge (:func:`jaxscratch.runs.seeds.evaluate_seeds`).
    """
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    if cfg.get("seeds", 1) > 1:
        from jaxscratch.runs.seeds import evaluate_seeds

        return evaluate_seeds(run_dir, cfg, data, split, checkpoint)
    with x64(cfg):
        stats = read_json(run_dir / DATA_FILE)
        X, y, what = eval_arrays(cfg, data, split, stats)
        manifest = resolve_checkpoint(run_dir, checkpoint)
        model = cfgmod.build_model(cfg)
        state = load_state(manifest, model, cfg, tuple(X.shape[1:]), optimizer=False)
        result: dict[str, Any] = score(
            model, state.params, X, y, stats.get("task") or cfgmod.data_task(cfg)
        )
    result.update(
        rows=int(X.shape[0]),
        data=what,
        epoch=manifest_epoch(manifest),
        params_epoch=int(state.epoch),
        checkpoint=str(manifest),
    )
    return result


def format_evaluation(result: dict[str, Any]) -> str:
    """Two lines: the checkpoint and data, then the loss and metrics (a multi-seed run: the
    mean ± std, then a line per seed)."""
    if "per_seed" in result:
        from jaxscratch.runs.seed_report import format_seed_evaluation

        return format_seed_evaluation(result)
    when = f"epoch {result['epoch']}"
    if result["params_epoch"] != result["epoch"]:
        when += f"; params restored to epoch {result['params_epoch']} by early stopping"
    head = f"checkpoint {result['checkpoint']} ({when}), data: {result['data']}"
    keys = [k for k in ("eval_loss", "accuracy", "mae", "rmse") if k in result]
    return head + "\n" + "  ".join(f"{k} {fmt(result[k])}" for k in keys)
