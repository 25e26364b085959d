"""Faults of the machine end one file's attempt, never the service (issue: a worker never dies
for one file). Each test names the observation it guards."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psutil
import pytest

from conftest import BULK, drop, make_settings
from dropzone.errors import ConfigError
from dropzone.models import Outcome
from dropzone.pipeline import runner
from dropzone.pipeline.runner import Pipeline
from dropzone.service import check_writable_paths
from dropzone.sources.base import fit_name, with_suffix_number
from dropzone.sources.folder import FolderSource
from dropzone.store.memory import MemoryStore
from dropzone.validation import validate_resource
from dropzone.watcher import Readiness, Watcher

PATIENTS = BULK / "Patient.000.ndjson"
DROPZONE = Path(sys.executable).with_name("dropzone")


def _zone_files(zone: Path, area: str) -> list[str]:
    return sorted(p.relative_to(zone / area).as_posix() for p in (zone / area).rglob("*") if p.is_file())


def test_an_unreadable_file_is_retried_then_quarantined_and_other_files_still_load(
    zone: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Observation 1: a PermissionError escaped Pipeline.process and stopped `dropzone run`."""
    drop(zone, "acme", PATIENTS)
    drop(zone, "acme", BULK / "Practitioner.000.ndjson")
    real_sha = runner.sha256_file

    def unreadable(path: Path) -> str:
        if path.name == "Patient.000.ndjson":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_sha(path)

    monkeypatch.setattr(runner, "sha256_file", unreadable)
    settings = make_settings(zone, max_attempts=3, rescan_seconds=0.01)
    store = MemoryStore()
    with Pipeline(settings, store, FolderSource(zone)) as pipeline:
        first = pipeline.drain()
        assert [r.name for r in first] == ["Practitioner.000.ndjson"]
        assert first[0].outcome is Outcome.ARCHIVED
        assert pipeline.retry_delay("incoming/acme/Patient.000.ndjson") == pytest.approx(0.01)
        assert pipeline.drain() == []  # attempt 2: still in incoming/
        assert pipeline.retry_delay("incoming/acme/Patient.000.ndjson") == pytest.approx(0.02)
        (given_up,) = pipeline.drain()  # attempt 3 = max_attempts: quarantined, not looping
    assert given_up.outcome is Outcome.QUARANTINED and given_up.reason == "permission_denied"
    assert not (zone / "incoming/acme/Patient.000.ndjson").exists()
    report = orjson.loads((zone / given_up.report).read_bytes())
    assert report["error"]["code"] == "permission_denied"
    assert "3 attempts" in report["error"]["message"]
    states = sorted(r["state"] for r in store.ledger.files("acme"))
    assert states == ["archived", "quarantined"]


def test_a_file_that_fails_then_succeeds_is_not_quarantined(
    zone: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drop(zone, "acme", PATIENTS)
    real_sha = runner.sha256_file
    calls = {"n": 0}

    def flaky(path: Path) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.EIO, "I/O error")
        return real_sha(path)

    monkeypatch.setattr(runner, "sha256_file", flaky)
    with Pipeline(make_settings(zone, max_attempts=2), MemoryStore(), FolderSource(zone)) as pipeline:
        assert pipeline.drain() == []
        (result,) = pipeline.drain()
    assert result.outcome is Outcome.ARCHIVED and result.counts.loaded == 13


def test_a_249_byte_name_is_archived_under_a_name_that_fits(zone: Path) -> None:
    """Observation 1: `<name>.error.json` (260 bytes) raised ENAMETOOLONG and killed the service."""
    name = "P" * (249 - len(".ndjson")) + ".ndjson"
    assert len(name.encode()) == 249
    drop(zone, "acme", PATIENTS, name=name)
    with Pipeline(make_settings(zone), MemoryStore(), FolderSource(zone)) as pipeline:
        (result,) = pipeline.drain()
    assert result.outcome is Outcome.ARCHIVED and result.counts.loaded == 13
    archived = Path(result.destination).name
    assert archived.endswith(".ndjson") and len(archived.encode()) + len(".rejects.ndjson") + 6 <= 255
    assert (zone / result.destination).is_file()


def test_fit_name_keeps_extensions_and_short_names() -> None:
    assert fit_name("Patient.000.ndjson") == "Patient.000.ndjson"
    long = "é" * 200 + ".ndjson.gz"
    fitted = fit_name(long)
    assert fitted.endswith(".ndjson.gz") and len(fitted.encode()) <= 215
    fitted.encode().decode()  # never cut inside a multi-byte character


