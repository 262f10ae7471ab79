"""Numeric tables: CSV and .npz reading, targets, the book's split, train-statistics standardisation.

Everything here works on host numpy arrays, float64, and raises ``ValueError`` naming the file (and
the line, the column or the array) for data that cannot be used.

* :func:`read_csv` / :func:`read_npz`: feature and target arrays of a file.
* :func:`encode_targets`: regression targets as ``(n, k)`` floats, class labels as one-hot rows.
* :func:`book_split`: scikit-learn's ``train_test_split`` rows, as the book splits Boston.
* :func:`feature_stats` and :func:`standardize`: the one standardisation of the package,
  ``(X - mean) / std`` with the population std (ddof=0) of the reference rows (by default ``X``
  itself; pass the training rows' :func:`feature_stats` to standardise the test rows with them).
"""

from __future__ import annotations

import csv
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

TASKS = ("regression", "classification")


def feature_stats(X: Any, fn: str = "standardize") -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std)`` over the rows of ``X`` (n, ...) -> two arrays of shape ``X.shape[1:]``.

    Population std (ddof=0). Non-finite values, no rows or a constant feature are a ``ValueError``
    naming ``fn`` (constant features by their flat index).
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim < 2 or X.shape[0] == 0:
        raise ValueError(f"{fn}: expected a non-empty (n, d) array, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{fn}: X holds NaN or infinite values")
    mean, std = X.mean(axis=0), X.std(axis=0)
    if np.any(std == 0):
        bad = np.flatnonzero(std == 0).tolist()
        raise ValueError(f"{fn}: feature columns {bad} are constant")
    return mean, std


def standardize(X: Any, stats: tuple[Any, Any] | None = None) -> np.ndarray:
    """``(X - mean) / std`` per feature. X: (n, d) (or (n, ...)) -> the same shape, float64.

    ``stats``: ``(mean, std)`` from :func:`feature_stats` of the training rows (the test rows are
    standardised with the training statistics); default: those of ``X`` itself.
    """
    X = np.asarray(X, dtype=np.float64)
    if stats is None:
        mean, std = feature_stats(X)
    else:
        mean, std = (np.asarray(s, dtype=np.float64) for s in stats)
        if X.ndim < 2 or X.shape[1:] != mean.shape or std.shape != mean.shape:
            raise ValueError(
                f"standardize: features of shape {X.shape[1:]}, the statistics are for {mean.shape}"
            )
    return (X - mean) / std


def book_split(
    X: np.ndarray, y: np.ndarray, test_size: float = 0.3, seed: int = 80718
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The rows of scikit-learn's ``train_test_split(X, y, test_size, random_state=seed)``.

    ``perm = RandomState(seed).permutation(n)``; test rows ``perm[:ceil(test_size*n)]``, train rows
    the rest, in that order. Returns ``(X_train, X_test, y_train, y_test)`` as scikit-learn does.
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"book_split: X has {X.shape[0]} rows but y has {y.shape[0]}")
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"book_split: test_size must be in (0, 1), got {test_size}")
    n = X.shape[0]
    n_test = math.ceil(test_size * n)
    if n_test >= n:
        raise ValueError(f"book_split: test_size {test_size} leaves no training rows of {n}")
    perm = np.random.RandomState(seed).permutation(n)
    test, train = perm[:n_test], perm[n_test:]
    return X[train], X[test], y[train], y[test]


def one_hot(labels: np.ndarray, n_classes: int, dtype: Any = np.float32) -> np.ndarray:
    """One-hot rows: labels (n,) integers in 0..n_classes-1 -> (n, n_classes) of ``dtype``.

    Non-integer labels (floats, bools), a shape other than (n,), or a label out of range are a
    ``ValueError`` naming the offending value and index.
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, int | np.integer) or n_classes < 1:
        raise ValueError(f"one_hot: n_classes must be a positive integer, got {n_classes!r}")
    lab = np.asarray(labels)
    if lab.dtype == np.bool_ or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"one_hot: labels must be integers, got dtype {lab.dtype}")
    if lab.ndim != 1:
        raise ValueError(f"one_hot: labels must have shape (n,), got {lab.shape}")
    bad = np.flatnonzero((lab < 0) | (lab >= n_classes))
    if bad.size:
        raise ValueError(
            f"one_hot: label {lab[bad[0]]} at index {bad[0]} is outside 0..{n_classes - 1} "
            f"({bad.size} labels out of range)"
        )
    out = np.zeros((lab.shape[0], int(n_classes)), dtype=dtype)
    out[np.arange(lab.shape[0]), lab] = 1
    return out


def _csv_rows(path: Path, delimiter: str) -> list[list[str]]:
    """The non-blank rows of a UTF-8 CSV file (a byte-order mark is dropped); a file that is not
    UTF-8 is a ``ValueError`` naming the byte offset."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f, delimiter=delimiter))
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path}: not a UTF-8 text file (byte 0x{e.object[e.start]:02x} at offset {e.start})"
        ) from None
    except csv.Error as e:
        raise ValueError(f"{path}: not a readable CSV file ({e})") from None
    return [r for r in rows if r and any(c.strip() for c in r)]


