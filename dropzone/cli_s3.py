"""S3 pieces of the CLI: ``--queue-url`` and ``--endpoint-url`` for ``s3://`` zones.

Kept apart from ``dropzone.cli`` so that module only has to register them. The values become a
``s3:`` settings override for the running command (on top of config and ``DROPZONE_S3__*``).
"""

from __future__ import annotations

from typing import Any

import click

_META = "dropzone.s3_overrides"


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None:
        ctx.meta.setdefault(_META, {})[str(param.name)] = value
    return value


def s3_connection_options(func: Any) -> Any:
    options = [
        click.option(
            "--queue-url",
            metavar="URL",
            expose_value=False,
            callback=_remember,
            help="s3:// zones: SQS queue receiving the bucket's ObjectCreated notifications.",
        ),
        click.option(
            "--endpoint-url",
            metavar="URL",
            expose_value=False,
            callback=_remember,
            help="s3:// zones: S3/SQS endpoint (LocalStack, moto); default AWS_ENDPOINT_URL or AWS.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def cli_s3_overrides() -> dict[str, Any] | None:
    """What the s3 options of the running command set, as a ``s3:`` settings override."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return None
    return dict(ctx.meta.get(_META, {})) or None
