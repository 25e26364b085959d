"""Streaming, quote-aware CSV reading that keeps each row's original text.

The ``csv`` module does the parsing (RFC 4180 quoting, quoted newlines, CRLF); this module adds
what an ingest service needs around it:

* bounded memory: physical lines longer than ``max_row_chars`` are skipped unread beyond the
  limit, and a row spanning more text than that (an unclosed quote) is cut off and reported;
* the exact text of every row, so rejected rows can be written back byte for byte;
* row and line numbers for reports (``row`` counts data rows after the header, blank lines not
  counted; ``line`` is the physical line where the row starts, the header being line 1);
* encoding: the payload must be UTF-8 (a BOM is removed before we see it). Bytes that are not
  UTF-8 are carried through with ``surrogateescape`` so one bad row is rejected on its own
  instead of the decoder failing the whole file, and its bytes are written back unchanged.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

DELIMITERS = (",", "|", "\t", ";")
DEFAULT_MAX_ROW_CHARS = 16 * 2**20


class _RowTooLong(Exception):
    """Raised by the line feeder inside ``csv.reader``; the reader resets and goes on."""


@dataclass(slots=True)
class CsvRow:
    """One data row. ``problem`` is set (and ``fields`` may be partial) when it could not be read."""

    number: int
    line: int
    fields: list[str]
    raw: str
    problem: str | None = None
    problem_code: str | None = None

    @property
    def location(self) -> str:
        return f"row {self.number} (line {self.line})"

    def raw_bytes(self) -> bytes:
        return self.raw.encode("utf-8", "surrogateescape")


class _LineFeeder:
    """Hands ``csv.reader`` one physical line at a time and remembers the text of the row being
    read. An iterator class, not a generator, so raising from ``__next__`` does not end it."""

    def __init__(self, text: io.TextIOBase, max_row_chars: int) -> None:
        self._text = text
        self._max = max_row_chars
        self.pending: list[str] = []
        self.pending_chars = 0
        self.lines_read = 0

    def __iter__(self) -> _LineFeeder:
        return self

    def __next__(self) -> str:
        line = self._text.readline(self._max + 1)
        if not line:
            raise StopIteration
        self.lines_read += 1
        if len(line) > self._max and not line.endswith(("\n", "\r")):
            # Skip the rest of the physical line without holding it; keep only a note of it.
            while True:
                rest = self._text.readline(1 << 20)
                if not rest or rest.endswith(("\n", "\r")):
                    break
            self.pending.append("")
            raise _RowTooLong
        self.pending.append(line)
        self.pending_chars += len(line)
        if self.pending_chars > self._max:
            raise _RowTooLong
        return line

    def take(self) -> str:
        raw = "".join(self.pending)
        self.pending.clear()
        self.pending_chars = 0
        return raw


def _has_bad_bytes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class CsvReader:
    """Iterate ``CsvRow``s of a UTF-8 CSV stream. ``header`` is read on construction.

    ``strict`` quoting: a quote that does not close a quoted field properly, or a quoted field
    still open at the end of the file, makes that row a problem instead of silently merging
    text into a field.
    """

    def __init__(
        self,
        stream: BinaryIO,
        delimiter: str = ",",
        max_row_chars: int = DEFAULT_MAX_ROW_CHARS,
    ) -> None:
        self._text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
        self._feeder = _LineFeeder(self._text, max_row_chars)
        self._reader = csv.reader(self._feeder, delimiter=delimiter, strict=True)
        self.header: list[str] | None = None
        self.header_raw = ""
        self.header_problem: str | None = None
        self._first: CsvRow | None = None
        self._count = 0
        for row in self._rows():
            if row.problem or not row.fields:
                self.header_problem = row.problem or "the header row is empty"
            else:
                self.header = [name.strip() for name in row.fields]
            self.header_raw = row.raw
            break

    @property
    def line_ending(self) -> str:
        return "\r\n" if self.header_raw.endswith("\r\n") else "\n"

    def _rows(self) -> Iterator[CsvRow]:
        while True:
            start_line = self._feeder.lines_read + 1
            try:
                fields = next(self._reader)
            except StopIteration:
                return
            except _RowTooLong:
                self._count += 1
                self._feeder.take()
                yield CsvRow(
                    self._count,
                    start_line,
                    [],
                    "",
                    "the row is longer than the row size limit (an unclosed quote?)",
                    "row_too_long",
                )
                continue
            except csv.Error as err:
                self._count += 1
                raw = self._feeder.take()
                yield CsvRow(self._count, start_line, [], raw, _csv_problem(err), "malformed_csv")
                continue
            raw = self._feeder.take()
            if not fields:  # a blank line: not a row
                continue
            self._count += 1
            row = CsvRow(self._count, start_line, fields, raw)
            if _has_bad_bytes(raw):
                row.problem = "the row contains bytes that are not UTF-8 (the file must be UTF-8)"
                row.problem_code = "encoding"
            yield row

    def __iter__(self) -> Iterator[CsvRow]:
        """Data rows; ``number`` 1 is the first row after the header."""
        base = self._count
        for row in self._rows():
            row.number -= base
            yield row

    def close(self) -> None:
        self._text.close()


def _csv_problem(err: csv.Error) -> str:
    text = str(err)
    if "field larger than field limit" in text:
        return "a field is longer than the CSV field size limit (an unclosed quote?)"
    if "expected after" in text:
        return "malformed quoting: a quoted field is followed by other characters"
    if "unexpected end of data" in text:
        return "a quoted field is not closed before the end of the file"
    return "the row is not valid CSV"


def detect_delimiter(first_line: str) -> str:
    """The most frequent of comma, pipe, tab and semicolon in the header line (comma on a tie)."""
    counts = {d: first_line.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


def sniff_csv_header(head: bytes) -> list[str] | None:
    """Column names from the first row in ``head`` (decoded payload start, BOM removed), or None
    when ``head`` does not hold a complete, decodable header row."""
    if not head:
        return None
    text = head.decode("utf-8", errors="replace")
    newline = text.find("\n")
    if newline < 0:
        cr = text.find("\r")
        newline = cr
    if newline < 0:
        return None if len(head) >= 65536 else _parse_header(text)
    return _parse_header(text[: newline + 1])


def _parse_header(line: str) -> list[str] | None:
    if "\ufffd" in line or "\x00" in line:
        return None
    delimiter = detect_delimiter(line)
    try:
        row = next(csv.reader([line], delimiter=delimiter, strict=True), None)
    except csv.Error:
        return None
    if not row:
        return None
    names = [name.strip() for name in row]
    return names if any(names) else None


def sniff_delimiter(head: bytes) -> str:
    """The delimiter of the header line in ``head`` (comma when unsure)."""
    text = head.decode("utf-8", errors="replace")
    end = min((i for i in (text.find("\n"), text.find("\r")) if i >= 0), default=len(text))
    return detect_delimiter(text[:end])
