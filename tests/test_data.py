"""Tests for jaxscratch.data (Boston, IDX/MNIST loading, the book's preprocessing) and metrics.

No test needs MNIST or the network: MNIST-format tests write tiny IDX files (6 train / 4 test
images of 28x28) and register them as a data set named "tiny"; downloads go through a fake
``urlopen``. The tests on the real files are skipped when the files are absent.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from jaxscratch import data
from jaxscratch.data import (
    BOSTON_SHA256,
    MNIST,
    IdxFile,
    MnistSpec,
    book_preprocess,
    book_split,
    boston_book_data,
    boston_csv_path,
    encode_targets,
    feature_stats,
    load_boston,
    load_mnist,
    locate_mnist,
    mnist_cache_dir,
    mnist_search_path,
    one_hot,
    read_csv,
    read_idx,
    standardize,
)

REAL_MNIST = Path("/work/shared/data/mnist")
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
NAMES += ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# ------------------------------------------------------------------------------------------------
# Boston
# ------------------------------------------------------------------------------------------------


def test_load_boston_shapes_and_checksum():
    b = load_boston()
    assert b.X.shape == (506, 13) and b.y.shape == (506, 1)
    assert b.X.dtype == np.float64 and b.y.dtype == np.float64
    assert b.feature_names[0] == "CRIM" and b.feature_names[-1] == "LSTAT"
    assert hashlib.sha256(boston_csv_path().read_bytes()).hexdigest() == BOSTON_SHA256
    assert b.y[0, 0] == 24.0  # MEDV of the first row


def test_load_boston_rejects_a_corrupted_copy(tmp_path):
    text = boston_csv_path().read_bytes()
    bad = text.replace(b"24", b"25", 1)  # one changed digit in the first data row
    assert bad != text
    p = tmp_path / "boston.csv"
    p.write_bytes(bad)
    got = hashlib.sha256(bad).hexdigest()
    with pytest.raises(ValueError, match="sha256") as e:
        load_boston(p)
    assert str(p) in str(e.value) and got in str(e.value) and BOSTON_SHA256 in str(e.value)
    b = load_boston(p, sha256=None)  # own file, check skipped: loads, with the changed value
    assert b.X.shape == (506, 13)


def test_book_split_rows_match_sklearn_recipe():
    X = np.arange(506)[:, None] * np.ones((1, 13))
    y = np.arange(506, dtype=np.float64)[:, None]
    X_train, X_test, y_train, y_test = book_split(X, y)
    perm = np.random.RandomState(80718).permutation(506)
    np.testing.assert_array_equal(X_test[:, 0], perm[:152])
    np.testing.assert_array_equal(X_train[:, 0], perm[152:])
    np.testing.assert_array_equal(y_test[:, 0], perm[:152])
    np.testing.assert_array_equal(y_train[:, 0], perm[152:])
    with pytest.raises(ValueError, match="rows"):
        book_split(X, y[:-1])
    with pytest.raises(ValueError, match="test_size"):
        book_split(X, y, test_size=1.0)


def test_boston_book_data_shapes():
    X_train, X_test, y_train, y_test = boston_book_data()
    assert X_train.shape == (354, 13) and X_test.shape == (152, 13)
    assert y_train.shape == (354, 1) and y_test.shape == (152, 1)
    both = np.concatenate([X_train, X_test])  # standardised over all 506 rows before the split
    np.testing.assert_allclose(both.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(both.std(axis=0), 1.0, rtol=1e-12)


def test_standardize():
    Z = standardize(load_boston().X)
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Z.std(axis=0), 1.0, rtol=1e-12)  # population std
    np.testing.assert_allclose(standardize([[1.0], [3.0]]), [[-1.0], [1.0]])
    with pytest.raises(ValueError, match="NaN"):
        standardize([[1.0, 2.0], [np.nan, 3.0]])
    with pytest.raises(ValueError, match="constant"):
        standardize([[1.0, 2.0], [1.0, 3.0]])
    with pytest.raises(ValueError, match="shape"):
        standardize(np.ones(3))


def test_standardize_test_rows_with_the_training_statistics():
    rng = np.random.default_rng(0)
    train, test = rng.normal(3.0, 2.0, (40, 3)), rng.normal(3.0, 2.0, (10, 3))
    mean, std = feature_stats(train)
    np.testing.assert_allclose(standardize(train, (mean, std)), standardize(train), rtol=1e-15)
    z = standardize(test, (mean, std))
    np.testing.assert_allclose(z, (test - train.mean(0)) / train.std(0), rtol=1e-15)
    assert abs(z.mean()) > 1e-3  # not the test rows' own statistics
    with pytest.raises(ValueError, match=r"features of shape \(2,\).*\(3,\)"):
        standardize(test[:, :2], (mean, std))


def test_read_csv_and_targets(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("a,b,y\n1,2,0\n3,4,2\n5,6,1\n")
    X, y = read_csv(p, "y")
    np.testing.assert_array_equal(X, [[1, 2], [3, 4], [5, 6]])
    Y, k = encode_targets("classification", y, where="t.csv")
    assert k == 3 and Y.shape == (3, 3) and Y.argmax(1).tolist() == [0, 2, 1]
    assert encode_targets("regression", y[:, 0])[0].shape == (3, 1)
    with pytest.raises(ValueError, match="class labels must be integers"):
        encode_targets("classification", np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="leave no feature columns"):
        read_csv(p, ["a", "b", "y"])
    with pytest.raises(ValueError, match="line 3"):
        p.write_text("a,b,y\n1,2,0\n3,x,2\n")
        read_csv(p)


# ------------------------------------------------------------------------------------------------
# IDX files
# ------------------------------------------------------------------------------------------------

CODES = {
    "uint8": 0x08,
    "int8": 0x09,
    "int16": 0x0B,
    "int32": 0x0C,
    "float32": 0x0D,
    "float64": 0x0E,
}


def idx_bytes(a: np.ndarray) -> bytes:
    """The IDX encoding of ``a`` (header + big-endian data)."""
    a = np.asarray(a)
    header = bytes([0, 0, CODES[a.dtype.name], a.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return header + a.astype(a.dtype.newbyteorder(">")).tobytes()


def gz(raw: bytes) -> bytes:
    return gzip.compress(raw, mtime=0)


@pytest.mark.parametrize("dtype", list(CODES))
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, dtype, compress):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    p = tmp_path / ("x.idx.gz" if compress else "x.idx")
    p.write_bytes(gz(idx_bytes(a)) if compress else idx_bytes(a))
    b = read_idx(p)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative and b.shape == (3, 4, 5)
    np.testing.assert_array_equal(b, a)
    b[0, 0, 0] = 1  # a fresh, writable array
    assert read_idx(str(p)).shape == (3, 4, 5)


def test_read_idx_detects_gzip_by_content(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    (tmp_path / "gz_named_raw").write_bytes(gz(idx_bytes(a)))
    (tmp_path / "raw_named.gz").write_bytes(idx_bytes(a))
    np.testing.assert_array_equal(read_idx(tmp_path / "gz_named_raw"), a)
    np.testing.assert_array_equal(read_idx(tmp_path / "raw_named.gz"), a)
    empty = np.zeros((0, 28), np.uint8)
    (tmp_path / "empty").write_bytes(idx_bytes(empty))
    assert read_idx(tmp_path / "empty").shape == (0, 28)


GOOD = idx_bytes(np.arange(24, dtype=np.int16).reshape(2, 3, 4))  # 16-byte header + 48 bytes

BAD_IDX = {
    "bad magic": (b"\x1f\x00" + GOOD[2:], "bad magic number 0x1f00"),
    "unknown dtype code": (GOOD[:2] + b"\x0a" + GOOD[3:], "unknown dtype code 0x0a"),
    "zero dims": (b"\x00\x00\x08\x00", "0 dims"),
    "empty file": (b"", "truncated"),
    "truncated header": (GOOD[:10], "truncated.*declares 3 dims"),
    "truncated data": (GOOD[:-1], "truncated.*need 48 data bytes.*holds 47"),
    "trailing bytes": (GOOD + b"\x00", "too long.*holds 49"),
    "wrong dims": (GOOD[:4] + (3).to_bytes(4, "big") + GOOD[8:], "truncated.*dims \\(3, 3, 4\\)"),
    "truncated gzip": (gz(GOOD)[:-12], "corrupt or truncated gzip"),
    "corrupt gzip": (gz(GOOD)[:-8] + b"\x00" * 8, "corrupt or truncated gzip"),
}


@pytest.mark.parametrize("case", list(BAD_IDX))
def test_read_idx_rejects_corrupt_files(tmp_path, case):
    content, reason = BAD_IDX[case]
    p = tmp_path / f"{case.replace(' ', '_')}-idx"
    p.write_bytes(content)
    with pytest.raises(ValueError, match=reason) as e:
        read_idx(p)
    assert str(p) in str(e.value)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


# ------------------------------------------------------------------------------------------------
# load_mnist on a tiny registered data set
# ------------------------------------------------------------------------------------------------

N_TRAIN, N_TEST = 6, 4
MIRRORS = ("https://mirror-a.invalid/tiny/", "https://mirror-b.invalid/tiny/")


def tiny_arrays(seed: int = 0) -> MNIST:
    rng = np.random.default_rng(seed)
    return MNIST(
        rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        np.array([5, 0, 4, 1, 9, 2], dtype=np.uint8),
        rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        np.array([7, 2, 1, 0], dtype=np.uint8),
    )


def tiny_files(arrays: MNIST) -> dict[str, bytes]:
    """The four files of ``arrays``: name (no .gz) -> uncompressed IDX bytes."""
    return {n: idx_bytes(a) for n, a in zip(NAMES, arrays, strict=True)}


TINY = tiny_files(tiny_arrays())
TINY_GZ = {n: gz(raw) for n, raw in TINY.items()}


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def write_set(d: Path, files: dict[str, bytes] = TINY, compress: bool = True, skip=()) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for n, raw in files.items():
        if n not in skip:
            (d / (n + ".gz" if compress else n)).write_bytes(gz(raw) if compress else raw)
    return d


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Register the "tiny" data set; point the cache, $HOME and the system dirs into tmp_path."""
    spec = MnistSpec(
        title="Tiny",
        mirrors=MIRRORS,
        files=tuple(IdxFile(n, len(TINY_GZ[n]), sha(TINY_GZ[n]), sha(TINY[n])) for n in NAMES),
        n_train=N_TRAIN,
        n_test=N_TEST,
    )
    monkeypatch.setitem(data.MNIST_DATASETS, "tiny", spec)
    monkeypatch.setattr(data.mnist, "SYSTEM_DATA_DIRS", (tmp_path / "system",))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("JAXSCRATCH_DATA", raising=False)
    return spec


