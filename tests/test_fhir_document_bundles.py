"""Document and message Bundles are stored whole, as one Bundle; response Bundles are refused;
a searchset's outcome entries are never data.

The shared samples hold no document or message Bundle (their HL7 folder has collection,
transaction, batch and typeless Bundles only), so the two fixtures in tests/data/bundles were
written for these tests after the R4 Bundle, Composition and MessageHeader definitions; both
pass the R4 validator unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import drop
from dropzone.models import Outcome
from dropzone.store.base import Store
from dropzone.store.memory import MemoryStore
from processors import fhir_json
from processors.fhir_common import deterministic_id

DATA = Path(__file__).resolve().parent / "data" / "bundles"
DOCUMENT = DATA / "document-discharge.json"
MESSAGE = DATA / "message-admit.json"
SERVER_META = ("versionId", "lastUpdated")


def _load(path: Path) -> dict[str, Any]:
    return fhir_json.loads(path.read_bytes())


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_bytes(fhir_json.dumps(doc))
    return path


def _without_server_meta(doc: dict[str, Any]) -> dict[str, Any]:
    """The Bundle without ``meta.versionId``/``meta.lastUpdated``, which the store sets (over the
    sender's, as for every resource), so what is left is the sender's content."""
    meta = {k: v for k, v in (doc.get("meta") or {}).items() if k not in SERVER_META}
    out = {k: v for k, v in doc.items() if k != "meta"}
    if meta:
        out["meta"] = meta
    return out


def _report(zone: Path, key: str) -> dict[str, Any]:
    return json.loads((zone / key).read_text())


def _counts(result: Any) -> tuple[int, int, int, int]:
    c = result.counts
    return c.read, c.loaded, c.unchanged, c.rejected


@pytest.mark.parametrize("path", [DOCUMENT, MESSAGE], ids=["document", "message"])
def test_document_and_message_bundles_are_stored_whole_exactly_as_sent(
    zone: Path, make_pipeline, any_store: Store, path: Path
) -> None:
    drop(zone, "acme", path)
    (result,) = make_pipeline(any_store).drain()

    assert result.outcome is Outcome.ARCHIVED, result.reason
    assert _counts(result) == (1, 1, 0, 0)
    sent = _load(path)
    # One Bundle, none of its entries as resources of their own.
    assert any_store.resources.counts(["acme"]) == {"Bundle": 1}
    stored = any_store.resources.get("acme", "Bundle", sent["id"])
    assert stored is not None
    assert stored["meta"]["versionId"] == "1"
    # Byte for byte the sender's JSON (key order, references, numbers' digits), less server meta.
    assert fhir_json.dumps(_without_server_meta(stored)) == fhir_json.dumps(_without_server_meta(sent))
    if path is DOCUMENT:
        text = fhir_json.dumps(stored)
        assert b'"value":80.00,' in text and b'"value":36.60,' in text
        assert b'"reference":"urn:uuid:1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"' in text  # not rewritten


def test_resending_a_document_is_unchanged(zone: Path, make_pipeline, tmp_path: Path) -> None:
    store = MemoryStore()
    pipeline = make_pipeline(store)
    drop(zone, "acme", DOCUMENT)
    (first,) = pipeline.drain()
    # Other bytes (so not a duplicate file), the same Bundle.
    again = tmp_path / "document-again.json"
    again.write_bytes(DOCUMENT.read_bytes() + b"\n\n")
    drop(zone, "acme", again)
    (second,) = pipeline.drain()

    assert (first.outcome, second.outcome) == (Outcome.ARCHIVED, Outcome.ARCHIVED)
    assert _counts(second) == (1, 0, 1, 0)
    stored = store.resources.get_document("acme", "Bundle", "discharge-0001")
    assert stored["meta"]["versionId"] == "1"
    assert store.resources.history("acme", "Bundle", "discharge-0001") == []


def test_a_document_without_an_id_gets_a_stable_one_from_its_identifier(
    zone: Path, make_pipeline, tmp_path: Path
) -> None:
    sent = _load(DOCUMENT)
    del sent["id"]
    no_id = _write(tmp_path / "no-id.json", sent)
    # The same Bundle in other bytes (so not a duplicate file): spaces after commas.
    reformatted = tmp_path / "no-id-reformatted.json"
    reformatted.write_bytes(b"  " + no_id.read_bytes().replace(b'",', b'", ') + b"\n")
    assert fhir_json.loads(reformatted.read_bytes()) == sent
    store = MemoryStore()
    pipeline = make_pipeline(store)
    drop(zone, "acme", no_id)
    (first,) = pipeline.drain()
    drop(zone, "acme", reformatted)
    (second,) = pipeline.drain()

    identifier = sent["identifier"]
    expected = deterministic_id("acme", "Bundle.identifier", identifier["system"], identifier["value"])
    assert first.outcome is Outcome.ARCHIVED and _counts(first) == (1, 1, 0, 0)
    assert second.outcome is Outcome.ARCHIVED and _counts(second) == (1, 0, 1, 0)
    assert store.resources.counts(["acme"]) == {"Bundle": 1}
    stored = store.resources.get("acme", "Bundle", expected)
    assert list(stored)[:2] == ["resourceType", "id"]
    assert fhir_json.dumps(_without_server_meta(stored)) == fhir_json.dumps(
        _without_server_meta({"resourceType": "Bundle", "id": expected, **sent})
    )


def _mutated(mutate: Any) -> dict[str, Any]:
    doc = _load(DOCUMENT)
    mutate(doc)
    return doc


def _swap_first_entries(doc: dict[str, Any]) -> None:
    doc["entry"][0], doc["entry"][1] = doc["entry"][1], doc["entry"][0]


@pytest.mark.parametrize(
    ("mutate", "code", "path"),
    [
        (lambda d: d["identifier"].pop("system"), "document_identifier_required", "Bundle.identifier"),
        (lambda d: d.pop("timestamp"), "document_timestamp_required", "Bundle.timestamp"),
        (_swap_first_entries, "document_composition_first", "Bundle.entry[0].resource"),
        (
            lambda d: d["entry"][1].update(request={"method": "PUT", "url": "Patient/x"}),
            "request_not_allowed",
            "Bundle.entry[1].request",
        ),
        (
            lambda d: d["entry"][2].update(fullUrl=d["entry"][1]["fullUrl"]),
            "duplicate_full_url",
            "Bundle.entry[2].fullUrl",
        ),
        (lambda d: d.update(total=5), "total_not_allowed", "Bundle.total"),
        # The R4 validator walks the whole Bundle: entries' own defects are found too.
        (lambda d: d["entry"][0]["resource"].pop("title"), "required", "Bundle.entry[0].resource.title"),
        (
            lambda d: d["entry"][4]["resource"]["valueQuantity"].update(value="80.00"),
            "wrong_type",
            "Bundle.entry[4].resource.valueQuantity.value",
        ),
    ],
    ids=["bdl-9", "bdl-10", "bdl-11", "bdl-3", "bdl-7", "bdl-1", "composition-title", "quantity-type"],
)
def test_a_broken_document_is_quarantined_with_its_reason(
    zone: Path, make_pipeline, tmp_path: Path, mutate: Any, code: str, path: str
) -> None:
    drop(zone, "acme", _write(tmp_path / "broken-document.json", _mutated(mutate)))
    store = MemoryStore()
    (result,) = make_pipeline(store).drain()

    assert result.outcome is Outcome.QUARANTINED
    assert _counts(result) == (1, 0, 0, 1)
    report = _report(zone, result.report)
    assert report["error"]["code"] == "all_records_rejected"
    (item,) = report["rejected_records"]
    assert (item["location"], item["resourceType"], item["id"]) == ("resource", "Bundle", "discharge-0001")
    assert {"code": code, "path": path} in [
        {"code": e["code"], "path": e.get("path")} for e in item["errors"]
    ]
    assert "Fixture" not in (zone / result.report).read_text()  # no patient value in the report
    assert store.resources.counts() == {}


def test_one_report_names_invariant_and_validation_defects_together(
    zone: Path, make_pipeline, tmp_path: Path
) -> None:
    def both(doc: dict[str, Any]) -> None:
        del doc["timestamp"]
        del doc["entry"][0]["resource"]["title"]

    drop(zone, "acme", _write(tmp_path / "two-defects.json", _mutated(both)))
    (result,) = make_pipeline().drain()
    (item,) = _report(zone, result.report)["rejected_records"]
    assert [(e["code"], e["path"]) for e in item["errors"]] == [
        ("document_timestamp_required", "Bundle.timestamp"),
        ("required", "Bundle.entry[0].resource.title"),
    ]


def test_a_message_needs_a_message_header_first_and_an_id(zone: Path, make_pipeline, tmp_path: Path) -> None:
    header_last = _load(MESSAGE)
    header_last["entry"].append(header_last["entry"].pop(0))
    nameless = _load(MESSAGE)
    del nameless["id"]
    drop(zone, "acme", _write(tmp_path / "header-last.json", header_last))
    drop(zone, "acme", _write(tmp_path / "nameless.json", nameless))
    store = MemoryStore()
    results = {r.name: r for r in make_pipeline(store).drain()}

    for name, code, path in (
        ("header-last.json", "message_header_first", "Bundle.entry[0].resource"),
        ("nameless.json", "missing_id", "Bundle.id"),
    ):
        result = results[name]
        assert result.outcome is Outcome.QUARANTINED
        (item,) = _report(zone, result.report)["rejected_records"]
        assert [(e["code"], e["path"]) for e in item["errors"]] == [(code, path)]
    assert store.resources.counts() == {}


@pytest.mark.parametrize("btype", ["batch-response", "transaction-response", "history"])
def test_response_bundles_are_refused(zone: Path, make_pipeline, tmp_path: Path, btype: str) -> None:
    response = {
        "resourceType": "Bundle",
        "type": btype,
        "entry": [
            {
                "resource": {"resourceType": "Patient", "id": "p1"},
                "response": {"status": "201 Created", "location": "Patient/p1/_history/1"},
            }
        ],
    }
    drop(zone, "acme", _write(tmp_path / f"{btype}.json", response))
    store = MemoryStore()
    (result,) = make_pipeline(store).drain()
    assert result.outcome is Outcome.QUARANTINED
    error = _report(zone, result.report)["error"]
    assert error["code"] == "unsupported_bundle_type"
    assert "server's response" in error["message"]
    assert store.resources.counts() == {}


def test_an_unknown_bundle_type_is_refused_without_echoing_it(
    zone: Path, make_pipeline, tmp_path: Path
) -> None:
    odd = {"resourceType": "Bundle", "type": "Zq-Private-Marker", "entry": []}
    drop(zone, "acme", _write(tmp_path / "odd.json", odd))
    (result,) = make_pipeline().drain()
    report_text = (zone / result.report).read_text()
    assert json.loads(report_text)["error"]["code"] == "unsupported_bundle_type"
    assert "Zq-Private-Marker" not in report_text


def _searchset(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "total": 1, "entry": list(entries)}


OUTCOME_ENTRY = {
    "resource": {
        "resourceType": "OperationOutcome",
        "id": "search-warning",
        "issue": [{"severity": "warning", "code": "processing", "diagnostics": "search was partial"}],
    },
    "search": {"mode": "outcome"},
}


def test_a_searchsets_outcome_entry_is_not_stored(zone: Path, make_pipeline, tmp_path: Path) -> None:
    searchset = _searchset(
        {
            "fullUrl": "http://x/Patient/p1",
            "resource": {"resourceType": "Patient", "id": "p1"},
            "search": {"mode": "match"},
        },
        OUTCOME_ENTRY,
        {
            "fullUrl": "http://x/Organization/o1",
            "resource": {"resourceType": "Organization", "id": "o1", "name": "Clinic"},
            "search": {"mode": "include"},
        },
    )
    drop(zone, "acme", _write(tmp_path / "search.json", searchset))
    store = MemoryStore()
    (result,) = make_pipeline(store).drain()

    assert result.outcome is Outcome.ARCHIVED
    assert _counts(result) == (2, 2, 0, 0)  # the outcome entry is not a record
    assert store.resources.counts(["acme"]) == {"Organization": 1, "Patient": 1}
    (record,) = store.ledger.files("acme")
    assert record["details"] == {"search_outcome_entries": 1}


def test_a_searchset_of_outcomes_only_is_refused(zone: Path, make_pipeline, tmp_path: Path) -> None:
    drop(zone, "acme", _write(tmp_path / "failed-search.json", _searchset(OUTCOME_ENTRY)))
    store = MemoryStore()
    (result,) = make_pipeline(store).drain()
    assert result.outcome is Outcome.QUARANTINED
    assert _report(zone, result.report)["error"]["code"] == "search_outcome_only"
    assert store.resources.counts() == {}


def test_a_document_over_the_record_limit_is_refused(zone: Path, make_pipeline) -> None:
    assert DOCUMENT.stat().st_size > 2048
    drop(zone, "acme", DOCUMENT)
    store = MemoryStore()
    (result,) = make_pipeline(store, max_record_bytes=2048).drain()
    assert result.outcome is Outcome.QUARANTINED
    assert _report(zone, result.report)["error"]["code"] == "record_too_large"
    assert store.resources.counts() == {}


def test_a_patients_everything_includes_the_documents_and_messages_about_them(
    zone: Path, make_pipeline, any_store: Store, tmp_path: Path
) -> None:
    """The Bundle is stored whole, and its entries are indexed for the patient compartment:
    the Composition's ``urn:uuid`` subject resolves through the entry's fullUrl to the Patient
    entry's id, so ``$everything`` of that patient returns the document beside the resources
    stored on their own; the message goes to its own patient only. The entry keys are not
    references of the Bundle, so the reference-integrity view does not list them."""
    document, message = _load(DOCUMENT), _load(MESSAGE)

    def patient_of(bundle: dict[str, Any]) -> str:
        [patient] = [
            e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
        ]
        return str(patient)

    doc_patient, msg_patient = patient_of(document), patient_of(message)
    observation = {
        "resourceType": "Observation",
        "id": "obs-1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
        "subject": {"reference": f"Patient/{doc_patient}"},
    }
    own = tmp_path / "own.ndjson"
    own.write_bytes(
        json.dumps({"resourceType": "Patient", "id": doc_patient}).encode()
        + b"\n"
        + json.dumps(observation).encode()
        + b"\n"
    )
    for path in (DOCUMENT, MESSAGE, own):
        drop(zone, "acme", path)
    results = make_pipeline(any_store).drain()
    assert [r.outcome for r in results] == [Outcome.ARCHIVED] * 3

    from dropzone.search.compartment import compartment_members, everything
    from dropzone.search.references import reference_report

    resources = any_store.resources
    assert compartment_members(resources, "acme", doc_patient) == [
        ("Bundle", document["id"]),
        ("Observation", "obs-1"),
        ("Patient", doc_patient),
    ]
    assert compartment_members(resources, "acme", msg_patient) == [("Bundle", message["id"])]
    assert compartment_members(resources, "acme", "someone-else") == []
    page = everything(resources, "acme", doc_patient, 10, None)
    assert page.total == 3 and page.resources[0]["id"] == document["id"]
    assert reference_report(resources, "acme")["unresolved"] == 0


def test_documents_and_messages_are_found_by_chained_search_on_their_first_entry(
    zone: Path, make_pipeline, any_store: Store
) -> None:
    """R4's Bundle parameters ``composition`` and ``message`` with chains on the Composition's or
    MessageHeader's token and reference parameters (``urn:uuid`` references resolved through
    the entries' fullUrls); anything else on them is a SearchError (400), not a scan."""
    from dropzone.search.query import SearchError, parse_search, supported_parameters

    document, message = _load(DOCUMENT), _load(MESSAGE)
    for path in (DOCUMENT, MESSAGE):
        drop(zone, "acme", path)
    assert [r.outcome for r in make_pipeline(any_store).drain()] == [Outcome.ARCHIVED] * 2
    composition = document["entry"][0]["resource"]
    header = message["entry"][0]["resource"]
    [doc_patient] = [
        e["resource"]["id"] for e in document["entry"] if e["resource"]["resourceType"] == "Patient"
    ]

    def ids(**params: str) -> list[str]:
        page = any_store.resources.search("acme", parse_search("Bundle", list(params.items())))
        return [r["id"] for r in page.resources]

    assert ids(**{"composition.patient": doc_patient}) == [document["id"]]
    assert ids(**{"composition.subject": f"Patient/{doc_patient}"}) == [document["id"]]
    assert ids(**{"composition.status": composition["status"]}) == [document["id"]]
    assert ids(**{"composition.patient": "someone-else"}) == []
    assert ids(composition=f"Composition/{composition['id']}") == [document["id"]]
    assert ids(message=header["id"]) == [message["id"]]
    assert ids(**{"composition.status": "final"}, message=header["id"]) == []  # both must hold
    assert {"composition", "message"} <= set(supported_parameters("Bundle"))
    for bad in ({"composition.date": "2020"}, {"composition": "Patient/1"}, {"message.nope": "x"}):
        with pytest.raises(SearchError):
            parse_search("Bundle", list(bad.items()))
