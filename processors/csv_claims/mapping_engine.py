"""Apply a ``CsvMapping`` to CSV rows: type conversion, lookups, templates, ids, paths."""

from __future__ import annotations

import copy
import re
import uuid
import zoneinfo
from datetime import date, datetime
from typing import Any

from processors import fhir_json
from processors.base import Issue
from processors.csv_claims.mapping_schema import CsvMapping, ElementSpec, Token, parse_path, template_fields
from processors.csv_claims.values import parse_decimal, parse_integer

FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_CODE = re.compile(r"^\S+( \S+)*$")
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}
DEFAULT_DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d")
# uuid5 ids: one namespace for every mapping; the mapping name and resource type are part of the name.
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:dropzone:csv-mapping")


class ConversionError(ValueError):
    """The value cannot be converted; the message names the expected form, never the value."""


def convert(value: str, kind: str, formats: list[str] | None, zone: zoneinfo.ZoneInfo) -> Any:
    if kind in ("string",):
        return value
    if kind == "code":
        if not _CODE.match(value):
            raise ConversionError("is not a valid code (no leading, trailing or double spaces)")
        return value
    if kind == "id":
        if not FHIR_ID.match(value):
            raise ConversionError("is not a valid FHIR id (letters, digits, '-' and '.', at most 64)")
        return value
    if kind == "uri":
        if any(c.isspace() for c in value):
            raise ConversionError("is not a valid URI (contains spaces)")
        return value
    if kind == "integer":
        number = parse_integer(value)
        if number is None:
            raise ConversionError("is not a whole number")
        return number
    if kind == "decimal":
        decimal = parse_decimal(value)
        if decimal is None:
            raise ConversionError("is not a decimal number")
        return fhir_json.number(decimal)  # exact: "80.00" stays 80.00
    if kind == "boolean":
        folded = value.casefold()
        if folded in _TRUE:
            return True
        if folded in _FALSE:
            return False
        raise ConversionError("is not a boolean (true/false, yes/no, 1/0)")
    if kind == "date":
        return _date(value, formats)
    if kind == "datetime":
        return _datetime(value, formats, zone)
    raise ConversionError(f"has an unknown type {kind}")


def _date(value: str, formats: list[str] | None) -> str:
    for fmt in formats or DEFAULT_DATE_FORMATS:
        try:
            return datetime.strptime(value, fmt).date().isoformat()
        except ValueError:
            continue
    raise ConversionError(f"is not a valid date (expected {' or '.join(formats or DEFAULT_DATE_FORMATS)})")


def _datetime(value: str, formats: list[str] | None, zone: zoneinfo.ZoneInfo) -> str:
    parsed: datetime | date | None = None
    if formats:
        for fmt in formats:
            try:
                parsed = datetime.strptime(value, fmt)
                break
            except ValueError:
                continue
    else:
        try:
            parsed = datetime.fromisoformat(value)
            if len(value) == 10:  # a bare date is a valid FHIR dateTime: keep it a date
                parsed = parsed.date()
        except ValueError:
            parsed = None
    if parsed is None:
        expected = " or ".join(formats) if formats else "ISO 8601"
        raise ConversionError(f"is not a valid date-time (expected {expected})")
    if isinstance(parsed, datetime):
        if parsed.tzinfo is None:  # FHIR requires an offset once there is a time
            parsed = parsed.replace(tzinfo=zone)
        return parsed.isoformat()
    return parsed.isoformat()


