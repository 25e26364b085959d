"""Small value types shared by sources, pipeline, store and CLI."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class Outcome(enum.StrEnum):
    ARCHIVED = "archived"
    PARTIAL = "partial"
    QUARANTINED = "quarantined"
    DUPLICATE = "duplicate"

    @property
    def area(self) -> str:
        """The top-level drop-zone folder a file with this outcome moves to."""
        return "quarantine" if self is Outcome.QUARANTINED else "archived"

    @property
    def loaded_data(self) -> bool:
        return self in (Outcome.ARCHIVED, Outcome.PARTIAL)


@dataclass(frozen=True, slots=True)
class IncomingFile:
    """A file waiting under ``incoming/<tenant>/<relpath>`` in some drop zone."""

    tenant: str
    relpath: str
    size: int
    mtime: float
    etag: str | None = None
    version_id: str | None = None

    @property
    def key(self) -> str:
        # A file dropped straight into incoming/ has no tenant folder: tenant "" (quarantined).
        return f"incoming/{self.tenant}/{self.relpath}" if self.tenant else f"incoming/{self.relpath}"

    @property
    def name(self) -> str:
        return self.relpath.rsplit("/", 1)[-1]


@dataclass(slots=True)
class Counts:
    read: int = 0
    loaded: int = 0
    unchanged: int = 0
    rejected: int = 0

    def add(self, other: Counts) -> None:
        self.read += other.read
        self.loaded += other.loaded
        self.unchanged += other.unchanged
        self.rejected += other.rejected

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True)
class FileResult:
    """What happened to one file; the CLI's JSON summary is built from these."""

    name: str
    tenant: str
    key: str
    outcome: Outcome
    counts: Counts = field(default_factory=Counts)
    report: str | None = None
    destination: str | None = None
    reason: str | None = None
    sha256: str | None = None
    processor: str | None = None
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tenant": self.tenant,
            "key": self.key,  # two files of one name in different folders stay apart
            "outcome": self.outcome.value,
            "records": self.counts.as_dict(),
            "reason": self.reason,
            "destination": self.destination,
            "report": self.report,
        }
