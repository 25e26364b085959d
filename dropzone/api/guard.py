"""The outermost layer of our own: request body limits, one log line per request, and a last
catch so an unexpected error answers 500 without its message or traceback reaching anyone.

Body limits matter before authentication: the token endpoint is open to anyone, and a form
parser holds the whole body in memory. ``POST /api/batch`` streams to disk and enforces its
own (much larger) limit, so it is exempt here.

A body that stops arriving (a stalled or hostile client) holds a connection and, for uploads,
a spool file: after ``body_read_timeout`` seconds without a chunk, or once that long has passed
with the body averaging under ``body_min_rate`` bytes/s (a trickle), the request is answered 408
and the connection closed. A steady upload of any length above that rate is never cut.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dropzone.api.errors import ApiError, error_response, unexpected_response
from dropzone.log import event

_log = logging.getLogger("dropzone.api")
SMALL_BODY = 64 * 1024
BODY_READ_TIMEOUT = 30.0  # seconds without a body chunk before a request is answered 408
BODY_MIN_RATE = 1024.0  # bytes/s a body must average once BODY_READ_TIMEOUT has passed


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        resource_limit: int,
        *,
        body_read_timeout: float = BODY_READ_TIMEOUT,
        body_min_rate: float = BODY_MIN_RATE,
    ) -> None:
        if body_read_timeout <= 0:
            raise ValueError("body_read_timeout must be a positive number of seconds")
        self.app = app
        self.resource_limit = resource_limit
        self.body_read_timeout = body_read_timeout
        self.body_min_rate = body_min_rate

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
                timed = _timed(receive, self.body_read_timeout, self.body_min_rate)
                await self.app(scope, _capped(timed, limit) if limit is not None else timed, send_tracking)
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


def _timed(receive: Receive, timeout: float, min_rate: float = 0.0) -> Receive:
    """Fail a body read after ``timeout`` seconds without a chunk, or, once ``timeout`` seconds
    have passed, when the body has come slower than ``min_rate`` bytes/s on average (a trickle of
    one byte per half second never stalls but would hold a connection for days). Only while the
    body is incomplete: afterwards Starlette may wait on ``receive`` for a disconnect for as long
    as a response streams, and that wait must not time out."""
    body_done = False
    started: float | None = None
    seen = 0

    def refuse(message: str) -> ApiError:
        nonlocal body_done
        body_done = True  # we answer now; a later read (a disconnect listener) must not time out
        return ApiError(408, "body_timeout", message, headers={"Connection": "close"})

    async def wrapped() -> Message:
        nonlocal body_done, started, seen
        if body_done:
            return await receive()
        if started is None:
            started = time.monotonic()
        try:
            with anyio.fail_after(timeout):
                message = await receive()
        except TimeoutError:
            raise refuse(f"no part of the request body arrived for {timeout:g} s") from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            body_done = True
            return message
        seen += len(message.get("body", b""))
        elapsed = time.monotonic() - started
        if min_rate > 0 and elapsed > timeout and seen < min_rate * elapsed:
            raise refuse(f"the request body arrived slower than {min_rate:g} bytes/s")
        return message

    return wrapped


async def _send(scope: Scope, receive: Receive, send: Send, response: Any) -> None:
    await response(scope, receive, send)
