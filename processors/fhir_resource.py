"""A JSON file holding one FHIR resource (not a Bundle)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

from dropzone.errors import FileRejected
from processors import fhir_json
from processors.base import Processor, Record, Sniffed
from processors.fhir_common import repeated_key_issue, shape_issues
from processors.json_keys import loads_noting_repeated_key
from processors.registry import register

if TYPE_CHECKING:
    from dropzone.config import TenantSettings


@register
class FhirResourceProcessor(Processor):
    name = "fhir-resource"
    rejects_extension = "json"

    @classmethod
    def accepts(cls, sniffed: Sniffed, tenant: TenantSettings) -> bool:
        return sniffed.kind == "json-resource"

    def records(self) -> Iterator[Record]:
        limit = self.context.settings.pipeline.max_record_bytes
        with self.context.open_payload() as stream:
            data = stream.read(limit + 1)
        if len(data) > limit:
            raise FileRejected("record_too_large", f"a single resource larger than {limit} bytes")
        try:
            resource, repeated = loads_noting_repeated_key(data)
        except fhir_json.JSONDecodeError:
            raise FileRejected("invalid_json", "the JSON document is malformed") from None
        issues = shape_issues(resource)
        if repeated is not None:
            issues = [repeated_key_issue(repeated), *issues]
        yield Record(1, "resource", resources=[] if issues else [resource], issues=issues)

    def write_rejects(self, indexes: set[int], out: BinaryIO) -> None:
        with self.context.open_payload() as stream:
            while chunk := stream.read(1 << 20):
                out.write(chunk)
