"""A zone made of the files given on the command line: read in place, never moved, and the
reports the pipeline would write are kept in memory for the preview to read."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from dropzone.errors import SourceFileGone
from dropzone.models import IncomingFile
from dropzone.sources.base import INCOMING, Source


class PreviewSource(Source):
    def __init__(self, tenant: str, files: list[Path]) -> None:
        self.tenant = tenant
        self._paths: dict[str, Path] = {}
        self.items: list[IncomingFile] = []
        for path in files:
            relpath, n = path.name, 1
            while f"{INCOMING}/{tenant}/{relpath}" in self._paths:  # two files of one name
                n += 1
                relpath = f"{n}/{path.name}"
            stat = path.stat()
            item = IncomingFile(tenant, relpath, stat.st_size, stat.st_mtime)
            self._paths[item.key] = path
            self.items.append(item)
        self.reports: dict[str, bytes] = {}

    @property
    def url(self) -> str:
        return "preview (the files given; nothing is moved or written)"

    def list_incoming(self) -> list[IncomingFile]:
        return list(self.items)

    def stat(self, key: str) -> IncomingFile | None:
        return next((i for i in self.items if i.key == key), None)

    @contextlib.contextmanager
    def local_copy(self, file: IncomingFile) -> Iterator[Path]:
        path = self._paths[file.key]
        if not path.exists():
            raise SourceFileGone(file.key)
        yield path

    def move(self, file: IncomingFile, dest_key: str) -> str:
        return dest_key

    def put(self, key: str, local_path: Path, *, overwrite: bool = False) -> str:
        return key  # the rejects file: the preview reports the reasons, not the records

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> str:
        self.reports[key] = data
        return key

    def read_bytes(self, key: str, limit: int = 64 * 2**20) -> bytes:
        if key not in self.reports:
            raise SourceFileGone(key)
        return self.reports[key][:limit]

    def exists(self, key: str) -> bool:
        return False
