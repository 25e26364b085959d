"""Typed access to one CSV row's fields, collecting problems instead of raising.

Every problem names the column and the kind of problem, never the value (values can be PHI).
"""

from __future__ import annotations

import functools
import re
from datetime import date
from decimal import Decimal

from processors.base import Issue

_INT = re.compile(r"^[+-]?\d+$")
# Plain decimal notation only: no exponents, no NaN/Infinity, no thousands separators.
_DECIMAL = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)$")


class RowValues:
    """Field access by column name for one row; problems accumulate in ``issues``."""

    __slots__ = ("_fields", "_index", "issues")

    def __init__(self, index: dict[str, int], fields: list[str]) -> None:
        self._index = index
        self._fields = fields
        self.issues: list[Issue] = []

    @property
    def fields(self) -> list[str]:
        return self._fields

    def problem(self, code: str, column: str | None, message: str) -> None:
        self.issues.append(Issue(code, message, column))

    def text(self, column: str) -> str | None:
        """The trimmed value; an empty field is None (absent), never ''."""
        value = self._fields[self._index[column]].strip()
        return value or None

    def required(self, column: str) -> str | None:
        value = self.text(column)
        if value is None:
            self.problem("missing_value", column, f"{column} is required but empty")
        return value

    def date(self, column: str) -> str | None:
        """YYYYMMDD -> YYYY-MM-DD; an impossible date is a problem."""
        value = self.text(column)
        if value is None:
            return None
        parsed = parse_yyyymmdd(value)
        if parsed is None:
            self.problem("invalid_date", column, f"{column} is not a valid date (expected YYYYMMDD)")
            return None
        return parsed.isoformat()

    def amount(self, column: str) -> Decimal | None:
        """A decimal amount with the digits of the CSV text (``80.00`` stays 80.00: FHIR
        decimals keep their precision); ``fhir_json.number`` makes it a JSON number. Junk is
        rejected rather than rounded."""
        value = self.text(column)
        if value is None:
            return None
        number = parse_decimal(value)
        if number is None:
            self.problem("invalid_number", column, f"{column} is not a number")
            return None
        return number

    def integer(self, column: str, minimum: int | None = None, maximum: int | None = None) -> int | None:
        value = self.text(column)
        if value is None:
            return None
        number = parse_integer(value)
        if (
            number is None
            or (minimum is not None and number < minimum)
            or (maximum is not None and number > maximum)
        ):
            bounds = (
                f" between {minimum} and {maximum}" if minimum is not None and maximum is not None else ""
            )
            self.problem("invalid_integer", column, f"{column} is not a whole number{bounds}")
            return None
        return number


def parse_yyyymmdd(value: str) -> date | None:
    if len(value) != 8 or not value.isdigit():
        return None
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:  # 20090231 and friends
        return None


@functools.lru_cache(maxsize=8192)
def parse_decimal(value: str) -> Decimal | None:
    """Cached by text (a Decimal is immutable): claims repeat a few hundred amounts across
    thousands of rows, and each amount is read by the row check and again by the mapping."""
    if not _DECIMAL.match(value):
        return None
    # More significant digits than any claims amount has; also what a consumer reading JSON
    # numbers as doubles keeps.
    digits = value.lstrip("+-").replace(".", "").lstrip("0")
    if len(digits) > 15:
        return None
    return Decimal(value)


def parse_integer(value: str) -> int | None:
    """Whole numbers; '30.000' counts (SynPUF writes some counts with decimals)."""
    if _INT.match(value):
        return int(value)
    number = parse_decimal(value)
    if number is not None and number == number.to_integral_value():
        return int(number)
    return None