def _row_values(path: Path, line: int, row: list[str], names: list[str] | None) -> list[float]:
    """The cells of one CSV row as finite floats; a text or non-finite cell is a ``ValueError``
    naming the line and the column."""
    values = []
    for j, cell in enumerate(row):
        try:
            v = float(cell)
        except ValueError:
            v = None
        if v is None or not math.isfinite(v):
            column = repr(names[j]) if names is not None else str(j)
            what = "is not a number" if v is None else "is not finite (NaN and inf are refused)"
            raise ValueError(f"{path}: line {line}, column {column}: {cell.strip()!r} {what}")
        values.append(v)
    return values


def _csv_values(path: Path, delimiter: str, header: bool) -> tuple[list[str] | None, np.ndarray]:
    """``(header names or None, values (rows, columns) float64)``; errors name the line."""
    rows = _csv_rows(path, delimiter)
    names, first_line = None, 1
    if header:
        if not rows:
            raise ValueError(f"{path}: empty CSV file")
        names = [h.strip().strip('"') for h in rows[0]]
        rows, first_line = rows[1:], 2
    if not rows:
        raise ValueError(f"{path}: no data rows")
    width = len(names) if names is not None else len(rows[0])
    values = np.empty((len(rows), width), dtype=np.float64)
    for i, r in enumerate(rows):
        if len(r) != width:
            raise ValueError(f"{path}: line {i + first_line} has {len(r)} fields, expected {width}")
        values[i] = _row_values(path, i + first_line, r, names)
    return names, values


def _target_columns(path: Path, target: Any, names: list[str] | None, width: int) -> list[int]:
    targets = target if isinstance(target, list) else [target]
    cols = []
    for t in targets:
        if isinstance(t, str):
            if names is None or t not in names:
                raise ValueError(
                    f"data.target: no column {t!r} in {path}; "
                    f"columns: {names or 'none (header = false)'}"
                )
            if names.count(t) > 1:
                raise ValueError(f"data.target: {path} has {names.count(t)} columns named {t!r}")
            cols.append(names.index(t))
        elif isinstance(t, bool) or not isinstance(t, int | np.integer):
            raise TypeError(
                f"data.target: a column name or integer index, got {type(t).__name__} {t!r}"
            )
        else:
            if not -width <= t < width:
                raise ValueError(
                    f"data.target: column index {t} is outside {path}'s {width} columns"
                )
            cols.append(int(t) % width)
    if len(set(cols)) != len(cols) or len(cols) >= width:
        raise ValueError(f"data.target: columns {targets} leave no feature columns in {path}")
    return cols


def read_csv(
    path: str | Path, target: Any = -1, *, header: bool = True, delimiter: str = ","
) -> tuple[np.ndarray, np.ndarray]:
    """``(X (n, d), y (n, k))`` float64 from a numeric CSV file.

    ``target``: a header name, a 0-based column index (negative counts from the end) or a list of
    them; every other column is a feature. Errors name the file and the line or the column.
    """
    p = Path(path)
    names, values = _csv_values(p, delimiter, header)
    cols = _target_columns(p, target, names, values.shape[1])
    feats = [c for c in range(values.shape[1]) if c not in cols]
    return values[:, feats], values[:, cols]


