"""Input faults a sender causes: a broken first NDJSON line, gzip bombs whatever they hold, and a
request body that stops arriving. Each test names the defect it guards."""

from __future__ import annotations

import gzip
import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from api_support import Harness, build

from conftest import BULK, drop
from dropzone.api.app import create_app
from dropzone.api.server import ApiServer
from dropzone.models import Outcome
from dropzone.store.memory import MemoryStore

PATIENT_LINES = (BULK / "Patient.000.ndjson").read_bytes().splitlines()[:6]
SECRET = "Zebulon-Quixote"
MIB = 2**20


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _report(zone: Path, key: str | None) -> dict[str, Any]:
    assert key is not None
    return json.loads((zone / key).read_text())


# --- 1. a bad first NDJSON line is one rejected record -------------------------------------------

BAD_FIRST_LINES = {
    "truncated": b'{"resourceType": "Patient", "id": "p0", "name": [{"family": "' + SECRET.encode(),
    "cut-at-start": b'ourceType": "Patient", "id": "p0", "name": [{"family": "' + SECRET.encode() + b'"}]}',
    "truncated-after-key": b'{"resourceType": "Patient", "id": ',
}


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("bad", list(BAD_FIRST_LINES), ids=list(BAD_FIRST_LINES))
def test_a_bad_first_ndjson_line_rejects_one_record_and_the_rest_load(
    zone: Path, make_pipeline, tmp_path: Path, caplog: pytest.LogCaptureFixture, bad: str, gzipped: bool
) -> None:
    """Defect: the first line decided the format, so the whole file was quarantined."""
    first = BAD_FIRST_LINES[bad]
    payload = b"\n".join([first, *PATIENT_LINES]) + b"\n"
    name = "patients.ndjson.gz" if gzipped else "patients.ndjson"
    drop(zone, "acme", _write(tmp_path / name, gzip.compress(payload) if gzipped else payload))
    store = MemoryStore()
    with caplog.at_level(logging.DEBUG, logger="dropzone"):
        (result,) = make_pipeline(store).drain()

    assert result.outcome is Outcome.PARTIAL
    counts = result.counts
    assert (counts.read, counts.loaded, counts.rejected) == (7, 6, 1)
    assert counts.read == counts.loaded + counts.unchanged + counts.rejected
    assert store.resources.counts(["acme"]) == {"Patient": 6}
    report_text = (zone / result.report).read_text()
    report = json.loads(report_text)
    (rejected,) = report["rejected_records"]
    assert rejected["location"] == "line 1"
    assert rejected["errors"][0]["code"] == "invalid_json"
    assert (zone / report["rejects_file"]).read_bytes().splitlines() == [first]
    assert SECRET not in report_text and "Zebulon" not in report_text
    assert SECRET not in caplog.text
    assert caplog.records  # logs were captured, so their lack of the value means something


@pytest.mark.parametrize(
    ("name", "payload", "code"),
    [
        (
            "binary.ndjson",
            b"\x00\x01\x02\xff" * 64 + b"\n" + PATIENT_LINES[0] + b"\n",
            "unsupported_encoding",
        ),
        ("no-json-line.ndjson", b'{"resourceType": "Patient",\n{not json\nnor this\n', "invalid_json"),
        # Later lines are JSON objects but not FHIR resources: no evidence of NDJSON.
        ("not-resources.ndjson", b'{"resourceType": \n{"a": 1}\n{"b": 2}\n', "invalid_json"),
        ("prose.ndjson", b"Dear team\nplease find attached\n", "unknown_format"),
        # The name is the second witness: a broken first line in a .json file is not NDJSON.
        ("patients.json", b'{"resourceType": "Patient", "id": \n' + PATIENT_LINES[0] + b"\n", "invalid_json"),
    ],
)
def test_files_that_are_not_ndjson_are_still_quarantined(
    zone: Path, make_pipeline, tmp_path: Path, name: str, payload: bytes, code: str
) -> None:
    drop(zone, "acme", _write(tmp_path / name, payload))
    store = MemoryStore()
    (result,) = make_pipeline(store).drain()
    assert result.outcome is Outcome.QUARANTINED
    assert _report(zone, result.report)["error"]["code"] == code
    assert (zone / result.destination).read_bytes() == payload
    assert store.resources.counts(["acme"]) == {}


# --- 2. a gzip bomb is too_large whatever it decompresses to -------------------------------------


