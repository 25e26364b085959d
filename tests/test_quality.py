"""The data-quality profile (issue 16, point 2): per file in the ledger and the error report,
per tenant from ``dropzone quality`` and ``GET /api/tenants/{tenant}/quality``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import BULK, SYNTHEA, PipelineFactory, drop, mongomock_store
from dropzone.quality.systems import classify
from dropzone.quality.tenant import tenant_quality
from dropzone.store.base import Store
from dropzone.store.sqlite import SqliteStore

MRN = "https://hospital.example.org/mrn"
# Values planted in the fixture: none may appear in a profile.
MARKERS = ("ZZQUALMARK", "MRN-ZZ-4711", "1980-05-17", "2999-03-04", "1970-02-03", "Q-CODE-ZZ")


def _patient(rid: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": rid, "name": [{"family": "ZZQUALMARK"}], **extra}


def _observation(rid: str, subject: str, when: str, system: str = "http://loinc.org") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": system, "code": "Q-CODE-ZZ"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": when,
    }


PLANTED = [
    # death before birth
    _patient("dead-early", birthDate="1980-05-17", deceasedDateTime="1970-02-03"),
    # two Patients with one identifier
    _patient("twin-a", identifier=[{"system": MRN, "value": "MRN-ZZ-4711"}]),
    _patient("twin-b", identifier=[{"system": MRN, "value": "MRN-ZZ-4711"}]),
    # nothing refers to this one
    _patient("lonely"),
    # a future date; an unknown code system; a malformed one (valid R4 uri, not absolute)
    _observation("future", "Patient/dead-early", "2999-03-04"),
    _observation("unknown-system", "Patient/twin-a", "2020-01-01", "http://example.org/our-codes"),
    _observation("malformed-system", "Patient/twin-b", "2020-01-01", "local-codes"),
    # a dangling reference
    _observation("dangling", "Patient/not-sent", "2020-01-01"),
    # an end before its start
    {
        "resourceType": "Encounter",
        "id": "backwards",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/dead-early"},
        "period": {"start": "2020-02-01", "end": "2020-01-01"},
    },
]
EXPECTED = {
    ("death_before_birth", "Patient.deceasedDateTime", ("dead-early",)),
    ("shared_identifier", "Patient.identifier", ("twin-a", "twin-b")),
    ("patient_without_data", "Patient", ("lonely",)),
    (
        "future_date",
        "Observation.effectiveDateTime | Observation.effectivePeriod | Observation.effectiveInstant",
        ("future",),
    ),
    ("unknown_code_system", "Observation.code", ("unknown-system",)),
    ("malformed_code_system", "Observation.code", ("malformed-system",)),
    ("unresolved_reference", "Observation.subject", ("dangling",)),
    ("end_before_start", "Encounter.period", ("backwards",)),
}


def _found(profile: dict[str, Any]) -> set[tuple[str, str, tuple[str, ...]]]:
    return {(f["check"], f["path"], tuple(sorted(f["example_ids"]))) for f in profile["findings"]}


def _load_planted(make_pipeline: PipelineFactory, zone: Path, tmp_path: Path, store: Store) -> None:
    planted = tmp_path / "planted.ndjson"
    planted.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in PLANTED))
    drop(zone, "acme", planted)
    [result] = make_pipeline(store).drain()
    assert result.outcome == "archived", result


@pytest.mark.parametrize("kind", ["sqlite", "mongomock"])
def test_every_planted_problem_is_found_and_nothing_else(
    kind: str, make_pipeline: PipelineFactory, zone: Path, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "db.sqlite") if kind == "sqlite" else mongomock_store()
    _load_planted(make_pipeline, zone, tmp_path, store)
    profile = tenant_quality(store.resources, "acme")
    assert _found(profile) == EXPECTED
    assert profile["resources"] == {"Encounter": 1, "Observation": 4, "Patient": 4}
    assert profile["date_ranges"]["Observation"] == {"from": "2020", "to": "2999"}
    assert profile["references"]["unresolved"] == 1
    statuses = {c["system"]: c["status"] for c in profile["code_systems"]}
    assert statuses["http://loinc.org"] == "known"
    assert statuses["http://example.org/our-codes"] == "unknown"
    assert statuses["local-codes"] == "malformed"
    text = json.dumps(profile)
    assert not [m for m in MARKERS if m in text]


def test_the_file_profile_is_in_the_ledger_and_in_the_error_report(
    make_pipeline: PipelineFactory, zone: Path, tmp_path: Path
) -> None:
    """Per file, from the search rows the workers made: types, years, dates and code systems
    (the whole-tenant checks need the tenant); a partial file's report carries it too."""
    store = SqliteStore(tmp_path / "db.sqlite")
    bad = {"resourceType": "Observation", "id": "no-status", "code": {"text": "x"}}
    planted = tmp_path / "planted.ndjson"
    planted.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in [*PLANTED, bad]))
    drop(zone, "acme", planted)
    [result] = make_pipeline(store).drain()
    assert result.outcome == "partial"
    [record] = store.ledger.files("acme", 5)
    quality = record["quality"]
    checks = {(f["check"], tuple(f["example_ids"])) for f in quality["findings"]}
    assert checks == {
        ("death_before_birth", ("dead-early",)),
        ("future_date", ("future",)),
        ("unknown_code_system", ("unknown-system",)),
        ("malformed_code_system", ("malformed-system",)),
        ("end_before_start", ("backwards",)),
    }
    assert quality["total"] == len(PLANTED)  # the rejected record is not profiled
    report = json.loads((zone / result.report).read_bytes()) if result.report else None
    assert report is not None and report["quality"] == quality
    assert not [m for m in MARKERS if m in json.dumps(record) + json.dumps(report)]


