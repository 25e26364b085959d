"""Single-resource updates: ``PUT /api/fhir/{type}/{id}``, ``POST /api/fhir/{type}``, reads.

Design: a single update is validated by the pipeline's own validator
(``dropzone.validation.validate_resource``, FHIR R4 4.0.1; messages never hold values) and
written by the store's one versioned upsert (``ResourceStore.upsert``), the same
two steps a file's records take. It does not go through the file pipeline itself: that path is
asynchronous and file-shaped (content claim, duplicate detection by file hash, an archived copy
and a ledger record per file), while an update must answer synchronously with the stored
version, and re-sending identical content must answer 200 with that version rather than
"duplicate file". Versioning, history and "identical content changes nothing" stay in one place.
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from dropzone.api.auth import Tenant
from dropzone.api.context import ApiContext, get_context
from dropzone.api.errors import FHIR_JSON, ApiError
from dropzone.log import event
from dropzone.pipeline.canonical import resource_hash
from dropzone.store.base import META_KEY, ResourceWrite, strip_document
from dropzone.validation import model, validate_resource
from processors import fhir_json
from processors.base import Issue
from processors.fhir_common import shape_issues

_log = logging.getLogger("dropzone.api")
TYPE_PATTERN = r"^[A-Z][A-Za-z]{1,63}$"
ID_PATTERN = r"^[A-Za-z0-9\-.]{1,64}$"
ResourceType = Annotated[str, PathParam(pattern=TYPE_PATTERN, description="FHIR R4 resource type")]
ResourceId = Annotated[str, PathParam(pattern=ID_PATTERN, description="FHIR logical id")]
VersionId = Annotated[int, PathParam(ge=1, le=2**31, description="meta.versionId")]

router = APIRouter(tags=["fhir"])

_OUTCOME = {"content": {FHIR_JSON: {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}}}
_RESOURCE = {"content": {FHIR_JSON: {"schema": {"$ref": "#/components/schemas/Resource"}}}}
_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One FHIR R4 resource as JSON",
        "content": {
            FHIR_JSON: {"schema": {"$ref": "#/components/schemas/Resource"}},
            "application/json": {"schema": {"$ref": "#/components/schemas/Resource"}},
        },
    }
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": text, **_OUTCOME}
    for code, text in (
        (400, "malformed request (OperationOutcome)"),
        (401, "missing or invalid token"),
        (404, "unknown type or no such resource for your tenant"),
        (412, "If-Match does not name the current version"),
        (413, "resource too large"),
        (422, "the resource is not valid FHIR R4 (OperationOutcome naming the paths)"),
    )
}
OPENAPI_SCHEMAS = {
    "Resource": {
        "type": "object",
        "required": ["resourceType"],
        "properties": {"resourceType": {"type": "string"}, "id": {"type": "string"}},
        "additionalProperties": True,
    },
    "OperationOutcome": {
        "type": "object",
        "required": ["resourceType", "issue"],
        "properties": {
            "resourceType": {"type": "string", "enum": ["OperationOutcome"]},
            "issue": {"type": "array", "items": {"type": "object"}},
        },
    },
}


class FhirJSONResponse(JSONResponse):
    """A stored resource as FHIR JSON with its numbers' exact digits (Starlette's json.dumps
    cannot write a decimal)."""

    media_type = FHIR_JSON

    def render(self, content: Any) -> bytes:
        return fhir_json.dumps(content)


# Serialises read-compare-write of one resource within this process (striped, fixed memory).
_LOCKS = [threading.Lock() for _ in range(64)]


def _lock_for(tenant: str, rtype: str, rid: str) -> threading.Lock:
    return _LOCKS[hash((tenant, rtype, rid)) % len(_LOCKS)]


@functools.lru_cache(maxsize=512)
def known_type(rtype: str) -> bool:
    """An R4 resource type (not a datatype such as HumanName)."""
    return rtype in model().resource_types


def _require_type(rtype: str) -> None:
    if not known_type(rtype):
        raise ApiError(404, "unknown_type", "not a FHIR R4 resource type this server stores")


async def _read_resource(request: Request, rtype: str) -> dict[str, Any]:
    raw = await request.body()
    try:
        resource = fhir_json.loads(raw)
    except fhir_json.JSONDecodeError:
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    issues = shape_issues(resource, need_id=False)
    if issues:
        raise ApiError(400, issues[0].code, issues[0].message, issues=issues)
    if resource["resourceType"] != rtype:
        raise ApiError(
            400,
            "type_mismatch",
            "the body's resourceType differs from the type in the URL",
            issues=[Issue("type_mismatch", "must equal the type in the URL", "resourceType")],
        )
    return resource  # type: ignore[no-any-return]


def _etag(version: int) -> str:
    return f'W/"{version}"'


def _if_match_version(request: Request) -> int | None:
    raw = request.headers.get("if-match")
    if raw is None:
        return None
    text = raw.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise ApiError(400, "invalid_if_match", 'If-Match must look like W/"<versionId>"')
    return int(text)


def _resource_response(doc: dict[str, Any], status: int, location: bool = False) -> FhirJSONResponse:
    meta = doc[META_KEY]
    rtype, rid, version = doc["resourceType"], doc["id"], meta["version"]
    headers = {"ETag": _etag(version)}
    if location:
        headers["Location"] = f"/api/fhir/{rtype}/{rid}/_history/{version}"
    return FhirJSONResponse(strip_document(doc), status, headers=headers)


def store_resource(
    ctx: ApiContext, tenant: str, resource: dict[str, Any], expected_version: int | None
) -> tuple[dict[str, Any], bool]:
    """Validate and upsert one resource; (stored document, created). Blocking."""
    issues = validate_resource(resource)
    if issues:
        raise ApiError(422, "invalid_resource", "the resource is not valid FHIR R4", issues=issues)
    rtype, rid = resource["resourceType"], resource["id"]
    resources = ctx.store.resources
    with _lock_for(tenant, rtype, rid):
        if expected_version is not None:
            current = resources.existing(tenant, rtype, [rid]).get(rid)
            if current is None or current.version != expected_version:
                raise ApiError(412, "version_conflict", "If-Match does not name the current version")
        write = ResourceWrite(rtype, rid, resource, resource_hash(resource))
        result = resources.upsert(tenant, [write], file_sha256=None)
        doc = resources.get_document(tenant, rtype, rid)
    if doc is None:  # deleted between write and read by someone else: rare, retryable
        raise ApiError(409, "conflict", "the resource changed while it was stored; retry")
    created = (rtype, rid) in result.new_ids
    event(
        _log,
        "api.resource_stored",
        tenant=tenant,
        type=rtype,
        version=doc[META_KEY]["version"],
        outcome="created" if created else ("updated" if result.loaded else "unchanged"),
    )
    return doc, created


@router.put(
    "/api/fhir/{rtype}/{rid}",
    responses={
        200: {"description": "updated (or unchanged)", **_RESOURCE},
        201: _RESOURCE,
        **ERROR_RESPONSES,
    },
    openapi_extra=_BODY_DOC,
    summary="Create or update one resource (FHIR update)",
)
async def update_resource(
    request: Request, tenant: Tenant, rtype: ResourceType, rid: ResourceId
) -> JSONResponse:
    """Validated synchronously; identical content keeps its version, changed content gets the
    next `meta.versionId` and the previous version goes to history."""
    ctx = get_context(request)
    _require_type(rtype)
    expected = _if_match_version(request)
    resource = await _read_resource(request, rtype)
    if resource.get("id") is None:
        raise ApiError(
            400,
            "missing_id",
            "the body must carry the id from the URL",
            issues=[Issue("missing_id", "required on update", f"{rtype}.id")],
        )
    if resource["id"] != rid:
        raise ApiError(
            400,
            "id_mismatch",
            "the body's id differs from the id in the URL",
            issues=[Issue("id_mismatch", "must equal the id in the URL", f"{rtype}.id")],
        )
    doc, created = await run_in_threadpool(store_resource, ctx, tenant, resource, expected)
    return _resource_response(doc, 201 if created else 200, location=created)


@router.post(
    "/api/fhir/{rtype}",
    status_code=201,
    responses={201: {"description": "created", **_RESOURCE}, **ERROR_RESPONSES},
    openapi_extra=_BODY_DOC,
    summary="Create one resource with a server-assigned id (FHIR create)",
)
async def create_resource(request: Request, tenant: Tenant, rtype: ResourceType) -> JSONResponse:
    ctx = get_context(request)
    _require_type(rtype)
    resource = await _read_resource(request, rtype)
    resource["id"] = str(uuid.uuid4())  # FHIR create: the server assigns the id
    doc, _ = await run_in_threadpool(store_resource, ctx, tenant, resource, None)
    return _resource_response(doc, 201, location=True)


@router.get(
    "/api/fhir/{rtype}/{rid}",
    responses={200: _RESOURCE, **ERROR_RESPONSES},
    summary="Read one resource of your tenant",
)
def read_resource(request: Request, tenant: Tenant, rtype: ResourceType, rid: ResourceId) -> JSONResponse:
    return current_version(get_context(request), tenant, rtype, rid)


def current_version(ctx: ApiContext, tenant: str, rtype: str, rid: str) -> JSONResponse:
    """FHIR read of one tenant's resource; shared with ``/api/tenants/{tenant}/fhir/...``."""
    _require_type(rtype)
    doc = ctx.store.resources.get_document(tenant, rtype, rid)
    if doc is None:
        raise ApiError(404, "not_found", "no such resource for your tenant")
    return _resource_response(doc, 200)


@router.get(
    "/api/fhir/{rtype}/{rid}/_history/{vid}",
    responses={200: _RESOURCE, **ERROR_RESPONSES},
    summary="Read one version of a resource (FHIR vread)",
)
def read_version(
    request: Request,
    tenant: Tenant,
    rtype: ResourceType,
    rid: ResourceId,
    vid: VersionId,
) -> JSONResponse:
    return one_version(get_context(request), tenant, rtype, rid, vid)


def one_version(ctx: ApiContext, tenant: str, rtype: str, rid: str, vid: int) -> JSONResponse:
    """FHIR vread of one tenant's resource; shared with ``/api/tenants/{tenant}/fhir/...``."""
    _require_type(rtype)
    current = ctx.store.resources.get_document(tenant, rtype, rid)
    if current is not None and current[META_KEY]["version"] == vid:
        return _resource_response(current, 200)
    for doc in ctx.store.resources.history(tenant, rtype, rid):
        if doc[META_KEY]["version"] == vid:
            return _resource_response(doc, 200)
    raise ApiError(404, "not_found", "no such version of this resource for your tenant")
