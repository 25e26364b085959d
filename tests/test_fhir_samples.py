"""The shared FHIR samples end to end through the folder pipeline on the embedded store."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from conftest import BULK, HL7, SYNTHEA, drop, line_count
from dropzone.models import Outcome
from dropzone.store.memory import MemoryStore

BULK_FILES = sorted(p for p in BULK.glob("*.ndjson") if p.name != "log.ndjson")


def _report(zone: Path, key: str) -> dict:
    return json.loads((zone / key).read_text())


def test_every_bulk_resource_loads_with_counts_per_type(zone: Path, make_pipeline) -> None:
    drop(zone, "acme", *BULK_FILES)
    store = MemoryStore()
    results = make_pipeline(store, validation_workers=2).drain()

    assert {r.outcome for r in results} == {Outcome.ARCHIVED}
    expected = {p.name.split(".")[0]: line_count(p) for p in BULK_FILES}
    assert sum(expected.values()) == 7160
    assert store.resources.counts(["acme"]) == expected
    assert sum(r.counts.loaded for r in results) == 7160
    assert not list((zone / "incoming" / "acme").iterdir())
    assert len(list((zone / "archived" / "acme").rglob("*.ndjson"))) == len(BULK_FILES)


def test_gzipped_copies_give_the_same_documents(zone: Path, make_pipeline) -> None:
    store = MemoryStore()
    names = [p.name.removesuffix(".gz") for p in (BULK / "gzipped").glob("*.gz")]
    drop(zone, "plain", *(BULK / n for n in names))
    drop(zone, "gz", *(BULK / "gzipped").glob("*.gz"))
    results = make_pipeline(store).drain()

    assert {r.outcome for r in results} == {Outcome.ARCHIVED}
    assert store.resources.counts(["gz"]) == store.resources.counts(["plain"])
    compared = 0
    for name in names:
        rtype = name.split(".")[0]
        for line in (BULK / name).read_bytes().splitlines():
            rid = orjson.loads(line)["id"]
            assert _content(store.resources.get("gz", rtype, rid)) == _content(
                store.resources.get("plain", rtype, rid)
            )
            compared += 1
    assert compared == sum(line_count(BULK / n) for n in names)


def _content(doc: dict) -> dict:
    meta = {k: v for k, v in doc["meta"].items() if k != "lastUpdated"}
    return {**doc, "meta": meta}


def _references(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def test_synthea_transactions_load_and_every_entry_reference_resolves(zone: Path, make_pipeline) -> None:
    bundles = sorted(SYNTHEA.glob("*.json"))
    drop(zone, "acme", *bundles)
    store = MemoryStore()
    results = make_pipeline(store).drain()
    assert [r.outcome for r in results] == [Outcome.ARCHIVED] * 3

    entries = entry_refs = 0
    for bundle_path in bundles:
        bundle = json.loads(bundle_path.read_text())
        urls = {e["fullUrl"] for e in bundle["entry"]}
        entries += len(bundle["entry"])
        entry_refs += sum(1 for e in bundle["entry"] for r in _references(e["resource"]) if r in urls)
    assert entry_refs == 211 + 198 + 223
    assert sum(store.resources.counts(["acme"]).values()) == entries

    stored_refs = []
    for rtype in store.resources.resource_types():
        for doc_id in list(store.resources._docs[rtype]):
            doc = store.resources.get("acme", rtype, doc_id.split("/", 1)[1])
            stored_refs.extend(r for r in _references(doc) if not r.startswith("#"))
    assert len(stored_refs) == entry_refs  # every entry reference survived, rewritten
    for ref in stored_refs:
        ref_type, _, ref_id = ref.partition("/")
        assert store.resources.get("acme", ref_type, ref_id) is not None, "dangling reference"


def test_caredove_and_typeless_bundles_are_quarantined_with_reports(zone: Path, make_pipeline) -> None:
    drop(
        zone,
        "acme",
        HL7 / "fhir-test-cases" / "r4-caredove-bundle.json",
        HL7 / "fhir-test-cases" / "bundle-with-no-type.json",
    )
    store = MemoryStore()
    results = {r.name: r for r in make_pipeline(store).drain()}

    caredove = results["r4-caredove-bundle.json"]
    assert caredove.outcome is Outcome.QUARANTINED
    report = _report(zone, caredove.report)
    assert report["error"]["code"] == "transaction_failed"
    failing = {item["location"]: item for item in report["rejected_records"]}
    assert "entry 9" in failing
    assert failing["entry 9"]["errors"][0]["code"] == "type_mismatch"
    assert failing["entry 9"]["errors"][0]["path"] == "Bundle.entry[9].request.url"
    assert all(item["errors"] for item in report["rejected_records"])

    no_type = results["bundle-with-no-type.json"]
    assert no_type.outcome is Outcome.QUARANTINED
    assert _report(zone, no_type.report)["error"]["code"] == "missing_bundle_type"
    assert store.resources.counts() == {}  # all or nothing: nothing from either file


@pytest.mark.parametrize("name", ["Bundle-Batch.json", "Bundle-Transaction.json"])
def test_bom_prefixed_microsoft_bundles_load(zone: Path, make_pipeline, name: str) -> None:
    path = HL7 / "microsoft-fhir-server" / name
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    drop(zone, "acme", path)
    store = MemoryStore()
    (result,) = make_pipeline(store).drain()
    assert result.outcome is Outcome.ARCHIVED
    # POST, conditional POST, PUT, conditional PUT and PUT with ifMatch write Patients; the
    # DELETEs match nothing; the $lookup operation and GETs are reads and are not records.
    assert result.counts.read == 7
    assert result.counts.rejected == 0
    assert store.resources.get("acme", "Patient", "123") is not None
    assert 3 <= store.resources.counts(["acme"])["Patient"] <= 5


def test_collection_bundle_and_single_resources_load(zone: Path, make_pipeline) -> None:
    singles = sorted(
        p
        for p in (HL7 / "fhir-test-cases").glob("*-example.json")
        if p.name not in ("diagnosticreport-example.json",)
    )
    drop(zone, "acme", HL7 / "fhir-test-cases" / "diagnosticreport-example.json", *singles)
    store = MemoryStore()
    results = make_pipeline(store).drain()
    by_name = {r.name: r for r in results}
    collection = by_name["diagnosticreport-example.json"]
    assert collection.outcome is Outcome.ARCHIVED and collection.counts.read == 18
    for single in singles:
        assert by_name[single.name].outcome is Outcome.ARCHIVED, by_name[single.name].reason
        rtype = json.loads(single.read_text())["resourceType"]
        assert store.resources.get("acme", rtype, json.loads(single.read_text())["id"]) is not None
