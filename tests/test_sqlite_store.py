"""The embedded default store (SQLite): it persists, it is shared by processes, it refuses what
it cannot read, and it keeps health data private. The shared contract is in test_store_contract."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BULK, drop, line_count, make_settings, spawn_run_once
from dropzone.config import load_settings
from dropzone.errors import ConfigError, StoreUnavailable
from dropzone.models import Outcome
from dropzone.pipeline.canonical import resource_hash
from dropzone.pipeline.runner import Pipeline
from dropzone.sources.folder import FolderSource
from dropzone.store import open_store, sqlite_path
from dropzone.store.base import ClaimState, ResourceWrite
from dropzone.store.memory import MemoryStore
from dropzone.store.sqlite import SqliteStore


def _write(resource: dict) -> ResourceWrite:
    return ResourceWrite(resource["resourceType"], resource["id"], resource, resource_hash(resource))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_everything_survives_closing_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    store = SqliteStore(path)
    store.resources.upsert("t1", [_write({"resourceType": "Patient", "id": "p1", "gender": "female"})], "f1")
    store.resources.upsert("t1", [_write({"resourceType": "Patient", "id": "p1", "gender": "male"})], "f2")
    claim = store.ledger.claim("t1", "sha", "incoming/t1/a.ndjson", "w1", 60).claim
    assert claim is not None
    store.ledger.save_file(
        {"_id": claim.file_id, "tenant": "t1", "key": "incoming/t1/a.ndjson", "state": "archived"}
    )
    store.ledger.complete(claim, "archived", "archived/t1/a.ndjson")
    store.ledger.save_upload({"_id": "u1", "tenant": "t1", "key": "incoming/t1/a.ndjson"})
    store.close()

    again = SqliteStore(path)
    assert again.resources.get("t1", "Patient", "p1")["gender"] == "male"
    assert [h["gender"] for h in again.resources.history("t1", "Patient", "p1")] == ["female"]
    assert again.ledger.summary() == {"t1": {"archived": 1}}
    assert again.ledger.find_file("incoming/t1/a.ndjson")["_id"] == claim.file_id
    done = again.ledger.claim("t1", "sha", "incoming/t1/a.ndjson", "w2", 60)
    assert done.state is ClaimState.DONE and done.done["destination"] == "archived/t1/a.ndjson"
    assert again.ledger.get_upload("u1")["tenant"] == "t1"
    again.close()


def test_a_database_of_another_schema_version_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    SqliteStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE dz_meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    before = _sha(path)
    with pytest.raises(ConfigError, match="schema version 99; this dropzone reads version 3"):
        SqliteStore(path)
    assert _sha(path) == before


def test_files_that_are_not_a_dropzone_database_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database, but a text file of the same name\n" * 100)
    with pytest.raises(ConfigError, match="not a usable SQLite database"):
        SqliteStore(garbage)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE mine (x)")
    conn.close()
    with pytest.raises(ConfigError, match="not a dropzone store"):
        SqliteStore(other)


def test_the_database_is_private_to_the_service_user(tmp_path: Path) -> None:
    path = tmp_path / "zone" / ".dropzone" / "dropzone.sqlite"
    store = SqliteStore(path)
    store.resources.upsert("t1", [_write({"resourceType": "Patient", "id": "p1"})], "f")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    wal = path.with_name(path.name + "-wal")
    assert wal.exists() and stat.S_IMODE(wal.stat().st_mode) == 0o600
    store.close()


def test_where_the_database_lives_and_which_store_is_chosen(tmp_path: Path) -> None:
    folder = load_settings(config_dir=None, env={}, zone=str(tmp_path / "zone"))
    assert sqlite_path(folder) == tmp_path / "zone" / ".dropzone" / "dropzone.sqlite"
    bucket = load_settings(config_dir=None, env={}, zone="s3://bucket/prefix")
    assert sqlite_path(bucket) == Path("dropzone-data") / "dropzone.sqlite"
    chosen = load_settings(
        config_dir=None, env={"DROPZONE_STORE__PATH": str(tmp_path / "x.sqlite")}, zone="s3://b/p"
    )
    assert sqlite_path(chosen) == tmp_path / "x.sqlite"
    store = open_store(chosen)
    assert isinstance(store, SqliteStore) and (tmp_path / "x.sqlite").is_file()
    store.close()
    memory = load_settings(config_dir=None, env={"DROPZONE_STORE__KIND": "memory"}, zone=str(tmp_path))
    assert isinstance(open_store(memory), MemoryStore)
    mongo = load_settings(config_dir=None, env={"DROPZONE_STORE__KIND": "mongodb"}, zone=str(tmp_path))
    with pytest.raises(ConfigError, match="no MONGODB_URI"):
        open_store(mongo)


def test_a_database_locked_by_another_process_is_transient_and_the_file_waits(
    zone: Path, tmp_path: Path
) -> None:
    path = tmp_path / "db.sqlite"
    store = SqliteStore(path, busy_timeout=0.2)
    drop(zone, "acme", BULK / "Patient.000.ndjson")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the database
    with Pipeline(make_settings(zone), store, FolderSource(zone)) as pipeline:
        with pytest.raises(StoreUnavailable, match="database is locked"):
            store.ledger.claim("acme", "sha", "k", "w", 60)
        assert pipeline.drain() == []  # transient: nothing quarantined, nothing lost
        assert (zone / "incoming" / "acme" / "Patient.000.ndjson").is_file()
        other.execute("ROLLBACK")
        (result,) = pipeline.drain()
    assert result.outcome is Outcome.ARCHIVED and result.counts.loaded == 13
    other.close()
    store.close()


def test_opening_waits_while_the_database_is_locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen in the crash campaign: a worker starting while another recovered a killed one's WAL
    got "database is locked" from its first PRAGMA at once (SQLite's busy handler does not
    always run there) and exited. Opening now retries until the busy timeout."""
    path = tmp_path / "db.sqlite"
    SqliteStore(path).close()
    real_connect = sqlite3.connect
    refusals = {"left": 3}

    class Locked:
        def execute(self, *_args: object) -> None:
            raise sqlite3.OperationalError("database is locked")

        def close(self) -> None:
            pass

    def connect(*args: object, **kwargs: object) -> object:
        if refusals["left"]:
            refusals["left"] -= 1
            return Locked()
        return real_connect(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sqlite3, "connect", connect)
    for read_only in (False, True):
        refusals["left"] = 3
        store = SqliteStore(path, read_only=read_only)
        assert refusals["left"] == 0
        assert store.resources.counts() == {}
        store.close()
    refusals["left"] = 10**6  # locked for good: a clear, transient error after the busy timeout
    with pytest.raises(StoreUnavailable, match="stayed locked"):
        SqliteStore(path, busy_timeout=0.2)


