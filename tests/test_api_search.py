"""FHIR search and $everything over real HTTP (uvicorn), on the SQLite store and on mongomock,
after loading the shared Synthea Bulk NDJSON and transaction Bundles through the pipeline.

Every expected answer is a brute-force filter over the loaded resources (read back with
``iter_resources``: Bundle POST entries get server-assigned ids), written here without the
search code: plain dict walking and datetime comparison."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from api_support import Harness, build, live_server

from conftest import BULK, SYNTHEA, mongomock_store
from dropzone.pipeline.runner import Pipeline
from dropzone.store.base import Store
from dropzone.store.sqlite import SqliteStore

pytestmark = pytest.mark.skipif(not BULK.is_dir(), reason="needs ../shared/samples")


def _load(h: Harness) -> None:
    incoming = h.zone / "incoming" / "acme"
    incoming.mkdir(parents=True, exist_ok=True)
    for path in sorted(BULK.glob("*.000.ndjson")):
        shutil.copyfile(path, incoming / path.name)
    for path in sorted(SYNTHEA.glob("*.json")):
        shutil.copyfile(path, incoming / path.name)
    pipeline = Pipeline(h.settings, h.store, h.source)
    try:
        results = pipeline.drain()
    finally:
        pipeline.close()
    assert results and all(r.outcome == "archived" for r in results), [(r.outcome, r.name) for r in results]


@pytest.fixture(scope="module", params=["sqlite", "mongomock"])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    root = tmp_path_factory.mktemp(f"search-{request.param}")
    h = build(root)
    store: Store = SqliteStore(root / "store.sqlite") if request.param == "sqlite" else mongomock_store()
    h.store = store  # type: ignore[assignment]
    _load(h)
    with live_server(h, workers=False) as served:
        yield served
    store.close()


def _bulk_input(rtype: str) -> list[dict[str, Any]]:
    """The Bulk NDJSON file of one type, as sent (its ids are stored as sent; Bundle entries
    with ``request.method`` POST get server-assigned ids, so for them the stored copy is what
    the brute force reads)."""
    return [
        orjson.loads(line)
        for line in (BULK / f"{rtype}.000.ndjson").read_bytes().splitlines()
        if line.strip()
    ]


def _stored(h: Harness, rtype: str) -> list[dict[str, Any]]:
    return list(h.store.resources.iter_resources("acme", rtype))


def _page_through(h: Harness, url: str) -> tuple[list[str], int]:
    """Follow every next link; (ids in order, total)."""
    ids: list[str] = []
    total = None
    pages = 0
    while url:
        r = h.client.get(url, headers=h.auth("acme"))
        assert r.status_code == 200, r.text
        bundle = r.json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
        total = bundle["total"] if total is None else total
        assert bundle["total"] == total
        for entry in bundle.get("entry", []):
            assert entry["search"] == {"mode": "match"}
            assert entry["fullUrl"].endswith(
                f"/{entry['resource']['resourceType']}/{entry['resource']['id']}"
            )
            ids.append(entry["resource"]["id"])
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        assert "self" in links
        url = links.get("next", "")
        pages += 1
        assert pages < 10_000
    assert total is not None
    return ids, total


def _moment(text: str) -> datetime:
    if len(text) == 10:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_observation_by_patient_equals_brute_force_over_every_page(api: Harness) -> None:
    observations = _stored(api, "Observation")
    assert observations, "the Synthea Bundles hold Observations (the Bulk sample has none)"
    patient = observations[0]["subject"]["reference"].split("/")[1]
    expected = sorted(
        o["id"] for o in observations if o.get("subject", {}).get("reference") == f"Patient/{patient}"
    )
    ids, total = _page_through(api, f"/api/tenants/acme/fhir/Observation?patient={patient}&_count=7")
    assert ids == expected  # in id order, no repeats, nothing skipped
    assert total == len(expected) > 7


def test_condition_by_code_equals_brute_force(api: Harness) -> None:
    conditions = _stored(api, "Condition")
    assert {c["id"] for c in _bulk_input("Condition")} <= {c["id"] for c in conditions}
    coding = conditions[3]["code"]["coding"][0]
    expected = sorted(
        c["id"]
        for c in conditions
        if any(
            x.get("system") == coding["system"] and x.get("code") == coding["code"]
            for x in c["code"]["coding"]
        )
    )
    ids, total = _page_through(
        api, f"/api/tenants/acme/fhir/Condition?code={coding['system']}|{coding['code']}&_count=7"
    )
    assert ids == expected and total == len(expected)
    any_system, _ = _page_through(api, f"/api/fhir/Condition?code={coding['code']}&_count=1000")
    assert any_system == expected


def test_encounter_by_date_ge_equals_brute_force(api: Harness) -> None:
    encounters = _stored(api, "Encounter")
    bound = datetime(2015, 1, 1, tzinfo=UTC)
    expected = sorted(
        e["id"] for e in encounters if "end" not in e["period"] or _moment(e["period"]["end"]) >= bound
    )
    ids, total = _page_through(api, "/api/tenants/acme/fhir/Encounter?date=ge2015-01-01&_count=7")
    assert ids == expected and total == len(expected)
    assert 0 < total < len(encounters)
    before, _ = _page_through(api, "/api/tenants/acme/fhir/Encounter?date=lt2015-01-01&_count=1000")
    starts_before = sorted(e["id"] for e in encounters if _moment(e["period"]["start"]) < bound)
    assert before == starts_before


def test_sort_by_last_updated_pages_in_timestamp_order(api: Harness) -> None:
    ids, total = _page_through(api, "/api/fhir/Immunization?_sort=_lastUpdated&_count=7")
    stored = _stored(api, "Immunization")
    order = sorted(stored, key=lambda r: (r["meta"]["lastUpdated"], r["id"]))
    assert ids == [r["id"] for r in order] and total == len(stored)


def test_everything_is_exactly_the_patients_compartment(api: Harness) -> None:
    patients = _stored(api, "Patient")
    patient = patients[0]["id"]
    target = f"Patient/{patient}"
    expected = {("Patient", patient)}
    for rtype in api.store.resources.resource_types():
        for resource in _stored(api, rtype):
            if _mentions(resource, target) and rtype not in ("Patient", "Practitioner", "Organization"):
                expected.add((rtype, resource["id"]))
    got: list[tuple[str, str]] = []
    url = f"/api/tenants/acme/fhir/Patient/{patient}/$everything?_count=7"
    while url:
        bundle = api.client.get(url, headers=api.auth("acme")).json()
        got += [(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]]
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), "")
    assert len(got) == len(set(got))
    assert set(got) == expected
    assert len(expected) > 50


def _mentions(node: Any, target: str) -> bool:
    if isinstance(node, dict):
        if node.get("reference") == target:
            return True
        return any(_mentions(v, target) for k, v in node.items() if k != "contained")
    if isinstance(node, list):
        return any(_mentions(v, target) for v in node)
    return False


@pytest.mark.parametrize(
    "query",
    [
        "Observation?colour=blue",
        "Observation?code:text=x",
        "Observation?_count=0",
        "Observation?_sort=-date",
        "Observation?date=yesterday",
        "Observation?_cursor=zzz",
        "Observation?patient=Device/1",
    ],
)
def test_unsupported_or_malformed_parameters_are_400_with_an_operation_outcome(
    api: Harness, query: str
) -> None:
    r = api.client.get(f"/api/tenants/acme/fhir/{query}", headers=api.auth("acme"))
    assert r.status_code == 400
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["details"]["coding"][0]["code"] == "invalid_search"


def test_another_tenants_data_is_404_not_403(api: Harness) -> None:
    r = api.client.get("/api/tenants/acme/fhir/Patient", headers=api.auth("beta"))
    assert r.status_code == 404
    unknown = api.client.get("/api/tenants/nosuch/fhir/Patient", headers=api.auth("beta"))
    assert unknown.status_code == 404 and unknown.json() == r.json()
    own = api.client.get("/api/fhir/Patient", headers=api.auth("beta")).json()
    assert own["total"] == 0 and own.get("entry", []) == []


def test_metadata_lists_exactly_what_search_accepts_and_is_valid_r4(api: Harness) -> None:
    from dropzone.validation import validate_resource

    r = api.client.get("/api/fhir/metadata")  # no token: clients read it before they authenticate
    assert r.status_code == 200
    cap = r.json()
    assert cap["resourceType"] == "CapabilityStatement" and cap["fhirVersion"] == "4.0.1"
    assert validate_resource(cap) == []
    assert api.client.get("/api/tenants/nosuch/fhir/metadata").json()["rest"] == cap["rest"]
    resources = {r["type"]: r for r in cap["rest"][0]["resource"]}
    assert {
        "name": "everything",
        "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
    } in resources["Patient"]["operation"]
    observation = {p["name"]: p["type"] for p in resources["Observation"]["searchParam"]}
    assert {
        "code": "token",
        "patient": "reference",
        "date": "date",
        "_lastUpdated": "date",
    }.items() <= observation.items()
    samples = {"token": "x", "reference": "x", "date": "ge2020"}
    for name, kind in observation.items():
        value = "x" if name == "_id" else samples[kind]
        answer = api.client.get(f"/api/fhir/Observation?{name}={value}", headers=api.auth("acme"))
        assert answer.status_code == 200, (name, answer.text)
    token = cap["rest"][0]["security"]["extension"][0]["extension"][0]["valueUri"]
    assert token.endswith("/api/authenticate")


def test_errors_on_both_fhir_bases_are_fhir_json(api: Harness) -> None:
    for url in ("/api/tenants/acme/fhir/Observation?colour=1", "/api/fhir/Observation?colour=1"):
        r = api.client.get(url, headers=api.auth("acme"))
        assert r.status_code == 400 and r.headers["content-type"].startswith("application/fhir+json")
