"""Shared fixtures: sample data, drop zones, stores (memory, mongomock, real MongoDB when
MONGODB_URI is set) and a pipeline factory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from dropzone.config import Settings, load_settings
from dropzone.pipeline.runner import Pipeline
from dropzone.sources.folder import FolderSource
from dropzone.store.base import Store
from dropzone.store.memory import MemoryStore
from dropzone.store.sqlite import SqliteStore

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _find_samples() -> Path:
    for candidate in (REPO.parent / "shared" / "samples", Path("/work/shared/samples")):
        if candidate.is_dir():
            return candidate
    raise RuntimeError("shared samples not found next to the repository (../shared/samples)")


SAMPLES = _find_samples()
BULK = SAMPLES / "smart-bulk-fhir-10-patients"
SYNTHEA = SAMPLES / "synthea-r4-transaction-bundles"
HL7 = SAMPLES / "hl7-fhir-r4-examples"
JSONSUITE = SAMPLES / "jsontestsuite"


def patch_mongomock_bulk() -> None:
    """mongomock 4.3 rejects the ``sort`` keyword pymongo >= 4.11 passes to bulk updates
    (see ../shared/docs/TESTING.md); drop it. Test-only."""
    import mongomock.collection as mc

    builder = mc.BulkOperationBuilder
    if getattr(builder, "_dz_patched", False):
        return
    for name in ("add_update", "add_replace"):
        original = getattr(builder, name)

        def patched(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            kwargs.pop("sort", None)
            return _original(self, *args, **kwargs)

        setattr(builder, name, patched)
    builder._dz_patched = True


def mongomock_store() -> Store:
    import mongomock

    from dropzone.store.mongo import MongoStore

    patch_mongomock_bulk()
    return MongoStore(client=mongomock.MongoClient(), database="dropzone_test")


def real_mongo_store() -> Store:
    from dropzone.store.mongo import MongoStore

    uri = os.environ["MONGODB_URI"]
    database = f"dropzone_test_{uuid.uuid4().hex[:8]}"
    store = MongoStore(uri, database)
    store.resources.ensure_indexes()
    store._test_database = database  # type: ignore[attr-defined]
    return store


STORE_KINDS = ["memory", "sqlite", "mongomock", "mongodb"]


@pytest.fixture(params=STORE_KINDS)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Every store implementation; the real server only when MONGODB_URI is set."""
    kind = request.param
    if kind == "memory":
        store: Store = MemoryStore()
    elif kind == "sqlite":
        store = SqliteStore(tmp_path / "store" / "dropzone.sqlite")
    elif kind == "mongomock":
        store = mongomock_store()
    else:
        if not os.environ.get("MONGODB_URI"):
            pytest.skip("real MongoDB tests need MONGODB_URI (no MongoDB server on this machine)")
        store = real_mongo_store()
    yield store
    if kind == "mongodb":
        store._client.drop_database(store._test_database)  # type: ignore[attr-defined]
    store.close()


@pytest.fixture
def zone(tmp_path: Path) -> Path:
    root = tmp_path / "zone"
    (root / "incoming").mkdir(parents=True)
    return root


def make_settings(zone: Path, **pipeline: Any) -> Settings:
    settings = load_settings(config_dir=None, env={}, zone=str(zone))
    defaults: dict[str, Any] = {"validation_workers": 0, "quiet_seconds": 0.0}
    defaults.update(pipeline)
    return settings.model_copy(update={"pipeline": settings.pipeline.model_copy(update=defaults)})


PipelineFactory = Callable[..., Pipeline]


@pytest.fixture
def make_pipeline(zone: Path) -> Iterator[PipelineFactory]:
    opened: list[Pipeline] = []

    def factory(store: Store | None = None, settings: Settings | None = None, **pipeline: Any) -> Pipeline:
        pipe = Pipeline(
            settings or make_settings(zone, **pipeline), store or MemoryStore(), FolderSource(zone)
        )
        opened.append(pipe)
        return pipe

    yield factory
    for pipe in opened:
        pipe.close()


def drop(zone: Path, tenant: str, *files: Path, name: str | None = None) -> list[Path]:
    """Copy files into incoming/<tenant>/ (as an uploader would)."""
    target = zone / "incoming" / tenant
    target.mkdir(parents=True, exist_ok=True)
    out = []
    for f in files:
        dest = target / (name or f.name)
        shutil.copyfile(f, dest)
        out.append(dest)
    return out


def line_count(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def spawn_run_once(zone: Path, env: dict[str, str], log_level: str = "INFO") -> subprocess.Popen[bytes]:
    """A real ``dropzone run --once --json`` process with JSON logs on stderr."""
    command = [sys.executable, "-m", "dropzone", "--log-format", "json", "--log-level", log_level]
    return subprocess.Popen(
        [*command, "run", "--zone", str(zone), "--once", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def write_replicas(source: Path, path: Path, copies: int) -> int:
    """``source``'s NDJSON resources ``copies`` times into ``path``, each copy with fresh ids
    (``<id>-<copy>``): a large file of valid, distinct resources. Returns the record count."""
    lines = source.read_bytes().splitlines()
    count = 0
    with path.open("wb") as out:
        for copy in range(copies):
            for line in lines:
                doc = orjson.loads(line)
                doc["id"] = f"{doc['id'][:50]}-{copy}"
                out.write(orjson.dumps(doc) + b"\n")
                count += 1
    return count
