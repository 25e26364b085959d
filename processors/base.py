"""The processor plug-in interface.

A processor turns one sniffed file into a stream of ``Record``s: one per line, Bundle entry or
CSV row, each carrying the FHIR resources it produced (not yet validated) or the reason it
could not. Validation against FHIR R4, hashing, batching, storing, counting and reporting are
done by the shared pipeline, so a processor only parses and maps.

To add a format: write a module with a ``Processor`` subclass decorated with ``@register`` (see
``processors/registry.py``), or expose it through the ``dropzone.processors`` entry-point group
from another package.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, Literal

if TYPE_CHECKING:
    from dropzone.config import Settings, TenantSettings
    from dropzone.store.base import ResourceStore

Method = Literal["PUT", "DELETE"]


@dataclass(frozen=True, slots=True)
class Sniffed:
    """What the content sniffer learned about a file (see ``dropzone.pipeline.sniff``)."""

    kind: str  # "ndjson" | "json-resource" | "json-bundle" | "csv" | ...
    gzipped: bool
    head: bytes  # first bytes of the decompressed payload, BOM removed
    details: dict[str, Any] = field(default_factory=dict)  # e.g. resourceType, bundle type


@dataclass(slots=True)
class Issue:
    """One problem with one record. ``path`` is a FHIR element path or CSV column name; the
    message never contains the offending value."""

    code: str
    message: str
    path: str | None = None


@dataclass(slots=True)
class Record:
    """One unit of the file that succeeds or fails as a whole.

    ``index`` identifies it for the rejects file (line number, entry index, CSV row number);
    ``location`` says the same for people ("line 12", "entry 3", "row 7").
    """

    index: int
    location: str
    resources: list[dict[str, Any]] = field(default_factory=list)
    # From a processor with a ``raw_parser``: what that parser takes (an NDJSON line's bytes, a
    # claim's CSV fields), turned into resources by the pipeline in a worker process
    # (``resources`` then stays empty). It is pickled to the worker: keep it small and plain.
    raw: Any = None
    # The size of ``raw`` in bytes where it is not ``bytes``, for the pipeline's batch limit.
    raw_size: int = 0
    # (resourceType, id) for the report when ``resources`` is not kept (a parsed ``raw``).
    described: tuple[str | None, str | None] | None = None
    issues: list[Issue] = field(default_factory=list)
    method: Method = "PUT"
    # For DELETE: (resourceType, id) to remove; resources stays empty.
    target: tuple[str, str] | None = None
    warnings: list[Issue] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.issues)

    def describe(self) -> dict[str, Any]:
        """resourceType/id for the report, when known (ids are not patient values)."""
        first = self.resources[0] if self.resources else {}
        rtype = first.get("resourceType") if isinstance(first, dict) else None
        rid = first.get("id") if isinstance(first, dict) else None
        if self.described:
            rtype, rid = self.described
        if self.target:
            rtype, rid = self.target
        return {
            "resourceType": rtype if isinstance(rtype, str) else None,
            "id": rid if isinstance(rid, str) else None,
        }


#: What a ``raw_parser`` makes of one record's ``raw``: its resources, or why it has none.
RawParsed = tuple[list[dict[str, Any]], list[Issue]]


@dataclass(slots=True)
class ProcessorContext:
    """What a processor may use besides the file: settings, its tenant, and read-only store
    lookups (conditional references in transaction Bundles)."""

    settings: Settings
    tenant: TenantSettings
    resources: ResourceStore
    open_payload: Callable[[], BinaryIO]  # a fresh stream of the decompressed, BOM-less bytes
    path: Path  # the local copy (compressed as received)
    sniffed: Sniffed
    name: str  # the file name, for messages


class Processor(ABC):
    """Parse (and for claims, map) one file into records."""

    #: Registry name, also written in reports and the ledger.
    name: ClassVar[str]
    #: Extension of the rejects file written next to a partial file's report.
    rejects_extension: ClassVar[str] = "ndjson"
    #: Higher wins when several processors accept the same file.
    priority: ClassVar[int] = 0
    #: True for files that carry no data by design (a Bulk Data export log): with no records
    #: read they are archived, where any other processor's empty file is quarantined.
    informational: ClassVar[bool] = False
    #: For records that parse or map independently (one resource per line, one claim): a
    #: module-level function ``raw -> RawParsed``. ``records()`` then yields records with
    #: ``raw`` set (all of them or some) and the pipeline runs it in its worker processes, so
    #: that work uses every core. It must be picklable (importable by name) and must not depend
    #: on the processor's state: what it needs travels in ``raw``.
    raw_parser: ClassVar[Callable[[Any], RawParsed] | None] = None

    def __init__(self, context: ProcessorContext) -> None:
        self.context = context

    @classmethod
    @abstractmethod
    def accepts(cls, sniffed: Sniffed, tenant: TenantSettings) -> bool:
        """Cheap decision from the sniffed head: can this processor read the file?"""

    def atomic(self) -> bool:
        """True when the file must load all or nothing (transaction Bundles). The pipeline then
        validates every record before it stores any."""
        return False

    @abstractmethod
    def records(self) -> Iterator[Record]:
        """Stream the file's records in order. Raise ``FileRejected`` for file-level problems
        (syntax error that stops parsing, missing Bundle.type); per-record problems go in
        ``Record.issues``. Memory must stay bounded by one record, not the file."""

    def report_details(self) -> dict[str, Any]:
        """Processor-specific counts for the file's report and ledger record, read after
        ``records()`` is exhausted (e.g. unresolved references). Counts and codes only, never
        values from the file."""
        return {}

    def write_rejects(self, indexes: set[int], out: BinaryIO) -> None:
        """Write the original bytes of the rejected records (``Record.index``) to ``out`` in a
        form the sender can fix and drop again. The default re-reads the payload's lines."""
        for lineno, raw in enumerate(self.context.open_payload(), start=1):
            if lineno in indexes:
                out.write(raw if raw.endswith(b"\n") else raw + b"\n")
