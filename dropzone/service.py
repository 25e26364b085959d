"""Wiring shared by the CLI, the API and tests: settings -> store + source + pipeline."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dropzone.config import Settings
from dropzone.errors import ConfigError
from dropzone.log import event
from dropzone.pipeline.runner import Pipeline
from dropzone.sources import open_source
from dropzone.sources.base import Source
from dropzone.sources.folder import FolderSource
from dropzone.store import open_store
from dropzone.store.base import Store
from dropzone.zone_lock import exclusive_zone

_log = logging.getLogger("dropzone.service")


@dataclass(slots=True)
class Service:
    settings: Settings
    store: Store
    source: Source
    pipeline: Pipeline


def check_writable_paths(settings: Settings) -> None:
    """What can be checked before the first file is checked here, so a wrong setting stops the
    start (exit 2) instead of failing every file later."""
    temp_dir = settings.pipeline.temp_dir
    if temp_dir is not None:
        folder = Path(temp_dir)
        if not folder.is_dir():
            raise ConfigError(f"pipeline.temp_dir {temp_dir} is not a folder (create it or unset it)")
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as err:
            raise ConfigError(f"pipeline.temp_dir {temp_dir} is not writable: {err.strerror}") from err
    zone = settings.zone.removeprefix("file://")
    if "://" not in zone and Path(zone).exists() and not os.access(zone, os.W_OK | os.X_OK):
        raise ConfigError(f"the drop zone {zone} is not writable by this user")


@contextlib.contextmanager
def open_service(settings: Settings, store: Store | None = None) -> Iterator[Service]:
    """Open store, source and pipeline for ``settings.zone``; close them all on exit."""
    check_writable_paths(settings)
    store = store or open_store(settings)
    try:
        source = open_source(settings.zone, settings)
        with contextlib.ExitStack() as stack:
            stack.callback(source.close)
            source.check()
            if not store.persistent:
                if isinstance(source, FolderSource):
                    stack.enter_context(exclusive_zone(Path(source.root)))
                else:
                    event(
                        _log,
                        "zone.unlocked",
                        logging.WARNING,
                        zone=source.url,
                        note="in-memory store on a remote zone: run only one process on it",
                    )
                event(
                    _log,
                    "store.embedded",
                    logging.WARNING,
                    note="store.kind is memory: nothing persists after this process exits",
                )
            event(_log, "service.started", zone=source.url, store=store.description)
            pipeline = stack.enter_context(Pipeline(settings, store, source))
            yield Service(settings, store, source, pipeline)
    finally:
        store.close()


@contextlib.contextmanager
def open_store_and_source(settings: Settings) -> Iterator[tuple[Store, Source]]:
    """Store and source without a pipeline (no validation pool): for read-only commands."""
    store = open_store(settings)
    try:
        source = open_source(settings.zone, settings)
        event(_log, "store.opened", zone=source.url, store=store.description)
        try:
            source.check()
            yield store, source
        finally:
            source.close()
    finally:
        store.close()
