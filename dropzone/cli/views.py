"""``dropzone export --format parquet|csv --view NAME``: the view half of the export command.

Kept apart from ``cli/store.py`` so the NDJSON export (and every other command) never imports
pyarrow: ``dropzone.views`` is imported only here, when a view export is asked for.
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from dropzone.cli.errors import handle_errors
from dropzone.cli.output import print_json, print_line, stdout
from dropzone.cli.progress import count_progress
from dropzone.cli.tables import folded
from dropzone.config import Settings
from dropzone.errors import UsageError
from dropzone.export import normalise_since
from dropzone.service import open_store_and_source


def check_view_options(fmt: str, views: tuple[str, ...], types: tuple[str, ...]) -> None:
    """The option combinations the export command accepts (UsageError, exit 2, otherwise)."""
    if fmt == "ndjson":
        if views:
            raise UsageError("--view needs --format parquet or csv (--format ndjson exports whole resources)")
        return
    if not views:
        raise UsageError(f"--format {fmt} needs --view NAME (repeatable) or --view all")
    if types:
        raise UsageError("--type applies to --format ndjson only: a view names its own resource type")


def export_views_command(
    settings: Settings,
    tenant: str,
    out_dir: Path,
    fmt: str,
    view_names: tuple[str, ...],
    since: str | None,
    as_json: bool,
) -> None:
    from dropzone.views import export_views, find_views, views_folder

    with handle_errors():
        since_stamp = normalise_since(since) if since else None
        # Every view is loaded and checked before the store is opened: a typo costs nothing.
        views = find_views(views_folder(settings.config_dir), view_names)
        with open_store_and_source(settings) as (store, _source):
            counts = store.resources.tenant_counts([tenant]).get(tenant, {})
            expected = sum(counts.get(v.resource, 0) for v in views)
            with count_progress(as_json, "exporting", expected or None) as advance:
                written = export_views(store.resources, tenant, views, out_dir, fmt, since_stamp, advance)
    if as_json:
        print_json(
            {
                "tenant": tenant,
                "out": str(out_dir),
                "since": since_stamp,
                "format": fmt,
                "views": [
                    {
                        "view": w.view,
                        "resourceType": w.resource_type,
                        "path": str(w.path),
                        "resources": w.resources,
                        "rows": w.rows,
                    }
                    for w in written
                ],
            }
        )
        return
    table = folded(f"Exported for {tenant} ({fmt})", "view", "resources", "rows", "file")
    for w in written:
        table.add_row(escape(w.view), f"{w.resources:,}", f"{w.rows:,}", escape(str(w.path)))
    stdout.print(table)
    if not any(w.rows for w in written):
        print_line(f"No rows for tenant {tenant}: the files hold the columns only.")