@pytest.mark.skipif(not (BULK.is_dir() and SYNTHEA.is_dir()), reason="needs ../shared/samples")
def test_the_clean_synthea_samples_have_no_findings(
    make_pipeline: PipelineFactory, zone: Path, tmp_path: Path
) -> None:
    """Synthea's data is coherent: no date ahead, no order broken, every system a known
    terminology, no shared identifier, every patient with data, every reference resolved."""
    store = SqliteStore(tmp_path / "db.sqlite")
    drop(zone, "bulk", *sorted(BULK.glob("*.ndjson")))
    drop(zone, "bundles", *sorted(SYNTHEA.glob("*.json")))
    results = make_pipeline(store).drain()
    assert {r.outcome for r in results} == {"archived"}
    for tenant in ("bulk", "bundles"):
        profile = tenant_quality(store.resources, tenant)
        assert profile["total"] == sum(store.resources.tenant_counts([tenant])[tenant].values())
        assert profile["findings"] == [], tenant
        assert all(c["known"] for c in profile["code_systems"])
        assert profile["date_ranges"]["Patient"]["from"] >= "1900"


@pytest.mark.parametrize(
    ("system", "status"),
    [
        ("http://snomed.info/sct", "known"),
        ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "known"),
        ("https://bluebutton.cms.gov/resources/variables/line_prcsg_ind_cd", "known"),
        ("urn:oid:1.2.3.4", "unknown"),
        ("http://example.org/codes", "unknown"),
        ("LOINC", "malformed"),
        ("", "malformed"),
    ],
)
def test_code_systems_are_classified(system: str, status: str) -> None:
    assert classify(system) == status


def test_the_cli_prints_the_profile_as_json(
    make_pipeline: PipelineFactory, zone: Path, tmp_path: Path
) -> None:
    db = zone / ".dropzone" / "dropzone.sqlite"
    db.parent.mkdir(parents=True, exist_ok=True)
    store = SqliteStore(db)
    _load_planted(make_pipeline, zone, tmp_path, store)
    store.close()
    env = {**os.environ, "DROPZONE_STORE__PATH": str(db)}
    env.pop("MONGODB_URI", None)
    out = subprocess.run(
        [sys.executable, "-m", "dropzone", "quality", "--zone", str(zone), "--tenant", "acme", "--json"],
        capture_output=True,
        env=env,
        check=True,
    )
    assert _found(json.loads(out.stdout)) == EXPECTED
    text = subprocess.run(
        [sys.executable, "-m", "dropzone", "quality", "--zone", str(zone), "--tenant", "acme"],
        capture_output=True,
        env={**env, "COLUMNS": "200"},
        check=True,
    ).stdout.decode()
    assert "8 findings" in text and "death_before_birth" in text and "twin-b" in text
    assert not [m for m in MARKERS if m in text + out.stderr.decode()]


def test_the_api_serves_the_tenant_profile_to_that_tenant_only(tmp_path: Path) -> None:
    from api_support import build, in_process

    from dropzone.pipeline.runner import Pipeline

    h = build(tmp_path)
    planted = tmp_path / "planted.ndjson"
    planted.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in PLANTED))
    drop(h.zone, "acme", planted)
    with Pipeline(h.settings, h.store, h.source) as pipeline:
        assert [r.outcome for r in pipeline.drain()] == ["archived"]
    with in_process(h):
        answer = h.client.get("/api/tenants/acme/quality", headers=h.auth("acme"))
        assert answer.status_code == 200
        assert _found(answer.json()) == EXPECTED
        assert not [m for m in MARKERS if m in answer.text]
        assert h.client.get("/api/tenants/acme/quality", headers=h.auth("beta")).status_code == 404
        assert h.client.get("/api/tenants/acme/quality").status_code == 401
