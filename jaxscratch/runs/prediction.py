"""``jaxscratch predict``: a run's predictions on new rows, written to a file.

    jaxscratch predict RUN_DIR --data new_rows.csv --out preds.csv [--checkpoint best] [--force]

The rows are raw, as in the run's own data file: the run's preprocessing (its saved
standardisation, MNIST's pixel scaling) is applied to them (:class:`~jaxscratch.runs.datasets.
Preprocessing`). Input formats:

* ``.npy``: one array X (n, *input_shape); MNIST pixels may be (n, 784), (n, 28, 28) or (n, 1, 28, 28).
* ``.npz``: an array ``X`` or ``X_test``; a ``y`` / ``y_test`` beside it is ignored (only counted).
* ``.csv``: the run's CSV layout (its delimiter; a header line if the run's file had one), with or
  without the target column(s), decided by the column count: ``d`` columns are all features, ``d + t``
  columns hold the ``t`` target columns where the run's config puts them (dropped). When the run
  recorded its header, the file's header must name the same columns in the same order. For a
  run not trained on a CSV: a header line, then the features (and optionally the target last).

Outputs: ``.csv`` with a header: regression ``prediction`` (one output) or ``prediction_0`` ..
``prediction_{k-1}``; classification (a softmax cross-entropy run) ``class`` then ``p_0`` ..
``p_{k-1}``, the softmax probabilities (a row whose outputs are not finite gets class -1 and NaN
probabilities); ``.npy``: the raw network outputs (n, ...) in the run's dtype. The file is written
atomically and an existing one is replaced only with ``force=True``. Non-finite predictions are
written, and counted in the returned summary.

Every user error (a missing or unreadable file, a wrong extension, column count or shape, NaN in
the input, an existing output) is a :class:`~jaxscratch.runs.rundir.RunError` with exit code 2.
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxscratch.data import read_csv
from jaxscratch.fileio import write_bytes_atomic
from jaxscratch.runs.checkpoint import manifest_epoch
from jaxscratch.runs.datasets import Preprocessing, csv_header
from jaxscratch.runs.loader import CHECKPOINT_CHOICES, LoadedRun, load_run, x64
from jaxscratch.runs.registry import CLASSIFICATION_LOSSES
from jaxscratch.runs.rundir import DATA_FILE, RunError, read_json
from jaxscratch.train.programs import predict

DATA_SUFFIXES = (".npy", ".npz", ".csv")
OUT_SUFFIXES = (".csv", ".npy")
_CSV_DEFAULTS = {"target": -1, "header": True, "delimiter": ","}


def _data_error(path: Path, message: str) -> RunError:
    return RunError(f"--data {path}: {message}", 2)


def _read_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise _data_error(path, "not a .npy file (no NumPy array header)")
    try:
        X = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise _data_error(path, f"not a readable .npy array ({e})") from None
    if not isinstance(X, np.ndarray):
        raise _data_error(path, "not a .npy array (an .npz archive? name it .npz)")
    return X


def _read_npz(path: Path) -> tuple[np.ndarray, int | None]:
    """``(X, rows of its y or None)`` from an .npz holding X (or X_test)."""
    if not zipfile.is_zipfile(path):
        raise _data_error(path, "not an .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise _data_error(path, "not an .npz archive (a single .npy array? name it .npy)")
            for x_name, y_name in (("X", "y"), ("X_test", "y_test")):
                if x_name in z.files:
                    y = z[y_name] if y_name in z.files else None
                    return z[x_name], (int(y.shape[0]) if y is not None and y.ndim else None)
            found = sorted(z.files)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise _data_error(path, f"not a readable .npz archive ({e})") from None
    raise _data_error(path, f"expected an array X (or X_test); found {found}")


def _target_columns(target: Any, names: list[str] | None, width: int) -> list[int]:
    """The 0-based columns of the run's target spec in a file of ``width`` columns."""
    cols = []
    for t in target if isinstance(target, list) else [target]:
        if isinstance(t, str):
            if names is None or t not in names:
                raise ValueError(f"no target column {t!r} in its header {names}")
            cols.append(names.index(t))
        else:
            cols.append(int(t) % width)
    return cols


def _csv_layout(cfg: dict[str, Any], saved: list[str] | None) -> dict[str, Any]:
    """The run's CSV reading options (the defaults for a run not trained on a CSV), its number
    of target columns and its recorded header (``saved``, or None)."""
    spec = cfg["data"] if cfg["data"]["name"] == "csv" else _CSV_DEFAULTS
    target = spec["target"]
    n_targets = len(target) if isinstance(target, list) else 1
    return {**{k: spec[k] for k in _CSV_DEFAULTS}, "n_targets": n_targets, "saved": saved}


