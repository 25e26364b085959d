"""A remote drop zone on an SFTP server (``sftp://user@host:port/path``), polled with paramiko.

The server holds the usual layout under ``path`` (incoming/, archived/, quarantine/). SFTP has
no change notifications and OpenSSH writes uploads in place, so this source is not atomic: the
watcher treats a file as complete once its size and mtime stayed the same across polls for the
quiet period, and names still being uploaded (``*.filepart``, dotfiles, ...) are never listed.

Moves are SFTP renames, which fail when the target exists (OpenSSH), so a clash becomes a
numbered name instead of an overwrite. Uploads (error reports) go to a hidden temporary name in
the target folder and are renamed into place, so readers never see half a report.

Paths: ``sftp://host/srv/zone`` is the absolute ``/srv/zone``; ``sftp://host/~/zone`` is
``zone`` in the login folder. Credentials never go in the URL (see ``SftpOptions``).
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import io
import logging
import posixpath
import shutil
import stat as statmod
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import unquote, urlsplit

import paramiko

from dropzone.errors import SourceFileGone, SourceUnavailable, UsageError
from dropzone.log import event
from dropzone.models import IncomingFile
from dropzone.sources.base import INCOMING, Source, is_temporary_name, with_suffix_number
from dropzone.sources.sftp_connection import Endpoint, SftpConnection, raise_if_disconnected

if TYPE_CHECKING:
    from dropzone.config import Settings, SftpOptions

log = logging.getLogger("dropzone.sources.sftp")

_MAX_SUFFIX = 10_000
_PREFETCH_REQUESTS = 64  # x 32 KiB reads in flight
T = TypeVar("T")
Sender = Callable[[paramiko.SFTPClient, str], object]


def parse_sftp_url(url: str) -> tuple[Endpoint, str]:
    """``sftp://user@host:port/path`` -> (endpoint, remote root). Rejects passwords in the URL."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sftp" or not parts.hostname:
        raise UsageError(f"not an sftp://user@host[:port]/path zone URL: {_redact(url)}")
    if parts.password is not None:
        raise UsageError(
            "do not put a password in the sftp:// URL: set DROPZONE_SFTP__PASSWORD or sftp.password_file"
        )
    if parts.query or parts.fragment:
        raise UsageError("sftp:// zone URLs take no ?query or #fragment")
    try:
        port = parts.port or 22
    except ValueError as err:
        raise UsageError(f"bad port in sftp zone URL {_redact(url)}") from err
    user = unquote(parts.username) if parts.username else getpass.getuser()
    path = unquote(parts.path)
    if path in ("", "/~", "/~/"):
        root = "."  # the login folder
    elif path.startswith("/~/"):
        root = path[3:].rstrip("/") or "."
    else:
        root = path.rstrip("/") or "/"
    return Endpoint(host=parts.hostname, port=port, user=user), root


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def open_sftp_source(url: str, settings: Settings) -> SftpSource:
    endpoint, root = parse_sftp_url(url)
    return SftpSource(endpoint, root, settings.sftp.for_zone(url), temp_dir=settings.pipeline.temp_dir)


def _is_missing(err: OSError) -> bool:
    return isinstance(err, FileNotFoundError) or err.errno == errno.ENOENT


