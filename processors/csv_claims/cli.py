"""``dropzone check-mappings``: validate CSV mapping files before any file needs them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson

from processors.csv_claims.mapping_schema import MappingError, load_mapping, mapping_path


@click.command("check-mappings")
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.pass_obj
def check_mappings(obj: Any, names: tuple[str, ...], as_json: bool) -> None:
    """Validate CSV mappings (config/mappings/<name>.yaml): every one named, or every mapping
    file plus every mapping a tenant declares. Exit 2 if any is missing or invalid."""
    settings = obj.settings()
    folder = settings.config_dir
    wanted = set(names)
    if not wanted:
        if folder is not None and (Path(folder) / "mappings").is_dir():
            wanted.update(p.stem for p in (Path(folder) / "mappings").glob("*.yaml"))
        for tenant in settings.tenants.values():
            wanted.update(tenant.mappings)
    results: dict[str, str | None] = {}
    for name in sorted(wanted):
        try:
            load_mapping(mapping_path(folder, name))
            results[name] = None
        except MappingError as err:
            results[name] = str(err)
    users = {
        name: sorted(t.name for t in settings.tenants.values() if name in t.mappings) for name in results
    }
    if as_json:
        payload = {
            "mappings": [
                {"name": name, "valid": error is None, "error": error, "tenants": users[name]}
                for name, error in results.items()
            ]
        }
        sys.stdout.write(orjson.dumps(payload).decode() + "\n")
    else:
        if not results:
            click.echo("no CSV mappings found")
        for name, error in results.items():
            used = f" (tenants: {', '.join(users[name])})" if users[name] else ""
            click.echo(f"ok       {name}{used}" if error is None else f"INVALID  {name}{used}\n{error}")
    if any(error is not None for error in results.values()):
        sys.exit(2)
