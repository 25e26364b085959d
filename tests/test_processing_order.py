"""Files ready at the same time: arrival order, except a Bulk Data export's reference targets
first (dropzone.pipeline.order)."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import BULK, PipelineFactory
from dropzone.models import IncomingFile, Outcome
from dropzone.pipeline.order import bulk_type, processing_order
from dropzone.search.references import reference_report
from dropzone.store.sqlite import SqliteStore


def _file(tenant: str, name: str, mtime: float) -> IncomingFile:
    return IncomingFile(tenant, name, 10, mtime)


def _names(files: list[IncomingFile]) -> list[str]:
    return [f"{f.tenant}:{f.name}" for f in files]


def test_a_bulk_export_goes_targets_first_and_files_of_one_type_keep_arrival_order() -> None:
    files = [
        _file("a", "Encounter.000.ndjson", 1),
        _file("a", "Practitioner.ndjson", 2),
        _file("a", "Organization.000.ndjson.gz", 3),
        _file("a", "Patient.001.ndjson", 4),
        _file("a", "Patient.000.ndjson", 5),
        _file("a", "Claim.ndjson", 6),
    ]
    assert _names(processing_order(files)) == [
        "a:Organization.000.ndjson.gz",
        "a:Practitioner.ndjson",
        "a:Patient.001.ndjson",  # arrived before Patient.000: it may be the older update
        "a:Patient.000.ndjson",
        "a:Encounter.000.ndjson",
        "a:Claim.ndjson",
    ]


def test_a_tenant_with_any_other_file_keeps_arrival_order_and_others_keep_their_places() -> None:
    files = [
        _file("a", "Encounter.ndjson", 1),
        _file("b", "Encounter.ndjson", 2),
        _file("a", "Organization.ndjson", 3),
        _file("b", "bundle.json", 4),  # b's files could hold anything: not reordered
        _file("b", "Organization.ndjson", 5),
    ]
    assert _names(processing_order(files)) == [
        "a:Organization.ndjson",  # a's two files swap within the places a's files had
        "b:Encounter.ndjson",
        "a:Encounter.ndjson",
        "b:bundle.json",
        "b:Organization.ndjson",
    ]
    assert bulk_type("Observation.ndjson") == "Observation"
    assert bulk_type("observations.ndjson") is None and bulk_type("Patient.json") is None


def test_a_synthea_export_dropped_at_once_stores_each_resource_once_with_references_resolved(
    zone: Path, tmp_path: Path, make_pipeline: PipelineFactory
) -> None:
    """In arrival (name) order the Synthea export's Organization, Location and Practitioner
    files come after their referrers, which were then stored twice (a second version with the
    conditional references rewritten). Targets first: one version each, nothing unresolved."""
    tenant_dir = zone / "incoming" / "acme"
    tenant_dir.mkdir(parents=True)
    for source in sorted(BULK.glob("*.000.ndjson")):  # copied in name order: that is arrival
        shutil.copy(source, tenant_dir / source.name)
    store = SqliteStore(tmp_path / "db.sqlite")
    try:
        results = make_pipeline(store=store).drain()
        assert [r.outcome for r in results] == [Outcome.ARCHIVED] * len(results) and len(results) == 13
        assert [r.key.rsplit("/", 1)[-1] for r in results][:5] == [
            "Organization.000.ndjson",
            "Location.000.ndjson",
            "Practitioner.000.ndjson",
            "PractitionerRole.000.ndjson",
            "Patient.000.ndjson",
        ]
        loaded = sum(r.counts.loaded for r in results)
        assert loaded == sum(store.resources.counts(["acme"]).values()) == 7160
        versions = store.database.read("SELECT count(*) FROM history")
        assert versions == [(0,)]  # no resource was written twice
        report = reference_report(store.resources, "acme")
        assert report["references"] > 20_000 and report["unresolved"] == 0
    finally:
        store.close()
