"""File outcomes and ledger behaviour through the pipeline: duplicates, versions, policies,
unknown tenants, name clashes, validation in the process pool."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from conftest import BULK, drop, line_count, make_settings
from dropzone.config import load_settings
from dropzone.models import Outcome
from dropzone.store.memory import MemoryStore
from dropzone.store.sqlite import SqliteStore

PATIENTS = BULK / "Patient.000.ndjson"


def test_redropping_the_same_bytes_is_a_duplicate_with_no_writes(zone: Path, make_pipeline) -> None:
    store = MemoryStore()
    pipeline = make_pipeline(store)
    drop(zone, "acme", PATIENTS)
    (first,) = pipeline.drain()
    snapshot = {rid: store.resources.get_document("acme", "Patient", rid) for rid in _ids(PATIENTS)}

    drop(zone, "acme", PATIENTS, name="patients-again.ndjson")
    (second,) = pipeline.drain()
    assert first.outcome is Outcome.ARCHIVED
    assert second.outcome is Outcome.DUPLICATE
    assert second.counts.as_dict() == {"read": 0, "loaded": 0, "unchanged": 0, "rejected": 0}
    assert second.destination.startswith("archived/acme/")
    assert {rid: store.resources.get_document("acme", "Patient", rid) for rid in snapshot} == snapshot
    states = [f["state"] for f in store.ledger.files("acme")]
    assert sorted(states) == ["archived", "duplicate"]


def test_a_changed_resource_becomes_version_2_with_history(zone: Path, make_pipeline, tmp_path: Path) -> None:
    store = MemoryStore()
    pipeline = make_pipeline(store)
    drop(zone, "acme", PATIENTS)
    pipeline.drain()

    lines = PATIENTS.read_bytes().splitlines()
    changed = orjson.loads(lines[0])
    changed["gender"] = "unknown" if changed.get("gender") != "unknown" else "other"
    update = tmp_path / "update.ndjson"
    update.write_bytes(b"\n".join([orjson.dumps(changed), *lines[1:]]) + b"\n")
    drop(zone, "acme", update)
    (result,) = pipeline.drain()

    assert result.outcome is Outcome.ARCHIVED
    assert (result.counts.loaded, result.counts.unchanged) == (1, len(lines) - 1)
    current = store.resources.get_document("acme", "Patient", changed["id"])
    assert current["meta"]["versionId"] == "2"
    assert current["gender"] == changed["gender"]
    (previous,) = store.resources.history("acme", "Patient", changed["id"])
    assert previous["meta"]["versionId"] == "1"
    assert previous["gender"] == orjson.loads(lines[0]).get("gender")


def test_policy_file_quarantines_the_whole_file_and_writes_nothing(
    zone: Path, make_pipeline, tmp_path: Path
) -> None:
    lines = PATIENTS.read_bytes().splitlines()
    bad = tmp_path / "one-bad.ndjson"
    bad.write_bytes(b"\n".join([*lines[:-1], b'{"resourceType": "Patient", "id": "x", "gender": 1}']) + b"\n")
    drop(zone, "strict", bad)
    store = MemoryStore()
    settings = make_settings(zone, policy="file")
    (result,) = make_pipeline(store, settings=settings).drain()
    assert result.outcome is Outcome.QUARANTINED
    assert result.counts.rejected == 1 and result.counts.loaded == 0
    report = json.loads((zone / result.report).read_text())
    assert report["error"]["code"] == "policy_file"
    assert [r["location"] for r in report["rejected_records"]] == [f"line {len(lines)}"]
    assert store.resources.counts() == {}


def test_undeclared_tenants_go_to_quarantine_when_configured(
    zone: Path, make_pipeline, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    (config / "tenants").mkdir(parents=True)
    (config / "dropzone.yaml").write_text("allow_undeclared_tenants: false\n")
    (config / "tenants" / "acme.yaml").write_text("display_name: Acme Health\n")
    settings = load_settings(config, env={}, zone=str(zone))
    settings = settings.model_copy(
        update={"pipeline": settings.pipeline.model_copy(update={"validation_workers": 0})}
    )
    drop(zone, "acme", PATIENTS)
    drop(zone, "stranger", PATIENTS, name="p.ndjson")
    (zone / "incoming" / "loose.ndjson").write_bytes(PATIENTS.read_bytes() + b"\n")
    store = MemoryStore()
    results = {r.key: r for r in make_pipeline(store, settings=settings).drain()}

    assert results["incoming/acme/Patient.000.ndjson"].outcome is Outcome.ARCHIVED
    for key in ("incoming/stranger/p.ndjson", "incoming/loose.ndjson"):
        result = results[key]
        assert result.outcome is Outcome.QUARANTINED
        assert result.destination.startswith("quarantine/_unknown/")
        report = json.loads((zone / result.report).read_text())
        assert report["error"]["code"] == "unknown_tenant"
        assert report["original_key"] == key
    assert store.resources.counts(["stranger"]) == {}


def test_name_clashes_get_a_suffix_never_an_overwrite(zone: Path, make_pipeline, tmp_path: Path) -> None:
    pipeline = make_pipeline()
    first = tmp_path / "a" / "data.ndjson"
    second = tmp_path / "b" / "data.ndjson"
    for i, path in enumerate((first, second)):
        path.parent.mkdir()
        path.write_bytes(PATIENTS.read_bytes().splitlines()[i] + b"\n")
    drop(zone, "acme", first)
    (r1,) = pipeline.drain()
    drop(zone, "acme", second)
    (r2,) = pipeline.drain()
    assert r1.destination.endswith("/data.ndjson")
    assert r2.destination.endswith("/data.2.ndjson")
    assert (zone / r1.destination).read_bytes() == first.read_bytes()
    assert (zone / r2.destination).read_bytes() == second.read_bytes()


def test_subfolders_under_a_tenant_are_processed_and_pruned(zone: Path, make_pipeline) -> None:
    nested = zone / "incoming" / "acme" / "2026" / "batch-7"
    nested.mkdir(parents=True)
    (nested / "p.ndjson").write_bytes(PATIENTS.read_bytes())
    (result,) = make_pipeline().drain()
    assert result.outcome is Outcome.ARCHIVED
    assert not (zone / "incoming" / "acme" / "2026").exists()
    assert (zone / "incoming" / "acme").is_dir()


def test_validation_in_the_process_pool_gives_the_same_result(
    zone: Path, make_pipeline, tmp_path: Path
) -> None:
    lines = (BULK / "Condition.000.ndjson").read_bytes().splitlines()
    lines[100] = lines[100].replace(b'"resourceType":"Condition"', b'"resourceType":"Condition","bogus":1')
    source = tmp_path / "conditions.ndjson"
    source.write_bytes(b"\n".join(lines) + b"\n")
    outcomes = []
    for workers in (0, 2):
        store = MemoryStore()
        tenant = f"w{workers}"
        drop(zone, tenant, source)
        (result,) = make_pipeline(store, validation_workers=workers, batch_size=50).drain()
        outcomes.append((result.outcome, result.counts.as_dict(), store.resources.counts([tenant])))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] is Outcome.PARTIAL
    assert outcomes[0][1]["rejected"] == 1 and outcomes[0][1]["read"] == line_count(source)


def _ids(path: Path) -> list[str]:
    return [orjson.loads(line)["id"] for line in path.read_bytes().splitlines() if line.strip()]


@pytest.mark.parametrize("order", ["changed_then_as_stored", "as_stored_then_changed"])
def test_an_id_sent_twice_in_a_re_sent_file_ends_as_its_later_copy(
    zone: Path, make_pipeline, tmp_path: Path, order: str
) -> None:
    """The loader leaves out writes its lookup found stored unchanged; an id named twice in one
    batch must still reach the store both times, or the earlier copy would win."""
    store = SqliteStore(tmp_path / "store.sqlite")
    pipeline = make_pipeline(store)
    drop(zone, "acme", PATIENTS)
    pipeline.drain()

    lines = PATIENTS.read_bytes().splitlines()
    first, second = orjson.loads(lines[0]), orjson.loads(lines[1])
    changed = dict(first, gender="unknown" if first.get("gender") != "unknown" else "other")
    # Other bytes for the unchanged resources (keys reversed), so the file is not a duplicate.
    as_stored = dict(reversed(first.items()))
    copies = [changed, as_stored] if order == "changed_then_as_stored" else [as_stored, changed]
    update = tmp_path / "update.ndjson"
    update.write_bytes(b"\n".join(orjson.dumps(r) for r in [dict(reversed(second.items())), *copies]) + b"\n")
    drop(zone, "acme", update)
    (result,) = pipeline.drain()

    assert result.outcome is Outcome.ARCHIVED
    # A record counts as loaded when its id was written, so both copies do.
    assert result.counts.as_dict() == {"read": 3, "loaded": 2, "unchanged": 1, "rejected": 0}
    current = store.resources.get_document("acme", "Patient", first["id"])
    assert current["gender"] == (first if order == "changed_then_as_stored" else changed).get("gender")
    assert store.resources.get_document("acme", "Patient", second["id"])["meta"]["versionId"] == "1"
