"""The operations dashboard: server-rendered HTML under ``/ui`` (see README, "Operations
dashboard").

* ``/ui/login`` (form), ``/ui/logout`` (post): a tenant's or reader's client credentials, the
  session in a signed HttpOnly SameSite=Strict cookie (``session.py``);
* ``/ui``: the tenants this sign-in may read, with store counts and files by outcome;
* ``/ui/tenants/{tenant}``: files per day by outcome, the latest files with links to their
  reports, rejects grouped by reason, reference integrity, store counts and the quality profile;
* ``/ui/tenants/{tenant}/files/{id}`` and ``.../report.json``: one file and its error report.

A tenant sees only itself and a reader only its listed tenants; any other tenant answers the
same 404 as one that does not exist. Pages show counts, ids, file names, zone paths, error codes
and messages, FHIR paths and code-system URLs, never a resource's values (``data.py``). They
are not part of the OpenAPI document. A page that changes refreshes itself every
``REFRESH_SECONDS`` with a small script (``static/ui.js``; without script, a meta refresh).
"""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.concurrency import run_in_threadpool

from dropzone.api.context import ApiContext, get_context
from dropzone.api.ui import data
from dropzone.api.ui.session import (
    COOKIE,
    LoginRefused,
    Session,
    clear_cookie,
    current_session,
    login,
    same_origin,
    session_claims,
    set_cookie,
)

REFRESH_SECONDS = 5
_HERE = Path(__file__).resolve().parent
_NEXT = re.compile(r"^/ui(?:/[A-Za-z0-9._~-]+)*/?$")
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # "no-referrer" makes browsers post Origin: null
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
_STATIC = {
    path.name: (path.read_bytes(), _STATIC_TYPES[path.suffix])
    for path in sorted((_HERE / "static").iterdir())
    if path.suffix in _STATIC_TYPES
}
_VERSIONS = {name: hashlib.sha256(body).hexdigest()[:12] for name, (body, _) in _STATIC.items()}


def tenant_url(tenant: str) -> str:
    return f"/ui/tenants/{quote(tenant, safe='')}"


def file_url(tenant: str, file_id: str) -> str:
    return f"{tenant_url(tenant)}/files/{quote(file_id, safe='')}"


def static_url(name: str) -> str:
    return f"/ui/static/{name}?v={_VERSIONS[name]}"


