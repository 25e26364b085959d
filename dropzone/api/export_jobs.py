"""Bulk Data export jobs of one API process: a bounded queue, one worker thread, job folders
that expire.

A job is ``export_ndjson`` (the engine of ``dropzone export``) run in the background into its
own folder, so the files a client downloads are byte for byte what the CLI writes for the same
tenant, types and ``_since``. Jobs run one at a time (an export reads a whole tenant; two at
once would only share the disk and the store); at most ``max_active`` wait or run, and a tenant
holds at most ``max_per_tenant`` jobs, finished ones included, so nobody can fill the disk
with copies of their data. A finished job (complete or failed) and its files are removed
``ttl_seconds`` after it finished (swept by a timer and on every call); a deleted job at once
(a running one as soon as it notices, within one resource).

Jobs live in this process's memory; the folders are under ``export_root`` (the pipeline's
``temp_dir`` when set, else the store's state folder: ``<zone>/.dropzone/bulk-export`` for a
folder zone), never under ``incoming/``. Folders a dead process left behind are removed once
they are older than the expiry.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dropzone.config import Settings
from dropzone.errors import DropzoneError
from dropzone.export import ExportedType, export_ndjson
from dropzone.log import event
from dropzone.pipeline.runner import fault_code
from dropzone.store import sqlite_path
from dropzone.store.base import ResourceStore, utc_now_iso

_log = logging.getLogger("dropzone.api.export")
JOB_TTL_SECONDS = 3600.0
MAX_ACTIVE_JOBS = 4
MAX_JOBS_PER_TENANT = 4
FOLDER_NAME = "bulk-export"
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"


class TooManyJobs(DropzoneError):
    """A new job would pass a limit; ``retry_after`` seconds is a fair wait."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class _Cancelled(Exception):
    """Raised inside the export when its job was deleted."""


@dataclass(slots=True, eq=False)  # identity: a job is itself, whatever its state
class ExportJob:
    id: str
    tenant: str
    request_url: str  # the kick-off URL, for the manifest's ``request``
    types: tuple[str, ...] | None
    since: str | None
    folder: Path
    state: JobState = JobState.QUEUED
    transaction_time: str | None = None
    outputs: list[ExportedType] = field(default_factory=list)
    exported: int = 0  # resources written so far (progress)
    current_type: str | None = None
    finished_at: float | None = None  # wall clock, for expiry
    error_code: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def progress(self) -> str:
        """For ``X-Progress``: counts and type names only."""
        if self.state is JobState.QUEUED:
            return "queued"
        where = f", now {self.current_type}" if self.current_type else ""
        return f"{self.exported} resources written{where}"


def export_root(settings: Settings) -> Path:
    """Where job folders go: beside the pipeline's temporary files when ``temp_dir`` is set,
    else in the store's state folder (the SQLite database's folder), which no source watches."""
    if settings.pipeline.temp_dir:
        return Path(settings.pipeline.temp_dir) / f"dropzone-{FOLDER_NAME}"
    return sqlite_path(settings).parent / FOLDER_NAME


