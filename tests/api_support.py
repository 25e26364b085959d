"""Helpers shared by tests/test_api_*.py: a config folder with tenants, an API over a folder zone
and the embedded store, served by real uvicorn on 127.0.0.1 (free port) or via TestClient."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from dropzone.api.app import create_app
from dropzone.api.server import ApiServer
from dropzone.api.tenant_files import IssuedCredentials, add_tenant
from dropzone.api.tokens import TokenIssuer
from dropzone.config import ApiSettings, Settings, load_settings
from dropzone.pipeline.runner import Pipeline
from dropzone.sources.folder import FolderSource
from dropzone.store.memory import MemoryStore
from dropzone.watcher import Watcher

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note about httpx2
    from fastapi.testclient import TestClient

SIGNING_KEY = "k" * 48
FINAL_STATES = {"archived", "partial", "quarantined", "duplicate"}


def samples_dir() -> Path:
    """../shared/samples beside the repo (CI clones), else the machine's shared copy."""
    beside = Path(__file__).resolve().parents[1].parent / "shared" / "samples"
    return beside if beside.is_dir() else Path("/work/shared/samples")


def make_config(root: Path, tenants: tuple[str, ...] = ("acme", "beta")) -> dict[str, IssuedCredentials]:
    config = root / "config"
    (config / "tenants").mkdir(parents=True, exist_ok=True)
    return {name: add_tenant(config, name) for name in tenants}


def make_settings(root: Path, **api: Any) -> Settings:
    env = {"DROPZONE_API__SIGNING_KEY": SIGNING_KEY}
    settings = load_settings(root / "config", env=env, zone=str(root / "zone"))
    pipeline = settings.pipeline.model_copy(
        update={
            "validation_workers": 0,
            "quiet_seconds": 0.0,
            "rescan_seconds": 0.5,
            "temp_dir": str(tmp(root)),
        }
    )
    api_settings = ApiSettings.model_validate({**settings.api.model_dump(), **api})
    return settings.model_copy(update={"api": api_settings, "pipeline": pipeline})


def tmp(root: Path) -> Path:
    folder = root / "tmp"
    folder.mkdir(exist_ok=True)
    return folder


@dataclass
class Harness:
    settings: Settings
    store: MemoryStore
    source: FolderSource
    creds: dict[str, IssuedCredentials]
    url: str = ""
    client: Any = None
    _tokens: dict[str, str] = field(default_factory=dict)

    @property
    def zone(self) -> Path:
        return self.source.root

    def token(self, tenant: str) -> str:
        if tenant not in self._tokens:
            c = self.creds[tenant]
            r = self.client.post(
                "/api/authenticate",
                data={
                    "grant_type": "client_credentials",
                    "client_id": c.client_id,
                    "client_secret": c.client_secret,
                },
            )
            assert r.status_code == 200, r.text
            self._tokens[tenant] = r.json()["access_token"]
        return self._tokens[tenant]

    def auth(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(tenant)}"}

    def files_under(self, area: str) -> list[str]:
        base = self.zone / area
        if not base.exists():
            return []
        return sorted(p.relative_to(self.zone).as_posix() for p in base.rglob("*") if p.is_file())

    def wait_final(self, tenant: str, status_url: str, timeout: float = 60.0) -> dict[str, Any]:
        """Poll the status URL until the upload reaches an outcome (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            body = self.client.get(status_url, headers=self.auth(tenant)).json()
            if body.get("state") in FINAL_STATES:
                return body
            assert time.monotonic() < deadline, f"upload still {body.get('state')} after {timeout}s"
            time.sleep(0.05)


def build(root: Path, tenants: tuple[str, ...] = ("acme", "beta"), **api: Any) -> Harness:
    creds = make_config(root, tenants)
    settings = make_settings(root, **api)
    return Harness(settings, MemoryStore(), FolderSource(root / "zone"), creds)


@contextlib.contextmanager
def in_process(h: Harness) -> Iterator[Harness]:
    app = create_app(h.settings, h.store, h.source)
    with TestClient(app, raise_server_exceptions=False) as client:
        h.client = client
        yield h


@contextlib.contextmanager
def live_server(h: Harness, workers: bool = True, issuer: TokenIssuer | None = None) -> Iterator[Harness]:
    """Real uvicorn on 127.0.0.1:<free port>, and (``workers``) the watcher processing the zone."""
    app = create_app(h.settings, h.store, h.source, workers=workers, issuer=issuer)
    stop = threading.Event()
    thread = None
    pipeline = Pipeline(h.settings, h.store, h.source)
    with ApiServer(app, "127.0.0.1", 0) as server:
        if workers:
            watcher = Watcher(pipeline, h.source, h.settings)
            thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
            thread.start()
        h.url = server.url
        try:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                h.client = client
                yield h
        finally:
            stop.set()
            h.source.wake()
            if thread is not None:
                thread.join(timeout=30)
            h.source.close()
            pipeline.close()


class LogCapture(logging.Handler):
    """Everything logged under ``dropzone`` and ``uvicorn``, formatted as the service would."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        from dropzone.log import JsonFormatter

        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@contextlib.contextmanager
def captured_logs() -> Iterator[LogCapture]:
    handler = LogCapture()
    loggers = [logging.getLogger(n) for n in ("dropzone", "uvicorn", "uvicorn.error")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
