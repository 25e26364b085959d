"""A remote SFTP drop zone end to end: the paramiko source + watcher + pipeline against a real
OpenSSH server, including the server going away in the middle of a run."""

from __future__ import annotations

import getpass
import json
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

pytest.importorskip("paramiko")

from click.testing import CliRunner
from sftp_harness import SAMPLES, SshServer, keygen, line_count, missing_openssh, zone_settings

from dropzone.cli import main
from dropzone.config import Settings
from dropzone.models import FileResult, IncomingFile, Outcome
from dropzone.pipeline.runner import Pipeline
from dropzone.sources import open_source
from dropzone.sources.sftp import SftpSource
from dropzone.store.memory import MemoryStore
from dropzone.watcher import Watcher

pytestmark = pytest.mark.skipif(missing_openssh() is not None, reason=missing_openssh() or "")

USER = getpass.getuser()
BULK = SAMPLES / "smart-bulk-fhir-10-patients"
SMALL_FILES = [
    BULK / "Patient.000.ndjson",
    BULK / "AllergyIntolerance.000.ndjson",
    BULK / "Device.000.ndjson",
    BULK / "Location.000.ndjson",
    BULK / "Practitioner.000.ndjson",
]


@pytest.fixture
def client_key(tmp_path: Path) -> Path:
    return keygen(tmp_path / "id_ed25519")


@pytest.fixture
def server(tmp_path: Path, client_key: Path) -> Iterator[SshServer]:
    srv = SshServer(tmp_path / "sshd")
    srv.authorize(USER, client_key.with_suffix(".pub"))
    with srv:
        yield srv


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    root = tmp_path / "remote zone"  # a space, to keep paths honest
    (root / "incoming").mkdir(parents=True)
    return root


def settings_for(server: SshServer, remote: Path, tmp_path: Path, **pipeline: object) -> Settings:
    kh = server.write_known_hosts(tmp_path / "known_hosts")
    url = f"sftp://{USER}@127.0.0.1:{server.port}{remote}"
    sftp = {"identity_file": str(tmp_path / "id_ed25519"), "known_hosts": str(kh)}
    return zone_settings(url, sftp=sftp, **pipeline)


def drop(remote: Path, tenant: str, source: Path, name: str | None = None) -> Path:
    target = remote / "incoming" / tenant / (name or source.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes())
    return target


def test_files_are_loaded_and_archived_or_quarantined_on_the_server(
    server: SshServer, remote: Path, tmp_path: Path
) -> None:
    patients = BULK / "Patient.000.ndjson"
    drop(remote, "acme", patients, "2026/11/Patient.000.ndjson")
    bad = tmp_path / "bad.ndjson"
    bad.write_bytes(b"this is not FHIR\n")
    drop(remote, "acme", bad)
    settings = settings_for(server, remote, tmp_path)

    source = open_source(settings.zone, settings)
    with source, Pipeline(settings, MemoryStore(), source) as pipe:
        results = {r.name: r for r in Watcher(pipe, source, settings).drain_once()}

    assert results["Patient.000.ndjson"].outcome is Outcome.ARCHIVED
    assert results["Patient.000.ndjson"].counts.loaded == line_count(patients)
    assert pipe.store.resources.counts(["acme"]) == {"Patient": line_count(patients)}
    [archived] = (remote / "archived/acme").rglob("Patient.000.ndjson")
    assert archived.read_bytes() == patients.read_bytes()

    assert results["bad.ndjson"].outcome is Outcome.QUARANTINED
    [quarantined] = (remote / "quarantine/acme").rglob("bad.ndjson")
    assert quarantined.read_bytes() == bad.read_bytes()
    report = json.loads(quarantined.with_name("bad.ndjson.error.json").read_text())
    assert report["outcome"] == "quarantined" and report["tenant"] == "acme"

    assert [p for p in (remote / "incoming").rglob("*") if p.is_file()] == []
    assert not [p for p in remote.rglob(".*")]  # no temporary upload names left behind


class _GrowingUpload(SftpSource):
    """Appends to a file on the server right after each of the first ``grow_times`` listings that
    saw it, like a slow uploader: the watcher must never see it unchanged until it stops."""

    def __init__(self, inner: SftpSource, path: Path, chunks: list[bytes]) -> None:
        super().__init__(inner.endpoint, inner.root, inner.connection.options)
        self.path = path
        self.chunks = chunks
        self.sizes_seen: list[int] = []

    def list_incoming(self) -> list[IncomingFile]:
        files = super().list_incoming()
        for f in files:
            if f.key.endswith(self.path.name):
                self.sizes_seen.append(f.size)
                if self.chunks:
                    with self.path.open("ab") as fh:
                        fh.write(self.chunks.pop(0))
        return files


def test_a_file_still_growing_is_not_picked_up_early(server: SshServer, remote: Path, tmp_path: Path) -> None:
    data = (BULK / "Patient.000.ndjson").read_bytes()
    lines = data.splitlines(keepends=True)
    path = remote / "incoming/acme/growing.ndjson"
    path.parent.mkdir(parents=True)
    path.write_bytes(lines[0])
    settings = settings_for(server, remote, tmp_path, quiet_seconds=0.1)
    plain = open_source(settings.zone, settings)
    assert isinstance(plain, SftpSource)
    source = _GrowingUpload(plain, path, lines[1:])

    with source, Pipeline(settings, MemoryStore(), source) as pipe:
        [result] = Watcher(pipe, source, settings).drain_once()

    assert len(source.sizes_seen) >= len(lines)  # it was polled while growing, line by line
    assert result.counts.read == len(lines)  # and processed only once complete
    assert result.outcome is Outcome.ARCHIVED


