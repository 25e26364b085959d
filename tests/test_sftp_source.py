"""The paramiko SFTP source against a real OpenSSH server on 127.0.0.1."""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("paramiko")

from sftp_harness import SshServer, keygen, missing_openssh

from dropzone.config import Settings, load_settings
from dropzone.errors import SourceFileGone, SourceUnavailable, UsageError
from dropzone.sources import open_source
from dropzone.sources.sftp import SftpSource, parse_sftp_url
from dropzone.sources.sftp_connection import HostKeyRejected, SftpAuthFailed

pytestmark = pytest.mark.skipif(missing_openssh() is not None, reason=missing_openssh() or "")

USER = getpass.getuser()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    work = tmp_path_factory.mktemp("sshd")
    with SshServer(work / "server") as srv:
        yield srv


@pytest.fixture(scope="module")
def client_key(tmp_path_factory: pytest.TempPathFactory, server: SshServer) -> Path:
    key = keygen(tmp_path_factory.mktemp("client") / "id_ed25519")
    server.authorize(USER, key.with_suffix(".pub"))
    return key


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """The zone's root folder as the server sees it."""
    root = tmp_path / "remote"
    (root / "incoming").mkdir(parents=True)
    return root


def sftp_settings(url: str, **sftp: Any) -> Settings:
    return load_settings(config_dir=None, env={}, zone=url, sftp=sftp)


@pytest.fixture
def source(server: SshServer, client_key: Path, remote: Path, tmp_path: Path) -> Iterator[SftpSource]:
    url = f"sftp://{USER}@127.0.0.1:{server.port}{remote}"
    kh = server.write_known_hosts(tmp_path / "known_hosts")
    settings = sftp_settings(url, identity_file=str(client_key), known_hosts=str(kh))
    src = open_source(url, settings)
    assert isinstance(src, SftpSource)
    yield src
    src.close()


def write(path: Path, data: bytes = b'{"resourceType":"Patient","id":"p1"}\n') -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# -- URLs ---------------------------------------------------------------------------------------


def test_url_forms() -> None:
    ep, root = parse_sftp_url("sftp://it@files.example.org:2222/srv/zone/")
    assert (ep.host, ep.port, ep.user, root) == ("files.example.org", 2222, "it", "/srv/zone")
    assert parse_sftp_url("sftp://it@h/~/drop")[1] == "drop"
    assert parse_sftp_url("sftp://it@h")[1] == "."
    assert parse_sftp_url("sftp://it@h")[0].port == 22


def test_password_in_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(UsageError) as info:
        parse_sftp_url("sftp://it:hunter2@h/zone")
    assert "hunter2" not in str(info.value)
    assert "DROPZONE_SFTP__PASSWORD" in str(info.value)


# -- listing and reading -----------------------------------------------------------------------------


def test_lists_incoming_recursively_and_skips_uploads_in_progress(source: SftpSource, remote: Path) -> None:
    write(remote / "incoming/acme/a.ndjson")
    write(remote / "incoming/acme/2026/11/b.ndjson")
    write(remote / "incoming/beta/c.json")
    write(remote / "incoming/acme/d.ndjson.filepart")
    write(remote / "incoming/acme/.e.ndjson")
    write(remote / "incoming/acme/.hidden/f.ndjson")
    write(remote / "archived/acme/2026/01/01/old.ndjson")
    os.symlink("/etc/passwd", remote / "incoming/acme/link.ndjson")

    found = {(f.tenant, f.relpath): f for f in source.list_incoming()}

    assert set(found) == {("acme", "a.ndjson"), ("acme", "2026/11/b.ndjson"), ("beta", "c.json")}
    a = found[("acme", "a.ndjson")]
    assert a.size == (remote / "incoming/acme/a.ndjson").stat().st_size
    assert a.mtime == int((remote / "incoming/acme/a.ndjson").stat().st_mtime)


def test_missing_incoming_folder_lists_nothing(source: SftpSource, remote: Path) -> None:
    (remote / "incoming").rmdir()
    assert source.list_incoming() == []


def test_stat_and_local_copy(source: SftpSource, remote: Path) -> None:
    data = b"".join(b'{"resourceType":"Patient","id":"p%d"}\n' % i for i in range(20_000))
    write(remote / "incoming/acme/big.ndjson", data)
    file = source.stat("incoming/acme/big.ndjson")
    assert file is not None and file.size == len(data) and file.tenant == "acme"

    with source.local_copy(file) as local:
        assert local.name == "big.ndjson"  # processors may look at the extension
        assert local.read_bytes() == data
    assert not local.exists()  # the temporary download is cleaned up

    assert source.stat("incoming/acme/nope.ndjson") is None
    (remote / "incoming/acme/big.ndjson").unlink()
    with pytest.raises(SourceFileGone), source.local_copy(file):
        pass


