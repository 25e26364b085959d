"""The push API (FastAPI): tokens per tenant, batch uploads into the drop zone, status from the
ledger, single-resource updates through the store's versioned upsert. Needs the ``api`` extra."""

from dropzone.api.app import create_app

__all__ = ["create_app"]
