"""Load a CLI run back into Python: its config, model, preprocessing and a checkpoint's state.

    net, params, preprocessing = load_run("runs/boston-20260101-120000")  # the final checkpoint
    pred = js.predict(net, params, preprocessing.apply(X_raw))           # raw rows, as trained

    run = load_run(run_dir, "best")          # also: run.config, run.loss, run.state, run.summary

``checkpoint``: ``"final"`` (the one the summary reports; the latest while a run is unfinished),
``"best"`` (the best evaluated epoch, always kept), ``"latest"`` (the newest file) or a
manifest path. A float64 run's arrays are loaded in float64 (under a scoped ``jax.enable_x64``);
to compute with them in float64, enable x64 in your session too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax

from jaxscratch.core import Loss, Op, init_params
from jaxscratch.runs import checkpoint as ckpt
from jaxscratch.runs.config import ConfigError, Model, build_model, load_config
from jaxscratch.runs.datasets import Preprocessing, preprocessing
from jaxscratch.runs.rundir import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    DATA_FILE,
    SUMMARY_FILE,
    RunError,
    read_json,
)
from jaxscratch.train.state import TrainState

CHECKPOINT_CHOICES = ("final", "best", "latest")


@dataclass(frozen=True)
class LoadedRun:
    """A run loaded from its directory: the resolved config, net and loss, the TrainState of the
    chosen checkpoint, the summary (``{}`` for a run that never finished one), the checkpoint's
    manifest path and the run's :class:`~jaxscratch.runs.datasets.Preprocessing`.

    It unpacks as ``net, params, preprocessing = run`` (``params`` is ``state.params``).
    """

    config: dict[str, Any]
    net: Op
    loss: Loss
    state: TrainState
    summary: dict[str, Any]
    checkpoint: Path
    preprocessing: Preprocessing

    @property
    def params(self) -> Any:
        """The checkpoint's params (``state.params``: the restored best under early stopping)."""
        return self.state.params

    def __iter__(self) -> Iterator[Any]:
        """``(net, params, preprocessing)``, so ``net, params, prep = load_run(d)`` works."""
        return iter((self.net, self.params, self.preprocessing))


def run_config(run_dir: Path) -> dict[str, Any]:
    """The resolved config of a run directory; :class:`RunError` (exit 2) if it has none."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise RunError(f"{run_dir}: no {CONFIG_FILE} there (not a run directory)", 2)
    try:
        return load_config(path)
    except ConfigError as e:
        raise RunError(f"config error: {e}", 2) from None


def x64(cfg: dict[str, Any]) -> Any:
    """The run's precision as a scoped JAX setting (restored afterwards)."""
    return jax.enable_x64(cfg["dtype"] == "float64")


def templates(
    model: Model, seed: int, in_shape: tuple[int, ...], optimizer: bool = True
) -> tuple[Any, Any, jax.Array]:
    """``(params, opt_state or None, fit_key)``: shapes and dtypes only (``jax.eval_shape``;
    nothing computed) of the model's initial params and optimizer state, and the run's key."""
    init_key, fit_key = jax.random.split(jax.random.key(seed))

    def init(key):
        params = init_params(model.net, key, in_shape)[1]
        return params, (model.optimizer.init(params) if optimizer else None)

    params, opt_state = jax.eval_shape(init, init_key)
    return params, opt_state, fit_key


def _best_manifest(ckpt_dir: Path, final: Path) -> Path:
    try:
        best = ckpt.read_manifest(final)["meta"].get("best")
    except ckpt.CheckpointError as e:
        raise RunError(str(e)) from None
    if best is None:
        raise RunError(f"{final}: the run has no evaluated checkpoint yet (no best epoch)", 2)
    path = ckpt_dir / f"epoch-{best['epoch']:06d}.json"
    if not path.exists():
        raise RunError(f"the best checkpoint (epoch {best['epoch']}) is missing: {path}")
    return path


