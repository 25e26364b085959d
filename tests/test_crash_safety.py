"""Nothing lost, nothing loaded twice: workers dying mid-file, leases expiring, two workers.

* In-process "abrupt death": a worker stops dead in the middle of a file (an exception no
  handler catches, like a kill: no cleanup, the lease is not released) on a store shared with
  a second worker, which takes the file over when the lease expires. Runs on the memory store,
  SQLite and MongoDB (mongomock), so the resume really meets half-written data.
* A real SIGKILL of a `dropzone run` process, then a restart. On the embedded SQLite default
  (and on a real MongoDB when MONGODB_URI is set) the restart meets the first run's writes and
  its unexpired lease; on the memory store it starts empty, so that case shows the file is not
  lost and the zone lock dies with the process.
* Real processes sharing one zone and one SQLite database: each file exactly once.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from conftest import (
    BULK,
    drop,
    line_count,
    make_settings,
    mongomock_store,
    real_mongo_store,
    spawn_run_once,
    write_replicas,
)
from dropzone.models import Outcome
from dropzone.pipeline.runner import Pipeline
from dropzone.sources.folder import FolderSource
from dropzone.store.base import Store
from dropzone.store.memory import MemoryStore
from dropzone.store.sqlite import SqliteStore

ENCOUNTERS = BULK / "Encounter.000.ndjson"


class WorkerKilled(BaseException):
    """Not an Exception: no handler in the pipeline catches it, as with SIGKILL."""


def _kill_after_upserts(store: Store, n: int) -> None:
    original = store.resources.upsert
    calls = {"n": 0}

    def upsert(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n:
            store.resources.upsert = original  # the next worker gets a healthy store
            raise WorkerKilled
        return original(*args, **kwargs)

    store.resources.upsert = upsert


def _store(kind: str, tmp_path: Path) -> Store:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SqliteStore(tmp_path / "db" / "dropzone.sqlite")
    return mongomock_store()


@pytest.mark.parametrize("store_kind", ["memory", "sqlite", "mongomock"])
@pytest.mark.parametrize("commit_seconds", [0.0, 60.0])
def test_worker_dying_mid_file_is_resumed_with_exact_counts(
    zone: Path, tmp_path: Path, store_kind: str, commit_seconds: float
) -> None:
    """commit_seconds 0: every batch is committed, so the dead worker leaves 4 of 12 batches
    stored. 60: the batches share one transaction, which SQLite rolls back (the other stores
    have none: they keep what was written)."""
    lines = ENCOUNTERS.read_bytes().splitlines()[:600]
    source = tmp_path / "encounters.ndjson"
    source.write_bytes(b"\n".join(lines) + b"\n")
    drop(zone, "acme", source)
    store = _store(store_kind, tmp_path)
    settings = make_settings(zone, batch_size=50, lease_seconds=0.5, commit_seconds=commit_seconds)

    _kill_after_upserts(store, 4)
    first = Pipeline(settings, store, FolderSource(zone), worker_id="w1")
    with pytest.raises(WorkerKilled):
        first.drain()
    rolled_back = store_kind == "sqlite" and commit_seconds > 0
    assert store.resources.counts(["acme"]) == ({} if rolled_back else {"Encounter": 200})
    assert (zone / "incoming" / "acme" / "encounters.ndjson").exists()

    second = Pipeline(settings, store, FolderSource(zone), worker_id="w2")
    assert second.drain() == []  # lease still held by the dead worker: skipped, not stolen
    time.sleep(0.6)
    (result,) = second.drain()

    assert result.outcome is Outcome.ARCHIVED
    assert result.counts.as_dict() == {"read": 600, "loaded": 600, "unchanged": 0, "rejected": 0}
    assert store.resources.counts(["acme"]) == {"Encounter": 600}
    for line in lines[:250]:
        doc = store.resources.get_document("acme", "Encounter", orjson.loads(line)["id"])
        assert doc["meta"]["versionId"] == "1"  # rewritten by the resume, not versioned twice
    (record,) = store.ledger.files("acme")
    assert record["state"] == "archived" and record["attempt"] == 2
    first.close()
    second.close()


def test_crash_between_finish_and_move_only_completes_the_move(zone: Path) -> None:
    drop(zone, "acme", BULK / "Patient.000.ndjson")
    store = MemoryStore()
    settings = make_settings(zone, lease_seconds=1.0)
    source = FolderSource(zone)
    original_move = source.move

    def die(*_args, **_kwargs):
        raise WorkerKilled

    source.move = die
    with Pipeline(settings, store, source) as first, pytest.raises(WorkerKilled):
        first.drain()
    source.move = original_move
    with Pipeline(settings, store, FolderSource(zone)) as second:
        # While the owner's lease runs it may still be moving the file: a second worker leaves it.
        assert second.drain() == []
        assert (zone / "incoming/acme/Patient.000.ndjson").is_file()
        time.sleep(1.1)
        (result,) = second.drain()
    assert result.outcome is Outcome.ARCHIVED
    assert result.counts.loaded == 13
    assert len(store.ledger.files("acme")) == 1  # no duplicate record, no second load


def test_slow_move_after_completing_is_not_a_lost_lease(zone: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Moving a big file to archived/ can outlast a lease beat (seen with a 4 GB file): the beat
    stops before the claim is completed, so no renewal meets a finished claim and reports it lost."""
    drop(zone, "acme", BULK / "Patient.000.ndjson")
    store = MemoryStore()
    source = FolderSource(zone)
    original_move = source.move

    def slow_move(*args, **kwargs):
        time.sleep(0.5)  # five beats of a 0.3 s lease
        return original_move(*args, **kwargs)

    source.move = slow_move
    with (
        caplog.at_level(logging.WARNING, logger="dropzone.lease"),
        Pipeline(make_settings(zone, lease_seconds=0.3), store, source) as pipeline,
    ):
        (result,) = pipeline.drain()
    assert result.outcome is Outcome.ARCHIVED
    assert [r.getMessage() for r in caplog.records] == []


# Not on mongomock: it is not thread-safe, and atomic claims are the server's job there.
@pytest.mark.parametrize("store_kind", ["memory", "sqlite", "mongodb"])
def test_two_workers_on_one_zone_process_each_file_exactly_once(
    zone: Path, tmp_path: Path, store_kind: str
) -> None:
    files = sorted(p for p in BULK.glob("*.ndjson") if p.name != "log.ndjson")
    expected = sum(line_count(p) for p in files)
    drop(zone, "acme", *files)
    if store_kind == "mongodb":
        if not os.environ.get("MONGODB_URI"):
            pytest.skip("real MongoDB tests need MONGODB_URI (no MongoDB server on this machine)")
        store: Store = real_mongo_store()
    else:
        store = _store(store_kind, tmp_path)
    settings = make_settings(zone, batch_size=200)
    results: dict[str, list] = {"a": [], "b": []}

    def work(name: str) -> None:
        with Pipeline(settings, store, FolderSource(zone), worker_id=name) as pipeline:
            for _ in range(3):  # re-list: a file busy in the other worker is skipped, then gone
                results[name].extend(pipeline.drain())

    threads = [threading.Thread(target=work, args=(n,)) for n in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    done = results["a"] + results["b"]
    assert sorted(r.name for r in done) == sorted(p.name for p in files)
    assert {r.outcome for r in done} == {Outcome.ARCHIVED}
    assert sum(r.counts.loaded for r in done) == expected
    assert sum(store.resources.counts(["acme"]).values()) == expected
    assert len(store.ledger.files("acme", limit=100)) == len(files)
    if store_kind == "mongodb":
        store._client.drop_database(store._test_database)  # type: ignore[attr-defined]


def _big_ndjson(path: Path, copies: int) -> int:
    return write_replicas(ENCOUNTERS, path, copies)


@pytest.mark.parametrize("store_kind", ["memory", "sqlite", "mongodb"])
def test_sigkill_mid_file_then_restart_completes_with_exact_counts(
    zone: Path, tmp_path: Path, store_kind: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DROPZONE_", "MONGODB_"))}
    env["DROPZONE_PIPELINE__BATCH_SIZE"] = "200"
    env["DROPZONE_PIPELINE__COMMIT_SECONDS"] = "0"  # each batch committed: the kill leaves some
    env["DROPZONE_PIPELINE__LEASE_SECONDS"] = "2"
    env["DROPZONE_PIPELINE__QUIET_SECONDS"] = "0"
    if store_kind == "mongodb":
        if not os.environ.get("MONGODB_URI"):
            pytest.skip("real MongoDB tests need MONGODB_URI (no MongoDB server on this machine)")
        env["MONGODB_URI"] = os.environ["MONGODB_URI"]
        env["DROPZONE_STORE__DATABASE"] = f"dropzone_crash_{os.getpid()}"
    env["DROPZONE_STORE__KIND"] = "auto" if store_kind == "mongodb" else store_kind
    (zone / "incoming" / "acme").mkdir()
    total = _big_ndjson(zone / "incoming" / "acme" / "big.ndjson", copies=6)

    victim = spawn_run_once(zone, env, "DEBUG")
    batches = 0
    for raw in victim.stderr:  # wait until a few batches are stored, then kill without warning
        batches += b'"file.batch"' in raw
        if batches == 3:
            break
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    assert (zone / "incoming" / "acme" / "big.ndjson").exists()  # nothing lost

    if store_kind == "sqlite":
        # The killed process's database opens cleanly (WAL recovery) and says the file is in work.
        status = subprocess.run(
            [sys.executable, "-m", "dropzone", "status", "--zone", str(zone), "--json"],
            capture_output=True,
            env=env,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr.decode()[-2000:]
        held = json.loads(status.stdout)
        assert held["files"] == {"acme": {"processing": 1}}
        assert 0 < held["resources"]["acme"]["Encounter"] < total
    if store_kind != "memory":
        time.sleep(2.5)  # let the dead worker's lease expire
    survivor = spawn_run_once(zone, env, "DEBUG")
    out, err = survivor.communicate(timeout=280)
    assert survivor.returncode == 0, err.decode()[-2000:]
    summary = json.loads(out)
    (file,) = summary["files"]
    assert file["outcome"] == "archived"
    assert file["records"]["read"] == total
    assert file["records"]["loaded"] == total and file["records"]["rejected"] == 0
    assert summary["resources"] == {"Encounter": total}


def test_a_dead_validation_worker_leaves_the_file_for_a_retry(zone: Path) -> None:
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    drop(zone, "acme", BULK / "Patient.000.ndjson")
    store = MemoryStore()
    with Pipeline(make_settings(zone), store, FolderSource(zone)) as pipeline:
        real_call = pipeline.validator.call

        def call_a_dead_pool(fn, *args):
            pipeline.validator.call = real_call
            dead: Future = Future()
            dead.set_exception(BrokenProcessPool("a worker was killed"))  # as when the OOM killer strikes
            return dead

        pipeline.validator.call = call_a_dead_pool
        assert pipeline.drain() == []  # not quarantined: the file's content is not at fault
        assert (zone / "incoming" / "acme" / "Patient.000.ndjson").exists()
        (result,) = pipeline.drain()  # lease released at once, so the retry needs no wait
    assert result.outcome is Outcome.ARCHIVED and result.counts.loaded == 13


def test_shutdown_mid_file_releases_the_lease_and_keeps_the_file(zone: Path, tmp_path: Path) -> None:
    source_file = tmp_path / "encounters.ndjson"
    source_file.write_bytes(b"\n".join(ENCOUNTERS.read_bytes().splitlines()[:400]) + b"\n")
    drop(zone, "acme", source_file)
    store = MemoryStore()
    settings = make_settings(zone, batch_size=50, lease_seconds=3600)
    with Pipeline(settings, store, FolderSource(zone), worker_id="w1") as first:
        first.progress = lambda _file, _n: first.cancel.set()  # SIGTERM after the first batch
        assert first.drain() == []
    assert (zone / "incoming" / "acme" / "encounters.ndjson").exists()
    with Pipeline(settings, store, FolderSource(zone), worker_id="w2") as second:
        (result,) = second.drain()  # no waiting for a 1-hour lease: it was released
    assert result.outcome is Outcome.ARCHIVED
    assert result.counts.loaded == 400
