"""A drop zone on a local (or mounted) filesystem, watched with watchdog.

Completion: inotify reports close-after-write (``closed``), which is the exact moment a writer
finished; files moved in from elsewhere only report ``created``/``moved`` and then become ready
after the quiet period. On filesystems without inotify, set ``DROPZONE_FOLDER_POLLING=1``: the
polling observer has no ``closed`` events, so only the quiet period (and the open-for-writing
check) applies. ``DROPZONE_FOLDER_POLLING`` is the ``folder_polling`` setting.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from dropzone.errors import SourceFileGone, SourceUnavailable
from dropzone.log import event
from dropzone.models import IncomingFile
from dropzone.sources.base import INCOMING, Source, is_temporary_name, with_suffix_number

_MAX_SUFFIX = 10_000
_log = logging.getLogger("dropzone.sources.folder")


def _same_inode(path: Path, st: os.stat_result) -> bool:
    try:
        other = path.stat(follow_symlinks=False)
    except OSError:
        return False
    return (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino)


def _inodes_open_for_writing(wanted: set[tuple[int, int]]) -> set[tuple[int, int]]:
    found: set[tuple[int, int]] = set()
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(f"{fd_dir}/{fd}")
                ident = (st.st_dev, st.st_ino)
                if ident not in wanted:
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    flags = next((int(line.split()[1], 8) for line in info if line.startswith("flags:")), 0)
            except (OSError, ValueError, IndexError):
                continue
            if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                found.add(ident)
    return found


class _Events(FileSystemEventHandler):
    def __init__(self, root: Path) -> None:
        self._root = root
        self._lock = threading.Lock()
        self.closed: set[str] = set()
        self.wake = threading.Event()

    def _key(self, path: str | bytes) -> str | None:
        text = os.fsdecode(path)
        try:
            return Path(text).relative_to(self._root).as_posix()
        except ValueError:
            return None

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("closed_no_write", "opened"):
            return
        if event.event_type == "closed":
            key = self._key(event.src_path)
            if key:
                with self._lock:
                    self.closed.add(key)
        self.wake.set()

    def take_closed(self) -> set[str]:
        with self._lock:
            taken, self.closed = self.closed, set()
        return taken


class FolderSource(Source):
    def __init__(self, root: str | os.PathLike[str], polling: bool = False) -> None:
        self.root = Path(root).resolve()
        self._polling = polling  # the ``folder_polling`` setting (sources.open_source)
        self._observer: Observer | PollingObserver | None = None
        self._events = _Events(self.root)
        self._skipped: set[str] = set()
        self._hardlinked: set[str] = set()
        try:
            (self.root / INCOMING).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise SourceUnavailable(f"cannot create the drop zone at {self.root}: {err.strerror}") from err

    @property
    def url(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError("key escapes the drop zone")
        return path

    # -- listing --------------------------------------------------------------------------------

    def list_incoming(self) -> list[IncomingFile]:
        base = self.root / INCOMING
        found: list[IncomingFile] = []
        present: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(base, onerror=self._walk_failed):
            kept = []
            for d in dirnames:
                rel = (Path(dirpath) / d).relative_to(base).as_posix()
                if d.startswith("."):
                    present.add(rel)
                    self._skip_once(rel, "dot_folder")
                elif (Path(dirpath) / d).is_symlink():
                    present.add(rel)
                    self._skip_once(rel, "symlink")
                else:
                    kept.append(d)
            dirnames[:] = kept
            for name in filenames:
                full = Path(dirpath) / name
                rel = full.relative_to(base).as_posix()
                if is_temporary_name(rel):
                    continue
                present.add(rel)
                item = self._to_incoming(rel, full, warn=True)
                if item is not None:
                    found.append(item)
        # Forget entries that left, so one that comes back is said again.
        self._skipped &= present
        self._hardlinked &= present
        return found

    def _walk_failed(self, err: OSError) -> None:
        event(
            _log,
            "folder.unreadable",
            logging.WARNING,
            path=str(err.filename or ""),
            errno=errno.errorcode.get(err.errno or 0, str(err.errno)),
        )

    def _skip_once(self, rel: str, reason: str) -> None:
        """Entries that are never processed are said once (WARNING), not silently left forever."""
        if rel in self._skipped:
            return
        self._skipped.add(rel)
        event(_log, "file.skipped", logging.WARNING, key=f"{INCOMING}/{rel}", reason=reason)

    def _to_incoming(self, rel_to_incoming: str, full: Path, warn: bool = False) -> IncomingFile | None:
        try:
            st = full.stat(follow_symlinks=False)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            if warn:  # symlinks could point outside the zone: never follow them
                self._skip_once(rel_to_incoming, "symlink" if stat.S_ISLNK(st.st_mode) else "not_a_file")
            return None
        if warn and st.st_nlink > 1:
            self._hardlink_once(rel_to_incoming)
        tenant, _, relpath = rel_to_incoming.partition("/")
        if not relpath:
            tenant, relpath = "", rel_to_incoming
        return IncomingFile(tenant=tenant, relpath=relpath, size=st.st_size, mtime=st.st_mtime)

    def _hardlink_once(self, rel: str) -> None:
        if rel in self._hardlinked:
            return
        self._hardlinked.add(rel)
        event(
            _log,
            "file.hardlinked",
            logging.WARNING,
            key=f"{INCOMING}/{rel}",
            note="the file has other hard links; it is processed and archived as a copy",
        )

    def open_for_writing(self, files: list[IncomingFile]) -> set[str]:
        """Keys of ``files`` that some process holds open for writing, read from /proc (Linux).
        A paused upload is not complete however long it has been quiet. Processes this service
        may not inspect (other users, when not root) are not seen: the quiet period still applies."""
        wanted: dict[tuple[int, int], str] = {}
        for f in files:
            try:
                st = self._path(f.key).stat(follow_symlinks=False)
            except OSError:
                continue
            wanted[(st.st_dev, st.st_ino)] = f.key
        return {wanted[ident] for ident in _inodes_open_for_writing(set(wanted))} if wanted else set()

    def stat(self, key: str) -> IncomingFile | None:
        rel = key.removeprefix(f"{INCOMING}/")
        return self._to_incoming(rel, self._path(key))

    # -- reading and moving --------------------------------------------------------------------

    @contextlib.contextmanager
    def local_copy(self, file: IncomingFile) -> Iterator[Path]:
        path = self._path(file.key)
        if not path.is_file():
            raise SourceFileGone(file.key)
        yield path

    def move(self, file: IncomingFile, dest_key: str) -> str:
        return self.move_key(file.key, dest_key)

    def move_key(self, src_key: str, dest_key: str) -> str:
        src = self._path(src_key)
        dest = self._path(dest_key)
        try:
            src_stat = src.stat(follow_symlinks=False)
        except FileNotFoundError:
            if dest.is_file():
                return dest_key  # another worker already moved it to this very destination
            raise SourceFileGone(src_key) from None
        if not stat.S_ISREG(src_stat.st_mode):
            raise SourceFileGone(src_key)
        if _same_inode(dest, src_stat):
            used = dest_key  # linked by another worker (or by us before a crash): finish its move
        elif src_stat.st_nlink > 1:
            # A hard link to a file outside the zone: the archive gets its own copy, never the
            # other file's inode (a later change there would change our archive).
            used = self._publish(dest_key, False, lambda tmp: shutil.copy2(src, tmp))
        else:
            try:
                used = self._link_unique(src, dest_key)
            except FileNotFoundError:
                if dest.is_file():
                    return dest_key
                raise SourceFileGone(src_key) from None
        with contextlib.suppress(FileNotFoundError):
            src.unlink()
        self._prune_empty_dirs(src.parent)
        return used

    def _link_unique(self, src: Path, dest_key: str) -> str:
        """Hard-link ``src`` at ``dest_key`` or the first free numbered name: ``link`` fails if
        the name exists, so two workers can never overwrite each other's file."""
        for n in range(1, _MAX_SUFFIX):
            key = dest_key if n == 1 else with_suffix_number(dest_key, n)
            dest = self._path(key)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dest)
                return key
            except FileExistsError:
                continue
            except OSError as err:
                if err.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP):
                    raise
                if dest.exists():
                    continue
                shutil.copy2(src, dest)  # filesystems without hard links
                return key
        raise SourceUnavailable(f"no free name for {dest_key}")

    def _prune_empty_dirs(self, folder: Path) -> None:
        """Remove sub-folders an upload left empty, never incoming/<tenant> itself."""
        incoming = self.root / INCOMING
        while folder != incoming and folder.parent != incoming and folder.is_relative_to(incoming):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    def put(self, key: str, local_path: Path, *, overwrite: bool = False) -> str:
        return self._publish(key, overwrite, lambda tmp: shutil.copyfile(local_path, tmp))

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> str:
        return self._publish(key, overwrite, lambda tmp: tmp.write_bytes(data))

    def _publish(self, key: str, overwrite: bool, write: Callable[[Path], object]) -> str:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.tmp"
        try:
            # Inside the try: a write that fails half-way (disk full) must not leave the temp file.
            write(tmp)
            if overwrite:
                os.replace(tmp, self._path(key))
                return key
            return self._link_unique(tmp, key)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def read_bytes(self, key: str, limit: int = 64 * 2**20) -> bytes:
        try:
            with self._path(key).open("rb") as fh:
                return fh.read(limit)
        except FileNotFoundError as err:
            raise SourceFileGone(key) from err

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    # -- watching ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._observer is not None:
            return
        observer = PollingObserver(timeout=1.0) if self._polling else Observer()
        observer.schedule(self._events, str(self.root / INCOMING), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def wait_for_activity(self, timeout: float, stop: threading.Event) -> set[str]:
        if self._observer is None:
            return super().wait_for_activity(timeout, stop)
        self._events.wake.wait(timeout)
        self._events.wake.clear()
        return self._events.take_closed()

    def wake(self) -> None:
        """Interrupt a ``wait_for_activity`` (shutdown)."""
        self._events.wake.set()

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
