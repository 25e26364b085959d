"""FHIR search on the SQLite store: each condition is an indexed subquery on ``search_keys``,
``search_dates`` or ``identifiers``; pages are keyset pages on ``resources`` (by id, or by
``last_ingested`` then id through ``resources_updated``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from dropzone.search.query import (
    AnyKey,
    Condition,
    DateCondition,
    IdCondition,
    IdentifierCondition,
    SearchQuery,
)

Read = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]

_DATE_SQL = {
    "eq": "low >= ? AND high <= ?",
    "ne": "NOT (low >= ? AND high <= ?)",
    "gt": "high > ?",
    "lt": "low < ?",
    "ge": "high >= ?",
    "le": "low <= ?",
    "sa": "low > ?",
    "eb": "high < ?",
}


def _date_args(condition: DateCondition) -> list[str]:
    if condition.prefix in ("eq", "ne"):
        return [condition.qlow, condition.qhigh]
    if condition.prefix in ("gt", "le", "sa"):
        return [condition.qhigh]
    return [condition.qlow]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def condition_sql(tenant: str, rtype: str, condition: Condition) -> tuple[str, list[Any]]:
    if isinstance(condition, IdCondition):
        return f"id IN ({_marks(len(condition.ids))})", list(condition.ids)
    if isinstance(condition, AnyKey):
        return (
            f"id IN (SELECT id FROM search_keys WHERE tenant = ? AND key IN ({_marks(len(condition.keys))}) "
            "AND type = ?)",
            [tenant, *condition.keys, rtype],
        )
    if isinstance(condition, IdentifierCondition):
        alternatives, args = [], []
        for system, value in condition.values:
            if system is None:
                alternatives.append("value = ?")
                args.append(value)
            else:
                alternatives.append("(value = ? AND system = ?)")
                args += [value, system]
        either = " OR ".join(alternatives)
        return (
            f"id IN (SELECT id FROM identifiers WHERE tenant = ? AND type = ? AND ({either}))",
            [tenant, rtype, *args],
        )
    compare = _DATE_SQL[condition.prefix]
    if condition.param == "_lastUpdated":
        # The store's timestamp is one instant: its range is [t, t].
        return f"({compare.replace('low', 'last_ingested').replace('high', 'last_ingested')})", _date_args(
            condition
        )
    return (
        f"id IN (SELECT id FROM search_dates WHERE tenant = ? AND type = ? AND param = ? AND {compare})",
        [tenant, rtype, condition.param, *_date_args(condition)],
    )


def search(read: Read, tenant: str, query: SearchQuery) -> tuple[list[tuple[Any, ...]], int]:
    """(rows of (id, version, last_ingested, body), up to count + 1 of them; the total)."""
    where = ["tenant = ?", "type = ?"]
    args: list[Any] = [tenant, query.rtype]
    for condition in query.conditions:
        sql, more = condition_sql(tenant, query.rtype, condition)
        where.append(sql)
        args += more
    total = read(f"SELECT count(*) FROM resources WHERE {' AND '.join(where)}", args)[0][0]
    order = "last_ingested, id" if query.sort == "_lastUpdated" else "id"
    if query.after is not None:
        if query.sort == "_lastUpdated":
            where.append("(last_ingested, id) > (?, ?)")
        else:
            where.append("id > ?")
        args += list(query.after)
    rows = read(
        f"SELECT id, version, last_ingested, body FROM resources WHERE {' AND '.join(where)} "
        f"ORDER BY {order} LIMIT ?",
        [*args, query.count + 1],
    )
    return rows, total
