"""``GET /api/tenants/{tenant}/quality``: the tenant's data-quality profile."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from dropzone.api.access import ReadTenant
from dropzone.api.context import get_context
from dropzone.quality.tenant import tenant_quality

router = APIRouter(tags=["onboarding"])


@router.get("/api/tenants/{tenant}/quality", summary="Data-quality profile of a tenant")
async def quality(request: Request, tenant: ReadTenant) -> JSONResponse:
    """Resources per type, the years their dates span, findings (future dates, an end before
    its start, death before birth, unknown or malformed code systems, identifiers shared by two
    resources of one type, patients nothing refers to, unresolved references) with counts and
    example ids, and code systems per element. Counts, ids, paths and system URLs only."""
    store = get_context(request).store.resources
    return JSONResponse(await run_in_threadpool(tenant_quality, store, tenant))
