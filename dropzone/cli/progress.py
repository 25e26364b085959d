"""Progress of one-shot commands, in bytes (per file and overall) with throughput, ETA and
records per second.

On a terminal with text logs: a live rich display (logs print above it, see ``output``). Not a
terminal (CI, cron, ``| tee``): no live display, one line per finished file on stderr. ``--json``
or JSON logs: nothing (the pipeline's ``file.finished`` events say it).

The pipeline calls the object per stored batch with the batch's record count, and
``bytes_read`` with how far into the file it has read; the command calls ``file_done``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from dropzone.cli.output import mode, say, stderr
from dropzone.models import FileResult, IncomingFile

# The fixed columns (bar, bytes, speed, ETA, rate) take ~58 of 80 columns; the name gets the rest.
_FIXED_COLUMNS = 58


@dataclass
class _Current:
    file: IncomingFile
    started: float
    records: int = 0
    bytes_done: int = 0

    def records_per_second(self) -> float:
        return self.records / max(time.monotonic() - self.started, 1e-3)


class FileProgress:
    """Counts for the files of one command; subclasses show them."""

    def __init__(self, expected: Sequence[IncomingFile] = ()) -> None:
        self.files = {f.key: f for f in expected}
        self.total_bytes = sum(f.size for f in expected)
        self.done_bytes = 0
        self.done_files = 0
        self.records = 0
        self.current: _Current | None = None

    # -- the pipeline's hooks ---------------------------------------------------------------------

    def __call__(self, file: IncomingFile, n: int) -> None:
        current = self._current_for(file)
        current.records += n
        self.records += n
        self._show()

    def bytes_read(self, file: IncomingFile, done: int) -> None:
        self._current_for(file).bytes_done = min(done, file.size)
        self._show()

    # -- the command's hooks ----------------------------------------------------------------------

    def begin(self, file: IncomingFile) -> None:
        """``file`` starts now (before hashing and sniffing), so its rates count from here."""
        self._current_for(file)
        self._show()

    def file_done(self, file: IncomingFile | None, result: FileResult | None) -> None:
        """``file`` (or the result's file) finished; a file without batches (quarantined early)
        still counts with its whole size, so the totals end right."""
        key = file.key if file is not None else (result.key if result is not None else None)
        file = file or self.files.get(key or "")
        current = self.current
        if current is not None and current.file.key != key:
            self._close(current, None)  # it ended without a result (another worker holds it)
            current = None
        self.current = None
        if current is None and file is not None:
            current = _Current(file, time.monotonic())
            self._add(file)
        if current is not None:
            self._close(current, result)
        self._show()

    # -- counting -----------------------------------------------------------------------------------

    def _current_for(self, file: IncomingFile) -> _Current:
        if self.current is None or self.current.file.key != file.key:
            if self.current is not None:
                self._close(self.current, None)
            self.current = _Current(file, time.monotonic())
            self._add(file)
            self._started(file)
        return self.current

    def _add(self, file: IncomingFile) -> None:
        if file.key not in self.files:  # a file that arrived after the listing
            self.files[file.key] = file
            self.total_bytes += file.size

    def _close(self, current: _Current, result: FileResult | None) -> None:
        self.done_bytes += current.file.size
        self.done_files += 1
        self._finished(current, result)

    def _started(self, file: IncomingFile) -> None:
        """A file's first batch."""

    def _finished(self, current: _Current, result: FileResult | None) -> None:
        """A file is done."""

    def _show(self) -> None:
        """Counts changed."""


class LiveProgress(FileProgress):
    """Two rows on a terminal: the current file and all files, both in bytes."""

    def __init__(self, progress: Progress, expected: Sequence[IncomingFile]) -> None:
        super().__init__(expected)
        self._progress = progress
        self._name_width = max(12, stderr.width - _FIXED_COLUMNS)
        self._file_task: TaskID | None = None
        self._all = progress.add_task(self._all_label(), total=self.total_bytes or None, rate="")

    def _started(self, file: IncomingFile) -> None:
        if self._file_task is not None:
            self._progress.remove_task(self._file_task)
        self._file_task = self._progress.add_task(_fit(file.name, self._name_width), total=file.size, rate="")

    def _finished(self, current: _Current, result: FileResult | None) -> None:
        if self._file_task is not None:
            self._progress.remove_task(self._file_task)
            self._file_task = None

    def _show(self) -> None:
        current = self.current
        done = self.done_bytes + (current.bytes_done if current else 0)
        self._progress.update(
            self._all,
            description=self._all_label(),
            total=max(self.total_bytes, done) or None,
            completed=done,
            rate=f"{self.records:,} rec",
        )
        if current is not None and self._file_task is not None:
            self._progress.update(
                self._file_task,
                completed=current.bytes_done,
                rate=f"{current.records_per_second():,.0f} rec/s",
            )

    def _all_label(self) -> str:
        files = len(self.files)
        return _fit(f"all: {self.done_files}/{files} files" if files else "all files", self._name_width)


class LineProgress(FileProgress):
    """Not a terminal: one line per finished file (bytes, time, throughput, records/s)."""

    def _finished(self, current: _Current, result: FileResult | None) -> None:
        # The pipeline's own timing when there is one: it starts before hashing, our first
        # callback only at the first stored batch.
        measured = result.seconds if result is not None and result.seconds else 0.0
        seconds = max(measured, time.monotonic() - current.started, 1e-3)
        size = current.file.size
        outcome = result.outcome.value if result else "not finished"
        say(
            f"{outcome:<11} {current.file.key}  {decimal(size)} in {seconds:.2f} s "
            f"({decimal(int(size / seconds))}/s, {current.records:,} records, "
            f"{current.records / seconds:,.0f} records/s)",
            event="file.progress",
        )


def _fit(text: str, width: int) -> str:
    """A name that fits its column: the end is kept (it tells .ndjson from .ndjson.gz)."""
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def progress_columns() -> list[Any]:
    # markup=False: file names are not rich markup (`lab[red]results.ndjson`).
    return [
        TextColumn("{task.description}", markup=False),
        BarColumn(bar_width=12),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[rate]}", markup=False),
    ]


@contextlib.contextmanager
def file_progress(as_json: bool, expected: Sequence[IncomingFile] = ()) -> Iterator[FileProgress | None]:
    if as_json or mode.json_logs:
        yield None
        return
    if not stderr.is_terminal:
        yield LineProgress(expected)
        return
    with Progress(*progress_columns(), console=stderr, transient=True) as progress:
        yield LiveProgress(progress, expected)


@contextlib.contextmanager
def count_progress(as_json: bool, label: str, total: int | None) -> Iterator[Callable[[str], None] | None]:
    """A bar counting items (resources, for export), labelled with the current item's kind."""
    if as_json or mode.json_logs or not stderr.is_terminal:
        yield None
        return
    columns = [
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=stderr, transient=True) as progress:
        task = progress.add_task(label, total=total)

        def advance(kind: str) -> None:
            progress.update(task, advance=1, description=f"{label} {kind}")

        yield advance
