"""MNIST and Fashion-MNIST: search the disk, download once with checksums, verify, preprocess.

:func:`load_mnist` reads the four published IDX files from the first directory of
:func:`mnist_search_path` that holds them, or downloads them into the user cache (each published
``.gz`` checked against its size and sha256 before anything is written). :func:`book_preprocess`
is the book's preprocessing (global pixel mean/std of the training set, one-hot labels).
"""

from __future__ import annotations

import http.client
import os
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxscratch import fileio
from jaxscratch.data.idx import idx_bytes, parse_idx
from jaxscratch.data.tables import one_hot


class IdxFile(NamedTuple):
    """One published file of an MNIST-format data set.

    name: the published name without ``.gz``; gz_size / gz_sha256: the published ``.gz`` file (what
    a download must match); raw_sha256: its uncompressed IDX bytes (what any local copy, gzipped
    or not, must match, so a re-gzipped copy still verifies).
    """

    name: str
    gz_size: int
    gz_sha256: str
    raw_sha256: str


class MnistSpec(NamedTuple):
    """An MNIST-format data set: its four files (train images, train labels, test images, test
    labels), the mirrors it is published at (URL prefixes ending in '/'), and its sizes."""

    title: str
    mirrors: tuple[str, ...]
    files: tuple[IdxFile, IdxFile, IdxFile, IdxFile]
    n_train: int = 60000
    n_test: int = 10000
    image_shape: tuple[int, int] = (28, 28)
    n_classes: int = 10


# Checksums. gz_size / gz_sha256 of the published .gz files: tensorflow/datasets
# url_checksums/mnist.txt and fashion_mnist.txt (the same values appear in several other public
# loaders). They agree with the published md5s of the .gz files: MNIST train-images
# f68b3c2dcbeaaa9fbdd348bbdeb94873, train-labels d53e105ee54ea40749a09fcbcd1e9432, t10k-images
# 9fb629c4189551a2d022fa330f9573f3, t10k-labels ec29112dd5afa0611ce80d1b7f02629c; Fashion-MNIST
# (its README) 8d4fb7e6c68d591d4c3dfef9ec88bf0d, 25c81989df183df01b3e8a0aad5dffbe,
# bef4ecab320f06d8554ea6380940ec79, bb300cfdad3c16e7a12a480ee83cd310.
# raw_sha256 (uncompressed bytes) were computed here: MNIST from shared/data/mnist, whose
# uncompressed md5s equal the published ones (6bbc9ace898e44ae57da46a324031adb,
# a25bea736e30d166cdddb491f175f624, 2646ac647ad5339dbf082846283269ea,
# 27ae3e4e09519cfbb04c329615203637); Fashion-MNIST from Debian's dataset-fashion-mnist
# 0.0~git20200523.55506a9-1 (/usr/share/datasets/fashion-mnist/*.gz, re-gzipped by Debian, so
# their .gz hashes differ from the published ones), whose uncompressed md5s are
# f4a8712d7a061bf5bd6d2ca38dc4d50a, 9018921c3c673c538a1fc5bad174d6f9,
# 8181f5470baa50b63fa0f6fddb340f0a, 15d484375f8d13e6eb1aabb0c3f46965. Both sets of raw sha256
# also match values published by other public loaders.
MNIST_DATASETS: dict[str, MnistSpec] = {
    "mnist": MnistSpec(
        title="MNIST",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        files=(
            IdxFile(
                "train-images-idx3-ubyte",
                9912422,
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            ),
            IdxFile(
                "train-labels-idx1-ubyte",
                28881,
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            ),
            IdxFile(
                "t10k-images-idx3-ubyte",
                1648877,
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            ),
            IdxFile(
                "t10k-labels-idx1-ubyte",
                4542,
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ),
        ),
    ),
    "fashion-mnist": MnistSpec(
        title="Fashion-MNIST",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        files=(
            IdxFile(
                "train-images-idx3-ubyte",
                26421880,
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            ),
            IdxFile(
                "train-labels-idx1-ubyte",
                29515,
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            ),
            IdxFile(
                "t10k-images-idx3-ubyte",
                4422102,
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            ),
            IdxFile(
                "t10k-labels-idx1-ubyte",
                5148,
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            ),
        ),
    ),
}

#: System-wide data directories, searched as ``<dir>/<name>/`` after the user cache. Debian's
#: ``dataset-fashion-mnist`` installs the four published file names, gzipped, in
#: ``/usr/share/datasets/fashion-mnist/``.
SYSTEM_DATA_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets"),)

