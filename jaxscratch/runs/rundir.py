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
    .lock              the pid of the process writing the run (held with ``flock`` while it does)

A ``seeds = N`` run keeps the same files, with per-seed values and their mean and std in
``metrics.jsonl`` and ``summary.json`` and the N runs' stacked state in each checkpoint
(:mod:`jaxscratch.runs.seeds`).

Every file is written atomically (:mod:`jaxscratch.fileio`); the metrics log is appended one
fsync'd line at a time, and a torn last line (a run killed mid-write) is skipped when read.

A new run directory is created exclusively (:func:`create_run_dir`); a process that writes a run
directory holds its :class:`RunLock`, so a second writer is refused with the holder's pid (the
lock dies with its process: a stale ``.lock`` file blocks nothing). Checkpoints carry the
:func:`fingerprint` of the resolved config and of the data; :func:`changes` names what differs.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import re
import secrets
import time
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
LOCK_FILE = ".lock"
_TEMP_RE = re.compile(r"\..+\.tmp")  # fileio.atomic_write's temp files: .NAME.XXXXXX.tmp

#: Exit status of each run outcome (the CLI returns these).
EXIT_CODES = {
    "completed": 0,
    "stopped": 0,
    "diverged": 1,
    "failed": 1,
    "interrupted": 130,  # SIGINT (Ctrl-C)
    "terminated": 143,  # SIGTERM
}


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
    """``root/<name>-<YYYYmmdd-HHMMSS>-<6 random hex digits>``: two runs of one config started in
    the same second get different names (the creation itself is exclusive: :func:`create_run_dir`)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    while True:
        path = Path(root) / f"{name}-{stamp}-{secrets.token_hex(3)}"
        if not os.path.lexists(path):
            return path


def _user_files(run_dir: Path) -> list[str]:
    """The names in ``run_dir`` other than its lock file."""
    return sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILE)


def create_run_dir(run_dir: Path) -> bool:
    """Create ``run_dir`` for a new run (``mkdir``, which fails if it exists: two processes cannot
    both create it); an existing empty directory is accepted. Returns whether it was created.
    :class:`RunError` (exit 2) for a file, or a directory that holds anything."""
    run_dir = Path(run_dir)
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir()
        return True
    except FileExistsError:
        pass
    except OSError as e:
        raise RunError(f"cannot create run directory {run_dir}: {e.strerror or e}", 2) from None
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} exists and is not a directory", 2)
    try:
        check_empty(run_dir)
    except RunError:
        # a run writes its lock before any other file: if a process writes it, name that process
        if (run_dir / LOCK_FILE).exists():
            RunLock(run_dir).acquire().release()
        raise
    return False


def check_empty(run_dir: Path) -> None:
    """:class:`RunError` (exit 2) if ``run_dir`` holds anything but its lock file."""
    found = _user_files(run_dir)
    if found:
        raise RunError(
            f"run directory {run_dir} exists and is not empty ({', '.join(found[:3])}"
            f"{', ...' if len(found) > 3 else ''}); continue it with "
            f"`jaxscratch train --resume {run_dir}` or choose another --run-dir",
            exit_code=2,
        )


def _holder(fd: int, tries: int = 20) -> str:
    """The pid in a lock file another process holds (it writes it just after taking the lock:
    wait a moment for it), or ``"unknown"``."""
    for _ in range(tries):
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        if text:
            return text
        time.sleep(0.01)
    return "unknown"


class RunLock:
    """An exclusive ``flock`` on ``RUN_DIR/.lock``, which holds the pid of its holder.

    ``with RunLock(run_dir):`` while a process writes the run directory. A second process (or a
    second lock in this one) is refused with a :class:`RunError` naming the holder's pid. The
    kernel drops the lock when its process dies, so a ``.lock`` left by a killed run blocks
    nothing; the file itself is left in place (removing it could race with a new holder).
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock (non-blocking); :class:`RunError` if another process holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise RunError(
                f"cannot lock run directory {self.path.parent}: {e.strerror}", 2
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _holder(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunError(f"cannot lock {self.path}: {e.strerror}", 2) from None
            raise RunError(
                f"run directory {self.path.parent} is in use by process {holder} (it holds "
                f"{self.path}); wait for it to finish or stop it first",
                exit_code=2,
            ) from None
        pid = f"{os.getpid()}\n".encode()
        os.pwrite(fd, pid, 0)  # then cut the rest: a reader never sees an empty file
        os.ftruncate(fd, len(pid))
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (closing the file releases the ``flock``)."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def clean_temp_files(run_dir: Path) -> list[Path]:
    """Remove the temp files (``.NAME.XXXX.tmp``) a killed write left in ``run_dir`` and its
    checkpoints/ (regular files only; call it while holding the :class:`RunLock`). Returns them."""
    removed = []
    for d in (Path(run_dir), Path(run_dir) / CHECKPOINT_DIR):
        if not d.is_dir() or d.is_symlink():
            continue
        for p in d.iterdir():
            if _TEMP_RE.fullmatch(p.name) and p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"optimizer.lr": 0.01, "layers[0].neurons": 6, ...}`` of a nested config."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k in sorted(obj):
            out.update(_flatten(obj[k], f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    if isinstance(obj, list | tuple) and any(isinstance(v, dict | list | tuple) for v in obj):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out or {prefix: []}
    return {prefix: list(obj) if isinstance(obj, tuple) else obj}


def _canonical(obj: Any) -> bytes:
    return json.dumps(jsonable(obj), sort_keys=True, default=str).encode()


def array_sha256(a: Any) -> str:
    """sha256 of an array's dtype, shape and C-order bytes (a reshape or a cast changes it)."""
    a = np.ascontiguousarray(np.asarray(a))
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def fingerprint(cfg: dict[str, Any], arrays: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint records of the run that made it: the resolved config (flattened, so a
    resume can name the keys that differ) and its sha256, each data array's :func:`array_sha256`
    and the sha256 of them all."""
    data = {k: array_sha256(v) for k, v in sorted(arrays.items())}
    return {
        "config_sha256": fileio.sha256_bytes(_canonical(cfg)),
        "config": jsonable(_flatten(cfg)),
        "data_sha256": fileio.sha256_bytes(_canonical(data)),
        "data": data,
    }


def changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two :func:`fingerprint` s: the config keys (``optimizer.lr``), then
    ``data:<array>`` for each data array that changed. ``[]`` when they agree."""
    out = []
    if saved.get("config_sha256") != now["config_sha256"]:
        old, new = saved.get("config", {}), now["config"]
        out += [k for k in sorted(set(old) | set(new)) if old.get(k, ...) != new.get(k, ...)]
        if not out:
            out.append("config")
    if saved.get("data_sha256") != now["data_sha256"]:
        old, new = saved.get("data", {}), now["data"]
        named = [f"data:{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        out += named or ["data"]
    return out


def describe_changes(saved: dict[str, Any], now: dict[str, Any], keys: list[str]) -> str:
    """The changes :func:`changes` found, as ``optimizer.lr: 0.01 -> 0.1; data:X_train``."""
    old, new = saved.get("config", {}), now["config"]
    parts = []
    for k in keys:
        if k.startswith("data") or k == "config":
            parts.append(k)
        else:
            parts.append(f"{k}: {old.get(k, '(absent)')!r} -> {new.get(k, '(absent)')!r}")
    return "; ".join(parts)


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
