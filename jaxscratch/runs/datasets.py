"""The ``[data]`` table: the data sets a config can name, and loading them for a run.

:func:`load_data` returns a :class:`Dataset` (host numpy arrays in the run's dtype) and the
preprocessing constants (``stats``) that ``evaluate --data FILE`` needs to treat new rows as the
training rows were treated: the training rows' feature mean and std when standardised
(:func:`jaxscratch.data.tables.feature_stats`; Boston's over all 506 rows, as the book does), the
pixel mean and std of MNIST, a CSV's header, the number of classes. :func:`preprocessing` turns
them back into a :class:`Preprocessing` whose ``apply`` treats raw rows exactly as training
did. The reading itself is :mod:`jaxscratch.data`'s.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jaxscratch.data import (
    book_preprocess,
    book_split,
    boston_book_data,
    encode_targets,
    feature_stats,
    load_boston,
    load_mnist,
    read_csv,
    read_npz,
    standardize,
)
from jaxscratch.runs.schema import (
    REQUIRED,
    ConfigError,
    Field,
    bool_check,
    check_table,
    choice_check,
    float_check,
    int_check,
    str_check,
    tagged,
)


@dataclass(frozen=True)
class DataSet:
    """A data set a config can name: its keys, a description, and its fixed task (or ``None``:
    from the ``task`` key)."""

    fields: dict[str, Field]
    doc: str
    task: str | None


def _target_check(key: str, value: Any) -> str | int | list:
    """A CSV target column: a header name, a 0-based index (negative counts from the end), or a list."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError(f"{key}: expected a column name or index, got an empty array")
    for i, v in enumerate(items):
        where = f"{key}[{i}]" if isinstance(value, list) else key
        if isinstance(v, bool) or not isinstance(v, int | str):
            raise ConfigError(f"{where}: expected a column name or index, got {v!r}")
    return value


_TASK = Field(choice_check(["regression", "classification"]), "regression")
_CLASSES = Field(int_check(2), None, "number of classes (default: max label + 1)")
_SPLIT = {
    "test_size": Field(float_check(0.0, 1.0, low_open=True, high_open=True), 0.3),
    "split_seed": Field(int_check(0), 80718),
}
_MNIST = {
    "name": Field(str_check),
    "data_dir": Field(str_check, None, "a directory holding the four IDX files"),
    "download": Field(bool_check, True),
    "flatten": Field(bool_check, True, "true: (n, 784); false: (n, 1, 28, 28)"),
    "train_limit": Field(int_check(1), None, "use only the first N training images"),
    "test_limit": Field(int_check(1), None, "use only the first N test images"),
}
_CSV = {
    "name": Field(str_check),
    "path": Field(str_check, REQUIRED, "a CSV file (relative to the config file)"),
    "target": Field(_target_check, -1, "column name(s) or index(es); default the last"),
    "header": Field(bool_check, True),
    "delimiter": Field(str_check, ","),
    "standardize": Field(bool_check, True, "standardise features by the training rows"),
    "task": _TASK,
    "classes": _CLASSES,
    **_SPLIT,
}
_NPZ = {
    "name": Field(str_check),
    "path": Field(str_check, REQUIRED, "an .npz file (relative to the config file)"),
    "standardize": Field(bool_check, False, "standardise features by the training rows"),
    "task": _TASK,
    "classes": _CLASSES,
    **_SPLIT,
}

DATA_SETS: dict[str, DataSet] = {
    "boston": DataSet(
        {"name": Field(str_check)},
        "Boston housing, the book's pipeline: standardise all 506 rows, then the 354/152 split",
        "regression",
    ),
    "mnist": DataSet(
        _MNIST,
        "MNIST with the book's preprocessing (global mean/std of the training pixels, one-hot)",
        "classification",
    ),
    "fashion-mnist": DataSet(_MNIST, "Fashion-MNIST, preprocessed as MNIST", "classification"),
    "csv": DataSet(
        _CSV, "a numeric CSV file: feature columns and target column(s), split by test_size", None
    ),
    "npz": DataSet(
        _NPZ,
        "an .npz of arrays X_train, y_train, X_test, y_test (or X, y, split by test_size)",
        None,
    ),
}


def _resolve_path(value: str, base_dir: Path | None) -> Path:
    p = Path(value).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return p.resolve()


