"""Batch uploads over real HTTP (uvicorn on 127.0.0.1): into incoming/, through the pipeline and
watcher, status from the ledger; oversized, cut-off and hostile uploads."""

from __future__ import annotations

import gzip
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import psutil
import pytest
from api_support import Harness, build, live_server, samples_dir

from dropzone.models import IncomingFile
from dropzone.pipeline.runner import Pipeline
from dropzone.sources.folder import FolderSource
from dropzone.watcher import Watcher

SAMPLES = samples_dir()
BULK = SAMPLES / "smart-bulk-fhir-10-patients"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Harness]:
    with live_server(build(tmp_path, max_upload_bytes=8 * 2**20)) as h:
        yield h


def upload(h: Harness, tenant: str, name: str, body: bytes | Iterator[bytes], **headers: str):
    return h.client.post(
        "/api/batch", params={"name": name}, content=body, headers={**h.auth(tenant), **headers}
    )


def test_ndjson_upload_is_archived_with_exact_counts(api: Harness) -> None:
    data = (BULK / "Patient.000.ndjson").read_bytes()
    r = upload(api, "acme", "Patient.000.ndjson", data)
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["status_url"] == f"/api/batch/{accepted['id']}" == r.headers["location"]
    assert accepted["size"] == len(data)
    status = api.wait_final("acme", accepted["status_url"])
    assert status["state"] == "archived"
    assert status["records"] == {"read": 13, "loaded": 13, "unchanged": 0, "rejected": 0}
    assert status["report"] is None and status["name"] == "Patient.000.ndjson"
    assert api.store.resources.counts(["acme"]) == {"Patient": 13}
    assert api.files_under("incoming") == []
    assert any(k.endswith("/Patient.000.ndjson") for k in api.files_under("archived/acme"))
    # The same bytes again: the pipeline recognises the content.
    again = upload(api, "acme", "Patient-again.ndjson", data)
    assert api.wait_final("acme", again.json()["status_url"])["state"] == "duplicate"