def assert_same(a: MNIST, b: MNIST) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.dtype == np.uint8 and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def no_network(url, timeout=None):
    raise AssertionError(f"unexpected download of {url}")


@pytest.mark.parametrize("compress", [False, True])
def test_load_from_data_dir(tmp_path, compress):
    d = write_set(tmp_path / "d", compress=compress)
    got = load_mnist("tiny", data_dir=d, urlopen=no_network)
    assert isinstance(got, MNIST)
    assert got.train_images.shape == (N_TRAIN, 28, 28) and got.test_labels.shape == (N_TEST,)
    assert_same(got, tiny_arrays())
    assert not mnist_cache_dir("tiny").exists()  # local files are never copied into the cache


def test_cache_dir_convention(tmp_path, monkeypatch):
    assert mnist_cache_dir("tiny") == tmp_path / "cache" / "jaxscratch" / "tiny"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert mnist_cache_dir("tiny") == tmp_path / "home" / ".cache" / "jaxscratch" / "tiny"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # not absolute: ignored, as XDG says
    assert mnist_cache_dir("tiny") == tmp_path / "home" / ".cache" / "jaxscratch" / "tiny"
    assert mnist_cache_dir("mnist").name == "mnist"


def test_search_order(tmp_path, monkeypatch):
    """data_dir/<name> > data_dir > $JAXSCRATCH_DATA/<name> > $JAXSCRATCH_DATA > cache > system."""
    monkeypatch.setenv("JAXSCRATCH_DATA", str(tmp_path / "env"))
    dirs = [
        tmp_path / "dd" / "tiny",
        tmp_path / "dd",
        tmp_path / "env" / "tiny",
        tmp_path / "env",
        tmp_path / "cache" / "jaxscratch" / "tiny",
        tmp_path / "system" / "tiny",
    ]
    assert mnist_search_path("tiny", tmp_path / "dd") == dirs
    assert mnist_search_path("tiny") == dirs[2:]
    base = tiny_arrays()
    for k, d in enumerate(dirs):  # copy k: every train label is k, so the copy read is visible
        arrays = base._replace(train_labels=np.full(N_TRAIN, k, np.uint8))
        write_set(d, tiny_files(arrays), compress=bool(k % 2))
    for k, d in enumerate(dirs):
        assert locate_mnist("tiny", tmp_path / "dd") == d
        got = load_mnist("tiny", tmp_path / "dd", verify=False, urlopen=no_network)
        assert (got.train_labels == k).all(), f"read copy {got.train_labels[0]}, expected {k}"
        for n in NAMES:  # remove copy k: the next directory in the order takes over
            for f in (d / n, d / (n + ".gz")):
                f.unlink(missing_ok=True)
    assert locate_mnist("tiny", tmp_path / "dd") is None
    with pytest.raises(FileNotFoundError):
        load_mnist("tiny", tmp_path / "dd", download=False)