def test_read_bytes_and_exists(source: SftpSource, remote: Path) -> None:
    write(remote / "quarantine/acme/r.json", b"0123456789")
    assert source.read_bytes("quarantine/acme/r.json") == b"0123456789"
    assert source.read_bytes("quarantine/acme/r.json", limit=4) == b"0123"
    assert source.exists("quarantine/acme/r.json")
    assert not source.exists("quarantine/acme/missing.json")
    with pytest.raises(SourceFileGone):
        source.read_bytes("quarantine/acme/missing.json")


def test_keys_cannot_leave_the_zone(source: SftpSource) -> None:
    for key in ("../etc/passwd", "/etc/passwd", "incoming/../../x", "incoming//x"):
        with pytest.raises(ValueError):
            source.exists(key)


# -- moving and writing ---------------------------------------------------------------------------


def test_move_creates_folders_and_never_overwrites(source: SftpSource, remote: Path) -> None:
    write(remote / "incoming/acme/sub/dir/a.ndjson", b"first")
    first = source.stat("incoming/acme/sub/dir/a.ndjson")
    assert first is not None
    assert source.move(first, "archived/acme/2026/11/25/a.ndjson") == "archived/acme/2026/11/25/a.ndjson"
    assert (remote / "archived/acme/2026/11/25/a.ndjson").read_bytes() == b"first"
    assert not (remote / "incoming/acme/sub").exists()  # emptied upload sub-folders are pruned
    assert (remote / "incoming/acme").is_dir()  # ... but never the tenant's folder

    write(remote / "incoming/acme/a.ndjson", b"second")
    second = source.stat("incoming/acme/a.ndjson")
    assert second is not None
    assert source.move(second, "archived/acme/2026/11/25/a.ndjson") == "archived/acme/2026/11/25/a.2.ndjson"
    assert (remote / "archived/acme/2026/11/25/a.ndjson").read_bytes() == b"first"
    assert (remote / "archived/acme/2026/11/25/a.2.ndjson").read_bytes() == b"second"

    with pytest.raises(SourceFileGone):
        source.move(second, "archived/acme/2026/11/25/a.ndjson")


