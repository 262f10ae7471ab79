"""Train a resolved config in a run directory, from scratch or resumed from its last checkpoint.

:func:`train` runs ``fit`` (:mod:`jaxscratch.train.loop`) on the config's model and data. ``fit``
compiles the epochs between two evaluations into one call, so the host sees the run at every
evaluation: that is when a metrics line is written, the whole TrainState checkpointed and the
progress advanced. Every epoch's shuffle and dropout keys derive from the state's key and the
epoch number (``fold_in``), so a resumed run (``fit(..., start=loaded_state)``) repeats the
uninterrupted one bit for bit.

When ``fit`` returns, its final state (after an early stop: the restored one) is saved as the
final checkpoint, with ``fit``'s evaluation of exactly those params; the summary's ``final``
numbers are that evaluation. The latest two checkpoints and the best evaluated one are kept.

The run directory is created exclusively and locked (:class:`~jaxscratch.runs.rundir.RunLock`)
while the run writes it. Every checkpoint carries the run's fingerprint (the resolved config and
the data arrays, hashed): a resume whose config or data differ is refused, naming what changed,
unless ``allow_changed=True``, which records the changes (``resumed_with_changes``). SIGINT and
SIGTERM only set a flag (safe during a compilation); the run stops at the next evaluation with
its checkpoint saved, status ``"interrupted"`` (exit 130) or ``"terminated"`` (exit 143).

A config with ``seeds = N > 1`` runs in :class:`~jaxscratch.runs.seeds.ManySession` (the same run
directory, lock, fingerprint and signals; N runs trained by ``fit_many``).
"""

from __future__ import annotations

import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import jax
import numpy as np

from jaxscratch.core import init_params
from jaxscratch.ops.dropout import DEFAULT_MASK as DROPOUT_MASK
from jaxscratch.runs import checkpoint as ckpt
from jaxscratch.runs import config as cfgmod
from jaxscratch.runs import plugins
from jaxscratch.runs.loader import load_state, run_config, x64
from jaxscratch.runs.plots import plot_curves
from jaxscratch.runs.progress import Progress
from jaxscratch.runs.rundir import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    DATA_FILE,
    METRICS_FILE,
    PLOT_FILE,
    SUMMARY_FILE,
    MetricsLog,
    RunError,
    RunLock,
    changes,
    check_empty,
    clean_temp_files,
    create_run_dir,
    default_run_dir,
    describe_changes,
    fingerprint,
    read_metrics,
    write_json,
)
from jaxscratch.runs.summary import format_summary, summarize
from jaxscratch.train import loop
from jaxscratch.train.state import EvaluationNotFinite, TrainingDiverged, TrainState, init_state

METRIC_KEYS = ("accuracy", "mae", "rmse")


class _StopRequested(Exception):
    """Raised from the fit callback to end a run after a checkpoint (``--stop-after``)."""


class _Signalled(Exception):
    """Raised from the fit callback, after its checkpoint, when SIGINT or SIGTERM arrived."""

    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


class Signals:
    """SIGINT and SIGTERM handlers for one run (``with Signals() as s:``; the previous handlers
    are restored on exit). A handler only records the first signal, so a signal at any moment
    (inside a compilation too) is safe; ``status`` is then ``"interrupted"`` (SIGINT) or
    ``"terminated"`` (SIGTERM). Outside the main thread nothing is installed."""

    STATUS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        del frame
        if self.received is None:
            self.received = signum

    @property
    def status(self) -> str | None:
        """The status the received signal asks for, or None."""
        return None if self.received is None else self.STATUS[signal.Signals(self.received)]

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.STATUS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}


def _load_data(cfg: dict[str, Any]) -> cfgmod.Dataset:
    try:
        return cfgmod.load_data(cfg)
    except (ValueError, OSError) as e:
        raise RunError(f"data error: {e}", exit_code=2) from None


def _evaluation(epoch: int, eval_loss: float | None, metrics: dict[str, float] | None) -> dict:
    """The numbers of one evaluation of exactly the params of ``epoch``."""
    if eval_loss is None:
        return {}
    return {"epoch": int(epoch), "eval_loss": float(eval_loss), **(metrics or {})}