def test_home_cache_and_system_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    write_set(tmp_path / "system" / "tiny")
    assert locate_mnist("tiny") == tmp_path / "system" / "tiny"
    home_cache = write_set(tmp_path / "home" / ".cache" / "jaxscratch" / "tiny", compress=False)
    assert locate_mnist("tiny") == home_cache
    assert_same(load_mnist("tiny", urlopen=no_network), tiny_arrays())


def test_partial_directory_is_skipped(tmp_path):
    d = write_set(tmp_path / "d", skip=(NAMES[3],))  # 3 of 4 files
    write_set(tmp_path / "system" / "tiny")
    assert locate_mnist("tiny", d) == tmp_path / "system" / "tiny"
    (tmp_path / "system" / "tiny" / (NAMES[0] + ".gz")).unlink()
    with pytest.raises(FileNotFoundError) as e:
        load_mnist("tiny", d, download=False)
    msg = str(e.value)
    assert f"{d}  (3 of 4 files)" in msg and f"{tmp_path / 'system' / 'tiny'}  (3 of 4" in msg


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown data set 'kmnist'"):
        load_mnist("kmnist")
    with pytest.raises(FileNotFoundError, match="data_dir .* is not a directory"):
        load_mnist("tiny", data_dir=tmp_path / "typo")


