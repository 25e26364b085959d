"""Fault injection against a real `dropzone run` process, and a stress run of the two-worker race.

A. One `dropzone run` process watches a zone that receives 20 files while faults are injected in
   turn: an unreadable file, a 249-byte name, a full quarantine disk, a file deleted while it
   loads, a locked store and a full store disk. Each fault is one test of the class below (so a
   fault this machine cannot produce is skipped on its own, with the reason) and the tests share
   the process, in order. After each one the process must still run and every file that should
   load is archived with exact counts in the ledger.

   Running as root: root ignores file modes, so the service is started without the
   CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH capabilities (``setpriv``); it is still root and owns
   the zone, but a ``chmod 000`` file is then really unreadable to it. Disk-full cases need a
   small tmpfs, which only root can mount.

B. The two-worker race of test_crash_safety, 50 times on small zones (memory store, one SQLite
   store shared by both workers, one SQLite store per worker on the same database file).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import BULK, line_count, make_settings
from dropzone.models import Outcome
from dropzone.pipeline.runner import Pipeline
from dropzone.sources.folder import FolderSource
from dropzone.store.base import Store
from dropzone.store.memory import MemoryStore
from dropzone.store.sqlite import SqliteStore

TENANT = "acme"
WAIT_SECONDS = 60.0
# Small files of types the faulted files never use, so per-type resource totals are exact.
GOOD_SOURCES = [
    "Patient.000.ndjson",
    "AllergyIntolerance.000.ndjson",
    "Device.000.ndjson",
    "Organization.000.ndjson",
    "Practitioner.000.ndjson",
    "Location.000.ndjson",
    "PractitionerRole.000.ndjson",
]
# Without these the service would ignore file modes (it runs as root here).
DROP_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
# Short leases: a disk-full attempt leaves its claim held until the lease runs out (60 s default).
SERVICE_ENV = {
    "DROPZONE_PIPELINE__QUIET_SECONDS": "0.2",
    "DROPZONE_PIPELINE__VALIDATION_WORKERS": "0",
    "DROPZONE_PIPELINE__RESCAN_SECONDS": "1",
    "DROPZONE_PIPELINE__MAX_ATTEMPTS": "2",
    "DROPZONE_PIPELINE__LEASE_SECONDS": "3",
}


# -- files --------------------------------------------------------------------------------------


def fresh_ndjson(source: Path, tag: str, copies: int = 1) -> bytes:
    """``source``'s resources with ids prefixed by ``tag``: every file loads resources of its own."""
    out = []
    for copy in range(copies):
        for line in source.read_bytes().splitlines():
            if line.strip():
                doc = orjson.loads(line)
                doc["id"] = f"{tag}{copy}-{doc['id']}"[:64]
                out.append(orjson.dumps(doc))
    return b"\n".join(out) + b"\n"


def drop_bytes(zone: Path, name: str, data: bytes) -> Path:
    """Written under a hidden name, then renamed: the service only ever sees the complete file."""
    folder = zone / "incoming" / TENANT
    folder.mkdir(parents=True, exist_ok=True)
    hidden = folder / f".{len(name)}.upload"
    hidden.write_bytes(data)
    target = folder / name
    os.rename(hidden, target)
    return target