class _Outages(SftpSource):
    """Kills sshd (listener and every session) at chosen moments; a thread restarts it shortly after."""

    def __init__(self, inner: SftpSource, server: SshServer) -> None:
        super().__init__(inner.endpoint, inner.root, inner.connection.options)
        self.server = server
        self.calls = {"local_copy": 0, "move": 0, "put_bytes": 0}
        self.kill_at = {("move", 2), ("local_copy", 3), ("put_bytes", 1)}
        self.restarts: list[threading.Thread] = []

    def _maybe_kill(self, what: str) -> None:
        self.calls[what] += 1
        if (what, self.calls[what]) in self.kill_at:
            self.server.stop()
            restart = threading.Timer(0.7, self.server.start)
            restart.start()
            self.restarts.append(restart)

    def local_copy(self, file: IncomingFile) -> AbstractContextManager[Path]:
        self._maybe_kill("local_copy")
        return super().local_copy(file)

    def move(self, file: IncomingFile, dest_key: str) -> str:
        self._maybe_kill("move")
        return super().move(file, dest_key)

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> str:
        self._maybe_kill("put_bytes")
        return super().put_bytes(key, data, overwrite=overwrite)


def test_server_killed_mid_run_nothing_lost_or_loaded_twice(
    server: SshServer, remote: Path, tmp_path: Path
) -> None:
    for f in SMALL_FILES:
        drop(remote, "acme", f)
    bad = tmp_path / "broken.ndjson"
    bad.write_bytes(b'{"resourceType": "Patient", "id": \n')
    drop(remote, "acme", bad)
    settings = settings_for(server, remote, tmp_path)
    plain = open_source(settings.zone, settings)
    assert isinstance(plain, SftpSource)
    source = _Outages(plain, server)
    store = MemoryStore()

    with source, Pipeline(settings, store, source) as pipe:
        results: list[FileResult] = pipe.drain()
        for restart in source.restarts:
            restart.join()

    assert source.calls["move"] >= 2 and source.calls["local_copy"] >= 3 and source.calls["put_bytes"] >= 1
    assert len(source.restarts) == 3 and source.connection.reconnects >= 3
    assert sorted(r.name for r in results) == sorted([f.name for f in SMALL_FILES] + ["broken.ndjson"])
    assert [p for p in (remote / "incoming").rglob("*") if p.is_file()] == []
    archived = sorted(p.name for p in (remote / "archived").rglob("*") if p.is_file())
    assert archived == sorted(f.name for f in SMALL_FILES)  # each exactly once, no numbered twins
    quarantined = sorted(p.name for p in (remote / "quarantine").rglob("*") if p.is_file())
    assert quarantined == ["broken.ndjson", "broken.ndjson.error.json"]
    expected = {f.name.split(".")[0]: line_count(f) for f in SMALL_FILES}
    assert store.resources.counts(["acme"]) == expected
    ledger = store.ledger.files(tenant="acme", limit=100)
    assert sorted(r["name"] for r in ledger) == sorted(r.name for r in results)


def test_cli_run_once_json_on_an_sftp_zone(
    server: SshServer, client_key: Path, remote: Path, tmp_path: Path
) -> None:
    drop(remote, "acme", BULK / "Device.000.ndjson")
    kh = server.write_known_hosts(tmp_path / "known_hosts")
    url = f"sftp://{USER}@127.0.0.1:{server.port}{remote}"
    config = tmp_path / "config"
    config.mkdir()
    env = {"DROPZONE_PIPELINE__VALIDATION_WORKERS": "0", "DROPZONE_PIPELINE__QUIET_SECONDS": "0.2"}
    env["DROPZONE_STORE__PATH"] = str(tmp_path / "dropzone.sqlite")  # not ./dropzone-data of the checkout
    args = ["--config", str(config), "run", "--once", "--json", "--zone", url]
    args += ["--identity", str(client_key), "--known-hosts", str(kh)]

    result = CliRunner().invoke(main, args, env=env)

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert [(f["name"], f["outcome"]) for f in summary["files"]] == [("Device.000.ndjson", "archived")]
    assert summary["resources"] == {"Device": line_count(BULK / "Device.000.ndjson")}
    assert list((remote / "archived/acme").rglob("Device.000.ndjson"))


def test_cli_refuses_an_unknown_host_key(
    server: SshServer, client_key: Path, remote: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    drop(remote, "acme", BULK / "Device.000.ndjson")
    url = f"sftp://{USER}@127.0.0.1:{server.port}{remote}"
    config = tmp_path / "config"
    config.mkdir()
    args = ["--config", str(config), "run", "--once", "--json", "--zone", url]
    args += ["--identity", str(client_key), "--known-hosts", str(empty)]

    result = CliRunner().invoke(main, args, env={"DROPZONE_STORE__PATH": str(tmp_path / "dropzone.sqlite")})

    assert result.exit_code == 2
    assert "host key refused" in result.stderr and "SHA256:" in result.stderr
    assert (remote / "incoming/acme/Device.000.ndjson").exists()  # untouched