def test_clash_numbers_go_before_the_format_extensions() -> None:
    """Observation 7: clash names came out as Patient.2.000.ndjson."""
    assert with_suffix_number("a/Patient.000.ndjson", 2) == "a/Patient.000.2.ndjson"
    assert with_suffix_number("a/Condition.000.ndjson.gz", 3) == "a/Condition.000.3.ndjson.gz"
    assert with_suffix_number("q/bad.ndjson.error.json", 2) == "q/bad.2.ndjson.error.json"
    assert with_suffix_number("a/README", 2) == "a/README.2"


def test_disk_full_while_writing_a_report_leaves_no_temp_file(
    zone: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Observation 1: put_bytes wrote its temp file before its try/finally; a hidden .tmp stayed."""
    source = FolderSource(zone)

    def full(self: Path, data: bytes) -> int:
        with open(self, "wb") as fh:
            fh.write(data[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError) as caught:
        source.put_bytes("quarantine/acme/x.ndjson.error.json", b"{}" * 100)
    assert caught.value.errno == errno.ENOSPC
    assert _zone_files(zone, "quarantine") == []


def test_a_missing_temp_dir_is_refused_at_start_up(zone: Path, tmp_path: Path) -> None:
    """Observation 1: pipeline.temp_dir was not checked; mkstemp failed at the first partial file."""
    settings = make_settings(zone, temp_dir=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="temp_dir"):
        check_writable_paths(settings)
    result = subprocess.run(
        [str(DROPZONE), "run", "--once", "--zone", str(zone)],
        env={**os.environ, "DROPZONE_PIPELINE__TEMP_DIR": str(tmp_path / "nope")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "temp_dir" in result.stderr and "Traceback" not in result.stderr


def test_a_paused_upload_still_open_for_writing_is_not_ready(zone: Path) -> None:
    """Observation 2: a sender pausing longer than quiet_seconds got a half-written file loaded."""
    source = FolderSource(zone)
    target = zone / "incoming/acme/Patient.000.ndjson"
    target.parent.mkdir(parents=True)
    lines = PATIENTS.read_bytes().splitlines(keepends=True)
    readiness = Readiness(0.1, atomic=False, still_writing=source.open_for_writing)
    with target.open("wb") as upload:
        upload.write(b"".join(lines[:6]))
        upload.flush()
        readiness.update(source.list_incoming())
        time.sleep(0.3)  # quiet for three times the quiet period, but still open
        ready, next_check = readiness.update(source.list_incoming())
        assert ready == [] and next_check is not None
        upload.write(b"".join(lines[6:]))
    readiness.update(source.list_incoming())  # closed and grown: quiet from now (no inotify here)
    time.sleep(0.3)
    ready, _ = readiness.update(source.list_incoming())
    assert [f.key for f in ready] == ["incoming/acme/Patient.000.ndjson"]


def test_folder_polling_is_a_real_setting(zone: Path) -> None:
    """The DROPZONE_FOLDER_POLLING switch that the folder source documents was rejected."""
    from dropzone.config import load_settings
    from dropzone.sources import open_source

    settings = load_settings(config_dir=None, env={"DROPZONE_FOLDER_POLLING": "1"}, zone=str(zone))
    assert settings.folder_polling is True
    assert open_source(str(zone), settings)._polling is True


def test_a_move_whose_source_another_worker_moved_to_the_same_place_succeeds(zone: Path) -> None:
    """Observation 3: the second worker got ENOENT from os.link, or linked a numbered copy."""
    source = FolderSource(zone)
    drop(zone, "acme", PATIENTS)
    dest = "archived/acme/2026/12/02/Patient.000.ndjson"
    # The other worker linked the destination but had not unlinked the source yet.
    (zone / dest).parent.mkdir(parents=True)
    os.link(zone / "incoming/acme/Patient.000.ndjson", zone / dest)
    assert source.move_key("incoming/acme/Patient.000.ndjson", dest) == dest
    # ... and now the source is gone altogether: still success, same destination.
    assert source.move_key("incoming/acme/Patient.000.ndjson", dest) == dest
    assert _zone_files(zone, "archived") == ["acme/2026/12/02/Patient.000.ndjson"]


def test_skipped_entries_are_said_once(zone: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Observation 5: symlinks and dot-folders were left forever without a word."""
    outside = tmp_path / "outside.ndjson"
    outside.write_bytes(PATIENTS.read_bytes())
    (zone / "incoming/acme").mkdir(parents=True)
    (zone / "incoming/acme/link.ndjson").symlink_to(outside)
    (zone / "incoming/acme/.hidden").mkdir()
    (zone / "incoming/acme/.hidden/x.ndjson").write_bytes(b"{}")
    source = FolderSource(zone)
    with caplog.at_level(logging.WARNING, logger="dropzone.sources.folder"):
        assert source.list_incoming() == []
        assert source.list_incoming() == []
    skipped = [getattr(r, "dz_fields", {}) for r in caplog.records if r.getMessage() == "file.skipped"]
    assert sorted((f["key"], f["reason"]) for f in skipped) == [
        ("incoming/acme/.hidden", "dot_folder"),
        ("incoming/acme/link.ndjson", "symlink"),
    ]


def test_a_hardlinked_file_is_archived_as_a_copy(zone: Path, tmp_path: Path) -> None:
    """Observation 5: the archived copy shared the inode of a file outside the zone."""
    outside = tmp_path / "outside.ndjson"
    outside.write_bytes(PATIENTS.read_bytes())
    (zone / "incoming/acme").mkdir(parents=True)
    os.link(outside, zone / "incoming/acme/Patient.000.ndjson")
    with Pipeline(make_settings(zone), MemoryStore(), FolderSource(zone)) as pipeline:
        (result,) = pipeline.drain()
    assert result.outcome is Outcome.ARCHIVED
    archived = zone / result.destination
    assert archived.read_bytes() == outside.read_bytes()
    assert archived.stat().st_ino != outside.stat().st_ino
    assert outside.stat().st_nlink == 1


def test_a_contained_resource_of_unknown_type_rejects_the_record_not_the_file() -> None:
    """Observation 7: the former validator (fhir.resources) raised KeyError: the file was internal_error."""
    patient = orjson.loads(PATIENTS.read_bytes().splitlines()[0])
    patient["contained"] = [{"resourceType": "NoSuchType", "id": "c1"}]
    issues = validate_resource(patient)
    assert issues and all(i.code != "internal_error" for i in issues)


def test_a_watcher_survives_an_unexpected_error_and_keeps_processing(
    zone: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drop(zone, "acme", PATIENTS)
    drop(zone, "acme", BULK / "Practitioner.000.ndjson")
    real_sniff = runner.sniff

    def broken(path: Path, limits: object, **kwargs: object):  # a bug in one processor step, outside its try
        if path.name.startswith("Patient"):
            raise RuntimeError("boom")
        return real_sniff(path, limits, **kwargs)

    monkeypatch.setattr(runner, "sniff", broken)
    settings = make_settings(zone)
    with Pipeline(settings, MemoryStore(), FolderSource(zone)) as pipeline:
        results = Watcher(pipeline, pipeline.source, settings).drain_once()
    outcomes = {r.name: r.outcome for r in results}
    assert outcomes["Practitioner.000.ndjson"] is Outcome.ARCHIVED
    assert outcomes["Patient.000.ndjson"] is Outcome.QUARANTINED  # internal_error, kept for replay


@pytest.mark.slow
def test_sigkill_of_dropzone_run_mid_validation_leaves_no_process_behind(zone: Path) -> None:
    """Observation 4: the forkserver, resource tracker and pool workers outlived a SIGKILL."""
    (zone / "incoming/acme").mkdir(parents=True)
    data = b"".join((BULK / name).read_bytes() for name in ("Encounter.000.ndjson", "Condition.000.ndjson"))
    big = zone / "incoming/acme/Mixed.ndjson"
    with big.open("wb") as out:
        for n in range(40):  # distinct ids per copy so every copy is validated
            out.write(data.replace(b'"id":"', f'"id":"r{n}-'.encode()))
    env = {
        **os.environ,
        "DROPZONE_PIPELINE__VALIDATION_WORKERS": "2",
        "DROPZONE_PIPELINE__QUIET_SECONDS": "0",
    }
    proc = subprocess.Popen(
        [str(DROPZONE), "--log-format", "json", "run", "--zone", str(zone)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 60
        children: list[psutil.Process] = []
        while time.monotonic() < deadline:
            children = parent.children(recursive=True)
            if len(children) >= 3:  # forkserver + two pool workers (plus the resource tracker)
                break
            time.sleep(0.1)
        assert len(children) >= 3, "the validation pool never started"
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], f"{len(alive)} processes of the killed service are still alive"
    finally:
        if proc.poll() is None:
            proc.kill()
        for child in psutil.process_iter():
            try:
                if child.ppid() == proc.pid:
                    child.kill()
            except psutil.Error:
                pass
