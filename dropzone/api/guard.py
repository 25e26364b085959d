"""The outermost layer of our own: request body limits, one log line per request, and a last
catch so an unexpected error answers 500 without its message or traceback reaching anyone.

Body limits matter before authentication: the token endpoint is open to anyone, and a form
parser holds the whole body in memory. ``POST /api/batch`` streams to disk and enforces its
own (much larger) limit, so it is exempt here.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dropzone.api.errors import ApiError, error_response, unexpected_response
from dropzone.log import event

_log = logging.getLogger("dropzone.api")
SMALL_BODY = 64 * 1024


class Guard:
    def __init__(self, app: ASGIApp, resource_limit: int) -> None:
        self.app = app
        self.resource_limit = resource_limit

    def _limit(self, scope: Scope) -> int | None:
        path: str = scope["path"]
        if path == "/api/batch" and scope["method"] == "POST":
            return None
        if path.startswith("/api/fhir/"):
            return self.resource_limit
        return SMALL_BODY

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = {"code": 0}
        limit = self._limit(scope)

        async def send_tracking(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        request = Request(scope)
        declared = request.headers.get("content-length")
        try:
            if limit is not None and declared is not None and declared.isdigit() and int(declared) > limit:
                await _send(scope, receive, send_tracking, _too_large(request, limit))
            else:
                await self.app(
                    scope, _capped(receive, limit) if limit is not None else receive, send_tracking
                )
        except Exception as exc:
            if status["code"]:
                raise  # the response is under way: nothing sensible left to send
            await _send(scope, receive, send_tracking, unexpected_response(request, exc))
        finally:
            route = scope.get("route")
            event(
                _log,
                "api.request",
                logging.DEBUG if scope["path"] in ("/api/health",) else logging.INFO,
                method=scope["method"],
                # The route template, never the concrete path: ids and file names stay out of logs.
                route=getattr(route, "path", "(no route)"),
                status=status["code"],
                tenant=scope.get("state", {}).get("tenant"),
                ms=round((time.monotonic() - started) * 1000, 1),
            )


def _too_large(request: Request, limit: int) -> Any:
    return error_response(request, 413, "too_large", f"the request body exceeds {limit} bytes")


def _capped(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise ApiError(413, "too_large", f"the request body exceeds {limit} bytes")
        return message

    return wrapped


async def _send(scope: Scope, receive: Receive, send: Send, response: Any) -> None:
    await response(scope, receive, send)
