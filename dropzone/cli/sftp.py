"""``dropzone sftp-config``: OpenSSH accounts for tenants uploading into a local zone."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson

from dropzone.cli.errors import EXIT_USAGE
from dropzone.cli.options import global_options
from dropzone.cli.output import say_error
from dropzone.errors import UsageError
from dropzone.sftp_accounts import (
    DEFAULT_JAIL_ROOT,
    DEFAULT_KEYS_DIR,
    DEFAULT_SERVICE_GROUP,
    Layout,
    accounts_from_settings,
    write_bundle,
)


@click.command("sftp-config")
@click.option(
    "--out",
    "out_dir",
    default="sftp-config",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write sshd_dropzone.conf, authorized_keys/ and setup.sh into.",
)
@click.option(
    "--zone", metavar="DIR", help="The local drop zone folder the tenants upload into (default: config)."
)
@click.option(
    "--jail-root",
    default=str(DEFAULT_JAIL_ROOT),
    show_default=True,
    help="Root-owned folder for the per-tenant chroot jails (not under /tmp).",
)
@click.option(
    "--keys-dir", default=str(DEFAULT_KEYS_DIR), show_default=True, help="Where sshd reads the keys."
)
@click.option(
    "--service-group",
    default=DEFAULT_SERVICE_GROUP,
    show_default=True,
    help="Group the dropzone service runs in: it must read and move uploaded files.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the files written as JSON.")
@global_options
@click.pass_obj
def sftp_config(
    obj: Any,
    out_dir: Path,
    zone: str | None,
    jail_root: str,
    keys_dir: str,
    service_group: str,
    as_json: bool,
) -> None:
    """Generate OpenSSH config for tenants that upload by SFTP into this (local) drop zone.

    Every tenant whose config/tenants/<t>.yaml has an `sftp:` block gets a chrooted internal-sftp
    account that can only write into incoming/<t>/. Review the files, then on the SFTP host run
    `sudo OUT/setup.sh`, copy OUT/sshd_dropzone.conf to /etc/ssh/sshd_config.d/ and reload sshd.
    """
    settings = obj.settings(zone=zone)
    try:
        if "://" in settings.zone and not settings.zone.startswith("file://"):
            raise UsageError("sftp-config is for a local folder zone (the SFTP host's own disk)")
        accounts = accounts_from_settings(settings)
        if not accounts:
            raise UsageError("no tenant declares `sftp:` in config/tenants/<tenant>.yaml (see README, SFTP)")
        layout = Layout(
            zone=Path(settings.zone.removeprefix("file://")).resolve(),
            jail_root=Path(jail_root),
            keys_dir=Path(keys_dir),
            service_group=service_group,
        )
        if not layout.jail_root.is_absolute() or not layout.keys_dir.is_absolute():
            raise UsageError("--jail-root and --keys-dir must be absolute paths")
        written = write_bundle(out_dir, accounts, layout)
    except UsageError as err:
        say_error(str(err))
        sys.exit(EXIT_USAGE)
    if as_json:
        payload = {
            "files": [str(p) for p in written],
            "accounts": [{"tenant": a.tenant, "user": a.user, "auth": a.auth} for a in accounts],
        }
        click.echo(orjson.dumps(payload).decode())
        return
    for acc in accounts:
        click.echo(f"{acc.tenant}: user {acc.user} ({acc.auth}) -> {layout.zone / 'incoming' / acc.tenant}")
    click.echo(f"wrote {len(written)} files to {out_dir}/; next, on the SFTP host as root:")
    click.echo(f"  sh {out_dir}/setup.sh")
    click.echo(
        f"  cp {out_dir}/sshd_dropzone.conf /etc/ssh/sshd_config.d/ && sshd -t && systemctl reload ssh"
    )