def test_put_and_put_bytes_publish_under_the_final_name(
    source: SftpSource, remote: Path, tmp_path: Path
) -> None:
    key = "quarantine/acme/2026/11/25/bad.ndjson.error.json"
    assert source.put_bytes(key, b'{"outcome":"quarantined"}') == key
    assert source.put_bytes(key, b"again") == "quarantine/acme/2026/11/25/bad.2.ndjson.error.json"
    assert source.put_bytes(key, b"replaced", overwrite=True) == key
    assert (remote / key).read_bytes() == b"replaced"

    local = write(tmp_path / "rejects.ndjson", b"line\n" * 1000)
    rkey = "quarantine/acme/2026/11/25/bad.ndjson.rejects.ndjson"
    assert source.put(rkey, local) == rkey
    assert (remote / rkey).read_bytes() == local.read_bytes()

    leftovers = [p.name for p in (remote / "quarantine/acme/2026/11/25").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # temporary upload names are gone


# -- trust and credentials ---------------------------------------------------------------------------


def test_unknown_host_key_is_refused_with_a_clear_error(
    server: SshServer, client_key: Path, remote: Path, tmp_path: Path
) -> None:
    url = f"sftp://{USER}@127.0.0.1:{server.port}{remote}"
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    src = open_source(url, sftp_settings(url, identity_file=str(client_key), known_hosts=str(empty)))
    with pytest.raises(HostKeyRejected) as info:
        src.list_incoming()
    message = str(info.value)
    assert f"[127.0.0.1]:{server.port}" in message and "SHA256:" in message and str(empty) in message
    assert empty.read_text() == ""  # nothing was recorded
    src.close()


def test_changed_host_key_is_refused(
    server: SshServer, client_key: Path, remote: Path, tmp_path: Path
) -> None:
    other = keygen(tmp_path / "other_host")
    blob = other.with_suffix(".pub").read_text().split()[1]
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{server.port} ssh-ed25519 {blob}\n")
    url = f"sftp://{USER}@127.0.0.1:{server.port}{remote}"
    src = open_source(url, sftp_settings(url, identity_file=str(client_key), known_hosts=str(kh)))
    with pytest.raises(HostKeyRejected, match="expects"):
        src.start()
    src.close()


def test_accept_new_records_a_first_seen_host(
    server: SshServer, client_key: Path, remote: Path, tmp_path: Path
) -> None:
    kh = tmp_path / "ssh" / "known_hosts"  # missing file and folder are created
    url = f"sftp://{USER}@127.0.0.1:{server.port}{remote}"
    settings = sftp_settings(
        url, identity_file=str(client_key), known_hosts=str(kh), host_key_policy="accept-new"
    )
    with open_source(url, settings) as src:
        assert src.list_incoming() == []
    assert kh.read_text().split()[1:3] == server.known_hosts_line().split()[1:3]


def test_wrong_key_is_an_authentication_error(server: SshServer, remote: Path, tmp_path: Path) -> None:
    stranger = keygen(tmp_path / "stranger")
    url = f"sftp://{USER}@127.0.0.1:{server.port}{remote}"
    kh = server.write_known_hosts(tmp_path / "known_hosts")
    src = open_source(url, sftp_settings(url, identity_file=str(stranger), known_hosts=str(kh)))
    with pytest.raises(SftpAuthFailed, match="authentication failed"):
        src.list_incoming()
    src.close()


def test_per_zone_options_override_the_defaults(
    server: SshServer, client_key: Path, remote: Path, tmp_path: Path
) -> None:
    url = f"sftp://{USER}@127.0.0.1:{server.port}{remote}"
    kh = server.write_known_hosts(tmp_path / "known_hosts")
    settings = sftp_settings(
        url,
        identity_file=str(tmp_path / "missing-key"),
        zones={url: {"identity_file": str(client_key), "known_hosts": str(kh)}},
    )
    with open_source(url, settings) as src:
        assert src.list_incoming() == []


# -- outages ------------------------------------------------------------------------------------------


@pytest.fixture
def own_server(tmp_path: Path, client_key: Path) -> Iterator[SshServer]:
    """A server this test may kill and restart (same port, same host key)."""
    srv = SshServer(tmp_path / "own-sshd")
    srv.authorize(USER, client_key.with_suffix(".pub"))
    with srv:
        yield srv


def test_reconnects_after_the_server_restarts(
    own_server: SshServer, client_key: Path, remote: Path, tmp_path: Path
) -> None:
    url = f"sftp://{USER}@127.0.0.1:{own_server.port}{remote}"
    kh = own_server.write_known_hosts(tmp_path / "known_hosts")
    settings = sftp_settings(url, identity_file=str(client_key), known_hosts=str(kh))
    write(remote / "incoming/acme/a.ndjson")
    with open_source(url, settings) as src:
        assert isinstance(src, SftpSource)
        assert len(src.list_incoming()) == 1
        own_server.restart()  # every session is killed; the old connection is dead
        assert [f.relpath for f in src.list_incoming()] == ["a.ndjson"]
        assert src.connection.reconnects >= 1


def test_server_down_is_a_transient_error(
    own_server: SshServer, client_key: Path, remote: Path, tmp_path: Path
) -> None:
    url = f"sftp://{USER}@127.0.0.1:{own_server.port}{remote}"
    kh = own_server.write_known_hosts(tmp_path / "known_hosts")
    settings = sftp_settings(
        url, identity_file=str(client_key), known_hosts=str(kh), reconnect_attempts=1, reconnect_max_delay=0.1
    )
    with open_source(url, settings) as src:
        src.start()
        own_server.stop()
        with pytest.raises(SourceUnavailable, match="unreachable"):
            src.list_incoming()
        own_server.start()
        assert src.list_incoming() == []  # and it comes back by itself


def _replay_after_success(source: SftpSource, monkeypatch: pytest.MonkeyPatch, operation: str) -> None:
    """Make ``operation`` run twice, as after a connection that dropped just after the server
    did the work but before its reply arrived: the second run must notice, not repeat it."""
    real_run = source.connection.run

    def run_twice(what: str, fn: Any) -> Any:
        if what != operation:
            return real_run(what, fn)
        real_run(what, fn)
        return real_run(what, fn)

    monkeypatch.setattr(source.connection, "run", run_twice)


def test_a_move_whose_reply_was_lost_is_not_repeated(
    source: SftpSource, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(remote / "incoming/acme/a.ndjson", b"payload")
    file = source.stat("incoming/acme/a.ndjson")
    assert file is not None
    _replay_after_success(source, monkeypatch, "move")
    assert source.move(file, "archived/acme/a.ndjson") == "archived/acme/a.ndjson"
    assert sorted(p.name for p in (remote / "archived/acme").iterdir()) == ["a.ndjson"]


def test_an_upload_whose_reply_was_lost_is_not_repeated(
    source: SftpSource, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _replay_after_success(source, monkeypatch, "upload")
    assert source.put_bytes("quarantine/acme/r.error.json", b"{}") == "quarantine/acme/r.error.json"
    assert sorted(p.name for p in (remote / "quarantine/acme").iterdir()) == ["r.error.json"]


def test_threads_share_one_source(source: SftpSource, remote: Path) -> None:
    for i in range(8):
        write(remote / f"quarantine/acme/r{i}.json", b"%d" % i * 5000)

    def read(i: int) -> bytes:
        return source.read_bytes(f"quarantine/acme/r{i}.json")

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(read, [i % 8 for i in range(40)]))
    assert got == [b"%d" % (i % 8) * 5000 for i in range(40)]
