"""Records -> validated resources -> store, in batches, using every core for validation.

Per batch: hash each resource canonically; resources whose hash is already stored skip
validation (a re-ingest costs little more than parsing); the rest are validated in the process
pool while the next batches are parsed; batches are stored strictly in file order, so when one
id appears twice the later copy wins, as it would one record at a time.
"""

from __future__ import annotations

import collections
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import orjson

from dropzone.models import Counts
from dropzone.pipeline.canonical import canonical_bytes
from dropzone.pipeline.lease import Heartbeat
from dropzone.pipeline.report import RejectLog
from dropzone.pipeline.validate import Validator
from dropzone.store.base import ResourceStore, ResourceWrite
from processors.base import Issue, Record

# A batch also ends at this much canonical JSON, so huge resources do not pile up in memory.
BATCH_BYTES = 8 * 2**20


def _hashed(record: Record) -> tuple[list[ResourceWrite], int]:
    """The record's resources with their canonical hashes, and their size in bytes."""
    if record.failed:
        return [], 0
    row: list[ResourceWrite] = []
    nbytes = 0
    try:
        for resource in record.resources:
            canonical = canonical_bytes(resource)
            nbytes += len(canonical)
            row.append(
                ResourceWrite(
                    resource["resourceType"], resource["id"], resource, hashlib.sha256(canonical).hexdigest()
                )
            )
    except (orjson.JSONEncodeError, RecursionError):
        # orjson refuses nesting deeper than 255 levels: reject the record, not the file.
        record.issues.append(Issue("too_deep", "the resource nests too deeply to store"))
        return [], 0
    return row, nbytes


@dataclass(slots=True)
class StageTimes:
    """Seconds spent per stage in this process (validation: waiting for the pool)."""

    parse: float = 0.0
    hash: float = 0.0
    validate: float = 0.0
    store: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(getattr(self, k), 3) for k in ("parse", "hash", "validate", "store")}


@dataclass(slots=True)
class LoadResult:
    counts: Counts = field(default_factory=Counts)
    times: StageTimes = field(default_factory=StageTimes)


@dataclass(slots=True)
class _Batch:
    records: list[Record]
    writes: list[list[ResourceWrite]]  # per record
    to_validate: list[tuple[int, int]]  # (record position, resource position) sent to the pool
    future: Future[Any] | None


class Loader:
    def __init__(
        self,
        resources: ResourceStore,
        validator: Validator,
        tenant: str,
        batch_size: int,
        in_flight: int,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.resources = resources
        self.validator = validator
        self.tenant = tenant
        self.batch_size = batch_size
        self.in_flight = max(1, in_flight)
        self.progress = progress

    def run(
        self,
        records: Iterable[Record],
        rejects: RejectLog,
        *,
        write: bool,
        file_sha256: str,
        heartbeat: Heartbeat | None = None,
        validate: bool = True,
    ) -> LoadResult:
        """Validate (and when ``write``) store every record. ``validate=False`` is for the
        second pass of an all-or-nothing file, whose first pass already validated it."""
        result = LoadResult()
        pending: collections.deque[_Batch] = collections.deque()
        for chunk, writes in self._batches(iter(records), result):
            if heartbeat:
                heartbeat.check()
            pending.append(self._prepare(chunk, writes, result, validate))
            while len(pending) > self.in_flight:
                self._finish(pending.popleft(), result, rejects, write, file_sha256)
        while pending:
            if heartbeat:
                heartbeat.check()
            self._finish(pending.popleft(), result, rejects, write, file_sha256)
        return result

    def _batches(
        self, records: Iterator[Record], result: LoadResult
    ) -> Iterator[tuple[list[Record], list[list[ResourceWrite]]]]:
        """Group records into batches of ``batch_size`` resources or ``BATCH_BYTES`` of content,
        whichever comes first, so a file of huge resources still holds only a few in memory."""
        chunk: list[Record] = []
        writes: list[list[ResourceWrite]] = []
        size = nbytes = 0
        while True:
            started = time.perf_counter()
            record = next(records, None)
            result.times.parse += time.perf_counter() - started
            if record is None:
                break
            started = time.perf_counter()
            row, row_bytes = _hashed(record)
            result.times.hash += time.perf_counter() - started
            chunk.append(record)
            writes.append(row)
            size += max(1, len(record.resources))
            nbytes += row_bytes
            if size >= self.batch_size or nbytes >= BATCH_BYTES:
                yield chunk, writes
                chunk, writes, size, nbytes = [], [], 0, 0
        if chunk:
            yield chunk, writes

    def _prepare(
        self, records: list[Record], writes: list[list[ResourceWrite]], result: LoadResult, validate: bool
    ) -> _Batch:
        by_type: dict[str, list[str]] = {}
        for row in writes:
            for w in row:
                by_type.setdefault(w.type, []).append(w.id)
        to_validate: list[tuple[int, int]] = []
        future = None
        if validate:
            started = time.perf_counter()
            stored = {
                (rtype, rid): existing.hash
                for rtype, ids in by_type.items()
                for rid, existing in self.resources.existing(self.tenant, rtype, ids).items()
            }
            result.times.store += time.perf_counter() - started
            payload = []
            for r_pos, row in enumerate(writes):
                for w_pos, w in enumerate(row):
                    if stored.get((w.type, w.id)) != w.hash:
                        to_validate.append((r_pos, w_pos))
                        payload.append(w.resource)
            if payload:
                future = self.validator.submit(payload)
        return _Batch(records, writes, to_validate, future)

    def _finish(
        self, batch: _Batch, result: LoadResult, rejects: RejectLog, write: bool, file_sha256: str
    ) -> None:
        failed: dict[int, list[Issue]] = {}
        if batch.future is not None:
            started = time.perf_counter()
            failures = self.validator.result(batch.future)
            result.times.validate += time.perf_counter() - started
            for pos, issues in failures:
                r_pos, _ = batch.to_validate[pos]
                failed.setdefault(r_pos, []).extend(Issue(*i) for i in issues)
        counts = result.counts
        good: list[tuple[Record, list[ResourceWrite]]] = []
        for r_pos, record in enumerate(batch.records):
            counts.read += 1
            if record.warnings:
                rejects.warn(record)
            issues = record.issues or failed.get(r_pos)
            if issues:
                counts.rejected += 1
                rejects.add(record, issues)
            else:
                good.append((record, batch.writes[r_pos]))
        if not write:
            counts.unchanged += len(good)  # first pass of an all-or-nothing file: nothing stored yet
        else:
            started = time.perf_counter()
            self._store(good, counts, file_sha256)
            result.times.store += time.perf_counter() - started
        if self.progress:
            self.progress(len(batch.records))

    def _store(
        self, good: list[tuple[Record, list[ResourceWrite]]], counts: Counts, file_sha256: str
    ) -> None:
        """Write in record order; a DELETE flushes the writes queued before it."""
        queued: list[tuple[Record, list[ResourceWrite]]] = []

        def flush() -> None:
            if not queued:
                return
            outcome = self.resources.upsert(self.tenant, [w for _, row in queued for w in row], file_sha256)
            for _record, row in queued:
                if any((w.type, w.id) in outcome.written for w in row):
                    counts.loaded += 1
                else:
                    counts.unchanged += 1
            queued.clear()

        for record, row in good:
            if record.method == "DELETE":
                flush()
                rtype, rid = record.target or ("", "")
                if rid and self.resources.delete(self.tenant, rtype, rid):
                    counts.loaded += 1
                else:
                    counts.unchanged += 1
            else:
                queued.append((record, row))
        flush()
