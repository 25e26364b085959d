"""A drop zone on a local (or mounted) filesystem, watched with watchdog.

Completion: inotify reports close-after-write (``closed``), which is the exact moment a writer
finished; files moved in from elsewhere only report ``created``/``moved`` and then become ready
after the quiet period. On filesystems without inotify, set ``DROPZONE_FOLDER_POLLING=1``: the
polling observer has no ``closed`` events, so only the quiet period applies.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from dropzone.errors import SourceFileGone, SourceUnavailable
from dropzone.models import IncomingFile
from dropzone.sources.base import INCOMING, Source, is_temporary_name, with_suffix_number

_MAX_SUFFIX = 10_000


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
    def __init__(self, root: str | os.PathLike[str], polling: bool | None = None) -> None:
        self.root = Path(root).resolve()
        self._polling = os.environ.get("DROPZONE_FOLDER_POLLING") == "1" if polling is None else polling
        self._observer: Observer | PollingObserver | None = None
        self._events = _Events(self.root)
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
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                full = Path(dirpath) / name
                rel = full.relative_to(base).as_posix()
                if is_temporary_name(rel):
                    continue
                item = self._to_incoming(rel, full)
                if item is not None:
                    found.append(item)
        return found

    def _to_incoming(self, rel_to_incoming: str, full: Path) -> IncomingFile | None:
        try:
            st = full.stat(follow_symlinks=False)
        except FileNotFoundError:
            return None
        if not full.is_file() or full.is_symlink():
            return None  # symlinks could point outside the zone: never follow them
        tenant, _, relpath = rel_to_incoming.partition("/")
        if not relpath:
            tenant, relpath = "", rel_to_incoming
        return IncomingFile(tenant=tenant, relpath=relpath, size=st.st_size, mtime=st.st_mtime)

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
        if not src.is_file():
            raise SourceFileGone(src_key)
        used = self._link_unique(src, dest_key)
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
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.tmp"
        shutil.copyfile(local_path, tmp)
        return self._publish(tmp, key, overwrite)

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> str:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(data)
        return self._publish(tmp, key, overwrite)

    def _publish(self, tmp: Path, key: str, overwrite: bool) -> str:
        try:
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