_imgs, _labs = tiny_arrays().train_images, tiny_arrays().train_labels
BAD_SETS = {
    # case: (file replaced, its new uncompressed bytes, reason in the message)
    "bad magic": (NAMES[0], b"\x01" + TINY[NAMES[0]][1:], "bad magic number"),
    "truncated images": (NAMES[0], TINY[NAMES[0]][:-100], "truncated"),
    "images 27x28": (NAMES[0], idx_bytes(_imgs[:, :27]), r"shape \(6, 27, 28\).*\(6, 28, 28\)"),
    "images int16": (NAMES[0], idx_bytes(_imgs.astype(np.int16)), "int16 images"),
    "too few images": (NAMES[0], idx_bytes(_imgs[:5]), r"shape \(5, 28, 28\)"),
    "label out of range": (
        NAMES[1],
        idx_bytes(np.array([5, 0, 4, 10, 9, 2], np.uint8)),
        "label 10 at index 3 is outside 0..9",
    ),
    "count mismatch": (NAMES[1], idx_bytes(_labs[:5]), "holds 5 labels but .* holds 6 images"),
    "labels 2-d": (NAMES[1], idx_bytes(_labs[:, None]), r"labels of shape \(6, 1\)"),
    "test labels truncated": (NAMES[3], TINY[NAMES[3]][:-1], "truncated"),
}


@pytest.mark.parametrize("case", list(BAD_SETS))
@pytest.mark.parametrize("compress", [False, True])
def test_corrupt_local_files_are_rejected(tmp_path, case, compress):
    which, content, reason = BAD_SETS[case]
    d = write_set(tmp_path / "d", {**TINY, which: content}, compress=compress)
    write_set(tmp_path / "system" / "tiny")  # a good copy later in the order is NOT used instead
    for verify in (True, False):  # structure is checked even without the checksum
        with pytest.raises(ValueError, match=reason) as e:
            load_mnist("tiny", data_dir=d, verify=verify, urlopen=no_network)
        assert str(d / (which + (".gz" if compress else ""))) in str(e.value)
    assert not mnist_cache_dir("tiny").exists()


