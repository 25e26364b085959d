"""The ``dropzone`` command line. Human output goes to stdout (tables) and logs to stderr;
``--json`` prints exactly one JSON object on stdout for scripts.

Exit codes: 0 every file archived or duplicate, 3 some file partial or quarantined,
2 usage or configuration error, 1 an unexpected failure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dropzone import log
from dropzone.api.cli import api_command, api_if_configured, tenant_group
from dropzone.cli_s3 import cli_s3_overrides, s3_connection_options
from dropzone.cli_sftp import cli_sftp_overrides, sftp_config, sftp_connection_options
from dropzone.config import TENANT_NAME, Settings, load_settings
from dropzone.errors import DropzoneError, SourceFileGone, UsageError
from dropzone.export import export_ndjson, normalise_since
from dropzone.models import FileResult, IncomingFile, Outcome
from dropzone.service import Service, open_service, open_store_and_source
from dropzone.sources.base import INCOMING, QUARANTINE
from dropzone.watcher import Watcher
from processors.csv_claims.cli import check_mappings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SOME_REJECTED = 0, 1, 2, 3
_log = logging.getLogger("dropzone.cli")


def _console(to_stderr: bool = False) -> Console:
    """Rich assumes 80 columns when the output is not a terminal (CI logs, `| tee`, cron mail),
    which folded every name; there, lines may be as wide as their content (up to 240) unless
    COLUMNS says otherwise."""
    console = Console(stderr=to_stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=to_stderr, width=240)
    return console


stdout = _console()
stderr = _console(to_stderr=True)


class Context:
    def __init__(self, config_dir: str | None, log_format: str | None, log_level: str | None) -> None:
        self.config_dir = config_dir
        self.log_format = log_format
        self.log_level = log_level

    def settings(self, **overrides: Any) -> Settings:
        overrides.setdefault("sftp", cli_sftp_overrides())
        overrides.setdefault("s3", cli_s3_overrides())
        try:
            settings = load_settings(self.config_dir, **overrides)
        except UsageError as err:
            _say_error(str(err))
            sys.exit(EXIT_USAGE)
        log.configure(self.log_format or settings.logging.format, self.log_level or settings.logging.level)
        return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="dropzone")
@click.option(
    "--config", "config_dir", metavar="DIR", help="Config folder (default ./config or $DROPZONE_CONFIG)."
)
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), help="Log format on stderr (default: config)."
)
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), help="Log level.")
@click.pass_context
def main(ctx: click.Context, config_dir: str | None, log_format: str | None, log_level: str | None) -> None:
    """dropzone: load health-system data dropped into a drop zone (folder, s3://, sftp://) into MongoDB.

    Files under incoming/<tenant>/ are sniffed, validated (FHIR R4), loaded idempotently and moved
    to archived/ or quarantine/ (with <file>.error.json). Without MONGODB_URI the data goes
    to the embedded SQLite database in the zone (<zone>/.dropzone/dropzone.sqlite).
    """
    ctx.obj = Context(config_dir, log_format, log_level)


main.add_command(api_command)
main.add_command(tenant_group)


def zone_option(func: Any) -> Any:
    func = sftp_connection_options(func)
    func = s3_connection_options(func)
    return click.option(
        "--zone",
        metavar="ZONE",
        help="Drop zone: a folder, s3://bucket/prefix or sftp://user@host:port/path.",
    )(func)


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON summary object on stdout.")


@main.command()
@zone_option
@click.option("--once", is_flag=True, help="Process what is in incoming/ now, then exit.")
@json_option
@click.pass_obj
def run(obj: Context, zone: str | None, once: bool, as_json: bool) -> None:
    """Watch the zone and process every complete file (Ctrl-C once: finish the current file and
    stop; SIGTERM or Ctrl-C twice: stop now, releasing the file for another worker)."""
    settings = obj.settings(zone=zone)
    with _handle_errors(), open_service(settings) as service:
        stop = threading.Event()
        _install_signal_handlers(stop, service)
        watcher = Watcher(service.pipeline, service.source, settings)
        if once:
            with _progress(as_json) as progress:
                service.pipeline.progress = progress.records if progress else None
                results = watcher.drain_once(stop)
            _finish(service, results, as_json)
        else:
            watcher.on_result = None if as_json else _print_result_line
            with api_if_configured(settings, service):  # api.serve: true
                watcher.run(stop)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=True, path_type=Path))
@click.option("--tenant", required=True, help="Tenant (health system) the files belong to.")
@zone_option
@json_option
@click.pass_obj
def ingest(obj: Context, files: tuple[Path, ...], tenant: str, zone: str | None, as_json: bool) -> None:
    """Copy FILES (or the files inside folders) into incoming/<TENANT>/ and process them once,
    exactly as `run` would."""
    if not TENANT_NAME.match(tenant):
        raise click.BadParameter("lower-case letters, digits, '.', '_' or '-'", param_hint="--tenant")
    settings = obj.settings(zone=zone)
    if settings.tenant(tenant) is None:  # refuse now, not after copying and quarantining
        _say_error(settings.why_not_tenant(tenant))
        sys.exit(EXIT_USAGE)
    with _handle_errors(), open_service(settings) as service:
        stop = threading.Event()
        _install_signal_handlers(stop, service)
        queued = _copy_into_zone(service, tenant, _expand(files))
        with _progress(as_json, total=len(queued)) as progress:
            service.pipeline.progress = progress.records if progress else None
            results = []
            for item in queued:
                if stop.is_set():
                    break
                result = service.pipeline.process(item)
                if result is not None:
                    results.append(result)
                if progress:
                    progress.file_done()
        _finish(service, results, as_json)


@main.command()
@zone_option
@click.option("--tenant", help="Only this tenant.")
@click.option("--limit", default=20, show_default=True, help="Recent files to list.")
@json_option
@click.pass_obj
def status(obj: Context, zone: str | None, tenant: str | None, limit: int, as_json: bool) -> None:
    """What the store holds: files per tenant and outcome, resources per tenant and type, and the
    most recent files with their report."""
    settings = obj.settings(zone=zone)
    with _handle_errors(), open_store_and_source(settings) as (store, source):
        summary = store.ledger.summary()
        if tenant:
            summary = {t: states for t, states in summary.items() if t == tenant}
        recent = store.ledger.files(tenant=tenant, limit=limit)
        counts = store.resources.tenant_counts([tenant] if tenant else None)
        incoming = len(source.list_incoming())
        if as_json:
            _print_json(
                {
                    "store": store.description,
                    "persistent": store.persistent,
                    "incoming": incoming,
                    "files": summary,
                    "resources": counts,
                    "recent": [_file_row(r) for r in recent],
                }
            )
            return
        stdout.print(f"Store: {store.description}", soft_wrap=True)
        if not store.persistent:
            stdout.print(
                "[yellow]In-memory store: the ledger starts empty in every process (store.kind: memory).[/]",
                soft_wrap=True,
            )
        stdout.print(f"Files waiting in incoming/: {incoming}")
        table = Table("tenant", "outcome", "files", title="Files by outcome")
        for name, states in summary.items():
            for state, n in sorted(states.items()):
                table.add_row(escape(name), state, f"{n:,}")
        stdout.print(table)
        _print_recent(recent)
        _print_tenant_resources(counts)


@main.command("export")
@click.option("--tenant", required=True, help="Tenant whose resources to export.")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the <Type>.ndjson files (created if missing).",
)
@click.option("--type", "types", multiple=True, metavar="TYPE", help="Only this resourceType (repeatable).")
@click.option(
    "--since", metavar="ISO-TIME", help="Only resources stored at or after this time (UTC without a zone)."
)
@zone_option
@json_option
@click.pass_obj
def export_command(
    obj: Context,
    tenant: str,
    out_dir: Path,
    types: tuple[str, ...],
    since: str | None,
    zone: str | None,
    as_json: bool,
) -> None:
    """Write a tenant's stored resources as FHIR Bulk Data NDJSON, one <Type>.ndjson per type,
    exactly as stored (the sender's JSON with meta.versionId/lastUpdated), streaming."""
    settings = obj.settings(zone=zone)
    with _handle_errors():
        since_stamp = normalise_since(since) if since else None
        with open_store_and_source(settings) as (store, _source):
            expected = sum(store.resources.tenant_counts([tenant]).get(tenant, {}).values())
            with _count_progress(as_json, "exporting", expected or None) as advance:
                written = export_ndjson(store.resources, tenant, out_dir, types or None, since_stamp, advance)
    if as_json:
        _print_json(
            {
                "tenant": tenant,
                "out": str(out_dir),
                "since": since_stamp,
                "files": [{"type": w.resource_type, "path": str(w.path), "count": w.count} for w in written],
            }
        )
        return
    if not written:
        stdout.print(
            f"Nothing to export for tenant {escape(tenant)} (store: {store.description}).", soft_wrap=True
        )
        return
    table = Table(title=f"Exported for {escape(tenant)}")
    for name in ("resourceType", "resources", "file"):
        table.add_column(name, overflow="fold")
    for w in written:
        table.add_row(w.resource_type, f"{w.count:,}", escape(str(w.path)))
    stdout.print(table)


@main.command()
@click.argument("path")
@zone_option
@click.pass_obj
def replay(obj: Context, path: str, zone: str | None) -> None:
    """Move a quarantined file (PATH: its key under the zone, e.g.
    quarantine/acme/2026/11/25/x.ndjson, or its .error.json) back to incoming/ to be processed again."""
    settings = obj.settings(zone=zone)
    with _handle_errors(), open_service(settings) as service:
        key = _zone_key(service, path).removesuffix(".error.json")
        if not key.startswith(f"{QUARANTINE}/"):
            raise UsageError(f"{key} is not under {QUARANTINE}/")
        report_key = f"{key}.error.json"
        target = None
        if service.source.exists(report_key):
            report = orjson.loads(service.source.read_bytes(report_key))
            target = report.get("original_key")
        if not target or not str(target).startswith(f"{INCOMING}/"):
            parts = key.split("/")
            target = f"{INCOMING}/{parts[1]}/{parts[-1]}"
        try:
            moved = service.source.move_key(key, target)
        except SourceFileGone:
            raise UsageError(f"nothing at {key}") from None
        if service.source.exists(report_key):
            service.source.move_key(report_key, f"{report_key}.replayed")
        stdout.print(
            f"moved {escape(key)} -> {escape(moved)}; `dropzone run` will process it again", soft_wrap=True
        )


@main.command()
@click.option("--zone", metavar="DIR", help="Folder for the demo zone (default: a new temporary folder).")
@json_option
@click.pass_obj
def demo(obj: Context, zone: str | None, as_json: bool) -> None:
    """Ingest the bundled example drops (FHIR NDJSON, gzip, transaction Bundles, a broken file) on
    the embedded store and show what happened."""
    folder = Path(zone) if zone else Path(tempfile.mkdtemp(prefix="dropzone-demo-"))
    settings = obj.settings(zone=str(folder))
    demo_root = resources.files("dropzone") / "demo_data"
    with _handle_errors(), open_service(settings) as service:
        for tenant_dir in sorted(demo_root.iterdir(), key=lambda p: p.name):
            if not tenant_dir.is_dir():
                continue
            for item in sorted(tenant_dir.iterdir(), key=lambda p: p.name):
                with resources.as_file(item) as local:
                    service.source.put(f"{INCOMING}/{tenant_dir.name}/{item.name}", local)
        watcher = Watcher(
            service.pipeline,
            service.source,
            settings.model_copy(
                update={"pipeline": settings.pipeline.model_copy(update={"quiet_seconds": 0.0})}
            ),
        )
        with _progress(as_json) as progress:
            service.pipeline.progress = progress.records if progress else None
            results = watcher.drain_once()
        if not as_json:
            stdout.print(
                f"Demo drop zone: {escape(str(folder))}  (look in archived/ and quarantine/)", soft_wrap=True
            )
        _finish(service, results, as_json)


# -- helpers ----------------------------------------------------------------------------------------


def _expand(paths: tuple[Path, ...]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")))
        else:
            out.append(path)
    return out


def _copy_into_zone(service: Service, tenant: str, files: list[Path]) -> list[IncomingFile]:
    queued = []
    for path in files:
        key = service.source.put(f"{INCOMING}/{tenant}/{path.name}", path)
        item = service.source.stat(key)
        if item is not None:
            queued.append(item)
    return queued


def _zone_key(service: Service, path: str) -> str:
    """Accept a key relative to the zone or, for folder zones, a filesystem path inside it."""
    root = getattr(service.source, "root", None)
    if root is not None and Path(path).is_absolute():
        with contextlib.suppress(ValueError):
            return Path(path).resolve().relative_to(root).as_posix()
    return path.strip("/")


class _FileProgress:
    def __init__(self, progress: Progress, total: int | None) -> None:
        self._progress = progress
        self._files = progress.add_task("files", total=total)
        self._records = 0

    def records(self, file: IncomingFile, n: int) -> None:
        self._records += n
        self._progress.update(self._files, description=f"{file.name[:40]} ({self._records:,} records)")

    def file_done(self) -> None:
        self._progress.advance(self._files)


@contextlib.contextmanager
def _progress(as_json: bool, total: int | None = None) -> Iterator[_FileProgress | None]:
    if as_json or not stderr.is_terminal:
        yield None
        return
    with Progress(*_progress_columns(), console=stderr, transient=True) as progress:
        yield _FileProgress(progress, total)


def _progress_columns() -> list[Any]:
    return [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]


@contextlib.contextmanager
def _count_progress(as_json: bool, label: str, total: int | None) -> Iterator[Callable[[str], None] | None]:
    """A bar counting items (resources), labelled with the current item's kind."""
    if as_json or not stderr.is_terminal:
        yield None
        return
    with Progress(*_progress_columns(), console=stderr, transient=True) as progress:
        task = progress.add_task(label, total=total)

        def advance(kind: str) -> None:
            progress.update(task, advance=1, description=f"{label} {kind}")

        yield advance


def _finish(service: Service, results: list[FileResult], as_json: bool) -> None:
    tenants = sorted({r.tenant for r in results})
    counts = service.store.resources.counts(tenants) if tenants else {}
    unfinished = [{"key": key, "code": code} for key, code in sorted(service.pipeline.unfinished.items())]
    if as_json:
        payload: dict[str, Any] = {"files": [r.summary() for r in results], "resources": counts}
        if unfinished:
            payload["unfinished"] = unfinished
        _print_json(payload)
    else:
        table = Table(title=f"{len(results)} file(s)")
        for name in ("file", "tenant", "outcome", "read", "loaded", "unchanged", "rejected", "reason"):
            # fold, never cut: `Practit…` twice said nothing about which file it was.
            table.add_column(name, overflow="fold")
        for r in results:
            style = {"archived": "green", "duplicate": "cyan", "partial": "yellow"}.get(
                r.outcome.value, "red"
            )
            table.add_row(
                escape(r.name),
                escape(r.tenant),
                f"[{style}]{r.outcome.value}[/]",
                str(r.counts.read),
                str(r.counts.loaded),
                str(r.counts.unchanged),
                str(r.counts.rejected),
                r.reason or "",
            )
        stdout.print(table)
        for r in results:
            if r.report:
                stdout.print(f"report for {escape(r.name)}: {escape(r.report)}", soft_wrap=True)
        _print_resources(counts)
        if not service.store.persistent:
            stdout.print(
                "[yellow]In-memory store (store.kind: memory): nothing persists after this command.[/]"
            )
    for item in unfinished:
        _say_error(f"{item['key']} could not be finished ({item['code']}); it stays in incoming/ for a retry")
    if unfinished:
        sys.exit(EXIT_FAILED)
    rejected = any(r.outcome in (Outcome.PARTIAL, Outcome.QUARANTINED) for r in results)
    sys.exit(EXIT_SOME_REJECTED if rejected else EXIT_OK)


def _print_tenant_resources(counts: dict[str, dict[str, int]]) -> None:
    if not counts:
        stdout.print("No resources in the store.")
        return
    table = Table("tenant", "resourceType", "stored", title="Resources in the store")
    for tenant, per_type in counts.items():
        for rtype, n in per_type.items():
            table.add_row(escape(tenant), rtype, f"{n:,}")
    stdout.print(table)


def _print_resources(counts: dict[str, int]) -> None:
    if not counts:
        return
    table = Table("resourceType", "stored", title="Resources in the store")
    for rtype, n in counts.items():
        table.add_row(rtype, f"{n:,}")
    stdout.print(table)


def _file_row(record: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "name",
        "tenant",
        "state",
        "counts",
        "received_at",
        "finished_at",
        "seconds",
        "destination",
        "report",
    )
    return {k: record.get(k) for k in keys}


def _print_recent(records: list[dict[str, Any]]) -> None:
    table = Table(title="Recent files")
    for name in ("received", "tenant", "file", "state", "read", "loaded", "rejected", "report"):
        # fold, never cut: names and report paths are what an operator copies from here.
        table.add_column(name, overflow="fold")
    for r in records:
        c = r.get("counts") or {}
        table.add_row(
            str(r.get("received_at", "")),
            escape(str(r.get("tenant", ""))),
            escape(str(r.get("name", ""))),
            str(r.get("state", "")),
            str(c.get("read", "")),
            str(c.get("loaded", "")),
            str(c.get("rejected", "")),
            escape(str(r.get("report") or "")),
        )
    stdout.print(table)


def _print_result_line(result: FileResult) -> None:
    c = result.counts
    stdout.print(
        f"{result.outcome.value:<11} {result.tenant}/{result.name}  read={c.read} loaded={c.loaded} "
        f"unchanged={c.unchanged} rejected={c.rejected}" + (f"  {result.reason}" if result.reason else "")
    )


def _print_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(payload).decode() + "\n")
    sys.stdout.flush()


def _install_signal_handlers(stop: threading.Event, service: Service) -> None:
    """Ctrl-C once: stop after the current file. SIGTERM or Ctrl-C twice: abandon it now (its
    lease is released so another worker can take it at once)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def on_sigint(_sig: int, _frame: object) -> None:
        if stop.is_set():
            service.pipeline.cancel.set()
            stderr.print("stopping now")
        else:
            stop.set()
            stderr.print("finishing the current file; press Ctrl-C again to stop now")
        wake = getattr(service.source, "wake", None)
        if wake:
            wake()

    def on_sigterm(_sig: int, _frame: object) -> None:
        stop.set()
        service.pipeline.cancel.set()
        wake = getattr(service.source, "wake", None)
        if wake:
            wake()

    signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGTERM, on_sigterm)


main.add_command(sftp_config)


def _say_error(message: str) -> None:
    """Never hard-wrapped (a suggested command must stay one line to copy it) and never read as
    markup (paths and names may hold brackets)."""
    stderr.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)


@contextlib.contextmanager
def _handle_errors() -> Iterator[None]:
    try:
        yield
    except UsageError as err:
        _say_error(str(err))
        sys.exit(EXIT_USAGE)
    except DropzoneError as err:
        _say_error(f"{type(err).__name__}: {err}")
        sys.exit(EXIT_FAILED)
    except Exception as err:
        # A bug: one structured event (JSON in JSON mode), the traceback only at DEBUG, and not
        # the message, which might quote a value from a file.
        debug = _log.isEnabledFor(logging.DEBUG)
        log.event(_log, "cli.failed", logging.ERROR, error_type=type(err).__name__, exc_info=debug)
        stderr.print(
            f"[red]error:[/] internal error ({type(err).__name__}); --log-level DEBUG shows the traceback",
            soft_wrap=True,
        )
        sys.exit(EXIT_FAILED)


# Commands that live with their feature (registered here, in one place).
main.add_command(check_mappings)


if __name__ == "__main__":  # pragma: no cover
    main()
