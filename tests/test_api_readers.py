"""Internal readers (`dropzone reader add/rotate/remove`): read-only tokens for chosen tenants,
over real uvicorn; plus the tenant-path reads, the SMART configuration and `GET /api/batch`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import orjson
import pytest
from api_support import Harness, build, live_server, samples_dir
from click.testing import CliRunner

from dropzone.api.reader_files import add_reader, remove_reader, rotate_reader
from dropzone.cli.app import main

PATIENTS = samples_dir() / "smart-bulk-fhir-10-patients" / "Patient.000.ndjson"
REFRESH = 1.05  # the credential registry re-reads changed files at most once a second


def _token(h: Harness, client_id: str, secret: str) -> tuple[int, dict]:
    r = h.client.post(
        "/api/authenticate",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    return r.status_code, r.json()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """acme and beta each push the ten sample Patients; a worker archives both files."""
    with live_server(build(tmp_path_factory.mktemp("readers"))) as h:
        for tenant in ("acme", "beta"):
            accepted = h.client.post(
                "/api/batch",
                params={"name": "patients.ndjson"},
                content=PATIENTS.read_bytes(),
                headers=h.auth(tenant),
            )
            assert accepted.status_code == 202, accepted.text
            assert h.wait_final(tenant, accepted.json()["status_url"])["state"] == "archived"
        yield h


def _patient_ids() -> list[str]:
    return sorted(orjson.loads(line)["id"] for line in PATIENTS.read_bytes().splitlines() if line.strip())


def test_cli_reader_add_rotate_remove(tmp_path: Path) -> None:
    runner = CliRunner()
    config = tmp_path / "cfg"
    add = ["--config", str(config), "reader", "add", "analytics", "--tenants", "acme,beta", "--json"]
    r = runner.invoke(main, add)
    assert r.exit_code == 0, r.output
    issued = orjson.loads(r.stdout)
    assert set(issued) == {"reader", "client_id", "client_secret"}
    assert issued["reader"] == "analytics" and issued["client_id"].startswith("analytics.")
    text = (config / "readers" / "analytics.yaml").read_text()
    assert issued["client_secret"] not in text and "client_secret_hash: scrypt$" in text
    assert "- acme" in text and "- beta" in text

    again = runner.invoke(main, ["--config", str(config), "reader", "add", "analytics", "--tenants", "*"])
    assert again.exit_code == 2 and "rotate" in again.output
    no_tenants = runner.invoke(main, ["--config", str(config), "reader", "add", "other"])
    assert no_tenants.exit_code == 2 and "--tenants" in no_tenants.output
    bad = runner.invoke(main, ["--config", str(config), "reader", "add", "x", "--tenants", "Not A Tenant"])
    assert bad.exit_code == 2 and not (config / "readers" / "x.yaml").exists()

    rot = runner.invoke(main, ["--config", str(config), "reader", "rotate", "analytics", "--json"])
    assert rot.exit_code == 0, rot.output
    rotated = orjson.loads(rot.stdout)
    assert rotated["client_id"] == issued["client_id"] and rotated["client_secret"] != issued["client_secret"]
    assert "- acme" in (config / "readers" / "analytics.yaml").read_text()  # tenants kept

    gone = runner.invoke(main, ["--config", str(config), "reader", "remove", "analytics"])
    assert gone.exit_code == 0 and not (config / "readers" / "analytics.yaml").exists()
    assert runner.invoke(main, ["--config", str(config), "reader", "remove", "analytics"]).exit_code == 2


def test_a_reader_reads_its_tenants_and_nothing_else(api: Harness) -> None:
    config = api.settings.config_dir
    reader = add_reader(config, "acme-analyst", frozenset({"acme"}))
    time.sleep(REFRESH)
    status, body = _token(api, reader.client_id, reader.client_secret)
    assert status == 200 and body["scope"] == "system/*.read"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["kind"] == "reader" and claims["reader"] == "acme-analyst" and "tenant" not in claims
    headers = _bearer(body["access_token"])

    found = api.client.get("/api/tenants/acme/fhir/Patient", params={"_count": 100}, headers=headers)
    assert found.status_code == 200, found.text
    assert sorted(e["resource"]["id"] for e in found.json()["entry"]) == _patient_ids()
    one = _patient_ids()[0]
    read = api.client.get(f"/api/tenants/acme/fhir/Patient/{one}", headers=headers)
    assert read.status_code == 200 and read.json()["id"] == one
    vread = api.client.get(f"/api/tenants/acme/fhir/Patient/{one}/_history/1", headers=headers)
    assert vread.status_code == 200 and vread.json()["meta"]["versionId"] == "1"
    everything = api.client.get(f"/api/tenants/acme/fhir/Patient/{one}/$everything", headers=headers)
    assert everything.status_code == 200 and everything.json()["entry"][0]["resource"]["id"] == one
    assert api.client.get("/api/tenants/acme/references", headers=headers).status_code == 200
    kick_off = {**headers, "Prefer": "respond-async"}
    assert api.client.get("/api/tenants/acme/fhir/$export", headers=kick_off).status_code == 202

    # Another tenant, and one that does not exist, answer the same 404: nothing to probe.
    other = api.client.get(f"/api/tenants/beta/fhir/Patient/{one}", headers=headers)
    unknown = api.client.get(f"/api/tenants/nosuch/fhir/Patient/{one}", headers=headers)
    assert other.status_code == unknown.status_code == 404
    assert other.json() == unknown.json()
    assert api.client.get("/api/tenants/beta/fhir/Patient", headers=headers).status_code == 404


def test_a_reader_never_writes(api: Harness) -> None:
    reader = add_reader(api.settings.config_dir, "everyone", None)
    time.sleep(REFRESH)
    headers = _bearer(_token(api, reader.client_id, reader.client_secret)[1]["access_token"])
    # '*' reads every tenant.
    for tenant in ("acme", "beta"):
        assert api.client.get(f"/api/tenants/{tenant}/fhir/Patient", headers=headers).status_code == 200
    patient = orjson.loads(PATIENTS.read_bytes().splitlines()[0])
    refusals = [
        api.client.post("/api/batch", params={"name": "x.ndjson"}, content=b"{}", headers=headers),
        api.client.post("/api/fhir/Patient", content=orjson.dumps(patient), headers=headers),
        api.client.put(f"/api/fhir/Patient/{patient['id']}", content=orjson.dumps(patient), headers=headers),
        # The tenant-token shorthand has no tenant for a reader to name.
        api.client.get(f"/api/fhir/Patient/{patient['id']}", headers=headers),
        api.client.get("/api/batch", headers=headers),
    ]
    for r in refusals:
        assert r.status_code == 403, (r.request.method, r.request.url, r.text)
        assert "read_only_token" in r.text
    assert api.files_under("incoming") == []  # nothing was written


def test_rotate_remove_and_narrowing_take_effect_on_tokens_already_issued(api: Harness) -> None:
    config = api.settings.config_dir
    reader = add_reader(config, "rotating", frozenset({"acme", "beta"}))
    time.sleep(REFRESH)
    old = _bearer(_token(api, reader.client_id, reader.client_secret)[1]["access_token"])
    assert api.client.get("/api/tenants/beta/fhir/Patient", headers=old).status_code == 200

    path = config / "readers" / "rotating.yaml"
    path.write_text(path.read_text().replace("- beta\n", ""))  # narrow to acme by hand
    time.sleep(REFRESH)
    assert api.client.get("/api/tenants/beta/fhir/Patient", headers=old).status_code == 404
    assert api.client.get("/api/tenants/acme/fhir/Patient", headers=old).status_code == 200

    rotated = rotate_reader(config, "rotating")
    time.sleep(REFRESH)
    assert api.client.get("/api/tenants/acme/fhir/Patient", headers=old).status_code == 401
    assert _token(api, reader.client_id, reader.client_secret)[0] == 401
    status, body = _token(api, rotated.client_id, rotated.client_secret)
    assert status == 200
    new = _bearer(body["access_token"])
    remove_reader(config, "rotating")
    time.sleep(REFRESH)
    assert api.client.get("/api/tenants/acme/fhir/Patient", headers=new).status_code == 401


def test_a_tenant_token_reads_its_own_tenant_path_only(api: Harness) -> None:
    one = _patient_ids()[0]
    own = api.client.get(f"/api/tenants/acme/fhir/Patient/{one}", headers=api.auth("acme"))
    assert own.status_code == 200 and own.json()["id"] == one
    assert own.json() == api.client.get(f"/api/fhir/Patient/{one}", headers=api.auth("acme")).json()
    beta = api.client.get(f"/api/tenants/beta/fhir/Patient/{one}", headers=api.auth("acme"))
    assert beta.status_code == 404


def test_smart_configuration_needs_no_token_and_names_what_is_implemented(api: Harness) -> None:
    bodies = [
        api.client.get(path).json()
        for path in (
            "/.well-known/smart-configuration",
            "/api/fhir/.well-known/smart-configuration",
            "/api/tenants/acme/fhir/.well-known/smart-configuration",
            "/api/tenants/nosuch/fhir/.well-known/smart-configuration",
        )
    ]
    assert all(b == bodies[0] for b in bodies)
    conf = bodies[0]
    assert conf["token_endpoint"] == api.url + "/api/authenticate"
    assert conf["grant_types_supported"] == ["client_credentials"]
    assert "private_key_jwt" in conf["token_endpoint_auth_methods_supported"]
    assert set(conf["scopes_supported"]) == {"system/*.read", "system/*.write"}
    # The token endpoint it names really issues tokens.
    c = api.creds["acme"]
    assert _token(api, c.client_id, c.client_secret)[0] == 200


def test_batch_list_has_uploads_and_dropped_files_with_outcomes(api: Harness) -> None:
    dropped = api.zone / "incoming" / "beta" / "dropped.ndjson"
    dropped.parent.mkdir(parents=True, exist_ok=True)
    dropped.write_bytes(b'{"resourceType": "Patient", "id": "dropped-1", "gender": "bogus"}\n')
    deadline = time.monotonic() + 60
    while True:
        items = api.client.get("/api/batch", headers=api.auth("beta")).json()["items"]
        done = [i for i in items if i["name"] == "dropped.ndjson" and i["state"] != "processing"]
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert done, items
    drop = done[0]
    assert drop["via"] == "drop" and drop["status_url"] is None
    assert drop["state"] == "quarantined" and drop["records"]["rejected"] == 1 and drop["has_report"]
    upload = next(i for i in items if i["name"] == "patients.ndjson")
    assert upload["via"] == "api" and upload["state"] == "archived"
    assert upload["records"]["loaded"] == len(_patient_ids())
    assert upload["status_url"] == f"/api/batch/{upload['id']}"
    assert api.client.get(upload["status_url"], headers=api.auth("beta")).status_code == 200
    # Newest first, and only the caller's tenant.
    assert [i["name"] for i in items[:2]] == ["dropped.ndjson", "patients.ndjson"]
    acme = api.client.get("/api/batch", headers=api.auth("acme")).json()["items"]
    assert [i["name"] for i in acme] == ["patients.ndjson"]
    assert api.client.get("/api/batch", params={"limit": 0}, headers=api.auth("acme")).status_code == 422