def test_three_processes_on_one_zone_load_each_file_exactly_once(zone: Path) -> None:
    files = sorted(p for p in BULK.glob("*.ndjson") if p.name != "log.ndjson")
    expected = {p.name: line_count(p) for p in files}
    drop(zone, "acme", *files)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DROPZONE_", "MONGODB_"))}
    env.update(DROPZONE_PIPELINE__VALIDATION_WORKERS="0", DROPZONE_PIPELINE__QUIET_SECONDS="0")
    env["DROPZONE_PIPELINE__BATCH_SIZE"] = "100"
    workers = [spawn_run_once(zone, env) for _ in range(3)]
    outputs = []
    for worker in workers:
        out, err = worker.communicate(timeout=280)
        assert worker.returncode == 0, err.decode()[-2000:]
        outputs.append(json.loads(out))
    done = [f for summary in outputs for f in summary["files"]]
    assert sorted(f["name"] for f in done) == sorted(expected)  # each file by exactly one process
    assert all(f["outcome"] == "archived" for f in done)
    assert {f["name"]: f["records"]["loaded"] for f in done} == expected
    assert sorted(p.name for p in (zone / "archived").rglob("*.ndjson")) == sorted(expected)
    assert not any((zone / "incoming").rglob("*.ndjson"))
    store = SqliteStore(zone / ".dropzone" / "dropzone.sqlite")
    assert sum(store.resources.counts(["acme"]).values()) == sum(expected.values())
    assert store.ledger.summary() == {"acme": {"archived": len(files)}}
    store.close()


@pytest.mark.parametrize(
    ("fault", "reported"),
    [("read_only", "attempt to write a readonly database"), ("full", "database or disk is full")],
)
def test_a_read_only_or_full_database_keeps_the_file_in_incoming(
    zone: Path, tmp_path: Path, fault: str, reported: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteStore(tmp_path / "db.sqlite")
    conn = store.database._conn  # the service's own connection: the fault is what it meets
    if fault == "read_only":
        conn.execute("PRAGMA query_only = ON")
    else:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")  # no room for one more page
    drop(zone, "acme", BULK / "Patient.000.ndjson")
    with Pipeline(make_settings(zone), store, FolderSource(zone)) as pipeline:
        assert pipeline.drain() == []
        assert (zone / "incoming" / "acme" / "Patient.000.ndjson").is_file()
        assert not (zone / "archived").exists() and not (zone / "quarantine").exists()
        said = [getattr(r, "dz_fields", {}) for r in caplog.records if r.getMessage() == "file.retry_later"]
        assert said and reported in said[0]["error"]
        assert not {"archived", "quarantined", "partial"} & set(store.ledger.summary().get("acme", {}))

        conn.execute(
            "PRAGMA query_only = OFF" if fault == "read_only" else "PRAGMA max_page_count = 1073741823"
        )
        time.sleep(0.05)
        (result,) = pipeline.drain()
    assert result.outcome is Outcome.ARCHIVED and result.counts.loaded == 13
    store.close()


def test_export_writes_bulk_ndjson_exactly_as_stored(tmp_path: Path) -> None:
    zone = tmp_path / "zone"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DROPZONE_", "MONGODB_"))}
    env.update(DROPZONE_PIPELINE__VALIDATION_WORKERS="0", DROPZONE_PIPELINE__QUIET_SECONDS="0")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "dropzone", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)

    sent = [BULK / "Patient.000.ndjson", BULK / "Encounter.000.ndjson"]
    loaded = cli("ingest", *map(str, sent), "--tenant", "acme", "--zone", str(zone), "--json")
    assert loaded.returncode == 0, loaded.stderr

    out = tmp_path / "export"
    done = cli("export", "--tenant", "acme", "--out", str(out), "--zone", str(zone), "--json")
    assert done.returncode == 0, done.stderr
    files = {f["type"]: f["count"] for f in json.loads(done.stdout)["files"]}
    assert files == {"Encounter": line_count(sent[1]), "Patient": line_count(sent[0])}
    assert sorted(p.name for p in out.iterdir()) == ["Encounter.ndjson", "Patient.ndjson"]
    store = SqliteStore(zone / ".dropzone" / "dropzone.sqlite")
    for line in (out / "Patient.ndjson").read_text().splitlines():
        resource = json.loads(line)
        assert resource == store.resources.get("acme", "Patient", resource["id"])
        assert "_dz" not in resource and resource["meta"]["versionId"] == "1"
    store.close()
    sent_ids = sorted(json.loads(line)["id"] for line in sent[0].read_text().splitlines() if line.strip())
    exported_ids = [json.loads(line)["id"] for line in (out / "Patient.ndjson").read_text().splitlines()]
    assert exported_ids == sent_ids

    only = tmp_path / "only"
    typed = cli("export", "--tenant", "acme", "--out", str(only), "--zone", str(zone), "--type", "Patient")
    assert typed.returncode == 0 and [p.name for p in only.iterdir()] == ["Patient.ndjson"]
    later = cli(
        "export",
        "--tenant",
        "acme",
        "--out",
        str(tmp_path / "l"),
        "--zone",
        str(zone),
        "--since",
        "2999-01-01",
        "--json",
    )
    assert later.returncode == 0 and json.loads(later.stdout)["files"] == []
    wrong = cli(
        "export",
        "--tenant",
        "acme",
        "--out",
        str(tmp_path / "w"),
        "--zone",
        str(zone),
        "--since",
        "yesterday",
    )
    assert wrong.returncode == 2 and "ISO 8601" in wrong.stderr


def _observation(rid: str, patient: str) -> dict:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2020-03-04T05:06:07Z",
    }


def _search_ids(store: SqliteStore, **params: str) -> list[str]:
    from dropzone.search.query import parse_search

    page = store.resources.search("acme", parse_search("Observation", list(params.items())))
    return [r["id"] for r in page.resources]  # type: ignore[misc]


