"""A ``SearchQuery`` evaluated on one document's index rows: the memory store's search, and
the definition the SQL and MongoDB translations must agree with (the store contract tests
run the same searches on all three)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dropzone.search.query import (
    AnyKey,
    DateCondition,
    IdCondition,
    IdentifierCondition,
    SearchQuery,
    date_matches,
)


def matches(
    query: SearchQuery,
    rid: str,
    last_updated: str,
    keys: Iterable[str],
    dates: Sequence[tuple[str, str, str]],
    identifiers: Sequence[tuple[str, str]],
) -> bool:
    """``identifiers``: (value, system or "")."""
    key_set = set(keys)
    for condition in query.conditions:
        if isinstance(condition, IdCondition):
            ok = rid in condition.ids
        elif isinstance(condition, AnyKey):
            ok = not key_set.isdisjoint(condition.keys)
        elif isinstance(condition, IdentifierCondition):
            ok = any(
                value == v and (system is None or system == s)
                for system, value in condition.values
                for v, s in identifiers
            )
        elif isinstance(condition, DateCondition):
            spans = (
                [(last_updated, last_updated)]
                if condition.param == "_lastUpdated"
                else [(low, high) for param, low, high in dates if param == condition.param]
            )
            ok = any(
                date_matches(condition.prefix, lo, hi, condition.qlow, condition.qhigh) for lo, hi in spans
            )
        else:  # pragma: no cover - the union is closed
            raise TypeError(condition)
        if not ok:
            return False
    return True
