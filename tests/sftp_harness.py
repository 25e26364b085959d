"""A real OpenSSH server for tests: generated host key and config on 127.0.0.1, stopped by PID.

See ../shared/docs/TESTING.md ("SFTP"). ``SshServer(..., namespace_script=...)`` starts sshd
inside ``unshare --mount`` after running a shell script there (private /etc, bind mounts), so a
test can build chroot jails and login accounts without touching the host.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from dropzone.config import Settings, load_settings

SSHD = Path("/usr/sbin/sshd")
TOOLS = ("ssh-keygen", "sftp", "ssh")


def _find_samples() -> Path:
    repo = Path(__file__).resolve().parents[1]
    for candidate in (repo.parent / "shared" / "samples", Path("/work/shared/samples")):
        if candidate.is_dir():
            return candidate
    raise RuntimeError("shared samples not found next to the repository (../shared/samples)")


SAMPLES = _find_samples()
PATIENTS = SAMPLES / "smart-bulk-fhir-10-patients" / "Patient.000.ndjson"


def line_count(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def zone_settings(
    zone: str, config_dir: Path | None = None, sftp: dict[str, Any] | None = None, **pipeline: Any
) -> Settings:
    """Settings for a test zone: no env, validation in-process, no quiet period unless asked."""
    settings = load_settings(config_dir=config_dir, env={}, zone=zone, sftp=sftp)
    if config_dir is None:
        settings = settings.model_copy(update={"tenants": {}})
    values: dict[str, Any] = {"validation_workers": 0, "quiet_seconds": 0.0}
    values.update(pipeline)
    return settings.model_copy(update={"pipeline": settings.pipeline.model_copy(update=values)})


def missing_openssh() -> str | None:
    """Why the real-sshd tests cannot run here, or None."""
    if not SSHD.is_file():
        return "needs OpenSSH's /usr/sbin/sshd (apt-get install -y openssh-server openssh-client)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"needs the OpenSSH client tools {missing} (apt-get install -y openssh-client)"
    return None


def missing_chroot_support() -> str | None:
    """Why chroot jail tests cannot run here (they need root and mount namespaces), or None."""
    if os.geteuid() != 0:
        return "chrooted sshd accounts need root (sshd chroots and switches users)"
    if shutil.which("unshare") is None:
        return "needs unshare (util-linux) to build the jail in a private mount namespace"
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        return "mount namespaces are not permitted here (unshare --mount failed)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: Path, comment: str = "dropzone-test") -> Path:
    """An unencrypted ed25519 key pair at ``path`` / ``path.pub``."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class SshServer:
    def __init__(
        self,
        workdir: Path,
        *,
        extra_config: str = "",
        namespace_script: str | None = None,
        port: int | None = None,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host_key = workdir / "ssh_host_ed25519_key"
        if not self.host_key.exists():
            keygen(self.host_key, "host")
        self.keys_dir = workdir / "authorized_keys"
        self.keys_dir.mkdir(exist_ok=True)
        self.config = workdir / "sshd_config"
        self.log = workdir / "sshd.log"
        self.namespace_script = namespace_script
        self.config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"PidFile {workdir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.keys_dir}/%u",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "PermitRootLogin prohibit-password",
                    "StrictModes no",  # the keys live under /tmp, which is world-writable
                    "Subsystem sftp internal-sftp",
                    "LogLevel VERBOSE",
                    extra_config,
                    "",
                ]
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    # -- identities ------------------------------------------------------------------------------

    def authorize(self, user: str, public_key_file: Path) -> None:
        (self.keys_dir / user).write_text(public_key_file.read_text())

    def known_hosts_line(self) -> str:
        key_type, blob = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {key_type} {blob}\n"

    def write_known_hosts(self, path: Path) -> Path:
        path.write_text(self.known_hosts_line())
        return path

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> SshServer:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation folder
        cmd = [str(SSHD), "-D", "-e", "-f", str(self.config)]
        if self.namespace_script is not None:
            script = self.workdir / "namespace.sh"
            script.write_text("set -eu\n" + self.namespace_script + '\nexec "$@"\n')
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", str(script), *cmd]
        with self.log.open("ab") as log:
            start_at = log.tell()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = self.log.read_bytes()[start_at:].decode(errors="replace")
            if "Server listening" in text:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}:\n{text}")
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"sshd did not start:\n{self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        """Kill the listener and every session it forked (a real outage, not a graceful close)."""
        if self.proc is None:
            return
        try:
            parent = psutil.Process(self.proc.pid)
            victims = [*parent.children(recursive=True), parent]
        except psutil.NoSuchProcess:
            victims = []
        for proc in victims:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(timeout=10)
        self.proc = None
        # A killed session is dead once it is a zombie (its sockets are closed); whoever reaps
        # orphans here may take its time, so do not wait for that.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_running(p) for p in victims):
            time.sleep(0.01)

    def restart(self) -> SshServer:
        self.stop()
        return self.start()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def __enter__(self) -> SshServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
