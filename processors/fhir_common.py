"""Checks shared by the FHIR processors: what a record must have before validation."""

from __future__ import annotations

import re
import uuid
from typing import Any

from processors.base import Issue

# FHIR R4 id datatype: [A-Za-z0-9\-\.]{1,64}
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
# Fixed namespace so ids made from (tenant, fullUrl) are the same on every machine and run.
DROPZONE_NAMESPACE = uuid.UUID("6f1c8a52-3f0e-5d7b-9d84-2f3e6c1b7a10")


def deterministic_id(tenant: str, *parts: str) -> str:
    return str(uuid.uuid5(DROPZONE_NAMESPACE, "|".join((tenant, *parts))))


def shape_issues(resource: Any, need_id: bool = True) -> list[Issue]:
    """Problems that stop a resource before validation (no value is echoed)."""
    if not isinstance(resource, dict):
        return [Issue("not_a_resource", "expected a JSON object with a resourceType")]
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not RESOURCE_TYPE.match(rtype):
        return [
            Issue("missing_resource_type", "resourceType is missing or not a FHIR type name", "resourceType")
        ]
    rid = resource.get("id")
    if rid is None and need_id:
        return [Issue("missing_id", "the resource has no id (needed to store and update it)", f"{rtype}.id")]
    if rid is not None and (not isinstance(rid, str) or not FHIR_ID.match(rid)):
        return [
            Issue("invalid_id", "id must be 1-64 characters of A-Z, a-z, 0-9, '-' and '.'", f"{rtype}.id")
        ]
    return []


def rewrite_references(node: Any, mapping: dict[str, str]) -> tuple[Any, int]:
    """Replace every ``reference`` whose value is a key of ``mapping``; returns (node, count)."""
    count = 0

    def walk(value: Any) -> Any:
        nonlocal count
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if key == "reference" and isinstance(item, str) and item in mapping:
                    out[key] = mapping[item]
                    count += 1
                else:
                    out[key] = walk(item)
            return out
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(node), count


def unresolved_uuid_references(node: Any, path: str = "") -> list[str]:
    """FHIR paths of ``urn:uuid:`` references left after rewriting (they point nowhere)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, item in node.items():
            here = f"{path}.{key}" if path else key
            if key == "reference" and isinstance(item, str) and item.startswith("urn:uuid:"):
                found.append(here)
            else:
                found.extend(unresolved_uuid_references(item, here))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found.extend(unresolved_uuid_references(item, f"{path}[{i}]"))
    return found


def repeated_key_issue(key: str) -> Issue:
    """A key name is a FHIR element name, not a value, so naming it reveals nothing."""
    shown = key if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}", key) else "(a key)"
    return Issue("duplicate_key", f"an object repeats the key {shown!r}; FHIR JSON forbids repeated keys")
