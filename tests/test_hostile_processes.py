"""Hostile moments for real ``jaxscratch train`` processes (issue 12 item 7): two trains into one
run dir at the same instant, a resume while a train holds the lock, and SIGINT / SIGTERM / SIGKILL
during the first compilation, mid-training and inside a checkpoint write. Each interrupted run
exits 130 / 143 (never a segfault or a traceback) and ``--resume`` completes it with final params
bitwise equal to an uninterrupted run; nothing the winner or the user wrote is lost."""

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
from jaxscratch.runs.cli import main

pytestmark = pytest.mark.subprocess

EPOCHS = 20
# a 48-row CSV and a 21-parameter net: an epoch (with its checkpoint) takes milliseconds
CONFIG = """\
seed = 5
epochs = {epochs}
batch_size = 16
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

# Runs main() in a real process. With SLOW_WRITE=N, every checkpoint .npz from epoch N on is
# written slowly: the process prints "WRITING <name>" inside the write, then takes 0.4 s to
# finish it (time for a signal to land mid-write). With BARRIER=1 it waits for a byte on stdin
# before main() (jax already imported), so two processes start their runs at the same instant.
DRIVER = """\
import os, sys, time
from jaxscratch import fileio
from jaxscratch.runs.cli import main
slow = int(os.environ.get("SLOW_WRITE", "0"))
real = fileio.atomic_write
def atomic_write(path, write, mode="wb"):
    name = os.path.basename(str(path))
    if slow and name.endswith(".npz") and int(name[6:12]) >= slow:
        def slowly(f):
            write(f)
            print("WRITING", name, flush=True)
            time.sleep(0.4)
        return real(path, slowly, mode)
    return real(path, write, mode)
fileio.atomic_write = atomic_write
if os.environ.get("BARRIER"):
    print("READY", flush=True)
    sys.stdin.read(1)
sys.exit(main(sys.argv[1:]))
"""


def _setup(d: Path, epochs: int = EPOCHS) -> Path:
    r = np.random.default_rng(1)
    X = r.normal(size=(48, 3))
    y = X @ np.array([0.5, -1.0, 2.0])
    rows = "".join(
        ",".join(repr(float(v)) for v in [*x, t]) + "\n" for x, t in zip(X, y, strict=True)
    )
    (d / "d.csv").write_text("a,b,c,y\n" + rows)
    (d / "c.toml").write_text(CONFIG.format(epochs=epochs))
    (d / "driver.py").write_text(DRIVER)
    return d / "c.toml"


def _start(d: Path, *argv: str, **env: str) -> subprocess.Popen:
    full = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", **env)
    return subprocess.Popen(
        [sys.executable, str(d / "driver.py"), *argv],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=full, cwd=d,
    )  # fmt: skip


def _wait_for(proc: subprocess.Popen, text: str, timeout: float = 60.0) -> None:
    """Read the process's stdout up to a line that contains ``text`` (or, for ``epoch N``,
    the progress line of epoch N)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line or (text.startswith("epoch ") and line.split()[:2] == text.split()):
            return
    proc.kill()
    raise AssertionError(f"no line with {text!r} from the process:\n{''.join(seen)}")


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def _leaves(run: Path) -> dict[str, str]:
    manifest = json.loads(checkpoint.latest(run / "checkpoints").read_text())
    return {e["name"]: e["sha256"] for e in manifest["leaves"]}


