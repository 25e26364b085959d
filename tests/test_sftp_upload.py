"""Tenants upload into the local drop zone through the real OpenSSH server, using the accounts
that `dropzone sftp-config` generates (chrooted internal-sftp, one per tenant).

The generated setup.sh really runs (useradd, chroot folders, bind mounts) — inside a private
mount namespace with a private copy of /etc and a tmpfs on /srv, so the host is left untouched.
Uploads use the real `sftp` client in batch mode; the folder watcher and pipeline then load them.
"""

from __future__ import annotations

import io
import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("paramiko")

import paramiko
from click.testing import CliRunner
from sftp_harness import (
    PATIENTS,
    SshServer,
    keygen,
    line_count,
    missing_chroot_support,
    missing_openssh,
    zone_settings,
)

from dropzone.cli import main
from dropzone.config import load_settings
from dropzone.errors import ConfigError
from dropzone.models import FileResult, IncomingFile, Outcome
from dropzone.pipeline.runner import Pipeline
from dropzone.sftp_accounts import Layout, accounts_from_settings, render_setup_script, render_sshd_config
from dropzone.sources import open_source
from dropzone.sources.folder import FolderSource
from dropzone.store.memory import MemoryStore
from dropzone.watcher import Watcher

_why_not = missing_openssh() or missing_chroot_support()
needs_jail = pytest.mark.skipif(_why_not is not None, reason=_why_not or "")

JAIL_ROOT = "/srv/dropzone-sftp"  # on a tmpfs that exists only inside the server's namespace
PASSWORD = "correct horse battery staple"


