"""``dropzone preview``: what ``ingest`` would do with FILES, writing nothing."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from rich.markup import escape

from dropzone.cli.context import Context
from dropzone.cli.errors import EXIT_FAILED, EXIT_OK, EXIT_SOME_REJECTED, EXIT_USAGE, handle_errors
from dropzone.cli.ingest import expand_paths, first_unreadable
from dropzone.cli.options import global_options, json_option, zone_option
from dropzone.cli.output import print_json, print_line, say_error, stdout
from dropzone.cli.progress import file_progress
from dropzone.cli.tables import folded
from dropzone.config import TENANT_NAME
from dropzone.preview.run import Preview, preview_files
from dropzone.preview.source import PreviewSource
from dropzone.store import open_store


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=True, path_type=Path))
@click.option("--tenant", required=True, help="Tenant the files would be loaded for.")
@zone_option
@click.option(
    "--sample",
    type=click.IntRange(min=1),
    metavar="N",
    help="Read only the first N records of each file (the counts are then those of the sample).",
)
@json_option
@global_options
@click.pass_obj
def preview(
    obj: Context, files: tuple[Path, ...], tenant: str, zone: str | None, sample: int | None, as_json: bool
) -> None:
    """Dry run: what `ingest` of FILES (or the files inside folders) would do, writing nothing.

    The same sniffing, processors, validation, mapping and reference checks as ingest, against
    what the tenant already holds (the store is opened read-only; no file is moved, no report
    written). Per file: the outcome it would have, counts, new/changed/unchanged resources, the
    top reject reasons (code and FHIR path, with counts) and its quality findings; then the
    references that would stay unresolved. Exit codes as ingest's would be."""
    settings = obj.settings(zone=zone)
    if not TENANT_NAME.match(tenant) or settings.tenant(tenant) is None:
        say_error(settings.why_not_tenant(tenant, flag=True), event="tenant.refused", tenant=tenant)
        sys.exit(EXIT_USAGE)
    paths = expand_paths(files)
    problem = first_unreadable(paths)
    if problem:
        say_error(problem, event="preview.unreadable")
        sys.exit(EXIT_USAGE)
    # The pipeline's events name the destinations ingest would use; a preview moves nothing.
    pipeline_log = logging.getLogger("dropzone.pipeline")
    pipeline_log.setLevel(max(pipeline_log.getEffectiveLevel(), logging.ERROR))
    with handle_errors():
        store = open_store(settings, read_only=True)
        try:
            with file_progress(as_json, PreviewSource(tenant, paths).items) as progress:
                result = preview_files(
                    settings,
                    store,
                    tenant,
                    paths,
                    sample=sample,
                    progress=progress,
                    before=progress.begin if progress else None,
                    after=progress.file_done if progress else None,
                )
        finally:
            store.close()
    if as_json:
        print_json(result.as_json())
    else:
        _print(result)
    if result.not_finished:
        sys.exit(EXIT_FAILED)
    rejected = any(f.outcome in ("partial", "quarantined") for f in result.files)
    sys.exit(EXIT_SOME_REJECTED if rejected else EXIT_OK)


def _print(result: Preview) -> None:
    sampled = f" (first {result.sample} records of each file)" if result.sample else ""
    print_line(f"Preview for tenant {result.tenant}{sampled}: nothing was written.")
    columns = ("file", "outcome", "read", "new", "changed", "unchanged", "rejected", "reason")
    table = folded(f"{len(result.files)} file(s), as ingest would give them", *columns)
    for f in result.files:
        table.add_row(
            escape(f.name),
            f.outcome,
            f"{f.counts.read:,}",
            f"{f.new:,}",
            f"{f.changed:,}",
            f"{f.counts.unchanged:,}",
            f"{f.counts.rejected:,}",
            escape(f.reason or ""),
        )
    stdout.print(table)
    reasons = folded("Top reject reasons", "file", "code", "path", "count")
    findings = folded("Quality findings", "file", "check", "path", "count", "example ids")
    for f in result.files:
        for r in f.reject_reasons:
            reasons.add_row(escape(f.name), escape(r["code"]), escape(r["path"]), f"{r['count']:,}")
        for q in (f.quality or {}).get("findings", []):
            findings.add_row(
                escape(f.name),
                escape(q["check"]),
                escape(q["path"]),
                f"{q['count']:,}",
                escape(", ".join(q["example_ids"][:3])),
            )
    if reasons.row_count:
        stdout.print(reasons)
    if findings.row_count:
        stdout.print(findings)
    if result.unresolved_references:
        refs = folded(
            "References that would stay unresolved", "path", "target", "reason", "count", "example ids"
        )
        for g in result.unresolved_references:
            refs.add_row(
                escape(g["path"]),
                escape(g["target_type"]),
                escape(g["reason"]),
                f"{g['count']:,}",
                escape(", ".join(g["example_ids"][:3])),
            )
        stdout.print(refs)
    else:
        print_line("Every reference of the previewed resources would resolve.")
