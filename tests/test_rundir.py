"""Run directories: exclusive creation, the writer's lock, unique names, stale temp files, the
fingerprint that refuses a changed resume, signals, and a finished run's missing summary."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxscratch.runs import checkpoint, config, session
from jaxscratch.runs.rundir import (
    EXIT_CODES,
    LOCK_FILE,
    RunError,
    RunLock,
    changes,
    clean_temp_files,
    create_run_dir,
    default_run_dir,
    fingerprint,
)

# a 64-row CSV and a 21-parameter net: a run of a few hundred epochs takes seconds
CONFIG = """\
seed = 3
epochs = {epochs}
batch_size = 32
eval_every = 1
early_stopping = false
loss = "mean_squared_error"

[data]
name = "csv"
path = "d.csv"
target = "y"

[[layers]]
type = "dense"
neurons = 4
activation = "tanh"

[[layers]]
type = "dense"
neurons = 1

[optimizer]
name = "sgd"
lr = 0.01
"""


def _write_data(directory: Path, seed: int = 0) -> None:
    r = np.random.default_rng(seed)
    X = r.normal(size=(64, 3))
    y = X @ np.array([1.0, 2.0, 3.0])
    rows = "".join(
        ",".join(repr(float(v)) for v in [*x, t]) + "\n" for x, t in zip(X, y, strict=True)
    )
    (directory / "d.csv").write_text("a,b,c,y\n" + rows)


def _config_file(directory: Path, epochs: int = 4) -> Path:
    _write_data(directory)
    path = directory / "c.toml"
    path.write_text(CONFIG.format(epochs=epochs))
    return path


def _train(directory: Path, run: Path, epochs: int = 4, **kw):
    cfg = config.load_config(_config_file(directory, epochs))
    return session.train(cfg, run, out=io.StringIO(), **kw)


def _leaves(run: Path) -> dict[str, str]:
    manifest = json.loads(checkpoint.latest(run / "checkpoints").read_text())
    return {e["name"]: e["sha256"] for e in manifest["leaves"]}


# --- creation, names, lock ---------------------------------------------------------------------


def test_default_run_dir_names_differ_within_one_second(tmp_path):
    names = {default_run_dir("boston", tmp_path) for _ in range(50)}
    assert len(names) == 50
    name = next(iter(names)).name
    assert name.startswith("boston-") and len(name.split("-")) == 4  # name, date, time, suffix


def test_create_run_dir_is_exclusive(tmp_path):
    run = tmp_path / "a" / "run"
    assert create_run_dir(run) is True and run.is_dir()
    assert create_run_dir(run) is False  # empty: accepted
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(RunError, match="exists and is not empty") as e:
        create_run_dir(run)
    assert e.value.exit_code == 2
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="not a directory"):
        create_run_dir(tmp_path / "file")


def test_lock_refuses_a_second_writer_naming_the_pid_and_a_stale_lock_blocks_nothing(tmp_path):
    (tmp_path / LOCK_FILE).write_text("999999999\n")  # left by a killed run: no flock held
    with RunLock(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        with pytest.raises(RunError, match=f"in use by process {os.getpid()}"):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path):  # released: free again
        pass


def test_a_busy_run_dir_that_already_holds_files_names_its_writer_not_just_not_empty(tmp_path):
    """A second fresh run into a dir whose writer holds the lock and has written files: the
    refusal names the writer's pid (a run writes its lock before any other file)."""
    with RunLock(tmp_path):
        (tmp_path / "config.toml").write_text("seed = 1\n")
        with pytest.raises(RunError, match=f"in use by process {os.getpid()}"):
            create_run_dir(tmp_path)
    with pytest.raises(RunError, match="exists and is not empty"):  # finished: not busy
        create_run_dir(tmp_path)
    assert (tmp_path / "config.toml").read_text() == "seed = 1\n"


