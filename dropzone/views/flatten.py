"""Rows from one resource, by the SQL-on-FHIR v2 rules: a select's row is its columns combined
with every row of each nested select (a cross product) and of its unionAll branches (appended);
``forEach`` repeats the select for each item of its path (no item: no row), ``forEachOrNull``
gives one row of nulls instead. ``where`` entries must all be true for a resource to count.

Values keep their JSON text: a decimal the store handed back as ``JsonDecimal`` is written as
its exact digits, a float as the text it was read from (``fhir_json``'s number rule), never as a
binary float. Only ``boolean`` and integer-typed columns become typed values.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from dropzone.views.definition import Column, Select, ViewDefinition
from dropzone.views.errors import PathEvaluationError, ViewEvaluationError
from processors import fhir_json

Row = list[Any]


class _Problem(Exception):
    """A value that does not fit its column; carries the column for the caller's error."""

    def __init__(self, column: Column | None, path: str, problem: str) -> None:
        super().__init__(problem)
        self.column = column
        self.path = path
        self.problem = problem


def text_of(value: Any) -> str:
    """A primitive's JSON text. ``ValueError`` for an object or list (a complex element)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return fhir_json.dumps(value).decode()  # the number rule: the text it was read from
    if isinstance(value, Decimal):
        return fhir_json.decimal_text(value)
    raise ValueError("a complex element, not a primitive (add the element to read, e.g. .code or .value)")


def _value(column: Column, value: Any) -> Any:
    if column.kind == "boolean":
        if not isinstance(value, bool):
            raise ValueError("a value that is not a boolean, in a boolean column")
        return value
    if column.kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("a value that is not an integer, in an integer column")
        if not -(2**63) <= value < 2**63:
            raise ValueError("an integer beyond 64 bits, in an integer column")
        return value
    return text_of(value)


def _column(column: Column, node: Any) -> Any:
    try:
        found = column.evaluate([node])
        if column.collection:
            return [_value(column, v) for v in found]
        if not found:
            return None
        if len(found) > 1:
            raise ValueError(f"{len(found)} values where one was expected (use first() or collection: true)")
        return _value(column, found[0])
    except (ValueError, PathEvaluationError) as err:
        raise _Problem(column, column.path, str(err)) from None


def width(select: Select) -> int:
    return len(select.all_columns())


def _select_rows(select: Select, node: Any) -> list[Row]:
    if select.for_each is None:
        return _rows_at(select, node)
    try:
        items = select.for_each([node])
    except PathEvaluationError as err:
        raise _Problem(None, select.for_each_path or "", str(err)) from None
    if not items:
        return [[None] * width(select)] if select.or_null else []
    rows: list[Row] = []
    for item in items:
        rows.extend(_rows_at(select, item))
    return rows


def _rows_at(select: Select, node: Any) -> list[Row]:
    rows: list[Row] = [[_column(c, node) for c in select.columns]]
    for sub in select.selects:
        below = _select_rows(sub, node)
        rows = [left + right for left in rows for right in below]
        if not rows:
            return rows
    if select.union_all:
        branches: list[Row] = []
        for branch in select.union_all:
            branches.extend(_select_rows(branch, node))
        rows = [left + right for left in rows for right in branches]
    return rows


def _included(view: ViewDefinition, resource: dict[str, Any]) -> bool:
    for entry in view.where:
        try:
            result = entry.evaluate([resource])
        except PathEvaluationError as err:
            raise _Problem(None, entry.path, str(err)) from None
        if not result:
            return False
        if len(result) > 1 or not isinstance(result[0], bool):
            raise _Problem(None, entry.path, "a where path must give one boolean")
        if result[0] is not True:
            return False
    return True


def resource_rows(view: ViewDefinition, resource: dict[str, Any], ordinal: int) -> Iterator[Row]:
    """The view's rows for one resource (``ordinal``: its 1-based position, for errors)."""
    try:
        if not _included(view, resource):
            return
        rows = _select_rows(view.root, resource)
    except _Problem as problem:
        name = problem.column.name if problem.column is not None else "(where/forEach)"
        raise ViewEvaluationError(
            view.name, name, problem.path, view.resource, ordinal, problem.problem
        ) from None
    yield from rows
