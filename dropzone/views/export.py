"""A tenant's stored resources through views: files (``dropzone export --format parquet|csv``)
and byte streams (the API's ``/api/tenants/{tenant}/views/{name}``).

Streaming from the store to the writer, one resource and at most one chunk of rows in memory.
Each file is written under a temporary name and renamed when complete, as the NDJSON export
does, so a reader never sees half a table. Every view asked for gets a file, with its columns,
even when the tenant has no matching resource.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dropzone.store.base import ResourceStore
from dropzone.views.definition import ViewDefinition
from dropzone.views.flatten import resource_rows
from dropzone.views.writers import CHUNK_ROWS, csv_blocks, ndjson_blocks, schema, tables, write_parquet

FORMATS = ("parquet", "csv")


@dataclass(frozen=True, slots=True)
class ExportedView:
    view: str
    resource_type: str
    path: Path
    resources: int
    rows: int


class _Counted:
    """The view's rows over the tenant's resources, counting both as they pass."""

    def __init__(
        self,
        store: ResourceStore,
        tenant: str,
        view: ViewDefinition,
        since: str | None,
        on_resource: Callable[[str], None] | None,
    ) -> None:
        self.store, self.tenant, self.view, self.since = store, tenant, view, since
        self.on_resource = on_resource
        self.resources = 0
        self.rows = 0

    def __iter__(self) -> Iterator[list[Any]]:
        for resource in self.store.iter_resources(self.tenant, self.view.resource, self.since):
            self.resources += 1
            for row in resource_rows(self.view, resource, self.resources):
                self.rows += 1
                yield row
            if self.on_resource is not None:
                self.on_resource(self.view.name)


def export_views(
    store: ResourceStore,
    tenant: str,
    views: list[ViewDefinition],
    out_dir: Path,
    fmt: str,
    since: str | None = None,
    on_resource: Callable[[str], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> list[ExportedView]:
    """Write ``<view>.<fmt>`` under ``out_dir`` for each view (``fmt``: parquet or csv)."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for view in views:
        final = out_dir / f"{view.name}.{fmt}"
        partial = out_dir / f".{view.name}.{fmt}.partial"
        counted = _Counted(store, tenant, view, since, on_resource)
        try:
            if fmt == "parquet":
                write_parquet(tables(view, counted, chunk_rows=chunk_rows), partial, schema(view))
            else:
                with partial.open("wb") as out:
                    for block in csv_blocks(tables(view, counted, lists_as_text=True, chunk_rows=chunk_rows)):
                        out.write(block)
            os.replace(partial, final)
        finally:
            partial.unlink(missing_ok=True)
        written.append(ExportedView(view.name, view.resource, final, counted.resources, counted.rows))
    return written


def stream_view(
    store: ResourceStore,
    tenant: str,
    view: ViewDefinition,
    fmt: str,
    since: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[bytes]:
    """The view's rows as CSV (``fmt`` csv, the same bytes as the exported file) or NDJSON
    (``fmt`` json), block by block."""
    counted = _Counted(store, tenant, view, since, None)
    if fmt == "csv":
        return csv_blocks(tables(view, counted, lists_as_text=True, chunk_rows=chunk_rows))
    if fmt == "json":
        return ndjson_blocks(tables(view, counted, chunk_rows=chunk_rows))
    raise ValueError(f"format {fmt!r} is not csv or json")