def check_data(key: str, value: Any, base_dir: Path | None) -> dict[str, Any]:
    """Validate ``[data]``; ``path`` and ``data_dir`` made absolute (relative to ``base_dir``)."""
    name, ds = tagged(key, value, "name", DATA_SETS)
    spec = check_table(key, value, ds.fields)
    if "path" in spec:
        p = _resolve_path(spec["path"], base_dir)
        if not p.is_file():
            raise ConfigError(f"{key}.path: no such file: {p}")
        if name == "npz" and p.suffix != ".npz":
            raise ConfigError(f"{key}.path: expected an .npz file, got {p}")
        spec["path"] = str(p)
    if "data_dir" in spec:
        spec["data_dir"] = str(_resolve_path(spec["data_dir"], base_dir))
    return spec


def data_task(cfg: dict[str, Any]) -> str:
    """``"regression"`` or ``"classification"``: the data set's task, or the ``task`` key."""
    spec = cfg["data"]
    return DATA_SETS[spec["name"]].task or spec["task"]


@dataclass
class Dataset:
    """Training and evaluation arrays (host numpy, in the run's dtype) and how they were made.

    task: "regression" (y: (n, k) floats) or "classification" (y: (n, classes) one-hot).
    stats: the preprocessing constants (``feature_mean``/``feature_std`` lists when standardised,
    ``n_classes``), saved in the run directory so ``evaluate --data FILE`` can reuse them.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    task: str
    stats: dict[str, Any] = field(default_factory=dict)
    description: str = ""


def _train_test(spec: dict[str, Any], path: Path) -> tuple[tuple[np.ndarray, ...], str]:
    """``((X_train, y_train, X_test, y_test), how)`` of a csv or npz data set."""
    if spec["name"] == "csv":
        X, y = read_csv(path, spec["target"], header=spec["header"], delimiter=spec["delimiter"])
        parts: dict[str, np.ndarray] = {"X": X, "y": y}
    else:
        parts = read_npz(path)
    if "X" not in parts:
        return tuple(parts[k] for k in ("X_train", "y_train", "X_test", "y_test")), (
            "given train/test arrays"
        )
    X, y = np.asarray(parts["X"]), np.asarray(parts["y"])
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"{path}: X has {X.shape[0]} rows but y has {y.shape[0]}")
    X_train, X_test, y_train, y_test = book_split(X, y, spec["test_size"], spec["split_seed"])
    how = f"split test_size={spec['test_size']} seed={spec['split_seed']}"
    return (X_train, y_train, X_test, y_test), how


def _check_rows(path: Path, what: str, X: np.ndarray, y: np.ndarray) -> None:
    if X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise ValueError(f"{path}: {what} X has {X.shape[0]} rows, y has {y.shape[0]}")
    for name, a in (("features", X), ("targets", y)):
        if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
            raise ValueError(f"{path}: {what} {name} have dtype {a.dtype}; expected real numbers")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{path}: {what} features must be finite numbers")


def _table_data(cfg: dict[str, Any]) -> Dataset:
    """csv or npz: read, split (if needed), encode targets, standardise by the training rows."""
    spec = cfg["data"]
    path, task = Path(spec["path"]), spec["task"]
    (X_train, y_train, X_test, y_test), how = _train_test(spec, path)
    _check_rows(path, "train", X_train, y_train)
    _check_rows(path, "test", X_test, y_test)
    y_train, k = encode_targets(task, y_train, spec.get("classes"), f"{path} (train targets)")
    y_test, _ = encode_targets(task, y_test, k, f"{path} (test targets)")
    X_train = np.asarray(X_train, dtype=np.float64)
    X_test = np.asarray(X_test, dtype=np.float64)
    stats: dict[str, Any] = {"task": task}
    if task == "classification":
        stats["n_classes"] = k
    if spec["name"] == "csv" and spec["header"]:
        stats["csv_columns"] = csv_header(path, spec["delimiter"])
    if spec["standardize"]:
        mean, std = feature_stats(X_train, "data.standardize (training rows)")
        stats.update(feature_mean=mean.tolist(), feature_std=std.tolist())
        X_train, X_test = standardize(X_train, (mean, std)), standardize(X_test, (mean, std))
    desc = f"{spec['name']} {path.name}: {X_train.shape[0]} train / {X_test.shape[0]} test rows ({how})"
    return Dataset(X_train, y_train, X_test, y_test, task, stats, desc)


def _mnist_data(cfg: dict[str, Any]) -> Dataset:
    spec = cfg["data"]
    d = book_preprocess(load_mnist(spec["name"], spec.get("data_dir"), download=spec["download"]))
    X_train, y_train, X_test, y_test = d.X_train, d.y_train, d.X_test, d.y_test
    if "train_limit" in spec:
        X_train, y_train = X_train[: spec["train_limit"]], y_train[: spec["train_limit"]]
    if "test_limit" in spec:
        X_test, y_test = X_test[: spec["test_limit"]], y_test[: spec["test_limit"]]
    if not spec["flatten"]:
        side = int(round(math.sqrt(X_train.shape[1])))
        X_train = X_train.reshape(-1, 1, side, side)
        X_test = X_test.reshape(-1, 1, side, side)
    stats = {"task": "classification", "n_classes": 10, "pixel_mean": d.mean, "pixel_std": d.std}
    desc = (
        f"{spec['name']}: {X_train.shape[0]} train / {X_test.shape[0]} test images "
        f"(pixel mean {d.mean:.4f}, std {d.std:.4f})"
    )
    return Dataset(X_train, y_train, X_test, y_test, "classification", stats, desc)


def _boston_data(cfg: dict[str, Any]) -> Dataset:
    X_train, X_test, y_train, y_test = boston_book_data()
    desc = "boston: 354 train / 152 test rows (book split, standardised over all 506 rows)"
    mean, std = feature_stats(load_boston().X, "boston")  # what boston_book_data standardised by
    stats = {"task": "regression", "feature_mean": mean.tolist(), "feature_std": std.tolist()}
    return Dataset(X_train, y_train, X_test, y_test, "regression", stats, desc)


def csv_header(path: Path, delimiter: str) -> list[str]:
    """The column names on the first non-blank line of a CSV file, stripped as
    :func:`jaxscratch.data.read_csv` strips them."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        for row in csv.reader(f, delimiter=delimiter):
            if row and any(c.strip() for c in row):
                return [h.strip().strip('"') for h in row]
    raise ValueError(f"{path}: empty CSV file")


