"""Decides when an incoming file is complete, and hands each complete file to the pipeline once.

A file is ready when:
* the source says uploads are atomic (S3: an object is only listed once complete); or
* the OS reported close-after-write for it and it has not changed since; or
* its size and mtime have not changed for ``quiet_seconds`` (moved-in files, SFTP, NFS).
Temporary upload names never reach here (sources skip them). Bursts of events for one file
collapse: the watcher re-lists the zone after activity and processes each key once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dropzone.config import Settings
from dropzone.errors import TransientError
from dropzone.log import event
from dropzone.models import FileResult, IncomingFile
from dropzone.pipeline.order import processing_order
from dropzone.pipeline.runner import Pipeline
from dropzone.sources.base import Source

_log = logging.getLogger("dropzone.watcher")
# After a wake-up, wait this long so a burst of events for one upload becomes one listing.
BURST_SECONDS = 0.2


_AFTER_CLOSE = (-1, -1.0)


@dataclass(slots=True)
class _Seen:
    signature: tuple[int, float]
    since: float  # monotonic time the signature was first seen
    closed: bool = False
    retry_at: float = 0.0


class Readiness:
    """Tracks incoming files across listings and says which are complete."""

    def __init__(
        self,
        quiet_seconds: float,
        atomic: bool,
        clock: Callable[[], float] = time.monotonic,
        mtime_is_local: bool = True,
        still_writing: Callable[[list[IncomingFile]], set[str]] | None = None,
    ) -> None:
        self.quiet = quiet_seconds
        self.still_writing = still_writing
        self.atomic = atomic
        self.mtime_is_local = mtime_is_local
        self.clock = clock
        self._seen: dict[str, _Seen] = {}

    def mark_closed(self, keys: set[str]) -> None:
        for key in keys:
            # The next listing shows the size the writer closed with: take it as final.
            seen = self._seen.setdefault(key, _Seen(_AFTER_CLOSE, self.clock()))
            seen.signature, seen.closed = _AFTER_CLOSE, True

    def update(self, files: list[IncomingFile]) -> tuple[list[IncomingFile], float | None]:
        """(ready files, seconds until the next one may become ready or None)."""
        now = self.clock()
        ready: list[IncomingFile] = []
        next_check: float | None = None
        present = set()
        for f in files:
            present.add(f.key)
            signature = (f.size, f.mtime)
            seen = self._seen.get(f.key)
            if seen is None:
                # First sight: a file untouched for the quiet period (start-up scan) is ready now.
                # A remote clock (SFTP) cannot say that: such files wait a quiet period from now.
                age = time.time() - f.mtime if self.mtime_is_local else 0.0
                seen = _Seen(signature, now - max(0.0, age))
                self._seen[f.key] = seen
            elif seen.signature != signature:
                closed = seen.closed and seen.signature == _AFTER_CLOSE
                seen.signature, seen.since, seen.closed = signature, now, closed
            if seen.retry_at > now:
                next_check = _earliest(next_check, seen.retry_at - now)
                continue
            waited = now - seen.since
            if self.atomic or seen.closed or waited >= self.quiet:
                ready.append(f)
            else:
                next_check = _earliest(next_check, self.quiet - waited)
        for gone in set(self._seen) - present:
            del self._seen[gone]
        quiet_only = [f for f in ready if not (self.atomic or self._seen[f.key].closed)]
        if quiet_only and self.still_writing is not None:
            # Quiet is not complete: a sender that paused with the file open is still writing it.
            writing = self.still_writing(quiet_only)
            if writing:
                for key in writing:
                    self._seen[key].since = now
                ready = [f for f in ready if f.key not in writing]
                next_check = _earliest(next_check, self.quiet or 0.5)
        return ready, next_check

    def retry_later(self, key: str, seconds: float) -> None:
        if key in self._seen:
            self._seen[key].retry_at = self.clock() + seconds
            self._seen[key].closed = False


def _earliest(current: float | None, candidate: float) -> float:
    return candidate if current is None else min(current, candidate)


class Watcher:
    def __init__(
        self,
        pipeline: Pipeline,
        source: Source,
        settings: Settings,
        on_result: Callable[[FileResult], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.source = source
        self.settings = settings
        self.on_result = on_result
        self.readiness = Readiness(
            settings.pipeline.quiet_seconds,
            source.uploads_are_atomic,
            mtime_is_local=source.mtime_is_local,
            still_writing=source.open_for_writing,
        )
        # True only while ``run`` waits for work: a signal may then stop it at once (nothing in
        # flight), instead of after an SQS long poll of up to 20 s.
        self.waiting = False

    def _process(self, files: list[IncomingFile], stop: threading.Event) -> list[FileResult]:
        results = []
        for file in processing_order(files):
            if stop.is_set():
                break
            result = self.pipeline.process(file)
            if result is None:
                # Busy elsewhere or a failed attempt: look again later (longer after each failure).
                self.readiness.retry_later(file.key, self.pipeline.retry_delay(file.key))
                continue
            results.append(result)
            if self.on_result:
                self.on_result(result)
        return results

    def _acknowledge(
        self, keys: set[str], listed: list[IncomingFile] | None, results: list[FileResult]
    ) -> None:
        """Tell the source which notified keys are finished (an SQS message is deleted only
        now, after the ledger has the outcome) and which must come back later."""
        present = {f.key for f in listed} if listed is not None else None
        done = {r.key for r in results}
        for key in keys:
            finished = key in done or (present is not None and key not in present)
            self.source.acknowledge(key, processed=finished)

    def run(self, stop: threading.Event) -> None:
        """Watch until ``stop`` is set."""
        self.source.start()
        rescan = self.settings.pipeline.rescan_seconds
        event(
            _log,
            "watch.started",
            zone=self.source.url,
            quiet_seconds=self.readiness.quiet,
            rescan_seconds=rescan,
        )
        timeout = 0.0
        while not stop.is_set():
            self.waiting = True
            try:
                closed = self.source.wait_for_activity(timeout, stop)
            finally:
                self.waiting = False
            if stop.is_set():
                break
            if timeout:
                stop.wait(BURST_SECONDS)
            self.readiness.mark_closed(closed)
            try:
                files = self.source.list_incoming()
            except TransientError as err:
                event(
                    _log,
                    "watch.list_failed",
                    logging.WARNING,
                    zone=self.source.url,
                    error_type=type(err).__name__,
                )
                self._acknowledge(closed, None, [])
                timeout = rescan
                continue
            ready, next_check = self.readiness.update(files)
            self._acknowledge(closed, files, self._process(ready, stop))
            timeout = min(rescan, next_check) if next_check is not None else rescan
            timeout = max(timeout, 0.05)
        event(_log, "watch.stopped", zone=self.source.url)

    def drain_once(self, stop: threading.Event | None = None) -> list[FileResult]:
        """Process what is in incoming/ now, waiting for files still being written, then return.
        Files another worker holds are left to it."""
        stop = stop or threading.Event()
        results: list[FileResult] = []
        attempted: set[str] = set()
        while not stop.is_set():
            files = [f for f in self.source.list_incoming() if f.key not in attempted]
            ready, next_check = self.readiness.update(files)
            attempted.update(f.key for f in ready)
            results.extend(self._process(ready, stop))
            if not files or (not ready and next_check is None):
                break
            if not ready and next_check is not None:
                stop.wait(min(next_check, 1.0))
        return results
