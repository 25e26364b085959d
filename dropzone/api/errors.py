"""How the API answers errors: one shape everywhere, a FHIR OperationOutcome whose issues carry
dropzone's machine code (``details.coding[0].code``, also ``details.text``), except the token
endpoint, which answers OAuth2's ``{"error"}`` as RFC 6749 clients expect. Bodies never echo
request values: FastAPI's default 422 body quotes the input, so it is replaced here."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from dropzone.errors import TransientError
from dropzone.log import event
from processors.base import Issue

_log = logging.getLogger("dropzone.api")
FHIR_JSON = "application/fhir+json"
CODE_SYSTEM = "urn:dropzone:error"

# Our codes -> FHIR IssueType (http://hl7.org/fhir/R4/valueset-issue-type.html).
_FHIR_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    408: "timeout",
    409: "conflict",
    413: "too-costly",
    415: "not-supported",
    422: "invalid",
    429: "throttled",
    503: "transient",
}


class ApiError(HTTPException):
    """An expected refusal. ``message`` is shown to the caller and must not contain request values;
    ``issues`` (FHIR routes) name element paths."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        issues: Iterable[Issue] = (),
    ) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.code = code
        self.message = message
        self.issues = list(issues)


def operation_outcome(status: int, code: str, message: str, issues: Iterable[Issue] = ()) -> dict[str, Any]:
    fhir_code = _FHIR_CODES.get(status, "exception" if status >= 500 else "processing")
    items: list[dict[str, Any]] = []
    for issue in issues:
        item: dict[str, Any] = {
            "severity": "error",
            "code": "structure" if issue.code.startswith("invalid.") else fhir_code,
            "details": _details(issue.code),
            "diagnostics": issue.message,
        }
        if issue.path:
            item["expression"] = [issue.path]
        items.append(item)
    if not items:
        items.append(
            {"severity": "error", "code": fhir_code, "details": _details(code), "diagnostics": message}
        )
    return {"resourceType": "OperationOutcome", "issue": items}


def _details(code: str) -> dict[str, Any]:
    return {"text": code, "coding": [{"system": CODE_SYSTEM, "code": code}]}


def is_fhir_path(path: str) -> bool:
    """The FHIR bases: ``/api/fhir/...`` and ``/api/tenants/{tenant}/fhir/...``."""
    if path.startswith("/api/fhir"):
        return True
    parts = path.split("/", 5)  # "", "api", "tenants", tenant, "fhir", ...
    return len(parts) >= 5 and parts[1:3] == ["api", "tenants"] and parts[4] == "fhir"


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    issues: Iterable[Issue] = (),
) -> JSONResponse:
    # One body everywhere; the FHIR routes also say it in FHIR's media type.
    media_type = FHIR_JSON if is_fhir_path(request.url.path) else None
    return JSONResponse(
        operation_outcome(status, code, message, issues), status, headers=headers, media_type=media_type
    )


_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 401: "unauthorized"}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if isinstance(exc, ApiError):
        return error_response(request, exc.status_code, exc.code, exc.message, exc.headers, exc.issues)
    # Starlette's own (unknown route, wrong method, FastAPI's body-parse error): generic text.
    code = _STATUS_CODES.get(exc.status_code, "http_error")
    message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, "the request was refused")
    if exc.status_code == 400:
        message = "the request body could not be parsed"
    return error_response(request, exc.status_code, code, message, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    issues = []
    for item in exc.errors():
        where = ".".join(str(p) for p in item.get("loc", ()))
        issues.append(Issue(f"invalid.{item.get('type', 'value')}", str(item.get("msg", "invalid")), where))
    summary = "; ".join(f"{i.path}: {i.message}" for i in issues[:10])
    if request.url.path == "/api/authenticate":  # OAuth2 clients expect RFC 6749 errors
        return JSONResponse(
            {"error": "invalid_request", "error_description": f"invalid form ({summary})"},
            400,
            headers={"Cache-Control": "no-store"},
        )
    if is_fhir_path(request.url.path):
        return error_response(request, 400, "invalid_request", "the request is not valid", issues=issues)
    return error_response(request, 422, "invalid_request", f"invalid request ({summary})", issues=issues)


def unexpected_response(request: Request, exc: Exception) -> JSONResponse:
    """The answer to an exception no handler took (see ``guard.Guard``)."""
    if isinstance(exc, TransientError):
        event(_log, "api.unavailable", logging.WARNING, error_type=type(exc).__name__)
        return error_response(
            request,
            503,
            "unavailable",
            "the store or drop zone is unavailable; retry later",
            {"Retry-After": "5"},
        )
    # Log the type only: exception messages may quote request content.
    event(_log, "api.internal_error", logging.ERROR, error_type=type(exc).__name__, route=_route(request))
    return error_response(request, 500, "internal_error", "internal error")


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", "?")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
