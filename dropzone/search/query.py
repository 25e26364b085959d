"""FHIR search parameters -> a ``SearchQuery`` every store can run from its indexes.

Supported, for every resource type (R4 definitions, ``table``): ``_id``, ``_lastUpdated``,
``identifier``, the type's ``code`` and ``status`` tokens, its date parameters (``date``,
``birthdate``, ``period``, ``authoredon``, ...; prefixes ``eq ne gt lt ge le sa eb``), its
reference parameters (``patient``, ``subject``, ``encounter``, ...), ``_count`` (default 50,
max 1000) and ``_sort`` (``_id`` or ``_lastUpdated``). A comma means OR within a parameter;
repeating a parameter means AND. Anything else is refused (FHIR's strict handling): a search
never silently ignores a filter and never turns into a full scan.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from dropzone.search.dates import HIGHEST, LOWEST, date_range
from dropzone.search.index import BUNDLE_CHAINS, REF_PREFIX
from dropzone.search.table import search_table

DEFAULT_COUNT = 50
MAX_COUNT = 1000
DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
_RESULT_PARAMS = ("_count", "_sort", "_cursor", "_format")


class SearchError(ValueError):
    """A search the server refuses; the message names the parameter, never a value."""

    def __init__(self, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True, slots=True)
class AnyKey:
    """The resource has at least one of these index keys."""

    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DateCondition:
    """One of the resource's ``param`` ranges [low, high] compares to [qlow, qhigh] per prefix."""

    param: str  # "_lastUpdated" compares the store's own timestamp
    prefix: str
    qlow: str
    qhigh: str


@dataclass(frozen=True, slots=True)
class IdentifierCondition:
    """Any of (system or None for any system, value)."""

    values: tuple[tuple[str | None, str], ...]


@dataclass(frozen=True, slots=True)
class IdCondition:
    ids: tuple[str, ...]


Condition = AnyKey | DateCondition | IdentifierCondition | IdCondition


@dataclass(frozen=True, slots=True)
class SearchQuery:
    rtype: str
    conditions: tuple[Condition, ...] = ()
    sort: str = "_id"  # or "_lastUpdated"
    count: int = DEFAULT_COUNT
    after: tuple[str, ...] | None = None  # keyset: the sort key of the last entry already sent


@dataclass(slots=True)
class SearchPage:
    resources: list[dict[str, object]]
    total: int
    after: tuple[str, ...] | None = None  # set when there is a next page
    extra: dict[str, object] = field(default_factory=dict)


def date_matches(prefix: str, low: str, high: str, qlow: str, qhigh: str) -> bool:
    """FHIR R4 date comparison of a stored range with a search range (stores without SQL)."""
    if prefix == "eq":
        return low >= qlow and high <= qhigh
    if prefix == "ne":
        return not (low >= qlow and high <= qhigh)
    if prefix == "gt":
        return high > qhigh
    if prefix == "lt":
        return low < qlow
    if prefix == "ge":
        return high >= qlow
    if prefix == "le":
        return low <= qhigh
    if prefix == "sa":
        return low > qhigh
    return high < qlow  # eb


