"""References that resolve, or a report that says which do not (issue 14, point 6)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import BULK, PipelineFactory, drop
from dropzone.pipeline.canonical import resource_hash
from dropzone.search.index import CONDITIONAL_KEY, waiting_key
from dropzone.search.references import (
    ORIGINAL_REFERENCE_URL,
    ConditionalResolver,
    parse_conditional,
    reference_report,
)
from dropzone.store.base import ResourceWrite, Store
from dropzone.store.memory import MemoryStore
from dropzone.store.sqlite import SqliteStore

SYS = "https://example.org/ids"


def _ndjson(path: Path, *resources: dict[str, Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources))
    return path


def _location(rid: str, ident: str) -> dict[str, Any]:
    return {
        "resourceType": "Location",
        "id": rid,
        "identifier": [{"system": SYS, "value": ident}],
        "name": "L",
    }


def _encounter(rid: str, ident: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": rid,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/p-later"},
        "location": [{"location": {"reference": f"Location?identifier={SYS}|{ident}"}}],
    }


@pytest.mark.skipif(not BULK.is_dir(), reason="needs ../shared/samples")
def test_the_synthea_bulk_export_resolves_completely(
    make_pipeline: PipelineFactory, zone: Path, tmp_path: Path
) -> None:
    """Every conditional reference of the sample matches exactly one stored resource once all
    its files are loaded (whatever their order), and no reference is left dangling."""
    store = SqliteStore(tmp_path / "db.sqlite")
    drop(zone, "acme", *sorted(BULK.glob("*.000.ndjson")))
    results = make_pipeline(store).drain()
    assert all(r.outcome == "archived" for r in results)
    report = reference_report(store.resources, "acme")
    assert report["references"] > 20_000
    assert report["unresolved"] == 0 and report["groups"] == []
    sent = [orjson.loads(line) for line in (BULK / "Immunization.000.ndjson").read_bytes().splitlines()]
    conditional = {
        i["id"]: i["location"]["reference"] for i in sent if "?" in i.get("location", {}).get("reference", "")
    }
    assert conditional, "the sample's Immunization.location references are conditional"
    for rid, original in conditional.items():
        stored = store.resources.get("acme", "Immunization", rid)
        assert stored is not None
        location = stored["location"]
        rtype, system, value = parse_conditional(original)  # type: ignore[misc]
        assert (
            location["reference"]
            == f"Location/{store.resources.find_by_identifier('acme', rtype, system, value)[0]}"
        )
        assert {"url": ORIGINAL_REFERENCE_URL, "valueString": original} in location["extension"]
    store.close()


def test_a_target_arriving_in_a_later_file_resolves_then(
    make_pipeline: PipelineFactory, zone: Path, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "db.sqlite")
    pipeline = make_pipeline(store)
    drop(zone, "acme", _ndjson(tmp_path / "enc.ndjson", _encounter("e-1", "L-1"), _encounter("e-2", "L-2")))
    (first,) = pipeline.drain()
    assert first.outcome == "archived"
    before = reference_report(store.resources, "acme")
    reasons = {(g["path"], g["target_type"], g["reason"]): g for g in before["groups"]}
    assert reasons[("Encounter.subject", "Patient", "missing_target")]["count"] == 2
    assert reasons[("Encounter.location.location", "Location", "conditional_no_single_match")][
        "example_ids"
    ] == ["e-1", "e-2"]
    text = json.dumps(before)
    assert "L-1" not in text and SYS not in text and "p-later" not in text  # ids of sources only

    patient = {"resourceType": "Patient", "id": "p-later"}
    # L-2 twice: ambiguous, so e-2 stays as sent.
    later = _ndjson(
        tmp_path / "later.ndjson",
        patient,
        _location("loc-1", "L-1"),
        _location("loc-2", "L-2"),
        _location("loc-3", "L-2"),
    )
    drop(zone, "acme", later)
    (second,) = pipeline.drain()
    assert second.outcome == "archived" and second.counts.loaded == 4
    e1 = store.resources.get("acme", "Encounter", "e-1")
    e2 = store.resources.get("acme", "Encounter", "e-2")
    assert e1 is not None and e2 is not None
    assert e1["location"][0]["location"]["reference"] == "Location/loc-1" and e1["meta"]["versionId"] == "2"
    assert (
        e2["location"][0]["location"]["reference"] == f"Location?identifier={SYS}|L-2"
        and e2["meta"]["versionId"] == "1"
    )
    after = reference_report(store.resources, "acme")
    assert [(g["path"], g["reason"], g["example_ids"]) for g in after["groups"]] == [
        ("Encounter.location.location", "conditional_no_single_match", ["e-2"])
    ]

    # The sender re-sends the first file (other bytes, same content): nothing changes.
    again = _ndjson(tmp_path / "enc-again.ndjson", _encounter("e-2", "L-2"), _encounter("e-1", "L-1"))
    drop(zone, "acme", again)
    (third,) = pipeline.drain()
    assert third.counts.as_dict() == {"read": 2, "loaded": 0, "unchanged": 2, "rejected": 0}
    store.close()


def test_resolution_at_load_time_when_the_target_is_already_stored(
    make_pipeline: PipelineFactory, zone: Path, tmp_path: Path, any_store: Store
) -> None:
    pipeline = make_pipeline(any_store)
    drop(zone, "acme", _ndjson(tmp_path / "loc.ndjson", _location("loc-1", "L-1")))
    pipeline.drain()
    drop(zone, "acme", _ndjson(tmp_path / "enc.ndjson", _encounter("e-1", "L-1")))
    (result,) = pipeline.drain()
    assert result.counts.loaded == 1
    stored = any_store.resources.get("acme", "Encounter", "e-1")
    assert stored is not None and stored["meta"]["versionId"] == "1"
    assert stored["location"][0]["location"]["reference"] == "Location/loc-1"
    # Another tenant's Location with that identifier is never a match.
    drop(zone, "beta", _ndjson(tmp_path / "enc-b.ndjson", _encounter("e-1", "L-1")))
    pipeline.drain()
    other = any_store.resources.get("beta", "Encounter", "e-1")
    assert other is not None and "?" in other["location"][0]["location"]["reference"]


def test_references_cli_prints_the_report(zone: Path, tmp_path: Path) -> None:
    store_path = tmp_path / "db.sqlite"
    env = {**os.environ, "DROPZONE_STORE__PATH": str(store_path)}
    target = zone / "incoming" / "acme"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_ndjson(tmp_path / "enc.ndjson", _encounter("e-1", "L-1")), target / "enc.ndjson")
    base = [sys.executable, "-m", "dropzone"]
    subprocess.run([*base, "run", "--zone", str(zone), "--once"], env=env, check=True, capture_output=True)
    out = subprocess.run(
        [*base, "references", "--zone", str(zone), "--tenant", "acme", "--json"],
        env=env,
        capture_output=True,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["unresolved"] == 2 and {g["reason"] for g in report["groups"]} == {
        "missing_target",
        "conditional_no_single_match",
    }
    table = subprocess.run(
        [*base, "references", "--zone", str(zone), "--tenant", "acme"],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        check=True,
    )
    assert b"Encounter.location.location" in table.stdout and b"2 unresolved" in table.stdout


def test_past_the_identifier_limit_the_pending_pass_reads_every_waiting_resource(
    make_pipeline: PipelineFactory, zone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dropzone.pipeline.loader as loader

    monkeypatch.setattr(loader, "MAX_STORED_IDENTIFIERS", 0)
    store = SqliteStore(tmp_path / "db.sqlite")
    pipeline = make_pipeline(store)
    drop(zone, "acme", _ndjson(tmp_path / "enc.ndjson", _encounter("e-1", "L-1")))
    pipeline.drain()
    drop(zone, "acme", _ndjson(tmp_path / "loc.ndjson", _location("loc-1", "L-1")))
    pipeline.drain()
    stored = store.resources.get("acme", "Encounter", "e-1")
    assert stored is not None and stored["location"][0]["location"]["reference"] == "Location/loc-1"
    store.close()


def test_the_resolver_forgets_an_answer_only_when_the_target_type_is_written() -> None:
    """``targets`` remembers each waiting key's answer; a write of the key's type (a new
    possible target) must make it ask the store again, a write of another type must not."""
    store = MemoryStore()
    resolver = ConditionalResolver(store.resources, "acme")
    location = {"resourceType": "Location", "id": "loc1", "identifier": [{"system": "urn:s", "value": "7"}]}
    key = waiting_key("Location", "urn:s", "7")
    keys = [CONDITIONAL_KEY, key]
    assert resolver.targets(keys) == {}
    store.resources.upsert(
        "acme", [ResourceWrite("Location", "loc1", location, resource_hash(location))], None
    )
    resolver.forget({"Patient"})
    assert resolver.targets(keys) == {}  # remembered: a Patient cannot be this target
    resolver.forget({"Location"})
    assert resolver.targets(keys) == {key: "Location/loc1"}
    resolver.forget()
    assert resolver.targets(keys) == {key: "Location/loc1"}