def _npz_arrays(p: Path) -> dict[str, np.ndarray]:
    """Every array of the .npz at ``p`` (no pickles); a file that is not an .npz archive is a
    ``ValueError`` naming it."""
    try:
        z = np.load(p, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile) as e:
        if "pickle" in str(e).lower():  # numpy's message for a file of pickled data
            e = ValueError("it holds pickled data, which is never loaded")
        raise ValueError(f"{p}: not a readable .npz archive ({e})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"{p}: not an .npz archive (it holds a single .npy array)")
    with z:
        try:
            return {k: z[k] for k in z.files}
        except (ValueError, EOFError, OSError, zipfile.BadZipFile) as e:
            if "pickle" in str(e).lower():  # an object array
                e = ValueError("an array of Python objects, which is never loaded")
            raise ValueError(f"{p}: not a readable .npz archive ({e})") from None


def _check_npz_arrays(p: Path, arrays: dict[str, np.ndarray]) -> None:
    """Real, finite numbers; each X_* and its y_* with as many rows."""
    for k, a in arrays.items():
        if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
            raise ValueError(f"{p}: array {k} has dtype {a.dtype}; expected real numbers")
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            i = tuple(int(j) for j in np.argwhere(~np.isfinite(a))[0])
            raise ValueError(f"{p}: array {k} holds a non-finite value ({a[i]} at index {i})")
    for x, y in (("X", "y"), ("X_train", "y_train"), ("X_test", "y_test")):
        if x in arrays and y in arrays:
            nx, ny = arrays[x].shape[:1], arrays[y].shape[:1]
            if not nx or not ny or nx != ny:
                raise ValueError(
                    f"{p}: array {x} has shape {arrays[x].shape} but {y} has shape "
                    f"{arrays[y].shape}; expected as many rows in each"
                )


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz (no pickles): ``X_train, y_train, X_test, y_test`` or ``X, y``.

    Each X and its y must have as many rows (axis 0), hold integers or floats, and no NaN or
    infinite value; anything else (and a file that is not an .npz) is a ``ValueError`` naming
    the file and the array.
    """
    p = Path(path)
    arrays = _npz_arrays(p)
    names = set(arrays)
    if {"X_train", "y_train", "X_test", "y_test"} <= names:
        keys: tuple[str, ...] = ("X_train", "y_train", "X_test", "y_test")
    elif {"X", "y"} <= names:
        keys = ("X", "y")
    else:
        raise ValueError(
            f"{p}: expected arrays X_train, y_train, X_test, y_test (or X and y); found "
            f"{sorted(names)}"
        )
    chosen = {k: arrays[k] for k in keys}
    _check_npz_arrays(p, chosen)
    return chosen


def _class_labels(y: np.ndarray, where: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """Integer class ids, flat, and the shape to give the one-hot rows back (without k)."""
    shape = y.shape[:-1] if y.ndim == 2 and y.shape[1] == 1 else y.shape
    labels = y.reshape(-1)
    if labels.size == 0:
        raise ValueError(f"{where}: no labels")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating):
            raise ValueError(f"{where}: class labels must be integers, got dtype {labels.dtype}")
        bad = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"{where}: class labels must be integers (or one-hot float rows); label "
                f"{labels[i]} at index {i} is not ({bad.size} non-integer labels)"
            )
        labels = labels.astype(np.int64)
    return labels, shape


def encode_targets(
    task: str, y: Any, n_classes: int | None = None, where: str = "encode_targets"
) -> tuple[np.ndarray, int | None]:
    """``(targets float64, n_classes)``.

    Regression: y as (n, k), an (n,) vector made a column; ``n_classes`` None. Classification:
    one-hot rows (n, k) (or (n, T, k) per time step) from integer ids (n,), (n, 1) or (n, T), or
    float one-hot rows passed through; ``n_classes`` default max label + 1. ``where`` names the
    data in errors.
    """
    y = np.asarray(y)
    if task == "regression":
        if y.ndim == 1:
            y = y[:, None]
        if y.ndim != 2:
            raise ValueError(f"{where}: regression targets must be (n,) or (n, k), got {y.shape}")
        return y.astype(np.float64), None
    if task != "classification":
        raise ValueError(f"{where}: task must be one of {TASKS}, got {task!r}")
    if np.issubdtype(y.dtype, np.floating) and y.ndim >= 2 and y.shape[-1] > 1:
        if n_classes is not None and y.shape[-1] != n_classes:
            raise ValueError(f"{where}: {y.shape[-1]} one-hot columns, expected {n_classes}")
        return y.astype(np.float64), y.shape[-1]
    labels, shape = _class_labels(y, where)
    k = n_classes if n_classes is not None else int(labels.max()) + 1
    try:
        encoded = one_hot(labels, k, np.float64)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return encoded.reshape(*shape, k), k
