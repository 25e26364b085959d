"""Typed errors. The class decides what happens: a terminal file error quarantines the file,
a transient error leaves it in incoming/ to be retried, a usage error exits with code 2.

Messages never carry field values from a file: they name locations, paths and kinds only.
"""

from __future__ import annotations


class DropzoneError(Exception):
    """Base of every error dropzone raises on purpose."""


class UsageError(DropzoneError):
    """Wrong command line or configuration; the CLI exits with code 2."""


class ConfigError(UsageError):
    """The configuration files or environment are invalid."""


class ZoneLockedError(UsageError):
    """Another process owns this drop zone (in-memory store: one process per zone)."""


class TransientError(DropzoneError):
    """Worth retrying later (store or network unavailable). The file stays in incoming/."""


class StoreUnavailable(TransientError):
    """The store could not be reached or refused a write for a reason that may pass."""


class SourceUnavailable(TransientError):
    """The drop zone (bucket, SFTP server) could not be reached."""


class FileRejected(DropzoneError):
    """Terminal for one file: it goes to quarantine with ``code`` and ``message`` in its report.

    ``code`` is a stable machine-readable slug (e.g. ``unknown_format``); ``message`` is for people
    and must not contain values from the file.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class SourceFileGone(DropzoneError):
    """The file left incoming/ while we worked (another worker finished it, or the sender removed it)."""


class SourceFileChanged(SourceFileGone):
    """The object under this key is no longer the one we listed (a sender replaced it): the
    listed version is treated as gone, and the new content is picked up as a new file."""
