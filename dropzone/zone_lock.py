"""One process per drop zone with the in-memory store (its ledger lives in that process only)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from dropzone.errors import ZoneLockedError

LOCK_NAME = ".dropzone.lock"


@contextlib.contextmanager
def exclusive_zone(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the zone folder, or raise ZoneLockedError at once.
    The OS drops the lock when the process dies, so a crash never leaves it stuck."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise ZoneLockedError(
                f"drop zone {root} is in use by pid {holder} with the in-memory store; "
                "only one process can own a zone with store.kind memory (use the default SQLite store or "
                "MongoDB to run several workers)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
