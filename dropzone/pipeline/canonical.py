"""Canonical form and hash of a resource: what decides 'unchanged' vs 'new version'.

Numbers are written with their exact digits (``fhir_json``), so ``80.00`` and ``80.0`` are
different content, and a resource hashes the same from every file format."""

from __future__ import annotations

import hashlib
from typing import Any

from processors import fhir_json

# Server-assigned on store: they must not make identical content look changed.
_SERVER_META = ("versionId", "lastUpdated")


def canonical_bytes(resource: dict[str, Any]) -> bytes:
    meta = resource.get("meta")
    if isinstance(meta, dict) and any(k in meta for k in _SERVER_META):
        trimmed = {k: v for k, v in meta.items() if k not in _SERVER_META}
        resource = {k: v for k, v in resource.items() if k != "meta"}
        if trimmed:
            resource["meta"] = trimmed
    return fhir_json.dumps(resource, sort_keys=True)


def resource_hash(resource: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_bytes(resource)).hexdigest()
