"""Commands that process files: ``run`` (watch or ``--once``), ``ingest`` and ``demo``."""

from __future__ import annotations

import logging
import sys
import tempfile
import threading
from importlib import resources
from pathlib import Path

import click

from dropzone.cli.api import api_if_configured
from dropzone.cli.context import Context
from dropzone.cli.errors import EXIT_USAGE, handle_errors
from dropzone.cli.options import global_options, json_option, zone_option
from dropzone.cli.output import print_line, say_error
from dropzone.cli.progress import FileProgress, file_progress
from dropzone.cli.signals import StopWaiting, install_signal_handlers
from dropzone.cli.tables import finish, print_result_line
from dropzone.config import TENANT_NAME
from dropzone.log import event
from dropzone.models import FileResult, IncomingFile
from dropzone.pipeline.order import processing_order
from dropzone.service import Service, open_service
from dropzone.sources.base import INCOMING
from dropzone.watcher import Watcher

_log = logging.getLogger("dropzone.cli")


@click.command()
@zone_option
@click.option("--once", is_flag=True, help="Process what is in incoming/ now, then exit.")
@json_option
@global_options
@click.pass_obj
def run(obj: Context, zone: str | None, once: bool, as_json: bool) -> None:
    """Watch the zone and process every complete file (Ctrl-C once: finish the current file and
    stop; SIGTERM or Ctrl-C twice: stop now, releasing the file for another worker; an idle
    worker stops at once)."""
    settings = obj.settings(zone=zone)
    with handle_errors(), open_service(settings) as service:
        stop = threading.Event()
        watcher = Watcher(service.pipeline, service.source, settings)
        install_signal_handlers(stop, service, idle=lambda: watcher.waiting)
        if once:
            with file_progress(as_json, service.source.list_incoming()) as progress:
                _attach(service, progress)
                watcher.on_result = (lambda r: progress.file_done(None, r)) if progress else None
                results = watcher.drain_once(stop)
            finish(service, results, as_json)
            return
        watcher.on_result = None if as_json else print_result_line
        try:
            with api_if_configured(settings, service):  # api.serve: true
                watcher.run(stop)
        except StopWaiting:
            event(_log, "watch.stopped", zone=service.source.url, idle=True)


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=True, path_type=Path))
@click.option("--tenant", required=True, help="Tenant (health system) the files belong to.")
@zone_option
@json_option
@global_options
@click.pass_obj
def ingest(obj: Context, files: tuple[Path, ...], tenant: str, zone: str | None, as_json: bool) -> None:
    """Copy FILES (or the files inside folders) into incoming/<TENANT>/ and process them once,
    exactly as `run` would."""
    settings = obj.settings(zone=zone)
    if not TENANT_NAME.match(tenant) or settings.tenant(tenant) is None:
        # Refuse now, not after copying and quarantining (exit 3 said nothing about the typo).
        say_error(settings.why_not_tenant(tenant, flag=True), event="tenant.refused", tenant=tenant)
        sys.exit(EXIT_USAGE)
    paths = expand_paths(files)
    problem = first_unreadable(paths)
    if problem:  # a usage error (exit 2), said before anything is copied
        say_error(problem, event="ingest.unreadable")
        sys.exit(EXIT_USAGE)
    with handle_errors(), open_service(settings) as service:
        stop = threading.Event()
        install_signal_handlers(stop, service)
        # In the order `run` would take them (dropzone.pipeline.order).
        queued = processing_order(_copy_into_zone(service, tenant, paths))
        with file_progress(as_json, queued) as progress:
            _attach(service, progress)
            results = []
            for item in queued:
                if stop.is_set():
                    break
                if progress:
                    progress.begin(item)
                result = service.pipeline.process(item)
                if result is not None:
                    results.append(result)
                if progress:
                    progress.file_done(item, result)
        finish(service, results, as_json)


@click.command()
@click.option("--zone", metavar="DIR", help="Folder for the demo zone (default: a new temporary folder).")
@json_option
@global_options
@click.pass_obj
def demo(obj: Context, zone: str | None, as_json: bool) -> None:
    """Ingest the bundled example drops (FHIR NDJSON, gzip, transaction Bundles, a broken file) on
    the embedded store and show what happened."""
    folder = Path(zone) if zone else Path(tempfile.mkdtemp(prefix="dropzone-demo-"))
    settings = obj.settings(zone=str(folder))
    demo_root = resources.files("dropzone") / "demo_data"
    with handle_errors(), open_service(settings) as service:
        for tenant_dir in sorted(demo_root.iterdir(), key=lambda p: p.name):
            if not tenant_dir.is_dir():
                continue
            for item in sorted(tenant_dir.iterdir(), key=lambda p: p.name):
                with resources.as_file(item) as local:
                    service.source.put(f"{INCOMING}/{tenant_dir.name}/{item.name}", local)
        quick = settings.pipeline.model_copy(update={"quiet_seconds": 0.0})
        watcher = Watcher(service.pipeline, service.source, settings.model_copy(update={"pipeline": quick}))
        with file_progress(as_json, service.source.list_incoming()) as progress:
            _attach(service, progress)
            watcher.on_result = (lambda r: progress.file_done(None, r)) if progress else None
            results: list[FileResult] = watcher.drain_once()
        if not as_json:
            print_line(f"Demo drop zone: {folder}  (look in archived/ and quarantine/)")
        finish(service, results, as_json)


def _attach(service: Service, progress: FileProgress | None) -> None:
    service.pipeline.progress = progress


def expand_paths(paths: tuple[Path, ...]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")))
        else:
            out.append(path)
    return out


def first_unreadable(paths: list[Path]) -> str | None:
    for path in paths:
        try:
            with path.open("rb") as fh:
                fh.read(1)
        except OSError as err:
            return f"cannot read {path}: {err.strerror or type(err).__name__}"
    return None


def _copy_into_zone(service: Service, tenant: str, files: list[Path]) -> list[IncomingFile]:
    queued = []
    for path in files:
        key = service.source.put(f"{INCOMING}/{tenant}/{path.name}", path)
        item = service.source.stat(key)
        if item is not None:
            queued.append(item)
    return queued
