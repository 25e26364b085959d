"""``dropzone reader add|rotate|remove``: internal read-only API credentials.

Nothing heavy is imported at module level: the CLI must work without the ``api`` extra.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from dropzone.cli.api import _config_dir
from dropzone.cli.errors import handle_errors
from dropzone.cli.options import global_options

_JSON_HELP = 'Print {"reader", "client_id", "client_secret"}.'


@click.group("reader")
@global_options
def reader_group() -> None:
    """Internal readers: API credentials that read tenants' data (scope system/*.read) and never
    write. A running API picks changes up within a second."""


def _print_issued(issued: Any, as_json: bool, verb: str) -> None:
    from dropzone.api.reader_files import describe_tenants

    if as_json:
        import orjson

        sys.stdout.write(orjson.dumps(issued.as_json()).decode() + "\n")
        sys.stdout.flush()
        return
    click.echo(f"{verb} {issued.path}")
    click.echo(f"  client_id:     {issued.client_id}")
    click.echo(f"  client_secret: {issued.client_secret}")
    click.echo(f"  reads:         {describe_tenants(issued.tenants)} (read-only)")
    click.echo("The secret is shown only now; the file keeps only its hash. Store it in a secret manager.")


@reader_group.command("add")
@click.argument("name")
@click.option(
    "--tenants",
    "tenants",
    required=True,
    metavar="T1,T2|'*'",
    help="Comma-separated tenants the reader may read, or '*' for every tenant (quote it).",
)
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
@global_options
@click.pass_obj
def reader_add(obj: Any, name: str, tenants: str, as_json: bool) -> None:
    """Write <config>/readers/NAME.yaml with new read-only API credentials and print them once."""
    from dropzone.api.reader_files import add_reader, parse_tenant_option

    with handle_errors():
        issued = add_reader(_config_dir(obj), name, parse_tenant_option(tenants))
        _print_issued(issued, as_json, "wrote")


@reader_group.command("rotate")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
@global_options
@click.pass_obj
def reader_rotate(obj: Any, name: str, as_json: bool) -> None:
    """Replace NAME's client secret (same client id and tenants). The old secret, and tokens
    issued with it, stop working within a second on running servers."""
    from dropzone.api.reader_files import rotate_reader

    with handle_errors():
        _print_issued(rotate_reader(_config_dir(obj), name), as_json, "updated")


@reader_group.command("remove")
@click.argument("name")
@global_options
@click.pass_obj
def reader_remove(obj: Any, name: str) -> None:
    """Delete <config>/readers/NAME.yaml: its secret and tokens stop working within a second."""
    from dropzone.api.reader_files import remove_reader

    with handle_errors():
        click.echo(f"removed {remove_reader(_config_dir(obj), name)}")
