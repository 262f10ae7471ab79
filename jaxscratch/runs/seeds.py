"""``seeds = N``: N runs of one config trained at once, in one run directory.

This module holds the training (:class:`ManySession`), the checkpoints of a
:class:`~jaxscratch.train.many.ManyState` (:func:`save_many` / :func:`load_many`), and loading or
evaluating one seed or every seed of a finished run (:func:`load_seed_run`,
:func:`evaluate_seeds`); what the run reports is in :mod:`jaxscratch.runs.seed_report`.

Run ``i`` (0-based) is the config's run with ``seed + i``: its init and fit keys are
``jax.random.split(jax.random.key(seed + i))``, as a single run draws them, and it trains in
:func:`jaxscratch.train.many.fit_many`, which vmaps the very period kernel ``fit`` compiles, so
it equals the single run with ``seed = seed + i`` to float rounding (fit_many's docstring).
``early_stopping = "book"`` is fit_many's ``stopping="book"`` (per run), ``"off"`` is ``None``;
every run keeps its last (or book-restored) params (``restore="last"``).

The run directory has the single run's files; what differs:

* ``metrics.jsonl``: a line per evaluation with ``train_loss``, ``eval_loss`` and each metric as
  the **mean** over the runs evaluated there (``runs``: how many), ``std`` (their sample
  standard deviations, ddof 1; None for fewer than two), ``per_seed`` (each key's N values in
  seed order; null for a run that no longer trains or went non-finite) and ``lr``.
* ``checkpoints/``: the stacked params and optimizer state (N, ...) and, in the manifest's
  ``meta.many``, fit_many's bookkeeping per run (alive, diverged, stopped, best, the book rule's
  best): a :class:`~jaxscratch.train.many.ManyState`, so ``--resume`` continues bitwise.
* ``summary.json``: ``per_seed`` (each seed's final metrics, the epoch of its params, best /
  stopped / diverged epochs), ``final`` / ``final_std`` / ``final_runs``.

A seed that goes non-finite is frozen by fit_many and the others train on; the summary leaves it
out of the mean ± std (the policy, the summary and the printed reports are in
:mod:`jaxscratch.runs.seed_report`). When every seed diverged the run's status is
``"diverged"`` (exit 1).

``evaluate`` reports every seed and the mean ± std (same policy); ``predict`` and ``load_run``
need one seed (``--seed-index I`` / ``run=I``); a multi-seed run keeps no "best" checkpoint (each
seed's best epoch differs; they are in ``summary.json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxscratch.runs import checkpoint as ckpt
from jaxscratch.runs import config as cfgmod
from jaxscratch.runs.plots import plot_curves
from jaxscratch.runs.progress import Progress
from jaxscratch.runs.rundir import (
    CONFIG_FILE,
    DATA_FILE,
    PLOT_FILE,
    SUMMARY_FILE,
    RunError,
    read_metrics,
    write_json,
)
from jaxscratch.runs.seed_report import (
    floats,
    format_many_summary,
    many_summary,
    mean_pm,
    mean_std,
    params_epochs,
    seed_count,
)
from jaxscratch.runs.session import METRIC_KEYS, Signals, _Session, _Signalled, _StopRequested
from jaxscratch.train.many import ManyState, fit_many, init_many
from jaxscratch.train.state import TrainState

KEYS = ("train_loss", "eval_loss", *METRIC_KEYS)


def many_keys(seed: int, n: int) -> tuple[jax.Array, jax.Array]:
    """``(init_keys (n,), fit_keys (n,))``: run ``i``'s are those of a single run with
    ``seed + i`` (``jax.random.split(jax.random.key(seed + i))``)."""
    pairs = [jax.random.split(jax.random.key(seed + i)) for i in range(n)]
    return jax.numpy.stack([p[0] for p in pairs]), jax.numpy.stack([p[1] for p in pairs])


def _as_array(values: list, dtype: Any) -> np.ndarray:
    return np.array([np.inf if v is None else v for v in values], dtype)


# ------------------------------------------------------------------------------------------------
# Checkpoints of a ManyState (through the checkpoint module: atomic, checksummed)
# ------------------------------------------------------------------------------------------------

BOOKKEEPING = ("alive", "diverged_epoch", "stopped_epoch", "best_epoch")


def save_many(
    directory: Path, epoch: int, state: ManyState, meta: dict[str, Any], keep: int | None = 2
) -> Path:
    """Checkpoint ``state`` as ``epoch``: trees ``params``, ``opt_state`` (and ``best_params`` /
    ``best_opt_state`` when present); fit_many's per-run bookkeeping in ``meta["many"]``."""
    trees: dict[str, Any] = {"params": state.params, "opt_state": state.opt_state}
    if state.best_params is not None:
        trees["best_params"], trees["best_opt_state"] = state.best_params, state.best_opt_state
    many = {name: np.asarray(getattr(state, name)).tolist() for name in BOOKKEEPING}
    many.update(
        epoch=int(state.epoch),
        best_eval_loss=floats(state.best_eval_loss),
        book_best=floats(state.book_best),
        has_best=state.best_params is not None,
    )
    return ckpt.save(directory, epoch, trees, {**meta, "many": many}, keep=keep)