def fill(folder: Path) -> Path:
    """A file that takes every free byte of ``folder``'s filesystem."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 65536)
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 512)
    return filler


def mount_tmpfs(target: Path, size: str) -> str | None:
    """None when mounted, else why not (callers skip with it)."""
    if os.geteuid() != 0:
        return "mounting a small tmpfs needs root"
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)], capture_output=True, text=True
    )
    return None if done.returncode == 0 else f"mount -t tmpfs failed: {done.stderr.strip()}"


def unmount(target: Path) -> None:
    if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)  # busy: detach anyway


def can_drop_dac() -> bool:
    try:
        return subprocess.run([*DROP_DAC, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# -- the running service ------------------------------------------------------------------------


@dataclass
class Expected:
    rtype: str
    lines: int


@dataclass
class Service:
    """A `dropzone run` process, its events (stderr JSON lines) and the files it must archive."""

    proc: subprocess.Popen[bytes]
    zone: Path
    unreadable_reason: str | None
    store_tmpfs_reason: str | None
    events: list[dict[str, Any]] = field(default_factory=list)
    raw_lines: list[bytes] = field(default_factory=list)
    expected: dict[str, Expected] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    serial: int = 0

    @property
    def database(self) -> Path:
        return self.zone / ".dropzone" / "dropzone.sqlite"

    def read_events(self) -> None:
        """Runs in a thread: the stderr pipe must never fill, or the service would block."""
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                self.events.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                self.raw_lines.append(line)

    def seen(self, name: str, key: str | None = None, **fields: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in list(self.events)
            if e.get("event") == name
            and (key is None or e.get("key") == key)
            and all(e.get(k) == v for k, v in fields.items())
        ]

    def wait_for(self, name: str, key: str | None = None, count: int = 1, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            found = self.seen(name, key, **fields)
            if len(found) >= count:
                return found[count - 1]
            assert self.proc.poll() is None, f"the service exited ({self.proc.returncode}) waiting for {name}"
            time.sleep(0.05)
        raise AssertionError(f"no {name} for {key} {fields} in {WAIT_SECONDS:.0f} s: {self.events[-5:]}")

    def drop_good(self, n: int) -> list[str]:
        """``n`` valid files that must end archived, each with resources of its own."""
        names = []
        for _ in range(n):
            self.serial += 1
            source = BULK / GOOD_SOURCES[self.serial % len(GOOD_SOURCES)]
            name = f"good{self.serial:02d}.{source.name}"
            self.drop_archivable(name, source, f"g{self.serial:02d}")
            names.append(name)
        return names

    def drop_archivable(self, name: str, source: Path, tag: str) -> Path:
        path = self.drop(name, fresh_ndjson(source, tag))
        self.expected[name] = Expected(source.name.split(".")[0], line_count(path))
        return path

    def drop(self, name: str, data: bytes) -> Path:
        self.dropped.append(name)
        return drop_bytes(self.zone, name, data)

    def skip(self, reason: str) -> None:
        self.skipped.append(reason)
        pytest.skip(reason)

    def wait_finished(self, names: list[str]) -> None:
        for name in names:
            self.wait_for("file.finished", key(name))

    def assert_healthy(self) -> None:
        """Still running, and every file that must load is archived with exact counts."""
        assert self.proc.poll() is None, f"the service exited with {self.proc.returncode}"
        self.wait_finished(list(self.expected))
        store = SqliteStore(self.database)
        try:
            records = store.ledger.files(TENANT, limit=100)
            types = store.resources.counts([TENANT])
        finally:
            store.close()
        by_name: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            by_name.setdefault(record["name"], []).append(record)
        for name, want in self.expected.items():
            assert not (self.zone / key(name)).exists(), f"{name} is still in incoming/"
            found = by_name.get(name, [])
            assert len(found) == 1, f"{name}: {len(found)} ledger records (one per file, not per attempt)"
            record = found[0]
            assert record["state"] == "archived", (name, record["state"], record.get("error"))
            lines = want.lines
            assert record["counts"] == {"read": lines, "loaded": lines, "unchanged": 0, "rejected": 0}
            archived = self.zone / record["destination"]
            assert record["destination"].startswith(f"archived/{TENANT}/") and archived.is_file()
            assert line_count(archived) == lines
        per_type: dict[str, int] = {}
        for want in self.expected.values():
            per_type[want.rtype] = per_type.get(want.rtype, 0) + want.lines
        assert {t: types.get(t, 0) for t in per_type} == per_type

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def key(name: str) -> str:
    return f"incoming/{TENANT}/{name}"


def service_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DROPZONE_", "MONGODB_"))}
    return {**env, **SERVICE_ENV}


@pytest.fixture(scope="class")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp_path = tmp_path_factory.mktemp("fault-run")
    zone = tmp_path / "zone"
    (zone / "incoming" / TENANT).mkdir(parents=True)
    # The store's disk-full case needs the default database path on a small disk from the start.
    store_dir = zone / ".dropzone"
    store_tmpfs_reason = mount_tmpfs(store_dir, "256m")  # the store with its search index and a 40 MB WAL
    prefix: list[str] = []
    unreadable_reason = None
    if os.geteuid() == 0:
        if can_drop_dac():
            prefix = DROP_DAC
        else:
            unreadable_reason = "running as root and setpriv cannot drop CAP_DAC_*: file modes do not apply"
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-m", "dropzone", "--log-format", "json", "run", "--zone", str(zone)],
        env=service_env(),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    running = Service(proc, zone, unreadable_reason, store_tmpfs_reason)
    reader = threading.Thread(target=running.read_events, daemon=True)
    reader.start()
    try:
        running.drop_good(2)  # files waiting before the first scan, as after a restart
        running.wait_for("watch.started")
        yield running
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        reader.join(timeout=10)
        if store_tmpfs_reason is None:
            unmount(store_dir)


# -- A: faults against the real process -------------------------------------------------------------


class TestFaultInjectionRun:
    """In order, on one process (pytest runs a class's tests in the order written)."""

    def test_1_an_unreadable_file_is_quarantined_after_its_attempts(self, service: Service) -> None:
        good = service.drop_good(2)
        # A named pipe is no regular file: it is skipped (said once), never opened (it would block).
        fifo = service.zone / key("pipe.ndjson")
        os.mkfifo(fifo)
        service.wait_for("file.skipped", key("pipe.ndjson"), reason="not_a_file")
        if service.unreadable_reason:
            fifo.unlink()
            service.skip(service.unreadable_reason)
        path = service.drop("unreadable.ndjson", fresh_ndjson(BULK / "Patient.000.ndjson", "u"))
        path.chmod(0)
        finished = service.wait_for("file.finished", key("unreadable.ndjson"))
        attempts = service.seen("file.attempt_failed", key("unreadable.ndjson"))
        assert [(a["code"], a["attempt"], a.get("errno")) for a in attempts] == [
            ("permission_denied", 1, "EACCES"),
            ("permission_denied", 2, "EACCES"),
        ]
        assert finished["outcome"] == "quarantined" and finished["reason"] == "permission_denied"
        report = orjson.loads((service.zone / f"{finished['destination']}.error.json").read_bytes())
        assert report["error"]["code"] == "permission_denied"
        assert (service.zone / finished["destination"]).exists()
        assert fifo.exists()  # left where it is: only the sender can say what it was
        fifo.unlink()
        service.wait_finished(good)
        service.assert_healthy()

    def test_2_a_249_byte_name_is_archived_under_a_name_that_fits(self, service: Service) -> None:
        name = "L" * (249 - len(".ndjson")) + ".ndjson"
        service.drop_archivable(name, BULK / "Patient.000.ndjson", "long")
        good = service.drop_good(2)
        finished = service.wait_for("file.finished", key(name))
        archived = Path(finished["destination"]).name
        assert archived.endswith(".ndjson") and len(archived.encode()) <= 215
        service.wait_finished(good)
        service.assert_healthy()

    def test_3_a_full_quarantine_disk_keeps_the_file_until_there_is_room(self, service: Service) -> None:
        quarantine = service.zone / "quarantine"
        reason = mount_tmpfs(quarantine, "1m")
        if reason:
            service.skip(f"disk full: {reason}")
        try:
            filler = fill(quarantine)
            # Not FHIR: it must go to quarantine, where its report no longer fits.
            service.drop("notfhir.ndjson", b"this is not json\n")
            good = service.drop_good(2)
            failed = service.wait_for("file.attempt_failed", key("notfhir.ndjson"))
            assert (failed["code"], failed.get("errno")) == ("disk_full", "ENOSPC")
            # The last attempt's quarantine fails too: the file is kept, not lost.
            service.wait_for("file.quarantine_failed", key("notfhir.ndjson"))
            assert (service.zone / key("notfhir.ndjson")).is_file()
            service.wait_finished(good)  # archived/ is on another disk: other files still load
            service.assert_healthy()
            filler.unlink()
            finished = service.wait_for("file.finished", key("notfhir.ndjson"))
            assert finished["outcome"] == "quarantined" and finished["reason"] == "unknown_format"
            assert (quarantine / finished["destination"].removeprefix("quarantine/")).is_file()
            assert (service.zone / f"{finished['destination']}.error.json").is_file()
            hidden = [p.name for p in quarantine.rglob(".*")]
            assert hidden == [], "a half-written temp file was left behind"
        finally:
            unmount(quarantine)
        service.assert_healthy()

    def test_4_a_file_deleted_while_it_loads_ends_the_attempt_not_the_service(self, service: Service) -> None:
        big = service.drop("deleted.ndjson", fresh_ndjson(BULK / "Encounter.000.ndjson", "d", 17))
        assert line_count(big) > 20_000
        service.wait_for("file.claimed", key("deleted.ndjson"))
        wait_for_rows(service.database, "d0-%")  # mid-file: the first batch is in the store
        big.unlink()
        service.wait_for("file.gone", key("deleted.ndjson"))
        good = service.drop_good(2)
        service.wait_finished(good)
        assert service.seen("file.finished", key("deleted.ndjson")) == []
        assert list((service.zone / "archived").rglob("deleted*")) == []
        service.assert_healthy()

    def test_4b_the_ledger_names_no_destination_that_is_absent(self, service: Service) -> None:
        store = SqliteStore(service.database)
        try:
            records = [r for r in store.ledger.files(TENANT, limit=100) if r["name"] == "deleted.ndjson"]
        finally:
            store.close()
        assert records, "the deleted file has no ledger record"
        claimed = [(r["state"], r["destination"]) for r in records if r.get("destination")]
        assert all((service.zone / dest).is_file() for _state, dest in claimed), claimed
        assert any(r.get("source_gone") and r["destination"] is None for r in records), records

    def test_5_a_locked_store_holds_files_in_incoming_until_it_is_free(self, service: Service) -> None:
        # Another process holds SQLite's writer lock (a backup, a long `dropzone` command). The
        # service waits on it (busy timeout 60 s) instead of failing the files.
        holder = sqlite3.connect(service.database, timeout=30, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            service.drop_archivable("locked.ndjson", BULK / "Patient.000.ndjson", "lock")
            good = service.drop_good(2)
            time.sleep(4)
            assert service.proc.poll() is None
            for name in ["locked.ndjson", *good]:
                assert (service.zone / key(name)).is_file()
                assert service.seen("file.finished", key(name)) == []
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        service.assert_healthy()

    def test_6_a_full_store_disk_is_retried_until_the_store_writes_again(self, service: Service) -> None:
        if service.store_tmpfs_reason:
            service.skip(f"store disk full: {service.store_tmpfs_reason}")
        truncate_wal(service.database)
        filler = fill(service.database.parent)
        try:
            service.drop_archivable("storefull.ndjson", BULK / "Immunization.000.ndjson", "sf")
            good = service.drop_good(2)
            service.wait_for(
                "file.retry_later", key("storefull.ndjson"), count=2, error_type="StoreUnavailable"
            )
            assert service.proc.poll() is None
            for name in ["storefull.ndjson", *good]:
                assert (service.zone / key(name)).is_file()
        finally:
            filler.unlink()
        # Transient: the store's fault spends none of the file's attempts.
        assert service.seen("file.attempt_failed", key("storefull.ndjson")) == []
        service.assert_healthy()

    def test_7_sigterm_stops_the_service_cleanly(self, service: Service) -> None:
        service.assert_healthy()
        if not service.skipped:  # 17 that load, plus the unreadable, not-FHIR and deleted files
            assert len(service.dropped) == 20, service.dropped
        assert service.stop() == 0
        assert service.raw_lines == [], "something printed outside the JSON log (a traceback?)"


def truncate_wal(database: Path) -> None:
    """Checkpoint and empty the WAL file: SQLite reuses a WAL's space after a checkpoint, so a
    full disk only reaches the service's writes once the WAL has no room of its own left."""
    conn = sqlite3.connect(database, timeout=30, isolation_level=None)
    try:
        busy, _log_frames, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    assert busy == 0, "the service held the database during the checkpoint"
    assert Path(f"{database}-wal").stat().st_size == 0


def wait_for_rows(database: Path, id_pattern: str) -> None:
    """Until the store holds a resource whose id matches ``id_pattern`` (read-only, WAL: never blocks)."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            if conn.execute("SELECT 1 FROM resources WHERE id LIKE ? LIMIT 1", (id_pattern,)).fetchone():
                return
            time.sleep(0.01)
    finally:
        conn.close()
    raise AssertionError(f"no resource {id_pattern} was stored in {WAIT_SECONDS:.0f} s")


# -- B: the two-worker race, many times ---------------------------------------------------------------

RACE_FILES = [
    "Patient.000.ndjson",
    "AllergyIntolerance.000.ndjson",
    "Device.000.ndjson",
    "Location.000.ndjson",
]
RACE_ROUNDS = 50


def race_stores(kind: str, database: Path) -> tuple[Store, Store]:
    """The store each of the two workers uses."""
    if kind == "memory":
        shared: Store = MemoryStore()
        return shared, shared
    if kind == "sqlite-shared":
        one = SqliteStore(database)
        return one, one
    return SqliteStore(database), SqliteStore(database)


def race_once(zone: Path, stores: tuple[Store, Store]) -> list[Any]:
    """Two workers start together on the same files; returns every result either reported."""
    settings = make_settings(zone)
    start = threading.Barrier(2)
    results: dict[str, list[Any]] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def work(name: str, store: Store) -> None:
        try:
            with Pipeline(settings, store, FolderSource(zone), worker_id=name) as pipeline:
                start.wait(timeout=30)
                for _ in range(3):  # re-list: a file busy in the other worker is skipped, then gone
                    results[name].extend(pipeline.drain())
        except BaseException as err:  # re-raised in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=work, args=(n, s)) for n, s in zip(results, stores, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    if errors:
        raise errors[0]
    return results["a"] + results["b"]


def close_stores(stores: tuple[Store, Store]) -> None:
    for store in {id(s): s for s in stores}.values():
        store.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["memory", "sqlite-shared", "sqlite-per-worker"])
def test_two_workers_race_many_times_and_each_file_is_processed_exactly_once(
    tmp_path: Path, kind: str
) -> None:
    expected = {name: line_count(BULK / name) for name in RACE_FILES}
    for round_ in range(RACE_ROUNDS):
        zone = tmp_path / f"round{round_:02d}"
        incoming = zone / "incoming" / TENANT
        incoming.mkdir(parents=True)
        for name in RACE_FILES:
            shutil.copyfile(BULK / name, incoming / name)
        stores = race_stores(kind, tmp_path / f"db{round_:02d}" / "dropzone.sqlite")
        try:
            done = race_once(zone, stores)
            check_round(zone, stores[0], done, expected, round_)
        finally:
            close_stores(stores)


def check_round(zone: Path, store: Store, done: list[Any], expected: dict[str, int], round_: int) -> None:
    where = f"round {round_}"
    assert sorted(r.name for r in done) == sorted(expected), where  # each file exactly once
    assert {r.outcome for r in done} == {Outcome.ARCHIVED}, where
    assert {r.name: r.counts.loaded for r in done} == expected, where
    archived = sorted(p.name for p in (zone / "archived").rglob("*") if p.is_file())
    assert archived == sorted(expected), f"{where}: numbered or missing copies in archived/: {archived}"
    assert list((zone / "incoming").rglob("*.ndjson")) == [], where
    assert sum(store.resources.counts([TENANT]).values()) == sum(expected.values()), where
    records = store.ledger.files(TENANT, limit=100)
    assert sorted(r["name"] for r in records) == sorted(expected), f"{where}: one ledger record per file"
    assert {r["state"] for r in records} == {"archived"}, where


# Run in a fresh interpreter: the registry loads once per process.
_REGISTRY_RACE = """
import threading
from processors import registry
start, seen = threading.Barrier(2), {}
def ask(name):
    start.wait()
    seen[name] = sorted(registry.all_processors())
threads = [threading.Thread(target=ask, args=(n,)) for n in "ab"]
for t in threads: t.start()
for t in threads: t.join()
print(len(seen["a"]), len(seen["b"]))
"""


def test_two_threads_asking_for_processors_at_once_both_get_them() -> None:
    done = subprocess.run([sys.executable, "-c", _REGISTRY_RACE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    first, second = map(int, done.stdout.split())
    assert first > 0 and first == second
