"""Stores: ``open_store(settings)`` picks the store that ``store.kind`` names.

``auto`` (the default) is MongoDB when ``MONGODB_URI``/``store.mongodb_uri`` is set, else the
embedded SQLite database: ``store.path``, by default ``<zone>/.dropzone/dropzone.sqlite`` for a
folder zone and ``./dropzone-data/dropzone.sqlite`` for a bucket or SFTP zone.
"""

from __future__ import annotations

from pathlib import Path

from dropzone.config import Settings
from dropzone.errors import ConfigError, StoreUnavailable
from dropzone.store.base import Store

DATABASE_FOLDER = ".dropzone"
DATABASE_NAME = "dropzone.sqlite"


def sqlite_path(settings: Settings) -> Path:
    """Where the embedded database lives for these settings."""
    if settings.store.path:
        return Path(settings.store.path).expanduser()
    zone = settings.zone.removeprefix("file://")
    if "://" not in zone:
        return Path(zone).expanduser() / DATABASE_FOLDER / DATABASE_NAME
    return Path("dropzone-data") / DATABASE_NAME


def store_kind(settings: Settings) -> str:
    kind = settings.store.kind
    if kind == "auto":
        return "mongodb" if settings.store.mongodb_uri is not None else "sqlite"
    return kind


def open_store(settings: Settings, *, read_only: bool = False) -> Store:
    """``read_only``: change nothing (``dropzone preview``): SQLite is opened query-only and
    neither created, upgraded nor re-indexed (a zone without a database reads as empty);
    MongoDB's indexes are not ensured."""
    kind = store_kind(settings)
    if kind == "memory":
        from dropzone.store.memory import MemoryStore

        return MemoryStore()
    if kind == "sqlite":
        from dropzone.store.sqlite import SqliteStore

        path = sqlite_path(settings)
        if read_only and not path.exists():
            from dropzone.store.memory import MemoryStore

            return MemoryStore()
        return SqliteStore(path, read_only=read_only)
    uri = settings.store.mongodb_uri
    if uri is None:
        raise ConfigError("store.kind is mongodb but no MONGODB_URI (or store.mongodb_uri) is set")
    from dropzone.store.mongo import MongoStore, describe_connection_failure

    secret = uri.get_secret_value()
    try:
        store = MongoStore(
            secret, settings.store.database, connect_timeout_seconds=settings.store.connect_timeout_seconds
        )
        if not read_only:
            store.resources.ensure_indexes()
    except (StoreUnavailable, ValueError) as err:  # pymongo raises ValueError for some bad URIs
        # ``from None``: the driver's exception may quote the URI, password included.
        raise ConfigError(describe_connection_failure(secret, err.__cause__ or err)) from None
    return store