def _huge_ndjson(size: int) -> bytes:
    block = b"\n".join(PATIENT_LINES) + b"\n"
    return block * (size // len(block) + 1)


@pytest.mark.parametrize(
    "content",
    [b"\x00" * (10 * MIB), b" " * (10 * MIB), _huge_ndjson(10 * MIB)],
    ids=["nul-bytes", "spaces", "valid-ndjson"],
)
def test_a_gzip_bomb_is_too_large_whatever_it_holds(
    zone: Path, make_pipeline, tmp_path: Path, content: bytes
) -> None:
    """Defect: NUL content was labelled unsupported_encoding from the first 64 KiB."""
    bomb = gzip.compress(content)
    drop(zone, "acme", _write(tmp_path / "bomb.ndjson.gz", bomb))
    store = MemoryStore()
    # 1 MiB: above the sniffer's 64 KiB head, so the head alone never reaches the limit.
    (result,) = make_pipeline(store, max_decompressed_bytes=MIB).drain()
    assert result.outcome is Outcome.QUARANTINED
    error = _report(zone, result.report)["error"]
    assert error["code"] == "too_large"
    assert str(MIB) in error["message"]
    assert (zone / result.destination).read_bytes() == bomb
    assert store.resources.counts(["acme"]) == {}


def test_a_small_gzip_of_nul_bytes_is_still_unsupported_encoding(
    zone: Path, make_pipeline, tmp_path: Path
) -> None:
    """The size check comes first for gzip, but within the limit the content reason stands."""
    drop(zone, "acme", _write(tmp_path / "nul.ndjson.gz", gzip.compress(b"\x00" * 4096)))
    (result,) = make_pipeline(max_decompressed_bytes=MIB).drain()
    assert result.outcome is Outcome.QUARANTINED
    assert _report(zone, result.report)["error"]["code"] == "unsupported_encoding"


# --- 3. a stalled request body is answered 408 ---------------------------------------------------

TIMEOUT = 1.0
MIN_RATE = 100.0  # bytes/s, lowered with the timeout so the steady test stays well above it


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Harness]:
    """Real uvicorn with the body read timeout lowered to TIMEOUT seconds."""
    h = build(tmp_path)
    app = create_app(h.settings, h.store, h.source, body_read_timeout=TIMEOUT, body_min_rate=MIN_RATE)
    with ApiServer(app, "127.0.0.1", 0) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        h.url, h.client = server.url, client
        yield h
    h.source.close()


def _stall(h: Harness, head: str, sent: bytes) -> tuple[int, dict[str, Any], float]:
    """Send the request head and part of its body, then nothing: (status, JSON body, seconds
    until the server closed the connection)."""
    host, port = h.url.removeprefix("http://").split(":")
    request = f"{head}\r\nHost: {host}\r\nContent-Length: {len(sent) + 1000}\r\n\r\n".encode()
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(request + sent)
        started = time.monotonic()
        answer = b""
        while chunk := sock.recv(65536):  # b"" once the server closes; a hang fails on timeout
            answer += chunk
        elapsed = time.monotonic() - started
    status_line, _, rest = answer.partition(b"\r\n")
    _headers, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(body), elapsed


def test_a_stalled_upload_is_answered_408_and_closed_leaving_nothing(api: Harness) -> None:
    """Defect: a body that stopped arriving held the connection and spool file forever."""
    head = (
        "POST /api/batch?name=stalled.ndjson HTTP/1.1\r\n"
        f"Authorization: Bearer {api.token('acme')}\r\nContent-Type: application/x-ndjson"
    )
    status, body, elapsed = _stall(api, head, PATIENT_LINES[0][:20])
    assert status == 408
    assert body["resourceType"] == "OperationOutcome"  # one error shape everywhere
    assert body["issue"][0]["details"]["coding"][0]["code"] == "body_timeout"
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + 5
    assert list(Path(api.settings.pipeline.temp_dir).iterdir()) == []
    assert not (api.zone / "incoming").exists() or not any((api.zone / "incoming").rglob("*.ndjson"))


def test_a_stalled_token_request_is_answered_408(api: Harness) -> None:
    """The token endpoint is open to anyone: a stall there must not need credentials to stop."""
    head = "POST /api/authenticate HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded"
    status, body, _elapsed = _stall(api, head, b"grant_type=client_cre")
    assert status == 408
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["details"]["coding"][0]["code"] == "body_timeout"


def test_a_stalled_fhir_update_is_a_408_operation_outcome(api: Harness) -> None:
    head = (
        "PUT /api/fhir/Patient/p0 HTTP/1.1\r\n"
        f"Authorization: Bearer {api.token('acme')}\r\nContent-Type: application/fhir+json"
    )
    status, body, _elapsed = _stall(api, head, b'{"resourceType": "Pat')
    assert status == 408
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["details"]["text"] == "body_timeout"


