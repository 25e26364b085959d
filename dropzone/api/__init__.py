"""The push API (FastAPI): tokens per tenant, batch uploads into the drop zone, status from the
ledger, single-resource updates through the store's versioned upsert. Needs the ``api`` extra;
``dropzone.cli.api`` (the ``api`` and ``tenant`` commands) and ``dropzone.api.tenant_files``
work without it."""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":  # lazy: the CLI imports dropzone.api without fastapi
        from dropzone.api.app import create_app

        return create_app
    raise AttributeError(name)