def resolve_checkpoint(run_dir: Path, which: str | Path = "final") -> Path:
    """The manifest path that ``which`` (final, best, latest or a path) names in ``run_dir``."""
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / CHECKPOINT_DIR
    if str(which) not in CHECKPOINT_CHOICES:
        path = Path(which)
        if not path.is_file():
            raise RunError(f"checkpoint {path}: no such file", 2)
        return path
    newest = ckpt.latest(ckpt_dir)
    if newest is None:
        raise RunError(f"no checkpoint in {ckpt_dir}")
    named = read_json(run_dir / SUMMARY_FILE).get("checkpoint")
    final = ckpt_dir / Path(named).name if named else newest  # the run dir may have moved
    if which == "latest":
        return newest
    if not final.exists():
        raise RunError(f"the final checkpoint {final} named by {SUMMARY_FILE} is missing")
    return final if which == "final" else _best_manifest(ckpt_dir, final)


def run_preprocessing(run_dir: Path, cfg: dict[str, Any]) -> Preprocessing:
    """The run's :class:`Preprocessing`, from its ``data.json`` (:class:`RunError`, exit 2, if
    the file is missing or lacks the input shape)."""
    path = Path(run_dir) / DATA_FILE
    if not path.is_file():
        raise RunError(f"{run_dir}: no {DATA_FILE} there (not a run directory)", 2)
    try:
        return preprocessing(cfg, read_json(path))
    except ValueError as e:
        raise RunError(f"{path}: {e}", 2) from None


def input_shape(run_dir: Path) -> tuple[int, ...]:
    """The shape of one input row, as the run recorded it in ``data.json``."""
    stats = read_json(Path(run_dir) / DATA_FILE)
    if "input_shape" not in stats:
        raise RunError(f"{run_dir}: {DATA_FILE} does not record the input shape", 2)
    return tuple(stats["input_shape"])


def load_state(
    manifest: Path, model: Model, cfg: dict[str, Any], in_shape: tuple[int, ...], optimizer: bool
) -> TrainState:
    """The TrainState of ``manifest``, checked against the model (:class:`RunError` if not)."""
    try:
        params, opt_state, _ = templates(model, cfg["seed"], in_shape, optimizer)
    except (ValueError, TypeError) as e:
        raise RunError(f"the data do not fit the model: {e}", 2) from None
    try:
        return ckpt.load_state(manifest, params, opt_state)[0]
    except ckpt.CheckpointError as e:
        raise RunError(str(e)) from None


def load_run(
    run_dir: str | Path,
    checkpoint: str | Path = "final",
    *,
    optimizer_state: bool = True,
    run: int | None = None,
) -> LoadedRun:
    """Load a run directory written by ``jaxscratch train`` (see the module docstring).

    Returns a :class:`LoadedRun`; ``net, params, preprocessing = load_run(d)`` unpacks it.
    ``checkpoint``: ``"final"``, ``"best"``, ``"latest"`` or a manifest path.
    ``optimizer_state=False`` loads the params (and the best's params) alone; the state's
    ``opt_state`` is then ``None``. ``run``: for a ``seeds = N`` run, the seed index ``I`` (its
    seed is ``seed + I``) whose params to load, required there (a multi-seed run has no single
    model; its state is that seed's, with the epoch of its params and no best); for a single
    run only ``None`` or 0. Raises :class:`~jaxscratch.runs.rundir.RunError` for a missing or
    corrupt run directory or checkpoint, and for a missing or out-of-range ``run``.
    """
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    prep = run_preprocessing(run_dir, cfg)
    if cfg.get("seeds", 1) > 1:
        from jaxscratch.runs.seeds import load_seed_run

        return load_seed_run(run_dir, cfg, prep, checkpoint, optimizer_state, run)
    if run not in (None, 0):
        raise RunError(f"{run_dir} trained one seed: run must be None or 0, got {run!r}", 2)
    manifest = resolve_checkpoint(run_dir, checkpoint)
    model = build_model(cfg)
    with x64(cfg):
        state = load_state(manifest, model, cfg, prep.input_shape, optimizer_state)
    summary = read_json(run_dir / SUMMARY_FILE)
    return LoadedRun(cfg, model.net, model.loss, state, summary, manifest, prep)
