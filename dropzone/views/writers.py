"""Rows into Arrow tables of bounded size, and those tables out as Parquet, CSV or NDJSON.

At most ``chunk_rows`` rows are held at once (as Python lists, then one Arrow table), whatever
the number of resources: Parquet gets one row group per chunk through one ``ParquetWriter``,
CSV and NDJSON one block of bytes per chunk (the header only before the first).

Column types: text columns are Arrow strings (dates, dateTimes and decimals included, so their
text stays exact), ``boolean`` columns booleans, integer columns int64. A ``collection: true``
column is a list of those in Parquet and NDJSON, and its JSON array text in CSV (CSV has no
lists).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from dropzone.views.definition import Column, ViewDefinition

CHUNK_ROWS = 10_000
_ARROW = {"text": pa.string(), "boolean": pa.bool_(), "integer": pa.int64()}


def arrow_type(column: Column, lists_as_text: bool) -> pa.DataType:
    base = _ARROW[column.kind]
    if not column.collection:
        return base
    return pa.string() if lists_as_text else pa.list_(base)


def schema(view: ViewDefinition, lists_as_text: bool = False) -> pa.Schema:
    return pa.schema([pa.field(c.name, arrow_type(c, lists_as_text)) for c in view.columns])


def tables(
    view: ViewDefinition, rows: Iterable[list[Any]], lists_as_text: bool = False, chunk_rows: int = CHUNK_ROWS
) -> Iterator[pa.Table]:
    """``rows`` in tables of at most ``chunk_rows`` rows; at least one (maybe empty) table, so a
    writer always has the schema and a CSV its header."""
    target = schema(view, lists_as_text)
    listed = [i for i, c in enumerate(view.columns) if c.collection] if lists_as_text else []
    columns: list[list[Any]] = [[] for _ in view.columns]
    count = 0
    emitted = False
    for row in rows:
        for i in listed:
            row[i] = orjson.dumps(row[i]).decode()
        for i, value in enumerate(row):
            columns[i].append(value)
        count += 1
        if count >= chunk_rows:
            yield pa.Table.from_arrays(
                [pa.array(c, t.type) for c, t in zip(columns, target, strict=True)], schema=target
            )
            emitted = True
            columns = [[] for _ in view.columns]
            count = 0
    if count or not emitted:
        yield pa.Table.from_arrays(
            [pa.array(c, t.type) for c, t in zip(columns, target, strict=True)], schema=target
        )


def write_parquet(chunks: Iterable[pa.Table], path: Path, target: pa.Schema) -> None:
    with pq.ParquetWriter(path, target) as writer:
        for table in chunks:
            writer.write_table(table)


def csv_blocks(chunks: Iterable[pa.Table]) -> Iterator[bytes]:
    """RFC 4180 CSV (``\\n`` line ends): text quoted, an absent value empty and unquoted (so it
    differs from an empty string, ``""``), booleans ``true``/``false``."""
    header = True
    for table in chunks:
        buffer = io.BytesIO()
        pa_csv.write_csv(table, buffer, pa_csv.WriteOptions(include_header=header, quoting_style="needed"))
        header = False
        data = buffer.getvalue()
        if data:
            yield data


def ndjson_blocks(chunks: Iterable[pa.Table]) -> Iterator[bytes]:
    """One JSON object per row, keys in column order, absent values ``null``."""
    for table in chunks:
        if table.num_rows:
            yield b"".join(orjson.dumps(row) + b"\n" for row in table.to_pylist())
