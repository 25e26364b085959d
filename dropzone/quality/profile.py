"""The data-quality profile of a set of resources (a file, a preview, a tenant).

Built from what the pipeline already computes for the search index (``SearchRows``: token keys
and date ranges, made in the pool workers), so profiling a file costs no second parse:

* resources per type, and per type the years its dates span (years only: a profile is shown to
  operators, and a full date next to an id is patient data);
* ``future_date``: a date after now, on types that do not plan the future (an Appointment or a
  MedicationRequest's validity may lie ahead; an Observation's effective time may not);
* ``end_before_start``: a Period whose end is before its start; ``death_before_birth``;
* code systems per element with the number of resources using each, and whether each is a
  known terminology (``dropzone.quality.systems``). From the index these are the elements that
  search by ``code``; ``add(..., resource=...)`` walks every Coding and Quantity instead.

Each finding carries a count and up to ``EXAMPLES`` resource ids, never a value or a code.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import Any

from dropzone.quality.systems import classify
from dropzone.search.dates import HIGHEST, LOWEST
from dropzone.search.index import SearchRows
from dropzone.search.table import search_table

EXAMPLES = 5
# Types whose dates may rightly lie ahead: schedules, orders, plans, coverage and contracts.
PLANNED_TYPES = frozenset(
    {
        "Appointment",
        "AppointmentResponse",
        "CarePlan",
        "Contract",
        "Coverage",
        "CoverageEligibilityRequest",
        "DeviceRequest",
        "Goal",
        "ImmunizationRecommendation",
        "MedicationRequest",
        "NutritionOrder",
        "Schedule",
        "ServiceRequest",
        "Slot",
        "Task",
        "VisionPrescription",
    }
)


def now_text() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclass(slots=True)
class Tally:
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, rid: str) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES and rid not in self.examples:
            self.examples.append(rid)


@cache  # pure: (type, parameter) -> path text, asked for per resource
def _date_path(rtype: str, param: str, periods_only: bool = False) -> str:
    leaves = search_table().params(rtype).dates.get(param, ())
    paths = [f"{rtype}.{path}" for path, leaf in leaves if not periods_only or leaf == "Period"]
    return " | ".join(paths) or f"{rtype}.{param}"


@cache
def _token_path(rtype: str, param: str) -> str:
    paths = search_table().params(rtype).tokens.get(param, ())
    return " | ".join(f"{rtype}.{p}" for p in paths) or f"{rtype}.{param}"


@lru_cache(maxsize=2**16)  # pure; a file repeats the same few codes in every resource
def _key_system(rtype: str, key: str) -> tuple[str, str] | None:
    """(element path, system) that a token key names, or None (no system, or any system)."""
    param, eq, rest = key.partition("=")
    system = rest.partition("|")[0]
    if not eq or not system or system == "*":
        return None
    return _token_path(rtype, param), system


class QualityProfile:
    """Accumulates the profile of resources added one at a time; ``as_json`` reports it."""

    def __init__(self, now: str | None = None) -> None:
        self.now = now or now_text()
        self.resources: dict[str, int] = defaultdict(int)
        self._years: dict[str, list[str]] = {}
        self._findings: dict[tuple[str, str, str], Tally] = defaultdict(Tally)
        self._systems: dict[tuple[str, str, str], Tally] = defaultdict(Tally)

    def add(self, rtype: str, rid: str, rows: SearchRows, resource: dict[str, Any] | None = None) -> None:
        self.resources[rtype] += 1
        keys, dates = rows
        birth_low = death_high = None
        for param, low, high in dates:
            self._year(rtype, low if low != LOWEST else None, high if high != HIGHEST else None)
            if low > high:
                self._findings[("end_before_start", rtype, _date_path(rtype, param, True))].add(rid)
            elif low > self.now and rtype not in PLANNED_TYPES:
                self._findings[("future_date", rtype, _date_path(rtype, param))].add(rid)
            if rtype == "Patient":
                if param == "birthdate":
                    birth_low = low
                elif param == "death-date":
                    death_high = high
        if birth_low is not None and death_high is not None and death_high < birth_low:
            self._findings[("death_before_birth", "Patient", "Patient.deceasedDateTime")].add(rid)
        if resource is not None:
            systems = _coding_systems(resource, rtype)
        else:
            systems = set()
            for key in keys:
                if key[:1] not in ">~" and (found := _key_system(rtype, key)) is not None:
                    systems.add(found)
        for path, system in systems:
            self._systems[(rtype, path, system)].add(rid)

    def _year(self, rtype: str, low: str | None, high: str | None) -> None:
        span = self._years.get(rtype)
        for text in (low, high):
            if text is None:
                continue
            year = text[:4]
            if span is None:
                span = self._years[rtype] = [year, year]
            elif year < span[0]:
                span[0] = year
            elif year > span[1]:
                span[1] = year

    def finding(self, check: str, rtype: str, path: str) -> Tally:
        """The tally of one finding, for checks made outside this class (identifiers...)."""
        return self._findings[(check, rtype, path)]

    def as_json(self) -> dict[str, Any]:
        systems = []
        findings: list[dict[str, Any]] = []
        for (rtype, path, system), tally in sorted(self._systems.items()):
            status = classify(system)
            systems.append(
                {
                    "resource_type": rtype,
                    "path": path,
                    "system": system,
                    "count": tally.count,
                    "status": status,
                    "known": status == "known",
                }
            )
            if status != "known":
                findings.append(
                    {
                        "check": f"{status}_code_system",
                        "resource_type": rtype,
                        "path": path,
                        "system": system,
                        "count": tally.count,
                        "example_ids": tally.examples,
                    }
                )
        for (check, rtype, path), tally in self._findings.items():
            findings.append(
                {
                    "check": check,
                    "resource_type": rtype,
                    "path": path,
                    "count": tally.count,
                    "example_ids": tally.examples,
                }
            )
        findings.sort(key=lambda f: (f["check"], f["resource_type"], f["path"], f.get("system", "")))
        return {
            "resources": dict(sorted(self.resources.items())),
            "total": sum(self.resources.values()),
            "date_ranges": {t: {"from": s[0], "to": s[1]} for t, s in sorted(self._years.items())},
            "code_systems": systems,
            "findings": findings,
        }


def _coding_systems(resource: dict[str, Any], rtype: str) -> set[tuple[str, str]]:
    """(element path, system) of every Coding or Quantity with a system and a code; paths have
    no array positions and name the CodeableConcept rather than its ``coding``; ``meta`` is
    skipped."""
    out: set[tuple[str, str]] = set()
    stack: list[tuple[Any, str]] = [(resource, rtype)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            system = node.get("system")
            if isinstance(system, str) and "code" in node:
                out.add((path.removesuffix(".coding"), system))
            for key, value in node.items():
                # meta.tag and meta.security are the sender's own labels, not terminology.
                if key != "meta" and isinstance(value, (dict, list)):
                    stack.append((value, f"{path}.{key}"))
        elif isinstance(node, list):
            stack.extend((item, path) for item in node)
    return out