#: Seconds to wait for a mirror before giving up on it.
DOWNLOAD_TIMEOUT = 60.0


class MNIST(NamedTuple):
    """An MNIST-format data set, as published.

    train_images: (60000, 28, 28) uint8, pixel values 0..255; train_labels: (60000,) uint8 in 0..9;
    test_images: (10000, 28, 28) uint8; test_labels: (10000,) uint8.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def _mnist_spec(name: str) -> MnistSpec:
    if name not in MNIST_DATASETS:
        raise ValueError(f"load_mnist: unknown data set {name!r}; known: {sorted(MNIST_DATASETS)}")
    return MNIST_DATASETS[name]


def mnist_cache_dir(name: str = "mnist") -> Path:
    """Where downloads go: ``$XDG_CACHE_HOME/jaxscratch/<name>`` (if that variable holds an
    absolute path), else ``~/.cache/jaxscratch/<name>``."""
    _mnist_spec(name)
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "jaxscratch" / name


def mnist_search_path(name: str = "mnist", data_dir: str | Path | None = None) -> list[Path]:
    """The directories :func:`load_mnist` searches, in order.

    1. ``data_dir/<name>/``, then ``data_dir`` itself (if ``data_dir`` is given);
    2. ``$JAXSCRATCH_DATA/<name>/``, then ``$JAXSCRATCH_DATA`` itself (if the variable is set);
    3. the user cache, :func:`mnist_cache_dir` (where downloads are written);
    4. ``<d>/<name>/`` for each ``d`` in ``SYSTEM_DATA_DIRS`` (``/usr/share/datasets``).
    """
    _mnist_spec(name)
    dirs: list[Path] = []
    for base in (data_dir, os.environ.get("JAXSCRATCH_DATA") or None):
        if base is not None:
            b = Path(base).expanduser()
            dirs += [b / name, b]
    dirs.append(mnist_cache_dir(name))
    dirs += [d / name for d in SYSTEM_DATA_DIRS]
    return list(dict.fromkeys(dirs))  # drop repeats, keep the order


def _mnist_files(directory: Path, spec: MnistSpec) -> list[Path | None]:
    """Per file: ``directory/<name>`` if present, else ``directory/<name>.gz``, else None."""
    found: list[Path | None] = []
    for f in spec.files:
        raw, gz = directory / f.name, directory / f"{f.name}.gz"
        found.append(raw if raw.is_file() else gz if gz.is_file() else None)
    return found


def locate_mnist(name: str = "mnist", data_dir: str | Path | None = None) -> Path | None:
    """The first directory of :func:`mnist_search_path` that holds all four files, or ``None``."""
    spec = _mnist_spec(name)
    for d in mnist_search_path(name, data_dir):
        if all(p is not None for p in _mnist_files(d, spec)):
            return d
    return None


def _check_pair(
    images: np.ndarray, labels: np.ndarray, ipath: Path, lpath: Path, n: int, spec: MnistSpec
) -> None:
    shape = (n, *spec.image_shape)
    if images.dtype != np.uint8 or images.shape != shape:
        raise ValueError(
            f"load_mnist: {ipath} holds {images.dtype} images of shape {images.shape}, "
            f"expected uint8 of shape {shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"load_mnist: {lpath} holds {labels.dtype} labels of shape {labels.shape}, "
            f"expected uint8 of shape ({n},)"
        )
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"load_mnist: {lpath} holds {labels.shape[0]} labels but {ipath} holds "
            f"{images.shape[0]} images (expected {n} of each)"
        )
    bad = np.flatnonzero(labels >= spec.n_classes)
    if bad.size:
        raise ValueError(
            f"load_mnist: {lpath}: label {int(labels[bad[0]])} at index {int(bad[0])} is outside "
            f"0..{spec.n_classes - 1} ({bad.size} labels out of range)"
        )


def _load_mnist_dir(directory: Path, spec: MnistSpec, verify: bool) -> MNIST:
    """Read the four files of ``directory``: IDX structure, then shapes and labels, then (if
    ``verify``) the sha256 of each file's uncompressed content."""
    paths: list[Path] = []
    arrays: list[np.ndarray] = []
    digests: list[str] = []
    for p, f in zip(_mnist_files(directory, spec), spec.files, strict=True):
        if p is None:
            raise FileNotFoundError(f"load_mnist: {directory} lacks {f.name}(.gz)")
        raw = idx_bytes(p)
        arrays.append(parse_idx(raw, p))
        digests.append(fileio.sha256_bytes(raw) if verify else "")
        paths.append(p)
        del raw
    tr_i, tr_l, te_i, te_l = arrays
    _check_pair(tr_i, tr_l, paths[0], paths[1], spec.n_train, spec)
    _check_pair(te_i, te_l, paths[2], paths[3], spec.n_test, spec)
    if verify:
        for p, f, got in zip(paths, spec.files, digests, strict=True):
            if got != f.raw_sha256:
                raise ValueError(
                    f"load_mnist: {p} is not the published {spec.title} {f.name}: the sha256 of "
                    f"its uncompressed content is {got}, expected {f.raw_sha256} (pass "
                    "verify=False to load MNIST-format files of your own)"
                )
    return MNIST(tr_i, tr_l, te_i, te_l)


