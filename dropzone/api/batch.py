"""``POST /api/batch`` (raw body -> the tenant's incoming/), ``GET /api/batch/{id}`` and
``GET /api/batch`` (the tenant's recent files with their outcomes, from the ledger).

An upload is streamed to a local temporary file (1 MiB writes, size-capped, hashed on the way),
and only a complete upload is handed to ``Source.put``, which makes it appear under
``incoming/<tenant>/api/<upload-id>/<name>`` atomically. From there it is an ordinary dropped
file: the watcher finds it and the pipeline processes it like any other. A receipt saved in the
ledger before the put lets the status call answer "received" until a worker claims the file;
after that the ledger's file record for that key says what happened.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from dropzone.api.auth import Tenant
from dropzone.api.context import ApiContext, get_context
from dropzone.api.errors import ApiError
from dropzone.api.schemas import (
    BatchAccepted,
    BatchItem,
    BatchList,
    BatchStatus,
    ErrorBody,
    FileError,
    RecordCounts,
)
from dropzone.errors import SourceFileGone
from dropzone.log import event
from dropzone.sources.base import INCOMING, is_temporary_name
from dropzone.store.base import utc_now_iso

_log = logging.getLogger("dropzone.api")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"
ID_PATTERN = r"^[0-9a-f]{32}$"
_UPLOAD_ID = re.compile(ID_PATTERN)
_WRITE_BLOCK = 1 << 20
_REPORT_LIMIT = 32 * 2**20
_FINAL_STATES = {"archived", "partial", "quarantined", "duplicate"}

router = APIRouter(tags=["batch"])

_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The file's bytes: FHIR NDJSON, a Bundle or resource (JSON), claims CSV, "
        "or gzip of any of these. The content is sniffed; the name is kept for reports.",
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "application/x-ndjson": {"schema": {"type": "string", "format": "binary"}},
            "application/fhir+ndjson": {"schema": {"type": "string", "format": "binary"}},
            "application/fhir+json": {"schema": {"type": "string", "format": "binary"}},
            "text/csv": {"schema": {"type": "string", "format": "binary"}},
            "application/gzip": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _declared_length(request: Request, limit: int) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    if not raw.isdigit():
        raise ApiError(400, "invalid_length", "Content-Length is not a number")
    declared = int(raw)
    if declared > limit:
        raise ApiError(413, "too_large", f"the upload exceeds the limit of {limit} bytes")
    return declared


async def _receive_to(request: Request, path: Path, limit: int) -> tuple[int, str]:
    """Stream the body into ``path``; (size, sha256). Raises ApiError 413 past ``limit``."""
    digest = hashlib.sha256()
    size = 0
    pending: list[bytes] = []
    pending_size = 0

    def flush(fh: Any, blocks: list[bytes]) -> None:
        for block in blocks:
            fh.write(block)
            digest.update(block)

    with path.open("wb") as fh:
        async for chunk in request.stream():
            if not chunk:
                continue
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "too_large", f"the upload exceeds the limit of {limit} bytes")
            pending.append(chunk)
            pending_size += len(chunk)
            if pending_size >= _WRITE_BLOCK:
                await run_in_threadpool(flush, fh, pending)
                pending, pending_size = [], 0
        await run_in_threadpool(flush, fh, pending)
    return size, digest.hexdigest()


@router.post(
    "/api/batch",
    status_code=202,
    response_model=BatchAccepted,
    responses={
        400: {"model": ErrorBody},
        401: {"model": ErrorBody},
        413: {"model": ErrorBody},
        503: {"model": ErrorBody},
    },
    openapi_extra=_BODY_DOC,
    summary="Upload a file for onboarding (raw request body)",
)
async def upload_batch(
    request: Request,
    tenant: Tenant,
    name: Annotated[
        str, Query(pattern=NAME_PATTERN, max_length=200, description="file name, e.g. Patient.000.ndjson")
    ],
) -> JSONResponse:
    ctx = get_context(request)
    if is_temporary_name(name):
        raise ApiError(
            400, "invalid_name", "names ending in .part/.tmp/.filepart/... are reserved for uploads"
        )
    limit = ctx.settings.api.max_upload_bytes
    declared = _declared_length(request, limit)
    upload_id = uuid.uuid4().hex
    fd, tmp_name = tempfile.mkstemp(
        prefix="dropzone-api-", suffix=".upload", dir=ctx.settings.pipeline.temp_dir
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            size, sha = await _receive_to(request, tmp, limit)
        except OSError as err:  # local disk full or unwritable: not the sender's fault
            event(
                _log, "api.upload_spool_failed", logging.ERROR, tenant=tenant, error_type=type(err).__name__
            )
            raise ApiError(
                503,
                "unavailable",
                "the server could not store the upload; retry later",
                headers={"Retry-After": "30"},
            ) from None
        except ClientDisconnect:
            event(_log, "api.upload_aborted", logging.WARNING, tenant=tenant, reason="client_disconnected")
            raise ApiError(400, "incomplete_upload", "the upload was cut off; nothing was stored") from None
        except ApiError as err:
            event(_log, "api.upload_refused", logging.WARNING, tenant=tenant, reason=err.code)
            raise
        if declared is not None and size != declared:
            raise ApiError(400, "incomplete_upload", "the body is shorter than its Content-Length")
        if size == 0:
            raise ApiError(400, "empty_upload", "the request body is empty")
        key = f"{INCOMING}/{tenant}/api/{upload_id}/{name}"
        receipt = {
            "_id": upload_id,
            "tenant": tenant,
            "key": key,
            "name": name,
            "size": size,
            "sha256": sha,
            "received_at": utc_now_iso(),
        }
        await run_in_threadpool(ctx.store.ledger.save_upload, receipt)
        used = await run_in_threadpool(ctx.source.put, key, tmp)
        if used != key:
            receipt["key"] = used
            await run_in_threadpool(ctx.store.ledger.save_upload, receipt)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    event(_log, "api.upload_received", tenant=tenant, upload=upload_id, size=size, sha256=sha[:12])
    status_url = f"/api/batch/{upload_id}"
    body = BatchAccepted(id=upload_id, status_url=status_url, name=name, size=size, sha256=sha)
    return JSONResponse(body.model_dump(), 202, headers={"Location": status_url})


@router.get(
    "/api/batch/{upload_id}",
    response_model=BatchStatus,
    responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 503: {"model": ErrorBody}},
    summary="Where an upload is: received, processing, or its outcome with counts and report",
)
def batch_status(
    request: Request, tenant: Tenant, upload_id: Annotated[str, PathParam(pattern=ID_PATTERN)]
) -> BatchStatus:
    ctx = get_context(request)
    receipt = ctx.store.ledger.get_upload(upload_id)
    if receipt is None or receipt.get("tenant") != tenant:
        raise ApiError(404, "not_found", "no upload with this id for your tenant")
    return build_status(ctx, receipt)


def build_status(ctx: ApiContext, receipt: dict[str, Any]) -> BatchStatus:
    record = ctx.store.ledger.find_file(receipt["key"])
    if record is None:
        return BatchStatus(
            id=receipt["_id"],
            name=receipt["name"],
            state="received",
            records=RecordCounts(),
            received_at=receipt["received_at"],
        )
    return BatchStatus(
        id=receipt["_id"],
        name=receipt["name"],
        received_at=receipt["received_at"],
        **_outcome(record),
        report=_read_report(ctx, record.get("report")) if record.get("state") in _FINAL_STATES else None,
    )


def _outcome(record: dict[str, Any]) -> dict[str, Any]:
    """State, counts, error and end of a ledger file record, as BatchStatus fields."""
    state = record.get("state", "processing")
    # settled is False between the committed outcome and the file's move (older records lack it).
    if state not in _FINAL_STATES or record.get("settled") is False:
        state = "processing"
    error = record.get("error")
    return {
        "state": state,
        "records": RecordCounts(**(record.get("counts") or {})) if state != "processing" else RecordCounts(),
        "error": FileError(code=error["code"], message=error["message"]) if isinstance(error, dict) else None,
        "finished_at": record.get("finished_at"),
        "quality": record.get("quality") if state != "processing" else None,
    }


@router.get(
    "/api/batch",
    response_model=BatchList,
    responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 503: {"model": ErrorBody}},
    summary="Your tenant's recent files (pushed and dropped) with their outcomes, newest first",
)
def list_batches(
    request: Request,
    tenant: Tenant,
    limit: Annotated[int, Query(ge=1, le=500, description="how many files (default 50)")] = 50,
) -> BatchList:
    """Every file a worker has taken up for your tenant: API uploads (with their status URL) and
    files dropped by SFTP, S3 or into the folder. An upload not yet taken up by a worker is not
    listed yet; its status URL answers `received` meanwhile."""
    ctx = get_context(request)
    return BatchList(items=[_item(ctx, tenant, r) for r in ctx.store.ledger.files(tenant, limit)])


def _item(ctx: ApiContext, tenant: str, record: dict[str, Any]) -> BatchItem:
    fields = {
        **_outcome(record),
        "name": record.get("name") or record.get("key", "").rsplit("/", 1)[-1],
        "has_report": bool(record.get("report")),
    }
    receipt = _receipt_for(ctx, tenant, record.get("key") or "")
    if receipt is None:
        return BatchItem(id=record["_id"], via="drop", received_at=record.get("received_at", ""), **fields)
    return BatchItem(
        id=receipt["_id"],
        via="api",
        status_url=f"/api/batch/{receipt['_id']}",
        received_at=receipt["received_at"],
        **{**fields, "name": receipt["name"]},
    )


def _receipt_for(ctx: ApiContext, tenant: str, key: str) -> dict[str, Any] | None:
    """The upload receipt of a file pushed through the API (key incoming/<tenant>/api/<id>/<name>)."""
    parts = key.split("/")
    if len(parts) < 5 or parts[:3] != [INCOMING, tenant, "api"] or not _UPLOAD_ID.match(parts[3]):
        return None
    receipt = ctx.store.ledger.get_upload(parts[3])
    return receipt if receipt is not None and receipt.get("tenant") == tenant else None


def _read_report(ctx: ApiContext, key: str | None) -> dict[str, Any] | None:
    if not key:
        return None
    try:
        report = orjson.loads(ctx.source.read_bytes(key, _REPORT_LIMIT))
    except (SourceFileGone, orjson.JSONDecodeError):
        return None  # removed or replaced by an operator: the counts still stand
    return report if isinstance(report, dict) else None