def _losses(run: Path) -> list[tuple]:
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["epoch"], r["train_loss"], r["eval_loss"]) for r in recs]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted in-process run of the config: what every resumed run must equal."""
    d = tmp_path_factory.mktemp("reference")
    cfg = config.load_config(_setup(d))
    assert session.train(cfg, d / "run", out=io.StringIO())["status"] == "completed"
    return d / "run"


def _resume_matches(run: Path, reference: Path) -> None:
    """--resume (in-process) completes the run, bitwise equal to the uninterrupted one."""
    before = _digests(run / "checkpoints")
    summary = session.train(run_dir=run, resume=True, out=io.StringIO())
    assert summary["status"] == "completed" and summary["epochs_done"] == EPOCHS
    assert _leaves(run) == _leaves(reference)
    assert _losses(run) == _losses(reference)
    # the checkpoint it resumed from was not rewritten
    latest_before = max(k for k in before if k.endswith(".json"))
    assert (
        _digests(run / "checkpoints").get(latest_before, before[latest_before])
        == before[latest_before]
    )


def _digests(d: Path) -> dict[str, str]:
    from jaxscratch.fileio import sha256_bytes

    return {p.name: sha256_bytes(p.read_bytes()) for p in sorted(d.iterdir()) if p.is_file()}


def test_two_trains_into_one_run_dir_at_once_exactly_one_wins(tmp_path, capsys):
    """Two `train`s released at the same instant into one --run-dir: one completes, the other
    exits 2 naming the winner's pid; a --resume meanwhile is refused the same way; the winner's
    metrics, checkpoints and summary are whole (no line lost or interleaved)."""
    _setup(tmp_path, epochs=EPOCHS)
    run = tmp_path / "run"
    argv = ("train", "c.toml", "--run-dir", str(run))
    procs = [_start(tmp_path, *argv, BARRIER="1") for _ in range(2)]
    for p in procs:
        _wait_for(p, "READY")
    for p in procs:  # go
        p.stdin.write("x")
        p.stdin.flush()
    deadline = time.monotonic() + 60
    while not list((run / "checkpoints").glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.01)
    holder = int((run / ".lock").read_text())
    assert holder in {p.pid for p in procs}
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"is in use by process {holder}" in err, err
    (winner,) = [p for p in procs if p.pid == holder]
    (loser,) = [p for p in procs if p.pid != holder]
    lcode, lerr = _finish(loser)
    wcode, werr = _finish(winner)
    assert (wcode, lcode) == (0, 2), (werr, lerr)
    assert lerr.count("\n") == 1 and "Traceback" not in lerr, lerr
    assert f"is in use by process {holder}" in lerr, lerr
    assert [r[0] for r in _losses(run)] == list(range(1, EPOCHS + 1))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_done"] == EPOCHS
    assert main(["evaluate", str(run)]) == 0  # the final checkpoint verifies
    names = sorted(p.name for p in run.iterdir())
    assert names == sorted([".lock", "checkpoints", "config.toml", "data.json", "loss_curves.png",
                            "metrics.jsonl", "summary.json"])  # fmt: skip


@pytest.mark.parametrize(
    "sig, moment",
    [
        (signal.SIGINT, "compile"),
        (signal.SIGINT, "mid-training"),
        (signal.SIGTERM, "checkpoint write"),
    ],
    ids=["SIGINT compiling", "SIGINT x2 mid-training", "SIGTERM in a checkpoint write"],
)
def test_a_signal_at_a_hostile_moment_exits_cleanly_and_resumes_bitwise(
    tmp_path, reference, sig, moment
):
    """SIGINT during the first compilation, two SIGINTs mid-training, SIGTERM inside a
    checkpoint .npz write: exit 130/143, no traceback, no temp file, and --resume equals the
    uninterrupted run bit for bit."""
    _setup(tmp_path)
    run = tmp_path / "run"
    env = {"SLOW_WRITE": "3"} if moment == "checkpoint write" else {}
    proc = _start(tmp_path, "train", "c.toml", "--run-dir", str(run), **env)
    _wait_for(proc, {"compile": "run dir:", "mid-training": f"epoch 2/{EPOCHS}",
                     "checkpoint write": "WRITING epoch-000003.npz"}[moment])  # fmt: skip
    proc.send_signal(sig)
    if moment == "mid-training":
        proc.send_signal(sig)  # an impatient second Ctrl-C changes nothing
    code, err = _finish(proc)
    assert code == {signal.SIGINT: 130, signal.SIGTERM: 143}[sig], err
    assert "Traceback" not in err and "Segmentation" not in err, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}[sig]
    assert 1 <= summary["epochs_done"] < EPOCHS
    if moment == "checkpoint write":  # the write in progress was finished, then the run stopped
        assert summary["epochs_done"] == 3
        checkpoint.read_manifest(run / "checkpoints" / "epoch-000003.json")
    assert not list(run.rglob("*.tmp"))
    _resume_matches(run, reference)


def test_sigkill_inside_a_checkpoint_write_leaves_a_run_that_resumes_bitwise(tmp_path, reference):
    """kill -9 while epoch 3's .npz is half written: the temp file is cleaned by --resume,
    which continues from epoch 2 and ends bitwise equal to the uninterrupted run."""
    _setup(tmp_path)
    run = tmp_path / "run"
    proc = _start(tmp_path, "train", "c.toml", "--run-dir", str(run), SLOW_WRITE="3")
    _wait_for(proc, "WRITING epoch-000003.npz")
    proc.kill()
    code, _ = _finish(proc)
    assert code == -signal.SIGKILL
    assert list((run / "checkpoints").glob(".epoch-000003.npz.*.tmp"))  # the torn write
    assert checkpoint.latest(run / "checkpoints").name == "epoch-000002.json"
    _resume_matches(run, reference)
    assert not list(run.rglob("*.tmp"))
