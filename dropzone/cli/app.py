"""The ``dropzone`` group: global options and the one place every command is registered."""

from __future__ import annotations

import click

from dropzone.cli.api import api_command, tenant_group
from dropzone.cli.context import Context
from dropzone.cli.ingest import demo, ingest, run
from dropzone.cli.options import LOG_FORMATS, LOG_LEVELS, global_options
from dropzone.cli.preview import preview
from dropzone.cli.quality import quality_command
from dropzone.cli.readers import reader_group
from dropzone.cli.references import references_command
from dropzone.cli.sftp import sftp_config
from dropzone.cli.store import export_command, replay, status
from processors.csv_claims.cli import check_mappings


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="dropzone")
@click.option(
    "--config", "config_dir", metavar="DIR", help="Config folder (default ./config or $DROPZONE_CONFIG)."
)
@click.option("--log-format", type=LOG_FORMATS, help="Log format on stderr (default: config).")
@click.option("--log-level", type=LOG_LEVELS, help="Log level.")
@click.pass_context
def main(ctx: click.Context, config_dir: str | None, log_format: str | None, log_level: str | None) -> None:
    """dropzone: load health-system data dropped into a drop zone (folder, s3://, sftp://) into MongoDB.

    Files under incoming/<tenant>/ are sniffed, validated (FHIR R4), loaded idempotently and moved
    to archived/ or quarantine/ (with <file>.error.json). Without MONGODB_URI the data goes
    to the embedded SQLite database in the zone (<zone>/.dropzone/dropzone.sqlite).

    The global options may also follow the command (dropzone status --log-format json).
    """
    ctx.obj = Context(config_dir, log_format, log_level)


for command in (
    run,
    ingest,
    status,
    export_command,
    references_command,
    quality_command,
    preview,
    replay,
    demo,
    api_command,
    tenant_group,
    reader_group,
    sftp_config,
    # Commands that live with their feature (the CSV mappings), given the global options here.
    global_options(check_mappings),
):
    main.add_command(command)


if __name__ == "__main__":  # pragma: no cover
    main()