def encode_cursor(key: tuple[str, ...]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[str, ...]:
    try:
        key = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise SearchError("_cursor is not a cursor this server issued", "_cursor") from None
    if not isinstance(key, list) or not all(isinstance(k, str) for k in key) or not 1 <= len(key) <= 3:
        raise SearchError("_cursor is not a cursor this server issued", "_cursor")
    return tuple(key)


def _date_condition(param: str, raw: str) -> DateCondition:
    prefix, value = ("eq", raw)
    if raw[:2] in DATE_PREFIXES and not raw[:2].isdigit():
        prefix, value = raw[:2], raw[2:]
    span = date_range(value)
    if span is None:
        raise SearchError(f"{param}: not a FHIR date, dateTime or instant (with an optional prefix)", param)
    return DateCondition(param, prefix, span[0], span[1])


def _split(raw: str) -> list[str]:
    """Comma-separated alternatives; ``\\,`` is a literal comma (FHIR escaping)."""
    parts, current, escaped = [], "", False
    for char in raw:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    if any(not p for p in parts):
        raise SearchError("empty value in a comma-separated list")
    return parts


def _token(param: str, value: str) -> str:
    if "|" not in value:
        return f"{param}=*|{value}"
    system, code = value.split("|", 1)
    if not code:
        raise SearchError(f"{param}: give code, system|code or |code (not system| alone)", param)
    return f"{param}={system}|{code}"


def _references(rtype: str, param: str, value: str) -> tuple[str, ...]:
    ref = search_table().params(rtype).references[param]
    if "/" in value:
        target = value.split("/", 1)[0]
        if ref.targets and target not in ref.targets:
            raise SearchError(f"{param}: this parameter does not refer to that resource type", param)
        refs = [value]
    else:
        refs = [f"{t}/{value}" for t in ref.targets] or [value]
    return tuple(f"{REF_PREFIX}{path}|{r}" for path in ref.paths for r in refs)


def supported_parameters(rtype: str) -> dict[str, str]:
    """name -> FHIR search parameter type, for ``/metadata``."""
    params = search_table().params(rtype)
    out = {"_id": "token", "_lastUpdated": "date", "identifier": "token"}
    out.update({p: "token" for p in params.tokens})
    out.update({p: "date" for p in params.dates})
    out.update({p: "reference" for p in params.references})
    if rtype == "Bundle":
        out.update({p: "reference" for p in BUNDLE_CHAINS})
    return dict(sorted(out.items()))


def _bundle_chain(name: str, values: list[str]) -> AnyKey:
    """``composition=Composition/id`` or ``composition.<param>=...`` (and ``message``): the first
    entry of a document or message Bundle, indexed under the Bundle (``index.chain_keys``)."""
    head, _, inner = name.partition(".")
    rtype = BUNDLE_CHAINS[head][1]
    if not inner:
        ids = [v.split("/", 1)[1] if v.startswith(f"{rtype}/") else v for v in values]
        if any("/" in i for i in ids):
            raise SearchError(f"{head}: this parameter refers to {rtype} only", name)
        return AnyKey(tuple(f"{head}={rtype}/{i}" for i in ids))
    params = search_table().params(rtype)
    if inner in params.tokens:
        return AnyKey(tuple(f"{head}.{_token(inner, v)}" for v in values))
    if inner in params.references:
        return AnyKey(tuple(f"{head}.{k}" for v in values for k in _references(rtype, inner, v)))
    raise SearchError(f"{name}: chains on {head} support the token and reference parameters of {rtype}", name)


def parse_search(rtype: str, items: Iterable[tuple[str, str]]) -> SearchQuery:
    """``items``: the query string's (name, value) pairs, in order."""
    params = search_table().params(rtype)
    conditions: list[Condition] = []
    count, sort, after = DEFAULT_COUNT, "_id", None
    cursor: str | None = None
    for name, raw in items:
        if name in _RESULT_PARAMS:
            if name == "_count":
                if not raw.isdigit() or not 1 <= int(raw) <= MAX_COUNT:
                    raise SearchError(f"_count must be a whole number from 1 to {MAX_COUNT}", name)
                count = int(raw)
            elif name == "_sort":
                if raw not in ("_id", "_lastUpdated"):
                    raise SearchError("_sort supports _id and _lastUpdated (ascending)", name)
                sort = raw
            elif name == "_cursor":
                cursor = raw
            elif raw not in ("json", "application/fhir+json", "application/json"):
                raise SearchError("_format supports json only", name)
            continue
        if ":" in name:
            raise SearchError(f"search modifiers are not supported ({name.split(':', 1)[1]!r})", name)
        if raw == "":
            raise SearchError(f"{name}: empty value", name)
        values = _split(raw)
        if name == "_id":
            conditions.append(IdCondition(tuple(values)))
        elif name == "identifier":
            pairs: list[tuple[str | None, str]] = []
            for v in values:
                system, sep, value = v.rpartition("|") if "|" in v else (None, "", v)
                if not value:
                    raise SearchError("identifier: system| alone is not supported; give system|value", name)
                pairs.append((system if sep else None, value))
            conditions.append(IdentifierCondition(tuple(pairs)))
        elif rtype == "Bundle" and name.partition(".")[0] in BUNDLE_CHAINS:
            conditions.append(_bundle_chain(name, values))
        elif name in params.tokens:
            conditions.append(AnyKey(tuple(_token(name, v) for v in values)))
        elif name in params.references:
            conditions.append(AnyKey(tuple(k for v in values for k in _references(rtype, name, v))))
        elif name == "_lastUpdated" or name in params.dates:
            if len(values) > 1:
                raise SearchError(f"{name}: one date per parameter; repeat it for a range", name)
            conditions.append(_date_condition(name, values[0]))
        else:
            raise SearchError(f"unknown or unsupported search parameter for {rtype}: {name!r}", name)
    if cursor is not None:
        after = decode_cursor(cursor)
        if len(after) != (2 if sort == "_lastUpdated" else 1):
            raise SearchError("_cursor does not belong to this _sort", "_cursor")
    return SearchQuery(rtype, tuple(conditions), sort, count, after)


__all__ = [
    "HIGHEST",
    "LOWEST",
    "AnyKey",
    "DateCondition",
    "IdCondition",
    "IdentifierCondition",
    "SearchError",
    "SearchPage",
    "SearchQuery",
    "date_matches",
    "parse_search",
]
