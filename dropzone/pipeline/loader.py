"""Records -> validated resources -> store, in batches, using every core.

Per batch, in two trips to the process pool with the store lookups in between:

1. records that carry a raw payload (``Record.raw``: NDJSON lines, claims' CSV fields) are
   parsed or mapped, checked, hashed and serialised in a worker (``digest``); records a
   processor parsed itself are hashed here;
2. this process looks up the stored hashes and the targets of conditional references
   (``dropzone.search.references``: a reference that matches exactly one stored resource is
   rewritten to ``Type/id``); a worker rewrites those references and validates what is not
   already stored (``settle``), so a re-ingest costs little more than parsing. While most of a
   file is new, trip 1 validates every resource already: only those with a conditional
   reference that resolves take the second trip, for the rewrite alone (a rewrite keeps a
   valid resource valid, see ``settle``).

A conditional reference whose target an earlier batch of the same file brought is rewritten
here just before its batch is stored.

Several batches are in each stage at once, so the workers parse and validate while this process
stores; batches are stored strictly in file order, so when one id appears twice the later copy
wins, as it would one record at a time.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from dropzone.models import Counts
from dropzone.pipeline.digest import TOO_DEEP, RawOutcome, TooDeep, Verdict, digest_raws, digest_resource
from dropzone.pipeline.lease import Heartbeat
from dropzone.pipeline.report import RejectLog
from dropzone.pipeline.settle import Item, Settled, settle
from dropzone.pipeline.validate import Validator
from dropzone.quality.profile import QualityProfile
from dropzone.search.index import CONDITIONAL_KEY, SearchRows
from dropzone.search.references import ConditionalResolver
from dropzone.store.base import Existing, ResourceStore, ResourceWrite, WriteResult
from processors.base import Issue, RawParsed, Record

# A batch also ends at this much JSON text, so huge resources do not pile up in memory.
BATCH_BYTES = 4 * 2**20

Known = dict[tuple[str, str], Existing | None]


def _digested(record: Record) -> tuple[list[ResourceWrite], int]:
    """A record a processor parsed itself: its writes and their size in bytes."""
    if record.failed:
        return [], 0
    row: list[ResourceWrite] = []
    nbytes = 0
    try:
        for resource in record.resources:
            rtype, rid, digest, body, identifiers, index = digest_resource(resource)
            nbytes += len(body)
            row.append(ResourceWrite(rtype, rid, resource, digest, body, identifiers, index))
    except TooDeep:
        # Reject the record, not the file.
        record.issues.append(Issue(TOO_DEEP.code, TOO_DEEP.message))
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


class _GroupCommit:
    """Consecutive batches of a file in one store transaction, closed once it is ``seconds``
    old (``pipeline.commit_seconds``): with SQLite one commit then writes each touched page of
    the search index once instead of once per batch, and other writers (another worker, a
    lease renewal) wait at most about that long."""

    def __init__(self, resources: ResourceStore, seconds: float) -> None:
        self._resources = resources
        self._seconds = seconds
        self._open: contextlib.AbstractContextManager[None] | None = None
        self._since = 0.0

    def join(self) -> None:
        if self._open is None:
            self._open = self._resources.transaction(durable=False)
            self._open.__enter__()
            self._since = time.monotonic()

    def close_if_old(self) -> None:
        if self._open is not None and time.monotonic() - self._since >= self._seconds:
            self.close()

    def close(self) -> None:
        if self._open is not None:
            done, self._open = self._open, None
            done.__exit__(None, None, None)

    def abort(self, err: BaseException) -> None:
        """Roll back what the open transaction holds (the file fails and is retried)."""
        if self._open is not None:
            done, self._open = self._open, None
            with contextlib.suppress(Exception):
                done.__exit__(type(err), err, err.__traceback__)


# Identifiers of stored resources remembered per file for the pending-reference pass; past this
# many the pass reads every resource still waiting instead (dropzone.search.references).
MAX_STORED_IDENTIFIERS = 50_000


@dataclass(slots=True)
class LoadResult:
    counts: Counts = field(default_factory=Counts)
    times: StageTimes = field(default_factory=StageTimes)
    # (type, system, value) of the identifiers of what was stored; None: too many to keep.
    stored_identifiers: set[tuple[str, str, str]] | None = field(default_factory=set)
    # Of the accepted resources, from the search rows the workers made (no second parse).
    profile: QualityProfile = field(default_factory=QualityProfile)


@dataclass(slots=True)
class _Batch:
    records: list[Record]
    writes: list[list[ResourceWrite]]  # per record
    raw_positions: list[int] = field(default_factory=list)  # records the pool parses
    parsing: Future[list[RawOutcome]] | None = None
    verdicts: dict[int, list[Verdict]] = field(default_factory=dict)  # per record the pool parsed
    failed: dict[int, list[Issue]] = field(default_factory=dict)  # per record: validation issues
    to_settle: list[tuple[int, int]] = field(default_factory=list)  # (record, resource) sent
    settling: Future[list[Settled]] | None = None
    # The store's answer for every resource of the batch, as of the lookup; entries are dropped
    # when an earlier batch writes them, so upsert asks again only for those.
    known: Known | None = None
    known_at: object | None = None  # the store's change token when ``known`` was looked up
    # id() of the writes a worker rewrote to exactly what is stored -> the sent version's rows.
    as_stored: dict[int, SearchRows] = field(default_factory=dict)


def _remember_identifiers(
    result: LoadResult, writes: list[ResourceWrite], written: set[tuple[str, str]]
) -> None:
    kept = result.stored_identifiers
    if kept is None:
        return
    for w in writes:
        if (w.type, w.id) in written:
            kept.update((w.type, system, value) for value, system in w.identifier_rows())
    if len(kept) > MAX_STORED_IDENTIFIERS:
        result.stored_identifiers = None


class Loader:
    def __init__(
        self,
        resources: ResourceStore,
        validator: Validator,
        tenant: str,
        batch_size: int,
        in_flight: int,
        progress: Callable[[int], None] | None = None,
        raw_parser: Callable[[Any], RawParsed] | None = None,
        commit_seconds: float = 0.0,
    ) -> None:
        self.resources = resources
        # A store served from another process (a proxy) has only its methods: it packs nothing.
        self._pack: bool = getattr(resources, "packs_bodies", False)
        self.validator = validator
        self.tenant = tenant
        self.batch_size = batch_size
        self.in_flight = max(1, in_flight)
        self.progress = progress
        self.raw_parser = raw_parser
        self.commit_seconds = commit_seconds
        self.references = ConditionalResolver(resources, tenant)
        # Resources looked up in this run, and how many of them were not stored as they are:
        # while most are new, the pool validates them as it digests them (``digest_raws``).
        self._looked_up = 0
        self._new = 0
        self._validating = True

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
        self._looked_up = self._new = 0
        self._validating = validate
        parsing: collections.deque[_Batch] = collections.deque()
        validating: collections.deque[_Batch] = collections.deque()
        group = _GroupCommit(self.resources, self.commit_seconds)

        def finish() -> None:
            self._finish(validating.popleft(), validating, result, rejects, write, file_sha256, group)

        def advance(limit: int) -> None:
            while len(parsing) > limit:
                if heartbeat:
                    heartbeat.check()
                validating.append(self._check(parsing.popleft(), result, validate))
                while len(validating) > limit:
                    finish()

        try:
            for batch in self._batches(iter(records), result):
                if heartbeat:
                    heartbeat.check()
                parsing.append(batch)
                advance(self.in_flight)
            advance(0)
            while validating:
                if heartbeat:
                    heartbeat.check()
                finish()
            started = time.perf_counter()
            group.close()
            result.times.store += time.perf_counter() - started
        except BaseException as err:
            group.abort(err)
            raise
        return result

    def _batches(self, records: Iterator[Record], result: LoadResult) -> Iterator[_Batch]:
        """Group records into batches of ``batch_size`` resources or ``BATCH_BYTES`` of content,
        whichever comes first, so a file of huge resources still holds only a few in memory."""
        batch = _Batch([], [])
        size = nbytes = 0
        while True:
            started = time.perf_counter()
            record = next(records, None)
            result.times.parse += time.perf_counter() - started
            if record is None:
                break
            if record.raw is not None and not record.failed:
                batch.raw_positions.append(len(batch.records))
                row, row_bytes = [], record.raw_size or len(record.raw)
            else:
                started = time.perf_counter()
                row, row_bytes = _digested(record)
                result.times.hash += time.perf_counter() - started
            batch.records.append(record)
            batch.writes.append(row)
            size += max(1, len(record.resources))
            nbytes += row_bytes
            if size >= self.batch_size or nbytes >= BATCH_BYTES:
                yield self._parse(batch)
                batch, size, nbytes = _Batch([], []), 0, 0
        if batch.records:
            yield self._parse(batch)

    def _parse(self, batch: _Batch) -> _Batch:
        if batch.raw_positions:
            if self.raw_parser is None:
                raise TypeError("records carry a raw payload but the processor has no raw_parser")
            raws: list[Any] = []
            for pos in batch.raw_positions:
                record = batch.records[pos]
                raws.append(record.raw)
                record.raw = None  # the pool holds the payload until it has parsed it
            # A re-sent file stops after its first batches; a second pass never asks.
            early = self._validating and self._new * 2 >= self._looked_up
            batch.parsing = self.validator.call(digest_raws, self.raw_parser, raws, early, self._pack)
        return batch

    def _check(self, batch: _Batch, result: LoadResult, validate: bool) -> _Batch:
        """Take the parsed records, look their resources up, send the changed ones to validate."""
        if batch.parsing is not None:
            started = time.perf_counter()
            outcomes = self.validator.result(batch.parsing)
            result.times.parse += time.perf_counter() - started
            batch.parsing = None
            for pos, (digests, issues, verdicts) in zip(batch.raw_positions, outcomes, strict=True):
                record = batch.records[pos]
                if issues:
                    record.issues.extend(Issue(*i) for i in issues)
                    continue
                batch.writes[pos] = [ResourceWrite.of_digest(*digest) for digest in digests]
                batch.verdicts[pos] = verdicts
                if digests:
                    record.described = (digests[0][0], digests[0][1])
        if not validate:
            return batch
        started = time.perf_counter()
        by_type: dict[str, list[str]] = {}
        for row in batch.writes:
            for w in row:
                by_type.setdefault(w.type, []).append(w.id)
        known: Known = {}
        batch.known_at = self.resources.change_token()
        for rtype, ids in by_type.items():
            found = self.resources.existing(self.tenant, rtype, ids)
            for rid in ids:
                known[(rtype, rid)] = found.get(rid)
        batch.known = known
        items: list[Item] = []
        for r_pos, row in enumerate(batch.writes):
            verdicts = batch.verdicts.get(r_pos)
            for w_pos, w in enumerate(row):
                stored = known.get((w.type, w.id))
                stored_hash = stored.hash if stored is not None else None
                keys = w.search_rows()[0]
                targets = self.references.targets(keys) if CONDITIONAL_KEY in keys else None
                changed = stored_hash != w.hash
                self._looked_up += 1
                self._new += changed
                verdict = verdicts[w_pos] if verdicts else None
                if verdict and changed:  # found invalid in the first trip: no second one
                    batch.failed.setdefault(r_pos, []).extend(Issue(*i) for i in verdict)
                elif targets or (changed and verdict is None):
                    batch.to_settle.append((r_pos, w_pos))
                    # A packed body travels packed: the worker unpacks it. Found valid in the
                    # first trip, it stays valid rewritten (``settle``): not validated again.
                    items.append((w.stored or w.text(), targets or None, stored_hash, verdict == []))
        result.times.store += time.perf_counter() - started
        if items:
            batch.settling = self.validator.call(settle, items)
        return batch

    def _finish(
        self,
        batch: _Batch,
        later: Iterable[_Batch],
        result: LoadResult,
        rejects: RejectLog,
        write: bool,
        file_sha256: str,
        group: _GroupCommit,
    ) -> None:
        failed = batch.failed
        if batch.settling is not None:
            started = time.perf_counter()
            settled = self.validator.result(batch.settling)
            result.times.validate += time.perf_counter() - started
            for (r_pos, w_pos), (digest, issues) in zip(batch.to_settle, settled, strict=True):
                if digest is not None:
                    sent = batch.writes[r_pos][w_pos]
                    rewritten = ResourceWrite(
                        digest[0], digest[1], None, digest[2], digest[3], digest[4], digest[5]
                    )
                    if rewritten.index is None:
                        # Rewritten to what is stored: no index rows made (the store makes them
                        # if it must write it after all), and the profile has the sent ones
                        # (the same dates and codes; only references differ).
                        batch.as_stored[id(rewritten)] = sent.search_rows()
                    batch.writes[r_pos][w_pos] = rewritten
                if issues:
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
                for w in batch.writes[r_pos]:
                    result.profile.add(w.type, w.id, batch.as_stored.get(id(w)) or w.search_rows())
        if not write:
            counts.unchanged += len(good)  # first pass of an all-or-nothing file: nothing stored yet
        else:
            started = time.perf_counter()
            group.join()
            # In the transaction, so no other process can write until it commits: if one did
            # since the lookup (another worker on a file with the same resources), ask again.
            if batch.known_at is not None and batch.known_at != self.resources.change_token():
                batch.known = None
            written = self._store(good, counts, file_sha256, batch.known, result, batch.as_stored)
            group.close_if_old()
            for other in later:
                if other.known:
                    for key in written:
                        other.known.pop(key, None)
            result.times.store += time.perf_counter() - started
        if self.progress:
            self.progress(len(batch.records))

    def _store(
        self,
        good: list[tuple[Record, list[ResourceWrite]]],
        counts: Counts,
        file_sha256: str,
        known: Known | None,
        result: LoadResult,
        as_stored: dict[int, SearchRows] | None = None,
    ) -> set[tuple[str, str]]:
        """Write in record order; a DELETE flushes the writes queued before it. Returns the
        (type, id) of what may have changed."""
        queued: list[tuple[Record, list[ResourceWrite]]] = []
        changed: set[tuple[str, str]] = set()

        def flush() -> None:
            if not queued:
                return
            # Writes a worker rewrote to what is stored have nothing left to resolve.
            writes = [
                w if as_stored and id(w) in as_stored else self.references.apply(w)
                for _, row in queued
                for w in row
            ]
            if known is not None:
                writes = _not_known_unchanged(writes, known, file_sha256)
            outcome = (
                self.resources.upsert(
                    self.tenant,
                    writes,
                    file_sha256,
                    known,
                    durable=False,  # the file's closing ledger write makes it durable
                )
                if writes
                else WriteResult()
            )
            changed.update(outcome.written)
            if outcome.loaded:
                # What was just stored may be a target of a conditional reference.
                self.references.forget(
                    {w.type for w in writes if (w.type, w.id) in outcome.written and w.identifier_rows()}
                )
                _remember_identifiers(result, writes, outcome.written)
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
                if known is not None:
                    known.pop((rtype, rid), None)
                changed.add((rtype, rid))
                if rid and self.resources.delete(self.tenant, rtype, rid):
                    counts.loaded += 1
                else:
                    counts.unchanged += 1
            else:
                queued.append((record, row))
        flush()
        return changed


def _not_known_unchanged(writes: list[ResourceWrite], known: Known, file_sha256: str) -> list[ResourceWrite]:
    """``writes`` without those the lookup found stored with the same hash by another file: the
    store would only count them unchanged (most of a re-sent file). Kept for the store: an id
    named twice (the later copy must win over the earlier one), and a copy this same file
    stored (a retry counts it loaded)."""
    seen: set[tuple[str, str]] = set()
    repeated: set[tuple[str, str]] = set()
    for w in writes:
        key = (w.type, w.id)
        if key in seen:
            repeated.add(key)
        seen.add(key)
    kept = []
    for w in writes:
        key = (w.type, w.id)
        stored = known.get(key)
        if stored is None or stored.hash != w.hash or stored.file_sha256 == file_sha256 or key in repeated:
            kept.append(w)
    return kept
