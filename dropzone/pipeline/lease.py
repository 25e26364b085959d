"""Keeps a ledger claim alive while a file is processed, and notices when it is lost."""

from __future__ import annotations

import logging
import threading

from dropzone.errors import DropzoneError, TransientError
from dropzone.log import event
from dropzone.store.base import Claim, Ledger

_log = logging.getLogger("dropzone.lease")


class LeaseLost(DropzoneError):
    """Another worker took the file over (we were too slow to renew): stop without finishing."""


class Interrupted(TransientError):
    """Shutdown asked for while a file was in progress: release the lease, keep the file."""


class Heartbeat:
    def __init__(
        self, ledger: Ledger, claim: Claim, lease_seconds: float, cancel: threading.Event | None = None
    ) -> None:
        self._cancel = cancel
        self._ledger = ledger
        self._claim = claim
        self._lease = lease_seconds
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """No renewal after this returns. Called before the claim is completed: a beat after
        ``complete`` would find the claim done and report it lost (seen on a 4 GB file, whose
        move to archived/ outlasted a beat)."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        interval = max(self._lease / 3, 0.05)
        while not self._stop.wait(interval):
            try:
                renewed = self._ledger.renew(self._claim, self._lease)
            except DropzoneError:
                continue  # store hiccup: try again next beat; the lease has slack for two misses
            if not renewed:
                event(_log, "lease.lost", logging.WARNING, claim=self._claim.key)
                self._lost.set()
                return

    def check(self) -> None:
        if self._lost.is_set():
            raise LeaseLost(self._claim.key)
        if self._cancel is not None and self._cancel.is_set():
            raise Interrupted(self._claim.key)
