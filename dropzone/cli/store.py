"""Commands that read or fix what the store and zone hold: ``status``, ``export``, ``replay``."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click
import orjson
from rich.markup import escape

from dropzone.cli.context import Context
from dropzone.cli.errors import handle_errors
from dropzone.cli.options import global_options, json_option, zone_option
from dropzone.cli.output import print_json, print_line, stdout
from dropzone.cli.progress import count_progress
from dropzone.cli.tables import (
    file_row,
    folded,
    print_recent,
    print_tenant_resources,
    zone_path,
)
from dropzone.cli.views import check_view_options, export_views_command
from dropzone.errors import SourceFileGone, UsageError
from dropzone.export import export_ndjson, normalise_since
from dropzone.service import Service, open_service, open_store_and_source
from dropzone.sources.base import INCOMING, QUARANTINE


@click.command()
@zone_option
@click.option("--tenant", help="Only this tenant.")
@click.option("--limit", default=20, show_default=True, help="Recent files to list.")
@json_option
@global_options
@click.pass_obj
def status(obj: Context, zone: str | None, tenant: str | None, limit: int, as_json: bool) -> None:
    """What the store holds: files per tenant and outcome, resources per tenant and type, and the
    most recent files with their report."""
    settings = obj.settings(zone=zone)
    with handle_errors(), open_store_and_source(settings) as (store, source):
        summary = store.ledger.summary()
        if tenant:
            summary = {t: states for t, states in summary.items() if t == tenant}
        recent = store.ledger.files(tenant=tenant, limit=limit)
        counts = store.resources.tenant_counts([tenant] if tenant else None)
        incoming = len(source.list_incoming())
        if as_json:
            print_json(
                {
                    "store": store.description,
                    "persistent": store.persistent,
                    "incoming": incoming,
                    "files": summary,
                    "resources": counts,
                    "recent": [file_row(r) for r in recent],
                }
            )
            return
        print_line(f"Store: {store.description}")
        if not store.persistent:
            stdout.print(
                "[yellow]In-memory store: the ledger starts empty in every process (store.kind: memory).[/]",
                soft_wrap=True,
            )
        print_line(f"Files waiting in incoming/: {incoming}")
        table = folded("Files by outcome", "tenant", "outcome", "files")
        for name, states in summary.items():
            for state, n in sorted(states.items()):
                table.add_row(escape(name), escape(state), f"{n:,}")
        stdout.print(table)
        print_recent(source, recent)
        print_tenant_resources(counts)


@click.command("export")
@click.option("--tenant", required=True, help="Tenant whose resources to export.")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the <Type>.ndjson files, or <view>.parquet|csv (created if missing).",
)
@click.option("--type", "types", multiple=True, metavar="TYPE", help="Only this resourceType (repeatable).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["ndjson", "parquet", "csv"]),
    default="ndjson",
    show_default=True,
    help="ndjson: whole resources; parquet or csv: flat tables from --view definitions.",
)
@click.option(
    "--view",
    "views",
    multiple=True,
    metavar="NAME",
    help="A view of <config>/views/ for --format parquet|csv (repeatable; 'all': every view).",
)
@click.option(
    "--since", metavar="ISO-TIME", help="Only resources stored at or after this time (UTC without a zone)."
)
@zone_option
@json_option
@global_options
@click.pass_obj
def export_command(
    obj: Context,
    tenant: str,
    out_dir: Path,
    types: tuple[str, ...],
    fmt: str,
    views: tuple[str, ...],
    since: str | None,
    zone: str | None,
    as_json: bool,
) -> None:
    """Write a tenant's stored resources as FHIR Bulk Data NDJSON, one <Type>.ndjson per type,
    exactly as stored (the sender's JSON with meta.versionId/lastUpdated), streaming; or, with
    --format parquet|csv --view NAME, flat tables for analysts, one <view>.<format> per view."""
    settings = obj.settings(zone=zone)
    with handle_errors():
        check_view_options(fmt, views, types)
    if fmt != "ndjson":
        export_views_command(settings, tenant, out_dir, fmt, views, since, as_json)
        return
    with handle_errors():
        since_stamp = normalise_since(since) if since else None
        with open_store_and_source(settings) as (store, _source):
            expected = sum(store.resources.tenant_counts([tenant]).get(tenant, {}).values())
            with count_progress(as_json, "exporting", expected or None) as advance:
                written = export_ndjson(store.resources, tenant, out_dir, types or None, since_stamp, advance)
    if as_json:
        print_json(
            {
                "tenant": tenant,
                "out": str(out_dir),
                "since": since_stamp,
                "files": [{"type": w.resource_type, "path": str(w.path), "count": w.count} for w in written],
            }
        )
        return
    if not written:
        print_line(f"Nothing to export for tenant {tenant} (store: {store.description}).")
        return
    table = folded(f"Exported for {tenant}", "resourceType", "resources", "file")
    for w in written:
        table.add_row(escape(w.resource_type), f"{w.count:,}", escape(str(w.path)))
    stdout.print(table)


@click.command()
@click.argument("path")
@zone_option
@global_options
@click.pass_obj
def replay(obj: Context, path: str, zone: str | None) -> None:
    """Move a quarantined file (PATH: its key under the zone, e.g.
    quarantine/acme/2026/11/25/x.ndjson, its .error.json, or for a folder zone its path) back to
    incoming/ to be processed again."""
    settings = obj.settings(zone=zone)
    with handle_errors(), open_service(settings) as service:
        key = _zone_key(service, path).removesuffix(".error.json")
        if not key.startswith(f"{QUARANTINE}/"):
            raise UsageError(f"{key} is not under {QUARANTINE}/")
        report_key = f"{key}.error.json"
        target = None
        if service.source.exists(report_key):
            report = orjson.loads(service.source.read_bytes(report_key))
            target = report.get("original_key")
        if not target or not str(target).startswith(f"{INCOMING}/"):
            parts = key.split("/")
            target = f"{INCOMING}/{parts[1]}/{parts[-1]}"
        try:
            moved = service.source.move_key(key, target)
        except SourceFileGone:
            raise UsageError(f"nothing at {key}") from None
        if service.source.exists(report_key):
            service.source.move_key(report_key, f"{report_key}.replayed")
        print_line(
            f"moved {zone_path(service.source, key)} -> {zone_path(service.source, moved)}; "
            "`dropzone run` will process it again"
        )


def _zone_key(service: Service, path: str) -> str:
    """Accept a key relative to the zone or, for folder zones, a filesystem path inside it
    (absolute, or relative to the working directory as the tables print them)."""
    root = getattr(service.source, "root", None)
    if root is not None:
        candidate = Path(path)
        if candidate.is_absolute() or candidate.exists():
            with contextlib.suppress(ValueError):
                return candidate.resolve().relative_to(root).as_posix()
    return path.strip("/")
