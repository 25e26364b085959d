"""What the dashboard pages show, gathered from the ledger, the store and the zone's reports.

Only counts, ids, file names, zone paths, error codes and their (value-free) messages, FHIR
element paths and code-system URLs leave this module: reports are read field by field, never
passed through, and resource content is only ever seen by ``reference_report`` and the quality
profile, which return counts, paths and ids themselves.

A tenant page refreshes every few seconds while it is open, so its costly parts are computed
once per *state* of the tenant: the store counts plus the id, state and end of its newest
files, which the page reads anyway. A new file, a file finishing or a change in the counts
recomputes them; otherwise they are reused for up to ``SLOW_TTL`` seconds (single FHIR updates
through the API change no ledger record, hence the TTL).

* The ledger part (files per day from the newest ``CHART_FILES`` records, rejects by reason
  from the newest ``REPORTS_SCANNED`` reports, each report parsed once per process) is bounded
  and computed while the page waits.
* The scans (``reference_report`` and the quality profile) read every resource of the tenant,
  so they grow with it: they run in a background thread, one at a time per process. The page
  waits ``SCAN_WAIT`` seconds for them, then shows the previous result (or says they are being
  computed) and its next refresh picks the new one up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from dropzone.api.access import Access
from dropzone.api.context import ApiContext
from dropzone.config import TENANT_NAME
from dropzone.errors import SourceFileGone
from dropzone.log import event
from dropzone.quality.tenant import tenant_quality
from dropzone.search.references import reference_report
from dropzone.sources.base import INCOMING

_log = logging.getLogger("dropzone.api")

STATES = ("archived", "partial", "quarantined", "duplicate", "processing")
LATEST_FILES = 50
CHART_DAYS = 14
CHART_FILES = 10_000  # ledger records read for the files-per-day chart (newest first)
REPORTS_SCANNED = 200  # newest reports read for "rejects by reason"
REPORT_LIMIT = 32 * 2**20
SLOW_TTL = 60.0
SCAN_WAIT = 0.1  # seconds a page waits for the tenant scans before it shows what it has
OVERVIEW_TTL = 4.0
_REASON_CACHE = 4_000  # parsed reports remembered (by zone key: a report never changes)
FILE_LEVEL = "(whole file)"


def _text(value: Any, limit: int = 200) -> str:
    """A scalar from a report or record as bounded text ('' for anything else)."""
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, (str, int, float)):
        return str(value)[:limit]
    return ""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def short_time(iso: Any) -> str:
    """``2026-12-06T04:41:07.532Z`` -> ``2026-12-06 04:41:07Z``."""
    text = _text(iso, 40)
    return f"{text[:10]} {text[11:19]}Z" if len(text) >= 19 and text[10] == "T" else text


def _state(record: dict[str, Any]) -> str:
    state = record.get("state")
    return state if state in STATES else "processing"


# -- who sees what ---------------------------------------------------------------------------------


def tenant_exists(ctx: ApiContext, tenant: str) -> bool:
    """Declared, given API credentials since start, or undeclared but allowed; the same rule
    as ``tenant_reads``, so the dashboard and the API agree on which tenants exist."""
    if not TENANT_NAME.match(tenant):
        return False
    return ctx.settings.tenant(tenant) is not None or ctx.credentials.for_tenant(tenant) is not None


def visible_tenants(ctx: ApiContext, access: Access, cache: UiCache) -> list[str]:
    """The tenants the caller may read: a tenant itself; a reader its listed tenants (those
    this server knows); an every-tenant reader every tenant with config, files or data."""
    if access.tenants is not None:
        return sorted(t for t in access.tenants if tenant_exists(ctx, t))
    summary, counts = cache.overview(ctx)
    names = set(ctx.settings.tenants) | set(summary) | set(counts)
    return sorted(t for t in names if TENANT_NAME.match(t) and tenant_exists(ctx, t))


# -- the overview ----------------------------------------------------------------------------------


@dataclass(slots=True)
class TenantRow:
    tenant: str
    resources: int
    types: int
    files: dict[str, int]
    total_files: int


def overview_rows(ctx: ApiContext, tenants: list[str], cache: UiCache) -> list[TenantRow]:
    summary, counts = cache.overview(ctx)
    rows = []
    for tenant in tenants:
        states: dict[str, int] = defaultdict(int)
        for state, n in summary.get(tenant, {}).items():
            states[state if state in STATES else "processing"] += n
        by_type = counts.get(tenant, {})
        rows.append(
            TenantRow(
                tenant=tenant,
                resources=sum(by_type.values()),
                types=len(by_type),
                files={s: states.get(s, 0) for s in STATES},
                total_files=sum(states.values()),
            )
        )
    return rows


# -- a tenant's page -------------------------------------------------------------------------------


@dataclass(slots=True)
class FileRow:
    id: str
    name: str
    via: str
    state: str
    read: int
    loaded: int
    unchanged: int
    rejected: int
    error_code: str
    received: str
    finished: str
    has_report: bool
    rejects_file: str


@dataclass(slots=True)
class Segment:
    state: str
    x: float
    width: float


@dataclass(slots=True)
class DayRow:
    day: str
    counts: dict[str, int]
    total: int
    segments: list[Segment]


@dataclass(slots=True)
class Reason:
    code: str
    path: str
    records: int
    files: int


@dataclass(slots=True)
class LedgerPart:
    """Files per day and rejects by reason (bounded reads of the ledger and the reports)."""

    days: list[DayRow]
    chart_files: int
    chart_capped: bool
    reasons: list[Reason]
    reports_read: int


@dataclass(slots=True)
class Scan:
    """What reading every resource of the tenant tells: references and the quality profile."""

    references: dict[str, Any] | None
    references_error: str | None
    quality: dict[str, Any] | None
    quality_note: str | None
    computed_at: str
    seconds: float


@dataclass(slots=True)
class TenantPage:
    tenant: str
    counts: list[tuple[str, int]]
    total_resources: int
    files: list[FileRow]
    ledger: LedgerPart
    #: The newest scan result (None before the first one finished).
    scan: Scan | None
    #: True while a scan for the tenant's current state is still running.
    scan_pending: bool


def _via(tenant: str, key: str) -> str:
    parts = key.split("/")
    return "api" if len(parts) >= 5 and parts[:3] == [INCOMING, tenant, "api"] else "drop"


def file_row(tenant: str, record: dict[str, Any]) -> FileRow:
    counts = record.get("counts") if isinstance(record.get("counts"), dict) else {}
    error = record.get("error") if isinstance(record.get("error"), dict) else {}
    state = _state(record)
    final = state != "processing"
    return FileRow(
        id=_text(record.get("_id"), 64),
        name=_text(record.get("name")) or _text(record.get("key")).rsplit("/", 1)[-1],
        via=_via(tenant, _text(record.get("key"), 1000)),
        state=state,
        read=_int(counts.get("read")) if final else 0,
        loaded=_int(counts.get("loaded")) if final else 0,
        unchanged=_int(counts.get("unchanged")) if final else 0,
        rejected=_int(counts.get("rejected")) if final else 0,
        error_code=_text(error.get("code"), 80),
        received=short_time(record.get("received_at")),
        finished=short_time(record.get("finished_at")),
        has_report=bool(record.get("report")) and final,
        rejects_file=_text(record.get("rejects"), 1000),
    )


def fingerprint(counts: dict[str, int], latest: list[dict[str, Any]]) -> tuple[Any, ...]:
    return (
        tuple(sorted(counts.items())),
        tuple((r.get("_id"), r.get("state"), r.get("finished_at")) for r in latest),
    )


def tenant_page(ctx: ApiContext, tenant: str, cache: UiCache, scan_wait: float = SCAN_WAIT) -> TenantPage:
    latest = ctx.store.ledger.files(tenant, LATEST_FILES)
    counts = ctx.store.resources.tenant_counts([tenant]).get(tenant, {})
    state = fingerprint(counts, latest)
    ledger = cache.ledger(tenant, state, lambda: ledger_part(ctx, tenant, cache))
    scan, pending = cache.scan(tenant, state, lambda: scan_tenant(ctx, tenant), scan_wait)
    return TenantPage(
        tenant=tenant,
        counts=sorted(counts.items()),
        total_resources=sum(counts.values()),
        files=[file_row(tenant, r) for r in latest],
        ledger=ledger,
        scan=scan,
        scan_pending=pending,
    )


def day_rows(records: Iterable[dict[str, Any]], today: date, days: int = CHART_DAYS) -> list[DayRow]:
    """Files received per UTC day by outcome, for the ``days`` days up to ``today`` (newest
    first), with the stacked bar's segments scaled to the busiest day (100 units wide)."""
    wanted = [(today - timedelta(days=n)).isoformat() for n in range(days)]
    buckets: dict[str, dict[str, int]] = {d: dict.fromkeys(STATES, 0) for d in wanted}
    for record in records:
        day = _text(record.get("received_at"), 40)[:10]
        if day in buckets:
            buckets[day][_state(record)] += 1
    busiest = max((sum(c.values()) for c in buckets.values()), default=0) or 1
    rows = []
    for day in wanted:
        by_state = buckets[day]
        x = 0.0
        segments = []
        for state in STATES:
            if by_state[state]:
                width = 100.0 * by_state[state] / busiest
                segments.append(Segment(state, round(x, 2), round(width, 2)))
                x += width
        rows.append(DayRow(day, by_state, sum(by_state.values()), segments))
    return rows