class _Session:
    """One ``train`` call: the run directory, data, model, and what has been saved so far."""

    def __init__(
        self,
        cfg: dict[str, Any],
        run_dir: Path,
        out: TextIO,
        stop_after: int | None,
        signals: Signals | None = None,
        data: cfgmod.Dataset | None = None,
    ):
        self.cfg, self.run_dir, self.out, self.stop_after = cfg, run_dir, out, stop_after
        self.signals = signals or Signals()
        self.ckpt_dir = run_dir / CHECKPOINT_DIR
        self.log = MetricsLog(run_dir / METRICS_FILE)
        self.data = data if data is not None else _load_data(cfg)
        d = self.data
        arrays = {
            "X_train": d.X_train,
            "y_train": d.y_train,
            "X_test": d.X_test,
            "y_test": d.y_test,
        }
        self.plugins = plugins.records(cfg)  # module, file, sha256 of each [plugins] module
        self.model = cfgmod.build_model(cfg)
        seen = plugins.fingerprint_config(cfg, self.plugins)
        if self.model.net.stochastic:  # how the dropout masks are drawn: a resume must match it
            seen = {**seen, "dropout_mask": DROPOUT_MASK}
        self.fingerprint = fingerprint(seen, arrays)
        self.changes: list[str] = []
        self.in_shape = tuple(self.data.X_train.shape[1:])
        self.manifest: Path | None = None
        self.meta: dict[str, Any] = {}
        self.elapsed0, self.t0 = 0.0, time.perf_counter()
        self.resumed_from: int | None = None

    def wall(self) -> float:
        """Seconds of the run so far, across resumes."""
        return round(self.elapsed0 + time.perf_counter() - self.t0, 3)

    def save(self, epoch: int, state: TrainState, evaluation: dict, **meta: Any) -> None:
        """Checkpoint ``state`` as ``epoch``, keeping the best evaluated one."""
        meta = {"evaluation": evaluation, "wall_time": self.wall(), "finished": False, **meta}
        meta["fingerprint"] = self.fingerprint
        if self.changes:
            meta["resumed_with_changes"] = self.changes
        protect = (state.best.epoch,) if state.best is not None else ()
        self.manifest = ckpt.save_state(self.ckpt_dir, epoch, state, meta, protect=protect)
        self.meta = ckpt.read_manifest(self.manifest)["meta"]

    def fresh(self) -> TrainState:
        """A new run: the initial state from the seed, the run directory, checkpoint 0."""
        init_key, fit_key = jax.random.split(jax.random.key(self.cfg["seed"]))
        params = init_params(self.model.net, init_key, self.in_shape)[1]
        state = init_state(self.model.optimizer, params, fit_key)
        cfgmod.write_config(self.run_dir / CONFIG_FILE, self.cfg)
        write_json(self.run_dir / DATA_FILE, {**self.data.stats, "input_shape": self.in_shape})
        if self.plugins:
            write_json(self.run_dir / plugins.PLUGINS_FILE, self.plugins)
        self.log.start()
        self.save(0, state, {})
        n = int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))
        self.out.write(
            f"training {self.cfg['name']}: {len(self.cfg['layers'])} layers, {n} params; "
            f"{self.data.description}\nrun dir: {self.run_dir}\n"
        )
        return state

    def check_changes(self, manifest: Path, allow_changed: bool) -> None:
        """Refuse (:class:`RunError`, exit 2) a resume whose config or data differ from those the
        checkpoint ``manifest`` was trained on; with ``allow_changed``, record the changes."""
        try:
            meta = ckpt.read_manifest(manifest)["meta"]
        except ckpt.CheckpointError:
            return  # loading it reports the problem
        saved = meta.get("fingerprint")
        self.changes = list(meta.get("resumed_with_changes", []))
        if not isinstance(saved, dict):
            return  # a checkpoint from before fingerprints
        found = changes(saved, self.fingerprint)
        if not found:
            return
        what = describe_changes(saved, self.fingerprint, found)
        if not allow_changed:
            raise RunError(
                f"cannot resume {self.run_dir}: the run differs from the one checkpoint "
                f"{manifest.name} was trained on: {what}. Undo the change, or resume with "
                "--allow-changed to go on with the new values (recorded in the summary)",
                exit_code=2,
            )
        self.out.write(f"resuming with changes (--allow-changed): {what}\n")
        self.changes += [k for k in found if k not in self.changes]

    def older_checkpoints(self, manifest: Path) -> str:
        """The hint after a newest checkpoint that cannot be loaded: the older checkpoints to
        fall back on (empty when there are none)."""
        others = [m.name for m in ckpt.manifests(self.ckpt_dir) if m != manifest]
        if not others:
            return ""
        return (
            f"\n(older checkpoints: {', '.join(others)}; delete {manifest.name} to resume "
            "from the one before it)"
        )

    def resumed(self, allow_changed: bool = False) -> TrainState:
        """The state of the newest checkpoint; the metrics log cut back to its epoch."""
        manifest = ckpt.latest(self.ckpt_dir)
        if manifest is None:
            raise RunError(f"--resume {self.run_dir}: no checkpoint in {self.ckpt_dir}")
        self.check_changes(manifest, allow_changed)
        try:
            seeds = ckpt.read_manifest(manifest)["meta"].get("seeds", 1)
        except ckpt.CheckpointError:
            seeds = 1  # loading it reports the problem
        if seeds != 1:
            raise RunError(f"cannot resume: checkpoint {manifest} holds {seeds} seeds, the "
                           "config trains one (seeds cannot change on a resume)")  # fmt: skip
        try:
            state = load_state(manifest, self.model, self.cfg, self.in_shape, optimizer=True)
        except RunError as e:
            raise RunError(f"cannot resume: {e}{self.older_checkpoints(manifest)}") from None
        self.manifest, self.meta = manifest, ckpt.read_manifest(manifest)["meta"]
        self.elapsed0 = float(self.meta.get("wall_time", 0.0))
        self.resumed_from = ckpt.manifest_epoch(manifest)
        self.log.keep_until(self.resumed_from)
        return state

    def on_eval(self, info: dict[str, Any], progress: Progress) -> None:
        """fit's callback: a metrics line, a checkpoint (unless the run is over), the progress."""
        epoch, state = info["epoch"], info["state"]
        record = {"epoch": epoch, "lr": info["lr"], "train_loss": info["train_loss"]}
        record.update({k: info[k] for k in ("eval_loss", *METRIC_KEYS) if k in info})
        record["wall_time"] = self.wall()
        self.log.append(record)
        finished = bool(info["stopped"]) or epoch >= self.cfg["epochs"]
        if not finished:  # the final state is saved when fit returns, with its evaluation
            metrics = {k: record[k] for k in METRIC_KEYS if k in record}
            self.save(epoch, state, _evaluation(epoch, record.get("eval_loss"), metrics))
        progress.update(record)
        if self.signals.status is not None and not finished:
            raise _Signalled(self.signals.status)
        if self.stop_after is not None and epoch >= self.stop_after and not finished:
            raise _StopRequested

    def save_final(self, result: Any) -> None:
        """Checkpoint the state fit returned, with fit's evaluation of exactly its params."""
        h, state = result.history, result.state
        reached = h.stopped_epoch if h.stopped_early else self.cfg["epochs"]
        self.save(
            reached,
            state,
            _evaluation(h.final_epoch, h.final_eval_loss, h.final_metrics),
            finished=True,
            stopped_early=bool(h.stopped_early),
            restored_to_epoch=h.restored_to_epoch,
        )

    def fit(self, state: TrainState) -> tuple[str, dict[str, Any]]:
        """Run fit from ``state``; ``(status, error details)``."""
        cfg, data = self.cfg, self.data
        progress = Progress(self.out, cfg["epochs"], state.epoch, eval_every=cfg["eval_every"],
                            wall0=self.elapsed0)  # fmt: skip
        progress.start()
        try:
            result = loop.fit(
                self.model.net, self.model.loss, self.model.optimizer, state,
                data.X_train, data.y_train,
                epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=self.model.schedule,
                eval_data=(data.X_test, data.y_test), eval_every=cfg["eval_every"],
                stopping=cfgmod.build_stopping(cfg), metrics=cfgmod.metric_fns(data.task),
                step_mode=cfg["step_mode"], callback=lambda info: self.on_eval(info, progress),
            )  # fmt: skip
        except _StopRequested:
            return "stopped", {}
        except _Signalled as e:
            return e.status, {}
        except (TrainingDiverged, EvaluationNotFinite) as e:
            return "diverged", self._diverged(e)
        except KeyboardInterrupt:
            return "interrupted", {}
        finally:
            progress.close()
        self.save_final(result)
        return "completed", {}

    def _diverged(self, e: TrainingDiverged | EvaluationNotFinite) -> dict[str, Any]:
        where = f"kept the last good checkpoint {self.manifest} (epoch {self.meta['state_epoch']})"
        if isinstance(e, TrainingDiverged):
            d: dict[str, Any] = {"epoch": e.epoch, "batch": e.batch, "loss": e.loss}
            d["in_params"] = bool(getattr(e, "in_params", False))
            what = "the update made the params non-finite" if d["in_params"] else f"loss {e.loss}"
            msg = f"training diverged at epoch {e.epoch}, batch {e.batch}: {what}; {where}"
        else:
            d = {"epoch": e.epoch, "batch": None, "loss": e.value}
            msg = f"evaluation after epoch {e.epoch} gave {e.name} = {e.value}; {where}"
        return {"error": msg, "diverged": d}

    def summary(self, status: str, wall: float) -> dict[str, Any]:
        """The summary dict of the newest checkpoint (:func:`~jaxscratch.runs.summary.summarize`)."""
        return summarize(self.cfg, self.run_dir, status, self.manifest, self.meta, wall)

    def finish(self, status: str, extra: dict[str, Any]) -> dict[str, Any]:
        """Write the plot and ``summary.json``; print the summary; return it."""
        records = read_metrics(self.log.path)
        summary = self.summary(status, self.wall())
        summary.update(resumed_from=self.resumed_from, **extra)
        if self.plugins:
            summary["plugins"] = self.plugins
        if self.changes:
            summary["resumed_with_changes"] = self.changes
        try:
            plot = plot_curves(records, self.run_dir / PLOT_FILE, self.cfg["name"])
            summary["plot"] = str(plot) if plot is not None else None
        except Exception as e:  # a plot must not lose the run's summary
            summary["plot"], summary["plot_error"] = None, f"{type(e).__name__}: {e}"
        write_json(self.run_dir / SUMMARY_FILE, summary)
        self.out.write(format_summary(summary) + "\n")
        return summary


