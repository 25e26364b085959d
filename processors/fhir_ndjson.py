"""FHIR Bulk Data NDJSON: one resource per line (any mix of types), gzip or not."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from processors import fhir_json
from processors.base import Issue, Processor, RawParsed, Record, Sniffed
from processors.fhir_common import repeated_key_issue, shape_issues
from processors.json_keys import loads_noting_repeated_key
from processors.lines import LineTooLong, iter_lines
from processors.registry import register

if TYPE_CHECKING:
    from dropzone.config import TenantSettings


def parse_line(line: bytes) -> RawParsed:
    """One NDJSON line -> its resource, or why it is not one (run in the pipeline's workers)."""
    try:
        resource, repeated = loads_noting_repeated_key(line)
    except fhir_json.JSONDecodeError as err:
        return [], [Issue("invalid_json", f"the line is not valid JSON (column {err.colno})")]
    issues = shape_issues(resource)
    if repeated is not None:
        issues = [repeated_key_issue(repeated), *issues]
    return ([], issues) if issues else ([resource], [])


@register
class FhirNdjsonProcessor(Processor):
    name = "fhir-ndjson"
    rejects_extension = "ndjson"
    raw_parser = staticmethod(parse_line)

    @classmethod
    def accepts(cls, sniffed: Sniffed, tenant: TenantSettings) -> bool:
        return sniffed.kind == "ndjson"

    def records(self) -> Iterator[Record]:
        limit = self.context.settings.pipeline.max_record_bytes
        with self.context.open_payload() as stream:
            for lineno, line in iter_lines(stream, limit):
                location = f"line {lineno}"
                if isinstance(line, LineTooLong):
                    yield Record(
                        lineno,
                        location,
                        issues=[
                            Issue(
                                "record_too_large", f"the line is {line.length} bytes; the limit is {limit}"
                            )
                        ],
                    )
                    continue
                if not line.strip():
                    continue  # blank lines (a trailing newline) are not records
                yield Record(lineno, location, raw=line)
