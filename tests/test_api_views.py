"""``GET /api/tenants/{tenant}/views/{name}`` over real uvicorn: the same CSV as ``dropzone
export --format csv``, NDJSON rows, and who may read what."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import Harness, build, live_server

from conftest import BULK, REPO, drop
from dropzone.pipeline.runner import Pipeline
from dropzone.store.sqlite import SqliteStore

DROPZONE = shutil.which("dropzone", path=str(Path(sys.executable).parent)) or "dropzone"
WEIGHT = (
    b'{"resourceType":"Observation","id":"weight-1","status":"final","code":{"text":"weight"},'
    b'"subject":{"reference":"Patient/p-1"},"valueQuantity":{"value":80.00,"unit":"kg"}}\n'
)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """A folder zone whose SQLite store the server and the ``dropzone`` CLI share, with Synthea
    patients and conditions for acme, and the shipped views."""
    root = tmp_path_factory.mktemp("api-views")
    h = build(root)
    shutil.copytree(REPO / "config" / "views", root / "config" / "views")
    h.store = SqliteStore(h.zone / ".dropzone" / "dropzone.sqlite")  # type: ignore[assignment]
    observations = root / "Observation.ndjson"
    observations.write_bytes(WEIGHT)
    drop(h.zone, "acme", BULK / "Patient.000.ndjson", BULK / "Condition.000.ndjson", observations)
    with Pipeline(h.settings, h.store, h.source) as pipeline:
        assert {r.outcome.value for r in pipeline.drain()} == {"archived"}
    with live_server(h, workers=False) as served:
        yield served
    h.store.close()


def cli_csv(h: Harness, view: str, out: Path) -> bytes:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DROPZONE_", "MONGODB_"))}
    command = [DROPZONE, "--config", str(h.settings.config_dir), "export", "--tenant", "acme"]
    command += ["--zone", str(h.zone), "--format", "csv", "--view", view, "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return (out / f"{view}.csv").read_bytes()


@pytest.mark.parametrize("view", ["patient", "condition", "observation"])
def test_the_route_answers_the_same_csv_as_the_cli(api: Harness, view: str, tmp_path: Path) -> None:
    r = api.client.get(f"/api/tenants/acme/views/{view}", headers=api.auth("acme"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    expected = cli_csv(api, view, tmp_path)
    assert r.content == expected
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == {"patient": 13, "condition": 555, "observation": 1}[view]
    if view == "observation":
        assert rows[0]["value_quantity"] == "80.00"


def test_json_rows_are_ndjson_with_typed_booleans(api: Harness) -> None:
    r = api.client.get(
        "/api/tenants/acme/views/patient", params={"_format": "json"}, headers=api.auth("acme")
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in r.text.splitlines()]
    ids = sorted(json.loads(line)["id"] for line in (BULK / "Patient.000.ndjson").read_text().splitlines())
    assert [row["id"] for row in rows] == ids
    assert {type(row["multiple_birth"]) for row in rows} == {bool}
    by_csv = list(
        csv.DictReader(
            io.StringIO(api.client.get("/api/tenants/acme/views/patient", headers=api.auth("acme")).text)
        )
    )
    assert [row["birth_date"] for row in rows] == [row["birth_date"] for row in by_csv]


def test_other_tenants_unknown_views_and_missing_tokens(api: Harness) -> None:
    beta = api.client.get("/api/tenants/acme/views/patient", headers=api.auth("beta"))
    assert beta.status_code == 404  # another tenant's data: as if it did not exist
    own_empty = api.client.get("/api/tenants/beta/views/patient", headers=api.auth("beta"))
    assert own_empty.status_code == 200 and own_empty.text.count("\n") == 1  # the header only
    unknown = api.client.get("/api/tenants/acme/views/nope", headers=api.auth("acme"))
    assert unknown.status_code == 404 and "no such view" in unknown.text
    every = api.client.get("/api/tenants/acme/views/all", headers=api.auth("acme"))
    assert every.status_code == 404  # 'all' means every view on the command line only
    bad_name = api.client.get("/api/tenants/acme/views/Patient!", headers=api.auth("acme"))
    assert bad_name.status_code == 422
    bad_format = api.client.get(
        "/api/tenants/acme/views/patient", params={"_format": "xml"}, headers=api.auth("acme")
    )
    assert bad_format.status_code == 422
    assert api.client.get("/api/tenants/acme/views/patient").status_code == 401
