"""Stores: ``open_store(settings)`` picks MongoDB when a URI is configured, else the embedded one."""

from __future__ import annotations

from dropzone.config import Settings
from dropzone.store.base import Store


def open_store(settings: Settings) -> Store:
    uri = settings.store.mongodb_uri
    if uri is None:
        from dropzone.store.memory import MemoryStore

        return MemoryStore()
    from dropzone.store.mongo import MongoStore

    store = MongoStore(uri.get_secret_value(), settings.store.database)
    store.resources.ensure_indexes()
    return store
