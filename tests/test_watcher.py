"""When is a file complete? Readiness rules with a fake clock, then the real watchdog watcher."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from conftest import BULK, make_settings
from dropzone.models import FileResult, IncomingFile, Outcome
from dropzone.pipeline.runner import Pipeline
from dropzone.sources.base import is_temporary_name
from dropzone.sources.folder import FolderSource
from dropzone.store.memory import MemoryStore
from dropzone.watcher import Readiness, Watcher


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def incoming(size: int, mtime: float | None = None, key: str = "a.ndjson") -> IncomingFile:
    return IncomingFile("acme", key, size, time.time() if mtime is None else mtime)


@pytest.mark.parametrize(
    ("relpath", "temporary"),
    [
        ("a.ndjson.part", True),
        ("a.filepart", True),
        ("x.TMP", True),
        (".hidden.ndjson", True),
        ("sub/.upload/a.ndjson", True),
        ("a.ndjson", False),
        ("2026/a.ndjson.gz", False),
    ],
)
def test_temporary_upload_names(relpath: str, temporary: bool) -> None:
    assert is_temporary_name(relpath) is temporary


def test_a_growing_file_waits_for_the_quiet_period() -> None:
    clock = FakeClock()
    readiness = Readiness(quiet_seconds=2.0, atomic=False, clock=clock)
    t0 = time.time()
    ready, wait = readiness.update([incoming(10, t0)])
    assert ready == [] and wait == pytest.approx(2.0, abs=0.1)
    clock.now += 1.5
    assert readiness.update([incoming(20, t0 + 1.5)])[0] == []  # still growing: the wait restarts
    clock.now += 1.9
    assert readiness.update([incoming(20, t0 + 1.5)])[0] == []
    clock.now += 0.2
    assert readiness.update([incoming(20, t0 + 1.5)])[0] == [incoming(20, t0 + 1.5)]


def test_close_after_write_makes_a_file_ready_at_once() -> None:
    clock = FakeClock()
    readiness = Readiness(quiet_seconds=3600, atomic=False, clock=clock)
    assert readiness.update([incoming(10)])[0] == []
    readiness.mark_closed({"incoming/acme/a.ndjson"})
    ready, _ = readiness.update([incoming(25)])
    assert [f.size for f in ready] == [25]


def test_old_files_found_at_start_up_are_ready_and_atomic_sources_never_wait() -> None:
    clock = FakeClock()
    assert Readiness(2.0, atomic=False, clock=clock).update([incoming(5, mtime=time.time() - 60)])[0]
    assert Readiness(3600, atomic=True, clock=clock).update([incoming(5)])[0]
    # Remote clocks are not ours: an SFTP file always waits one quiet period we measured.
    assert not Readiness(2.0, atomic=False, clock=clock, mtime_is_local=False).update(
        [incoming(5, mtime=time.time() - 60)]
    )[0]


def test_retry_later_holds_a_busy_file_back() -> None:
    clock = FakeClock()
    readiness = Readiness(0, atomic=True, clock=clock)
    assert readiness.update([incoming(5)])[0]
    readiness.retry_later("incoming/acme/a.ndjson", 30)
    ready, wait = readiness.update([incoming(5)])
    assert ready == [] and wait == pytest.approx(30)
    clock.now += 31
    assert readiness.update([incoming(5)])[0]


# -- the real watcher (watchdog / inotify) ---------------------------------------------------------


class Running:
    def __init__(self, zone: Path, quiet: float) -> None:
        self.store = MemoryStore()
        self.settings = make_settings(zone, quiet_seconds=quiet, rescan_seconds=0.5)
        self.source = FolderSource(zone)
        self.pipeline = Pipeline(self.settings, self.store, self.source)
        self.results: list[FileResult] = []
        self.done = threading.Condition()
        self.watcher = Watcher(self.pipeline, self.source, self.settings, on_result=self._record)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.watcher.run, args=(self.stop,), daemon=True)

    def _record(self, result: FileResult) -> None:
        with self.done:
            self.results.append(result)
            self.done.notify_all()

    def wait_for(self, n: int, timeout: float = 30) -> list[FileResult]:
        with self.done:
            assert self.done.wait_for(lambda: len(self.results) >= n, timeout), self.results
            return list(self.results)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.source.wake()
        self.thread.join(timeout=10)
        self.source.close()
        self.pipeline.close()


def test_watcher_processes_startup_files_then_new_ones_once(zone: Path) -> None:
    (zone / "incoming" / "acme").mkdir()
    lines = (BULK / "Patient.000.ndjson").read_bytes().splitlines(keepends=True)
    old = zone / "incoming" / "acme" / "present-at-start.ndjson"
    old.write_bytes(b"".join(lines[:3]))
    past = time.time() - 7200  # older than the quiet period
    import os

    os.utime(old, (past, past))
    with Running(zone, quiet=3600) as running:  # only close events or age can make files ready
        (first,) = running.wait_for(1)
        assert first.name == "present-at-start.ndjson"

        # Written in pieces with pauses: one job, after close, with every line.
        with (zone / "incoming" / "acme" / "slow.ndjson").open("wb") as out:
            for line in lines[3:]:
                out.write(line)
                out.flush()
                time.sleep(0.02)
        results = running.wait_for(2)
        assert results[1].name == "slow.ndjson"
        assert results[1].counts.read == len(lines) - 3
        time.sleep(0.5)
        assert len(running.results) == 2  # a burst of events became one job
    assert running.store.resources.counts(["acme"]) == {"Patient": len(lines)}


def test_temporary_names_wait_until_renamed(zone: Path) -> None:
    (zone / "incoming" / "acme").mkdir()
    part = zone / "incoming" / "acme" / "upload.ndjson.filepart"
    with Running(zone, quiet=0.2) as running:
        part.write_bytes((BULK / "Patient.000.ndjson").read_bytes())
        time.sleep(1.0)
        assert running.results == []
        assert part.exists()
        part.rename(part.with_name("upload.ndjson"))
        (result,) = running.wait_for(1)
    assert result.name == "upload.ndjson" and result.outcome is Outcome.ARCHIVED


def test_a_file_moved_in_without_close_event_waits_the_quiet_period(zone: Path, tmp_path: Path) -> None:
    (zone / "incoming" / "acme").mkdir()
    staged = tmp_path / "moved.ndjson"
    staged.write_bytes((BULK / "Patient.000.ndjson").read_bytes())
    with Running(zone, quiet=0.8) as running:
        time.sleep(0.2)
        started = time.monotonic()
        staged.rename(zone / "incoming" / "acme" / "moved.ndjson")  # same filesystem: "created"/"moved"
        (result,) = running.wait_for(1)
        waited = time.monotonic() - started
    assert result.outcome is Outcome.ARCHIVED
    assert waited >= 0.8  # readiness, not speed: it must not be taken before the quiet period
