"""``POST /api/authenticate`` (OAuth2 client credentials) and the bearer-token dependencies.

A token names a tenant or an internal reader (``dropzone reader add``). ``Tenant`` routes take
the tenant from the token and nothing else, so a token for tenant A cannot name tenant B's data,
and refuse a reader's token with 403 (a reader never writes). The routes under
``/api/tenants/{tenant}/`` decide who may read that tenant in ``access.py``.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Annotated
from urllib.parse import unquote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2

from dropzone.api.context import get_context
from dropzone.api.credentials import ClientCredential, Credential, ReaderCredential
from dropzone.api.errors import ApiError
from dropzone.api.ratelimit import UNKNOWN_CLIENT, Decision
from dropzone.api.schemas import OAuthError, TokenResponse
from dropzone.api.smart import ASSERTION_TYPE, AssertionRefused
from dropzone.api.tokens import TENANT, InvalidToken, scope_for
from dropzone.config import Settings
from dropzone.log import event

_log = logging.getLogger("dropzone.api")
TOKEN_PATH = "/api/authenticate"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


oauth2_scheme = OAuth2(
    flows=OAuthFlows(clientCredentials=OAuthFlowClientCredentials(tokenUrl=TOKEN_PATH, scopes={})),
    scheme_name="client_credentials",
    description="OAuth2 client credentials (a tenant's, or an internal reader's for read-only "
    "access); send the token as `Authorization: Bearer <token>`.",
    auto_error=False,
)


def current_credential(
    request: Request, authorization: Annotated[str | None, Depends(oauth2_scheme)]
) -> Credential:
    """The tenant's or reader's credential behind a valid bearer token (401 otherwise), checked
    against the current files on every request so rotate/remove revoke tokens already issued."""
    ctx = get_context(request)
    challenge = {"WWW-Authenticate": 'Bearer realm="dropzone"'}
    if not authorization:
        raise ApiError(
            401, "missing_token", "an access token is required (POST /api/authenticate)", headers=challenge
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "invalid_token", "use 'Authorization: Bearer <token>'", headers=challenge)
    try:
        claims = ctx.issuer.verify(token.strip())
    except InvalidToken as err:
        raise ApiError(
            401, "invalid_token", err.reason, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        ) from err
    ctx.credentials.refresh()
    cred: Credential | None = (
        ctx.credentials.for_tenant(claims.name)
        if claims.kind == TENANT
        else ctx.credentials.for_reader(claims.name)
    )
    if cred is None or cred.client_id != claims.client_id or cred.fingerprint != claims.fingerprint:
        raise ApiError(
            401,
            "invalid_token",
            "the credentials this token was issued for were rotated or removed; request a new token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    if isinstance(cred, ClientCredential):
        request.state.tenant = cred.tenant  # the request log names the tenant
    else:
        request.state.reader = cred.reader
    return cred


def current_tenant(request: Request, cred: Annotated[Credential, Depends(current_credential)]) -> str:
    """The tenant named by a valid tenant token: 401 without one, 403 for a reader's token."""
    if not isinstance(cred, ClientCredential):
        raise ApiError(
            403,
            "read_only_token",
            "a reader's token only reads, under /api/tenants/{tenant}/; this needs a tenant's token",
        )
    return cred.tenant


Tenant = Annotated[str, Depends(current_tenant)]

router = APIRouter(tags=["authentication"])


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    headers = dict(_NO_STORE)
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="dropzone"'
    return JSONResponse({"error": error, "error_description": description}, status, headers=headers)


def _who(cred: Credential | None) -> dict[str, str | None]:
    """Log fields naming a known client's principal (names only, never secrets)."""
    if isinstance(cred, ReaderCredential):
        return {"reader": cred.reader}
    return {"tenant": cred.tenant if cred else None}


def _throttled(decision: Decision, scope: str, **fields: str | None) -> JSONResponse:
    if decision.first_refusal:  # once per window per key
        event(_log, "api.token_throttled", logging.WARNING, limit=scope, **fields)
    response = _oauth_error(429, "too_many_requests", "too many authentication attempts; retry later")
    response.headers["Retry-After"] = decision.retry_after_header
    return response


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as err:
        raise ValueError("malformed Basic credentials") from err
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise ValueError("malformed Basic credentials")
    # RFC 6749 2.3.1: both parts are form-urlencoded before Basic encoding.
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))


