"""Line splitting with a bounded line length, for processors of line-based formats (NDJSON, logs)
and for the content sniffer; part of the plug-in contract, so processors need no pipeline internals."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

_SKIP_CHUNK = 1 << 20


class LineTooLong:
    """Marker yielded in place of a line longer than the record limit."""

    __slots__ = ("length",)

    def __init__(self, length: int) -> None:
        self.length = length


def iter_lines(stream: BinaryIO, max_len: int) -> Iterator[tuple[int, bytes | LineTooLong]]:
    """Yield (1-based line number, line without newline); over-long lines are skipped unread
    beyond the limit and reported as LineTooLong, so memory stays bounded by ``max_len``."""
    lineno = 0
    while True:
        line = stream.readline(max_len + 1)
        if not line:
            return
        lineno += 1
        if len(line) > max_len and not line.endswith(b"\n"):
            length = len(line)
            while True:
                rest = stream.readline(_SKIP_CHUNK)
                length += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            yield lineno, LineTooLong(length)
            continue
        yield lineno, line.rstrip(b"\r\n")