def templates(model: cfgmod.Model, cfg: dict[str, Any], in_shape: tuple[int, ...]) -> tuple:
    """Shapes only (nothing computed) of the stacked initial params and optimizer state."""
    init_keys, _ = many_keys(cfg["seed"], seed_count(cfg))

    def init(keys):
        params = init_many(model.net, keys, in_shape)
        return params, jax.vmap(model.optimizer.init)(params)

    return jax.eval_shape(init, init_keys)


def load_many(
    manifest: Path,
    model: cfgmod.Model,
    cfg: dict[str, Any],
    in_shape: tuple[int, ...],
    optimizer: bool = True,
) -> tuple[ManyState, dict[str, Any]]:
    """``(ManyState, meta)`` of a :func:`save_many` checkpoint, verified (hashes, every leaf
    against the model's stacked templates); ``optimizer=False``: the params alone (``opt_state``
    None). :class:`RunError` for a corrupt, mismatched or single-run checkpoint."""
    try:
        meta = ckpt.read_manifest(manifest)["meta"]
        many = meta.get("many")
        if not isinstance(many, dict) or meta.get("seeds") != seed_count(cfg):
            raise RunError(
                f"checkpoint {manifest} is not a checkpoint of {seed_count(cfg)} seeds "
                f"(it records seeds = {meta.get('seeds', 1)})"
            )
        params, opt_state = templates(model, cfg, in_shape)
        wanted: dict[str, Any] = {"params": params}
        if optimizer:
            wanted["opt_state"] = opt_state
            if many.get("has_best"):
                wanted["best_params"], wanted["best_opt_state"] = params, opt_state
        trees = ckpt.load(manifest, wanted).trees
    except (ValueError, TypeError) as e:  # CheckpointError is a ValueError
        raise RunError(str(e)) from None
    state = ManyState(
        trees["params"],
        trees.get("opt_state"),
        int(many["epoch"]),
        np.array(many["alive"], bool),
        np.array(many["diverged_epoch"], np.int64),
        np.array(many["stopped_epoch"], np.int64),
        np.array(many["best_epoch"], np.int64),
        _as_array(many["best_eval_loss"], np.float64),
        _as_array(many["book_best"], np.float64),
        trees.get("best_params"),
        trees.get("best_opt_state"),
    )
    return state, meta


def run_state(state: ManyState, i: int, epoch: int, cfg: dict[str, Any]) -> TrainState:
    """Run ``i`` of a :class:`ManyState` as the TrainState of a single run (params, optimizer
    state or None, the epoch of its params, its fit key; no best)."""
    _, keys = many_keys(cfg["seed"], seed_count(cfg))
    pick = lambda tree: None if tree is None else jax.tree.map(lambda a: a[i], tree)  # noqa: E731
    return TrainState(pick(state.params), pick(state.opt_state), int(epoch), keys[i], None)


def check_run(run: Any, n: int, what: str) -> int:
    """``run`` as a seed index in ``0 .. n - 1``; :class:`RunError` (exit 2) naming ``what``."""
    if isinstance(run, bool) or not isinstance(run, int | np.integer) or not 0 <= run < n:
        raise RunError(f"{what} must be a seed index in 0..{n - 1}, got {run!r}", 2)
    return int(run)


