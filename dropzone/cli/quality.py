"""``dropzone quality``: the data-quality profile of one tenant."""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape

from dropzone.cli.context import Context
from dropzone.cli.errors import handle_errors
from dropzone.cli.options import global_options, json_option, zone_option
from dropzone.cli.output import print_json, print_line, stdout
from dropzone.cli.tables import folded
from dropzone.quality.tenant import tenant_quality
from dropzone.service import open_store_and_source


def print_profile(profile: dict[str, Any], title: str) -> None:
    """Resources per type with their years, then the findings (shared with ``preview``)."""
    resources = folded(title, "type", "resources", "years")
    for rtype, n in profile["resources"].items():
        span = profile["date_ranges"].get(rtype)
        resources.add_row(escape(rtype), f"{n:,}", f"{span['from']}-{span['to']}" if span else "")
    stdout.print(resources)
    findings = profile["findings"]
    if not findings:
        print_line("No findings.")
        return
    table = folded("Findings", "check", "path", "detail", "count", "example ids")
    for f in findings:
        detail = f.get("system") or " ".join(x for x in (f.get("reason"), f.get("target_type")) if x)
        table.add_row(
            escape(f["check"]),
            escape(f["path"]),
            escape(detail or ""),
            f"{f['count']:,}",
            escape(", ".join(f["example_ids"])),
        )
    stdout.print(table)


@click.command("quality")
@zone_option
@click.option("--tenant", required=True, help="Tenant to profile.")
@json_option
@global_options
@click.pass_obj
def quality_command(obj: Context, zone: str | None, tenant: str, as_json: bool) -> None:
    """The data-quality profile of what a tenant holds: resources per type and the years their
    dates span; findings with counts and example resource ids: future_date, end_before_start,
    death_before_birth, unknown_code_system, malformed_code_system, shared_identifier (two
    Patients, Practitioners, Organizations... with one identifier), patient_without_data
    (nothing refers to the Patient), unresolved_reference; with --json also the code systems
    used per element. Counts, ids, paths and system URLs only: never a value or a code."""
    settings = obj.settings(zone=zone)
    with handle_errors(), open_store_and_source(settings) as (store, _source):
        profile = tenant_quality(store.resources, tenant)
    if as_json:
        print_json(profile)
        return
    print_line(f"Tenant {tenant}: {profile['total']:,} resources, {len(profile['findings'])} findings.")
    print_profile(profile, "Resources")