class MappingEngine:
    """A loaded mapping bound to one header."""

    def __init__(self, mapping: CsvMapping, header: list[str]) -> None:
        self.mapping = mapping
        key = mapping.match.key
        self._index: dict[str, int] = {}
        for position, name in enumerate(header):
            self._index.setdefault(key(name), position)
        self._key = key
        self._nulls = {v.strip() for v in mapping.null_values} | {""}
        self._zone = zoneinfo.ZoneInfo(mapping.timezone)
        self._lookups = {name: mapping.lookup_table(name) for name in mapping.lookups}
        self._resources = [
            (
                spec,
                [(path, parse_path(path), element) for path, element in spec.elements.items()],
            )
            for spec in mapping.resources
        ]

    def value(self, fields: list[str], column: str) -> str | None:
        position = self._index.get(self._key(column))
        if position is None:
            return None
        text = fields[position].strip()
        return None if text in self._nulls else text

    def render(self, fields: list[str], template: str) -> tuple[str | None, list[str]]:
        """The template filled in, or None and the names of the empty columns it needs."""
        values = {}
        empty = []
        for name in template_fields(template):
            value = self.value(fields, name)
            if value is None:
                empty.append(name)
            values[name] = value
        if empty:
            return None, empty
        return template.format(**values), []

    def apply(self, fields: list[str]) -> tuple[list[dict[str, Any]], list[Issue]]:
        resources: list[dict[str, Any]] = []
        issues: list[Issue] = []
        for spec, elements in self._resources:
            rid = self._id(fields, spec.resource_type, spec.id, issues)
            resource: dict[str, Any] = {"resourceType": spec.resource_type, "id": rid}
            for path, tokens, element in elements:
                value = self._element(fields, path, element, issues)
                if value is not None:
                    set_path(resource, tokens, value)
            resources.append(prune(resource))
        return resources, issues

    def _id(self, fields: list[str], rtype: str, rule: Any, issues: list[Issue]) -> str | None:
        text, empty = self.render(fields, rule.text)
        if text is None:
            for name in empty:
                issues.append(
                    Issue("missing_value", f"{name} is needed for the {rtype} id but is empty", name)
                )
            return None
        if rule.uuid5 is not None:
            return str(uuid.uuid5(ID_NAMESPACE, f"{self.mapping.name}|{rtype}|{text}"))
        if not FHIR_ID.match(text):
            issues.append(
                Issue(
                    "invalid_id",
                    f"the {rtype} id from the template is not a valid FHIR id "
                    "(letters, digits, '-' and '.', at most 64; use uuid5 for other ids)",
                    ",".join(template_fields(rule.text)) or None,
                )
            )
            return None
        return text

    def _element(self, fields: list[str], path: str, element: ElementSpec, issues: list[Issue]) -> Any:
        if "value" in element.model_fields_set:
            return copy.deepcopy(element.value)
        source = element.column or ",".join(template_fields(element.template or ""))
        if element.column is not None:
            raw = self.value(fields, element.column)
        else:
            raw, _ = self.render(fields, element.template or "")
        if raw is None:
            if element.default is not None:
                return copy.deepcopy(element.default)
            if element.required:
                issues.append(Issue("missing_value", f"{source} is required for {path} but is empty", source))
            return None
        value: Any = raw
        if element.lookup is not None:
            table = self._lookups[element.lookup]
            folded = raw.strip().casefold()
            if folded in table:
                value = copy.deepcopy(table[folded])
            elif element.on_unknown == "omit":
                return None
            elif element.on_unknown == "reject":
                issues.append(
                    Issue(
                        "unknown_code",
                        f"{source} has a value that is not in lookup '{element.lookup}'",
                        source,
                    )
                )
                return None
        if isinstance(value, str):
            try:
                value = convert(value, element.type, element.formats, self._zone)
            except ConversionError as err:
                issues.append(Issue("invalid_value", f"{source} {err} (for {path})", source))
                return None
        return value


def set_path(resource: dict[str, Any], tokens: list[Token], value: Any) -> None:
    node: Any = resource
    for position, (name, index) in enumerate(tokens):
        last = position == len(tokens) - 1
        if index is None:
            if last:
                node[name] = value
            else:
                node = node.setdefault(name, {})
            continue
        items = node.setdefault(name, [])
        while len(items) <= index:
            items.append({} if not last else None)
        if last:
            items[index] = value
        else:
            if items[index] is None:
                items[index] = {}
            node = items[index]


def prune(value: Any) -> Any:
    """Drop empty objects, lists and holes, so an element whose source was empty leaves no trace
    (and ``identifier[1]`` moves up when ``identifier[0]`` had nothing)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            item = prune(item)
            if item not in (None, {}, []):
                out[key] = item
        return out
    if isinstance(value, list):
        kept = [prune(item) for item in value]
        return [item for item in kept if item not in (None, {}, [])]
    return value


# -- load-time FHIR check -------------------------------------------------------------------------

_SAMPLES: dict[str, Any] = {
    "string": "text",
    "code": "code",
    "id": "id-1",
    "uri": "urn:example:x",
    "integer": 1,
    "decimal": 1.5,
    "boolean": True,
    "date": "2020-01-31",
    "datetime": "2020-01-31T10:00:00+00:00",
}


# Findings about the placeholder values themselves, not about the mapping's structure.
_SAMPLE_VALUE_CODES = frozenset(
    {"code_not_in_value_set", "invalid_value", "invalid_reference_target", "out_of_range"}
)


def fhir_check(mapping: CsvMapping) -> list[str]:
    """Build each resource from sample values and validate it against FHIR R4; report the
    element paths the structure rejects (misspelt elements, wrong shapes, bad constants). Codes
    and patterns are left to the rows: the sample values are placeholders."""
    from dropzone.validation import validate_resource

    problems = []
    for r_pos, spec in enumerate(mapping.resources):
        resource: dict[str, Any] = {"resourceType": spec.resource_type, "id": "sample-id"}
        for path, element in spec.elements.items():
            if "value" in element.model_fields_set:
                value = copy.deepcopy(element.value)
            elif element.lookup is not None and mapping.lookups.get(element.lookup):
                value = copy.deepcopy(next(iter(mapping.lookups[element.lookup].values())))
                if isinstance(value, str) and element.type != "string":
                    value = _SAMPLES[element.type]
            else:
                value = _SAMPLES[element.type]
            set_path(resource, parse_path(path), value)
        for issue in validate_resource(prune(resource)):
            if issue.code not in _SAMPLE_VALUE_CODES:
                where = (issue.path or "").removeprefix(f"{spec.resource_type}.")
                problems.append(
                    f"resources[{r_pos}] ({spec.resource_type}) element '{where}': {issue.message}"
                )
    return problems
