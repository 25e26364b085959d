"""One path for every file: claim -> sniff -> process -> store -> report -> move.

Crash safety comes from the order of effects:
1. the content (tenant + sha256) is claimed with a lease, renewed while we work;
2. resources are upserted idempotently, tagged with the file's sha256;
3. the report is written, then the ledger records the outcome and destination (``complete``);
4. the file is moved, then the ledger notes the move.
A worker dying anywhere before 3 leaves a lease that expires; the next worker redoes the file and,
because upserts are idempotent and same-file rewrites count as loaded, ends with the same counts
and no duplicate documents. Dying between 3 and 4 leaves a finished claim whose file is still in
incoming/: the next worker only completes the move.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from dropzone.config import Settings, TenantSettings
from dropzone.errors import (
    DropzoneError,
    FileRejected,
    SourceFileGone,
    SourceUnavailable,
    StoreUnavailable,
    TransientError,
)
from dropzone.log import event
from dropzone.models import Counts, FileResult, IncomingFile, Outcome
from dropzone.pipeline.lease import Heartbeat, LeaseLost
from dropzone.pipeline.loader import Loader, LoadResult
from dropzone.pipeline.order import processing_order
from dropzone.pipeline.report import RejectLog, build_report
from dropzone.pipeline.settle import Rewritten, rewrite_digests
from dropzone.pipeline.sniff import sniff
from dropzone.pipeline.streams import open_payload, sha256_file
from dropzone.pipeline.tuning import tune_process
from dropzone.pipeline.validate import Validator
from dropzone.search.references import resolve_pending
from dropzone.sources.base import ARCHIVED, QUARANTINE, Source, fit_name, with_suffix_number
from dropzone.store.base import Claim, ClaimState, Store, utc_now_iso
from processors.base import Issue, Processor, ProcessorContext, Record
from processors.registry import choose

_log = logging.getLogger("dropzone.pipeline")
UNKNOWN_TENANT = "_unknown"
PROGRESS_LOG_SECONDS = 10.0
MAX_RETRY_SECONDS = 3600.0


_OS_FAULT_CODES = {errno.ENAMETOOLONG: "name_too_long", errno.ENOSPC: "disk_full", errno.EDQUOT: "disk_full"}


def fault_code(err: BaseException) -> str:
    """A stable code for a fault that is not the file's content."""
    if isinstance(err, PermissionError):
        return "permission_denied"
    if isinstance(err, OSError):
        return {
            errno.ENAMETOOLONG: "name_too_long",
            errno.ENOSPC: "disk_full",
            errno.EDQUOT: "disk_full",
        }.get(err.errno or 0, "os_error")
    if isinstance(err, StoreUnavailable):
        return "store_unavailable"
    if isinstance(err, SourceUnavailable):
        return "source_unavailable"
    if isinstance(err, TransientError):
        return "transient"
    return "internal_error"


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Pipeline:
    """Processes files of one drop zone into one store. Thread-compatible, not thread-safe:
    give each worker thread its own Pipeline (they may share the store)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        source: Source,
        worker_id: str | None = None,
        progress: Callable[[IncomingFile, int], None] | None = None,
        *,
        record_limit: int | None = None,
    ) -> None:
        """``record_limit``: read only the first N records of each file (``preview --sample``)."""
        self.settings = settings
        self.record_limit = record_limit
        self.store = store
        self.source = source
        self.worker_id = worker_id or default_worker_id()
        self.progress = progress
        self.validator = Validator(settings.pipeline.validation_workers)
        tune_process()
        self.last_times: dict[str, float] = {}
        # Per key: (size, mtime) of the content that failed, and how many attempts in a row failed.
        self._failures: dict[str, tuple[tuple[int, float], int]] = {}
        # Keys whose last attempt here ended without an outcome (a fault; they stay in incoming/
        # for a retry) -> the fault's code: one-shot commands report them and exit 1.
        self.unfinished: dict[str, str] = {}
        # Set to abandon the file in progress (SIGTERM): its lease is released, it stays in incoming/.
        self.cancel = threading.Event()
        self._payload = _PayloadPosition()

    def close(self) -> None:
        self.validator.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- entry points -------------------------------------------------------------------------------

    def drain(self, files: list[IncomingFile] | None = None) -> list[FileResult]:
        """Process every listed file once (files another worker holds are skipped)."""
        todo = self.source.list_incoming() if files is None else files
        results = []
        for file in processing_order(todo):
            result = self.process(file)
            if result is not None:
                results.append(result)
        return results

    def process(self, file: IncomingFile) -> FileResult | None:
        """Process one complete incoming file. None when it was skipped (busy elsewhere, gone,
        or a transient error left it in incoming/ for a later attempt)."""
        started = time.monotonic()
        tenant = self.settings.tenant(file.tenant) if file.tenant else None
        ledger_tenant = tenant.name if tenant else UNKNOWN_TENANT
        self.unfinished.pop(file.key, None)
        try:
            with self.source.local_copy(file) as path:
                sha = sha256_file(path)
                answer = self.store.ledger.claim(
                    ledger_tenant, sha, file.key, self.worker_id, self.settings.pipeline.lease_seconds
                )
                if answer.state is ClaimState.BUSY:
                    event(_log, "file.busy", logging.DEBUG, key=file.key)
                    return None
                if answer.state is ClaimState.DONE:
                    assert answer.done is not None
                    return self._already_done(file, ledger_tenant, sha, answer.done, started)
                assert answer.claim is not None
                return self._claimed(file, path, sha, tenant, answer.claim, started)
        except SourceFileGone:
            event(_log, "file.gone", logging.INFO, key=file.key)
            return None
        except TransientError as err:
            # Our transient errors name the condition (e.g. "SQLite: database or disk is full"), no values.
            event(
                _log,
                "file.retry_later",
                logging.WARNING,
                key=file.key,
                error_type=type(err).__name__,
                error=str(err),
            )
            self.unfinished[file.key] = fault_code(err)
            return None
        except Exception as err:  # a fault of the machine or a bug: this file's attempt ends, not the service
            return self._attempt_failed(file, ledger_tenant, err)

    # -- faults: retry with back-off, then quarantine -------------------------------------------------

    def retry_delay(self, key: str) -> float:
        """Seconds before ``key`` should be tried again: the rescan interval, doubled per failure."""
        failures = self._failures.get(key, (None, 0))[1]
        base = self.settings.pipeline.rescan_seconds
        return min(base * 2 ** max(failures - 1, 0), MAX_RETRY_SECONDS) if failures else base

    def _attempt_failed(self, file: IncomingFile, tenant: str, err: Exception) -> FileResult | None:
        code = fault_code(err)
        signature = (file.size, file.mtime)
        previous = self._failures.get(file.key)
        failures = previous[1] + 1 if previous and previous[0] == signature else 1
        self._failures[file.key] = (signature, failures)
        limit = self.settings.pipeline.max_attempts
        fields: dict[str, Any] = {
            "key": file.key,
            "code": code,
            "error_type": type(err).__name__,
            "attempt": failures,
            "max_attempts": limit,
        }
        if isinstance(err, OSError) and err.errno is not None:
            fields["errno"] = errno.errorcode.get(err.errno, str(err.errno))
        # The traceback only at DEBUG: one structured event is what operators and log shippers get.
        event(_log, "file.attempt_failed", logging.ERROR, exc_info=_log.isEnabledFor(logging.DEBUG), **fields)
        if failures < limit:
            self.unfinished[file.key] = code
            return None
        try:
            return self._give_up(file, tenant, code, err, failures)
        except Exception as final:
            self.unfinished[file.key] = code  # even quarantine failed (disk full): keep the file, try later
            event(
                _log,
                "file.quarantine_failed",
                logging.ERROR,
                key=file.key,
                error_type=type(final).__name__,
            )
            return None

    def _give_up(
        self, file: IncomingFile, tenant: str, code: str, err: Exception, attempts: int
    ) -> FileResult:
        """Quarantine a file that failed ``max_attempts`` times, with the last error in its report."""
        day = datetime.now(UTC).strftime("%Y/%m/%d")
        destination = self._free_key(f"{QUARANTINE}/{tenant}/{day}/{fit_name(file.name)}")
        message = f"the file failed {attempts} attempts; the last one with {type(err).__name__}" + (
            f" ({errno.errorcode.get(err.errno, err.errno)})"
            if isinstance(err, OSError) and err.errno
            else ""
        )
        error = Issue(code, message)
        counts = Counts()
        report = build_report(
            file_name=file.name,
            original_key=file.key,
            tenant=tenant,
            sha256=None,
            processor=None,
            outcome=Outcome.QUARANTINED.value,
            counts=counts,
            error=error,
            rejects=RejectLog(1),
            destination=destination,
            rejects_key=None,
            generated_at=utc_now_iso(),
            details={"attempts": attempts},
        )
        report_key = self.source.put_bytes(f"{destination}.error.json", report)
        moved_to = self.source.move(file, destination)
        self._failures.pop(file.key, None)
        self.store.ledger.save_file(
            {
                "_id": uuid.uuid5(uuid.NAMESPACE_URL, f"{file.key}|{file.size}|{file.mtime}|failed").hex,
                "tenant": tenant,
                "key": file.key,
                "name": file.name,
                "size": file.size,
                "sha256": None,
                "state": Outcome.QUARANTINED.value,
                "received_at": utc_now_iso(),
                "finished_at": utc_now_iso(),
                "destination": moved_to,
                "report": report_key,
                "counts": counts.as_dict(),
                "error": {"code": code, "message": message},
                "attempt": attempts,
                "worker": self.worker_id,
            }
        )
        event(
            _log,
            "file.finished",
            logging.WARNING,
            key=file.key,
            tenant=tenant,
            outcome=Outcome.QUARANTINED.value,
            reason=code,
            destination=moved_to,
        )
        return FileResult(
            file.name,
            tenant,
            file.key,
            Outcome.QUARANTINED,
            counts,
            report_key,
            moved_to,
            code,
            None,
            None,
            0.0,
        )

    # -- a claimed file ----------------------------------------------------------------------------

    def _claimed(
        self,
        file: IncomingFile,
        path: Path,
        sha: str,
        tenant: TenantSettings | None,
        claim: Claim,
        started: float,
    ) -> FileResult | None:
        received = utc_now_iso()
        record: dict[str, Any] = {
            "_id": claim.file_id,
            "tenant": tenant.name if tenant else UNKNOWN_TENANT,
            "key": file.key,
            "name": file.name,
            "size": file.size,
            "etag": file.etag,  # object stores (S3): the exact object version that was loaded
            "version_id": file.version_id,
            "sha256": sha,
            "state": "processing",
            "received_at": received,
            "attempt": claim.attempt,
            "worker": self.worker_id,
        }
        if claim.resumed:
            previous = self.store.ledger.get_file(claim.file_id)
            if previous:
                record["received_at"] = previous.get("received_at", received)
        self.store.ledger.save_file(record)
        event(
            _log, "file.claimed", key=file.key, sha256=sha[:12], attempt=claim.attempt, resumed=claim.resumed
        )
        with Heartbeat(
            self.store.ledger, claim, self.settings.pipeline.lease_seconds, self.cancel
        ) as heartbeat:
            try:
                return self._process_claimed(file, path, sha, tenant, claim, heartbeat, record, started)
            except LeaseLost:
                event(_log, "file.lease_lost", logging.WARNING, key=file.key)
                return None
            except Exception:
                # Any failed attempt (transient, disk full writing the report, a bug) hands the
                # lease back, so the retry does not wait out lease_seconds; after ``complete``
                # this is a no-op.
                self.store.ledger.release(claim)
                raise

    def _process_claimed(
        self,
        file: IncomingFile,
        path: Path,
        sha: str,
        tenant: TenantSettings | None,
        claim: Claim,
        heartbeat: Heartbeat,
        record: dict[str, Any],
        started: float,
    ) -> FileResult | None:
        counts = Counts()
        rejects = RejectLog(self.settings.pipeline.max_report_errors)
        error: Issue | None = None
        processor: Processor | None = None
        load: LoadResult | None = None
        if tenant is None:
            error = Issue("unknown_tenant", self.settings.why_not_tenant(file.tenant))
        else:
            try:
                sniffed = sniff(path, self.settings.pipeline, name=file.name)
                processor_cls = choose(sniffed, tenant)
                if processor_cls is None:
                    raise FileRejected("no_processor", f"no processor accepts this {sniffed.kind} file")
                limits = self.settings.pipeline
                context = ProcessorContext(
                    settings=self.settings,
                    tenant=tenant,
                    resources=self.store.resources,
                    open_payload=lambda: open_payload(
                        path, sniffed.gzipped, limits.max_decompressed_bytes, on_open=self._payload.watch
                    ),
                    path=path,
                    sniffed=sniffed,
                    name=file.name,
                )
                processor = processor_cls(context)
                load = self._load(processor, tenant, sha, rejects, heartbeat, file)
                counts = load.counts
                if counts.loaded:
                    self._resolve_pending(tenant.name, file, load.stored_identifiers)
            except FileRejected as err:
                error = Issue(err.code, err.message)
            except (LeaseLost, TransientError):
                raise
            except Exception as err:  # a bug must not stop the service or lose the file
                _log.exception("file.internal_error", extra={"dz_fields": {"key": file.key}})
                error = Issue(
                    "internal_error",
                    f"processing failed unexpectedly ({type(err).__name__}); "
                    "the file is kept in quarantine and can be replayed",
                )
        outcome = decide_outcome(
            counts,
            error,
            atomic_failed=bool(processor and self._atomic(processor, tenant)),
            informational=bool(processor and processor.informational),
        )
        if error is None and outcome is Outcome.QUARANTINED:
            error = quarantine_reason(counts, processor)
        if load is not None:
            self.last_times = load.times.as_dict()
        quality = load.profile.as_json() if load is not None and load.counts.read else None
        return self._finish(
            file,
            claim,
            sha,
            tenant,
            outcome,
            counts,
            error,
            rejects,
            processor,
            record,
            started,
            quality,
            heartbeat=heartbeat,
        )

    def _resolve_pending(
        self, tenant: str, file: IncomingFile, identifiers: set[tuple[str, str, str]] | None
    ) -> None:
        """Conditional references stored earlier whose target this file may have brought
        (resources waiting for one of ``identifiers``). Outside the file's counts, and never
        its outcome: a failure here is logged, and the next file tries again."""
        try:
            resolve_pending(self.store.resources, tenant, identifiers, self._rewrite_in_pool)
        except Exception as err:
            event(_log, "references.resolve_failed", logging.WARNING, key=file.key, error=type(err).__name__)

    def _rewrite_in_pool(
        self, items: list[tuple[bytes, dict[str, str]]]
    ) -> Callable[[], list[Rewritten | None]]:
        """``resolve_pending``'s rewriting and hashing, started on the pool's workers."""
        share = -(-len(items) // max(1, self.validator.workers))
        futures = [
            self.validator.call(rewrite_digests, items[start : start + share])
            for start in range(0, len(items), share)
        ]
        return lambda: [outcome for future in futures for outcome in self.validator.result(future)]

    def _atomic(self, processor: Processor, tenant: TenantSettings | None) -> bool:
        try:
            return processor.atomic() or (
                tenant is not None and self.settings.policy_for(tenant.name) == "file"
            )
        except FileRejected:
            return False

    def _load(
        self,
        processor: Processor,
        tenant: TenantSettings,
        sha: str,
        rejects: RejectLog,
        heartbeat: Heartbeat,
        file: IncomingFile,
    ) -> LoadResult:
        pipeline = self.settings.pipeline
        loader = Loader(
            self.store.resources,
            self.validator,
            tenant.name,
            pipeline.batch_size,
            in_flight=pipeline.validation_workers * 2 or 1,  # keep every worker busy; 1 when in-process
            progress=_BatchProgress(file, self.progress, self._payload),
            raw_parser=processor.raw_parser,
            commit_seconds=pipeline.commit_seconds,
        )

        def records() -> Iterator[Record]:
            every = processor.records()
            return every if self.record_limit is None else itertools.islice(every, self.record_limit)

        if not self._atomic(processor, tenant):
            return loader.run(records(), rejects, write=True, file_sha256=sha, heartbeat=heartbeat)
        # All or nothing: validate every record first, store only if none failed.
        checked = loader.run(records(), rejects, write=False, file_sha256=sha, heartbeat=heartbeat)
        if checked.counts.rejected:
            checked.counts.unchanged = 0
            return checked
        loader.progress = None
        stored = loader.run(
            records(),
            RejectLog(1),
            write=True,
            file_sha256=sha,
            heartbeat=heartbeat,
            validate=False,
        )
        stored.times.validate += checked.times.validate
        stored.times.parse += checked.times.parse
        return stored

    # -- finishing -----------------------------------------------------------------------------------

    def _finish(
        self,
        file: IncomingFile,
        claim: Claim,
        sha: str,
        tenant: TenantSettings | None,
        outcome: Outcome,
        counts: Counts,
        error: Issue | None,
        rejects: RejectLog,
        processor: Processor | None,
        record: dict[str, Any],
        started: float,
        quality: dict[str, Any] | None = None,
        *,
        heartbeat: Heartbeat,
    ) -> FileResult | None:
        area_tenant = tenant.name if tenant else UNKNOWN_TENANT
        day = datetime.now(UTC).strftime("%Y/%m/%d")
        destination = self._free_key(f"{outcome.area}/{area_tenant}/{day}/{fit_name(file.name)}")
        report_key = rejects_key = None
        details = _processor_details(processor)
        if outcome in (Outcome.QUARANTINED, Outcome.PARTIAL):
            base = (
                destination
                if outcome is Outcome.QUARANTINED
                else self._free_key(f"{QUARANTINE}/{area_tenant}/{day}/{fit_name(file.name)}")
            )
            if outcome is Outcome.PARTIAL and processor is not None:
                rejects_key = self._write_rejects(
                    processor, rejects, f"{base}.rejects.{processor.rejects_extension}"
                )
            report = build_report(
                file_name=file.name,
                original_key=file.key,
                tenant=area_tenant,
                sha256=sha,
                processor=processor.name if processor else None,
                outcome=outcome.value,
                counts=counts,
                error=error,
                rejects=rejects,
                destination=destination,
                rejects_key=rejects_key,
                generated_at=utc_now_iso(),
                details=details,
                quality=quality,
            )
            report_key = self.source.put_bytes(f"{base}.error.json", report)
        seconds = round(time.monotonic() - started, 3)
        # The file record is final before the outcome is committed: a worker that dies between
        # ``complete`` and the move leaves everything the next worker needs to finish the move.
        record.update(
            state=outcome.value,
            counts=counts.as_dict(),
            processor=processor.name if processor else None,
            destination=destination,
            report=report_key,
            rejects=rejects_key,
            finished_at=utc_now_iso(),
            seconds=seconds,
            error={"code": error.code, "message": error.message} if error else None,
            stage_seconds=self.last_times if counts.read else None,
            details=details or None,
            quality=quality,
            # The top reasons, for status pages; the report has them all.
            reject_reasons=rejects.reason_list()[:20] or None,
            # False until the file is at its destination: status pages say "processing" until
            # then, so "archived" never names a file still in incoming/.
            settled=False,
        )
        self.store.ledger.save_file(record)
        # No beat after ``complete``: it would find the claim done and report the lease lost.
        heartbeat.stop()
        if not self.store.ledger.complete(claim, outcome.value, destination):
            event(_log, "file.lease_lost", logging.WARNING, key=file.key)
            return None
        try:
            moved_to = self.source.move(file, destination)
        except SourceFileGone:
            # The sender (or an operator) removed the file after we read it: its effect is
            # done, but the ledger must not name a destination that holds nothing.
            record.update(destination=None, source_gone=True, settled=True)
            self.store.ledger.save_file(record)
            event(_log, "file.source_gone", logging.WARNING, key=file.key, outcome=outcome.value)
            raise
        self.store.ledger.mark_moved(claim.key)
        record.update(destination=moved_to, settled=True)
        self.store.ledger.save_file(record)
        result = FileResult(
            name=file.name,
            tenant=area_tenant,
            key=file.key,
            outcome=outcome,
            counts=counts,
            report=report_key,
            destination=moved_to,
            reason=error.code if error else ("records_rejected" if outcome is Outcome.PARTIAL else None),
            sha256=sha,
            processor=processor.name if processor else None,
            seconds=seconds,
        )
        event(
            _log,
            "file.finished",
            logging.INFO if outcome.loaded_data else logging.WARNING,
            key=file.key,
            tenant=area_tenant,
            outcome=outcome.value,
            counts=counts.as_dict(),
            reason=result.reason,
            destination=moved_to,
            seconds=seconds,
            **({"details": details} if details else {}),
        )
        return result

    def _write_rejects(self, processor: Processor, rejects: RejectLog, key: str) -> str | None:
        with self._temp_file() as tmp:
            with tmp.open("wb") as out:
                processor.write_rejects(rejects.indexes, out)
            return self.source.put(key, tmp)

    @contextlib.contextmanager
    def _temp_file(self) -> Iterator[Path]:
        fd, name = tempfile.mkstemp(prefix="dropzone-", dir=self.settings.pipeline.temp_dir)
        os.close(fd)
        try:
            yield Path(name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    def _free_key(self, key: str) -> str:
        candidate, n = key, 1
        while self.source.exists(candidate) or self.source.exists(f"{candidate}.error.json"):
            n += 1
            candidate = with_suffix_number(key, n)
        return candidate

    # -- content seen before -----------------------------------------------------------------------

    def _already_done(
        self, file: IncomingFile, tenant: str, sha: str, done: dict[str, Any], started: float
    ) -> FileResult | None:
        if done.get("path") == file.key and not done.get("moved") and done.get("destination"):
            if float(done.get("lease_until") or 0.0) > time.time():
                # The owner committed the outcome moments ago and is moving the file now: leave it.
                event(_log, "file.busy", logging.DEBUG, key=file.key)
                return None
            # A worker finished this file but died before moving it: finish the move only.
            moved_to = self.source.move(file, done["destination"])
            self.store.ledger.mark_moved(done["_id"])
            previous = self.store.ledger.get_file(done["file_id"]) or {}
            if previous:
                self.store.ledger.save_file({**previous, "destination": moved_to, "settled": True})
            outcome = Outcome(done["outcome"])
            counts = Counts(**(previous.get("counts") or {}))
            event(_log, "file.move_completed", key=file.key, outcome=outcome.value, destination=moved_to)
            return FileResult(
                file.name,
                tenant,
                file.key,
                outcome,
                counts,
                previous.get("report"),
                moved_to,
                None,
                sha,
                previous.get("processor"),
                round(time.monotonic() - started, 3),
            )
        day = datetime.now(UTC).strftime("%Y/%m/%d")
        destination = self._free_key(f"{ARCHIVED}/{tenant}/{day}/{fit_name(file.name)}")
        moved_to = self.source.move(file, destination)
        seconds = round(time.monotonic() - started, 3)
        record_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{file.key}|{sha}|{file.mtime}").hex
        self.store.ledger.save_file(
            {
                "_id": record_id,
                "tenant": tenant,
                "key": file.key,
                "name": file.name,
                "size": file.size,
                "sha256": sha,
                "state": Outcome.DUPLICATE.value,
                "duplicate_of": done.get("file_id"),
                "received_at": utc_now_iso(),
                "finished_at": utc_now_iso(),
                "destination": moved_to,
                "counts": Counts().as_dict(),
                "seconds": seconds,
                "worker": self.worker_id,
            }
        )
        event(_log, "file.finished", key=file.key, tenant=tenant, outcome="duplicate", destination=moved_to)
        return FileResult(
            file.name,
            tenant,
            file.key,
            Outcome.DUPLICATE,
            Counts(),
            None,
            moved_to,
            "duplicate_content",
            sha,
            None,
            seconds,
        )


def _processor_details(processor: Processor | None) -> dict[str, Any]:
    """The processor's own counts for the report and ledger; a failure here must not lose the file."""
    if processor is None:
        return {}
    try:
        return dict(processor.report_details())
    except Exception:
        _log.exception("processor.details_failed")
        return {}


