"""The compiled R4 search-parameter table (``r4_search.json``, made by ``generate``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

TABLE_PATH = Path(__file__).with_name("r4_search.json")
# Leaf types a date parameter can be read from; a string (``occurrenceString``) or a Timing is not a date.
DATE_LEAVES = frozenset({"date", "dateTime", "instant", "Period"})


@dataclass(frozen=True, slots=True)
class ReferenceParam:
    paths: tuple[str, ...]
    targets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TypeParams:
    tokens: dict[str, tuple[str, ...]]  # param -> JSON paths
    dates: dict[str, tuple[tuple[str, str], ...]]  # param -> (JSON path, leaf type)
    references: dict[str, ReferenceParam]


@dataclass(frozen=True, slots=True)
class SearchTable:
    types: dict[str, TypeParams]
    compartment: dict[str, tuple[str, ...]]  # resourceType -> reference paths naming the patient

    def params(self, rtype: str) -> TypeParams:
        return self.types.get(rtype) or TypeParams({}, {}, {})

    def compartment_paths(self) -> frozenset[str]:
        return frozenset(p for paths in self.compartment.values() for p in paths)


@lru_cache(maxsize=1)
def search_table() -> SearchTable:
    data = json.loads(TABLE_PATH.read_text())
    types: dict[str, TypeParams] = {}
    for rtype, kinds in data["types"].items():
        types[rtype] = TypeParams(
            tokens={p: tuple(v["paths"]) for p, v in kinds.get("token", {}).items()},
            dates={
                p: tuple((path, v["leaves"][path]) for path in v["paths"] if v["leaves"][path] in DATE_LEAVES)
                for p, v in kinds.get("date", {}).items()
            },
            references={
                p: ReferenceParam(tuple(v["paths"]), tuple(v["targets"]))
                for p, v in kinds.get("reference", {}).items()
            },
        )
    compartment = {rtype: tuple(paths) for rtype, paths in data["compartment"].items()}
    return SearchTable(types, compartment)