def load_data(cfg: dict[str, Any]) -> Dataset:
    """The data set of a resolved config, cast to the run's dtype (``cfg["dtype"]``)."""
    name = cfg["data"]["name"]
    if name == "boston":
        ds = _boston_data(cfg)
    elif name in ("mnist", "fashion-mnist"):
        ds = _mnist_data(cfg)
    else:
        ds = _table_data(cfg)
    dt = np.dtype(cfg["dtype"])
    for attr in ("X_train", "y_train", "X_test", "y_test"):
        setattr(ds, attr, np.ascontiguousarray(getattr(ds, attr), dtype=dt))
    return ds


def _eval_npz(p: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(p, allow_pickle=False) as z:
        names = set(z.files)
        if {"X", "y"} <= names:
            return z["X"], z["y"]
        if {"X_test", "y_test"} <= names:
            return z["X_test"], z["y_test"]
    raise ValueError(f"{p}: expected arrays X and y (or X_test and y_test); found {sorted(names)}")


def load_eval_file(cfg: dict[str, Any], path: str | Path, stats: dict[str, Any]) -> tuple:
    """All rows of a CSV or .npz file laid out like the config's data, preprocessed with the
    training run's ``stats`` (:func:`preprocessing`: raw rows, treated as the training rows were;
    MNIST's raw 0..255 pixels). Returns ``(X, y)`` in the run's dtype. An .npz may hold
    ``X``/``y`` or ``X_test``/``y_test``."""
    p = Path(path)
    spec = cfg["data"]
    task = stats.get("task", data_task(cfg))
    if p.suffix == ".npz":
        X, y = _eval_npz(p)
    elif p.suffix == ".csv":
        if spec["name"] != "csv":
            spec = check_table("data", {"name": "csv", "path": str(p)}, _CSV)
        X, y = read_csv(p, spec["target"], header=spec["header"], delimiter=spec["delimiter"])
    else:
        raise ValueError(f"{p}: expected a .csv or .npz file")
    y, _ = encode_targets(task, y, stats.get("n_classes"), str(p))
    dt = np.dtype(cfg["dtype"])
    if "input_shape" in stats:  # every run's data.json has it: exactly the training treatment
        try:
            X = preprocessing(cfg, stats).apply(X)
        except ValueError as e:
            raise ValueError(f"{p}: {str(e).removeprefix('Preprocessing.apply: ')}") from None
    else:
        X = np.asarray(X, dtype=np.float64)
        if "feature_mean" in stats:
            X = standardize(X, (stats["feature_mean"], stats["feature_std"]))
    return np.ascontiguousarray(X, dtype=dt), np.ascontiguousarray(y, dtype=dt)


@dataclass(frozen=True, eq=False)
class Preprocessing:
    """What a run did to its raw input rows, from its ``data.json``: :meth:`apply` does it again.

    input_shape: the shape of one row as the network saw it, e.g. ``(13,)`` or ``(1, 28, 28)``.
    feature_mean / feature_std: per-feature standardisation (arrays of ``input_shape``), or None.
    pixel_mean / pixel_std: MNIST's global pixel scaling of raw 0..255 values, or None.
    dtype: the run's dtype; task, n_classes: as trained (n_classes None for regression).
    """

    input_shape: tuple[int, ...]
    dtype: str
    task: str
    n_classes: int | None = None
    feature_mean: np.ndarray | None = None
    feature_std: np.ndarray | None = None
    pixel_mean: float | None = None
    pixel_std: float | None = None

    @property
    def n_features(self) -> int:
        """The number of input values in one row (the product of ``input_shape``)."""
        return math.prod(self.input_shape)

    def _rows(self, X: np.ndarray) -> np.ndarray:
        """``X`` as (n, *input_shape); pixel rows may come in any layout of the same size."""
        if X.ndim >= 1 and X.shape[1:] == self.input_shape:
            return X
        if (
            self.pixel_mean is not None
            and X.ndim >= 2
            and math.prod(X.shape[1:]) == self.n_features
        ):
            return X.reshape(X.shape[0], *self.input_shape)
        raise ValueError(
            f"Preprocessing.apply: expected rows of shape {self.input_shape} ({self.n_features} "
            f"features), i.e. X of shape (n, {', '.join(map(str, self.input_shape))}); "
            f"got X of shape {X.shape}"
        )

    def _check(self, X: np.ndarray) -> None:
        if not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)):
            raise ValueError(f"Preprocessing.apply: X has dtype {X.dtype}; expected real numbers")
        if X.shape[0] == 0:
            raise ValueError("Preprocessing.apply: X has no rows")
        bad = ~np.isfinite(X.reshape(X.shape[0], -1)).all(axis=1)
        if bad.any():
            raise ValueError(
                f"Preprocessing.apply: row {int(np.argmax(bad))} holds NaN or infinite values "
                f"({int(bad.sum())} such rows)"
            )
        if self.pixel_mean is not None and (X.min() < 0 or X.max() > 255):
            raise ValueError(
                f"Preprocessing.apply: expected raw pixel values in 0..255 (the run scales them "
                f"itself), got values in {float(X.min())}..{float(X.max())}"
            )

    def apply(self, X: np.ndarray) -> np.ndarray:
        """Raw rows ``X`` (n, *input_shape) -> the network's input (n, *input_shape), in the run's
        dtype, computed exactly as the training rows were. MNIST rows may be (n, 784),
        (n, 28, 28) or (n, 1, 28, 28). A wrong shape, a non-numeric dtype, NaN/inf or (MNIST)
        pixels outside 0..255 are a ``ValueError`` naming what was expected and what came."""
        X = np.asarray(X)
        self._check(X)
        X = self._rows(X).astype(np.float64)
        if self.pixel_mean is not None and self.pixel_std is not None:
            X = ((X - self.pixel_mean) / self.pixel_std).astype(np.float32)  # as book_preprocess
        elif self.feature_mean is not None and self.feature_std is not None:
            X = standardize(X, (self.feature_mean, self.feature_std))
        return np.ascontiguousarray(X, dtype=np.dtype(self.dtype))


def preprocessing(cfg: dict[str, Any], stats: dict[str, Any]) -> Preprocessing:
    """The :class:`Preprocessing` of a run from its resolved config and ``data.json`` (``stats``);
    a ``ValueError`` if ``stats`` lacks the input shape."""
    if "input_shape" not in stats:
        raise ValueError("data.json does not record the input shape")
    shape = tuple(int(d) for d in stats["input_shape"])
    mean, std = stats.get("feature_mean"), stats.get("feature_std")
    if cfg["data"]["name"] == "boston" and mean is None:  # a run from before boston saved them
        mean, std = (a.tolist() for a in feature_stats(load_boston().X, "boston"))
    return Preprocessing(
        input_shape=shape,
        dtype=cfg["dtype"],
        task=stats.get("task") or data_task(cfg),
        n_classes=stats.get("n_classes"),
        feature_mean=None if mean is None else np.asarray(mean, dtype=np.float64),
        feature_std=None if std is None else np.asarray(std, dtype=np.float64),
        pixel_mean=stats.get("pixel_mean"),
        pixel_std=stats.get("pixel_std"),
    )