_env = Environment(
    loader=FileSystemLoader(_HERE / "templates"),
    autoescape=select_autoescape(["html"], default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.globals.update(
    tenant_url=tenant_url,
    file_url=file_url,
    static_url=static_url,
    short_time=data.short_time,
    states=data.STATES,
)

router = APIRouter(include_in_schema=False)
_cache_lock = threading.Lock()


def cache_of(request: Request) -> data.UiCache:
    """The dashboard's cache, one per application (made on first use)."""
    state = request.app.state
    cache = getattr(state, "dropzone_ui_cache", None)
    if cache is None:
        with _cache_lock:
            cache = getattr(state, "dropzone_ui_cache", None)
            if cache is None:
                cache = state.dropzone_ui_cache = data.UiCache()
    return cache  # type: ignore[no-any-return]


def _session(request: Request) -> Session | None:
    return current_session(request, cache_of(request).signed_out)


def render(
    request: Request,
    template: str,
    status: int = 200,
    session: Session | None = None,
    **context: Any,
) -> HTMLResponse:
    who = None
    if session is not None:
        who = {"kind": session.access.kind, "name": session.access.name}
    context.setdefault("refresh", 0)
    context.setdefault("crumbs", [])
    html = _env.get_template(template).render(who=who, **context)
    response = HTMLResponse(html, status, headers=_HEADERS)
    if session is not None and session.renewed is not None:
        set_cookie(request, response, *session.renewed)
    return response


def _to_login(request: Request) -> RedirectResponse:
    path = request.url.path
    target = "/ui/login" if path in ("/ui", "/ui/") else f"/ui/login?next={quote(path, safe='/')}"
    response = RedirectResponse(target, 303, headers=_HEADERS)
    if request.cookies.get(COOKIE):
        clear_cookie(request, response)  # expired or revoked: do not send it again
    return response


def _not_found(request: Request, session: Session) -> HTMLResponse:
    return render(
        request,
        "error.html",
        404,
        session,
        heading="Not found",
        message="There is no such page, or this sign-in may not see it.",
    )


def _safe_next(value: str | None) -> str:
    return value if value and _NEXT.match(value) and not value.startswith("/ui/login") else "/ui"


@router.get("/ui/login")
def login_form(request: Request, next: str | None = None) -> Response:
    if _session(request) is not None:
        return RedirectResponse(_safe_next(next), 303, headers=_HEADERS)
    nxt = _safe_next(next)
    return render(request, "login.html", next=None if nxt == "/ui" else nxt, error=None, client_id="")


@router.post("/ui/login")
async def login_submit(
    request: Request,
    client_id: Annotated[str, Form(max_length=200)] = "",
    client_secret: Annotated[str, Form(max_length=500)] = "",
    next: Annotated[str | None, Form(max_length=300)] = None,
) -> Response:
    nxt = _safe_next(next)
    shown_next = None if nxt == "/ui" else nxt
    if not same_origin(request):
        return render(
            request, "error.html", 403, heading="Refused", message="Sign in from this site's own page."
        )
    if not client_id or not client_secret:
        return render(
            request,
            "login.html",
            400,
            next=shown_next,
            error="Enter a client id and a client secret.",
            client_id=client_id,
        )
    try:
        _cred, token, ttl = await run_in_threadpool(login, request, client_id, client_secret)
    except LoginRefused as refused:
        response = render(
            request,
            "login.html",
            refused.status,
            next=shown_next,
            error=refused.message,
            client_id=client_id if refused.status != 401 else "",
        )
        if refused.retry_after:
            response.headers["Retry-After"] = refused.retry_after
        return response
    response = RedirectResponse(nxt, 303, headers=_HEADERS)
    set_cookie(request, response, token, ttl)
    return response


@router.post("/ui/logout")
def logout(request: Request) -> Response:
    if not same_origin(request):
        return render(
            request, "error.html", 403, heading="Refused", message="Sign out from this site's own page."
        )
    claims = session_claims(request)
    if claims is not None:
        cache_of(request).sign_out(claims.token_id, claims.expires_at)
    response = RedirectResponse("/ui/login", 303, headers=_HEADERS)
    clear_cookie(request, response)
    return response


@router.get("/ui")
def tenants(request: Request) -> Response:
    session = _session(request)
    if session is None:
        return _to_login(request)
    ctx = get_context(request)
    cache = cache_of(request)
    rows = data.overview_rows(ctx, data.visible_tenants(ctx, session.access, cache), cache)
    return render(request, "tenants.html", session=session, rows=rows, refresh=REFRESH_SECONDS)


@router.get("/ui/tenants/{tenant}")
def tenant_page(request: Request, tenant: str) -> Response:
    session = _session(request)
    if session is None:
        return _to_login(request)
    ctx = get_context(request)
    if not session.access.may_read(tenant) or not data.tenant_exists(ctx, tenant):
        return _not_found(request, session)
    page = data.tenant_page(ctx, tenant, cache_of(request))
    return render(
        request,
        "tenant.html",
        session=session,
        page=page,
        refresh=REFRESH_SECONDS,
        crumbs=[("Tenants", "/ui"), (tenant, tenant_url(tenant))],
    )


def _visible_file(ctx: ApiContext, session: Session, tenant: str, file_id: str) -> dict[str, Any] | None:
    """The ledger record of one of ``tenant``'s files if this sign-in may read the tenant."""
    if not session.access.may_read(tenant) or not data.tenant_exists(ctx, tenant):
        return None
    return data.file_record(ctx, tenant, file_id)


@router.get("/ui/tenants/{tenant}/files/{file_id}")
def file_page(request: Request, tenant: str, file_id: str) -> Response:
    session = _session(request)
    if session is None:
        return _to_login(request)
    ctx = get_context(request)
    record = _visible_file(ctx, session, tenant, file_id)
    if record is None:
        return _not_found(request, session)
    view = data.file_view(ctx, tenant, record)
    return render(
        request,
        "file.html",
        session=session,
        tenant=tenant,
        view=view,
        refresh=REFRESH_SECONDS if view.row.state == "processing" else 0,
        crumbs=[("Tenants", "/ui"), (tenant, tenant_url(tenant)), (view.row.name, file_url(tenant, file_id))],
    )


@router.get("/ui/tenants/{tenant}/files/{file_id}/report.json")
def file_report(request: Request, tenant: str, file_id: str) -> Response:
    """The error report as the pipeline wrote it into the zone (the same JSON the batch status
    embeds; README, "Error reports"): codes, paths, locations and ids, never values."""
    session = _session(request)
    if session is None:
        return _to_login(request)
    ctx = get_context(request)
    record = _visible_file(ctx, session, tenant, file_id)
    key = record.get("report") if record is not None and record.get("state") != "processing" else None
    body = data.read_report_bytes(ctx, key) if isinstance(key, str) and key else None
    if body is None or key is None:
        return _not_found(request, session)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", key.rsplit("/", 1)[-1])[:200]
    headers = {**_HEADERS, "Content-Disposition": f'inline; filename="{name}"'}
    response = Response(body, 200, media_type="application/json", headers=headers)
    if session.renewed is not None:
        set_cookie(request, response, *session.renewed)
    return response


@router.get("/ui/static/{name}")
def static(name: str) -> Response:
    found = _STATIC.get(name)
    if found is None:
        return Response(
            "not found", 404, media_type="text/plain", headers={"X-Content-Type-Options": "nosniff"}
        )
    body, media_type = found
    return Response(
        body,
        200,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )
