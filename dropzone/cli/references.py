"""``dropzone references``: the reference-integrity view of one tenant."""

from __future__ import annotations

import click
from rich.markup import escape

from dropzone.cli.context import Context
from dropzone.cli.errors import handle_errors
from dropzone.cli.options import global_options, json_option, zone_option
from dropzone.cli.output import print_json, print_line, stdout
from dropzone.cli.tables import folded
from dropzone.search.references import reference_report
from dropzone.service import open_store_and_source


@click.command("references")
@zone_option
@click.option("--tenant", required=True, help="Tenant whose references to check.")
@json_option
@global_options
@click.pass_obj
def references_command(obj: Context, zone: str | None, tenant: str, as_json: bool) -> None:
    """References that do not point at a stored resource, grouped by source type, path, target
    type and reason, with counts and example resource ids (ids only, never values).

    Reasons: missing_target (Type/id not stored), conditional_no_single_match (no or several
    stored resources have that identifier), conditional_not_yet_rewritten (resolves now; the
    next loaded file rewrites it), unresolved_urn, external (an absolute URL), unparsable."""
    settings = obj.settings(zone=zone)
    with handle_errors(), open_store_and_source(settings) as (store, _source):
        report = reference_report(store.resources, tenant)
    if as_json:
        print_json(report)
    else:
        print_line(
            f"Tenant {tenant}: {report['references']:,} references, {report['unresolved']:,} unresolved."
        )
        if report["groups"]:
            table = folded("Unresolved references", "path", "target", "reason", "count", "example ids")
            for group in report["groups"]:
                table.add_row(
                    escape(group["path"]),
                    escape(group["target_type"]),
                    escape(group["reason"]),
                    f"{group['count']:,}",
                    escape(", ".join(group["example_ids"])),
                )
            stdout.print(table)
