"""IDX files (the MNIST format): read and validate, gzipped or raw.

IDX layout: two zero bytes, a dtype code byte, an ndim byte, ``ndim`` big-endian uint32 dims, then
the data, big-endian, C order. See :func:`read_idx`.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import Protocol

import numpy as np

#: IDX dtype codes (the third byte of the magic number) and the big-endian dtypes they denote.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),  # unsigned byte
    0x09: np.dtype(">i1"),  # signed byte
    0x0B: np.dtype(">i2"),  # short
    0x0C: np.dtype(">i4"),  # int
    0x0D: np.dtype(">f4"),  # float
    0x0E: np.dtype(">f8"),  # double
}


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def idx_bytes(path: Path) -> bytes:
    """The IDX bytes of ``path``: gunzipped when the file starts with the gzip magic ``1f 8b``.

    Read as a stream and bounded by the header: after the magic number and dims, at most the
    data bytes they declare plus one are read, so a small gzip that inflates far beyond what its
    header declares is refused after that many bytes (never inflated whole). Raises
    ``ValueError`` naming the path for a corrupt gzip stream or data beyond the declared size.
    """
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    try:
        with gzip.open(path, "rb") if gzipped else open(path, "rb") as f:
            return _bounded_read(f, path)
    except (OSError, EOFError, zlib.error) as e:
        if not gzipped:
            raise
        raise ValueError(f"read_idx: {path} is a corrupt or truncated gzip file ({e})") from None


def _bounded_read(f: _Readable, path: Path) -> bytes:
    """The header, then at most the declared data size + 1 bytes (see :func:`idx_bytes`)."""
    head = f.read(4)
    if len(head) < 4 or head[0] or head[1] or head[2] not in IDX_DTYPES or head[3] == 0:
        return head  # parse_idx names what is wrong with it
    dims_raw = f.read(4 * head[3])
    if len(dims_raw) < 4 * head[3]:
        return head + dims_raw
    dims = tuple(int.from_bytes(dims_raw[i : i + 4], "big") for i in range(0, len(dims_raw), 4))
    expected = math.prod(dims) * IDX_DTYPES[head[2]].itemsize
    body = _read_at_most(f, expected + 1)
    if len(body) > expected and f.read(1):
        raise ValueError(
            f"read_idx: {path} is too long: dims {dims} need {expected} data bytes after the "
            f"{len(head) + len(dims_raw)}-byte header, the file holds more than {expected + 1} "
            "(stopped reading there)"
        )
    return head + dims_raw + body


def _read_at_most(f: _Readable, limit: int, chunk: int = 1 << 20) -> bytes:
    """Up to ``limit`` bytes of ``f`` in chunks: memory follows what the file holds, not
    ``limit`` (a header may declare exabytes)."""
    parts, got = [], 0
    while got < limit:
        part = f.read(min(chunk, limit - got))
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def parse_idx(data: bytes, path: Path) -> np.ndarray:
    """Validate the IDX header of ``data`` (read from ``path``); return its array, native order."""
    if len(data) < 4:
        raise ValueError(
            f"read_idx: {path} is truncated: {len(data)} bytes, an IDX header needs at least 4"
        )
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"read_idx: {path} has bad magic number 0x{magic:08x}: an IDX file starts with two "
            "zero bytes (is this an IDX file?)"
        )
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise ValueError(
            f"read_idx: {path} has bad magic number 0x{magic:08x}: unknown dtype code 0x{code:02x} "
            "(known: 0x08 ubyte, 0x09 byte, 0x0b short, 0x0c int, 0x0d float, 0x0e double)"
        )
    if ndim == 0:
        raise ValueError(f"read_idx: {path} has magic number 0x{magic:08x}, which declares 0 dims")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"read_idx: {path} is truncated: its magic number declares {ndim} dims "
            f"({header} header bytes) but the file holds {len(data)} bytes"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_DTYPES[code]
    count = math.prod(dims)
    expected, got = count * dtype.itemsize, len(data) - header
    if got != expected:
        what = "truncated" if got < expected else "too long"
        raise ValueError(
            f"read_idx: {path} is {what}: dims {dims} of {dtype.itemsize}-byte items need "
            f"{expected} data bytes after the {header}-byte header, the file holds {got}"
        )
    native = dtype.newbyteorder("=")
    if count == 0:
        return np.zeros(dims, dtype=native)
    return np.frombuffer(data, dtype=dtype, count=count, offset=header).astype(native).reshape(dims)


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzipped or raw; gzip is detected by content, not by the file name).

    IDX layout: two zero bytes, a dtype code byte (0x08 ubyte, 0x09 byte, 0x0B short, 0x0C int,
    0x0D float, 0x0E double), an ndim byte, ``ndim`` big-endian uint32 dims, then the data,
    big-endian, C order. Returns a new (writable) array of shape ``dims`` in native byte order
    (uint8 for 0x08). Raises ``ValueError`` naming the path and the reason on a bad magic number,
    an unknown dtype code, a corrupt or truncated gzip stream, or a data size that differs from
    what the dims imply (truncated or trailing bytes); ``OSError`` if the file cannot be read.
    """
    p = Path(path)
    return parse_idx(idx_bytes(p), p)
