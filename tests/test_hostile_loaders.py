"""Hostile and careless data files (issue 12 item 7): IDX files (raw and gzipped, wrong magic,
lying headers, truncated), CSVs (NaN, ragged rows, text cells, encodings), .npz archives and the
Boston CSV. Each refusal is a ValueError (or TypeError) naming the file and what is wrong with it,
and the file the user had is byte for byte what it was."""

from __future__ import annotations

import contextlib
import gzip
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from jaxscratch import fileio
from jaxscratch.data import mnist as mnistmod
from jaxscratch.data import read_csv, read_idx, read_npz
from jaxscratch.data.boston import BOSTON_SHA256, boston_csv_path, load_boston
from jaxscratch.data.idx import IDX_DTYPES
from jaxscratch.data.mnist import MNIST_DATASETS, IdxFile, MnistSpec, load_mnist


@contextlib.contextmanager
def untouched(*paths: Path) -> Iterator[None]:
    """Assert that every path holds the same bytes after the block as before it."""
    before = {p: fileio.sha256_bytes(p.read_bytes()) for p in paths}
    yield
    assert {p: fileio.sha256_bytes(p.read_bytes()) for p in paths} == before


def _header(dims: tuple[int, ...], code: int = 0x08) -> bytes:
    return bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------------------
# IDX
# ------------------------------------------------------------------------------------------------

IDX_CASES = {
    "empty file": (b"", r"is truncated: 0 bytes, an IDX header needs at least 4"),
    "wrong magic (a PNG)": (
        b"\x89PNG\r\n\x1a\n" + b"\0" * 8,
        r"has bad magic number 0x89504e47: an IDX file starts with two zero",
    ),
    "unknown dtype code": (
        _header((1,), 0x0A) + b"x",
        r"has bad magic number 0x00000a01: unknown dtype code 0x0a",
    ),
    "zero dims": (bytes([0, 0, 8, 0]), r"has magic number 0x00000800, which declares 0 dims"),
    "header cut in its dims": (
        _header((3, 4))[:9],
        r"is truncated: its magic number declares 2 dims",
    ),
    "header says more rows than held": (
        _header((3, 4)) + b"\0" * 5,
        r"is truncated: dims \(3, 4\) of 1-byte items need 12 data bytes .* holds 5",
    ),
    "header says fewer rows than held": (_header((3,)) + b"\0" * 5, r"is too long: dims \(3,\)"),
    "header lies about the item size": (
        _header((2,), 0x0E) + b"\0" * 8,  # doubles: 16 bytes needed
        r"is truncated: dims \(2,\) of 8-byte items need 16 data bytes",
    ),
}


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("data, match", IDX_CASES.values(), ids=IDX_CASES.keys())
def test_malformed_idx_files_are_named_value_errors(tmp_path, data, match, gz):
    """A malformed IDX file, raw or gzipped: ValueError naming the path and the defect."""
    p = _write(tmp_path / "x-idx1-ubyte", gzip.compress(data) if gz else data)
    with untouched(p), pytest.raises(ValueError, match=f"read_idx: {re.escape(str(p))} " + match):
        read_idx(p)