def _offline_message(
    name: str, spec: MnistSpec, data_dir: str | Path | None, attempts: list[str]
) -> str:
    lines = [f"load_mnist: {spec.title} ({name!r}) is not on this machine and was not downloaded."]
    lines.append("Searched, in order:")
    for d in mnist_search_path(name, data_dir):
        if d.is_dir():
            k = sum(p is not None for p in _mnist_files(d, spec))
            lines.append(f"  {d}  ({k} of 4 files)")
        else:
            lines.append(f"  {d}  (no such directory)")
    if attempts:
        lines.append("Download attempts:")
        lines += [f"  {a}" for a in attempts]
    else:
        lines.append("Download: not attempted (download=False).")
    lines.append(
        f"To work offline, put these four files (gzipped as published, or uncompressed) in "
        f"{mnist_cache_dir(name)} (or in $JAXSCRATCH_DATA/{name}/, or in a directory passed as "
        "data_dir=):"
    )
    lines += [f"  {f.name}.gz" for f in spec.files]
    lines.append(f"They are published at: {' or '.join(spec.mirrors)}")
    return "\n".join(lines)


def _read_limited(resp: Any, limit: int) -> bytes:
    """Read a response to its end, but never more than ``limit + 1`` bytes."""
    chunks, total = [], 0
    while total <= limit:
        chunk = resp.read(min(1 << 20, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _download_mnist(
    name: str,
    spec: MnistSpec,
    data_dir: str | Path | None,
    cache: Path,
    urlopen: Callable[..., Any],
) -> None:
    """Fetch the files missing from ``cache``, verify size and sha256 of each published .gz, and
    only when all are good write them into ``cache`` atomically."""
    fetched: dict[str, bytes] = {}
    for f, present in zip(spec.files, _mnist_files(cache, spec), strict=True):
        if present is not None:
            continue
        attempts: list[str] = []
        corrupt = False
        for mirror in spec.mirrors:
            url = f"{mirror}{f.name}.gz"
            print(f"load_mnist: downloading {url}", file=sys.stderr)
            try:
                with urlopen(url, timeout=DOWNLOAD_TIMEOUT) as resp:
                    data = _read_limited(resp, f.gz_size)
            except (OSError, http.client.HTTPException) as e:
                attempts.append(f"{url}: {type(e).__name__}: {e}")
                continue
            got = fileio.sha256_bytes(data)
            if len(data) != f.gz_size or got != f.gz_sha256:
                corrupt = True
                what = (
                    f"more than {f.gz_size} bytes"
                    if len(data) > f.gz_size
                    else f"{len(data)} bytes with sha256 {got}"
                )
                attempts.append(
                    f"{url}: got {what}, expected {f.gz_size} bytes with sha256 {f.gz_sha256}"
                )
                continue
            fetched[f.name] = data
            break
        else:
            if corrupt:
                raise ValueError(
                    f"load_mnist: no mirror served a valid {f.name}.gz; nothing was written to "
                    f"{cache}:\n" + "\n".join(f"  {a}" for a in attempts)
                )
            raise FileNotFoundError(_offline_message(name, spec, data_dir, attempts))
    cache.mkdir(parents=True, exist_ok=True)
    for fname, data in fetched.items():
        fileio.write_bytes_atomic(cache / f"{fname}.gz", data)


def load_mnist(
    name: str = "mnist",
    data_dir: str | Path | None = None,
    *,
    download: bool = True,
    verify: bool = True,
    urlopen: Callable[..., Any] | None = None,
) -> MNIST:
    """Load MNIST (``name="mnist"``) or Fashion-MNIST (``name="fashion-mnist"``).

    Looks for the four published files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``; each gzipped with ``.gz`` as
    published, or uncompressed without it) in the directories of :func:`mnist_search_path`, in
    order, and reads the first directory that holds all four:

    1. ``data_dir/<name>/``, then ``data_dir`` (must exist if given);
    2. ``$JAXSCRATCH_DATA/<name>/``, then ``$JAXSCRATCH_DATA``;
    3. the user cache ``$XDG_CACHE_HOME/jaxscratch/<name>/`` or ``~/.cache/jaxscratch/<name>/``;
    4. ``/usr/share/datasets/<name>/`` (Debian's ``dataset-fashion-mnist`` installs there).

    If none holds them and ``download`` is true, the missing files are downloaded into the user
    cache from the published mirrors (trying each in turn); each must match the published size
    and sha256, and only when all are good are they written, each to a temp file in the cache
    directory then ``os.replace``d, so a failed or bad download leaves the cache untouched.
    ``urlopen`` (default ``urllib.request.urlopen``) is called as ``urlopen(url, timeout=...)``
    and must return a context manager with ``read(n)``; tests pass a fake.

    Every file is checked before use: IDX structure (see :func:`read_idx`), uint8 images of shape
    (60000 | 10000, 28, 28), uint8 labels in 0..9 as many as the images, and, if ``verify``, the
    sha256 of the uncompressed content against the published data set (so re-gzipped copies
    verify). A corrupt, truncated or unexpected file is a ``ValueError`` naming its path and the
    reason; a bad download is a ``ValueError`` naming the URLs and both hashes. Not found and not
    downloadable (offline, or ``download=False``): ``FileNotFoundError`` listing the directories
    searched and the four files to put where.
    """
    spec = _mnist_spec(name)
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise FileNotFoundError(f"load_mnist: data_dir {data_dir} is not a directory")
    directory = locate_mnist(name, data_dir)
    if directory is None:
        if not download:
            raise FileNotFoundError(_offline_message(name, spec, data_dir, []))
        directory = mnist_cache_dir(name)
        opener = urlopen if urlopen is not None else urllib.request.urlopen
        _download_mnist(name, spec, data_dir, directory, opener)
    return _load_mnist_dir(directory, spec, verify)


class BookMNIST(NamedTuple):
    """MNIST as the book feeds it to its networks.

    X_train: (n_train, 784) float32; y_train: (n_train, 10) float32 one-hot; X_test: (n_test, 784);
    y_test: (n_test, 10); labels_train / labels_test: (n,) int32 class ids; mean / std: the scalar
    training-set pixel mean and population std (ddof=0) that X was shifted and scaled by.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    labels_train: np.ndarray
    labels_test: np.ndarray
    mean: float
    std: float


def book_preprocess(data: MNIST, n_classes: int = 10) -> BookMNIST:
    """The book's preprocessing: flatten each image, subtract the training set's global pixel mean,
    divide by the training set's global pixel std (both scalars, ddof=0, over all training pixels;
    the test set uses the training statistics), one-hot the labels.

    data: uint8 images (n, H, W) and labels (n,) as from :func:`load_mnist`. The statistics are
    exact (from the pixel-value histogram, in float64) and each output value is the float64
    result rounded to float32.
    """
    tr_img, tr_lab, te_img, te_lab = (np.asarray(a) for a in data)
    for what, img, lab in (("train", tr_img, tr_lab), ("test", te_img, te_lab)):
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[0] == 0:
            raise ValueError(
                f"book_preprocess: {what} images must be a non-empty uint8 array (n, H, W), "
                f"got {img.dtype} of shape {img.shape}"
            )
        if lab.shape != (img.shape[0],):
            raise ValueError(
                f"book_preprocess: {what} labels have shape {lab.shape}, expected "
                f"({img.shape[0]},) to match the images"
            )
    if te_img.shape[1:] != tr_img.shape[1:]:
        raise ValueError(
            f"book_preprocess: test images {te_img.shape[1:]} differ from train {tr_img.shape[1:]}"
        )
    counts = np.bincount(tr_img.ravel(), minlength=256).astype(np.float64)
    values = np.arange(256, dtype=np.float64)
    n = counts.sum()
    mean = float(counts @ values / n)
    std = float(np.sqrt(counts @ (values - mean) ** 2 / n))
    if std == 0.0:
        raise ValueError("book_preprocess: every training pixel has the same value (std 0)")
    table = ((values - mean) / std).astype(np.float32)  # float64 math, rounded once
    return BookMNIST(
        X_train=table[tr_img.reshape(tr_img.shape[0], -1)],
        y_train=one_hot(tr_lab, n_classes),
        X_test=table[te_img.reshape(te_img.shape[0], -1)],
        y_test=one_hot(te_lab, n_classes),
        labels_train=tr_lab.astype(np.int32),
        labels_test=te_lab.astype(np.int32),
        mean=mean,
        std=std,
    )
