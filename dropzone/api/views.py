"""``GET /api/tenants/{tenant}/views/{name}``: a view's rows for a tenant, streamed.

``_format=csv`` (default) answers exactly the bytes ``dropzone export --format csv`` writes;
``_format=json`` answers NDJSON, one object per row. Views are read from ``<config>/views/`` on
each request (a few small files), so an edited view applies without a restart.

The first block (the header and up to one chunk of rows) is computed before the response
starts, so a view that does not fit the data answers an error status rather than a cut stream;
a later row that does not fit aborts the stream (the client sees an incomplete response, never a
silently shorter table) and is logged without values.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse

from dropzone.api.access import ReadTenant
from dropzone.api.context import get_context
from dropzone.api.errors import ApiError
from dropzone.log import event

_log = logging.getLogger("dropzone.api")
router = APIRouter(tags=["views"])

_MEDIA = {"csv": "text/csv; charset=utf-8", "json": "application/x-ndjson"}
ViewName = Annotated[
    str, PathParam(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="a view of <config>/views/, e.g. patient")
]
ViewFormat = Annotated[
    Literal["csv", "json"], Query(alias="_format", description="csv (default) or json (NDJSON rows)")
]
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the view's rows",
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    },
    401: {"description": "missing or invalid token"},
    404: {"description": "no such tenant for your token, or no such view"},
}


@router.get(
    "/api/tenants/{tenant}/views/{name}",
    response_class=StreamingResponse,
    responses=_RESPONSES,
    summary="A view's rows (flat table) over the tenant's stored resources",
)
def view_rows(
    request: Request, tenant: ReadTenant, name: ViewName, fmt: ViewFormat = "csv"
) -> StreamingResponse:
    # Imported here: pyarrow loads only when a view is asked for, not with the API.
    from dropzone.views import (
        NoViewsFolder,
        UnknownViewError,
        ViewDefinitionError,
        ViewEvaluationError,
        find_view,
        stream_view,
        views_folder,
    )

    ctx = get_context(request)
    try:
        view = find_view(views_folder(ctx.settings.config_dir), name)
    except (UnknownViewError, NoViewsFolder):
        raise ApiError(404, "not_found", "no such view") from None
    except ViewDefinitionError as err:
        event(_log, "api.view_invalid", logging.ERROR, view=name, problem=str(err))
        raise ApiError(500, "view_invalid", "the view definition is invalid (see the server log)") from None
    blocks = stream_view(ctx.store.resources, tenant, view, fmt)
    try:
        first = next(blocks, b"")
    except ViewEvaluationError as err:
        event(_log, "api.view_failed", logging.ERROR, view=name, problem=str(err))
        raise
        raise ApiError(500, "view_failed", str(err)) from None
    return StreamingResponse(
        _guarded(itertools.chain([first], blocks), name),
        media_type=_MEDIA[fmt],
        headers={"Content-Disposition": f'inline; filename="{name}.{"csv" if fmt == "csv" else "ndjson"}"'},
    )


def _guarded(blocks: Iterator[bytes], name: str) -> Iterator[bytes]:
    """Logs a row that does not fit by view, not values, then lets the error abort the stream."""
    from dropzone.views import ViewEvaluationError

    try:
        yield from blocks
    except ViewEvaluationError as err:
        event(_log, "api.view_failed", logging.ERROR, view=name, problem=str(err))
        raise
