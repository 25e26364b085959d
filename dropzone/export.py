"""Stored resources out as FHIR Bulk Data NDJSON: one ``<Type>.ndjson`` per resourceType.

Each line is the resource exactly as stored (the sender's JSON, numbers with their exact digits,
with our ``meta.versionId`` and ``meta.lastUpdated``), never the internal metadata. Streaming:
one resource in memory at a time; each file is written under a temporary name and renamed when
complete, so a reader never sees half a type.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from dropzone.errors import UsageError
from dropzone.store.base import ResourceStore
from processors import fhir_json
from processors.fhir_common import RESOURCE_TYPE


@dataclass(frozen=True, slots=True)
class ExportedType:
    resource_type: str
    path: Path
    count: int


def normalise_since(value: str) -> str:
    """An ISO 8601 date or time as the store's timestamp text (UTC, milliseconds, ``Z``), so
    it compares as text. A date alone means its midnight UTC; a time without zone means UTC."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise UsageError(
            f"--since {value!r} is not an ISO 8601 date or time (e.g. 2026-11-30T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def export_ndjson(
    resources: ResourceStore,
    tenant: str,
    out_dir: Path,
    types: Iterable[str] | None = None,
    since: str | None = None,
    on_resource: Callable[[str], None] | None = None,
) -> list[ExportedType]:
    """Write the tenant's resources (``types``, default every stored type) under ``out_dir``.
    Types with nothing to export get no file. ``since`` is a store timestamp (normalise_since)."""
    chosen = sorted(set(types)) if types else sorted(resources.tenant_counts([tenant]).get(tenant, {}))
    for rtype in chosen:
        if not RESOURCE_TYPE.match(rtype):
            raise UsageError(f"--type {rtype!r} is not a FHIR resourceType name")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for rtype in chosen:
        final = out_dir / f"{rtype}.ndjson"
        partial = out_dir / f".{rtype}.ndjson.partial"
        count = 0
        try:
            with partial.open("wb") as out:
                for resource in resources.iter_resources(tenant, rtype, since):
                    out.write(fhir_json.dumps(resource) + b"\n")
                    count += 1
                    if on_resource is not None:
                        on_resource(rtype)
            if count:
                os.replace(partial, final)
                written.append(ExportedType(rtype, final, count))
        finally:
            partial.unlink(missing_ok=True)
    return written
