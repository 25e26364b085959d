"""fhir.resources (R4B models) as a second FHIR validator: the differential test and the benchmark
compare it with ``dropzone.validation``. It is no longer the ingest validator: it coerces
(``"true"`` passes for a boolean), misses required bindings, empty arrays and objects, and is R4B
(4.3), not R4 (4.0.1); see README.

Messages are rebuilt from pydantic's structured errors without ``input`` and then scrubbed of any
string that occurs in the resource, because validator messages may quote the input.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from processors.base import Issue

_REDACTED = "[value]"


@functools.lru_cache(maxsize=256)
def _model(rtype: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(rtype)
    except (KeyError, ValueError, AttributeError, ImportError):
        return None


def validate_resource(resource: dict[str, Any]) -> list[Issue]:
    rtype = resource.get("resourceType")
    model = _model(rtype) if isinstance(rtype, str) else None
    if model is None:
        return [
            Issue(
                "unknown_resource_type", "not a FHIR R4 resource type known to the validator", "resourceType"
            )
        ]
    try:
        model.model_validate(resource)
    except ValidationError as err:
        return _issues_from(err, rtype, resource)
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        # fhir.resources raises KeyError for a contained resource of an unknown type.
        return [Issue("invalid_resource", _scrub(f"{err.__class__.__name__}", resource), rtype)]
    return []


def _issues_from(err: ValidationError, rtype: str, resource: dict[str, Any]) -> list[Issue]:
    issues = []
    for item in err.errors(include_input=False, include_url=False, include_context=False):
        path = rtype
        for part in item["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        issues.append(Issue(f"invalid.{item['type']}", _scrub(item["msg"], resource), path))
    return issues


def _scrub(message: str, resource: dict[str, Any]) -> str:
    """Replace any string value of the resource that appears in ``message`` (longest first)."""
    values = sorted({v for v in _strings(resource) if len(v) >= 2}, key=len, reverse=True)
    for value in values:
        if value in message:
            message = message.replace(value, _REDACTED)
    return message


def _strings(node: Any) -> Iterator[str]:
    """Every string (and number, as text) in the resource; iterative, so depth cannot overflow."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, int | float) and not isinstance(item, bool):
            yield str(item)
