"""Repeated keys in one JSON object: FHIR JSON forbids them ("there SHALL be no duplicate
properties" in an object, R4 JSON format), and orjson silently keeps the last one.

A full second parse per record to find them would cost more than parsing itself, so
``loads_noting_repeated_key`` compares instead: when orjson writes what it read back as the
text itself, up to whitespace between tokens (``fhir_json.loads_checked``), no key was dropped.
Compact NDJSON as exporters write it is usually orjson's own output byte for byte, and spaced
JSON (``": "``, indentation) equals it once whitespace is deleted from both. Otherwise (e.g. a
decimal ``80.00``, which orjson writes ``80.0``) the check counts: every key ends in ``"`` +
optional whitespace + ``:``, and a string value cannot hold a bare ``"``, so the raw text and
orjson's text hold the same number of such endings exactly when no key was dropped. Only when
the counts differ is the text parsed again, with the standard library, to name the key and rule
out the rare false alarm (a ``\\u0022`` escape before a colon inside a string).

Measured on the Synthea Bulk sample (2026-12-07, per resource): compact lines 0.8 us for the
check; the same lines spaced as ``json.dumps`` writes them 10.4 us with the counting scans
(plus 14 us for the number check of ``loads``), ~3 us with the comparison.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from typing import Any

from processors import fhir_json

_KEY_END = b'":'
_SPACED_KEY_END = re.compile(rb'"[ \t\r\n]*:')
_SPACE_BEFORE_COLON = re.compile(rb"[ \t\r\n]:")


class _Repeated(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def loads_noting_repeated_key(raw: bytes) -> tuple[Any, str | None]:
    """``fhir_json.loads(raw)``, and the first key that one object of ``raw`` repeats (None when
    none does). Malformed JSON raises ``fhir_json.JSONDecodeError``."""
    parsed, same_text = fhir_json.loads_checked(raw)
    return parsed, None if same_text else _counted_repeated_key(raw, parsed)


def _counted_repeated_key(raw: bytes, parsed: Any) -> str | None:
    """For text that orjson does not write back as it is: count key endings, and name the key
    only when the counts differ."""
    try:
        dumped = fhir_json.dumps(parsed)
    except (fhir_json.JSONEncodeError, RecursionError):
        # Nested deeper than orjson writes (255): rejected later as too deep.
        return _first_repeated(raw)
    if _SPACE_BEFORE_COLON.search(raw) is None:
        if raw.count(_KEY_END) == dumped.count(_KEY_END):
            return None
    elif len(_SPACED_KEY_END.findall(raw)) == dumped.count(_KEY_END):
        return None
    return _first_repeated(raw)


def _first_repeated(raw: bytes) -> str | None:
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise _Repeated(key)
            seen.add(key)
        return dict(pairs)

    try:
        json.loads(raw, object_pairs_hook=unique)
    except _Repeated as found:
        return found.key
    except (ValueError, RecursionError):
        return None  # orjson accepted it; the standard parser's limits are not our verdict
    return None


# -- streamed documents (Bundles through ijson) ---------------------------------------------------

_building = threading.local()


class KeyTrackingDict(dict):  # type: ignore[type-arg]
    """The mapping ijson builds objects with under ``items_noting_repeated_keys``: a key set
    twice while ijson builds is noted with its object. Outside ijson's ``next()`` (when callers
    modify an item) nothing is noted. ~50% more Bundle parse time, nothing next to validation."""

    __slots__ = ()

    def __setitem__(self, key: str, value: Any) -> None:
        noted = getattr(_building, "noted", None)
        if noted is not None and key in self:
            noted.append((self, key))
        dict.__setitem__(self, key, value)


def items_noting_repeated_keys(items: Iterator[Any]) -> Iterator[tuple[Any, list[str]]]:
    """``(item, keys repeated inside it)`` for each item of ``ijson.items(...,
    map_type=KeyTrackingDict)``. ijson's C backend builds items ahead of the one it returns, so
    a noted object is given to the item that contains it (looked up only when something was
    noted)."""
    pending: list[tuple[dict[str, Any], str]] = []
    iterator = iter(items)
    while True:
        _building.noted = pending
        try:
            item = next(iterator)
        except StopIteration:
            return
        finally:
            _building.noted = None
        repeated: list[str] = []
        if pending:
            inside = _containers(item)
            repeated = [key for obj, key in pending if id(obj) in inside]
            pending[:] = [(obj, key) for obj, key in pending if id(obj) not in inside]
        yield item, repeated


def _containers(node: Any) -> set[int]:
    found: set[int] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            found.add(id(current))
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return found
