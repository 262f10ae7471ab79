"""Data sets and the book's preprocessing, on host numpy arrays (the trainer moves them once).

* :mod:`~jaxscratch.data.tables`: CSV/.npz reading, targets, the book's split, standardisation.
* :mod:`~jaxscratch.data.boston`: Boston housing, shipped and checksummed.
* :mod:`~jaxscratch.data.idx`: IDX files (the MNIST format).
* :mod:`~jaxscratch.data.mnist`: MNIST and Fashion-MNIST: search, checksummed download, verify,
  the book's preprocessing.

This module only re-exports; the names below are the public ones.
"""

from __future__ import annotations

from jaxscratch.data.boston import (
    BOSTON_FEATURES,
    BOSTON_SHA256,
    Boston,
    boston_book_data,
    boston_csv_path,
    load_boston,
)
from jaxscratch.data.idx import IDX_DTYPES, read_idx
from jaxscratch.data.mnist import (
    DOWNLOAD_TIMEOUT,
    MNIST,
    MNIST_DATASETS,
    SYSTEM_DATA_DIRS,
    BookMNIST,
    IdxFile,
    MnistSpec,
    book_preprocess,
    load_mnist,
    locate_mnist,
    mnist_cache_dir,
    mnist_search_path,
)
from jaxscratch.data.tables import (
    book_split,
    encode_targets,
    feature_stats,
    one_hot,
    read_csv,
    read_npz,
    standardize,
)

__all__ = [
    "BOSTON_FEATURES",
    "BOSTON_SHA256",
    "DOWNLOAD_TIMEOUT",
    "IDX_DTYPES",
    "MNIST",
    "MNIST_DATASETS",
    "SYSTEM_DATA_DIRS",
    "BookMNIST",
    "Boston",
    "IdxFile",
    "MnistSpec",
    "book_preprocess",
    "book_split",
    "boston_book_data",
    "boston_csv_path",
    "encode_targets",
    "feature_stats",
    "load_boston",
    "load_mnist",
    "locate_mnist",
    "mnist_cache_dir",
    "mnist_search_path",
    "one_hot",
    "read_csv",
    "read_idx",
    "read_npz",
    "standardize",
]
