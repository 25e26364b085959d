"""Serving the API with uvicorn in a background thread, beside the zone's watcher.

Uvicorn runs in its own thread so it installs no signal handlers: the caller's main thread
owns SIGINT/SIGTERM and stops both the server and the watcher in order (stop accepting
requests, finish the current file, close). Uvicorn's own loggers are routed through dropzone's
handlers, which print an error's type but never its traceback text (it may quote a request).
"""

from __future__ import annotations

import logging
import threading
import time

import uvicorn
from fastapi import FastAPI

from dropzone.errors import UsageError
from dropzone.log import event

_log = logging.getLogger("dropzone.api")


def _route_uvicorn_logs() -> None:
    ours = logging.getLogger("dropzone")
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = list(ours.handlers)
        logger.propagate = not ours.handlers
        logger.setLevel(logging.WARNING)


class ApiServer:
    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.host = host
        self.config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,  # guard.Guard logs route templates instead of concrete paths
            server_header=False,
            lifespan="off",
            timeout_graceful_shutdown=10,
        )
        self.server = uvicorn.Server(self.config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        for server in self.server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self.config.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        _route_uvicorn_logs()
        self._thread = threading.Thread(target=self.server.run, name="dropzone-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise UsageError(f"the API could not listen on {self.host}:{self.config.port}")
            if time.monotonic() > deadline:
                self.stop()
                raise UsageError(f"the API did not start within {timeout:.0f} s")
            time.sleep(0.02)
        event(_log, "api.listening", url=self.url)

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=self.config.timeout_graceful_shutdown or 10)
            self._thread = None
        event(_log, "api.stopped")

    def __enter__(self) -> ApiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