def train(
    cfg: dict[str, Any] | None = None,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    out: TextIO | None = None,
    allow_changed: bool = False,
) -> dict[str, Any]:
    """Run a resolved config in ``run_dir`` (fresh), or continue the run in ``run_dir`` (``resume``).

    A fresh run's data are loaded and checked against the model first, so a data error leaves no
    run directory behind. A fresh ``run_dir`` (default:
    :func:`~jaxscratch.runs.rundir.default_run_dir`) must not exist or be empty; it is locked while the run writes it (a second writer gets a :class:`RunError`
    naming this process). ``stop_after``: end the run after the first evaluation at an epoch >=
    this (status ``"stopped"``, resumable). ``allow_changed``: resume even though the config or
    data differ from the checkpoint's (the changed keys go into ``resumed_with_changes``).
    SIGINT/SIGTERM end the run at the next evaluation (status ``"interrupted"``/``"terminated"``).
    Prints progress and a summary to ``out``; returns the summary dict (also written to
    ``summary.json``). Raises :class:`RunError` when the run cannot start.
    """
    out = out if out is not None else sys.stdout
    data = None
    if not resume and cfg is not None:
        with x64(cfg):
            data = _load_data(cfg)  # a data error leaves no run directory behind
    cfg, run_dir, created = _run_dir(cfg, run_dir, resume)
    lock = RunLock(run_dir).acquire()
    try:
        if resume:
            clean_temp_files(run_dir)
            cfg = run_config(run_dir)  # again, now that no other process writes it
        else:
            check_empty(run_dir)
        with x64(cfg), Signals() as signals:
            session = _session_class(cfg)(cfg, run_dir, out, stop_after, signals, data)
            if resume:
                return _resume(session, allow_changed)
            return session.finish(*session.fit(session.fresh()))
    except BaseException:
        if created and not (run_dir / CHECKPOINT_DIR).exists():
            shutil.rmtree(run_dir, ignore_errors=True)  # a half-made run dir would block a rerun
        raise
    finally:
        lock.release()


