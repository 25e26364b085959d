"""Single-resource updates: versioning, validation with OperationOutcome, tenant isolation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import Harness, build, in_process, live_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dropzone.store.base import META_KEY

PATIENT = {
    "resourceType": "Patient",
    "id": "p-1",
    "name": [{"family": "Example", "given": ["Pat"]}],
    "gender": "female",
    "birthDate": "1970-01-02",
}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Harness]:
    """Real uvicorn on 127.0.0.1 (no workers: single updates do not need them)."""
    with live_server(build(tmp_path, max_resource_bytes=4096), workers=False) as h:
        yield h


def put(h: Harness, tenant: str, resource: dict, rid: str = "p-1", **headers: str):
    return h.client.put(
        f"/api/fhir/{resource.get('resourceType', 'Patient')}/{rid}",
        json=resource,
        headers={**h.auth(tenant), "Content-Type": "application/fhir+json", **headers},
    )


def test_put_creates_version_1_then_identical_is_unchanged_then_change_is_version_2(api: Harness) -> None:
    first = put(api, "acme", PATIENT)
    assert first.status_code == 201
    assert first.json()["meta"]["versionId"] == "1"
    assert first.headers["etag"] == 'W/"1"'
    assert first.headers["location"] == "/api/fhir/Patient/p-1/_history/1"
    assert first.headers["content-type"].startswith("application/fhir+json")

    again = put(api, "acme", PATIENT)
    assert again.status_code == 200
    assert again.json()["meta"]["versionId"] == "1"

    changed = put(api, "acme", {**PATIENT, "gender": "male"})
    assert changed.status_code == 200
    assert changed.json()["meta"]["versionId"] == "2"
    assert changed.json()["gender"] == "male"

    history = api.store.resources.history("acme", "Patient", "p-1")
    assert [d[META_KEY]["version"] for d in history] == [1]
    assert history[0]["gender"] == "female"
    v1 = api.client.get("/api/fhir/Patient/p-1/_history/1", headers=api.auth("acme"))
    v2 = api.client.get("/api/fhir/Patient/p-1/_history/2", headers=api.auth("acme"))
    assert (v1.json()["gender"], v2.json()["gender"]) == ("female", "male")
    assert api.client.get("/api/fhir/Patient/p-1/_history/3", headers=api.auth("acme")).status_code == 404
    read = api.client.get("/api/fhir/Patient/p-1", headers=api.auth("acme"))
    assert read.status_code == 200 and read.json()["meta"]["versionId"] == "2"
    assert META_KEY not in read.json() and "_id" not in read.json()


def test_invalid_resource_is_422_with_paths_and_no_values_and_nothing_stored(api: Harness) -> None:
    bad = {**PATIENT, "birthDate": "Secretname-Q7", "gender": {"odd": "Zyxwv-Private"}}
    r = put(api, "acme", bad)
    assert r.status_code == 422
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    paths = {e for issue in outcome["issue"] for e in issue.get("expression", [])}
    assert "Patient.birthDate" in paths and "Patient.gender" in paths
    assert "Secretname" not in r.text and "Zyxwv" not in r.text
    assert api.store.resources.get("acme", "Patient", "p-1") is None
    assert api.client.get("/api/fhir/Patient/p-1", headers=api.auth("acme")).status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/api/fhir/Patient/p-1", {**PATIENT, "id": "other"}, 400, "id_mismatch"),
        ("/api/fhir/Patient/p-1", {k: v for k, v in PATIENT.items() if k != "id"}, 400, "missing_id"),
        ("/api/fhir/Observation/p-1", PATIENT, 400, "type_mismatch"),
        ("/api/fhir/Spaceship/p-1", {**PATIENT, "resourceType": "Spaceship"}, 404, "unknown_type"),
        ("/api/fhir/HumanName/p-1", {"resourceType": "HumanName", "id": "p-1"}, 404, "unknown_type"),
        ("/api/fhir/Patient/p-1", [PATIENT], 400, "not_a_resource"),
    ],
)
def test_malformed_updates_are_4xx_operation_outcomes(
    api: Harness, path: str, body: object, status: int, code: str
) -> None:
    r = api.client.put(path, json=body, headers=api.auth("acme"))
    assert r.status_code == status
    assert r.json()["resourceType"] == "OperationOutcome"
    assert r.json()["issue"][0]["details"]["text"] == code


def test_not_json_and_oversized_bodies(api: Harness) -> None:
    r = api.client.put("/api/fhir/Patient/p-1", content=b"{not json", headers=api.auth("acme"))
    assert r.status_code == 400 and r.json()["issue"][0]["details"]["text"] == "invalid_json"
    big = {**PATIENT, "text": {"status": "generated", "div": "<div>" + "x" * 5000 + "</div>"}}
    r = put(api, "acme", big)
    assert r.status_code == 413
    assert r.json()["resourceType"] == "OperationOutcome"


def test_bad_ids_in_url_are_rejected(api: Harness) -> None:
    r = api.client.put("/api/fhir/Patient/bad id!", json=PATIENT, headers=api.auth("acme"))
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"
    assert "bad id" not in r.text


def test_post_assigns_an_id_and_if_match_guards_updates(api: Harness) -> None:
    r = api.client.post("/api/fhir/Patient", json=PATIENT, headers=api.auth("acme"))
    assert r.status_code == 201
    new_id = r.json()["id"]
    assert new_id != "p-1"
    assert r.headers["location"] == f"/api/fhir/Patient/{new_id}/_history/1"
    stale = put(
        api, "acme", {**PATIENT, "id": new_id, "gender": "other"}, rid=new_id, **{"If-Match": 'W/"7"'}
    )
    assert stale.status_code == 412
    ok = put(api, "acme", {**PATIENT, "id": new_id, "gender": "other"}, rid=new_id, **{"If-Match": 'W/"1"'})
    assert ok.status_code == 200 and ok.json()["meta"]["versionId"] == "2"


def test_tenants_never_see_or_change_each_other(api: Harness) -> None:
    assert put(api, "acme", PATIENT).status_code == 201
    assert api.client.get("/api/fhir/Patient/p-1", headers=api.auth("beta")).status_code == 404
    assert api.client.get("/api/fhir/Patient/p-1/_history/1", headers=api.auth("beta")).status_code == 404
    # beta writing the same id makes beta's own resource; acme's stays at version 1, unchanged.
    other = put(api, "beta", {**PATIENT, "gender": "male"})
    assert other.status_code == 201 and other.json()["meta"]["versionId"] == "1"
    mine = api.client.get("/api/fhir/Patient/p-1", headers=api.auth("acme")).json()
    assert mine["gender"] == "female" and mine["meta"]["versionId"] == "1"
    assert api.store.resources.history("acme", "Patient", "p-1") == []


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=10,
)
FIELDS = st.sampled_from(
    ["name", "birthDate", "gender", "telecom", "address", "active", "meta", "contained", "x"]
)


@pytest.fixture(scope="module")
def fuzz_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with in_process(build(tmp_path_factory.mktemp("fuzz"))) as h:
        yield h


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(extra=st.dictionaries(FIELDS, JSON, max_size=4))
def test_fuzzed_patient_bodies_never_cause_server_errors(fuzz_api: Harness, extra: dict) -> None:
    r = put(fuzz_api, "acme", {**PATIENT, **extra})
    assert r.status_code in (200, 201, 400, 422), r.text
    if r.status_code == 422:
        assert r.json()["resourceType"] == "OperationOutcome"
        assert all(issue.get("expression") for issue in r.json()["issue"])


def test_store_outage_is_503_and_unexpected_errors_are_500_without_details(
    api: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api_support import captured_logs

    from dropzone.errors import StoreUnavailable

    def down(*_a: object, **_k: object) -> None:
        raise StoreUnavailable("MongoDB: ServerSelectionTimeoutError")

    def broken(*_a: object, **_k: object) -> None:
        raise KeyError("Secretname-Q7")  # a bug whose message quotes data

    monkeypatch.setattr(api.store.resources, "upsert", down)
    r = put(api, "acme", PATIENT)
    assert r.status_code == 503 and r.headers["retry-after"]
    assert r.json()["issue"][0]["code"] == "transient"
    monkeypatch.setattr(api.store.resources, "upsert", broken)
    with captured_logs() as logs:
        r = put(api, "acme", PATIENT)
    assert r.status_code == 500 and r.json()["issue"][0]["diagnostics"] == "internal error"
    assert "Secretname" not in r.text and "Secretname" not in logs.text
    assert "api.internal_error" in logs.text and "KeyError" in logs.text