def _read_csv(path: Path, cfg: dict[str, Any], stats: dict[str, Any], d: int) -> np.ndarray:
    """The feature columns of a CSV laid out like the run's data, with or without its targets."""
    lay = _csv_layout(cfg, stats.get("csv_columns"))
    try:
        values, _ = read_csv(path, [], header=lay["header"], delimiter=lay["delimiter"])
        names = csv_header(path, lay["delimiter"]) if lay["header"] else None
        width = values.shape[1]
        if width not in (d, d + lay["n_targets"]):
            raise ValueError(
                f"{width} columns; expected {d} (the features) or {d + lay['n_targets']} "
                f"(features and {lay['n_targets']} target column(s)), as the run's data"
            )
        targets = _target_columns(lay["target"], names, width) if width > d else []
    except (ValueError, OSError) as e:
        raise _data_error(path, str(e).removeprefix(f"{path}: ")) from None
    saved = lay["saved"]
    if names is not None and saved is not None and len(saved) == d + lay["n_targets"]:
        saved_targets = _target_columns(lay["target"], saved, len(saved))
        expected = (
            saved if width > d else [n for c, n in enumerate(saved) if c not in saved_targets]
        )
        if names != expected:
            raise _data_error(path, f"header {names} differs from the run's columns {expected}")
    return values[:, [c for c in range(width) if c not in targets]]


def read_rows(path: str | Path, cfg: dict[str, Any], stats: dict[str, Any], d: int) -> tuple:
    """``(X raw, labelled rows or None)`` of a .npy, .npz or .csv file (see the module doc);
    ``d`` is the run's feature count (a CSV's column count decides whether targets are in it)."""
    p = Path(path)
    if p.suffix not in DATA_SUFFIXES:
        raise _data_error(p, f"expected a {', '.join(DATA_SUFFIXES)} file")
    if not p.is_file():
        raise _data_error(p, "no such file")
    if p.suffix == ".npy":
        return _read_npy(p), None
    if p.suffix == ".npz":
        return _read_npz(p)
    return _read_csv(p, cfg, stats, d), None


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (n, k) logits, stable (the row max subtracted first), float64."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def csv_table(pred: np.ndarray, classification: bool) -> tuple[list[str], np.ndarray]:
    """``(header, values (n, columns))`` of the predictions CSV (see the module docstring)."""
    if pred.ndim == 1:
        pred = pred[:, None]
    if pred.ndim != 2:
        raise RunError(
            f"--out: the outputs have shape {pred.shape}; a .csv holds (n, k) outputs, "
            "write a .npy instead",
            2,
        )
    k = pred.shape[1]
    if not classification:
        return (["prediction"] if k == 1 else [f"prediction_{i}" for i in range(k)]), pred
    finite = np.isfinite(pred).all(axis=1)
    probs = np.full(pred.shape, np.nan)
    probs[finite] = softmax(pred[finite])
    classes = np.where(finite, np.argmax(np.where(finite[:, None], pred, 0), axis=1), -1)
    return ["class", *(f"p_{i}" for i in range(k))], np.column_stack([classes, probs])


def _csv_bytes(header: list[str], values: np.ndarray, classification: bool) -> bytes:
    lines = [",".join(header)]
    for row in values.tolist():
        cells = [repr(float(v)) for v in row]
        if classification:
            cells[0] = str(int(row[0]))
        lines.append(",".join(cells))
    return ("\n".join(lines) + "\n").encode()


def _npy_bytes(pred: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, pred, allow_pickle=False)
    return buf.getvalue()


def _check_out(out: Path, data: Path, force: bool) -> None:
    """Refuse an output that would lose something: an existing file (unless ``force``), a
    directory, the input itself, a missing parent directory, a wrong extension."""
    if out.suffix not in OUT_SUFFIXES:
        raise RunError(f"--out {out}: expected a {' or '.join(OUT_SUFFIXES)} file", 2)
    if not out.parent.is_dir():
        raise RunError(f"--out {out}: no directory {out.parent}", 2)
    if out.is_dir():
        raise RunError(f"--out {out}: is a directory", 2)
    if out.exists() and out.resolve() == data.resolve():
        raise RunError(f"--out {out}: is the input data file", 2)
    if out.exists() and not force:
        raise RunError(f"--out {out}: already exists (pass --force to replace it)", 2)


def _outputs(run: LoadedRun, X: np.ndarray, data: Path) -> np.ndarray:
    prep: Preprocessing = run.preprocessing
    try:
        Xp = prep.apply(X)
    except ValueError as e:
        raise _data_error(data, str(e).removeprefix("Preprocessing.apply: ")) from None
    with x64(run.config):
        try:
            pred = predict(run.net, run.params, jnp.asarray(Xp), batch_size=10_000)
        except (ValueError, TypeError) as e:
            raise _data_error(data, f"the rows do not fit the model: {e}") from None
        return np.asarray(pred)


