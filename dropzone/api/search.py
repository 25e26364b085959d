"""FHIR search and ``$everything``: ``GET /api/tenants/{tenant}/fhir/{type}?...`` for readers
and the tenant's own token, ``GET /api/fhir/{type}?...`` as the tenant-token shorthand.

Answers are ``searchset`` Bundles with ``total``, ``self``/``next`` links and
``entry.fullUrl``/``search.mode``. Paging is by keyset (``_cursor``, opaque): a page never
skips or repeats a resource because others were added meanwhile, and its cost does not grow
with the page number. Unknown parameters answer 400 (dropzone.search.query).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from dropzone.api.access import ReadTenant
from dropzone.api.auth import Tenant
from dropzone.api.context import get_context
from dropzone.api.errors import ApiError
from dropzone.api.fhir import ERROR_RESPONSES, FhirJSONResponse, ResourceId, ResourceType, known_type
from dropzone.search.compartment import everything
from dropzone.search.query import (
    DEFAULT_COUNT,
    MAX_COUNT,
    SearchError,
    SearchPage,
    decode_cursor,
    encode_cursor,
    parse_search,
)
from dropzone.search.references import reference_report

router = APIRouter(tags=["fhir search"])
_BUNDLE = {"content": {"application/fhir+json": {"schema": {"$ref": "#/components/schemas/Resource"}}}}


def _base(request: Request, tenant: str | None) -> str:
    root = str(request.base_url).rstrip("/")
    return f"{root}/api/tenants/{tenant}/fhir" if tenant else f"{root}/api/fhir"


def _bundle(request: Request, page: SearchPage, base: str) -> dict[str, Any]:
    items = [(k, v) for k, v in request.query_params.multi_items() if k != "_cursor"]
    links = [{"relation": "self", "url": str(request.url)}]
    if page.after is not None:
        query = urlencode([*items, ("_cursor", encode_cursor(tuple(page.after)))])
        links.append({"relation": "next", "url": f"{str(request.url).split('?', 1)[0]}?{query}"})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": page.total,
        "link": links,
        "entry": [
            {
                "fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in page.resources
        ],
    }


async def _search(request: Request, tenant: str, rtype: str, base: str) -> JSONResponse:
    if not known_type(rtype):
        raise ApiError(404, "unknown_type", "not a FHIR R4 resource type this server stores")
    try:
        query = parse_search(rtype, request.query_params.multi_items())
    except SearchError as err:
        raise ApiError(400, "invalid_search", str(err)) from None
    store = get_context(request).store.resources
    page = await run_in_threadpool(store.search, tenant, query)
    return FhirJSONResponse(_bundle(request, page, base), 200)


async def _everything(request: Request, tenant: str, pid: str, base: str) -> JSONResponse:
    count, after = DEFAULT_COUNT, None
    for name, raw in request.query_params.multi_items():
        if name == "_count":
            if not raw.isdigit() or not 1 <= int(raw) <= MAX_COUNT:
                raise ApiError(400, "invalid_search", f"_count must be a whole number from 1 to {MAX_COUNT}")
            count = int(raw)
        elif name == "_cursor":
            try:
                after = decode_cursor(raw)
            except SearchError as err:
                raise ApiError(400, "invalid_search", str(err)) from None
        else:
            raise ApiError(400, "invalid_search", f"$everything supports _count only, not {name!r}")
    store = get_context(request).store.resources
    page = await run_in_threadpool(everything, store, tenant, pid, count, after)
    if page.total == 0:
        raise ApiError(404, "not_found", "no such patient for this tenant")
    return FhirJSONResponse(_bundle(request, page, base), 200)


_DOC = {"responses": {200: _BUNDLE, **ERROR_RESPONSES}}


@router.get("/api/tenants/{tenant}/references", summary="Reference integrity of a tenant")
async def tenant_references(request: Request, tenant: ReadTenant) -> JSONResponse:
    """References that do not point at a stored resource, grouped by source type, path, target
    type and reason, with counts and example source ids (never reference text or values)."""
    store = get_context(request).store.resources
    return JSONResponse(await run_in_threadpool(reference_report, store, tenant))


@router.get(
    "/api/tenants/{tenant}/fhir/Patient/{pid}/$everything", summary="A patient's whole record", **_DOC
)
async def tenant_everything(request: Request, tenant: ReadTenant, pid: ResourceId) -> JSONResponse:
    """Every resource in the patient's R4 compartment (and the Patient), paged like search."""
    return await _everything(request, tenant, pid, _base(request, tenant))


@router.get("/api/fhir/Patient/{pid}/$everything", summary="A patient's whole record (your tenant)", **_DOC)
async def own_everything(request: Request, tenant: Tenant, pid: ResourceId) -> JSONResponse:
    return await _everything(request, tenant, pid, _base(request, None))


@router.get("/api/tenants/{tenant}/fhir/{rtype}", summary="FHIR search in a tenant", **_DOC)
async def tenant_search(request: Request, tenant: ReadTenant, rtype: ResourceType) -> JSONResponse:
    """`_id`, `_lastUpdated`, `identifier`, `code`, `status`, the type's date and reference
    parameters, `_count` (default 50, max 1000), `_sort` (`_id`, `_lastUpdated`); see
    `/api/fhir/metadata` for each type's list."""
    return await _search(request, tenant, rtype, _base(request, tenant))


@router.get("/api/fhir/{rtype}", summary="FHIR search in your tenant", **_DOC)
async def own_search(request: Request, tenant: Tenant, rtype: ResourceType) -> JSONResponse:
    return await _search(request, tenant, rtype, _base(request, None))
