"""Large resource bodies kept Zstandard-compressed, in the SQLite store and on their way to it.

A SynPUF carrier claim maps to an ExplanationOfBenefit of ~24 KB of JSON (13 line items, each
with its adjudications and codings), an inpatient claim to ~9 KB. Stored as text, a carrier body
took SQLite ~105 us of CPU per row to write (six overflow pages, each written to the WAL and again
at the checkpoint) and its pickling from a pool worker ~40 us; packed (~1.6 KB), 15 and 4, and
a 40,000-claim carrier database takes 144 MB instead of 989. Zstandard at level 1 packs such a
body in ~20-30 us (a reused context), 3x faster than zlib at its fastest level for a better
ratio (measured on 5,000 EOBs of each layout: zstd 1 6.1x / 14.8x, zlib 1 5.9x / 12.5x).

Below ``PACK_FROM`` bytes a body stays JSON text: the typical EHR resource (Synthea: 1.5 KB on
average) fits in a page or two, gains little, and is read with ``sqlite3`` as it was sent.

A packed body is told from JSON text by its first byte: every stored body is a JSON object, so
its text starts with ``{``, and a Zstandard frame starts with its magic number (``28 b5 2f fd``).
"""

from __future__ import annotations

import threading

import zstandard

PACK_FROM = 4096
_LEVEL = 1
# A compression context is reused (most of zstd's cost for a small input is setting one up),
# and is not safe to share between threads: one per thread (the API serves writes on several).
_local = threading.local()


def pack(body: bytes) -> bytes:
    """``body`` (JSON text) packed when it is large enough to gain from it, else unchanged."""
    if len(body) < PACK_FROM:
        return body
    try:
        packer = _local.packer
    except AttributeError:
        packer = _local.packer = zstandard.ZstdCompressor(level=_LEVEL)
    return packer.compress(body)


def is_packed(body: bytes) -> bool:
    return body[:1] != b"{"


def unpack(body: bytes | str) -> bytes | str:
    """The JSON text of a body as ``pack`` or the store left it (text is returned as it is)."""
    if type(body) is str or not is_packed(body):  # type: ignore[arg-type]
        return body
    try:
        unpacker = _local.unpacker
    except AttributeError:
        unpacker = _local.unpacker = zstandard.ZstdDecompressor()
    return unpacker.decompress(body)