def many_checkpoint(run_dir: Path, cfg: dict[str, Any], which: str | Path) -> Path:
    """The manifest ``which`` names (final, latest or a path); "best" is refused: each seed's
    best epoch differs, and a multi-seed run keeps no best checkpoint."""
    from jaxscratch.runs.loader import resolve_checkpoint

    if str(which) == "best":
        raise RunError(
            f"{run_dir} trained {seed_count(cfg)} seeds at once and keeps no best checkpoint "
            "(each seed's best epoch is in summary.json, per_seed); use final, latest or a "
            "manifest",
            2,
        )
    return resolve_checkpoint(run_dir, which)


def load_seed_run(
    run_dir: Path,
    cfg: dict[str, Any],
    prep: Any,
    checkpoint: str | Path,
    optimizer_state: bool,
    run: int | None,
) -> Any:
    """:func:`~jaxscratch.runs.loader.load_run` of one seed of a multi-seed run (``run``,
    required: a :class:`RunError` saying so otherwise)."""
    from jaxscratch.runs.loader import LoadedRun, x64

    n = seed_count(cfg)
    if run is None:
        raise RunError(
            f"{run_dir} trained {n} seeds at once: pass run=I (0..{n - 1}; seed "
            f"{cfg['seed']} + I) to load one seed's params",
            2,
        )
    i = check_run(run, n, "run")
    manifest = many_checkpoint(run_dir, cfg, checkpoint)
    model = cfgmod.build_model(cfg)
    with x64(cfg):
        state, meta = load_many(manifest, model, cfg, prep.input_shape, optimizer_state)
        one = run_state(state, i, params_epochs(meta, cfg)[i], cfg)
    summary = {}
    if (run_dir / SUMMARY_FILE).is_file():
        from jaxscratch.runs.rundir import read_json

        summary = read_json(run_dir / SUMMARY_FILE)
    return LoadedRun(cfg, model.net, model.loss, one, summary, manifest, prep)


def evaluate_seeds(
    run_dir: Path, cfg: dict[str, Any], data: str | None, split: str, checkpoint: str | Path
) -> dict[str, Any]:
    """:func:`~jaxscratch.runs.evaluation.evaluate` of a multi-seed run: each seed's loss and
    metrics of its params in the checkpoint (``per_seed``, with the epoch of its params and
    whether it diverged), and as the top-level keys their mean, with ``std`` (ddof 1) and
    ``runs`` (how many), over the seeds that did not diverge (the summary's policy)."""
    from jaxscratch.runs.evaluation import eval_arrays, score
    from jaxscratch.runs.loader import x64
    from jaxscratch.runs.rundir import read_json

    n = seed_count(cfg)
    with x64(cfg):
        stats = read_json(run_dir / DATA_FILE)
        X, y, what = eval_arrays(cfg, data, split, stats)
        manifest = many_checkpoint(run_dir, cfg, checkpoint)
        model = cfgmod.build_model(cfg)
        state, meta = load_many(manifest, model, cfg, tuple(X.shape[1:]), optimizer=False)
        task = stats.get("task") or cfgmod.data_task(cfg)
        scores = [
            score(model, jax.tree.map(lambda a, i=i: a[i], state.params), X, y, task)
            for i in range(n)
        ]
    epochs, diverged = params_epochs(meta, cfg), meta["many"]["diverged_epoch"]
    kept = np.array([d == 0 for d in diverged])
    result: dict[str, Any] = {}
    std: dict[str, float | None] = {}
    for k in scores[0]:
        result[k], std[k], runs = mean_std([sc[k] for sc in scores], kept)
    result.update(std=std, runs=runs, seeds=n)
    result["per_seed"] = [
        {
            "seed": cfg["seed"] + i,
            **sc,
            "params_epoch": epochs[i],
            "diverged_epoch": diverged[i] or None,
        }  # fmt: skip
        for i, sc in enumerate(scores)
    ]
    result.update(rows=int(X.shape[0]), data=what, epoch=ckpt.manifest_epoch(manifest),
                  checkpoint=str(manifest))  # fmt: skip
    return result


