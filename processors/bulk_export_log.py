"""The log of a FHIR Bulk Data export (``log.ndjson``), which partners hand over with the
export's NDJSON files: one event per line (``exportId``, ``eventId``, ``timestamp``,
``eventDetail``), no FHIR resources. It is recognised by its content, kept (archived) for the
record, and loads nothing: 0 records read, not a quarantine for ``missing_resource_type``.

A line in it that is not an export event (a FHIR resource pasted in, broken JSON) is rejected
as a record, so nothing unexpected in the file goes unseen.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from processors import fhir_json
from processors.base import Issue, Processor, Record, Sniffed
from processors.lines import LineTooLong, iter_lines
from processors.registry import register

if TYPE_CHECKING:
    from dropzone.config import TenantSettings

_EVENT_KEYS = ("exportId", "eventId")


def is_export_event(value: Any) -> bool:
    return isinstance(value, dict) and "resourceType" not in value and all(k in value for k in _EVENT_KEYS)


@register
class BulkExportLogProcessor(Processor):
    name = "bulk-export-log"
    priority = 10  # before fhir-ndjson, which would reject every line for its missing resourceType
    informational = True

    @classmethod
    def accepts(cls, sniffed: Sniffed, tenant: TenantSettings) -> bool:
        if sniffed.kind != "ndjson":
            return False
        first = sniffed.head.split(b"\n", 1)[0]
        try:
            return is_export_event(fhir_json.loads(first))
        except fhir_json.JSONDecodeError:
            return False

    def records(self) -> Iterator[Record]:
        limit = self.context.settings.pipeline.max_record_bytes
        with self.context.open_payload() as stream:
            for lineno, line in iter_lines(stream, limit):
                if isinstance(line, LineTooLong) or not line.strip():
                    if isinstance(line, LineTooLong):
                        yield Record(lineno, f"line {lineno}", issues=[_not_an_event()])
                    continue
                try:
                    event = fhir_json.loads(line)
                except fhir_json.JSONDecodeError:
                    event = None
                if not is_export_event(event):
                    yield Record(lineno, f"line {lineno}", issues=[_not_an_event()])


def _not_an_event() -> Issue:
    return Issue("not_an_export_event", "a line of a Bulk Data export log that is not an export event")
