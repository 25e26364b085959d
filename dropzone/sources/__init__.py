"""``open_source(zone)``: a folder path or URL -> the Source for it.

Schemes are looked up here so the CLI, watcher and API never import a transport directly:
``/path`` or ``file://`` -> folder, ``s3://bucket/prefix`` -> S3, ``sftp://user@host:port/path`` ->
SFTP. Remote transports are imported lazily so their libraries stay optional extras.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from dropzone.errors import UsageError
from dropzone.sources.base import Source

if TYPE_CHECKING:
    from dropzone.config import Settings

# scheme -> "module:factory"; factory(url: str, settings: Settings) -> Source
SCHEMES: dict[str, str] = {
    "s3": "dropzone.sources.s3:open_s3_source",
    "sftp": "dropzone.sources.sftp:open_sftp_source",
}


def open_source(zone: str, settings: Settings) -> Source:
    scheme = urlsplit(zone).scheme.lower() if "://" in zone else ""
    if scheme in ("", "file"):
        from dropzone.sources.folder import FolderSource

        return FolderSource(zone.removeprefix("file://"), polling=settings.folder_polling)
    target = SCHEMES.get(scheme)
    if target is None:
        raise UsageError(f"unsupported zone scheme '{scheme}://' (use a folder, s3:// or sftp://)")
    module_name, _, factory = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise UsageError(
            f"{scheme}:// zones need an optional dependency: pip install 'dropzone[{scheme}]' ({err.name})"
        ) from err
    return getattr(module, factory)(zone, settings)