class SftpSource(Source):
    uploads_are_atomic = False
    mtime_is_local = False  # the server's clock, in whole seconds

    def __init__(
        self, endpoint: Endpoint, root: str, options: SftpOptions, *, temp_dir: str | None = None
    ) -> None:
        self.endpoint = endpoint
        self.root = root
        self._temp_dir = temp_dir
        shown_root = root if root.startswith("/") else f"/~/{root}".removesuffix("/.")
        host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
        self._url = f"sftp://{endpoint.user}@{host}:{endpoint.port}{shown_root}"
        self.connection = SftpConnection(endpoint, options, label=self._url)

    @property
    def url(self) -> str:
        return self._url

    def _remote(self, key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError("key escapes the drop zone")
        return posixpath.join(self.root, key)

    # -- listing --------------------------------------------------------------------------------

    def list_incoming(self) -> list[IncomingFile]:
        return self.connection.run("list", self._walk_incoming)

    def _walk_incoming(self, sftp: paramiko.SFTPClient) -> list[IncomingFile]:
        base = posixpath.join(self.root, INCOMING)
        found: list[IncomingFile] = []
        pending = [""]  # folders to list, relative to incoming/
        while pending:
            rel = pending.pop()
            try:
                entries = sftp.listdir_attr(posixpath.join(base, rel) if rel else base)
            except OSError as err:
                raise_if_disconnected(sftp, err)
                if not rel and not _is_missing(err):
                    raise SourceUnavailable(f"cannot list {base} on {self._url}: {err}") from err
                if rel and not _is_missing(err):
                    event(log, "sftp.folder_unreadable", logging.WARNING, zone=self._url, folder=rel)
                continue  # vanished between listings, or incoming/ not created yet
            for entry in entries:
                child = f"{rel}/{entry.filename}" if rel else entry.filename
                mode = entry.st_mode or 0
                if entry.filename.startswith("."):
                    continue  # hidden folders and dotfile uploads are in progress or private
                if statmod.S_ISDIR(mode):
                    pending.append(child)
                elif statmod.S_ISREG(mode) and not is_temporary_name(child):
                    # listdir_attr reports lstat(): symlinks are neither dirs nor regular files here
                    found.append(self._incoming(child, entry))
        return found

    @staticmethod
    def _incoming(rel_to_incoming: str, attrs: paramiko.SFTPAttributes) -> IncomingFile:
        tenant, _, relpath = rel_to_incoming.partition("/")
        if not relpath:
            tenant, relpath = "", rel_to_incoming
        return IncomingFile(
            tenant=tenant, relpath=relpath, size=attrs.st_size or 0, mtime=attrs.st_mtime or 0
        )

    def stat(self, key: str) -> IncomingFile | None:
        remote = self._remote(key)
        rel = key.removeprefix(f"{INCOMING}/")

        def lookup(sftp: paramiko.SFTPClient) -> IncomingFile | None:
            attrs = _lstat(sftp, remote)
            if attrs is None or not statmod.S_ISREG(attrs.st_mode or 0):
                return None
            return self._incoming(rel, attrs)

        return self.connection.run("stat", lookup)

    # -- reading ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def local_copy(self, file: IncomingFile) -> Iterator[Path]:
        remote = self._remote(file.key)
        folder = Path(tempfile.mkdtemp(prefix="dz-sftp-", dir=self._temp_dir))
        # Keep the file's own name: processors may look at its extension.
        local = folder / file.name

        def download(sftp: paramiko.SFTPClient) -> None:
            try:
                with local.open("wb") as out:  # "wb": a retried download starts again from zero
                    # Bounded read-ahead: fast, without buffering a whole large file in memory.
                    sftp.getfo(remote, out, max_concurrent_prefetch_requests=_PREFETCH_REQUESTS)
            except OSError as err:
                raise_if_disconnected(sftp, err)
                if _is_missing(err) and _lstat(sftp, remote) is None:
                    raise SourceFileGone(file.key) from err
                raise

        try:
            self._run_status("download", file.key, download)
            yield local
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def read_bytes(self, key: str, limit: int = 64 * 2**20) -> bytes:
        remote = self._remote(key)

        def read(sftp: paramiko.SFTPClient) -> bytes:
            try:
                with sftp.open(remote, "rb") as fh:
                    return fh.read(limit)
            except OSError as err:
                raise_if_disconnected(sftp, err)
                if _is_missing(err):
                    raise SourceFileGone(key) from err
                raise

        return self._run_status("read", key, read)

    def exists(self, key: str) -> bool:
        remote = self._remote(key)
        return self.connection.run("exists", lambda sftp: _lstat(sftp, remote) is not None)

    # -- moving and writing -----------------------------------------------------------------------

    def move(self, file: IncomingFile, dest_key: str) -> str:
        return self._move(file.key, dest_key)

    def move_key(self, src_key: str, dest_key: str) -> str:
        return self._move(src_key, dest_key)

    def _move(self, src_key: str, dest_key: str) -> str:
        src = self._remote(src_key)
        tried: list[str] = []  # survives a reconnect: a rename whose reply was lost may have happened
        size: list[int] = []

        def attempt(sftp: paramiko.SFTPClient) -> str:
            attrs = _lstat(sftp, src)
            if attrs is None or not statmod.S_ISREG(attrs.st_mode or 0):
                done = self._already_there(sftp, tried, size[0]) if size else None
                if done is not None:
                    return done
                raise SourceFileGone(src_key)
            size[:] = [attrs.st_size or 0]
            used = self._rename_unique(sftp, src, dest_key, tried)
            if used is None:
                raise SourceFileGone(src_key)
            return used

        used = self._run_status("move", src_key, attempt)
        if src_key.startswith(f"{INCOMING}/"):
            self._prune_empty_dirs(posixpath.dirname(src_key))
        return used

    def _already_there(self, sftp: paramiko.SFTPClient, tried: list[str], size: int) -> str | None:
        if not tried:
            return None
        attrs = _lstat(sftp, self._remote(tried[-1]))
        return tried[-1] if attrs is not None and attrs.st_size == size else None

    def _rename_unique(
        self, sftp: paramiko.SFTPClient, src: str, dest_key: str, tried: list[str]
    ) -> str | None:
        """Rename ``src`` to ``dest_key`` or its first free numbered variant. None: src vanished."""
        made_parent = False
        n = 1
        while n < _MAX_SUFFIX:
            key = dest_key if n == 1 else with_suffix_number(dest_key, n)
            dest = self._remote(key)
            tried.append(key)
            try:
                sftp.rename(src, dest)  # SFTP v3 rename never replaces an existing file
                return key
            except OSError as err:
                raise_if_disconnected(sftp, err)
                # OpenSSH answers every failure with the same generic status: find out which it was.
                if _lstat(sftp, src) is None:
                    return None
                if _lstat(sftp, dest) is not None:
                    n += 1
                    continue
                if made_parent:
                    raise SourceUnavailable(f"cannot rename into {dest_key} on {self._url}: {err}") from err
                _makedirs(sftp, posixpath.dirname(dest))
                made_parent = True
        raise SourceUnavailable(f"no free name for {dest_key} on {self._url}")

    def _prune_empty_dirs(self, folder_key: str) -> None:
        """Remove sub-folders an upload left empty, never incoming/<tenant> itself."""
        parts = folder_key.split("/")

        def prune(sftp: paramiko.SFTPClient) -> None:
            for depth in range(len(parts), 2, -1):
                try:
                    sftp.rmdir(self._remote("/".join(parts[:depth])))
                except OSError as err:
                    raise_if_disconnected(sftp, err)
                    return  # not empty (or not ours): stop climbing

        if len(parts) > 2:
            with contextlib.suppress(SourceUnavailable):
                self.connection.run("prune", prune)

    def put(self, key: str, local_path: Path, *, overwrite: bool = False) -> str:
        size = local_path.stat().st_size
        return self._upload(key, size, overwrite, lambda sftp, tmp: sftp.put(str(local_path), tmp))

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> str:
        return self._upload(key, len(data), overwrite, lambda sftp, tmp: sftp.putfo(io.BytesIO(data), tmp))

    def _upload(self, key: str, size: int, overwrite: bool, send: Sender) -> str:
        dest = self._remote(key)
        folder, name = posixpath.split(dest)
        tried: list[str] = []

        def attempt(sftp: paramiko.SFTPClient) -> str:
            done = self._already_there(sftp, tried, size)
            if done is not None:
                return done  # the rename went through before the connection dropped
            _makedirs(sftp, folder)
            tmp = posixpath.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
            try:
                send(sftp, tmp)
                if overwrite:
                    tried.append(key)
                    _replace(sftp, tmp, dest)
                    return key
                used = self._rename_unique(sftp, tmp, key, tried)
                if used is None:
                    raise SourceUnavailable(f"upload to {key} on {self._url} vanished before its rename")
                return used
            finally:
                with contextlib.suppress(OSError):
                    if _lstat(sftp, tmp) is not None:
                        sftp.remove(tmp)

        return self._run_status("upload", key, attempt)

    # -- plumbing --------------------------------------------------------------------------------

    def _run_status(self, what: str, key: str, fn: Callable[[paramiko.SFTPClient], T]) -> T:
        """``connection.run`` that turns an unexpected status error into SourceUnavailable (retry
        later: a permission problem on the server is for its operator to fix, the file waits)."""
        try:
            return self.connection.run(what, fn)
        except OSError as err:
            raise SourceUnavailable(f"sftp {what} of {key} on {self._url} failed: {err}") from err

    def start(self) -> None:
        self.connection.connect()

    def close(self) -> None:
        self.connection.close()


def _lstat(sftp: paramiko.SFTPClient, path: str) -> paramiko.SFTPAttributes | None:
    try:
        return sftp.lstat(path)
    except OSError as err:
        raise_if_disconnected(sftp, err)
        if _is_missing(err):
            return None
        raise


def _makedirs(sftp: paramiko.SFTPClient, folder: str) -> None:
    """``mkdir -p`` over SFTP; tolerates another worker creating the same folder."""
    if folder in ("", ".", "/") or _lstat(sftp, folder) is not None:
        return
    _makedirs(sftp, posixpath.dirname(folder))
    try:
        sftp.mkdir(folder)
    except OSError as err:
        raise_if_disconnected(sftp, err)
        if _lstat(sftp, folder) is None:
            raise


def _replace(sftp: paramiko.SFTPClient, tmp: str, dest: str) -> None:
    """Rename over an existing file: posix-rename@openssh.com, else remove then rename."""
    try:
        sftp.posix_rename(tmp, dest)
        return
    except OSError as err:
        raise_if_disconnected(
            sftp, err
        )  # else the server does not offer the extension, or refused: fall back below
    with contextlib.suppress(FileNotFoundError):
        sftp.remove(dest)
    sftp.rename(tmp, dest)