def test_a_fresh_run_refuses_a_non_empty_dir_and_leaves_it_as_it_was(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not empty"):
        _train(tmp_path, run)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_half_made_dir(tmp_path):
    cfg = config.load_config(_config_file(tmp_path))
    (tmp_path / "d.csv").write_text("a,b,c,y\n1,2,x,4\n")  # the data went bad after the config
    with pytest.raises(RunError, match="data error"):
        session.train(cfg, tmp_path / "run", out=io.StringIO())
    assert not (tmp_path / "run").exists()
    _write_data(tmp_path)
    assert session.train(cfg, tmp_path / "run", out=io.StringIO())["status"] == "completed"


def test_clean_temp_files_removes_only_regular_temp_files(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    stale = [tmp_path / ".summary.json.k2j4.tmp", tmp_path / "checkpoints" / ".epoch-1.npz.x.tmp"]
    for p in stale:
        p.write_text("torn")
    keep = [tmp_path / "summary.json", tmp_path / "checkpoints" / "epoch-000001.json"]
    for p in keep:
        p.write_text("{}")
    (tmp_path / "outside.tmp").write_text("not ours")
    (tmp_path / ".link.tmp").symlink_to(tmp_path / "outside.tmp")
    assert sorted(clean_temp_files(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in keep) and (tmp_path / "outside.tmp").exists()
    assert (tmp_path / ".link.tmp").is_symlink()


def test_resume_cleans_stale_temp_files(tmp_path):
    run = tmp_path / "run"
    assert _train(tmp_path, run, stop_after=2)["status"] == "stopped"
    torn = [run / ".metrics.jsonl.abc.tmp", run / "checkpoints" / ".epoch-000003.npz.def.tmp"]
    for p in torn:
        p.write_bytes(b"\0" * 10)
    assert session.train(run_dir=run, resume=True, out=io.StringIO())["status"] == "completed"
    assert not any(p.exists() for p in torn)


# --- fingerprints: a resume that refuses a different run ---------------------------------------


def test_changes_name_the_config_keys_and_data_arrays():
    cfg = {"seed": 1, "optimizer": {"name": "sgd", "lr": 0.01}, "layers": [{"neurons": 4}]}
    X, y = np.zeros((3, 2)), np.ones((3, 1))
    base = fingerprint(cfg, {"X_train": X, "y_train": y})
    assert changes(base, fingerprint(cfg, {"X_train": X.copy(), "y_train": y})) == []
    edited = {**cfg, "optimizer": {"name": "sgd", "lr": 0.1}, "layers": [{"neurons": 5}]}
    assert changes(base, fingerprint(edited, {"X_train": X, "y_train": y})) == [
        "layers[0].neurons",
        "optimizer.lr",
    ]
    # same bytes, other shape or dtype: different data
    assert changes(base, fingerprint(cfg, {"X_train": X.reshape(2, 3), "y_train": y})) == [
        "data:X_train"
    ]
    assert changes(base, fingerprint(cfg, {"X_train": X, "y_train": y.astype(np.float32)})) == [
        "data:y_train"
    ]


def test_resume_with_an_edited_config_is_refused_naming_the_keys(tmp_path):
    run = tmp_path / "run"
    assert _train(tmp_path, run, stop_after=2)["status"] == "stopped"
    text = (run / "config.toml").read_text()
    (run / "config.toml").write_text(
        text.replace("lr = 0.01", "lr = 0.5").replace("seed = 3", "seed = 4")
    )
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    with pytest.raises(RunError, match=r"optimizer\.lr: 0\.01 -> 0\.5") as e:
        session.train(run_dir=run, resume=True, out=io.StringIO())
    assert "seed: 3 -> 4" in str(e.value) and "--allow-changed" in str(e.value)
    assert e.value.exit_code == 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before  # nothing lost
    summary = session.train(run_dir=run, resume=True, out=io.StringIO(), allow_changed=True)
    assert summary["status"] == "completed"
    assert summary["resumed_with_changes"] == ["optimizer.lr", "seed"]
    assert json.loads((run / "summary.json").read_text())["resumed_with_changes"] == [
        "optimizer.lr",
        "seed",
    ]
    meta = checkpoint.read_manifest(checkpoint.latest(run / "checkpoints"))["meta"]
    assert meta["resumed_with_changes"] == ["optimizer.lr", "seed"]


def test_a_run_with_dropout_records_its_mask_and_a_resume_under_another_is_refused(
    tmp_path, monkeypatch
):
    """The dropout mask generator is part of what a run was trained with: a checkpoint of a run
    made under other masks (here: threefry, as before the hash masks) is not resumed silently."""
    path = _config_file(tmp_path)
    text = path.read_text()
    path.write_text(text.replace('activation = "tanh"', 'activation = "tanh"\ndropout = 0.9', 1))
    run = tmp_path / "run"
    monkeypatch.setattr(session, "DROPOUT_MASK", "threefry")
    cfg = config.load_config(path)
    summary = session.train(cfg, run, out=io.StringIO(), stop_after=1)
    assert summary["status"] == "stopped"
    monkeypatch.undo()
    with pytest.raises(RunError, match=r"dropout_mask: 'threefry' -> 'hash'"):
        session.train(run_dir=run, resume=True, out=io.StringIO())
    summary = session.train(run_dir=run, resume=True, out=io.StringIO(), allow_changed=True)
    assert summary["resumed_with_changes"] == ["dropout_mask"]


def test_the_cli_refuses_a_changed_resume_in_one_line_and_allow_changed_goes_on(tmp_path, capsys):
    from jaxscratch.runs.cli import main

    run = tmp_path / "run"
    assert _train(tmp_path, run, stop_after=2)["status"] == "stopped"
    text = (run / "config.toml").read_text()
    (run / "config.toml").write_text(text.replace("lr = 0.01", "lr = 0.5"))
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "optimizer.lr: 0.01 -> 0.5" in err and "--allow-changed" in err
    assert main(["train", "--allow-changed", str(_config_file(tmp_path))]) == 2
    assert "--allow-changed only applies to --resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--allow-changed"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_with_changes"] == ["optimizer.lr"]


def test_resume_with_changed_data_is_refused(tmp_path):
    run = tmp_path / "run"
    assert _train(tmp_path, run, stop_after=2)["status"] == "stopped"
    _write_data(tmp_path, seed=1)  # same file, other rows
    with pytest.raises(RunError, match="data:X_train") as e:
        session.train(run_dir=run, resume=True, out=io.StringIO())
    assert "data:y_train" in str(e.value)
    _write_data(tmp_path, seed=0)  # put back: resumes
    assert session.train(run_dir=run, resume=True, out=io.StringIO())["status"] == "completed"


# --- a finished run's missing files ------------------------------------------------------------


def test_resuming_a_finished_run_writes_a_missing_summary_and_plot(tmp_path):
    run = tmp_path / "run"
    first = _train(tmp_path, run)
    (run / "summary.json").unlink()
    (run / "loss_curves.png").unlink()
    again = session.train(run_dir=run, resume=True, out=io.StringIO())
    assert (run / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    written = json.loads((run / "summary.json").read_text())
    assert written["status"] == "completed" and written["final"] == first["final"]
    assert again["checkpoint"] == first["checkpoint"]


# --- signals -----------------------------------------------------------------------------------


def test_sigint_during_a_run_checkpoints_stops_and_restores_the_handlers(tmp_path, monkeypatch):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    real = session._Session.on_eval

    def on_eval(self, info, progress):
        if info["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the handler only sets a flag
        real(self, info, progress)

    monkeypatch.setattr(session._Session, "on_eval", on_eval)
    run = tmp_path / "run"
    summary = _train(tmp_path, run)
    assert summary["status"] == "interrupted" and EXIT_CODES["interrupted"] == 130
    assert summary["epochs_done"] == 2
    assert checkpoint.latest(run / "checkpoints").name == "epoch-000002.json"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert EXIT_CODES["terminated"] == 143


def _wait_for_line(proc: subprocess.Popen, text: str, timeout: float = 120.0) -> str:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return "".join(seen)
    proc.kill()
    raise AssertionError(f"no line with {text!r} from the training process:\n{''.join(seen)}")


@pytest.mark.subprocess
def test_a_second_writer_is_refused_and_sigterm_leaves_a_run_that_resumes_bitwise(tmp_path):
    """A real training process: a second train or resume of its dir is refused naming its pid;
    SIGTERM after the first metrics line exits 143, and --resume matches an uninterrupted run."""
    epochs = 60
    cfg_path = _config_file(tmp_path, epochs)
    run = tmp_path / "run"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "jaxscratch", "train", str(cfg_path), "--run-dir", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_for_line(proc, f"epoch  1/{epochs}")
        cfg = config.load_config(cfg_path)
        with pytest.raises(RunError, match=f"in use by process {proc.pid}"):
            session.train(cfg, run, out=io.StringIO())
        with pytest.raises(RunError, match=f"in use by process {proc.pid}"):
            session.train(run_dir=run, resume=True, out=io.StringIO())
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "terminated" and summary["epochs_done"] < epochs
    resumed = session.train(run_dir=run, resume=True, out=io.StringIO())
    assert resumed["status"] == "completed" and resumed["resumed_from"] == summary["epochs_done"]
    whole = tmp_path / "whole"
    assert session.train(cfg, whole, out=io.StringIO())["status"] == "completed"
    assert _leaves(run) == _leaves(whole)


# SIGINT during the first compilation and mid-training, SIGTERM and SIGKILL in a checkpoint
# write, and two trains started at once: tests/test_hostile_processes.py
