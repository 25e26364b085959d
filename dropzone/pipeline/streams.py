"""Byte streams over a local file: hashing, gzip with a size cap, BOM skipping, bounded lines."""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from dropzone.errors import FileRejected

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_gzip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == GZIP_MAGIC


class CappedReader(io.RawIOBase):
    """Reads from ``inner`` and fails once more than ``cap`` bytes came out (gzip bombs)."""

    def __init__(self, inner: BinaryIO, cap: int, also_close: BinaryIO | None = None) -> None:
        self._inner = inner
        self._cap = cap
        self._seen = 0
        # GzipFile does not close the file object it reads from: we do.
        self._also_close = also_close

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            data = self._inner.read(len(buffer))
        except (OSError, EOFError, zlib.error) as err:
            raise FileRejected("corrupt_gzip", "the gzip stream is corrupt or truncated") from err
        self._seen += len(data)
        if self._seen > self._cap:
            raise FileRejected("too_large", f"decompressed content exceeds the limit of {self._cap} bytes")
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._inner.close()
        if self._also_close is not None:
            self._also_close.close()
        super().close()


def open_payload(
    path: Path, gzipped: bool, max_decompressed: int, on_open: Callable[[BinaryIO], None] | None = None
) -> BinaryIO:
    """The file's content as bytes: decompressed if gzip, with a leading UTF-8 BOM removed.
    ``on_open`` gets the raw file: its position is the progress in the file's own bytes (the
    compressed ones for gzip), which is what a progress display can total."""
    raw: BinaryIO = path.open("rb")
    if on_open is not None:
        on_open(raw)
    inner: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
    capped = CappedReader(inner, max_decompressed, also_close=raw if gzipped else None)
    stream = io.BufferedReader(capped, buffer_size=_CHUNK)
    if stream.peek(3)[:3] == UTF8_BOM:
        stream.read(3)
    return stream  # type: ignore[return-value]


def check_gzip(path: Path, max_decompressed: int) -> None:
    """Decompress once to the end so a truncated or corrupt archive is quarantined before any
    record is stored (checking the CRC costs far less than validating the records)."""
    with open_payload(path, True, max_decompressed) as stream:
        while stream.read(_CHUNK):
            pass