def report_reasons(report: dict[str, Any]) -> dict[tuple[str, str], int]:
    """(error code, FHIR path) -> rejected records of one report with that error (each record
    once per reason); the file-level error, if any, under ``FILE_LEVEL``."""
    out: dict[tuple[str, str], int] = defaultdict(int)
    items = report.get("rejected_records")
    for item in items if isinstance(items, list) else ():
        errors = item.get("errors") if isinstance(item, dict) else None
        seen = set()
        for issue in errors if isinstance(errors, list) else ():
            if isinstance(issue, dict):
                seen.add((_text(issue.get("code"), 80) or "?", _text(issue.get("path"), 300)))
        for reason in seen:
            out[reason] += 1
    error = report.get("error")
    if isinstance(error, dict) and error.get("code"):
        out[(_text(error.get("code"), 80), FILE_LEVEL)] += 1
    return dict(out)


def read_report_bytes(ctx: ApiContext, key: str) -> bytes | None:
    """A report's bytes as the pipeline wrote them, if they still hold a JSON object."""
    try:
        body = ctx.source.read_bytes(key, REPORT_LIMIT)
        return body if isinstance(orjson.loads(body), dict) else None
    except (SourceFileGone, orjson.JSONDecodeError, OSError, ValueError):
        return None  # removed or replaced by an operator, or cut at the limit