def test_checksum_of_local_content(tmp_path):
    arrays = tiny_arrays()
    arrays.train_images[0, 0, 0] ^= 1  # one pixel: structurally valid, different content
    files = tiny_files(arrays)
    d = write_set(tmp_path / "d", files)
    with pytest.raises(ValueError, match="not the published Tiny train-images") as e:
        load_mnist("tiny", data_dir=d)
    msg = str(e.value)
    assert str(d / (NAMES[0] + ".gz")) in msg
    assert sha(files[NAMES[0]]) in msg and sha(TINY[NAMES[0]]) in msg
    assert_same(load_mnist("tiny", data_dir=d, verify=False), arrays)
    # a re-gzipped copy (different .gz bytes, same content) verifies
    (d / (NAMES[0] + ".gz")).write_bytes(gzip.compress(TINY[NAMES[0]], compresslevel=1, mtime=7))
    assert_same(load_mnist("tiny", data_dir=d), tiny_arrays())


# ------------------------------------------------------------------------------------------------
# downloads (fake urlopen)
# ------------------------------------------------------------------------------------------------


class FakeWeb:
    """A urlopen stand-in: serves ``pages[url]`` or raises URLError; records every call."""

    def __init__(self, pages: dict[str, bytes]):
        self.pages = pages
        self.calls: list[str] = []

    def __call__(self, url, timeout=None):
        self.calls.append(url)
        if url not in self.pages:
            raise urllib.error.URLError(f"[Errno -3] no route to {url}")
        return io.BytesIO(self.pages[url])


def published(mirror: str = MIRRORS[0], files: dict[str, bytes] = TINY_GZ) -> dict[str, bytes]:
    return {f"{mirror}{n}.gz": b for n, b in files.items()}


def cache_listing() -> list[str]:
    c = mnist_cache_dir("tiny")
    return sorted(os.listdir(c)) if c.exists() else []


def test_download_is_verified_and_cached_atomically(tmp_path, monkeypatch):
    pages = published(MIRRORS[1])
    pages[f"{MIRRORS[0]}{NAMES[1]}.gz"] = TINY_GZ[NAMES[1]]  # mirror A has only one file
    web = FakeWeb(pages)
    replaced = []
    real_replace = os.replace

    def spy_replace(src, dst):
        replaced.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy_replace)
    got = load_mnist("tiny", urlopen=web)
    assert_same(got, tiny_arrays())
    cache = mnist_cache_dir("tiny")
    assert cache_listing() == sorted(n + ".gz" for n in NAMES)  # no temp files left
    for n in NAMES:
        assert (cache / (n + ".gz")).read_bytes() == TINY_GZ[n]
    assert len(web.calls) == 7  # mirror A failed for 3 files, then mirror B served them
    assert f"{MIRRORS[0]}{NAMES[1]}.gz" in web.calls
    assert f"{MIRRORS[1]}{NAMES[1]}.gz" not in web.calls
    assert {dst for _, dst in replaced} == {cache / (n + ".gz") for n in NAMES}
    for src, dst in replaced:  # each written to a temp file in the same directory, then replaced
        assert src.parent == dst.parent and src != dst and src.name.endswith(".tmp")
    # the second call reads the cache and does not touch the network
    assert_same(load_mnist("tiny", urlopen=no_network), tiny_arrays())


def test_download_fetches_only_missing_files(tmp_path):
    write_set(mnist_cache_dir("tiny"), skip=(NAMES[0], NAMES[2]))
    web = FakeWeb(published())
    assert_same(load_mnist("tiny", urlopen=web), tiny_arrays())
    assert web.calls == [f"{MIRRORS[0]}{NAMES[0]}.gz", f"{MIRRORS[0]}{NAMES[2]}.gz"]


@pytest.mark.parametrize("fault", ["flipped byte", "truncated", "too long"])
def test_bad_download_leaves_cache_untouched(tmp_path, fault):
    good = TINY_GZ[NAMES[1]]
    bad = {
        "flipped byte": good[:20] + bytes([good[20] ^ 0xFF]) + good[21:],
        "truncated": good[:-5],
        "too long": good + b"\x00" * 3,
    }[fault]
    pages = {**published(), f"{MIRRORS[0]}{NAMES[1]}.gz": bad}  # train labels bad on mirror A
    web = FakeWeb(pages)  # mirror B unreachable
    with pytest.raises(ValueError, match="no mirror served a valid train-labels") as e:
        load_mnist("tiny", urlopen=web)
    msg = str(e.value)
    assert f"{MIRRORS[0]}{NAMES[1]}.gz" in msg and f"{MIRRORS[1]}{NAMES[1]}.gz" in msg
    assert sha(good) in msg
    assert ("got more than" in msg) if fault == "too long" else (sha(bad) in msg)
    assert "nothing was written" in msg
    assert cache_listing() == []  # not even the good train-images file fetched before it
    # a later good download still works
    assert_same(load_mnist("tiny", urlopen=FakeWeb(published())), tiny_arrays())


