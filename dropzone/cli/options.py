"""Options shared by commands: the zone with its S3 and SFTP connection options, ``--json``,
and the global options that are also accepted after the subcommand.

Connection options are remembered in the click context and become a ``s3:``/``sftp:`` settings
override for the running command (on top of config and ``DROPZONE_S3__*``/``DROPZONE_SFTP__*``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
_S3 = "dropzone.s3_overrides"
_SFTP = "dropzone.sftp_overrides"
LOG_FORMATS = click.Choice(["text", "json"])
LOG_LEVELS = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"])


def _remember_s3(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None:
        ctx.meta.setdefault(_S3, {})[str(param.name)] = value
    return value


def _remember_sftp(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is None or value is False:
        return value
    if param.name == "accept_new":
        ctx.meta.setdefault(_SFTP, {})["host_key_policy"] = "accept-new"
    else:
        ctx.meta.setdefault(_SFTP, {})[str(param.name)] = str(Path(value).expanduser())
    return value


def _apply(func: F, options: list[Callable[[F], F]]) -> F:
    for option in reversed(options):
        func = option(func)
    return func


def s3_connection_options(func: F) -> F:
    """``--queue-url``, ``--endpoint-url``, ``--profile`` and ``--region`` as the AWS CLI has them."""
    return _apply(
        func,
        [
            click.option(
                "--queue-url",
                metavar="URL",
                expose_value=False,
                callback=_remember_s3,
                help="s3:// zones: SQS queue receiving the bucket's ObjectCreated notifications.",
            ),
            click.option(
                "--endpoint-url",
                metavar="URL",
                expose_value=False,
                callback=_remember_s3,
                help="s3:// zones: S3/SQS endpoint (LocalStack, moto); default AWS_ENDPOINT_URL or AWS.",
            ),
            click.option(
                "--profile",
                metavar="NAME",
                expose_value=False,
                callback=_remember_s3,
                help="s3:// zones: AWS profile from ~/.aws/config (default AWS_PROFILE or 'default').",
            ),
            click.option(
                "--region",
                metavar="REGION",
                expose_value=False,
                callback=_remember_s3,
                help="s3:// zones: AWS region (default AWS_REGION, the profile's, or us-east-1).",
            ),
        ],
    )


def sftp_connection_options(func: F) -> F:
    """``--identity``, ``--known-hosts`` and ``--accept-new-host-key``."""
    return _apply(
        func,
        [
            click.option(
                "--identity",
                "identity_file",
                metavar="KEYFILE",
                type=click.Path(exists=True, dir_okay=False),
                expose_value=False,
                callback=_remember_sftp,
                help="sftp:// zones: private key to log in with.",
            ),
            click.option(
                "--known-hosts",
                "known_hosts",
                metavar="FILE",
                type=click.Path(dir_okay=False),
                expose_value=False,
                callback=_remember_sftp,
                help="sftp:// zones: known_hosts file with the server's host key "
                "(default ~/.ssh/known_hosts).",
            ),
            click.option(
                "--accept-new-host-key",
                "accept_new",
                is_flag=True,
                expose_value=False,
                callback=_remember_sftp,
                help="sftp:// zones: trust and record a first-seen server key (never a changed one).",
            ),
        ],
    )


def connection_overrides() -> dict[str, Any]:
    """What the connection options of the running command set, as settings overrides."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return {}
    overrides: dict[str, Any] = {}
    for section, key in (("s3", _S3), ("sftp", _SFTP)):
        values = dict(ctx.meta.get(key, {}))
        if values:
            overrides[section] = values
    return overrides


def zone_option(func: F) -> F:
    func = sftp_connection_options(func)
    func = s3_connection_options(func)
    return click.option(
        "--zone",
        metavar="ZONE",
        help="Drop zone: a folder, s3://bucket/prefix or sftp://user@host:port/path.",
    )(func)


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON summary object on stdout.")


def _remember_global(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A global option given after the subcommand wins over the same one before it."""
    if value is not None and ctx.obj is not None:
        setattr(ctx.obj, str(param.name), value)
    return value


def global_options(command: F) -> F:
    """``--config``, ``--log-format`` and ``--log-level`` after the subcommand too
    (``dropzone status --log-format json``), as git and the AWS CLI accept them."""
    return _apply(
        command,
        [
            click.option(
                "--config",
                "config_dir",
                metavar="DIR",
                expose_value=False,
                callback=_remember_global,
                help="Config folder (default ./config or $DROPZONE_CONFIG).",
            ),
            click.option(
                "--log-format",
                "log_format",
                type=LOG_FORMATS,
                expose_value=False,
                callback=_remember_global,
                help="Log format on stderr (default: config).",
            ),
            click.option(
                "--log-level",
                "log_level",
                type=LOG_LEVELS,
                expose_value=False,
                callback=_remember_global,
                help="Log level.",
            ),
        ],
    )