GZ = gzip.compress(_header((100,)) + b"\1" * 100)
GZ_CASES = {
    "cut in half": GZ[: len(GZ) // 2],
    "cut by its last byte": GZ[:-1],
    "flipped CRC": GZ[:-8] + bytes([GZ[-8] ^ 1]) + GZ[-7:],
    "bit flip in the stream": GZ[:12] + bytes(b ^ 0xFF for b in GZ[12:16]) + GZ[16:],
    "junk after the stream": GZ + b"junk",
    "the gzip magic alone": b"\x1f\x8b",
}


@pytest.mark.parametrize("data", GZ_CASES.values(), ids=GZ_CASES.keys())
def test_corrupt_or_truncated_gzip_is_named(tmp_path, data):
    """A damaged .gz (truncated, bad CRC, flipped bits, trailing junk): ValueError naming it."""
    p = _write(tmp_path / "x-idx1-ubyte.gz", data)
    with (
        untouched(p),
        pytest.raises(ValueError, match=f"read_idx: {re.escape(str(p))} is a corrupt or truncated"),
    ):
        read_idx(p)


def test_a_second_gzip_member_is_data_beyond_the_header(tmp_path):
    """Two concatenated gzip members (valid gzip): the extra byte makes the file too long."""
    p = _write(tmp_path / "x.gz", GZ + gzip.compress(b"x"))
    with untouched(p), pytest.raises(ValueError, match=r"too long: .* holds 101"):
        read_idx(p)


def test_every_idx_dtype_is_read_big_endian_into_native_order(tmp_path):
    """Each of the six IDX dtype codes, gzipped: the values as written, native byte order."""
    for code, dtype in IDX_DTYPES.items():
        want = np.array([[1, 2, 3], [4, 5, 120]]).astype(dtype)
        p = _write(tmp_path / f"{code}.gz", gzip.compress(_header((2, 3), code) + want.tobytes()))
        got = read_idx(p)
        assert got.dtype == dtype.newbyteorder("=") and got.dtype.isnative
        np.testing.assert_array_equal(got, want)
        got[0, 0] = 9  # a new, writable array
    p = _write(tmp_path / "empty-rows", _header((0, 5)))
    assert read_idx(p).shape == (0, 5)


def test_a_directory_or_a_missing_idx_file_is_an_os_error(tmp_path):
    """A directory or a missing path given as an IDX file: the OSError that names it."""
    with pytest.raises(IsADirectoryError):
        read_idx(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope"):
        read_idx(tmp_path / "nope")


# ------------------------------------------------------------------------------------------------
# MNIST-format directories (a tiny spec: 4 training and 2 test images of 2x2 pixels)
# ------------------------------------------------------------------------------------------------

TINY = MnistSpec(
    title="Tiny",
    mirrors=(),
    files=tuple(IdxFile(f.name, 0, "", "") for f in MNIST_DATASETS["mnist"].files),  # type: ignore[arg-type]
    n_train=4,
    n_test=2,
    image_shape=(2, 2),
)


def _tiny_dir(d: Path, labels=(0, 1, 9, 3), test_images=2, code=0x08) -> list[Path]:
    d.mkdir()
    parts = [
        _header((4, 2, 2)) + bytes(range(16)),
        _header((len(labels),), code) + bytes(labels) * (1 if code == 0x08 else 4),
        _header((test_images, 2, 2)) + bytes(4 * test_images),
        _header((2,)) + bytes([5, 6]),
    ]
    return [
        _write(d / f"{f.name}.gz", gzip.compress(b)) for f, b in zip(TINY.files, parts, strict=True)
    ]


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(labels=(0, 1, 10, 3)), r"train-labels-idx1-ubyte.gz: label 10 at index 2 is outside"),
        (dict(labels=(0, 1, 2)), r"holds 3 labels but .*train-images-idx3-ubyte.gz holds 4"),
        (dict(test_images=3), r"t10k-images-idx3-ubyte.gz holds uint8 images of shape \(3, 2, 2\)"),
        (dict(code=0x0C), r"train-labels-idx1-ubyte.gz holds int32 labels"),
    ],
    ids=["label 10", "fewer labels", "more test images", "int labels"],
)
def test_an_mnist_directory_with_a_bad_file_names_it(tmp_path, monkeypatch, kw, match):
    """An MNIST-format directory whose labels or images disagree: ValueError naming the file."""
    monkeypatch.setitem(mnistmod.MNIST_DATASETS, "tiny", TINY)
    files = _tiny_dir(tmp_path / "tiny", **kw)
    with untouched(*files), pytest.raises(ValueError, match=match):
        load_mnist("tiny", tmp_path, download=False, verify=False)


def test_a_good_tiny_mnist_directory_loads_and_verify_names_the_unpublished_file(
    tmp_path, monkeypatch
):
    """Correct files of your own load with verify=False; verify=True names the first file."""
    monkeypatch.setitem(mnistmod.MNIST_DATASETS, "tiny", TINY)
    files = _tiny_dir(tmp_path / "tiny")
    with untouched(*files):
        m = load_mnist("tiny", tmp_path, download=False, verify=False)
        np.testing.assert_array_equal(m.train_labels, [0, 1, 9, 3])
        with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz is not the published"):
            load_mnist("tiny", tmp_path, download=False, verify=True)