def _session_class(cfg: dict[str, Any]) -> type[_Session]:
    """The single-run session, or :class:`~jaxscratch.runs.seeds.ManySession` for a config with
    ``seeds = N > 1`` (N runs in one program, one run directory)."""
    if cfg.get("seeds", 1) == 1:
        return _Session
    from jaxscratch.runs.seeds import ManySession

    return ManySession


def _run_dir(
    cfg: dict[str, Any] | None, run_dir: str | Path | None, resume: bool
) -> tuple[dict[str, Any], Path, bool]:
    """``(config, run directory, whether this call created it)``: a resumed run's own config
    (checking that ``run_dir`` is a run directory before a lock file goes into it), or a fresh
    run's directory, created."""
    if resume:
        if run_dir is None:
            raise TypeError("train: resume=True needs the run_dir of the run to continue, got None")
        return run_config(Path(run_dir)), Path(run_dir), False
    if cfg is None:
        raise TypeError("train: a fresh run needs cfg (a resolved config), got None")
    path = Path(run_dir) if run_dir is not None else default_run_dir(cfg["name"])
    return cfg, path, create_run_dir(path)


def _resume(session: _Session, allow_changed: bool) -> dict[str, Any]:
    """Continue the session's run from its newest checkpoint; a finished run is only completed
    with the summary and plot it may lack."""
    state = session.resumed(allow_changed)
    cfg, run_dir, out = session.cfg, session.run_dir, session.out
    if session.meta.get("finished"):
        out.write(f"run {run_dir} already finished at epoch {session.resumed_from}; "
                  "nothing to resume\n")  # fmt: skip
        if not (run_dir / SUMMARY_FILE).is_file() or not (run_dir / PLOT_FILE).is_file():
            out.write(f"writing its missing {SUMMARY_FILE} / {PLOT_FILE}\n")
            session.t0 = time.perf_counter()
            return session.finish("completed", {})
        return session.summary("completed", session.elapsed0)
    out.write(
        f"resuming {cfg['name']} from epoch {state.epoch} ({session.manifest}); "
        f"{cfg['epochs'] - state.epoch} epochs to go\n"
    )
    return session.finish(*session.fit(state))