def test_offline_message(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXSCRATCH_DATA", str(tmp_path / "env"))
    (tmp_path / "env").mkdir()
    d = write_set(tmp_path / "d", skip=NAMES[1:])
    web = FakeWeb({})
    with pytest.raises(FileNotFoundError) as e:
        load_mnist("tiny", data_dir=d, urlopen=web)
    msg = str(e.value)
    assert web.calls == [f"{m}{NAMES[0]}.gz" for m in MIRRORS]  # stops at the first file
    for n in NAMES:
        assert f"  {n}.gz" in msg
    for p in mnist_search_path("tiny", d):
        assert str(p) in msg
    assert f"{d}  (1 of 4 files)" in msg and f"{tmp_path / 'env'}  (0 of 4 files)" in msg
    assert (
        f"put these four files (gzipped as published, or uncompressed) in {mnist_cache_dir('tiny')}"
        in msg
    )
    assert "URLError" in msg and MIRRORS[0] in msg
    assert cache_listing() == []


def test_download_false_never_opens_a_url():
    with pytest.raises(FileNotFoundError, match="not attempted") as e:
        load_mnist("tiny", download=False, urlopen=no_network)
    assert f"{NAMES[0]}.gz" in str(e.value)


def test_published_specs():
    for name, n_files in (("mnist", 4), ("fashion-mnist", 4)):
        spec = data.MNIST_DATASETS[name]
        assert tuple(f.name for f in spec.files) == NAMES and len(spec.files) == n_files
        assert spec.n_train == 60000 and spec.n_test == 10000 and spec.mirrors
        assert all(m.endswith("/") for m in spec.mirrors)
        for f in spec.files:
            assert len(f.gz_sha256) == 64 and len(f.raw_sha256) == 64
    sizes = [f.gz_size for f in data.MNIST_DATASETS["mnist"].files]
    assert sizes == [9912422, 28881, 1648877, 4542]


# ------------------------------------------------------------------------------------------------
# one_hot and the book's preprocessing
# ------------------------------------------------------------------------------------------------


def test_one_hot():
    y = one_hot(np.array([2, 0, 1, 2]), 3)
    np.testing.assert_array_equal(y, [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert y.dtype == np.float32 and one_hot([1], 2, dtype=np.float64).dtype == np.float64
    assert one_hot(np.array([], dtype=np.int64), 4).shape == (0, 4)
    with pytest.raises(ValueError, match="label 3 at index 1 is outside 0..2"):
        one_hot(np.array([0, 3, 1]), 3)
    with pytest.raises(ValueError, match="label -1 at index 0"):
        one_hot(np.array([-1, 0]), 3)
    with pytest.raises(ValueError, match="integers, got dtype float64"):
        one_hot(np.array([0.0, 1.0]), 3)
    with pytest.raises(ValueError, match="integers, got dtype bool"):
        one_hot(np.array([True, False]), 3)
    with pytest.raises(ValueError, match=r"shape \(n,\), got \(2, 1\)"):
        one_hot(np.array([[0], [1]]), 3)
    for bad_n in (0, -2, 2.0, True):
        with pytest.raises(ValueError, match="n_classes"):
            one_hot(np.array([0]), bad_n)


def test_book_preprocess_values():
    rng = np.random.default_rng(3)
    train = rng.integers(0, 200, (5, 28, 28), dtype=np.uint8)
    test = rng.integers(50, 256, (3, 28, 28), dtype=np.uint8)  # a different distribution
    ds = MNIST(train, np.array([0, 1, 2, 9, 4], np.uint8), test, np.array([3, 3, 7], np.uint8))
    b = book_preprocess(ds)
    flat = train.reshape(5, 784).astype(np.float64)
    mean, std = flat.mean(), flat.std()  # global scalars, ddof=0
    assert b.mean == pytest.approx(mean, rel=1e-13) and b.std == pytest.approx(std, rel=1e-13)
    assert b.X_train.shape == (5, 784) and b.X_test.shape == (3, 784)
    assert b.X_train.dtype == np.float32 and b.X_test.dtype == np.float32
    np.testing.assert_allclose(b.X_train, (flat - mean) / std, rtol=1e-6, atol=1e-6)
    flat_test = test.reshape(3, 784).astype(np.float64)
    np.testing.assert_allclose(b.X_test, (flat_test - mean) / std, rtol=1e-6, atol=1e-6)
    assert abs(b.X_train.mean()) < 1e-6 and b.X_train.std() == pytest.approx(1.0, rel=1e-6)
    assert b.X_test.mean() > 0.5  # the test set is scaled by the TRAINING statistics
    np.testing.assert_array_equal(b.y_train, np.eye(10, dtype=np.float32)[[0, 1, 2, 9, 4]])
    np.testing.assert_array_equal(b.y_test.argmax(1), [3, 3, 7])
    assert b.y_train.shape == (5, 10) and b.y_test.dtype == np.float32
    np.testing.assert_array_equal(b.labels_train, [0, 1, 2, 9, 4])
    assert b.labels_test.dtype == np.int32


def test_book_preprocess_errors():
    img = np.zeros((2, 28, 28), np.uint8)
    img[0, 0, 0] = 1
    lab = np.array([0, 1], np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        book_preprocess(MNIST(img.astype(np.float32), lab, img, lab))
    with pytest.raises(ValueError, match=r"train labels have shape \(1,\)"):
        book_preprocess(MNIST(img, lab[:1], img, lab))
    with pytest.raises(ValueError, match="differ"):
        book_preprocess(MNIST(img, lab, img[:, :27], lab))
    with pytest.raises(ValueError, match="std 0"):
        book_preprocess(MNIST(np.zeros_like(img), lab, img, lab))
    with pytest.raises(ValueError, match="outside 0..9"):
        book_preprocess(MNIST(img, np.array([0, 10], np.uint8), img, lab))


# ------------------------------------------------------------------------------------------------
# the real files, when present (never required)
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow  # the real files, where present; the loader's tests write their own IDX files
@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason=f"{REAL_MNIST} not present")
def test_real_mnist():
    d = load_mnist("mnist", data_dir=REAL_MNIST, urlopen=no_network)
    assert d.train_images.shape == (60000, 28, 28) and d.test_images.shape == (10000, 28, 28)
    assert d.train_labels.shape == (60000,) and d.test_labels.shape == (10000,)
    assert all(a.dtype == np.uint8 for a in d)
    assert d.train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    counts = np.bincount(d.train_labels, minlength=10).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    b = book_preprocess(d)
    assert b.X_train.shape == (60000, 784) and b.y_test.shape == (10000, 10)
    assert abs(float(b.X_train.mean(dtype=np.float64))) < 1e-6
    assert float(b.X_train.std(dtype=np.float64)) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason=f"{DEBIAN_FASHION} not present")
def test_real_fashion_mnist():
    d = load_mnist("fashion-mnist", data_dir=DEBIAN_FASHION, urlopen=no_network)
    assert d.train_images.shape == (60000, 28, 28) and d.test_labels.shape == (10000,)
    assert np.bincount(d.train_labels, minlength=10).tolist() == [6000] * 10
    assert np.bincount(d.test_labels, minlength=10).tolist() == [1000] * 10
    with pytest.raises(ValueError, match="not the published MNIST"):  # fashion is not MNIST
        load_mnist("mnist", data_dir=DEBIAN_FASHION, urlopen=no_network)


@pytest.mark.subprocess
@pytest.mark.parametrize("script", ["ch4_extensions", "ch5_cnn", "ch7_autoencoder"])
def test_an_experiment_without_its_data_exits_2_with_the_loaders_message(script, tmp_path):
    """No MNIST where the user pointed: the loader's message on stderr, exit 2, no traceback,
    no file written (the output directory may have been made, empty)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    missing = tmp_path / "no_mnist_here"
    out = subprocess.run(
        [sys.executable, str(root / "experiments" / f"{script}.py"), "--data-dir", str(missing),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith(f"{script}.py: load_mnist: data_dir {missing} is not a directory")
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
