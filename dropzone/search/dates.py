"""FHIR dates as ranges of instants, for date search.

Every FHIR date, dateTime or instant is an interval at its precision (``2020`` is the whole year,
``2020-03-01`` the whole day, a time to the second that second). Both ends are kept as UTC text
``YYYY-MM-DDTHH:MM:SS.mmmZ``: fixed width, so text order is time order, in SQLite and MongoDB
alike, and the same form as the store's ``meta.lastUpdated``. A value without a time zone (a
date, or a search value without one) is read as UTC.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache

LOWEST = "0001-01-01T00:00:00.000Z"
HIGHEST = "9999-12-31T23:59:59.999Z"
_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?(?P<z>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)

Range = tuple[str, str]


def _text(m: datetime) -> str:
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
        f".{m.microsecond // 1000:03d}Z"
    )


@lru_cache(maxsize=65_536)  # dates repeat within a file (onset = recorded, one encounter's times)
def date_range(value: str) -> Range | None:
    """The interval ``value`` stands for, or None when it is not a FHIR date/time."""
    match = _DATE.match(value)
    if match is None:
        return None
    try:
        year = int(match["y"])
        if match["m"] is None:
            return f"{year:04d}-01-01T00:00:00.000Z", f"{year:04d}-12-31T23:59:59.999Z"
        month = int(match["m"])
        if match["d"] is None:
            last = calendar.monthrange(year, month)[1]
            return (
                f"{year:04d}-{month:02d}-01T00:00:00.000Z",
                f"{year:04d}-{month:02d}-{last:02d}T23:59:59.999Z",
            )
        day = int(match["d"])
        if match["H"] is None:
            datetime(year, month, day)  # checks the day exists
            return (
                f"{year:04d}-{month:02d}-{day:02d}T00:00:00.000Z",
                f"{year:04d}-{month:02d}-{day:02d}T23:59:59.999Z",
            )
        zone = match["z"]
        start = datetime(year, month, day, int(match["H"]), int(match["M"]), int(match["S"] or 0))
        if zone and zone != "Z":
            sign = 1 if zone[0] == "+" else -1
            start -= sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        start = start.replace(tzinfo=UTC)
        if match["f"]:
            start = start.replace(microsecond=int(match["f"][:6].ljust(6, "0")))
            return _text(start), _text(start)
        width = timedelta(seconds=1) if match["S"] else timedelta(minutes=1)
        return _text(start), _text(start + width - timedelta(milliseconds=1))
    except (ValueError, OverflowError):
        return None


def period_range(period: dict[str, object]) -> Range | None:
    """A Period: from its start's low end to its end's high end; an open side is unbounded."""
    start, end = period.get("start"), period.get("end")
    low = date_range(start) if isinstance(start, str) else None
    high = date_range(end) if isinstance(end, str) else None
    if (isinstance(start, str) and low is None) or (isinstance(end, str) and high is None):
        return None
    if low is None and high is None:
        return None
    return (low[0] if low else LOWEST), (high[1] if high else HIGHEST)