class ExportJobs:
    def __init__(
        self,
        resources: ResourceStore,
        root: Path,
        *,
        ttl_seconds: float = JOB_TTL_SECONDS,
        max_active: int = MAX_ACTIVE_JOBS,
        max_per_tenant: int = MAX_JOBS_PER_TENANT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.resources = resources
        self.root = root
        self.ttl_seconds = ttl_seconds
        self.max_active = max_active
        self.max_per_tenant = max_per_tenant
        self.clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[str, ExportJob] = {}
        self._queue: deque[ExportJob] = deque()
        self._worker: threading.Thread | None = None
        self._remove_stale_folders()

    # -- requests ----------------------------------------------------------------------------

    def submit(
        self, tenant: str, request_url: str, types: tuple[str, ...] | None, since: str | None
    ) -> ExportJob:
        """Queue a job (its folder exists when this returns). Raises ``TooManyJobs``, or
        ``OSError`` when the export folder cannot be made."""
        self._expire()
        with self._lock:
            active = sum(1 for j in self._jobs.values() if j.state in (JobState.QUEUED, JobState.RUNNING))
            if active >= self.max_active:
                raise TooManyJobs("the server is running as many exports as it allows; retry later", 30)
            if sum(1 for j in self._jobs.values() if j.tenant == tenant) >= self.max_per_tenant:
                raise TooManyJobs(
                    f"this tenant already has {self.max_per_tenant} export jobs; delete finished ones "
                    f"or wait for them to expire ({self.ttl_seconds:.0f} s after they finish)",
                    60,
                )
            job_id = uuid.uuid4().hex
            folder = self.root / job_id
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.mkdir(mode=0o700)  # health data: only this user reads it
            job = ExportJob(job_id, tenant, request_url, types, since, folder)
            self._jobs[job_id] = job
            self._queue.append(job)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="dropzone-export", daemon=True)
                self._worker.start()
        event(_log, "export.queued", tenant=tenant, job=job_id, types=list(types) if types else None)
        return job

    def get(self, tenant: str, job_id: str) -> ExportJob | None:
        """The tenant's job, or None (unknown, expired, deleted or another tenant's)."""
        self._expire()
        with self._lock:
            job = self._jobs.get(job_id)
        return job if job is not None and job.tenant == tenant else None

    def delete(self, tenant: str, job_id: str) -> bool:
        """Cancel and remove the tenant's job; False when there is no such job."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.tenant != tenant:
                return False
            del self._jobs[job_id]
            job.cancel.set()
            running = job.state is JobState.RUNNING
            if job in self._queue:
                self._queue.remove(job)
        if not running:  # a running job's worker removes its folder once it has stopped writing
            _remove(job.folder)
        event(_log, "export.deleted", tenant=tenant, job=job_id, was=job.state.value)
        return True

    def output(self, job: ExportJob, rtype: str) -> Path | None:
        """The file of one type of a complete job, or None."""
        if job.state is not JobState.COMPLETE:
            return None
        for item in job.outputs:
            if item.resource_type == rtype:
                return item.path
        return None

    def expires_at(self, job: ExportJob) -> float | None:
        return None if job.finished_at is None else job.finished_at + self.ttl_seconds

    # -- the worker --------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._worker = None
                    return
                job = self._queue.popleft()
                job.state = JobState.RUNNING
            self._run(job)

    def _run(self, job: ExportJob) -> None:
        # The spec's transactionTime is when the query runs: taken before the first read, so
        # everything stored up to it is included.
        job.transaction_time = utc_now_iso()
        started = time.monotonic()

        def on_resource(rtype: str) -> None:
            if job.cancel.is_set():
                raise _Cancelled
            job.exported += 1
            job.current_type = rtype

        try:
            outputs = export_ndjson(self.resources, job.tenant, job.folder, job.types, job.since, on_resource)
        except _Cancelled:
            _remove(job.folder)
            event(_log, "export.cancelled", tenant=job.tenant, job=job.id)
            return
        except Exception as err:  # any fault ends this job, never the worker or the API
            code = fault_code(err)
            with self._lock:
                job.state, job.error_code, job.finished_at = JobState.FAILED, code, self.clock()
            _remove(job.folder)
            self._expire_later()
            event(
                _log,
                "export.failed",
                logging.ERROR,
                tenant=job.tenant,
                job=job.id,
                code=code,
                error_type=type(err).__name__,
            )
            return
        with self._lock:
            job.outputs = outputs
            job.state, job.finished_at = JobState.COMPLETE, self.clock()
            deleted = job.cancel.is_set()  # deleted after its last resource was written
        if deleted:
            _remove(job.folder)
        self._expire_later()
        event(
            _log,
            "export.complete",
            tenant=job.tenant,
            job=job.id,
            files=len(outputs),
            resources=sum(o.count for o in outputs),
            seconds=round(time.monotonic() - started, 3),
        )

    # -- expiry ------------------------------------------------------------------------------

    def _expire(self) -> None:
        now = self.clock()
        with self._lock:
            gone = [
                j
                for j in self._jobs.values()
                if j.finished_at is not None and now >= j.finished_at + self.ttl_seconds
            ]
            for job in gone:
                del self._jobs[job.id]
        for job in gone:
            _remove(job.folder)
            event(_log, "export.expired", tenant=job.tenant, job=job.id)

    def _expire_later(self) -> None:
        """Sweep once the job just finished is due: its files must not outlive the expiry just
        because nobody calls again (every call sweeps too)."""
        timer = threading.Timer(self.ttl_seconds + 1.0, self._expire)
        timer.daemon = True
        timer.start()

    def _remove_stale_folders(self) -> None:
        """Job folders older than the expiry, left by a process that has ended (jobs live in
        memory, so nothing can reach them any more)."""
        try:
            folders = list(self.root.iterdir())
        except OSError:
            return  # no export root yet
        cutoff = self.clock() - self.ttl_seconds
        for folder in folders:
            try:
                old = folder.stat().st_mtime < cutoff
            except OSError:
                continue
            if old and _JOB_ID.match(folder.name) and folder.is_dir():
                _remove(folder)


def _remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    if folder.exists():  # rmtree swallowed a failure: say so, the folder holds health data
        event(_log, "export.folder_left", logging.WARNING, folder=os.fspath(folder))
