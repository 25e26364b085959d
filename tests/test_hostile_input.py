"""Bad input never crashes the service and never loses data: every file below ends in
quarantine (or partial) with a clear reason, and the same pipeline then loads a good file."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest

from conftest import BULK, JSONSUITE, drop
from dropzone.models import Outcome
from dropzone.store.memory import MemoryStore

JSON_REJECTED = sorted(p for p in JSONSUITE.glob("n_*.json"))
# y_ files are valid JSON but none is a FHIR resource; i_ files are implementation-defined:
# we decide "quarantine" for all of them (not FHIR, or not UTF-8).
JSON_NOT_FHIR = sorted(p for p in JSONSUITE.glob("[yi]_*.json"))


def _reason(zone: Path, report_key: str) -> dict:
    return json.loads((zone / report_key).read_text())["error"]


@pytest.mark.parametrize("path", JSON_REJECTED + JSON_NOT_FHIR, ids=lambda p: p.name)
def test_jsontestsuite_files_are_quarantined_with_a_reason(zone: Path, make_pipeline, path: Path) -> None:
    drop(zone, "acme", path)
    pipeline = make_pipeline()
    (result,) = pipeline.drain()
    assert result.outcome is Outcome.QUARANTINED
    error = _reason(zone, result.report)
    assert error["code"] in {
        "invalid_json",
        "not_fhir",
        "empty_file",
        "unsupported_encoding",
        "unknown_format",
    }
    assert error["message"]
    assert (zone / result.destination).read_bytes() == path.read_bytes()  # kept byte for byte

    drop(zone, "acme", BULK / "Patient.000.ndjson")  # the service keeps going
    (after,) = pipeline.drain()
    assert after.outcome is Outcome.ARCHIVED


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


PATIENT_LINES = (BULK / "Patient.000.ndjson").read_bytes().splitlines()


@pytest.mark.parametrize(
    ("name", "payload", "code"),
    [
        ("empty.ndjson", b"", "empty_file"),
        ("blank.json", b"  \n\n ", "empty_file"),
        ("truncated.ndjson.gz", gzip.compress(b"\n".join(PATIENT_LINES))[:-40], "corrupt_gzip"),
        ("not-gzip-inside.gz", b"\x1f\x8b" + b"garbage" * 10, "corrupt_gzip"),
        ("utf16.json", '{"resourceType": "Patient", "id": "a"}'.encode("utf-16"), "unsupported_encoding"),
        ("binary.bin", bytes(range(256)) * 4, "unsupported_encoding"),
        ("latin1.csv", "name,city\nJos\xe9,M\xfcnchen\n".encode("latin-1"), "unsupported_encoding"),
        ("array.json", b'[{"resourceType": "Patient", "id": "a"}]', "not_fhir"),
        (
            "truncated-bundle.json",
            b'{"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {',
            "invalid_json",
        ),
        (
            "deep.json",
            b'{"resourceType":"Patient","id":"d","a":' + b"[" * 100000 + b"]" * 100000 + b"}",
            "too_deep",
        ),
        (
            "batch-response.json",  # a server's answer (documents load: test_fhir_document_bundles)
            b'{"resourceType": "Bundle", "type": "batch-response", "entry": []}',
            "unsupported_bundle_type",
        ),
        ("prose.txt", b"Dear team\nplease find attached the files\n", "unknown_format"),
        ("unknown-layout.csv", b"colour,flavour\nred,sweet\n", "unknown_csv_layout"),
    ],
)
def test_broken_files_are_quarantined(
    zone: Path, make_pipeline, tmp_path: Path, name: str, payload: bytes, code: str
) -> None:
    drop(zone, "acme", _write(tmp_path / name, payload))
    (result,) = make_pipeline().drain()
    assert result.outcome is Outcome.QUARANTINED
    assert _reason(zone, result.report)["code"] == code
    assert (zone / result.destination).read_bytes() == payload


def test_gzip_bomb_stops_at_the_decompressed_limit(zone: Path, make_pipeline, tmp_path: Path) -> None:
    bomb = gzip.compress(b"\n" * (50 * 2**20))  # 50 MiB of newlines in ~50 KiB
    drop(zone, "acme", _write(tmp_path / "bomb.ndjson.gz", bomb))
    (result,) = make_pipeline(max_decompressed_bytes=10 * 2**20).drain()
    assert result.outcome is Outcome.QUARANTINED
    assert _reason(zone, result.report)["code"] == "too_large"


def test_oversized_file_is_quarantined_without_reading_it(zone: Path, make_pipeline) -> None:
    drop(zone, "acme", BULK / "Condition.000.ndjson")
    (result,) = make_pipeline(max_file_bytes=1024).drain()
    assert result.outcome is Outcome.QUARANTINED
    assert _reason(zone, result.report)["code"] == "too_large"


def test_bad_lines_make_a_partial_file_with_a_rejects_file(zone: Path, make_pipeline, tmp_path: Path) -> None:
    lines = list(PATIENT_LINES)
    lines[1] = lines[1][:50]  # cut off
    lines[3] = b"\xff\xfe not utf-8"
    lines[5] = b'{"resourceType": "Patient", "id": "p5", "gender": 12}'
    lines[7] = b"x" * 5000  # over the record limit below
    lines[9] = b'{"resourceType": "Patient", "id": "deep", "extension": ' + b"[" * 400 + b"]" * 400 + b"}"
    source = _write(tmp_path / "patients.ndjson", b"\n".join(lines) + b"\n")
    drop(zone, "acme", source)
    store = MemoryStore()
    (result,) = make_pipeline(store, max_record_bytes=4096).drain()

    assert result.outcome is Outcome.PARTIAL
    assert (result.counts.read, result.counts.loaded, result.counts.rejected) == (13, 8, 5)
    report = json.loads((zone / result.report).read_text())
    by_location = {item["location"]: item["errors"][0]["code"] for item in report["rejected_records"]}
    assert by_location == {
        "line 2": "invalid_json",
        "line 4": "invalid_json",
        "line 6": "wrong_type",
        "line 8": "record_too_large",
        "line 10": "too_deep",
    }
    rejects = (zone / report["rejects_file"]).read_bytes().splitlines()
    assert rejects == [lines[1], lines[3], lines[5], lines[7], lines[9]]
    assert result.destination.startswith("archived/acme/")
    assert report["rejects_file"].startswith("quarantine/acme/")
    assert store.resources.counts(["acme"]) == {"Patient": 8}


def test_no_patient_value_reaches_reports_or_logs(zone: Path, make_pipeline, tmp_path: Path, caplog) -> None:
    secret_name, secret_birth, secret_mrn = "Zebulon-Quixote", "19X1-13-45", "MRN-99-SECRET"
    bad = {
        "resourceType": "Patient",
        "id": "phi-1",
        "name": [{"family": secret_name, "given": [{"nested": secret_name}]}],
        "birthDate": secret_birth,
        "identifier": [{"system": "urn:mrn", "value": secret_mrn, "period": {"start": secret_birth}}],
        "gender": ["female", secret_name],
        "unknownField": secret_mrn,
    }
    good = json.loads(PATIENT_LINES[0])
    source = _write(
        tmp_path / "phi.ndjson", json.dumps(good).encode() + b"\n" + json.dumps(bad).encode() + b"\n"
    )
    drop(zone, "acme", source)
    with caplog.at_level(logging.DEBUG, logger="dropzone"):
        (result,) = make_pipeline().drain()
    assert result.outcome is Outcome.PARTIAL
    report_text = (zone / result.report).read_text()
    report = json.loads(report_text)
    paths = {e["path"] for e in report["rejected_records"][0]["errors"]}
    assert {"Patient.birthDate", "Patient.unknownField"} <= paths
    for value in (secret_name, secret_birth, secret_mrn, "Zebulon", "MRN-99"):
        assert value not in report_text
        assert value not in caplog.text
    assert caplog.records  # the logs were captured, so the absence above means something