def _audiences(request: Request, settings: Settings) -> list[str]:
    """The token endpoint URL as this request reached it, plus the configured public one."""
    seen = [str(request.url.replace(query=None, fragment=None))]
    if settings.api.public_url:
        seen.append(settings.api.public_url.rstrip("/") + TOKEN_PATH)
    return seen


@router.post(
    TOKEN_PATH,
    response_model=TokenResponse,
    responses={400: {"model": OAuthError}, 401: {"model": OAuthError}, 429: {"model": OAuthError}},
    summary="Get an access token (OAuth2 client credentials)",
)
def authenticate(
    request: Request,
    grant_type: Annotated[str | None, Form(max_length=100)] = None,
    client_id: Annotated[str | None, Form(max_length=200)] = None,
    client_secret: Annotated[str | None, Form(max_length=500)] = None,
    client_assertion_type: Annotated[str | None, Form(max_length=200)] = None,
    client_assertion: Annotated[str | None, Form(max_length=16_000)] = None,
    scope: Annotated[str | None, Form(max_length=1000)] = None,
) -> JSONResponse:
    """Form fields `grant_type=client_credentials` plus either `client_id` and `client_secret`
    (or HTTP Basic), or a SMART Backend Services `client_assertion` (JWT signed with the
    tenant's key). Answers a bearer token valid for `expires_in` seconds for one tenant
    (scope `system/*.write system/*.read`) or one internal reader (scope `system/*.read`)."""
    ctx = get_context(request)
    address = request.client.host if request.client else "unknown"
    by_address = ctx.token_limits.by_address.acquire(address)
    if not by_address.allowed:
        return _throttled(by_address, "address", address=address)
    if grant_type != "client_credentials":
        if grant_type is None:
            return _oauth_error(400, "invalid_request", "grant_type is required")
        return _oauth_error(400, "unsupported_grant_type", "only grant_type=client_credentials is supported")
    try:
        basic = _basic_credentials(request)
    except ValueError:
        return _oauth_error(401, "invalid_client", "malformed HTTP Basic credentials")
    methods = sum(x is not None for x in (basic, client_secret, client_assertion))
    if methods != 1:
        return _oauth_error(
            400,
            "invalid_request",
            "authenticate with exactly one of: client_id + client_secret, HTTP Basic, or a client_assertion",
        )
    ctx.credentials.refresh()
    cred: Credential | None
    if client_assertion is not None:
        if client_assertion_type != ASSERTION_TYPE:
            return _oauth_error(400, "invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}")
        try:
            cred = ctx.assertions.verify(client_assertion, _audiences(request, ctx.settings))
        except AssertionRefused as err:
            event(_log, "api.token_refused", logging.WARNING, method="client_assertion", reason=err.reason)
            return _oauth_error(401, "invalid_client", err.reason)
        if client_id is not None and client_id != cred.client_id:
            return _oauth_error(400, "invalid_request", "client_id does not match the client assertion")
    else:
        given_id, secret = basic if basic is not None else (client_id, client_secret)
        if not given_id or not secret:
            return _oauth_error(400, "invalid_request", "client_id and client_secret are required")
        # The client id is logged only when it is one of ours (a typo could hold a secret);
        # unknown ids share one limiter key, so they cannot grow its memory.
        known = ctx.credentials.lookup(given_id)
        client_key = known.client_id if known else UNKNOWN_CLIENT
        # Counted before the scrypt check (so concurrent guesses count too), refunded on success.
        by_client = ctx.token_limits.by_client.acquire(client_key)
        if not by_client.allowed:
            return _throttled(
                by_client, "client_id", client_id=known.client_id if known else None, **_who(known)
            )
        cred = ctx.credentials.authenticate(given_id, secret)
        if cred is None:
            event(
                _log,
                "api.token_refused",
                logging.WARNING,
                method="basic" if basic else "client_secret",
                **_who(known),
            )
            return _oauth_error(401, "invalid_client", "unknown client or wrong secret")
        ctx.token_limits.by_client.refund(client_key)
    token, expires_in = ctx.issuer.issue(cred)
    event(_log, "api.token_issued", expires_in=expires_in, **_who(cred))
    body = TokenResponse(access_token=token, expires_in=expires_in, scope=scope_for(cred))
    return JSONResponse(body.model_dump(), headers=_NO_STORE)
