"""Where processors are found: ``@register`` on built-in modules, plus any installed package
that declares an entry point in the ``dropzone.processors`` group."""

from __future__ import annotations

import importlib
import logging
import threading
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, TypeVar

from processors.base import Processor, Sniffed

if TYPE_CHECKING:
    from dropzone.config import TenantSettings

_log = logging.getLogger("dropzone.processors")
_REGISTRY: dict[str, type[Processor]] = {}
_BUILTIN_MODULES = (
    "processors.fhir_ndjson",
    "processors.fhir_resource",
    "processors.fhir_bundle",
    "processors.bulk_export_log",
)
ENTRY_POINT_GROUP = "dropzone.processors"
_loaded = False
# Two pipelines' first files can arrive together (threads of `dropzone api`, tests): one loads,
# the other waits, instead of seeing a half-filled registry and quarantining with no_processor.
_load_lock = threading.Lock()

P = TypeVar("P", bound=type[Processor])


def register(cls: P) -> P:
    """Class decorator: make a processor available under ``cls.name``."""
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"two processors are named {cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


def _load() -> None:
    global _loaded
    if _loaded:
        return
    with _load_lock:
        if _loaded:
            return
        for module in _BUILTIN_MODULES + _optional_builtins():
            importlib.import_module(module)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                register(ep.load())
            except Exception:  # a broken third-party plug-in must not stop the service
                _log.exception("processor.plugin_failed", extra={"dz_fields": {"entry_point": ep.name}})
        _loaded = True


def _optional_builtins() -> tuple[str, ...]:
    """Built-in modules added by later features (CSV claims) when present."""
    found = []
    for module in ("processors.csv_claims",):
        if importlib.util.find_spec(module) is not None:
            found.append(module)
    return tuple(found)


def all_processors() -> dict[str, type[Processor]]:
    _load()
    return dict(_REGISTRY)


def choose(sniffed: Sniffed, tenant: TenantSettings) -> type[Processor] | None:
    """The highest-priority processor that accepts the file, or None."""
    candidates = [p for p in all_processors().values() if p.accepts(sniffed, tenant)]
    if not candidates:
        return None
    return max(candidates, key=lambda p: p.priority)
