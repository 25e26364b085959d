"""One SSH connection to an SFTP server, shared by threads, re-established after network failures.

Only this module and ``dropzone.sources.sftp`` import paramiko. Every remote operation runs
through ``SftpConnection.run(what, fn)``: ``fn`` receives this thread's SFTP channel; when the
connection drops (server restarted, network cut, keepalive timed out) the connection is rebuilt
with exponential backoff and ``fn`` runs again from the start, so each ``fn`` must be safe to
repeat. A status error from a live session (no such file, permission denied) is not a network
failure: it reaches the caller unchanged.

Trust: host keys are checked against a known_hosts file and an unknown or changed key is refused
(``HostKeyRejected``) unless ``host_key_policy: accept-new`` is set, which records a key seen for
the first time (never a changed one), like OpenSSH's ``StrictHostKeyChecking=accept-new``.
Secrets (password, key passphrase) are read from settings or files at connect time, never logged.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import paramiko

from dropzone.config import SftpOptions
from dropzone.errors import SourceUnavailable, UsageError
from dropzone.log import event

log = logging.getLogger("dropzone.sources.sftp")
T = TypeVar("T")

_FIRST_DELAY = 0.5


class HostKeyRejected(UsageError):
    """The server's host key is unknown or differs from known_hosts: we refuse to talk to it."""


class SftpAuthFailed(UsageError):
    """The server rejected our credentials (retrying will not help)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    user: str

    @property
    def known_hosts_name(self) -> str:
        """The host's name in known_hosts: ``host`` on port 22, ``[host]:port`` elsewhere."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint (what ``ssh-keygen -lf`` prints)."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    def __init__(self, endpoint: Endpoint, known_hosts: Path, accept_new: bool) -> None:
        self._endpoint = endpoint
        self._known_hosts = known_hosts
        self._accept_new = accept_new

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self._accept_new:
            ep = self._endpoint
            raise HostKeyRejected(
                f"sftp host key refused: {hostname} is not in {self._known_hosts} "
                f"(server offered {key.get_name()} {fingerprint(key)}). Check the fingerprint with the "
                f"server's operator, then add it (ssh-keyscan -p {ep.port} {ep.host} >> {self._known_hosts}) "
                "or point --known-hosts / sftp.known_hosts at a file that has it"
            )
        client.get_host_keys().add(hostname, key.get_name(), key)
        self._known_hosts.parent.mkdir(parents=True, exist_ok=True)
        client.save_host_keys(str(self._known_hosts))
        event(
            log,
            "sftp.host_key_recorded",
            logging.WARNING,
            host=hostname,
            key_type=key.get_name(),
            fingerprint=fingerprint(key),
            known_hosts=str(self._known_hosts),
        )


def _read_secret(value: object, path: Path | None, what: str) -> str | None:
    if value is not None:
        return value.get_secret_value()  # type: ignore[attr-defined]
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as err:
        raise UsageError(f"cannot read the sftp {what} file {path}: {err.strerror}") from err