# ------------------------------------------------------------------------------------------------
# The session
# ------------------------------------------------------------------------------------------------


class ManySession(_Session):
    """A ``train`` call of a ``seeds = N > 1`` config (the module docstring): the single-run
    session's run directory, data, fingerprint, lock and signals, trained by fit_many."""

    def __init__(self, cfg: dict[str, Any], run_dir: Path, out: Any, stop_after: int | None,
                 signals: Signals | None = None, data: cfgmod.Dataset | None = None):  # fmt: skip
        super().__init__(cfg, run_dir, out, stop_after, signals, data)
        self.n = seed_count(cfg)
        self.seeds = [cfg["seed"] + i for i in range(self.n)]
        self.init_keys, self.keys = many_keys(cfg["seed"], self.n)

    def save(self, epoch: int, state: Any, evaluation: dict, **meta: Any) -> None:
        """Checkpoint the :class:`ManyState` as ``epoch`` (the latest two are kept)."""
        meta = {"evaluation": evaluation, "wall_time": self.wall(), "finished": False, **meta}
        meta.update(fingerprint=self.fingerprint, seeds=self.n)
        if self.changes:
            meta["resumed_with_changes"] = self.changes
        self.manifest = save_many(self.ckpt_dir, epoch, state, meta)
        self.meta = ckpt.read_manifest(self.manifest)["meta"]

    def fresh(self) -> ManyState:  # type: ignore[override]  # a ManyState, not a TrainState
        """A new run: each seed's initial params, the run directory, checkpoint 0."""
        params = init_many(self.model.net, self.init_keys, self.in_shape)
        n = self.n
        zeros, inf = np.zeros(n, np.int64), np.full(n, np.inf)
        opt_state = jax.vmap(self.model.optimizer.init)(params)
        state = ManyState(params, opt_state, 0, np.ones(n, bool), zeros, zeros, zeros, inf, inf)
        cfgmod.write_config(self.run_dir / CONFIG_FILE, self.cfg)
        write_json(self.run_dir / DATA_FILE, {**self.data.stats, "input_shape": self.in_shape})
        if self.plugins:
            from jaxscratch.runs import plugins

            write_json(self.run_dir / plugins.PLUGINS_FILE, self.plugins)
        self.log.start()
        self.save(0, state, {})
        size = int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params))) // n
        self.out.write(
            f"training {self.cfg['name']}: {n} seeds ({self.seeds[0]}..{self.seeds[-1]}) at "
            f"once, {len(self.cfg['layers'])} layers, {size} params each; "
            f"{self.data.description}\nrun dir: {self.run_dir}\n"
        )
        return state

    def resumed(self, allow_changed: bool = False) -> ManyState:  # type: ignore[override]
        """The state of the newest checkpoint; the metrics log cut back to its epoch."""
        manifest = ckpt.latest(self.ckpt_dir)
        if manifest is None:
            raise RunError(f"--resume {self.run_dir}: no checkpoint in {self.ckpt_dir}")
        self.check_changes(manifest, allow_changed)
        try:
            state, meta = load_many(manifest, self.model, self.cfg, self.in_shape)
        except RunError as e:
            raise RunError(f"cannot resume: {e}{self.older_checkpoints(manifest)}") from None
        self.manifest, self.meta = manifest, meta
        self.elapsed0 = float(meta.get("wall_time", 0.0))
        self.resumed_from = ckpt.manifest_epoch(manifest)
        self.log.keep_until(self.resumed_from)
        return state

    def record(self, info: dict[str, Any]) -> dict[str, Any]:
        """The metrics line of one period (the module docstring)."""
        per = {"train_loss": info["train_loss"], "eval_loss": info["eval_loss"]}
        per.update({k: info["metrics"][k] for k in METRIC_KEYS if k in info["metrics"]})
        evaluated = np.isfinite(info["eval_loss"])
        rec: dict[str, Any] = {"epoch": info["epoch"], "lr": float(info["lr"][0])}
        std: dict[str, float | None] = {}
        for k, v in per.items():
            rec[k], std[k], _ = mean_std(v, evaluated)
        rec.update(std=std, runs=int(evaluated.sum()))
        rec["per_seed"] = {k: floats(v) for k, v in per.items()}
        rec["wall_time"] = self.wall()
        return rec

    def on_eval(self, info: dict[str, Any], progress: Progress) -> None:
        """fit_many's callback: a metrics line, a checkpoint (unless the run is over), the
        progress line, then a requested stop or signal."""
        epoch = info["epoch"]
        record = self.record(info)
        self.log.append(record)
        if not info["finished"]:  # the final state is saved when fit_many returns
            self.save(epoch, info["state"], {"epoch": epoch, "per_seed": record["per_seed"]})
        progress.update(self.display(record))
        if self.signals.status is not None and not info["finished"]:
            raise _Signalled(self.signals.status)
        if self.stop_after is not None and epoch >= self.stop_after and not info["finished"]:
            raise _StopRequested

    def display(self, record: dict[str, Any]) -> dict[str, Any]:
        """The printed line's fields: each mean ± std (``n/a`` where no run was evaluated), and
        how many runs they cover."""
        shown: dict[str, Any] = {"epoch": record["epoch"], "lr": record["lr"]}
        for k in KEYS:
            if k in record:
                shown[k] = mean_pm(record[k], record["std"][k])
        shown["runs"] = f"{record['runs']}/{self.n}"
        shown["wall_time"] = record["wall_time"]
        return shown

    def fit(self, state: ManyState) -> tuple[str, dict[str, Any]]:  # type: ignore[override]
        """Run fit_many from ``state``; ``(status, error details)``."""
        cfg, data = self.cfg, self.data
        progress = Progress(self.out, cfg["epochs"], state.epoch, eval_every=cfg["eval_every"],
                            wall0=self.elapsed0)  # fmt: skip
        progress.start()
        try:
            result = fit_many(
                self.model.net, self.model.loss, self.model.optimizer, state,
                data.X_train, data.y_train, keys=self.keys,
                epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=self.model.schedule,
                eval_data=(data.X_test, data.y_test), eval_every=cfg["eval_every"],
                metrics=cfgmod.metric_fns(data.task),
                stopping="book" if cfg["early_stopping"] == "book" else None,
                callback=lambda info: self.on_eval(info, progress),
            )  # fmt: skip
        except _StopRequested:
            return "stopped", {}
        except _Signalled as e:
            return e.status, {}
        except KeyboardInterrupt:
            return "interrupted", {}
        finally:
            progress.close()
        h = result.history
        final = {"eval_loss": h.final_eval_loss, **(h.final_metrics or {})}
        per_seed = {k: floats(v) for k, v in final.items() if v is not None}
        assert result.state is not None  # fit_many always returns its state
        reached = result.state.epoch
        self.save(reached, result.state, {"epoch": reached, "per_seed": per_seed}, finished=True)
        if not (h.diverged_epoch == 0).any():
            return "diverged", {"error": f"every one of the {self.n} seeds diverged; "
                                f"see per_seed in {self.run_dir / SUMMARY_FILE}"}  # fmt: skip
        return "completed", {}

    def summary(self, status: str, wall: float) -> dict[str, Any]:
        """The summary dict of the newest checkpoint (:func:`many_summary`)."""
        return many_summary(self.cfg, self.run_dir, status, self.manifest, self.meta, wall)

    def finish(self, status: str, extra: dict[str, Any]) -> dict[str, Any]:
        """Write the plot and ``summary.json``; print the summary; return it."""
        records = read_metrics(self.log.path)
        summary = self.summary(status, self.wall())
        summary.update(resumed_from=self.resumed_from, **extra)
        if self.plugins:
            summary["plugins"] = self.plugins
        if self.changes:
            summary["resumed_with_changes"] = self.changes
        title = f"{self.cfg['name']} ({self.n} seeds: mean, band min..max)"
        try:
            plot = plot_curves(records, self.run_dir / PLOT_FILE, title)
            summary["plot"] = str(plot) if plot is not None else None
        except Exception as e:  # a plot must not lose the run's summary
            summary["plot"], summary["plot_error"] = None, f"{type(e).__name__}: {e}"
        write_json(self.run_dir / SUMMARY_FILE, summary)
        self.out.write(format_many_summary(summary) + "\n")
        return summary
