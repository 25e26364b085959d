"""Bulk Data $export over real HTTP (uvicorn on 127.0.0.1): kick-off, status, manifest, files
byte-equal to what ``dropzone export`` writes, filters, refusals, tenant isolation, cancel and
expiry."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import Harness, build, live_server

from conftest import BULK, drop, line_count, make_settings
from dropzone.api.export_jobs import ExportJobs, JobState, export_root
from dropzone.export import export_ndjson, normalise_since
from dropzone.pipeline.runner import Pipeline
from dropzone.sources.folder import FolderSource
from dropzone.store.memory import MemoryStore
from dropzone.store.sqlite import SqliteStore

BULK_FILES = sorted(p for p in BULK.glob("*.ndjson") if p.name != "log.ndjson")
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
EXPORT = "/api/tenants/{tenant}/fhir/$export"


@pytest.fixture(scope="module")
def bulk_store(tmp_path_factory: pytest.TempPathFactory) -> MemoryStore:
    """The shared Synthea Bulk NDJSON loaded for tenant acme through the pipeline, once."""
    zone = tmp_path_factory.mktemp("bulk-zone")
    (zone / "incoming").mkdir()
    drop(zone, "acme", *BULK_FILES)
    store = MemoryStore()
    with Pipeline(make_settings(zone, validation_workers=2), store, FolderSource(zone)) as pipeline:
        results = pipeline.drain()
    assert {r.outcome.value for r in results} == {"archived"}
    return store


@pytest.fixture
def api(tmp_path: Path, bulk_store: MemoryStore) -> Iterator[Harness]:
    harness = build(tmp_path)
    harness.store = bulk_store
    with live_server(harness, workers=False) as h:
        yield h


def kick_off(h: Harness, tenant: str = "acme", query: str = "", **headers: str) -> httpx.Response:
    url = EXPORT.format(tenant=tenant) + (f"?{query}" if query else "")
    return h.client.get(url, headers={**h.auth(tenant), **ASYNC, **headers})


def started(h: Harness, query: str = "") -> str:
    r = kick_off(h, query=query)
    assert r.status_code == 202, r.text
    return r.headers["content-location"]


def finished(h: Harness, status_url: str, tenant: str = "acme", timeout: float = 60.0) -> httpx.Response:
    """Poll like a client: every answer until the last is 202 with X-Progress and Retry-After."""
    deadline = time.monotonic() + timeout
    while True:
        r = h.client.get(status_url, headers=h.auth(tenant))
        if r.status_code != 202:
            return r
        assert r.headers["x-progress"] and r.headers["retry-after"].isdigit()
        assert time.monotonic() < deadline, f"export still running after {timeout}s"
        time.sleep(0.05)


def cli_export(h: Harness, out: Path, types: list[str] | None = None, since: str | None = None) -> dict:
    """What the `dropzone export` engine writes for the same tenant: name -> bytes."""
    written = export_ndjson(h.store.resources, "acme", out, types, since)
    return {w.path.name: w.path.read_bytes() for w in written}


def downloaded(h: Harness, manifest: dict[str, Any], tenant: str = "acme") -> dict[str, bytes]:
    files = {}
    for item in manifest["output"]:
        r = h.client.get(item["url"], headers=h.auth(tenant))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/fhir+ndjson")
        assert r.content.count(b"\n") == item["count"]
        files[item["url"].rsplit("/", 1)[1]] = r.content
    return files


def test_a_whole_tenant_export_is_byte_equal_to_dropzone_export(api: Harness, tmp_path: Path) -> None:
    status_url = started(api)
    assert status_url.startswith(f"{api.url}/api/tenants/acme/fhir/$export-status/")
    r = finished(api, status_url)

    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert "expires" in r.headers
    manifest = r.json()
    assert manifest["request"] == f"{api.url}/api/tenants/acme/fhir/$export"
    assert manifest["requiresAccessToken"] is True
    assert manifest["error"] == []
    datetime.fromisoformat(manifest["transactionTime"])  # an instant
    expected_counts = {p.name.split(".")[0]: line_count(p) for p in BULK_FILES}
    assert {o["type"]: o["count"] for o in manifest["output"]} == expected_counts
    assert [o["type"] for o in manifest["output"]] == sorted(expected_counts)
    assert downloaded(api, manifest) == cli_export(api, tmp_path / "cli")


def test_type_filter_and_output_format(api: Harness, tmp_path: Path) -> None:
    status_url = started(
        api, "_type=Patient,Condition&_type=Device&_outputFormat=application%2Ffhir%2Bndjson"
    )
    manifest = finished(api, status_url).json()
    assert [o["type"] for o in manifest["output"]] == ["Condition", "Device", "Patient"]
    assert downloaded(api, manifest) == cli_export(api, tmp_path / "cli", ["Patient", "Condition", "Device"])
    assert manifest["request"].endswith(
        "?_type=Patient,Condition&_type=Device&_outputFormat=application%2Ffhir%2Bndjson"
    )


def test_since_in_the_future_exports_nothing_and_in_the_past_everything(api: Harness, tmp_path: Path) -> None:
    future = finished(api, started(api, "_since=2999-01-01T00:00:00Z&_type=Patient"))
    assert future.status_code == 200 and future.json()["output"] == []
    past = finished(api, started(api, "_since=2000-01-01T00:00:00%2B01:00&_type=Patient"))
    manifest = past.json()
    assert [o["type"] for o in manifest["output"]] == ["Patient"]
    since = normalise_since("2000-01-01T00:00:00+01:00")
    assert downloaded(api, manifest) == cli_export(api, tmp_path / "cli", ["Patient"], since)


def _code(r: httpx.Response) -> str:
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]["details"]["coding"][0]["code"]


@pytest.mark.parametrize(
    ("query", "headers", "status", "code"),
    [
        ("", {"Prefer": ""}, 400, "respond_async_required"),
        ("", {"Prefer": "handling=lenient"}, 400, "respond_async_required"),
        ("", {"Accept": "text/html"}, 406, "not_acceptable"),
        ("_since=yesterday-Qx7", {}, 400, "invalid_since"),
        ("_since=2026-01-01&_since=2026-02-01", {}, 400, "invalid_parameter"),
        ("_type=Patient,NotAType", {}, 400, "unsupported_type"),
        ("_outputFormat=text/csv", {}, 400, "unsupported_output_format"),
        ("_typeFilter=Patient%3Factive%3Dtrue", {}, 400, "unsupported_parameter"),
        ("patient=Patient/1", {}, 400, "unsupported_parameter"),
    ],
)
def test_kick_off_refusals(api: Harness, query: str, headers: dict, status: int, code: str) -> None:
    r = kick_off(api, query=query, **headers)
    assert r.status_code == status, r.text
    assert _code(r) == code
    assert "Qx7" not in r.text and "NotAType" not in r.text  # request values are never echoed


def test_lenient_handling_ignores_unsupported_parameters(api: Harness) -> None:
    r = kick_off(api, query="_type=Patient&_elements=id", Prefer="respond-async, handling=lenient")
    assert r.status_code == 202
    assert [o["type"] for o in finished(api, r.headers["content-location"]).json()["output"]] == ["Patient"]


def test_another_tenant_gets_404_on_kick_off_status_files_and_delete(api: Harness) -> None:
    status_url = started(api, "_type=Patient")
    manifest = finished(api, status_url).json()
    file_url = manifest["output"][0]["url"]
    job = status_url.rsplit("/", 1)[1]
    beta = api.auth("beta")

    assert api.client.get(EXPORT.format(tenant="acme"), headers={**beta, **ASYNC}).status_code == 404
    assert api.client.get(status_url, headers=beta).status_code == 404
    assert api.client.get(file_url, headers=beta).status_code == 404
    assert api.client.delete(status_url, headers=beta).status_code == 404
    # The job id under beta's own tenant does not reach acme's job either.
    own = f"/api/tenants/beta/fhir/$export-status/{job}"
    assert api.client.get(own, headers=beta).status_code == 404
    assert (
        api.client.get(f"/api/tenants/beta/fhir/$export-files/{job}/Patient.ndjson", headers=beta).status_code
        == 404
    )
    assert api.client.delete(own, headers=beta).status_code == 404
    assert api.client.get(status_url).status_code == 401  # no token at all
    # acme's job is untouched by all of that.
    assert api.client.get(file_url, headers=api.auth("acme")).status_code == 200


def test_delete_removes_a_finished_job_and_its_files(api: Harness) -> None:
    status_url = started(api, "_type=Patient,Device")
    manifest = finished(api, status_url).json()
    folder = export_root(api.settings) / status_url.rsplit("/", 1)[1]
    assert sorted(p.name for p in folder.iterdir()) == ["Device.ndjson", "Patient.ndjson"]

    assert api.client.delete(status_url, headers=api.auth("acme")).status_code == 202
    assert api.client.get(status_url, headers=api.auth("acme")).status_code == 404
    assert api.client.get(manifest["output"][0]["url"], headers=api.auth("acme")).status_code == 404
    assert api.client.delete(status_url, headers=api.auth("acme")).status_code == 404
    assert not folder.exists()


def test_a_running_job_reports_progress_and_delete_cancels_it(api: Harness) -> None:
    # Holding the store's lock stalls the export at its first read, so "running" lasts.
    lock = api.store.resources._lock
    with lock:
        status_url = started(api)
        r = api.client.get(status_url, headers=api.auth("acme"))
        assert r.status_code == 202
        assert r.headers["x-progress"] in ("queued", "0 resources written")
        assert r.headers["retry-after"] == "2"
        assert api.client.delete(status_url, headers=api.auth("acme")).status_code == 202
        assert api.client.get(status_url, headers=api.auth("acme")).status_code == 404
    folder = export_root(api.settings) / status_url.rsplit("/", 1)[1]
    deadline = time.monotonic() + 30
    while folder.exists():  # the worker stops at its next resource and removes what it wrote
        assert time.monotonic() < deadline, "cancelled export left its folder"
        time.sleep(0.05)


def test_jobs_are_bounded_per_process_and_per_tenant(api: Harness) -> None:
    with api.store.resources._lock:  # the first job stalls, the rest wait behind it
        urls = [started(api, "_type=Patient") for _ in range(4)]
        busy = kick_off(api, tenant="beta")
        assert busy.status_code == 429 and _code(busy) == "too_many_exports"
        assert busy.headers["retry-after"].isdigit()
    for url in urls:
        assert finished(api, url).status_code == 200
    # Finished jobs still hold their files until deleted or expired: the tenant is at its limit.
    full = kick_off(api, query="_type=Patient")
    assert full.status_code == 429 and _code(full) == "too_many_exports"
    assert kick_off(api, tenant="beta").status_code == 202  # another tenant is not blocked
    assert api.client.delete(urls[0], headers=api.auth("acme")).status_code == 202
    assert kick_off(api, query="_type=Patient").status_code == 202


def test_a_failed_export_answers_500_with_an_operation_outcome(tmp_path: Path) -> None:
    harness = build(tmp_path)
    store = SqliteStore(tmp_path / "db" / "dropzone.sqlite")
    store.close()  # every read now fails: the job must fail, not the API
    harness.store = store  # type: ignore[assignment]
    with live_server(harness, workers=False) as h:
        r = finished(h, started(h))
        assert r.status_code == 500
        assert r.headers["content-type"].startswith("application/fhir+json")
        assert _code(r) == "store_unavailable"
        assert not any((export_root(h.settings)).iterdir())  # nothing half-written is kept


def test_finished_jobs_expire_with_their_files(tmp_path: Path, bulk_store: MemoryStore) -> None:
    now = [1_000_000.0]
    jobs = ExportJobs(bulk_store.resources, tmp_path / "exports", ttl_seconds=3600, clock=lambda: now[0])
    job = jobs.submit("acme", "http://x/$export", ("Patient",), None)
    deadline = time.monotonic() + 30
    while job.state is not JobState.COMPLETE:
        assert time.monotonic() < deadline and job.state is not JobState.FAILED
        time.sleep(0.02)
    assert jobs.output(job, "Patient").read_bytes().count(b"\n") == line_count(BULK / "Patient.000.ndjson")
    assert jobs.expires_at(job) == now[0] + 3600

    now[0] += 3599
    assert jobs.get("acme", job.id) is job
    now[0] += 1
    assert jobs.get("acme", job.id) is None
    assert not job.folder.exists()


def test_folders_left_by_an_ended_process_are_removed_once_expired(tmp_path: Path) -> None:
    root = tmp_path / "exports"
    old, recent = root / ("a" * 32), root / ("b" * 32)
    for folder in (old, recent):
        folder.mkdir(parents=True)
        (folder / "Patient.ndjson").write_bytes(b"{}\n")
    stamp = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    os.utime(old, (stamp, stamp))
    ExportJobs(MemoryStore().resources, root, ttl_seconds=3600, clock=lambda: stamp + 7200)
    assert not old.exists()
    assert recent.exists()  # its mtime is now: not yet expired


def test_an_expired_jobs_files_are_removed_without_any_further_call(
    tmp_path: Path, bulk_store: MemoryStore
) -> None:
    jobs = ExportJobs(bulk_store.resources, tmp_path / "exports", ttl_seconds=0.2)
    job = jobs.submit("acme", "http://x/$export", ("Device",), None)
    deadline = time.monotonic() + 30
    while job.folder.exists():  # written, then swept by the expiry timer alone
        assert time.monotonic() < deadline, "the expired job's folder was kept"
        assert job.state is not JobState.FAILED
        time.sleep(0.05)
    assert job.state is JobState.COMPLETE and job.outputs[0].count == line_count(BULK / "Device.000.ndjson")
    assert jobs._jobs == {}  # forgotten too, not only its folder