# ------------------------------------------------------------------------------------------------
# CSV
# ------------------------------------------------------------------------------------------------

CSV_CASES = {
    "NaN cell": ("a,b,y\n1,2,3\n1,nan,3\n", r"line 3, column 'b': 'nan' is not finite"),
    "inf target": ("a,b,y\n1,2,3\n1,2,-inf\n", r"line 3, column 'y': '-inf' is not finite"),
    "text cell": ("a,b,y\n1,2,3\n1,two,3\n", r"line 3, column 'b': 'two' is not a number"),
    "empty cell": ("a,b,y\n1,2,3\n1,,3\n", r"line 3, column 'b': '' is not a number"),
    "decimal comma": ('a,b,y\n1,"2,5",3\n', r"line 2, column 'b': '2,5' is not a number"),
    "ragged short row": ("a,b,y\n1,2,3\n1,2\n", r"line 3 has 2 fields, expected 3"),
    "ragged long row": ("a,b,y\n1,2,3,4\n", r"line 2 has 4 fields, expected 3"),
    "header only": ("a,b,y\n", r"no data rows"),
    "empty file": ("", r"empty CSV file"),
    "NUL byte": ("a,b,y\n1,\0,3\n", r"line 2, column 'b': '\\x00' is not a number"),
}


@pytest.mark.parametrize("text, match", CSV_CASES.values(), ids=CSV_CASES.keys())
def test_bad_csv_cells_and_rows_name_the_line_and_column(tmp_path, text, match):
    """A CSV with a bad cell or row: ValueError naming the file, the line and the column."""
    p = _write(tmp_path / "d.csv", text.encode())
    with untouched(p), pytest.raises(ValueError, match=re.escape(f"{p}: ") + match):
        read_csv(p, "y")


def test_a_latin1_csv_names_the_byte_and_a_bom_is_dropped(tmp_path):
    """A Latin-1 CSV: ValueError naming the byte; an Excel UTF-8 BOM: the first column found."""
    p = _write(tmp_path / "l.csv", "a,b,y\n1,2,3\n4,5,6 \xe9\n".encode("latin-1"))
    with untouched(p), pytest.raises(ValueError, match=r"not a UTF-8 text file \(byte 0xe9 at"):
        read_csv(p)
    p = _write(tmp_path / "bom.csv", "\ufeffa,b,y\n1,2,3\n4,5,6\n".encode())
    X, y = read_csv(p, "a")
    np.testing.assert_array_equal(y, [[1.0], [4.0]])
    np.testing.assert_array_equal(X, [[2.0, 3.0], [5.0, 6.0]])


@pytest.mark.parametrize(
    "target, exc, match",
    [
        ("a", ValueError, r"has 2 columns named 'a'"),
        (True, TypeError, r"a column name or integer index, got bool True"),
        (1.0, TypeError, r"got float 1.0"),
        (5, ValueError, r"column index 5 is outside"),
        (["y", -1], ValueError, r"leave no feature columns|columns \['y', -1\]"),
    ],
    ids=["ambiguous name", "bool", "float", "out of range", "same column twice"],
)
def test_a_bad_csv_target_is_refused_not_guessed(tmp_path, target, exc, match):
    """An ambiguous, mistyped or out-of-range target column: refused, never a silent pick."""
    p = _write(tmp_path / "d.csv", b"a,a,y\n1,2,3\n4,5,6\n")
    with untouched(p), pytest.raises(exc, match=match):
        read_csv(p, target)


# ------------------------------------------------------------------------------------------------
# .npz
# ------------------------------------------------------------------------------------------------