class _HeldMoves(FolderSource):
    """A folder zone whose moves to archived/ wait until the test lets them go."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.moving = threading.Event()
        self.release = threading.Event()

    def move(self, file: IncomingFile, dest_key: str) -> str:
        if dest_key.startswith("archived/"):
            self.moving.set()
            assert self.release.wait(30)
        return super().move(file, dest_key)


def test_status_says_processing_until_the_file_is_archived(tmp_path: Path) -> None:
    """The outcome is committed before the move (crash safety); the status URL must not say
    archived while the file is still in incoming/."""
    plain = build(tmp_path)
    held = _HeldMoves(plain.zone)
    with live_server(Harness(plain.settings, plain.store, held, plain.creds)) as h:
        r = upload(h, "acme", "Patient.000.ndjson", (BULK / "Patient.000.ndjson").read_bytes())
        assert held.moving.wait(30)
        status = h.client.get(r.json()["status_url"], headers=h.auth("acme")).json()
        assert status["state"] == "processing"
        assert len(h.files_under("incoming")) == 1
        held.release.set()
        assert h.wait_final("acme", r.json()["status_url"])["state"] == "archived"
        assert h.files_under("incoming") == []


def test_gzip_upload_streamed_in_chunks(api: Harness) -> None:
    path = BULK / "gzipped" / "Condition.000.ndjson.gz"

    def chunks() -> Iterator[bytes]:
        with path.open("rb") as fh:
            while block := fh.read(7_000):
                yield block

    r = upload(api, "beta", "Condition.000.ndjson.gz", chunks())  # chunked transfer encoding
    assert r.status_code == 202
    status = api.wait_final("beta", r.json()["status_url"])
    assert status["state"] == "archived"
    assert status["records"]["read"] == status["records"]["loaded"] == 555


def test_partial_file_reports_rejects_without_values(api: Harness) -> None:
    lines = (BULK / "Patient.000.ndjson").read_bytes().splitlines()[:3]
    bad = orjson.loads(lines[1])
    bad["birthDate"] = "Hidden-Value-77"
    body = b"\n".join([lines[0], orjson.dumps(bad), lines[2], b"{not json"]) + b"\n"
    r = upload(api, "acme", "mixed.ndjson", body)
    status = api.wait_final("acme", r.json()["status_url"])
    assert status["state"] == "partial"
    assert status["records"] == {"read": 4, "loaded": 2, "unchanged": 0, "rejected": 2}
    report = status["report"]
    assert report["outcome"] == "partial"
    assert {item["location"] for item in report["rejected_records"]} == {"line 2", "line 4"}
    assert "Hidden-Value-77" not in orjson.dumps(status).decode()


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("garbage.bin", os.urandom(4096)),
        ("truncated.ndjson.gz", gzip.compress(b'{"resourceType": "Patient", "id": "a"}\n' * 200)[:-40]),
        (
            "n_structure_open_object.json",
            (SAMPLES / "jsontestsuite" / "n_structure_open_object.json").read_bytes(),
        ),
    ],
)
def test_hostile_uploads_are_quarantined_with_a_report(api: Harness, name: str, body: bytes) -> None:
    r = upload(api, "acme", name, body)
    assert r.status_code == 202
    status = api.wait_final("acme", r.json()["status_url"])
    assert status["state"] == "quarantined"
    assert status["error"]["code"] and status["report"]["outcome"] == "quarantined"
    assert any(k.endswith(f"{name}.error.json") for k in api.files_under("quarantine/acme"))
    assert api.store.resources.counts(["acme"]) == {}


def test_oversized_upload_is_413_and_leaves_nothing(api: Harness) -> None:
    limit = api.settings.api.max_upload_bytes
    declared = upload(api, "acme", "big.ndjson", b"x" * (limit + 1))
    assert declared.status_code == 413
    (issue,) = declared.json()["issue"]  # one OperationOutcome shape everywhere, with a machine code
    assert issue["details"]["coding"][0]["code"] == "too_large"

    def endless() -> Iterator[bytes]:
        for _ in range(limit // 65536 + 10):
            yield b"y" * 65536

    try:
        streamed = upload(api, "acme", "big2.ndjson", endless())
        assert streamed.status_code == 413
    except Exception as err:  # the server may close the connection while we are still sending
        assert (
            "Read" in type(err).__name__ or "Write" in type(err).__name__ or "Protocol" in type(err).__name__
        )
    assert api.files_under("incoming") == []
    assert list(Path(api.settings.pipeline.temp_dir).iterdir()) == []


def test_upload_cut_off_mid_stream_leaves_nothing(api: Harness) -> None:
    host, port = api.url.removeprefix("http://").split(":")
    head = (
        f"POST /api/batch?name=cut.ndjson HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {api.token('acme')}\r\nContent-Length: 100000\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head + b'{"resourceType": "Patient", "id": "a"}\n' * 100)
    # The server may not even have opened its spool file yet: wait until the spool folder has
    # stayed empty for a while, not merely until it is empty once.
    temp = Path(api.settings.pipeline.temp_dir)
    deadline = time.monotonic() + 10
    empty_since = None
    while time.monotonic() < deadline:
        if list(temp.iterdir()):
            empty_since = None
        elif empty_since is None:
            empty_since = time.monotonic()
        elif time.monotonic() - empty_since >= 0.5:
            break
        time.sleep(0.05)
    assert list(temp.iterdir()) == []
    assert api.files_under("incoming") == []
    assert api.files_under("archived") == [] and api.files_under("quarantine") == []


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("../escape.ndjson", 422),
        (".hidden", 422),
        ("a/b.ndjson", 422),
        ("upload.ndjson.part", 400),
        ("", 422),
    ],
)
def test_bad_names_are_refused(api: Harness, name: str, status: int) -> None:
    r = upload(api, "acme", name, b'{"resourceType": "Patient", "id": "a"}\n')
    assert r.status_code == status
    assert api.files_under("incoming") == []


def test_status_is_private_to_the_tenant_and_empty_bodies_refused(api: Harness) -> None:
    r = upload(api, "acme", "Patient.ndjson", (BULK / "Patient.000.ndjson").read_bytes())
    url = r.json()["status_url"]
    assert api.client.get(url, headers=api.auth("beta")).status_code == 404
    assert api.client.get(url).status_code == 401
    assert api.client.get(f"/api/batch/{'0' * 32}", headers=api.auth("acme")).status_code == 404
    assert api.client.get("/api/batch/not-an-id", headers=api.auth("acme")).status_code == 422
    assert upload(api, "acme", "empty.ndjson", b"").status_code == 400
    assert upload(api, "beta", "x.ndjson", b"{}").status_code == 202  # beta's own upload works
    assert api.wait_final("acme", url)["state"] == "archived"


def test_status_says_received_before_a_worker_takes_the_file(tmp_path: Path) -> None:
    with live_server(build(tmp_path), workers=False) as h:
        r = upload(h, "acme", "Patient.000.ndjson", (BULK / "Patient.000.ndjson").read_bytes())
        status = h.client.get(r.json()["status_url"], headers=h.auth("acme")).json()
        assert status["state"] == "received" and status["records"]["read"] == 0
        assert h.files_under("incoming") == [f"incoming/acme/api/{r.json()['id']}/Patient.000.ndjson"]


@pytest.mark.slow
def test_100_mb_upload_streams_with_bounded_memory_then_archives(tmp_path: Path) -> None:
    h = build(tmp_path, max_upload_bytes=200 * 2**20)
    h.settings = h.settings.model_copy(
        update={
            "pipeline": h.settings.pipeline.model_copy(update={"validation_workers": 2, "batch_size": 500})
        }
    )
    div = '<div xmlns="http://www.w3.org/1999/xhtml">' + "lorem ipsum " * 800 + "</div>"
    big = tmp_path / "big.ndjson"
    n = 0
    with big.open("wb") as out:
        while out.tell() < 100 * 2**20:
            n += 1
            resource = {"resourceType": "Patient", "id": f"p{n}", "text": {"status": "generated", "div": div}}
            out.write(orjson.dumps(resource) + b"\n")
    size = big.stat().st_size
    me = psutil.Process()
    with live_server(h, workers=False):
        h.token("acme")
        baseline, peak, done = me.memory_info().rss, [0], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], me.memory_info().rss)
                time.sleep(0.005)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            with big.open("rb") as fh:
                r = h.client.post(
                    "/api/batch",
                    params={"name": "big.ndjson"},
                    content=iter(lambda: fh.read(256 * 1024), b""),
                    headers=h.auth("acme"),
                )
        finally:
            done.set()
            sampler.join()
        assert r.status_code == 202 and r.json()["size"] == size
        grown = peak[0] - baseline
        # Client and server share this process; the body is 100 MB, the growth a few MB.
        assert grown < 40 * 2**20, f"RSS grew by {grown / 2**20:.1f} MB during a {size / 2**20:.0f} MB upload"
        stop = threading.Event()
        with Pipeline(h.settings, h.store, h.source) as pipeline:
            worker = threading.Thread(target=Watcher(pipeline, h.source, h.settings).run, args=(stop,))
            worker.start()
            try:
                status = h.wait_final("acme", r.json()["status_url"], timeout=120)
            finally:
                stop.set()
                h.source.wake()
                worker.join()
    assert status["state"] == "archived"
    assert status["records"] == {"read": n, "loaded": n, "unchanged": 0, "rejected": 0}