def predict_run(
    run_dir: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    checkpoint: str | Path = "final",
    force: bool = False,
    seed_index: int | None = None,
) -> dict[str, Any]:
    """Predict ``data`` (.npy/.npz/.csv raw rows) with a run's checkpoint and write ``out``
    (.csv/.npy); see the module docstring for the layouts. ``seed_index``: which seed of a
    ``seeds = N`` run predicts (required there; :func:`~jaxscratch.runs.loader.load_run`'s
    ``run``).

    Returns ``{"rows", "columns", "output_shape", "task", "non_finite_rows", "labelled_rows",
    "epoch" (the checkpoint's), "params_epoch" (whose params), "checkpoint", "data", "out"}``.
    Raises :class:`RunError` (exit 2 for user errors, 1 for a corrupt checkpoint).
    """
    data, out = Path(data), Path(out)
    _check_out(out, data, force)
    try:
        run = load_run(run_dir, checkpoint, optimizer_state=False, run=seed_index)
    except RunError as e:  # name the command line's option, not load_run's argument
        text = str(e).replace("pass run=I", "pass --seed-index I")
        raise RunError(text.replace("run must be", "--seed-index must be"), e.exit_code) from None
    stats = read_json(Path(run_dir) / DATA_FILE)
    X, labelled = read_rows(data, run.config, stats, run.preprocessing.n_features)
    pred = _outputs(run, X, data)
    classification = run.config["loss"] in CLASSIFICATION_LOSSES
    if out.suffix == ".csv":
        header, values = csv_table(pred, classification)
        payload, columns = _csv_bytes(header, values, classification), len(header)
    else:
        payload, columns = _npy_bytes(pred), int(np.prod(pred.shape[1:]))
    _check_out(out, data, force)  # again: it may have appeared while we computed
    write_bytes_atomic(out, payload)
    finite = np.isfinite(pred.reshape(pred.shape[0], -1)).all(axis=1)
    return {
        "rows": int(pred.shape[0]),
        "columns": columns,
        "output_shape": list(pred.shape),
        "task": "classification" if classification else "regression",
        "non_finite_rows": int((~finite).sum()),
        "labelled_rows": labelled,
        "epoch": manifest_epoch(run.checkpoint),
        "params_epoch": int(run.state.epoch),
        "checkpoint": str(run.checkpoint),
        "data": str(data),
        "out": str(out),
    }


def format_prediction(result: dict[str, Any]) -> str:
    """One line: what was written where, from which checkpoint, and the non-finite rows."""
    when = f"epoch {result['epoch']}"
    if result["params_epoch"] != result["epoch"]:
        when += f", params of epoch {result['params_epoch']}"
    line = (
        f"wrote {result['rows']} {result['task']} predictions ({result['columns']} column"
        f"{'s' if result['columns'] != 1 else ''}) to "
        f"{result['out']} from {result['checkpoint']} ({when}); "
        f"{result['non_finite_rows']} non-finite rows"
    )
    if result["labelled_rows"] is not None:
        line += f"; the labels in {result['data']} were ignored"
    return line


PREDICT_EPILOG = """\
--data: raw rows as in the run's own data (the run's preprocessing is applied):
  .npy  one array X (n, *input_shape)   (MNIST: (n, 784), (n, 28, 28) or (n, 1, 28, 28), 0..255)
  .npz  an array X or X_test (a y / y_test beside it is ignored)
  .csv  the run's CSV layout, with or without its target column(s) (decided by the column
        count; the header, when the run's file had one, must name the same columns)
--out: .csv (regression: prediction or prediction_0..k-1; classification: class, p_0..p_k-1
  softmax probabilities) or .npy (the raw outputs). An existing file is kept unless --force.

--checkpoint: final (default; the params the summary reports), best, latest, or a manifest path.
--seed-index I: a run trained with seeds = N holds N models; I (0..N-1) picks seed + I.

exit status: 0 written (non-finite predictions are written and counted), 1 corrupt or
mismatched checkpoint, 2 usage or data error (also: --out exists)."""


def run_predict(args: argparse.Namespace) -> int:
    """The ``predict`` handler: one summary line on stdout, or ``jaxscratch predict: message``
    on stderr for a :class:`RunError`; returns the exit status."""
    try:
        result = predict_run(args.run_dir, args.data, args.out, checkpoint=args.checkpoint,
                             force=args.force, seed_index=args.seed_index)  # fmt: skip
    except RunError as e:
        print(f"jaxscratch predict: {e}", file=sys.stderr)
        return e.exit_code
    print(format_prediction(result))
    return 0


def add_predict_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``predict`` subcommand (handler :func:`run_predict`) to ``sub``."""
    p = sub.add_parser(
        "predict",
        help="write a run's predictions on new rows to a .csv or .npy file",
        description="Load a checkpoint of RUN_DIR (the final one by default), apply the run's "
        "preprocessing to the rows of --data and write the predictions to --out.",
        epilog=PREDICT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `train`")
    p.add_argument("--data", required=True, metavar="FILE", help="the rows (.npy, .npz, .csv)")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write (.csv, .npy)")
    p.add_argument(
        "--checkpoint",
        metavar="|".join(CHECKPOINT_CHOICES) + "|MANIFEST",
        default="final",
        help="which checkpoint (default: final)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.add_argument(
        "--seed-index",
        type=int,
        metavar="I",
        help="a run of seeds = N: predict with seed index I (seed + I, 0..N-1); required there",
    )
    p.set_defaults(func=run_predict)