class _PayloadPosition:
    """How far into the file the processor has read (the raw file's position), for progress."""

    def __init__(self) -> None:
        self._raw: BinaryIO | None = None

    def watch(self, raw: BinaryIO) -> None:
        self._raw = raw

    def bytes_read(self, size: int) -> int:
        try:
            return min(self._raw.tell(), size) if self._raw is not None else 0
        except (OSError, ValueError):  # closed: read to the end
            return size


class _BatchProgress:
    """Per stored batch: a DEBUG event, an INFO progress line every PROGRESS_LOG_SECONDS on long
    files, and the CLI's progress callback: ``callback(file, records_in_batch)`` and, when it has
    one, ``callback.bytes_read(file, bytes_read_so_far)``."""

    def __init__(
        self,
        file: IncomingFile,
        callback: Callable[[IncomingFile, int], None] | None,
        payload: _PayloadPosition | None = None,
    ) -> None:
        self.file = file
        self.callback = callback
        self.payload = payload
        self.records = 0
        self.started = self.last_log = time.monotonic()

    def __call__(self, n: int) -> None:
        self.records += n
        event(_log, "file.batch", logging.DEBUG, key=self.file.key, records=self.records)
        now = time.monotonic()
        if now - self.last_log >= PROGRESS_LOG_SECONDS:
            self.last_log = now
            rate = self.records / max(now - self.started, 1e-9)
            event(_log, "file.progress", key=self.file.key, records=self.records, per_second=round(rate))
        if self.callback:
            self.callback(self.file, n)
            bytes_read = getattr(self.callback, "bytes_read", None)
            if bytes_read is not None and self.payload is not None:
                bytes_read(self.file, self.payload.bytes_read(self.file.size))


