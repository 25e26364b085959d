"""Tables and summary lines on stdout. Cells fold, never cut (an operator copies names and
report paths from here), and every value from outside (file, tenant and path names, reasons)
is escaped so brackets in it are shown, not read as markup."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from dropzone.cli.errors import EXIT_FAILED, EXIT_OK, EXIT_SOME_REJECTED
from dropzone.cli.output import print_json, print_line, say_error, stdout
from dropzone.models import FileResult, Outcome
from dropzone.service import Service
from dropzone.sources.base import Source

_STYLES = {"archived": "green", "duplicate": "cyan", "partial": "yellow"}
_NUMBERS = frozenset({"read", "loaded", "unchanged", "rejected", "files", "stored", "resources"})


def folded(title: str, *columns: str) -> Table:
    """Cells fold, never cut; no vertical rules (they cost three columns each, so at 80 columns
    the names had to fold), numbers never split."""
    table = Table(title=escape(title), box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for name in columns:
        if name in _NUMBERS:
            table.add_column(name, justify="right", no_wrap=True)
        else:
            table.add_column(name, overflow="fold")
    return table


def zone_path(source: Source, key: str | None) -> str:
    """A zone key as the operator can open it: for a folder zone the path relative to the
    working directory (absolute when that is shorter), else the zone URL and the key."""
    if not key:
        return ""
    root = getattr(source, "root", None)
    if isinstance(root, Path):
        path = root / key
        with contextlib.suppress(ValueError):
            relative = os.path.relpath(path)
            return relative if len(relative) <= len(str(path)) else str(path)
        return str(path)
    url = getattr(source, "url", None)
    return f"{str(url).rstrip('/')}/{key}" if url else key


def finish(service: Service, results: list[FileResult], as_json: bool) -> None:
    """The summary of a one-shot command, then its exit code (README, "Exit codes")."""
    tenants = sorted({r.tenant for r in results})
    counts = service.store.resources.counts(tenants) if tenants else {}
    unfinished = [{"key": key, "code": code} for key, code in sorted(service.pipeline.unfinished.items())]
    if as_json:
        payload: dict[str, Any] = {"files": [r.summary() for r in results], "resources": counts}
        if unfinished:
            payload["unfinished"] = unfinished
        print_json(payload)
    else:
        print_summary(service, results, counts)
    for item in unfinished:
        say_error(
            f"{item['key']} could not be finished ({item['code']}); it stays in incoming/ for a retry",
            event="file.unfinished",
            key=item["key"],
            code=item["code"],
        )
    if unfinished:
        sys.exit(EXIT_FAILED)
    rejected = any(r.outcome in (Outcome.PARTIAL, Outcome.QUARANTINED) for r in results)
    sys.exit(EXIT_SOME_REJECTED if rejected else EXIT_OK)


def print_summary(service: Service, results: list[FileResult], counts: dict[str, int]) -> None:
    columns = ("file", "tenant", "outcome", "read", "loaded", "unchanged", "rejected", "reason")
    table = folded(f"{len(results)} file(s)", *columns)
    for r in results:
        style = _STYLES.get(r.outcome.value, "red")
        table.add_row(
            escape(r.name),
            escape(r.tenant),
            f"[{style}]{r.outcome.value}[/]",
            str(r.counts.read),
            str(r.counts.loaded),
            str(r.counts.unchanged),
            str(r.counts.rejected),
            escape(r.reason or ""),
        )
    stdout.print(table)
    for r in results:
        if r.report:
            print_line(f"report for {r.name}: {zone_path(service.source, r.report)}")
    print_resources(counts)
    if not service.store.persistent:
        stdout.print("[yellow]In-memory store (store.kind: memory): nothing persists after this command.[/]")


def print_tenant_resources(counts: dict[str, dict[str, int]]) -> None:
    if not counts:
        stdout.print("No resources in the store.")
        return
    table = folded("Resources in the store", "tenant", "resourceType", "stored")
    for tenant, per_type in counts.items():
        for rtype, n in per_type.items():
            table.add_row(escape(tenant), escape(rtype), f"{n:,}")
    stdout.print(table)


def print_resources(counts: dict[str, int]) -> None:
    if not counts:
        return
    table = folded("Resources in the store", "resourceType", "stored")
    for rtype, n in counts.items():
        table.add_row(escape(rtype), f"{n:,}")
    stdout.print(table)


def print_recent(source: Source, records: list[dict[str, Any]]) -> None:
    columns = ("received", "tenant", "file", "state", "read", "loaded", "rejected", "report")
    table = folded("Recent files", *columns)
    for r in records:
        c = r.get("counts") or {}
        table.add_row(
            escape(str(r.get("received_at", ""))),
            escape(str(r.get("tenant", ""))),
            escape(str(r.get("name", ""))),
            escape(str(r.get("state", ""))),
            str(c.get("read", "")),
            str(c.get("loaded", "")),
            str(c.get("rejected", "")),
            escape(zone_path(source, r.get("report"))),
        )
    stdout.print(table)


def print_result_line(result: FileResult) -> None:
    """`dropzone run` (watching): one whole line per file."""
    c = result.counts
    print_line(
        f"{result.outcome.value:<11} {result.tenant}/{result.name}  read={c.read} loaded={c.loaded} "
        f"unchanged={c.unchanged} rejected={c.rejected}" + (f"  {result.reason}" if result.reason else "")
    )


def file_row(record: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "name",
        "tenant",
        "key",
        "state",
        "counts",
        "received_at",
        "finished_at",
        "seconds",
        "destination",
        "report",
    )
    return {k: record.get(k) for k in keys}