def read_report(ctx: ApiContext, key: str) -> dict[str, Any] | None:
    body = read_report_bytes(ctx, key)
    return orjson.loads(body) if body is not None else None  # type: ignore[no-any-return]


def ledger_part(ctx: ApiContext, tenant: str, cache: UiCache) -> LedgerPart:
    records = ctx.store.ledger.files(tenant, CHART_FILES)
    days = day_rows(records, datetime.now(UTC).date())
    grouped: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    reports_read = 0
    for record in records:
        key = record.get("report")
        if not isinstance(key, str) or not key or _state(record) == "processing":
            continue
        if reports_read >= REPORTS_SCANNED:
            break
        reports_read += 1
        found = cache.reasons(key, lambda key=key: _reasons_of(ctx, key))
        for reason, n in found.items():
            grouped[reason][0] += n
            grouped[reason][1] += 1
    reasons = [Reason(c, p, n, f) for (c, p), (n, f) in grouped.items()]
    reasons.sort(key=lambda r: (-r.records, r.code, r.path))
    return LedgerPart(
        days=days,
        chart_files=len(records),
        chart_capped=len(records) >= CHART_FILES,
        reasons=reasons,
        reports_read=reports_read,
    )


def scan_tenant(ctx: ApiContext, tenant: str) -> Scan:
    """The reference report and the quality profile (each failing alone, logged by class)."""
    started = time.perf_counter()
    references = references_error = None
    try:
        references = reference_report(ctx.store.resources, tenant)
    except Exception as err:  # a store error must not take the page down
        event(_log, "ui.references_failed", logging.ERROR, tenant=tenant, error_type=type(err).__name__)
        references_error = "The reference report could not be computed (see the service log)."
    quality, quality_note = None, None
    try:
        quality = tenant_quality(ctx.store.resources, tenant)
    except Exception as err:
        event(_log, "ui.quality_failed", logging.ERROR, tenant=tenant, error_type=type(err).__name__)
        quality_note = "The quality profile could not be computed (see the service log)."
    return Scan(
        references=references,
        references_error=references_error,
        quality=quality if isinstance(quality, dict) else None,
        quality_note=quality_note,
        computed_at=short_time(datetime.now(UTC).isoformat().replace("+00:00", "Z")),
        seconds=round(time.perf_counter() - started, 3),
    )


