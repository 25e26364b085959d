"""The source interface: a drop zone is anything that can list, fetch and move files.

A folder, an S3 bucket and an SFTP server all hold the same layout (see README, "Drop zone
layout"); everything after "a complete file is listed under incoming/" is shared code in
``dropzone.pipeline``. A source implementation only answers the questions below.

Keys are '/'-separated and relative to the zone root: ``incoming/<tenant>/<relpath>``,
``archived/<tenant>/YYYY/MM/DD/<name>``, ``quarantine/<tenant>/YYYY/MM/DD/<name>``.
"""

from __future__ import annotations

import contextlib
import posixpath
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

from dropzone.models import IncomingFile

INCOMING = "incoming"
ARCHIVED = "archived"
QUARANTINE = "quarantine"

# Names an uploader uses while a transfer is still running (WinSCP *.filepart, curl/rsync
# dotfiles, *.part, *.tmp). They wait until renamed to their final name.
TEMPORARY_SUFFIXES = (".part", ".filepart", ".tmp", ".partial", ".crdownload")


def is_temporary_name(relpath: str) -> bool:
    """True for upload-in-progress names and anything inside a hidden folder."""
    parts = relpath.split("/")
    if any(p.startswith(".") for p in parts):
        return True
    return parts[-1].lower().endswith(TEMPORARY_SUFFIXES)


def split_incoming_key(key: str) -> tuple[str, str] | None:
    """``incoming/<tenant>/<relpath>`` -> (tenant, relpath); None for anything else."""
    parts = key.split("/", 2)
    if len(parts) != 3 or parts[0] != INCOMING or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


# Room kept below NAME_MAX (255 bytes) for what the pipeline appends to a name: a clash number
# and ``.rejects.ndjson``/``.error.json``.
_NAME_BUDGET = 255 - 40
_FORMAT_EXTENSIONS = frozenset(
    {"ndjson", "jsonl", "json", "csv", "txt", "gz", "gzip", "zip", "xml", "tsv", "error", "rejects"}
)


def fit_name(name: str, budget: int = _NAME_BUDGET) -> str:
    """``name`` shortened (the part before the extension) so that the names derived from it fit
    the filesystem's limit; unchanged when it already fits."""
    if len(name.encode()) <= budget:
        return name
    stem, dot, ext = name.partition(".")
    ext_bytes = (dot + ext).encode()
    if len(ext_bytes) > budget // 2:
        ext_bytes = b""
    room = budget - len(ext_bytes)
    short = stem.encode()[:room].decode(errors="ignore") or "file"
    return short + ext_bytes.decode(errors="ignore")


def with_suffix_number(key: str, n: int) -> str:
    """``a/b/Patient.000.ndjson.gz`` + 2 -> ``a/b/Patient.000.2.ndjson.gz``: the number goes before
    the format extensions (``.ndjson``, ``.json``, ``.csv``, ``.gz``...), after the rest of the name."""
    folder, name = posixpath.split(key)
    parts = name.split(".")
    cut = len(parts)
    while cut > 1 and parts[cut - 1].lower() in _FORMAT_EXTENSIONS:
        cut -= 1
    if cut == len(parts) and len(parts) > 1:
        cut -= 1  # an unknown extension is still an extension
    candidate = ".".join([*parts[:cut], str(n), *parts[cut:]])
    return posixpath.join(folder, candidate) if folder else candidate


class Source(ABC):
    """One drop zone. Implementations must be safe to call from several threads."""

    def open_for_writing(self, files: list[IncomingFile]) -> set[str]:
        """Keys of ``files`` that are known to be still open for writing (default: none known)."""
        return set()

    #: True where an object only becomes visible once complete (S3): no quiet period needed.
    uploads_are_atomic: bool = False
    #: False where mtimes come from another machine's clock, possibly skewed or truncated to whole
    #: seconds (SFTP): "untouched for the quiet period" is then only judged across our own polls.
    mtime_is_local: bool = True

    @property
    @abstractmethod
    def url(self) -> str:
        """Where this zone is, for people and logs (never with credentials)."""

    @abstractmethod
    def list_incoming(self) -> list[IncomingFile]:
        """Every file under ``incoming/`` except temporary upload names, any order."""

    @abstractmethod
    def stat(self, key: str) -> IncomingFile | None:
        """Current size/mtime of an incoming key, None if it is gone."""

    @abstractmethod
    @contextlib.contextmanager
    def local_copy(self, file: IncomingFile) -> Iterator[Path]:
        """A local path holding the file's bytes for the duration of the block (the file itself
        for a folder; a temporary download for remote zones). Raises SourceFileGone."""

    @abstractmethod
    def move(self, file: IncomingFile, dest_key: str) -> str:
        """Move an incoming file to ``dest_key`` (or a numbered variant if that exists: never
        overwrite). Returns the key used. Raises SourceFileGone if the file is not there."""

    def move_key(self, src_key: str, dest_key: str) -> str:
        """Move any key (``dropzone replay`` moves quarantine/... back to incoming/...), with the
        same no-overwrite rule as ``move``."""
        raise NotImplementedError(f"{type(self).__name__} cannot move arbitrary keys")

    @abstractmethod
    def put(self, key: str, local_path: Path, *, overwrite: bool = False) -> str:
        """Store a local file at ``key`` (numbered variant on clash unless ``overwrite``).
        Uploads must appear atomically under their final name. Returns the key used."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> str:
        """Like ``put`` for small payloads (error reports)."""

    @abstractmethod
    def read_bytes(self, key: str, limit: int = 64 * 2**20) -> bytes:
        """A small file's content (reports); raises SourceFileGone."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    def wait_for_activity(self, timeout: float, stop: threading.Event) -> set[str]:
        """Block until something may have changed under ``incoming/``, ``timeout`` passed or
        ``stop`` is set. Returns incoming keys known to be complete (a close-after-write
        event); others become ready after a quiet period. The default polls."""
        stop.wait(timeout)
        return set()

    def acknowledge(self, key: str, *, processed: bool = True) -> None:
        """Called once for each key ``wait_for_activity`` returned, after the file's outcome is
        recorded (``processed``) or when it was skipped or left for later (not ``processed``).
        Event-driven sources delete or release the notification here; the default does nothing."""

    def check(self) -> None:
        """Raise ConfigError (exit 2) when the zone cannot be what its URL says (a bucket that
        does not exist); called when a command opens the zone. The default checks nothing."""

    def start(self) -> None:
        """Begin watching (threads, connections). Called once before ``wait_for_activity``."""

    def close(self) -> None:
        """Release connections and threads."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
