"""``dropzone preview`` (issue 16, point 1): the real pipeline, writing nothing, saying what
``ingest`` then does, file by file."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import BULK, HL7, REPO, SAMPLES, SYNTHEA, PipelineFactory, drop, make_settings, mongomock_store
from dropzone.preview.run import preview_files

pytestmark = pytest.mark.skipif(not BULK.is_dir(), reason="needs ../shared/samples")

SYNPUF = SAMPLES / "cms-de-synpuf"


def _inputs() -> list[Path]:
    """Every kind of file we take: Bulk NDJSON (plain, gzip, the export log), transaction
    Bundles, single resources including invalid ones, SynPUF CSV, document/message Bundles and a
    mapped CSV; the sample's Patient file is already loaded, so it previews as a duplicate."""
    return [
        BULK,
        SYNTHEA,
        HL7 / "fhir-test-cases",
        SYNPUF / "DE1_0_2008_Beneficiary_Summary_File_Sample_1.csv",
        SYNPUF / "DE1_0_2008_to_2010_Inpatient_Claims_Sample_1.csv",
        REPO / "tests" / "data" / "bundles",
        REPO / "tests" / "data" / "csv",
    ]


def _cli(zone: Path, *args: str) -> tuple[int, dict[str, Any]]:
    env = {**os.environ, "DROPZONE_STORE__PATH": str(zone / ".dropzone" / "dropzone.sqlite")}
    env.pop("MONGODB_URI", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dropzone",
            "--config",
            str(REPO / "config"),
            *args,
            "--zone",
            str(zone),
            "--json",
        ],
        capture_output=True,
        env=env,
        timeout=300,
    )
    assert done.stdout, done.stderr.decode()[-2000:]
    return done.returncode, json.loads(done.stdout)


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_preview_gives_what_ingest_then_gives_and_changes_nothing(tmp_path: Path) -> None:
    zone = tmp_path / "zone"
    zone.mkdir()
    code, _ = _cli(
        zone,
        "ingest",
        "--tenant",
        "acme",
        str(BULK / "Patient.000.ndjson"),
        str(BULK / "Location.000.ndjson"),
    )
    assert code == 0
    before = _tree(zone)
    mixed = tmp_path / "mixed.ndjson"  # one good line, one without the required status
    mixed.write_text(
        '{"resourceType":"Observation","id":"ok","status":"final","code":{"text":"t"}}\n'
        '{"resourceType":"Observation","id":"bad","code":{"text":"t"}}\n'
    )
    inputs = [str(p) for p in [*_inputs(), mixed]]
    preview_code, preview = _cli(zone, "preview", "--tenant", "acme", *inputs)
    assert _tree(zone) == before  # the zone, its database included, byte for byte
    ingest_code, ingest = _cli(zone, "ingest", "--tenant", "acme", *inputs)
    assert preview["preview"] is True and preview["sample"] is None
    assert len(preview["files"]) == len(ingest["files"]) > 30
    assert preview_code == ingest_code
    for seen, done in zip(preview["files"], ingest["files"], strict=True):
        assert (seen["name"], seen["outcome"], seen["counts"]) == (
            done["name"],
            done["outcome"],
            done["records"],
        )
        # new/changed/deleted count resources, the others records (a CSV row maps to several)
        against = seen["against_store"]
        resources = against["new"] + against["changed"] + against["deleted"]
        assert resources >= seen["counts"]["loaded"] and (resources == 0) == (seen["counts"]["loaded"] == 0)
    outcomes = {f["outcome"] for f in preview["files"]}
    assert {"archived", "partial", "quarantined", "duplicate"} <= outcomes
    [caredove] = [f for f in preview["files"] if f["name"] == "r4-caredove-bundle.json"]
    reasons = {(r["code"], r["path"]) for r in caredove["reject_reasons"]}
    assert ("not_an_array", "ServiceRequest.performer") in reasons
    [patients] = [f for f in preview["files"] if f["name"] == "Patient.000.ndjson"]
    assert patients["outcome"] == "duplicate"