def _reasons_of(ctx: ApiContext, key: str) -> dict[tuple[str, str], int]:
    report = read_report(ctx, key)
    return report_reasons(report) if report is not None else {}


# -- one file and its report -----------------------------------------------------------------------


@dataclass(slots=True)
class Issue:
    code: str
    path: str
    message: str


@dataclass(slots=True)
class RejectedRecord:
    location: str
    resource_type: str
    id: str
    errors: list[Issue]


@dataclass(slots=True)
class FileView:
    row: FileRow
    size: int
    processor: str
    destination: str
    sha256: str
    error_message: str
    report_found: bool
    outcome: str = ""
    rejected: list[RejectedRecord] = field(default_factory=list)
    omitted: int = 0
    warnings: list[RejectedRecord] = field(default_factory=list)
    reasons: list[Reason] = field(default_factory=list)
    details: list[tuple[str, str]] = field(default_factory=list)
    quality: dict[str, Any] | None = None
    generated: str = ""


def _issues(value: Any) -> list[Issue]:
    out = []
    for issue in value if isinstance(value, list) else ():
        if isinstance(issue, dict):
            out.append(
                Issue(
                    _text(issue.get("code"), 80), _text(issue.get("path"), 300), _text(issue.get("message"))
                )
            )
    return out


def file_record(ctx: ApiContext, tenant: str, file_id: str) -> dict[str, Any] | None:
    """The ledger record ``file_id`` if it is one of ``tenant``'s files, else None."""
    if not 1 <= len(file_id) <= 64 or not file_id.isalnum():
        return None
    record = ctx.store.ledger.get_file(file_id)
    return record if record is not None and record.get("tenant") == tenant else None


