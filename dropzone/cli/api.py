"""``dropzone api`` and ``dropzone tenant add|rotate``.

Nothing heavy is imported at module level: the CLI must work without the ``api`` extra.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dropzone.cli.errors import handle_errors
from dropzone.cli.options import global_options
from dropzone.cli.output import say
from dropzone.cli.signals import StopWaiting, install_signal_handlers

if TYPE_CHECKING:
    from dropzone.config import Settings
    from dropzone.service import Service


def _require_api_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ModuleNotFoundError as err:
        from dropzone.errors import UsageError

        raise UsageError(f"the push API needs: pip install 'dropzone[api]' ({err.name} is missing)") from err


@contextlib.contextmanager
def api_if_configured(settings: Settings, service: Service, workers: bool = True) -> Iterator[Any]:
    """For ``dropzone run``: serve the API beside the watcher when ``api.serve`` is true."""
    if not settings.api.serve:
        yield None
        return
    with serve_api(settings, service, settings.api.host, settings.api.port, workers) as server:
        yield server


@contextlib.contextmanager
def serve_api(settings: Settings, service: Service, host: str, port: int, workers: bool) -> Iterator[Any]:
    _require_api_extra()
    from dropzone.api.app import create_app
    from dropzone.api.server import ApiServer

    app = create_app(settings, service.store, service.source, workers=workers)
    with ApiServer(app, host, port) as server:
        yield server


@click.command("api")
@click.option(
    "--zone", metavar="ZONE", help="Drop zone: a folder, s3://bucket/prefix or sftp://user@host:port/path."
)
@click.option("--host", help="Address to listen on (default: api.host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default: api.port, 8080).")
@click.option(
    "--no-workers", is_flag=True, help="Only serve the API; another `dropzone run` processes files."
)
@global_options
@click.pass_obj
def api_command(obj: Any, zone: str | None, host: str | None, port: int | None, no_workers: bool) -> None:
    """Serve the push API (token, batch upload, status, single-resource updates) and, unless
    --no-workers, process the zone's files in the same process. Ctrl-C or SIGTERM stops both."""
    from dropzone.service import open_service
    from dropzone.watcher import Watcher

    settings = obj.settings(zone=zone)
    with handle_errors():
        _require_api_extra()
        with open_service(settings) as service:
            stop = threading.Event()
            watcher = Watcher(service.pipeline, service.source, settings)
            # As `dropzone run`: Ctrl-C finishes the current file, SIGTERM releases it at once.
            # Without workers nothing is ever in progress: a signal stops the server at once.
            install_signal_handlers(stop, service, idle=lambda: no_workers or watcher.waiting)
            chosen_host = host or settings.api.host
            chosen_port = settings.api.port if port is None else port
            with serve_api(settings, service, chosen_host, chosen_port, not no_workers) as server:
                say(
                    f"push API on {server.url} (OpenAPI: {server.url}/openapi.json)",
                    event="api.listening",
                    url=server.url,
                )
                with contextlib.suppress(StopWaiting):
                    if no_workers:
                        stop.wait()
                    else:
                        watcher.run(stop)


# -- tenant credentials ---------------------------------------------------------------------------


def _config_dir(obj: Any) -> Path:
    """--config > $DROPZONE_CONFIG > ./config (created if missing)."""
    chosen = getattr(obj, "config_dir", None) or os.environ.get("DROPZONE_CONFIG") or "config"
    return Path(chosen)


@click.group("tenant")
@global_options
def tenant_group() -> None:
    """Tenants (health systems) and their API credentials."""


def _print_issued(issued: Any, as_json: bool, verb: str) -> None:
    if as_json:
        import orjson

        sys.stdout.write(orjson.dumps(issued.as_json()).decode() + "\n")
        sys.stdout.flush()
        return
    click.echo(f"{verb} {issued.path}")
    click.echo(f"  client_id:     {issued.client_id}")
    click.echo(f"  client_secret: {issued.client_secret}")
    click.echo("The secret is shown only now; the file keeps only its hash. Store it in a secret manager.")


@tenant_group.command("add")
@click.argument("name")
@click.option("--display-name", help="Human-readable name (default: NAME).")
@click.option("--json", "as_json", is_flag=True, help='Print {"tenant", "client_id", "client_secret"}.')
@global_options
@click.pass_obj
def tenant_add(obj: Any, name: str, display_name: str | None, as_json: bool) -> None:
    """Write <config>/tenants/NAME.yaml with new API credentials and print them once."""
    from dropzone.api.tenant_files import add_tenant

    with handle_errors():
        _print_issued(add_tenant(_config_dir(obj), name, display_name), as_json, "wrote")


@tenant_group.command("rotate")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help='Print {"tenant", "client_id", "client_secret"}.')
@global_options
@click.pass_obj
def tenant_rotate(obj: Any, name: str, as_json: bool) -> None:
    """Replace NAME's API client secret (same client id). The old secret, and tokens issued
    with it, stop working within a second on running servers."""
    from dropzone.api.tenant_files import rotate_secret

    with handle_errors():
        _print_issued(rotate_secret(_config_dir(obj), name), as_json, "updated")