def test_a_trickling_upload_is_answered_408_once_the_timeout_has_passed(api: Harness) -> None:
    """Defect: one byte every half second never stalls for a whole timeout, so it was never cut."""
    host, port = api.url.removeprefix("http://").split(":")
    head = (
        f"POST /api/batch?name=trickle.ndjson HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {api.token('acme')}\r\nContent-Type: application/x-ndjson\r\n"
        "Content-Length: 100000\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(head.encode())
        started = time.monotonic()
        answer = b""
        sock.settimeout(0.25)
        while time.monotonic() - started < 10:
            try:
                if not answer:  # stop sending once answered: bytes to a closed socket draw a reset
                    sock.sendall(b"{")  # well under MIN_RATE, and never TIMEOUT without a byte
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"slower than" in answer
    assert TIMEOUT <= elapsed < TIMEOUT + 5


def test_a_slow_but_steady_upload_is_not_timed_out(api: Harness) -> None:
    """The timeout is per chunk, not per request: chunks every 0.4 s for 2 s load fine."""
    line = PATIENT_LINES[0] + b"\n"
    pieces = [line[i : i + len(line) // 5 + 1] for i in range(0, len(line), len(line) // 5 + 1)]

    def slowly() -> Iterator[bytes]:
        for piece in pieces:
            time.sleep(TIMEOUT * 0.4)
            yield piece

    started = time.monotonic()
    r = api.client.post(
        "/api/batch", params={"name": "slow.ndjson"}, content=slowly(), headers=api.auth("acme")
    )
    assert time.monotonic() - started > TIMEOUT * 1.5  # longer in total than the timeout
    assert r.status_code == 202, r.text
    assert r.json()["size"] == len(line)


# --- 4. repeated keys in one JSON object are rejected -------------------------------------------


def test_repeated_json_keys_reject_the_record_naming_only_the_key(
    zone: Path, tmp_path: Path, make_pipeline: Any
) -> None:
    """Defect: orjson kept the last of two "gender" keys and the record loaded as if valid."""
    good = [orjson.loads(line) for line in PATIENT_LINES[:3]]
    repeated = PATIENT_LINES[3].replace(
        b'"resourceType"', b'"gender":"female","gender":"male","resourceType"', 1
    )
    spaced = b'{"resourceType" : "Patient", "id" : "spaced", "active" : true, "active" : false}'
    escaped = b'{"resourceType": "Patient", "id": "esc", "name": [{"text": "a\\u0022: b"}]}'  # no repeat
    lines = [orjson.dumps(r) for r in good] + [repeated, spaced, escaped]
    drop(zone, "acme", _write(tmp_path / "dups.ndjson", b"\n".join(lines) + b"\n"))
    (result,) = make_pipeline().drain()
    assert result.counts.as_dict() == {"read": 6, "loaded": 4, "unchanged": 0, "rejected": 2}
    report = _report(zone, result.report)
    text = json.dumps(report)
    assert "duplicate_key" in text and "'gender'" in text and "'active'" in text
    assert "female" not in text and "male" not in text.replace("female", "")


def test_a_single_resource_file_with_a_repeated_key_is_quarantined(
    zone: Path, tmp_path: Path, make_pipeline: Any
) -> None:
    body = b'{"resourceType": "Patient", "id": "one", "birthDate": "1970-01-01", "birthDate": "1971-01-01"}'
    drop(zone, "acme", _write(tmp_path / "one.json", body))
    (result,) = make_pipeline().drain()
    assert result.outcome is Outcome.QUARANTINED and result.counts.rejected == 1
    text = json.dumps(_report(zone, result.report))
    assert "duplicate_key" in text and "'birthDate'" in text and "1970" not in text


@pytest.mark.parametrize("bundle_type", ["collection", "batch", "transaction"])
def test_a_repeated_key_in_a_bundle_entry_rejects_that_entry(
    zone: Path, tmp_path: Path, make_pipeline: Any, bundle_type: str
) -> None:
    good = orjson.loads(PATIENT_LINES[0])
    bad = PATIENT_LINES[1].replace(
        b'"resourceType"', b'"gender":"other","gender":"unknown","resourceType"', 1
    )
    request = b', "request": {"method": "PUT", "url": "Patient/%s"}'
    entries = [
        b'{"resource": '
        + orjson.dumps(good)
        + (request % good["id"].encode() if bundle_type != "collection" else b"")
        + b"}",
        b'{"resource": '
        + bad
        + (request % orjson.loads(bad)["id"].encode() if bundle_type != "collection" else b"")
        + b"}",
    ]
    body = b'{"resourceType": "Bundle", "type": "%s", "entry": [%s]}' % (
        bundle_type.encode(),
        b", ".join(entries),
    )
    drop(zone, "acme", _write(tmp_path / "bundle.json", body))
    store = MemoryStore()
    (result,) = make_pipeline(store).drain()
    text = json.dumps(_report(zone, result.report))
    assert "duplicate_key" in text and "'gender'" in text and "unknown" not in text
    assert "entry 1" in text
    if bundle_type == "transaction":  # all or nothing
        assert result.outcome is Outcome.QUARANTINED and store.resources.counts() == {}
    else:
        assert (result.counts.loaded, result.counts.rejected) == (1, 1)
        assert store.resources.get("acme", "Patient", good["id"]) is not None