def file_view(ctx: ApiContext, tenant: str, record: dict[str, Any]) -> FileView:
    row = file_row(tenant, record)
    error = record.get("error") if isinstance(record.get("error"), dict) else {}
    view = FileView(
        row=row,
        size=_int(record.get("size")),
        processor=_text(record.get("processor"), 80),
        destination=_text(record.get("destination"), 1000),
        sha256=_text(record.get("sha256"), 64),
        error_message=_text(error.get("message"), 500),
        report_found=False,
    )
    key = record.get("report")
    report = read_report(ctx, key) if row.has_report and isinstance(key, str) else None
    if report is None:
        return view
    view.report_found = True
    view.outcome = _text(report.get("outcome"), 40)
    items = report.get("rejected_records")
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict):
            view.rejected.append(
                RejectedRecord(
                    _text(item.get("location"), 80),
                    _text(item.get("resourceType"), 80),
                    _text(item.get("id"), 64),
                    _issues(item.get("errors")),
                )
            )
    view.omitted = _int(report.get("rejected_records_omitted"))
    warnings = report.get("warnings")
    for item in warnings if isinstance(warnings, list) else ():
        if isinstance(item, dict):
            view.warnings.append(
                RejectedRecord(_text(item.get("location"), 80), "", "", _issues(item.get("warnings")))
            )
    grouped = report_reasons(report)
    view.reasons = sorted(
        (Reason(c, p, n, 1) for (c, p), n in grouped.items()), key=lambda r: (-r.records, r.code, r.path)
    )
    details = report.get("details")
    if isinstance(details, dict):
        view.details = [
            (_text(k, 80), str(v))
            for k, v in sorted(details.items())
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
    quality = report.get("quality")
    view.quality = quality if isinstance(quality, dict) else None
    view.generated = short_time(report.get("generated_at"))
    return view


# -- the cache -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Job:
    state: tuple[Any, ...]
    done: threading.Event = field(default_factory=threading.Event)


class UiCache:
    """Per API process: the overview's counts (a few seconds), each tenant's ledger part and
    scan (by tenant state, ``SLOW_TTL`` at most), the reasons of reports already read, and
    the tokens signed out here."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._overview: tuple[float, Any] | None = None
        self._ledger: dict[str, tuple[float, tuple[Any, ...], LedgerPart]] = {}
        self._scans: dict[str, tuple[float, tuple[Any, ...], Scan]] = {}
        self._jobs: dict[str, _Job] = {}
        self._scan_slot = threading.Semaphore(1)  # one tenant scan at a time per process
        self._reasons: OrderedDict[str, dict[tuple[str, str], int]] = OrderedDict()
        self._signed_out: dict[str, float] = {}  # token id -> its expiry (epoch seconds)

    def sign_out(self, token_id: str, expires_at: float) -> None:
        """Refuse this token from now on (this process; it dies at ``expires_at`` anyway)."""
        now = time.time()
        with self._lock:
            for jti in [j for j, exp in self._signed_out.items() if exp <= now]:
                del self._signed_out[jti]
            if token_id and len(self._signed_out) < 100_000:
                self._signed_out[token_id] = expires_at

    def signed_out(self, token_id: str) -> bool:
        with self._lock:
            return token_id in self._signed_out

    def overview(self, ctx: ApiContext) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
        now = self._clock()
        with self._lock:
            if self._overview is not None and now - self._overview[0] < OVERVIEW_TTL:
                return self._overview[1]  # type: ignore[no-any-return]
        value = (ctx.store.ledger.summary(), ctx.store.resources.tenant_counts())
        with self._lock:
            self._overview = (now, value)
        return value

    def ledger(self, tenant: str, state: tuple[Any, ...], compute: Callable[[], LedgerPart]) -> LedgerPart:
        now = self._clock()
        with self._lock:
            held = self._ledger.get(tenant)
            if held is not None and held[1] == state and now - held[0] < SLOW_TTL:
                return held[2]
        value = compute()  # outside the lock: two first views of a tenant may both compute
        with self._lock:
            self._ledger[tenant] = (now, state, value)
        return value

    def _fresh_scan(self, tenant: str, state: tuple[Any, ...]) -> Scan | None:
        held = self._scans.get(tenant)
        if held is not None and held[1] == state and self._clock() - held[0] < SLOW_TTL:
            return held[2]
        return None

    def scan(
        self, tenant: str, state: tuple[Any, ...], compute: Callable[[], Scan], wait: float
    ) -> tuple[Scan | None, bool]:
        """(the newest scan, whether one for ``state`` is still to come). Starts the scan in
        the background when none is running for the tenant, then waits up to ``wait``."""
        with self._lock:
            fresh = self._fresh_scan(tenant, state)
            if fresh is not None:
                return fresh, False
            job = self._jobs.get(tenant)
            if job is None:
                job = self._jobs[tenant] = _Job(state)
                threading.Thread(
                    target=self._run_scan, args=(tenant, job, compute), name=f"ui-scan-{tenant}", daemon=True
                ).start()
        job.done.wait(wait)
        with self._lock:
            fresh = self._fresh_scan(tenant, state)
            if fresh is not None:
                return fresh, False
            held = self._scans.get(tenant)
            return (held[2] if held is not None else None), True

    def _run_scan(self, tenant: str, job: _Job, compute: Callable[[], Scan]) -> None:
        try:
            with self._scan_slot:
                started = self._clock()
                value = compute()
            with self._lock:
                self._scans[tenant] = (started, job.state, value)
        except Exception as err:  # scan_tenant catches its own; this is a last resort
            event(_log, "ui.scan_failed", logging.ERROR, tenant=tenant, error_type=type(err).__name__)
        finally:
            with self._lock:
                if self._jobs.get(tenant) is job:
                    del self._jobs[tenant]
            job.done.set()

    def reasons(
        self, key: str, compute: Callable[[], dict[tuple[str, str], int]]
    ) -> dict[tuple[str, str], int]:
        with self._lock:
            if key in self._reasons:
                self._reasons.move_to_end(key)
                return self._reasons[key]
        value = compute()
        with self._lock:
            self._reasons[key] = value
            while len(self._reasons) > _REASON_CACHE:
                self._reasons.popitem(last=False)
        return value

    def clear(self) -> None:
        """Forget every computed part (the benchmark's cold runs); running scans finish."""
        with self._lock:
            self._overview = None
            self._ledger.clear()
            self._scans.clear()
            self._reasons.clear()
