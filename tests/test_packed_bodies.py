"""Large bodies are kept zlib-packed in the SQLite store (``dropzone.store.packing``): every read
returns the sender's JSON exactly (decimals keep their digits), small bodies stay readable text,
and a version 2 database (text only) is read as it is."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from conftest import drop
from dropzone.models import Outcome
from dropzone.pipeline.canonical import resource_hash
from dropzone.search.query import parse_search
from dropzone.store import packing
from dropzone.store.base import ResourceWrite, strip_document
from dropzone.store.sqlite import SqliteStore
from processors import fhir_json

NOTE = "The patient reports no change since the last visit. " * 120  # ~6 KB of text


def _large(rid: str, value: str = "80.00", subject: str = "Patient/p-1") -> bytes:
    """An Observation well over ``PACK_FROM`` bytes, with an exact decimal in it."""
    text = (
        '{"resourceType":"Observation","id":"RID","status":"final",'
        '"code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]},'
        '"subject":{"reference":"SUBJECT"},"effectiveDateTime":"2020-03-04",'
        '"valueQuantity":{"value":VALUE,"unit":"kg"},"note":[{"text":"NOTE"}]}'
    )
    for name, given in (("RID", rid), ("SUBJECT", subject), ("VALUE", value), ("NOTE", NOTE)):
        text = text.replace(name, given)
    return text.encode()


SMALL = b'{"resourceType":"Patient","id":"p-1","gender":"female"}'


def _content(resource: dict[str, Any] | None) -> bytes:
    assert resource is not None
    return fhir_json.dumps({k: v for k, v in strip_document(resource).items() if k != "meta"})


def _body_kinds(store: SqliteStore, table: str = "resources") -> dict[str, tuple[str, int]]:
    rows = store.database.read(f"SELECT id, typeof(body), length(body) FROM {table}")
    return {rid: (kind, size) for rid, kind, size in rows}


def _write(body: bytes) -> ResourceWrite:
    resource = fhir_json.loads(body)
    return ResourceWrite(resource["resourceType"], resource["id"], resource, resource_hash(resource))


def test_the_pack_format_tells_itself_from_json_text() -> None:
    large = _large("o-1")
    packed = packing.pack(large)
    assert packing.is_packed(packed) and len(packed) < len(large) / 5
    assert packing.unpack(packed) == large
    assert packing.pack(SMALL) is SMALL and not packing.is_packed(SMALL)
    assert packing.unpack(SMALL) is SMALL and packing.unpack(SMALL.decode()) == SMALL.decode()


def test_a_large_body_is_stored_packed_and_every_read_returns_it_exactly(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite")
    try:
        store.resources.upsert("acme", [_write(_large("o-1")), _write(SMALL)], "f1")
        kinds = _body_kinds(store)
        assert kinds["o-1"][0] == "blob" and kinds["o-1"][1] < len(_large("o-1")) / 5
        assert kinds["p-1"] == ("text", len(SMALL))  # small: as sent, readable with sqlite3
        sent = fhir_json.dumps(fhir_json.loads(_large("o-1")))
        assert b'"value":80.00' in sent
        assert _content(store.resources.get("acme", "Observation", "o-1")) == sent
        assert _content(store.resources.get_many("acme", "Observation", ["o-1"])["o-1"]) == sent
        (listed,) = store.resources.iter_resources("acme", "Observation")
        assert _content(listed) == sent
        page = store.resources.search("acme", parse_search("Observation", [("subject", "Patient/p-1")]))
        assert [_content(r) for r in page.resources] == [sent]  # type: ignore[arg-type]

        # A new version: the packed one moves to history as it is, and reads back exactly.
        store.resources.upsert("acme", [_write(_large("o-1", value="81.50"))], "f2")
        assert _body_kinds(store, "history")["o-1"][0] == "blob"
        (before,) = store.resources.history("acme", "Observation", "o-1")
        assert _content(before) == sent
        now = store.resources.get("acme", "Observation", "o-1")
        assert now is not None and fhir_json.dumps(now["valueQuantity"]) == b'{"value":81.50,"unit":"kg"}'
    finally:
        store.close()


def test_a_schema_2_database_is_marked_3_and_its_text_bodies_read_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    store = SqliteStore(path)
    store.resources.upsert("acme", [_write(SMALL)], None)
    store.close()
    conn = sqlite3.connect(path)
    # Version 2 kept every body as text, large ones too.
    with conn:
        conn.execute("UPDATE dz_meta SET value = '2' WHERE key = 'schema_version'")
        conn.execute(
            "INSERT INTO resources SELECT tenant, type, 'o-old', version, hash, file_sha256, "
            "first_ingested, last_ingested, ? FROM resources WHERE id = 'p-1'",
            (_large("o-old").decode(),),
        )
    conn.close()
    store = SqliteStore(path)
    try:
        assert store.database.read("SELECT value FROM dz_meta WHERE key = 'schema_version'") == [("3",)]
        assert _body_kinds(store)["o-old"][0] == "text"  # nothing was rewritten
        stored = store.resources.get("acme", "Patient", "o-old")  # the copied row's type
        assert _content(stored) == fhir_json.dumps(fhir_json.loads(_large("o-old")))
    finally:
        store.close()


@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "pool"])
def test_the_pipeline_packs_large_bodies_and_knows_them_unchanged_when_sent_again(
    zone: Path, make_pipeline: Any, tmp_path: Path, workers: int
) -> None:
    store = SqliteStore(tmp_path / "db" / "dropzone.sqlite")
    # The large Observation's subject is conditional: it is resolved in the pool's second trip,
    # which gets the packed body.
    lines = [SMALL.replace(b'"gender"', b'"identifier":[{"system":"urn:s","value":"v-1"}],"gender"')]
    lines += [_large(f"o-{n}", subject="Patient?identifier=urn:s|v-1") for n in range(3)]
    first = tmp_path / "first.ndjson"
    first.write_bytes(b"\n".join(lines) + b"\n")
    again = tmp_path / "again.ndjson"  # the same resources in other bytes
    again.write_bytes(b"\n".join(fhir_json.dumps(fhir_json.loads(line)) for line in reversed(lines)))
    try:
        drop(zone, "acme", first)
        (result,) = make_pipeline(store, validation_workers=workers).drain()
        assert result.outcome == Outcome.ARCHIVED, result.reason
        assert result.counts.as_dict() == {"read": 4, "loaded": 4, "unchanged": 0, "rejected": 0}
        kinds = _body_kinds(store)
        assert {kinds[f"o-{n}"][0] for n in range(3)} == {"blob"} and kinds["p-1"][0] == "text"
        stored = store.resources.get("acme", "Observation", "o-1")
        assert stored is not None and stored["subject"]["reference"] == "Patient/p-1"
        assert fhir_json.dumps(stored["valueQuantity"]) == b'{"value":80.00,"unit":"kg"}'

        drop(zone, "acme", again)
        (result,) = make_pipeline(store, validation_workers=workers).drain()
        assert result.counts.as_dict() == {"read": 4, "loaded": 0, "unchanged": 4, "rejected": 0}
    finally:
        store.close()
