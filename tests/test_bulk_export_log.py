"""A Bulk Data export folder as partners hand it over: its log.ndjson is recognised and kept,
not quarantined as FHIR without a resourceType (issue: README's first ingest exited 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from conftest import BULK, drop, line_count
from dropzone.models import Outcome
from dropzone.store.memory import MemoryStore


def test_the_whole_export_folder_ends_archived_with_the_log_loading_nothing(
    zone: Path, make_pipeline: Any
) -> None:
    files = sorted(BULK.glob("*.ndjson"))
    assert "log.ndjson" in [p.name for p in files]
    drop(zone, "acme", *files)
    store = MemoryStore()
    results = {r.name: r for r in make_pipeline(store).drain()}
    assert {r.outcome for r in results.values()} == {Outcome.ARCHIVED}
    log = results["log.ndjson"]
    assert log.processor == "bulk-export-log" and log.counts.as_dict() == {
        "read": 0,
        "loaded": 0,
        "unchanged": 0,
        "rejected": 0,
    }
    assert list((zone / "archived" / "acme").rglob("log.ndjson"))  # kept for the record
    resources = sum(line_count(p) for p in files if p.name != "log.ndjson")
    assert sum(store.resources.counts(["acme"]).values()) == resources


def test_a_resource_inside_an_export_log_is_not_passed_over(
    zone: Path, tmp_path: Path, make_pipeline: Any
) -> None:
    lines = (BULK / "log.ndjson").read_bytes().splitlines()
    patient = (BULK / "Patient.000.ndjson").read_bytes().splitlines()[0]
    odd = tmp_path / "log.ndjson"
    odd.write_bytes(b"\n".join([lines[0], patient, *lines[1:]]) + b"\n")
    drop(zone, "acme", odd)
    (result,) = make_pipeline().drain()
    assert result.outcome is Outcome.QUARANTINED and result.counts.rejected == 1
    report = orjson.loads((zone / result.report).read_bytes())
    (item,) = report["rejected_records"]
    assert item["location"] == "line 2" and item["errors"][0]["code"] == "not_an_export_event"


def test_ndjson_that_only_looks_like_a_log_further_down_is_fhir(
    zone: Path, tmp_path: Path, make_pipeline: Any
) -> None:
    """Recognition is by the first line: a FHIR file with an event line later stays FHIR."""
    lines = (BULK / "Patient.000.ndjson").read_bytes().splitlines()[:3]
    event = (BULK / "log.ndjson").read_bytes().splitlines()[0]
    mixed = tmp_path / "patients.ndjson"
    mixed.write_bytes(b"\n".join([*lines, event]) + b"\n")
    drop(zone, "acme", mixed)
    (result,) = make_pipeline().drain()
    assert result.processor == "fhir-ndjson" and result.outcome is Outcome.PARTIAL
    assert (result.counts.loaded, result.counts.rejected) == (3, 1)
