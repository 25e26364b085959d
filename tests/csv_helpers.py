"""Helpers for the CSV processor tests: run a processor on a file the way the pipeline does
(sniff the head, choose a processor, validate each record's resources with fhir.resources R4B,
upsert valid records), without needing the pipeline itself."""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from dropzone.config import Settings, TenantSettings
from dropzone.pipeline.canonical import resource_hash
from dropzone.store.base import ResourceStore, ResourceWrite
from dropzone.store.memory import MemoryStore
from processors.base import Processor, ProcessorContext, Record, Sniffed
from processors.registry import choose

REPO = Path(__file__).resolve().parents[1]


def samples_dir() -> Path:
    beside = REPO.parent / "shared" / "samples"
    return beside if beside.is_dir() else Path("/work/shared/samples")


SAMPLES = samples_dir()
SYNPUF = SAMPLES / "cms-de-synpuf"
OHDSI = SAMPLES / "cms-de-synpuf-ohdsi-etl-cms"
DATA = Path(__file__).resolve().parent / "data"


def payload_opener(path: Path) -> Callable[[], io.BufferedReader]:
    def open_payload() -> io.BufferedReader:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        if raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        return io.BufferedReader(io.BytesIO(raw))

    return open_payload


def sniff(path: Path) -> Sniffed:
    raw = path.read_bytes()
    gz = raw[:2] == b"\x1f\x8b"
    if gz:
        raw = gzip.decompress(raw)
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    return Sniffed(kind="csv", gzipped=gz, head=raw[:65536], details={})


def validate(resource: dict[str, Any]) -> list[str]:
    try:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    except (ValidationError, KeyError, ValueError) as err:
        return [str(err)]
    return []


@dataclass
class Run:
    processor: Processor
    records: list[Record]
    invalid: list[tuple[Record, list[str]]] = field(default_factory=list)
    loaded: int = 0
    unchanged: int = 0

    @property
    def rejected(self) -> list[Record]:
        return [r for r in self.records if r.issues]

    def resources(self, rtype: str | None = None) -> list[dict[str, Any]]:
        return [
            res
            for r in self.records
            if not r.issues
            for res in r.resources
            if rtype is None or res["resourceType"] == rtype
        ]


def make_context(
    path: Path,
    store: ResourceStore,
    tenant: TenantSettings | None = None,
    settings: Settings | None = None,
    name: str | None = None,
) -> ProcessorContext:
    settings = settings or Settings()
    return ProcessorContext(
        settings=settings,
        tenant=tenant or TenantSettings(name="acme"),
        resources=store,
        open_payload=payload_opener(path),
        path=path,
        sniffed=sniff(path),
        name=name or path.name,
    )


def mapped_records(processor: Processor) -> Iterator[Record]:
    """The processor's records with every raw payload turned into resources by its
    ``raw_parser``, as the pipeline's workers do (here, in this process)."""
    for record in processor.records():
        if record.raw is not None:
            assert processor.raw_parser is not None
            resources, issues = processor.raw_parser(record.raw)
            record.raw = None
            record.resources, record.issues = resources, [*record.issues, *issues]
        yield record


def run_file(
    path: Path,
    store: MemoryStore | None = None,
    tenant: TenantSettings | None = None,
    settings: Settings | None = None,
    name: str | None = None,
    write: bool = True,
    validate_resources: bool = True,
    file_sha: str | None = None,
) -> Run:
    """Choose, run, validate and (``write``) store like the pipeline, policy ``record``.
    ``validate_resources=False`` skips FHIR validation where a test only counts (the
    end-to-end tests validate everything through the pipeline)."""
    store = store or MemoryStore()
    context = make_context(path, store.resources, tenant, settings, name)
    cls = choose(context.sniffed, context.tenant)
    assert cls is not None, f"no processor accepts {path.name}"
    processor = cls(context)
    run = Run(processor, [])
    for record in mapped_records(processor):
        run.records.append(record)
        if record.issues:
            continue
        problems = [p for res in record.resources for p in validate(res)] if validate_resources else []
        if problems:
            run.invalid.append((record, problems))
            continue
        if write:
            writes = [
                ResourceWrite(r["resourceType"], r["id"], r, resource_hash(r)) for r in record.resources
            ]
            result = store.resources.upsert(context.tenant.name, writes, file_sha or "sha-of-" + path.name)
            run.loaded += result.loaded
            run.unchanged += result.unchanged
    return run


# -- end-to-end helpers (own names, so they never clash with the shared conftest) ---------------


def zone_settings(zone: Path, config_dir: Path | None = None, **pipeline: Any) -> Settings:
    """Settings for a folder zone; validation in-process unless the test asks for workers."""
    from dropzone.config import load_settings

    settings = load_settings(config_dir=config_dir, env={}, zone=str(zone))
    options: dict[str, Any] = {"validation_workers": 0, "quiet_seconds": 0.0}
    options.update(pipeline)
    return settings.model_copy(update={"pipeline": settings.pipeline.model_copy(update=options)})


def drop_file(zone: Path, tenant: str, source: Path | bytes, name: str) -> Path:
    target = zone / "incoming" / tenant / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(source, bytes):
        target.write_bytes(source)
    else:
        target.write_bytes(source.read_bytes())
    return target


def report_of(zone: Path, result: Any) -> dict[str, Any]:
    import json

    assert result.report, f"{result.name} has no report"
    return json.loads((zone / result.report).read_bytes())