@dataclass
class Jail:
    server: SshServer
    zone: Path
    config: Path
    known_hosts: Path
    keys: dict[str, Path]  # tenant -> private key
    workdir: Path

    def sftp(self, tenant: str, *commands: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the real OpenSSH client in batch mode (stops at the first failing command)."""
        batch = self.workdir / f"batch-{time.monotonic_ns()}"
        batch.write_text("\n".join(commands) + "\n")
        return subprocess.run(
            [
                "sftp",
                "-b",
                str(batch),
                "-P",
                str(self.server.port),
                "-i",
                str(self.keys[tenant]),
                "-o",
                f"UserKnownHostsFile={self.known_hosts}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                f"{user or 'dz-' + tenant}@127.0.0.1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def paramiko_login(self, user: str, **auth: object) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(
            "127.0.0.1",
            port=self.server.port,
            username=user,
            look_for_keys=False,
            allow_agent=False,
            timeout=15,
            **auth,  # type: ignore[arg-type]
        )
        return client


def _write_tenants(config: Path, keys: dict[str, Path], hash_file: Path) -> None:
    tenants = config / "tenants"
    tenants.mkdir(parents=True)
    (config / "keys").mkdir()
    for name in ("acme", "beta"):
        (config / "keys" / f"{name}.pub").write_text(keys[name].with_suffix(".pub").read_text())
        (tenants / f"{name}.yaml").write_text(
            f"display_name: {name.title()} Health\nsftp:\n  authorized_keys_file: keys/{name}.pub\n"
        )
    (tenants / "gamma.yaml").write_text(
        f"sftp:\n  user: gamma-it\n  auth: key-or-password\n  password_hash_file: {hash_file}\n"
        f"  authorized_keys:\n    - {keys['gamma'].with_suffix('.pub').read_text().strip()}\n"
    )
    (tenants / "delta.yaml").write_text("display_name: no sftp for this one\n")


@pytest.fixture(scope="module")
def jail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jail]:
    if _why_not is not None:
        pytest.skip(_why_not)
    work = tmp_path_factory.mktemp("jail")
    zone = work / "zone"
    (zone / "incoming").mkdir(parents=True)
    keys = {t: keygen(work / f"id_{t}", f"it@{t}") for t in ("acme", "beta", "gamma")}
    hash_file = work / "gamma.hash"
    hashed = subprocess.run(
        ["openssl", "passwd", "-6", "-stdin"], input=PASSWORD, capture_output=True, text=True
    )
    hash_file.write_text(hashed.stdout)
    config = work / "config"
    _write_tenants(config, keys, hash_file)

    out = work / "bundle"
    result = CliRunner().invoke(
        main,
        [
            "--config",
            str(config),
            "sftp-config",
            "--out",
            str(out),
            "--zone",
            str(zone),
            "--jail-root",
            JAIL_ROOT,
        ],
    )
    assert result.exit_code == 0, result.output

    namespace = "\n".join(
        [
            f"mkdir -p {work}/etc && cp -a /etc/. {work}/etc && mount --bind {work}/etc /etc",
            "mount -t tmpfs -o mode=0755 tmpfs /srv",
            f"sh {out}/setup.sh > {work}/setup.log 2>&1",
        ]
    )
    server = SshServer(
        work / "sshd", extra_config=f"Include {out}/sshd_dropzone.conf\n", namespace_script=namespace
    )
    with server:
        known_hosts = server.write_known_hosts(work / "known_hosts")
        yield Jail(server, zone, config, known_hosts, keys, work)


def pipeline_for(zone: Path, config: Path, **pipeline: object) -> Pipeline:
    settings = zone_settings(str(zone), config_dir=config, **pipeline)
    settings = settings.model_copy(update={"allow_undeclared_tenants": False})
    return Pipeline(settings, MemoryStore(), FolderSource(zone))


# -- the generated configuration -------------------------------------------------------------------


def _settings_with(tmp_path: Path, **tenants: str) -> object:
    folder = tmp_path / "config"
    (folder / "tenants").mkdir(parents=True)
    for name, text in tenants.items():
        (folder / "tenants" / f"{name}.yaml").write_text(text)
    return load_settings(config_dir=folder, env={})


def test_generated_sshd_config_is_one_locked_down_match_block_per_tenant(tmp_path: Path) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGp1u1b9dXh0aFNmZ3Q0cm9vdGtleWZvcnRlc3RzMDAwMDA it@acme"
    settings = _settings_with(tmp_path, acme=f"sftp:\n  authorized_keys: ['{key}']\n", other="{}\n")
    accounts = accounts_from_settings(settings)  # type: ignore[arg-type]
    assert [(a.tenant, a.user, a.auth) for a in accounts] == [("acme", "dz-acme", "key")]
    text = render_sshd_config(accounts, Layout(zone=Path("/srv/zone")))
    assert "Match User dz-acme\n    ChrootDirectory /srv/dropzone-sftp/acme\n" in text
    assert "ForceCommand internal-sftp -d /incoming -u 0007 -P symlink,hardlink" in text
    for line in ("AllowTcpForwarding no", "PermitTTY no", "PasswordAuthentication no", "X11Forwarding no"):
        assert f"    {line}\n" in text
    script = render_setup_script(accounts, Layout(zone=Path("/srv/zone")))
    assert "account acme dz-acme key" in script
    assert "mount --bind" in script and "/usr/sbin/nologin" in script


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("sftp: {}\n", "at least one public key"),
        ("sftp:\n  authorized_keys: ['command=\"sh\" ssh-ed25519 AAAA x']\n", "public key(s) [1]"),
        ("sftp:\n  auth: password\n", "password_hash_file"),
        ("sftp:\n  user: Root!\n  auth: password\n  password_hash_file: /x\n", "not a valid login name"),
        ("sftp:\n  shell: /bin/bash\n", "Extra inputs"),
    ],
)
def test_bad_sftp_blocks_are_config_errors(tmp_path: Path, yaml_text: str, message: str) -> None:
    settings = _settings_with(tmp_path, acme=yaml_text)
    with pytest.raises(ConfigError, match=r"tenants/acme\.yaml") as info:
        accounts_from_settings(settings)  # type: ignore[arg-type]
    assert message in str(info.value)


# -- uploads through the real server ---------------------------------------------------------------------


@needs_jail
def test_upload_with_the_sftp_client_lands_in_the_zone_and_is_loaded(jail: Jail) -> None:
    done = jail.sftp("acme", f"put {PATIENTS} Patient.000.ndjson", "ls -l")
    assert done.returncode == 0, done.stderr

    landed = jail.zone / "incoming/acme/Patient.000.ndjson"
    assert landed.read_bytes() == PATIENTS.read_bytes()
    assert landed.stat().st_mode & 0o040  # group-readable for the service (umask 0007)

    with pipeline_for(jail.zone, jail.config) as pipe:
        file = FolderSource(jail.zone).stat("incoming/acme/Patient.000.ndjson")
        assert file is not None
        [result] = pipe.drain([file])
        assert result.outcome is Outcome.ARCHIVED
        assert result.counts.loaded == line_count(PATIENTS)
        assert pipe.store.resources.counts(["acme"]) == {"Patient": line_count(PATIENTS)}
    assert not landed.exists()
    assert (jail.zone / "incoming/acme").is_dir()  # still bind-mounted into the jail
    [archived] = (jail.zone / "archived/acme").rglob("Patient.000.ndjson")
    assert archived.read_bytes() == PATIENTS.read_bytes()


@needs_jail
def test_a_tenant_cannot_leave_its_folder_or_see_another_tenant(jail: Jail, tmp_path: Path) -> None:
    secret = jail.zone / "incoming/beta/beta-only.ndjson"
    secret.write_bytes(PATIENTS.read_bytes())
    local = tmp_path / "x.ndjson"
    local.write_bytes(b'{"resourceType":"Patient","id":"x"}\n')

    def names(*commands: str) -> set[str]:
        listing = jail.sftp("acme", *commands)
        assert listing.returncode == 0, listing.stderr
        entries = [line for line in listing.stdout.splitlines() if not line.startswith("sftp>")]
        return {e.strip().rstrip("/").rsplit("/", 1)[-1] for e in entries} - {"", ".", ".."}

    # The jail holds the upload folder and the read-only reports, and there is no way above it.
    assert names("ls -1a /") == {"incoming", "reports"}
    assert names("cd /..", "ls -1a") == {"incoming", "reports"}
    assert names("ls -1a /incoming") == set()  # its own (empty) folder; beta's file is not there

    attempts = [
        f"get /etc/passwd {tmp_path}/passwd",
        f"put {local} /escape.ndjson",
        f"put {local} ../escape.ndjson",
        "mkdir /newdir",
        f"get {secret} {tmp_path}/stolen",
        "ls /incoming/../../beta",
        f"put {local} {jail.zone}/incoming/beta/planted.ndjson",
        "symlink /incoming /incoming/link",
        "ln x.ndjson hard.ndjson",
    ]
    jail.sftp("acme", f"put {local} x.ndjson")  # a file of its own to try to link to
    for command in attempts:
        result = jail.sftp("acme", command)
        assert result.returncode != 0, f"tenant was allowed: {command}\n{result.stdout}"

    assert not (tmp_path / "passwd").exists() and not (tmp_path / "stolen").exists()
    assert sorted(p.name for p in (jail.zone / "incoming/beta").iterdir()) == ["beta-only.ndjson"]
    assert not list(jail.zone.rglob("escape.ndjson")) and not list(jail.zone.rglob("planted.ndjson"))
    assert sorted(p.name for p in (jail.zone / "incoming/acme").iterdir()) == ["x.ndjson"]
    (jail.zone / "incoming/acme/x.ndjson").unlink()
    secret.unlink()


@needs_jail
def test_a_sender_reads_its_own_reports_read_only(jail: Jail, tmp_path: Path) -> None:
    """After a partial and a quarantined file, the tenant finds their error reports and the
    rejects file under /reports, byte for byte, cannot change anything there, and another
    tenant's /reports does not show them."""
    good, bad = PATIENTS.read_bytes().splitlines()[:2]
    partial = tmp_path / "partial.ndjson"
    partial.write_bytes(
        good + b"\n" + bad.replace(b'"resourceType":"Patient"', b'"resourceType":"Patient","x":1') + b"\n"
    )
    broken = tmp_path / "broken.ndjson"
    broken.write_bytes(b"{not json\n")
    sent = jail.sftp("acme", f"put {partial} partial.ndjson", f"put {broken} broken.ndjson")
    assert sent.returncode == 0, sent.stderr

    source = FolderSource(jail.zone)
    with pipeline_for(jail.zone, jail.config) as pipe:
        files = [source.stat(f"incoming/acme/{n}") for n in ("partial.ndjson", "broken.ndjson")]
        results = pipe.drain([f for f in files if f is not None])
    assert sorted(r.outcome.value for r in results) == ["partial", "quarantined"]

    reports_dir = jail.zone / "quarantine/acme"
    written = sorted(p.relative_to(reports_dir) for p in reports_dir.rglob("*") if p.is_file())
    assert any(p.name.endswith(".error.json") for p in written)
    assert any(".rejects." in p.name for p in written)
    for relative in written:  # every report, rejects file and quarantined file is listed
        listing = jail.sftp("acme", f"ls -1 /reports/{relative.parent}")
        assert listing.returncode == 0, listing.stderr
        assert relative.name in listing.stdout, (relative, listing.stdout)
        fetched = tmp_path / f"got-{relative.name}"
        got = jail.sftp("acme", f"get /reports/{relative} {fetched}")
        assert got.returncode == 0, got.stderr
        assert fetched.read_bytes() == (reports_dir / relative).read_bytes()

    some = written[0]
    for command in (
        f"put {broken} /reports/planted.ndjson",
        f"rm /reports/{some}",
        f"rename /reports/{some} /reports/moved",
        "mkdir /reports/new",
        f"put {broken} /reports/{some}",
    ):
        result = jail.sftp("acme", command)
        assert result.returncode != 0, f"tenant was allowed: {command}"
    assert sorted(p.relative_to(reports_dir) for p in reports_dir.rglob("*") if p.is_file()) == written

    other = jail.sftp("beta", "ls -1a /reports")
    assert other.returncode == 0, other.stderr
    assert not any(r.name in other.stdout for r in written)


@needs_jail
def test_no_shell_and_no_tunnels(jail: Jail) -> None:
    client = jail.paramiko_login("dz-acme", key_filename=str(jail.keys["acme"]))
    try:
        transport = client.get_transport()
        assert transport is not None
        with pytest.raises(paramiko.ChannelException) as refused:
            transport.open_channel("direct-tcpip", ("127.0.0.1", jail.server.port), ("127.0.0.1", 0))
        assert refused.value.code == paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        stdin, stdout, _ = client.exec_command("id", timeout=30)
        stdin.channel.shutdown_write()  # internal-sftp runs instead of `id` and ends at EOF
        assert b"uid=" not in stdout.read()
    finally:
        client.close()


@needs_jail
def test_password_and_key_rules_per_tenant(jail: Jail) -> None:
    client = jail.paramiko_login("gamma-it", password=PASSWORD)
    with client.open_sftp() as sftp:
        assert sftp.normalize(".") == "/incoming"  # internal-sftp -d
        sftp.putfo(io.BytesIO(b"{}\n"), "by-password.json")
    client.close()
    assert (jail.zone / "incoming/gamma/by-password.json").exists()
    (jail.zone / "incoming/gamma/by-password.json").unlink()

    with pytest.raises(paramiko.AuthenticationException):
        jail.paramiko_login("gamma-it", password="wrong")
    with pytest.raises(paramiko.AuthenticationException):
        jail.paramiko_login("dz-acme", password=PASSWORD)  # key-only tenant: no password logins
    # A tenant's key does not open another tenant's account.
    with pytest.raises(paramiko.AuthenticationException):
        jail.paramiko_login("dz-beta", key_filename=str(jail.keys["acme"]))


# -- completeness: nothing is processed while the client is still writing --------------------------


class _Recording(FolderSource):
    """A folder source that reports which keys each listing returned (so the test can wait for the
    watcher to have looked at a half-written file, instead of sleeping)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.listings: list[set[str]] = []
        self.changed = threading.Condition()

    def list_incoming(self) -> list[IncomingFile]:
        files = super().list_incoming()
        with self.changed:
            self.listings.append({f.key for f in files})
            self.changed.notify_all()
        return files

    def wait_listed(self, key: str, times: int, timeout: float = 30) -> None:
        with self.changed:
            ok = self.changed.wait_for(lambda: sum(key in s for s in self.listings) >= times, timeout)
        assert ok, f"the watcher never listed {key}"


@needs_jail
def test_a_file_still_being_uploaded_is_not_processed_early(jail: Jail) -> None:
    data = PATIENTS.read_bytes()
    half = len(data) // 2
    key = "incoming/acme/slow.ndjson"
    source = _Recording(jail.zone)
    # A quiet period far longer than the test: only OpenSSH's close-after-write can make it ready.
    settings = zone_settings(str(jail.zone), config_dir=jail.config, quiet_seconds=3600.0, rescan_seconds=0.2)
    results: list[FileResult] = []
    done = threading.Event()

    def collect(result: FileResult) -> None:
        results.append(result)
        done.set()

    client = jail.paramiko_login("dz-acme", key_filename=str(jail.keys["acme"]))
    stop = threading.Event()
    with Pipeline(settings, MemoryStore(), source) as pipe:
        watcher = Watcher(pipe, source, settings, on_result=collect)
        thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
        thread.start()
        try:
            with client.open_sftp() as sftp, sftp.open("slow.ndjson", "wb") as remote:
                remote.write(data[:half])
                remote.flush()
                source.wait_listed(key, times=3)  # seen half-written, several times
                assert results == []
                remote.write(data[half:])
            assert done.wait(30), "the finished upload was never processed"
        finally:
            stop.set()
            source.wake()
            thread.join(10)
            client.close()
    [result] = results
    assert result.outcome is Outcome.ARCHIVED
    assert result.counts.read == line_count(PATIENTS)  # the whole file, not the first half
    assert pipe.store.resources.counts(["acme"]) == {"Patient": line_count(PATIENTS)}


@needs_jail
def test_a_temporary_name_waits_until_the_client_renames_it(jail: Jail) -> None:
    part = jail.sftp("acme", f"put {PATIENTS} renamed.ndjson.filepart")
    assert part.returncode == 0, part.stderr
    source = FolderSource(jail.zone)
    assert [f.key for f in source.list_incoming() if f.tenant == "acme"] == []
    with pipeline_for(jail.zone, jail.config, quiet_seconds=0.0) as pipe:
        assert Watcher(pipe, source, pipe.settings).drain_once() == []
        assert (jail.zone / "incoming/acme/renamed.ndjson.filepart").exists()

        renamed = jail.sftp("acme", "rename renamed.ndjson.filepart renamed.ndjson")
        assert renamed.returncode == 0, renamed.stderr
        [result] = Watcher(pipe, source, pipe.settings).drain_once()
    assert result.name == "renamed.ndjson" and result.outcome is Outcome.ARCHIVED
    assert result.counts.read == line_count(PATIENTS)


@needs_jail
def test_sftp_source_password_from_env_or_file_is_never_logged(
    jail: Jail, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The paramiko source logs in with a password (here: a tenant's jail, as a remote zone)."""
    url = f"sftp://gamma-it@127.0.0.1:{jail.server.port}/"
    env = {"DROPZONE_SFTP__PASSWORD": PASSWORD, "DROPZONE_SFTP__KNOWN_HOSTS": str(jail.known_hosts)}
    from_env = load_settings(config_dir=tmp_path, env=env, zone=url)
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    sftp = {"password_file": str(password_file), "known_hosts": str(jail.known_hosts)}
    from_file = load_settings(config_dir=tmp_path, env={}, zone=url, sftp=sftp)
    caplog.set_level(logging.DEBUG)
    for settings in (from_env, from_file):
        assert PASSWORD not in str(settings.redacted())
        with open_source(url, settings) as source:
            source.start()
            assert source.exists("incoming")
    assert PASSWORD not in caplog.text
