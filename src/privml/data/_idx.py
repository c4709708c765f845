"""A strict reader for IDX files, the format MNIST and Fashion-MNIST ship in.

Layout: two zero bytes, a dtype code, the number of dimensions, that many big-endian uint32
sizes, then the data in big-endian C order. Files may be gzip-compressed.

The header is read first and the data size it promises is checked against a cap before
anything else is read, and the data is then read in bounded chunks, so a corrupt or hostile
header (or a gzip bomb) costs at most what the file really holds, never what it claims.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from privml._exceptions import DataError

__all__ = ["MAX_ELEMENTS", "read_idx"]

#: Largest number of elements :func:`read_idx` accepts (Fashion-MNIST has 47 million).
MAX_ELEMENTS = 2**31

_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_MAX_NDIM = 4
_CHUNK = 16 * 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _read_exactly(f: _Reader, n: int) -> bytearray:
    """Up to ``n`` bytes from ``f``; fewer only at end of file."""
    chunks: list[bytes] = []
    got = 0
    while got < n:
        chunk = f.read(min(_CHUNK, n - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return bytearray().join(chunks)


def _parse(f: _Reader, where: str) -> npt.NDArray[Any]:
    head = _read_exactly(f, 4)
    if len(head) < 4:
        raise DataError(f"IDX file {where}: truncated header ({len(head)} of 4 bytes)")
    if head[:2] != b"\x00\x00":
        hint = " (gzip data in a file not named .gz?)" if head[:2] == _GZIP_MAGIC else ""
        raise DataError(f"IDX file {where}: bad magic {head[:2].hex()}, expected 0000{hint}")
    code, ndim = head[2], head[3]
    if code not in _DTYPES:
        raise DataError(f"IDX file {where}: unknown dtype code 0x{code:02x}")
    if not 1 <= ndim <= _MAX_NDIM:
        raise DataError(f"IDX file {where}: {ndim} dimensions, expected 1..{_MAX_NDIM}")
    raw_dims = _read_exactly(f, 4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(f"IDX file {where}: truncated header (dimension sizes cut off)")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    count = math.prod(dims)
    if count > MAX_ELEMENTS:
        raise DataError(f"IDX file {where}: shape {dims} has {count} elements, "
                        f"more than the limit {MAX_ELEMENTS}")
    dtype = _DTYPES[code]
    want = count * dtype.itemsize
    data = _read_exactly(f, want)
    if len(data) < want:
        raise DataError(f"IDX file {where}: truncated data ({len(data)} of {want} bytes "
                        f"for shape {dims})")
    if f.read(1):
        raise DataError(f"IDX file {where}: trailing bytes after the {want} data bytes "
                        f"for shape {dims}")
    arr = np.frombuffer(data, dtype=dtype).reshape(dims)
    # Native byte order so callers never meet big-endian arrays (a no-op for bytes).
    return arr.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | Path) -> npt.NDArray[Any]:
    """Read an IDX file (raw, or gzip-compressed) into an array in native byte order.

    Raises :class:`~privml.DataError` naming the file if it is missing or unreadable, not
    IDX, of an unknown dtype, of more than 4 (or zero) dimensions, truncated, followed by
    trailing bytes, or a corrupt gzip stream.
    """
    p = Path(path)
    where = str(p)
    try:
        with p.open("rb") as raw:
            compressed = p.suffix == ".gz" or raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            if not compressed:
                return _parse(raw, where)
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                return _parse(f, where)
    except FileNotFoundError as exc:
        raise DataError(f"IDX file {where}: not found") from exc
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        detail = str(exc) or type(exc).__name__
        raise DataError(f"IDX file {where}: corrupt gzip data ({detail})") from exc
    except OSError as exc:
        raise DataError(f"IDX file {where}: cannot read ({exc.strerror or exc})") from exc
