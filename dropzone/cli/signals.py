"""Ctrl-C and SIGTERM for commands that process files.

Ctrl-C once: stop after the current file. SIGTERM or Ctrl-C twice: abandon it now (its lease is
released so another worker can take it at once). A worker that is only waiting for work (an SQS
long poll can block for 20 s) stops at once either way, and says so.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

from dropzone.cli.output import say
from dropzone.service import Service


class StopWaiting(BaseException):
    """Raised by the signal handler into an idle wait (not an Exception: botocore's retry loops
    must not swallow it). Nothing is in flight then: an SQS message received by the cut-off poll
    becomes visible again after its visibility timeout."""


def install_signal_handlers(
    stop: threading.Event, service: Service, idle: Callable[[], bool] = lambda: False
) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def wake() -> None:
        waker = getattr(service.source, "wake", None)
        if waker:
            waker()

    def on_sigint(_sig: int, _frame: object) -> None:
        if idle():
            stop.set()
            say("stopping (no file in progress)", event="cli.stopping")
            raise StopWaiting
        if stop.is_set():
            service.pipeline.cancel.set()
            say("stopping now", event="cli.stopping")
        else:
            stop.set()
            say("finishing the current file; press Ctrl-C again to stop now", event="cli.stopping")
        wake()

    def on_sigterm(_sig: int, _frame: object) -> None:
        stop.set()
        if idle():
            raise StopWaiting
        service.pipeline.cancel.set()
        wake()

    signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGTERM, on_sigterm)