def test_a_sample_reads_the_first_records_and_an_empty_zone_stays_empty(tmp_path: Path) -> None:
    zone = tmp_path / "zone"
    zone.mkdir()
    code, preview = _cli(zone, "preview", "--tenant", "acme", "--sample", "3", str(BULK))
    assert code == 0 and preview["sample"] == 3
    assert all(f["counts"]["read"] <= 3 for f in preview["files"])
    assert [f["counts"]["read"] for f in preview["files"] if f["name"] == "Condition.000.ndjson"] == [3]
    assert _tree(zone) == {} and not (zone / ".dropzone").exists()


def test_references_are_checked_across_the_previewed_files(tmp_path: Path) -> None:
    """Alone, the Encounters point at Patients and Locations nobody sent; with their files,
    every reference resolves, the conditional Location ones too (as in ingest)."""
    settings = make_settings(tmp_path / "zone")
    from dropzone.store.memory import MemoryStore

    alone = preview_files(settings, MemoryStore(), "acme", [BULK / "Encounter.000.ndjson"])
    missing = {(g["path"], g["target_type"], g["reason"]) for g in alone.unresolved_references}
    assert ("Encounter.subject", "Patient", "missing_target") in missing
    assert ("Encounter.location.location", "Location", "conditional_no_single_match") in missing
    assert all(len(g["example_ids"]) <= 5 for g in alone.unresolved_references)
    files = sorted(BULK.glob("*.000.ndjson"))
    together = preview_files(settings, MemoryStore(), "acme", files)
    assert together.unresolved_references == []
    assert {f.outcome for f in together.files} == {"archived"}


def _snapshot(store: Any) -> dict[str, list[Any]]:
    """Every document of every collection. (mongomock lists a collection once anything has
    read it, where MongoDB creates collections on the first write only: empty ones are left out.)"""
    db = store.resources._db
    collections = {name: sorted(map(repr, db[name].find())) for name in sorted(db.list_collection_names())}
    return {name: docs for name, docs in collections.items() if docs}


def test_preview_over_mongodb_reads_only(make_pipeline: PipelineFactory, zone: Path) -> None:
    store = mongomock_store()
    drop(zone, "acme", BULK / "Patient.000.ndjson")
    assert [r.outcome for r in make_pipeline(store).drain()] == ["archived"]
    before = _snapshot(store)
    files = [BULK / "Patient.000.ndjson", BULK / "Condition.000.ndjson", *sorted(SYNTHEA.glob("*.json"))]
    result = preview_files(make_settings(zone), store, "acme", files)
    assert _snapshot(store) == before
    assert [f.outcome for f in result.files] == ["duplicate", "archived", "archived", "archived", "archived"]
    condition = result.files[1]
    assert condition.new == condition.counts.loaded == condition.counts.read > 500
    assert condition.quality is not None and condition.quality["resources"] == {"Condition": condition.new}


def test_a_read_only_sqlite_store_cannot_write(tmp_path: Path) -> None:
    import sqlite3

    from dropzone.errors import ConfigError, DropzoneError
    from dropzone.store.base import ResourceWrite
    from dropzone.store.sqlite import SqliteStore

    path = tmp_path / "db.sqlite"
    SqliteStore(path).close()
    before = path.read_bytes()
    store = SqliteStore(path, read_only=True)
    write = ResourceWrite("Patient", "p", {"resourceType": "Patient", "id": "p"}, "h")
    with pytest.raises((sqlite3.Error, DropzoneError)):
        store.resources.upsert("acme", [write], None)
    assert store.ledger.finished_claim("acme", "0" * 64) is None
    store.close()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db.sqlite"]  # no -wal or -shm left
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE dz_meta SET value = '1' WHERE key = 'schema_version'")
    with pytest.raises(ConfigError, match="another dropzone release"):
        SqliteStore(path, read_only=True)