def _npz_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    ok = tmp_path / "ok.npz"
    np.savez(ok, X=np.ones((3, 2)), y=np.ones(3))
    cases = {}

    def case(name: str, match: str, **arrays) -> None:
        p = tmp_path / f"{name}.npz"
        np.savez(p, **arrays)
        cases[name] = (p, match)

    case("nan", r"array X holds a non-finite value \(nan at index \(1, 0\)\)",
         X=np.array([[0.0, 1], [np.nan, 2]]), y=np.ones(2))  # fmt: skip
    case(
        "rows",
        r"array X has shape \(3, 2\) but y has shape \(5,\); expected as many rows",
        X=np.ones((3, 2)),
        y=np.ones(5),
    )
    case("object", r"not a readable .npz archive \(an array of Python objects, which is never",
         X=np.array([{"a": 1}], dtype=object), y=np.ones(1))  # fmt: skip
    case("names", r"expected arrays X_train, .*found \['features', 'labels'\]",
         features=np.ones((2, 2)), labels=np.ones(2))  # fmt: skip
    np.save(tmp_path / "single.npy", np.ones(3))
    cases["npy"] = (tmp_path / "single.npy", r"not an .npz archive \(it holds a single .npy")
    _write(tmp_path / "cut.npz", ok.read_bytes()[: ok.stat().st_size // 2])
    cases["truncated"] = (tmp_path / "cut.npz", r"not a readable .npz archive")
    _write(tmp_path / "pickle.npz", b"\x80\x04\x95 pickled")
    cases["pickle"] = (
        tmp_path / "pickle.npz",
        r"not a readable .npz archive \(it holds pickled data, which is never loaded",
    )
    return cases


NPZ_IDS = ["nan", "rows", "object", "names", "npy", "truncated", "pickle"]


@pytest.mark.parametrize("case", NPZ_IDS)
def test_bad_npz_archives_are_named_value_errors(tmp_path, case):
    """A .npz that is truncated, pickled, not an .npz, NaN-holding or ragged: ValueError."""
    p, match = _npz_cases(tmp_path)[case]
    with untouched(p), pytest.raises(ValueError, match=re.escape(f"{p}: ") + match):
        read_npz(p)


# ------------------------------------------------------------------------------------------------
# Boston
# ------------------------------------------------------------------------------------------------

SHIPPED = boston_csv_path().read_bytes()
BOSTON_CASES = {
    "one digit changed": (SHIPPED.replace(b",24\r\n", b",25\r\n", 1), BOSTON_SHA256,
                          r"is corrupt or not the expected file: sha256 [0-9a-f]{64}, expected"),
    "empty": (b"", None, r"is empty \(expected a header and 506 rows\)"),
    "cut mid-row": (SHIPPED[: len(SHIPPED) // 2], None, r"line 254 has 6 fields, expected 14"),
    "binary junk": (b"\xff\xfe" + SHIPPED, None, r"is not a UTF-8 text file \(byte 0xff at offset 0"),
    "NaN price": (SHIPPED.replace(b",24\r\n", b",nan\r\n", 1), None, r"line 2 holds a non-finite"),
    "text cell": (SHIPPED.replace(b",24\r\n", b",n/a\r\n", 1), None, r"line 2: could not convert"),
    "other header": (SHIPPED.replace(b'"MEDV"', b'"PRICE"', 1), None, r"has header .*PRICE"),
}  # fmt: skip


@pytest.mark.parametrize("data, sha, match", BOSTON_CASES.values(), ids=BOSTON_CASES.keys())
def test_a_corrupt_boston_csv_is_named(tmp_path, data, sha, match):
    """A corrupt Boston CSV (checked by sha256, or by its rows with sha256=None): ValueError."""
    assert data != SHIPPED
    p = _write(tmp_path / "boston.csv", data)
    with untouched(p), pytest.raises(ValueError, match=re.escape(f"load_boston: {p} ") + match):
        load_boston(p, sha256=sha)


def test_the_shipped_boston_csv_copied_loads_unchanged(tmp_path):
    """A byte-for-byte copy of the shipped CSV: accepted, 506 rows, the shipped file untouched."""
    p = tmp_path / "boston.csv"
    shutil.copy(boston_csv_path(), p)
    with untouched(p, boston_csv_path()):
        b = load_boston(p)
    assert b.X.shape == (506, 13) and b.y.shape == (506, 1) and b.y[0, 0] == 24.0
