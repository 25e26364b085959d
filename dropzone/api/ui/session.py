"""The dashboard's login session: an API access token in a signed cookie.

``POST /ui/login`` checks a tenant's or a reader's client id and secret exactly as
``POST /api/authenticate`` does (same registry, same rate limits, same log events apart from
the name) and puts the token ``TokenIssuer`` issues for it in an HttpOnly, SameSite=Strict
cookie scoped to ``/ui``. So the session is signed with the key the API signs its tokens with,
and every page checks it with ``auth.current_credential``: an expired token, a rotated secret
or a removed tenant or reader ends the session at once, and ``access.current_access`` says
which tenants it may read (a tenant itself, a reader its listed tenants).

The token lives ``api.token_ttl_seconds``; a page served in the second half of that life
carries a fresh one, so a dashboard left open (it refreshes itself) stays signed in while its
credentials stay valid, and one closed for longer than the TTL needs a new login. Signing out
deletes the cookie and refuses its token in this process from then on (a copy of the cookie
taken earlier is then worthless here; other API processes accept it until it expires).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request, Response

from dropzone.api.access import Access, current_access
from dropzone.api.auth import current_credential
from dropzone.api.context import ApiContext, get_context
from dropzone.api.credentials import Credential, ReaderCredential
from dropzone.api.errors import ApiError
from dropzone.api.ratelimit import UNKNOWN_CLIENT
from dropzone.api.tokens import InvalidToken, TokenClaims
from dropzone.log import event

_log = logging.getLogger("dropzone.api")
COOKIE = "dz_ui_session"
COOKIE_PATH = "/ui"


@dataclass(frozen=True, slots=True)
class Session:
    access: Access
    #: A fresh token to send back (the old one is past half its life), else None.
    renewed: tuple[str, int] | None = None


class LoginRefused(Exception):
    """``status`` 401 (wrong id or secret) or 429 (throttled, ``retry_after`` seconds)."""

    def __init__(self, status: int, message: str, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def _who(cred: Credential | None) -> dict[str, str | None]:
    if isinstance(cred, ReaderCredential):
        return {"reader": cred.reader}
    return {"tenant": cred.tenant if cred else None}


def login(request: Request, client_id: str, secret: str) -> tuple[Credential, str, int]:
    """(credential, token, ttl) for a right client id and secret; LoginRefused otherwise.
    The same checks and limits as the token endpoint's client_secret path (``auth.py``)."""
    ctx = get_context(request)
    address = request.client.host if request.client else "unknown"
    by_address = ctx.token_limits.by_address.acquire(address)
    if not by_address.allowed:
        if by_address.first_refusal:
            event(_log, "ui.login_throttled", logging.WARNING, limit="address", address=address)
        raise LoginRefused(429, "Too many sign-in attempts; wait a minute.", by_address.retry_after_header)
    ctx.credentials.refresh()
    known = ctx.credentials.lookup(client_id)
    client_key = known.client_id if known else UNKNOWN_CLIENT
    by_client = ctx.token_limits.by_client.acquire(client_key)
    if not by_client.allowed:
        if by_client.first_refusal:
            event(_log, "ui.login_throttled", logging.WARNING, limit="client_id", **_who(known))
        raise LoginRefused(429, "Too many sign-in attempts; wait a minute.", by_client.retry_after_header)
    cred = ctx.credentials.authenticate(client_id, secret)
    if cred is None:
        event(_log, "ui.login_refused", logging.WARNING, **_who(known))
        raise LoginRefused(401, "Unknown client id or wrong secret.")
    ctx.token_limits.by_client.refund(client_key)
    token, ttl = ctx.issuer.issue(cred)
    event(_log, "ui.login", **_who(cred))
    return cred, token, ttl


def session_claims(request: Request) -> TokenClaims | None:
    """The claims of the session cookie's token if its signature and expiry are good."""
    token = request.cookies.get(COOKIE)
    if not token or len(token) > 4096:
        return None
    try:
        return get_context(request).issuer.verify(token)
    except InvalidToken:
        return None


def current_session(request: Request, signed_out: Callable[[str], bool]) -> Session | None:
    """The signed-in caller, or None (no cookie, bad signature, expired, credentials rotated
    or removed, or signed out here: ``signed_out(token_id)``)."""
    claims = session_claims(request)
    if claims is None or signed_out(claims.token_id):
        return None
    ctx = get_context(request)
    try:
        cred = current_credential(request, f"Bearer {request.cookies[COOKIE]}")
    except ApiError:
        return None
    access = current_access(request, cred)
    renewed = None
    if claims.expires_at - time.time() < ctx.issuer.ttl_seconds / 2:
        renewed = ctx.issuer.issue(cred)
    return Session(access, renewed)


def _secure(request: Request, ctx: ApiContext) -> bool:
    public = ctx.settings.api.public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


def set_cookie(request: Request, response: Response, token: str, ttl: int) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=ttl,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request, get_context(request)),
    )


def clear_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request, get_context(request)),
    )


def same_origin(request: Request) -> bool:
    """A form post from our own pages: its Origin (when the browser sends one) names this
    host, or the configured public URL. Refuses login and logout posts from other sites."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    netloc = urlsplit(origin).netloc
    allowed = {request.headers.get("host", "")}
    public = get_context(request).settings.api.public_url
    if public:
        allowed.add(urlsplit(public).netloc)
    return netloc in allowed