class SftpConnection:
    """Lazily connected; thread-safe; each thread gets its own SFTP channel on the one transport."""

    def __init__(self, endpoint: Endpoint, options: SftpOptions, *, label: str) -> None:
        self.endpoint = endpoint
        self.options = options
        self._label = label  # the zone URL for logs (no credentials)
        self._lock = threading.Lock()
        self._client: paramiko.SSHClient | None = None
        self._generation = 0
        self._channels: list[paramiko.SFTPClient] = []
        self._local = threading.local()
        self._closed = threading.Event()
        self.reconnects = 0  # how many times a dropped connection was rebuilt (tests, status)

    # -- connecting ----------------------------------------------------------------------------

    def _known_hosts_path(self) -> Path:
        return self.options.known_hosts or Path.home() / ".ssh" / "known_hosts"

    def _connect(self) -> paramiko.SSHClient:
        opts, ep = self.options, self.endpoint
        known_hosts = self._known_hosts_path()
        client = paramiko.SSHClient()
        if known_hosts.is_file():
            try:
                client.load_host_keys(str(known_hosts))
            except (OSError, paramiko.SSHException) as err:
                raise UsageError(f"cannot read known_hosts file {known_hosts}: {err}") from err
        client.set_missing_host_key_policy(
            _HostKeyPolicy(ep, known_hosts, accept_new=opts.host_key_policy == "accept-new")
        )
        identity = opts.identity_file
        if identity is not None and not identity.is_file():
            raise UsageError(f"sftp identity file {identity} does not exist")
        password = _read_secret(opts.password, opts.password_file, "password")
        passphrase = _read_secret(opts.identity_passphrase, opts.identity_passphrase_file, "passphrase")
        explicit = identity is not None or password is not None
        try:
            client.connect(
                ep.host,
                port=ep.port,
                username=ep.user,
                key_filename=str(identity) if identity else None,
                passphrase=passphrase,
                password=password,
                # Without explicit credentials behave like `ssh`: agent and ~/.ssh/id_* keys.
                look_for_keys=not explicit,
                allow_agent=not explicit,
                timeout=opts.connect_timeout,
                banner_timeout=opts.connect_timeout,
                auth_timeout=opts.connect_timeout,
            )
        except paramiko.BadHostKeyException as err:
            client.close()
            raise HostKeyRejected(
                f"sftp host key refused: {self.endpoint.known_hosts_name} offered {err.key.get_name()} "
                f"{fingerprint(err.key)} but {known_hosts} expects {fingerprint(err.expected_key)}. "
                "The server was re-installed or someone is intercepting the connection: check with its "
                "operator before updating known_hosts"
            ) from err
        except paramiko.AuthenticationException as err:
            client.close()
            how = "key" if identity else "password" if password is not None else "agent/default keys"
            raise SftpAuthFailed(
                f"sftp authentication failed for {ep.user}@{ep.host}:{ep.port} ({how}): {type(err).__name__}"
            ) from err
        except (HostKeyRejected, UsageError):
            client.close()
            raise
        except (OSError, EOFError, paramiko.SSHException) as err:
            client.close()
            raise _NetworkFailure(err) from err
        transport = client.get_transport()
        if transport is not None and opts.keepalive_seconds:
            transport.set_keepalive(opts.keepalive_seconds)
        return client

    def _channel(self) -> tuple[int, paramiko.SFTPClient]:
        """This thread's SFTP channel on the current connection (connecting first if needed)."""
        if self._closed.is_set():
            raise SourceUnavailable(f"sftp zone {self._label} is closed")
        with self._lock:
            if self._client is None:
                self._client = self._connect()
                self._generation += 1
                event(log, "sftp.connected", zone=self._label, generation=self._generation)
            generation, client = self._generation, self._client
        cached = getattr(self._local, "channel", None)
        if cached is not None and cached[0] == generation:
            return cached
        try:
            sftp = client.open_sftp()
        except (OSError, EOFError, paramiko.SSHException) as err:
            raise _NetworkFailure(err, generation) from err
        with self._lock:
            self._channels.append(sftp)
        self._local.channel = (generation, sftp)
        return generation, sftp

    def _drop(self, generation: int) -> None:
        """Forget a broken connection (once, however many threads noticed)."""
        with self._lock:
            if generation != self._generation or self._client is None:
                return
            client, channels = self._client, self._channels
            self._client, self._channels = None, []
        for sftp in channels:
            try:
                sftp.close()
            except Exception:  # a dead channel may fail in any way while closing
                pass
        client.close()

    # -- running operations --------------------------------------------------------------------

    def run(self, what: str, fn: Callable[[paramiko.SFTPClient], T]) -> T:
        """``fn(sftp)``, repeated on a fresh connection after a network failure (with backoff).

        Raises SourceUnavailable when the server stays unreachable, HostKeyRejected/SftpAuthFailed
        (UsageError) when it must not or will not let us in."""
        delay = _FIRST_DELAY
        attempts = self.options.reconnect_attempts
        for attempt in range(attempts + 1):
            generation, sftp = -1, None
            try:
                generation, sftp = self._channel()
                return fn(sftp)
            except _NetworkFailure as err:
                failure: BaseException = err.cause
                if err.generation is not None:
                    generation = err.generation
            except (TimeoutError, EOFError, paramiko.SSHException) as err:
                failure = err
            except OSError as err:
                if sftp is not None and is_alive(sftp):
                    raise  # a status reply from a working session: the caller decides
                failure = err
            if generation >= 0:
                self._drop(generation)
            if attempt == attempts:
                raise SourceUnavailable(
                    f"sftp zone {self._label} unreachable during {what} after {attempts + 1} attempts "
                    f"({type(failure).__name__}: {failure})"
                ) from failure
            event(
                log,
                "sftp.connection_lost",
                logging.WARNING,
                zone=self._label,
                operation=what,
                attempt=attempt + 1,
                retry_in=round(delay, 2),
                error_type=type(failure).__name__,
            )
            if self._closed.wait(delay):
                raise SourceUnavailable(f"sftp zone {self._label} closed while reconnecting")
            delay = min(delay * 2, self.options.reconnect_max_delay)
            with self._lock:
                self.reconnects += 1
        raise AssertionError("unreachable")  # the loop always returns or raises

    def connect(self) -> None:
        """Connect now (surfaces host key and credential problems at start-up)."""
        self.run("connect", lambda sftp: sftp.normalize("."))

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            generation = self._generation
        self._drop(generation)


def is_alive(sftp: paramiko.SFTPClient) -> bool:
    """False once the channel or the connection under it is gone: an OSError then means "network
    failure", not an SFTP status reply (both are OSError in paramiko)."""
    channel = sftp.get_channel()
    if channel is None or channel.closed:
        return False
    transport = channel.get_transport()
    return transport is not None and transport.is_active()


def raise_if_disconnected(sftp: paramiko.SFTPClient, err: OSError) -> None:
    """For ``except OSError`` inside an operation: let network failures reach ``run``'s retry."""
    if not is_alive(sftp):
        raise err


class _NetworkFailure(Exception):
    """Internal: connecting or opening a channel failed for a reason that may pass."""

    def __init__(self, cause: BaseException, generation: int | None = None) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.generation = generation