def test_a_schema_1_database_is_upgraded_and_indexed_in_place(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    store = SqliteStore(path)
    store.resources.upsert(
        "acme", [_write(_observation("o-1", "p-1")), _write(_observation("o-2", "p-2"))], None
    )
    store.close()
    # What a version 1 database looks like: no index tables, the old resources_updated index.
    conn = sqlite3.connect(path)
    conn.executescript(
        "DROP TABLE search_keys; DROP TABLE search_dates; DROP INDEX resources_updated;"
        "CREATE INDEX resources_updated ON resources (tenant, type, last_ingested);"
        "DELETE FROM dz_meta WHERE key = 'search_index';"
        "UPDATE dz_meta SET value = '1' WHERE key = 'schema_version';"
    )
    conn.close()
    store = SqliteStore(path)
    assert _search_ids(store, patient="p-2") == ["o-2"]
    assert _search_ids(store, date="ge2020-03-04") == ["o-1", "o-2"]
    version = store.database.read("SELECT value FROM dz_meta WHERE key = 'schema_version'")
    assert version == [("3",)]
    store.close()


def test_an_index_computed_another_way_is_rebuilt_on_open(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    store = SqliteStore(path)
    store.resources.upsert("acme", [_write(_observation("o-1", "p-1"))], None)
    store.close()
    conn = sqlite3.connect(path)
    conn.executescript(
        "DELETE FROM search_keys;"
        "INSERT INTO search_keys VALUES ('acme', '>subject|Patient/stale', 'Observation', 'o-1');"
        "UPDATE dz_meta SET value = 'older' WHERE key = 'search_index';"
    )
    conn.close()
    store = SqliteStore(path)
    assert _search_ids(store, patient="p-1") == ["o-1"]
    assert _search_ids(store, patient="stale") == []
    # Replacing a version removes exactly its old rows (found from its body).
    store.resources.upsert("acme", [_write(_observation("o-1", "p-9"))], None)
    assert _search_ids(store, patient="p-1") == [] and _search_ids(store, patient="p-9") == ["o-1"]
    rows = store.database.read("SELECT count(*) FROM search_keys WHERE id = 'o-1'")
    assert rows == [(5,)]  # code and status (2 keys each), subject; nothing left of p-1
    store.close()


def test_a_write_naming_the_version_it_replaces_removes_that_versions_index_rows(tmp_path: Path) -> None:
    """``ResourceWrite.replaces`` (what resolve_pending's workers send) saves re-indexing the old
    body, but only while the stored hash is the one named: a stale one falls back to the body."""
    from dropzone.search.index import search_rows

    store = SqliteStore(tmp_path / "db.sqlite")
    first = _observation("o-1", "p-1")
    store.resources.upsert("acme", [_write(first)], None)
    second = _observation("o-1", "p-2")
    named = ResourceWrite("Observation", "o-1", second, resource_hash(second))
    named.replaces = (resource_hash(first), search_rows(first))
    store.resources.upsert("acme", [named], None)
    assert _search_ids(store, patient="p-1") == [] and _search_ids(store, patient="p-2") == ["o-1"]
    # Stale: names the first version while the second is stored. Its rows must not be trusted
    # (they would leave p-2's rows behind); the stored body says what to remove.
    third = _observation("o-1", "p-3")
    stale = ResourceWrite("Observation", "o-1", third, resource_hash(third))
    stale.replaces = (resource_hash(first), search_rows(first))
    store.resources.upsert("acme", [stale], None)
    assert _search_ids(store, patient="p-2") == [] and _search_ids(store, patient="p-3") == ["o-1"]
    rows = store.database.read("SELECT count(*) FROM search_keys WHERE id = 'o-1'")
    assert rows == [(5,)]
    store.close()


def test_the_change_token_moves_only_when_another_connection_commits(tmp_path: Path) -> None:
    """What the loader checks inside its transaction before trusting an earlier lookup."""
    mine = SqliteStore(tmp_path / "db.sqlite")
    other = SqliteStore(tmp_path / "db.sqlite")  # another worker process, in effect
    try:
        token = mine.resources.change_token()
        mine.resources.upsert("acme", [_write(_observation("o-1", "p-1"))], None)
        assert mine.resources.change_token() == token  # its own commits do not count
        other.resources.upsert("acme", [_write(_observation("o-2", "p-2"))], None)
        assert mine.resources.change_token() != token
        assert MemoryStore().resources.change_token() is None  # one process only: nothing to tell
    finally:
        mine.close()
        other.close()
