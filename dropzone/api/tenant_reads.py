"""FHIR read and vread by tenant path: ``GET /api/tenants/{tenant}/fhir/{type}/{id}`` and
``.../{id}/_history/{vid}``, for readers (``dropzone reader add``) and the tenant's own token.

The answers are exactly those of ``/api/fhir/{type}/{id}`` (the same code in ``fhir.py``). A
tenant the caller may not read, and a tenant this server does not know, both answer the same
404 (``access.readable_tenant``), so a token cannot probe which tenants exist.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from dropzone.api.access import ReadTenant
from dropzone.api.context import ApiContext, get_context
from dropzone.api.errors import FHIR_JSON, ApiError
from dropzone.api.fhir import (
    ERROR_RESPONSES,
    ResourceId,
    ResourceType,
    VersionId,
    current_version,
    one_version,
)

router = APIRouter(tags=["fhir"])
_RESOURCE = {"content": {FHIR_JSON: {"schema": {"$ref": "#/components/schemas/Resource"}}}}
_DOC = {"responses": {200: _RESOURCE, **ERROR_RESPONSES}}


def _known(ctx: ApiContext, tenant: str) -> str:
    """The tenant if this server has it: declared at start, given API credentials since (the
    registry re-reads tenant files), or undeclared but allowed (``allow_undeclared_tenants``)."""
    if ctx.settings.tenant(tenant) is None and ctx.credentials.for_tenant(tenant) is None:
        raise ApiError(404, "not_found", "no such tenant")  # the body access.readable_tenant gives
    return tenant


@router.get("/api/tenants/{tenant}/fhir/{rtype}/{rid}", summary="Read one resource of a tenant", **_DOC)
def tenant_read(request: Request, tenant: ReadTenant, rtype: ResourceType, rid: ResourceId) -> JSONResponse:
    ctx = get_context(request)
    return current_version(ctx, _known(ctx, tenant), rtype, rid)


@router.get(
    "/api/tenants/{tenant}/fhir/{rtype}/{rid}/_history/{vid}",
    summary="Read one version of a tenant's resource (FHIR vread)",
    **_DOC,
)
def tenant_vread(
    request: Request, tenant: ReadTenant, rtype: ResourceType, rid: ResourceId, vid: VersionId
) -> JSONResponse:
    ctx = get_context(request)
    return one_version(ctx, _known(ctx, tenant), rtype, rid, vid)
