"""FHIR Bulk Data export (Bulk Data Access IG v2.0.0, system level, one tenant at a time).

* ``GET /api/tenants/{tenant}/fhir/$export`` with ``Prefer: respond-async``: 202 and
  ``Content-Location`` = the job's status URL. Parameters: ``_type`` (comma list, repeatable),
  ``_since`` (instant), ``_outputFormat`` (``application/fhir+ndjson``, ``application/ndjson``
  or ``ndjson``). Anything else is 400 unless ``Prefer: handling=lenient`` (then ignored), as
  the IG asks of servers that do not support a parameter.
* ``GET .../$export-status/{job}``: 202 with ``X-Progress`` and ``Retry-After`` while it runs,
  200 with the manifest when complete, 500 with an OperationOutcome when it failed;
  ``DELETE`` cancels or removes it (202).
* ``GET .../$export-files/{job}/{Type}.ndjson``: one output file (``application/fhir+ndjson``).

Every call needs a token that may read the tenant (``ReadTenant``: 404 otherwise, as for a
tenant that does not exist), and a job is only visible under the tenant it was started for, so
another tenant's token gets 404 on kick-off, status and files alike. The files are what
``dropzone export`` writes (``export_jobs``), so requiresAccessToken is true.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator
from email.utils import formatdate
from typing import Any, BinaryIO

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from dropzone.api.access import ReadTenant
from dropzone.api.context import get_context
from dropzone.api.errors import FHIR_JSON, ApiError, operation_outcome
from dropzone.api.export_jobs import ExportJob, ExportJobs, JobState, TooManyJobs, export_root
from dropzone.api.fhir import known_type
from dropzone.errors import UsageError
from dropzone.export import normalise_since
from dropzone.log import event

_log = logging.getLogger("dropzone.api.export")
NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
PARAMETERS = frozenset({"_type", "_since", "_outputFormat"})
_ACCEPTED = ("application/fhir+json", "application/json", "application/*", "*/*")
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
RETRY_AFTER_SECONDS = 2
_CHUNK = 1 << 20

router = APIRouter(tags=["bulk data"])
_OUTCOME = {"content": {FHIR_JSON: {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}}}
_KICK_OFF_DOC: dict[str, Any] = {
    "parameters": [
        {
            "name": "Prefer",
            "in": "header",
            "required": True,
            "schema": {"type": "string", "example": "respond-async"},
        },
        {"name": "_type", "in": "query", "schema": {"type": "string", "example": "Patient,Condition"}},
        {"name": "_since", "in": "query", "schema": {"type": "string", "format": "date-time"}},
        {"name": "_outputFormat", "in": "query", "schema": {"type": "string", "example": NDJSON}},
    ]
}
_KICK_OFF_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": "accepted; Content-Location is the status URL"},
    400: {"description": "missing Prefer: respond-async or a parameter refused", **_OUTCOME},
    404: {"description": "no such tenant (or one this token may not read)", **_OUTCOME},
    406: {"description": "Accept is not FHIR JSON", **_OUTCOME},
    429: {"description": "too many export jobs; see Retry-After", **_OUTCOME},
}
_STATUS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "complete: the manifest (transactionTime, request, output, error)"},
    202: {"description": "in progress; see X-Progress and Retry-After"},
    404: {"description": "no such job for this tenant (expired, deleted or never started)", **_OUTCOME},
    500: {"description": "the export failed", **_OUTCOME},
}
_managers_lock = threading.Lock()


def _jobs(request: Request) -> ExportJobs:
    """This application's jobs, made on first use (``create_app`` stays unaware of them)."""
    state = request.app.state
    jobs: ExportJobs | None = getattr(state, "bulk_exports", None)
    if jobs is None:
        with _managers_lock:
            jobs = getattr(state, "bulk_exports", None)
            if jobs is None:
                ctx = get_context(request)
                jobs = ExportJobs(ctx.store.resources, export_root(ctx.settings))
                state.bulk_exports = jobs
    return jobs