def decide_outcome(
    counts: Counts, error: Issue | None, atomic_failed: bool, informational: bool = False
) -> Outcome:
    """The table in README ("File outcomes")."""
    if error is not None:
        return Outcome.QUARANTINED
    if counts.rejected and atomic_failed:
        return Outcome.QUARANTINED
    if counts.read == 0:
        return Outcome.ARCHIVED if informational else Outcome.QUARANTINED
    if counts.rejected == 0:
        return Outcome.ARCHIVED
    if counts.loaded + counts.unchanged > 0:
        return Outcome.PARTIAL
    return Outcome.QUARANTINED


def quarantine_reason(counts: Counts, processor: Processor | None) -> Issue:
    """Why a file without a file-level error is quarantined anyway."""
    if counts.read == 0:
        return Issue("no_records", "the file holds no records")
    if processor is not None and processor.atomic():
        return Issue(
            "transaction_failed",
            f"{counts.rejected} of {counts.read} entries failed; a transaction loads all or nothing",
        )
    if counts.rejected < counts.read:
        return Issue(
            "policy_file",
            f"{counts.rejected} of {counts.read} records failed and the tenant's "
            "policy is 'file' (all or nothing)",
        )
    return Issue("all_records_rejected", f"all {counts.read} records failed validation")


__all__ = ["UNKNOWN_TENANT", "DropzoneError", "Pipeline", "decide_outcome"]