def _base_url(request: Request) -> str:
    """Absolute URLs as the client should use them: ``api.public_url`` behind a proxy."""
    public = get_context(request).settings.api.public_url
    return (public or str(request.base_url)).rstrip("/")


def _tenant_fhir(request: Request, tenant: str) -> str:
    return f"{_base_url(request)}/api/tenants/{tenant}/fhir"


def _prefer(request: Request) -> set[str]:
    """``Prefer`` preferences (RFC 7240), lower-cased, from every ``Prefer`` header."""
    found: set[str] = set()
    for header in request.headers.getlist("prefer"):
        for item in header.split(","):
            found.update(
                part.strip().lower().replace(" ", "").replace('"', "")
                for part in item.split(";")
                if part.strip()
            )
    return found


def _check_accept(request: Request) -> None:
    accept = request.headers.get("accept")
    if accept is None:
        return  # the IG lets a server treat a missing Accept as application/fhir+json
    ranges = {item.split(";", 1)[0].strip().lower() for item in accept.split(",")}
    if not ranges & set(_ACCEPTED):
        raise ApiError(406, "not_acceptable", "Accept must allow application/fhir+json")


def _single(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise ApiError(400, "invalid_parameter", f"{name} may be given once")
    return values[0] if values else None


def _types(request: Request) -> tuple[str, ...] | None:
    names: list[str] = []
    for value in request.query_params.getlist("_type"):
        names.extend(part.strip() for part in value.split(",") if part.strip())
    for position, name in enumerate(names, start=1):
        if not known_type(name):  # the name is not echoed: it is the caller's text
            raise ApiError(400, "unsupported_type", f"_type item {position} is not a FHIR R4 resource type")
    return tuple(sorted(set(names))) or None


def _since(request: Request) -> str | None:
    value = _single(request, "_since")
    if value is None:
        return None
    try:
        return normalise_since(value)
    except UsageError:  # its message quotes the value; ours does not
        raise ApiError(
            400, "invalid_since", "_since must be a FHIR instant, e.g. 2026-11-30T12:00:00Z"
        ) from None


def _check_parameters(request: Request, lenient: bool) -> None:
    unknown = sorted({name for name in request.query_params if name not in PARAMETERS})
    if unknown and not lenient:
        shown = ", ".join(name if _SAFE_NAME.match(name) else "(a parameter)" for name in unknown)
        raise ApiError(
            400,
            "unsupported_parameter",
            f"not supported: {shown} (send Prefer: handling=lenient to have them ignored)",
        )
    output_format = _single(request, "_outputFormat")
    if output_format is not None and output_format.strip().lower() not in OUTPUT_FORMATS:
        raise ApiError(
            400, "unsupported_output_format", "_outputFormat must be application/fhir+ndjson (or ndjson)"
        )


def _request_url(request: Request) -> str:
    query = request.url.query
    return f"{_base_url(request)}{request.url.path}" + (f"?{query}" if query else "")


def _job(request: Request, tenant: str, job_id: str) -> ExportJob:
    job = _jobs(request).get(tenant, job_id) if _JOB_ID.match(job_id) else None
    if job is None:
        raise ApiError(404, "not_found", "no such export job for this tenant (it may have expired)")
    return job


@router.get(
    "/api/tenants/{tenant}/fhir/$export",
    status_code=202,
    summary="Bulk Data export kick-off (system level, one tenant)",
    responses=_KICK_OFF_RESPONSES,
    openapi_extra=_KICK_OFF_DOC,
)
def kick_off(request: Request, tenant: ReadTenant) -> Response:
    """Starts an export of the tenant's current resources as NDJSON, one file per type;
    poll the `Content-Location` URL for the manifest."""
    prefer = _prefer(request)
    if "respond-async" not in prefer:
        raise ApiError(400, "respond_async_required", "a Bulk Data export needs 'Prefer: respond-async'")
    _check_accept(request)
    _check_parameters(request, lenient="handling=lenient" in prefer)
    types, since = _types(request), _since(request)
    try:
        job = _jobs(request).submit(tenant, _request_url(request), types, since)
    except TooManyJobs as err:
        raise ApiError(
            429, "too_many_exports", err.message, headers={"Retry-After": str(err.retry_after)}
        ) from None
    except OSError as err:
        event(_log, "export.folder_failed", logging.ERROR, error_type=type(err).__name__, errno=err.errno)
        raise ApiError(
            503, "export_unavailable", "the export folder cannot be written; retry later"
        ) from None
    status_url = f"{_tenant_fhir(request, tenant)}/$export-status/{job.id}"
    return Response(status_code=202, headers={"Content-Location": status_url})


@router.get(
    "/api/tenants/{tenant}/fhir/$export-status/{job_id}",
    summary="Bulk Data export status and manifest",
    responses=_STATUS_RESPONSES,
)
def export_status(request: Request, tenant: ReadTenant, job_id: str) -> Response:
    job = _job(request, tenant, job_id)
    if job.state in (JobState.QUEUED, JobState.RUNNING):
        headers = {"X-Progress": job.progress(), "Retry-After": str(RETRY_AFTER_SECONDS)}
        return Response(status_code=202, headers=headers)
    if job.state is JobState.FAILED:
        code = job.error_code or "internal_error"
        body = operation_outcome(500, code, "the export failed; start a new one")
        return JSONResponse(body, 500, media_type=FHIR_JSON)
    files = f"{_tenant_fhir(request, tenant)}/$export-files/{job.id}"
    manifest = {
        "transactionTime": job.transaction_time,
        "request": job.request_url,
        "requiresAccessToken": True,
        "output": [
            {"type": o.resource_type, "url": f"{files}/{o.resource_type}.ndjson", "count": o.count}
            for o in job.outputs
        ],
        "error": [],
    }
    headers = {}
    expires = _jobs(request).expires_at(job)
    if expires is not None:
        headers["Expires"] = formatdate(expires, usegmt=True)
    return JSONResponse(manifest, 200, headers=headers)


@router.delete(
    "/api/tenants/{tenant}/fhir/$export-status/{job_id}",
    status_code=202,
    summary="Cancel a Bulk Data export or delete its files",
    responses={202: {"description": "cancelled or deleted"}, 404: _STATUS_RESPONSES[404]},
)
def delete_export(request: Request, tenant: ReadTenant, job_id: str) -> Response:
    if not (_JOB_ID.match(job_id) and _jobs(request).delete(tenant, job_id)):
        raise ApiError(404, "not_found", "no such export job for this tenant (it may have expired)")
    return Response(status_code=202)


@router.get(
    "/api/tenants/{tenant}/fhir/$export-files/{job_id}/{rtype}.ndjson",
    summary="One Bulk Data output file",
    responses={
        200: {"description": "NDJSON, one resource per line", "content": {NDJSON: {}}},
        404: {"description": "no such file for this tenant", **_OUTCOME},
    },
)
def export_file(request: Request, tenant: ReadTenant, job_id: str, rtype: str) -> Response:
    job = _job(request, tenant, job_id)
    path = _jobs(request).output(job, rtype)
    try:
        # Opened here, so a job deleted while the file streams does not cut the download.
        handle = path.open("rb") if path is not None else None
    except FileNotFoundError:
        handle = None
    if handle is None:
        raise ApiError(404, "not_found", "no such file in this export")
    size = os.fstat(handle.fileno()).st_size
    return StreamingResponse(_chunks(handle), media_type=NDJSON, headers={"Content-Length": str(size)})


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    try:
        while chunk := handle.read(_CHUNK):
            yield chunk
    finally:
        handle.close()
