"""Ingest benchmark: a large NDJSON set through the real pipeline, with two reference points.

Run from the repository root (see bench/README.md)::

    .venv/bin/python bench/ingest_bench.py                 # >= 1,000,000 resources
    .venv/bin/python bench/ingest_bench.py --resources 100000 --skip-naive
    .venv/bin/python bench/ingest_bench.py --resources 20000 --skip-naive --rss-sizes 1G,4G

What it does, in one process, on one data set:

1. builds the set by replicating the shared Synthea Bulk-FHIR sample (7,160 resources) with fresh
   ids: every UUID that is the id of a sample resource is rewritten wherever it occurs (``id``,
   ``Type/<id>`` references, the Synthea identifiers that conditional references use), the same
   way within one replica, so references resolve inside each replica; streamed to disk;
2. parse-only ceiling: read the files and ``orjson.loads`` every line, nothing else;
3. naive loader on a subset: ``json.loads`` + R4B ``model_validate`` + ``upsert`` one resource at
   a time into a MemoryStore, in this process; extrapolated to the full set (said so in the output);
4. the pipeline: ``Pipeline(settings, MemoryStore(), FolderSource(zone)).drain(...)`` with the
   default settings (2 validation processes, batches of 500), file by file so the per-stage
   times (``Pipeline.last_times``) can be summed;
5. re-ingest: the same resources again, re-serialized (top-level keys reversed, a space after
   every ``:`` and ``,``) in new files: same content in other bytes, so not duplicates, and the
   canonical hashes are already stored, so validation is skipped; ``--newline-reingest`` adds the
   older variant (byte-identical lines, one more trailing newline per file);
6. ``--rss-sizes 1G,4G`` (off by default, slow): per size one NDJSON file of replicated Synthea
   Observations with fresh ids, ingested on a fresh zone with the SQLite store in a fresh process,
   whose peak RSS (main + pool) is sampled.

Prints a table, then the issue's targets beside this run's figures ("target >= X: figure (met /
not met)"), and writes ``<out>/results.json``. Times are measured, never asserted.
The files are freshly written, so reads come from the page cache (warm-cache figures).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import math
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import psutil

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO))

from dropzone.config import Settings  # noqa: E402
from dropzone.models import IncomingFile, Outcome  # noqa: E402
from dropzone.pipeline import runner  # noqa: E402
from dropzone.pipeline.canonical import resource_hash  # noqa: E402
from dropzone.pipeline.order import processing_order  # noqa: E402
from dropzone.pipeline.runner import Pipeline  # noqa: E402
from dropzone.sources.base import INCOMING  # noqa: E402
from dropzone.sources.folder import FolderSource  # noqa: E402
from dropzone.store.base import ResourceWrite, Store  # noqa: E402
from dropzone.store.memory import MemoryStore  # noqa: E402
from dropzone.store.sqlite import SqliteStore  # noqa: E402

SAMPLE_NAME = "smart-bulk-fhir-10-patients"
TENANT = "bench"
MB = 1_000_000
# Referenced types first, so a reader scanning the files meets targets before referrers.
TYPE_ORDER = (
    "Organization",
    "Location",
    "Practitioner",
    "PractitionerRole",
    "Patient",
    "Device",
    "Encounter",
    "AllergyIntolerance",
    "Condition",
    "Immunization",
    "MedicationRequest",
    "Procedure",
    "DocumentReference",
)
UUID_RE = re.compile(rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
PREFIX_LEN = 8  # the first UUID group is replaced by the replica number
REFERENCE_RE = re.compile(r'"reference":"([A-Za-z]+)/([^"/]+)"')


# -- sample and templates ----------------------------------------------------------------------------


def default_samples_dir() -> Path:
    """``../shared/samples`` beside the checkout (CI), else the machine-wide copy."""
    beside = REPO.parent / "shared" / "samples"
    return beside if beside.is_dir() else Path("/work/shared/samples")


@dataclass(slots=True)
class Template:
    """One sample line cut at every resource id: ``prefix.join(pieces)`` is the replica's line."""

    pieces: list[bytes]


def load_templates(sample_dir: Path) -> dict[str, list[Template]]:
    files = {p.name.split(".")[0]: p for p in sorted(sample_dir.glob("*.ndjson")) if p.name != "log.ndjson"}
    unknown = sorted(set(files) - set(TYPE_ORDER))
    if unknown:
        raise SystemExit(f"unexpected sample files for types {unknown}: update TYPE_ORDER")
    lines = {
        t: [ln for ln in files[t].read_bytes().splitlines() if ln.strip()] for t in TYPE_ORDER if t in files
    }
    ids = {orjson.loads(ln)["id"].encode() for group in lines.values() for ln in group}
    suffixes = {i[PREFIX_LEN:] for i in ids}
    if len(suffixes) != len(ids) or not all(UUID_RE.fullmatch(i) for i in ids):
        raise SystemExit("sample ids are not distinct UUIDs: the id rewriting here assumes they are")
    templates: dict[str, list[Template]] = {}
    for rtype, group in lines.items():
        out = []
        for line in group:
            pieces, last = [], 0
            for m in UUID_RE.finditer(line):
                if m.group() in ids:
                    pieces.append(line[last : m.start()])
                    last = m.start() + PREFIX_LEN
            pieces.append(line[last:])
            out.append(Template(pieces))
        templates[rtype] = out
    return templates


def replica_prefix(replica: int) -> bytes:
    return b"%08x" % (replica + 1)  # + 1: no replica reuses an id prefix of 0


def check_templates(templates: dict[str, list[Template]]) -> None:
    """Self-check on one replica: fresh, distinct ids and every Type/<id> reference resolving."""
    prefix = replica_prefix(0)
    ids: set[tuple[str, str]] = set()
    refs: list[tuple[str, str]] = []
    for rtype, group in templates.items():
        for t in group:
            line = prefix.join(t.pieces)
            doc = orjson.loads(line)
            if doc["resourceType"] != rtype or not doc["id"].startswith(prefix.decode()):
                raise SystemExit(f"id rewriting failed for a {rtype} line")
            ids.add((rtype, doc["id"]))
            refs.extend(REFERENCE_RE.findall(line.decode()))
    dangling = [r for r in refs if r[1][:PREFIX_LEN] == prefix.decode() and r not in ids]
    if len(ids) != sum(len(g) for g in templates.values()) or dangling:
        raise SystemExit(f"replica check failed: {len(dangling)} rewritten references point nowhere")


# -- data set --------------------------------------------------------------------------------------------


class PartWriter:
    """``<Type>.<part>.ndjson[.gz]`` files of at most ``limit`` lines each."""

    def __init__(self, folder: Path, rtype: str, limit: int, gzipped: bool) -> None:
        self.folder, self.rtype, self.limit, self.gzipped = folder, rtype, limit, gzipped
        self.part, self.lines = -1, 0
        self.fh: BinaryIO | None = None
        self.paths: list[Path] = []

    def _rotate(self) -> BinaryIO:
        self.close()
        self.part += 1
        path = self.folder / f"{self.rtype}.{self.part:03d}.ndjson{'.gz' if self.gzipped else ''}"
        self.paths.append(path)
        raw = path.open("wb")
        # Level 6 is gzip's default, what an exporter would most likely use.
        self.fh = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) if self.gzipped else raw
        self.lines = 0
        return self.fh

    def write(self, line: bytes) -> None:
        fh = self.fh if self.fh is not None and self.lines < self.limit else self._rotate()
        fh.write(line)
        fh.write(b"\n")
        self.lines += 1

    def close(self) -> None:
        if self.fh is not None:
            fileobj = getattr(self.fh, "fileobj", None)
            self.fh.close()
            if fileobj is not None:
                fileobj.close()
            self.fh = None


@dataclass(slots=True)
class Dataset:
    folder: str
    resources: int
    replicas: int
    per_replica: int
    gzip: bool
    file_resources: int
    files: list[str]
    bytes_on_disk: int
    bytes_ndjson: int  # decompressed size
    per_type: dict[str, int]
    sample_fingerprint: str
    generate_seconds: float = 0.0
    reused: bool = False

    def paths(self) -> list[Path]:
        return [Path(self.folder) / f for f in self.files]


def sample_fingerprint(sample_dir: Path) -> str:
    digest = hashlib.sha256()
    for p in sorted(sample_dir.glob("*.ndjson")):
        digest.update(f"{p.name}:{p.stat().st_size};".encode())
    return digest.hexdigest()[:16]


def build_dataset(
    folder: Path, templates: dict[str, list[Template]], replicas: int, gzipped: bool, file_resources: int
) -> Dataset:
    """Stream ``replicas`` copies of the sample into per-type part files (memory: the templates)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.ndjson*"):
        old.unlink()
    writers = {t: PartWriter(folder, t, file_resources, gzipped) for t in templates}
    ndjson_bytes = 0
    started = time.perf_counter()
    try:
        for replica in range(replicas):
            prefix = replica_prefix(replica)
            for rtype, group in templates.items():
                writer = writers[rtype]
                for t in group:
                    line = prefix.join(t.pieces)
                    writer.write(line)
                    ndjson_bytes += len(line) + 1
            if replica % 20 == 19:
                note(f"  generated {replica + 1}/{replicas} replicas")
    finally:
        for w in writers.values():
            w.close()
    paths = [p for t in templates for p in writers[t].paths]
    per_replica = sum(len(g) for g in templates.values())
    return Dataset(
        folder=str(folder),
        resources=replicas * per_replica,
        replicas=replicas,
        per_replica=per_replica,
        gzip=gzipped,
        file_resources=file_resources,
        files=[p.name for p in paths],
        bytes_on_disk=sum(p.stat().st_size for p in paths),
        bytes_ndjson=ndjson_bytes,
        per_type={t: len(g) * replicas for t, g in templates.items()},
        sample_fingerprint="",
        generate_seconds=round(time.perf_counter() - started, 2),
    )


def reusable(manifest: Path, wanted: dict[str, Any]) -> Dataset | None:
    """A data set kept by an earlier ``--keep`` run with the same parameters, if intact."""
    try:
        data = json.loads(manifest.read_text())
        ds = Dataset(**data)
    except (OSError, ValueError, TypeError):
        return None
    if any(getattr(ds, k) != v for k, v in wanted.items()):
        return None
    if (
        not all(p.is_file() for p in ds.paths())
        or sum(p.stat().st_size for p in ds.paths()) != ds.bytes_on_disk
    ):
        return None
    ds.reused = True
    return ds


def open_data(path: Path) -> BinaryIO:
    raw = path.open("rb")
    if path.suffix == ".gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


# -- measuring -------------------------------------------------------------------------------------------


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class RssSampler:
    """Peak resident memory of this process and of its descendants (the validation pool and its
    forkserver), sampled every ``interval`` seconds. The children's RSS is summed, so pages they
    share copy-on-write are counted once per child: an upper bound. Listing the descendants scans
    /proc (~2.5 ms of CPU), so the list is refreshed only every ``refresh`` seconds."""

    def __init__(self, interval: float = 0.25, refresh: float = 2.0) -> None:
        self.interval, self.refresh = interval, refresh
        self.proc = psutil.Process()
        self.children: list[psutil.Process] = []
        self.listed_at = -math.inf
        self.peak_main = self.peak_children = self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        now = time.monotonic()
        if now - self.listed_at >= self.refresh:
            with contextlib.suppress(psutil.Error):
                self.children = self.proc.children(recursive=True)
            self.listed_at = now
        main = self.proc.memory_info().rss
        children = 0
        for child in self.children:
            with contextlib.suppress(psutil.Error):
                children += child.memory_info().rss
        self.peak_main = max(self.peak_main, main)
        self.peak_children = max(self.peak_children, children)
        self.peak_total = max(self.peak_total, main + children)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.listed_at = -math.inf
        self._sample()

    def as_dict(self) -> dict[str, float]:
        return {
            "peak_rss_main_mb": round(self.peak_main / MB, 1),
            "peak_rss_children_mb": round(self.peak_children / MB, 1),
            "peak_rss_total_mb": round(self.peak_total / MB, 1),
        }


def cpu_seconds_children() -> float:
    """CPU time of the live descendants (the pool lives as long as the Pipeline)."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                times = child.cpu_times()
                total += times.user + times.system
    return total


def cpu_seconds_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(slots=True)
class Phase:
    name: str
    resources: int = 0
    seconds: float = 0.0
    bytes_read: int = 0  # NDJSON bytes (decompressed when the files are gzip)
    extrapolated_from: int | None = None
    rss: dict[str, float] = field(default_factory=dict)
    main_cpu_seconds: float = 0.0
    children_cpu_seconds: float = 0.0  # the validation pool (and its forkserver)
    load_average_1min: float = 0.0  # of the whole machine, at the end: other work competes for CPUs
    stages: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return self.resources / self.seconds if self.seconds else 0.0

    @property
    def mb_per_second(self) -> float:
        return self.bytes_read / MB / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["resources_per_second"] = round(self.per_second)
        out["mb_per_second"] = round(self.mb_per_second, 1)
        out["seconds"] = round(self.seconds, 2)
        return out


@contextlib.contextmanager
def measured(phase: Phase) -> Iterator[None]:
    cpu, children_cpu = cpu_seconds_self(), cpu_seconds_children()
    started = time.perf_counter()
    with RssSampler() as rss:
        yield
    phase.seconds = time.perf_counter() - started
    phase.main_cpu_seconds = round(cpu_seconds_self() - cpu, 2)
    phase.children_cpu_seconds = round(cpu_seconds_children() - children_cpu, 2)
    phase.load_average_1min = round(os.getloadavg()[0], 2)
    phase.rss = rss.as_dict()


# -- reference points ------------------------------------------------------------------------------------


def read_only(ds: Dataset) -> Phase:
    """Bytes off the (cached) files, decompressed when gzip: the floor under every other figure."""
    phase = Phase("read only")
    with measured(phase):
        for path in ds.paths():
            with open_data(path) as fh:
                while fh.read(1 << 20):
                    pass
    phase.resources, phase.bytes_read = ds.resources, ds.bytes_ndjson
    return phase


def parse_only(ds: Dataset) -> Phase:
    """The ceiling: read + ``orjson.loads`` per line, nothing kept."""
    phase = Phase("parse-only ceiling")
    count = 0
    loads = orjson.loads
    with measured(phase):
        for path in ds.paths():
            with open_data(path) as fh:
                for line in fh:
                    loads(line)
                    count += 1
    phase.resources, phase.bytes_read = count, ds.bytes_ndjson
    return phase


def subset_lines(ds: Dataset, replicas: int) -> Iterator[bytes]:
    """The first ``replicas`` replicas (same type mix as the whole set), type by type."""
    by_type: dict[str, list[Path]] = {}
    for path in ds.paths():
        by_type.setdefault(path.name.split(".")[0], []).append(path)
    for rtype, paths in by_type.items():
        wanted = ds.per_type[rtype] // ds.replicas * replicas
        for path in paths:
            if wanted == 0:
                break
            with open_data(path) as fh:
                for line in fh:
                    yield line
                    wanted -= 1
                    if wanted == 0:
                        break


def naive(ds: Dataset, subset_resources: int) -> Phase:
    """One resource at a time, one process: stdlib json, R4B validation, one upsert per resource."""
    from fhir.resources.R4B import get_fhir_model_class

    replicas = min(ds.replicas, max(1, math.ceil(subset_resources / ds.per_replica)))
    store = MemoryStore().resources
    stages = {"parse": 0.0, "validate": 0.0, "store": 0.0}
    count = consumed = invalid = 0
    phase = Phase("naive loader")
    clock = time.perf_counter
    get_fhir_model_class("Patient")  # import the models outside the timing, as the pool warm-up does
    with measured(phase):
        for line in subset_lines(ds, replicas):
            t0 = clock()
            doc = json.loads(line)
            t1 = clock()
            try:
                get_fhir_model_class(doc["resourceType"]).model_validate(doc)
            except ValueError:
                invalid += 1
                stages["validate"] += clock() - t1
                continue
            t2 = clock()
            write = ResourceWrite(doc["resourceType"], doc["id"], doc, resource_hash(doc))
            store.upsert(TENANT, [write], None)
            t3 = clock()
            stages["parse"] += t1 - t0
            stages["validate"] += t2 - t1
            stages["store"] += t3 - t2
            count += 1
            consumed += len(line)
    measured_seconds = phase.seconds
    # Extrapolate linearly to the whole set (per-resource cost; the mix is the same).
    phase.extrapolated_from = count + invalid
    phase.resources = ds.resources
    scale = ds.resources / (count + invalid)
    phase.seconds = measured_seconds * scale
    phase.main_cpu_seconds = round(phase.main_cpu_seconds * scale, 2)
    phase.bytes_read = ds.bytes_ndjson
    phase.stages = {k: round(v * scale, 2) for k, v in stages.items()}
    phase.extra = {
        "measured_resources": count + invalid,
        "measured_seconds": round(measured_seconds, 2),
        "measured_resources_per_second": round((count + invalid) / measured_seconds),
        "invalid": invalid,
        "stored": sum(store.counts().values()),
    }
    return phase


# -- the pipeline ---------------------------------------------------------------------------------------


def link_into_zone(paths: list[Path], incoming: Path, rename: str = "") -> None:
    """Hard links when possible: the pipeline moves files out of incoming/, the data set stays."""
    incoming.mkdir(parents=True, exist_ok=True)
    for path in paths:
        dest = incoming / f"{rename}{path.name}"
        try:
            os.link(path, dest)
        except OSError:
            shutil.copyfile(path, dest)


def copies_with_trailing_newline(paths: list[Path], incoming: Path) -> None:
    """New files, same resources: one more newline at the end (for gzip, one more gzip member,
    which decompresses to the same text plus ``\\n``). The pipeline skips blank lines."""
    incoming.mkdir(parents=True, exist_ok=True)
    for path in paths:
        dest = incoming / f"again-{path.name}"
        shutil.copyfile(path, dest)
        with dest.open("ab") as fh:
            fh.write(gzip.compress(b"\n", mtime=0) if path.suffix == ".gz" else b"\n")


# -- re-ingest in other bytes ---------------------------------------------------------------------------

RESERIALIZED_SCHEME = 1  # bump when reserialize() changes, so a kept set is not reused


def reserialize(line: bytes) -> bytes:
    """The same resource in other bytes: top-level keys in reverse order, and a space after every
    ``:`` and ``,`` between tokens (orjson's indented output joined back onto one line; the
    indentation is all that ``strip`` removes, since every piece starts and ends at a token).
    The canonical hash that decides 'unchanged' is the same, but no line, file or prefix is
    byte-identical to what was ingested first: a shortcut on raw bytes cannot help."""
    doc = orjson.loads(line)
    pretty = orjson.dumps(dict(reversed(doc.items())), option=orjson.OPT_INDENT_2)
    return b" ".join(part.strip() for part in pretty.split(b"\n"))


def check_reserialize(templates: dict[str, list[Template]]) -> None:
    """Self-check on the first line of every type: other bytes, one line, same canonical hash."""
    prefix = replica_prefix(0)
    for rtype, group in templates.items():
        line = prefix.join(group[0].pieces)
        again = reserialize(line)
        if (
            again == line
            or b"\n" in again
            or resource_hash(orjson.loads(again)) != resource_hash(orjson.loads(line))
        ):
            raise SystemExit(f"re-serialization self-check failed for a {rtype} line")


@dataclass(slots=True)
class Reserialized:
    folder: str
    files: list[str]
    bytes_ndjson: int  # decompressed size: the spaced lines are longer than the originals
    key: dict[str, Any]  # what it was made from, for reuse by a later --keep run
    seconds: float = 0.0
    reused: bool = False

    def paths(self) -> list[Path]:
        return [Path(self.folder) / f for f in self.files]


def reserialized_key(ds: Dataset) -> dict[str, Any]:
    return {
        "scheme": RESERIALIZED_SCHEME,
        "replicas": ds.replicas,
        "gzip": ds.gzip,
        "file_resources": ds.file_resources,
        "sample_fingerprint": ds.sample_fingerprint,
    }


def reusable_reserialized(folder: Path, ds: Dataset) -> Reserialized | None:
    if not ds.reused:
        return None
    try:
        found = Reserialized(**json.loads((folder / "manifest.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if found.key != reserialized_key(ds) or not all(p.is_file() for p in found.paths()):
        return None
    found.reused = True
    return found


def write_reserialized(ds: Dataset, folder: Path) -> Reserialized:
    """Every file of the data set again, each line re-serialized (outside any timing)."""
    found = reusable_reserialized(folder, ds)
    if found is not None:
        return found
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    total = 0
    for path in ds.paths():
        raw = (folder / path.name).open("wb")
        out: BinaryIO = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) if ds.gzip else raw
        try:
            with open_data(path) as fh:
                for line in fh:
                    again = reserialize(line) + b"\n"
                    out.write(again)
                    total += len(again)
        finally:
            out.close()
            raw.close()
    made = Reserialized(
        str(folder),
        [p.name for p in ds.paths()],
        total,
        reserialized_key(ds),
        round(time.perf_counter() - started, 2),
    )
    (folder / "manifest.json").write_text(json.dumps(asdict(made), indent=2))
    return made


class FileStageClock:
    """Times the two whole-file steps the Pipeline runs before loading: ``sha256_file`` (the
    first full read of the file, for the ledger's content identity) and ``sniff``. They are
    wrapped where ``runner`` looks them up, for the duration of the block; behaviour unchanged."""

    NAMES = ("sha256_file", "sniff")

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(self.NAMES, 0.0)
        self._saved: dict[str, Any] = {}

    def _wrap(self, name: str, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - started

        return timed

    def __enter__(self) -> FileStageClock:
        for name in self.NAMES:
            self._saved[name] = getattr(runner, name)
            setattr(runner, name, self._wrap(name, self._saved[name]))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, fn in self._saved.items():
            setattr(runner, name, fn)


def run_pipeline(name: str, pipeline: Pipeline, source: FolderSource, ndjson_bytes: int) -> Phase:
    """Drain the zone file by file (same code path and order as ``dropzone run --once``),
    summing the per-file stage times the Pipeline exposes in ``last_times``."""
    files: list[IncomingFile] = processing_order(source.list_incoming())
    phase = Phase(name)
    stages = {"parse": 0.0, "hash": 0.0, "validate": 0.0, "store": 0.0}
    counts = {"read": 0, "loaded": 0, "unchanged": 0, "rejected": 0}
    outcomes: dict[str, int] = {}
    with measured(phase), FileStageClock() as clock:
        for n, file in enumerate(files, 1):
            started = time.perf_counter()
            pipeline.last_times = {}
            results = pipeline.drain([file])
            for result in results:
                outcomes[result.outcome.value] = outcomes.get(result.outcome.value, 0) + 1
                for key, value in result.counts.as_dict().items():
                    counts[key] += value
            for key, value in pipeline.last_times.items():
                stages[key] += value
            took = time.perf_counter() - started
            read = sum(r.counts.read for r in results)
            note(f"  [{n}/{len(files)}] {file.name}: {read:,} resources in {took:.1f} s")
    phase.resources = counts["read"]
    phase.bytes_read = ndjson_bytes
    stages = {"read": clock.seconds["sha256_file"], "sniff": clock.seconds["sniff"], **stages}
    phase.stages = {k: round(v, 2) for k, v in stages.items()}
    phase.stages["other"] = round(phase.seconds - sum(stages.values()), 2)
    phase.extra = {"files": len(files), "counts": counts, "outcomes": outcomes}
    if outcomes.get(Outcome.ARCHIVED.value, 0) != len(files):
        note(f"  WARNING: not every file was archived: {outcomes}")
    return phase


# -- peak RSS by input size -----------------------------------------------------------------------------

BUNDLES_NAME = "synthea-r4-transaction-bundles"
SIZE_UNITS = {"K": 10**3, "M": 10**6, "G": 10**9}
RSS_TOLERANCE = 0.10  # the target: the figures within +-10% of each other
# Free disk wanted per input byte: the file, its SQLite store (measured ~1.75 bytes per NDJSON
# byte for these Observations, WAL included) and slack; one size is on disk at a time.
DISK_PER_INPUT_BYTE = 3.0
DISK_MARGIN = 2 * 10**9


def parse_sizes(text: str) -> list[tuple[str, int]]:
    """``1G,4G`` -> [("1G", 10**9), ("4G", 4 * 10**9)]; decimal units K, M, G."""
    sizes = []
    for item in (t.strip().upper() for t in text.split(",") if t.strip()):
        number, unit = (item[:-1], item[-1]) if item[-1] in SIZE_UNITS else (item, "")
        try:
            value = float(number) * SIZE_UNITS.get(unit, 1)
        except ValueError:
            raise SystemExit(f"--rss-sizes: cannot read {item!r} (e.g. 1G,4G or 200M)") from None
        if value < 1:
            raise SystemExit(f"--rss-sizes: {item!r} is not a positive size")
        sizes.append((item, int(value)))
    return sizes


def load_observation_templates(samples: Path) -> list[Template]:
    """The Observations of the Synthea transaction Bundles (the Bulk sample has none), their
    ``urn:uuid:`` references rewritten to ``Type/<id>`` as a Bulk export writes them, cut at the
    first 8 hex digits of their own id so every written line gets a fresh id."""
    from processors.fhir_common import rewrite_references

    bundles = [orjson.loads(p.read_bytes()) for p in sorted((samples / BUNDLES_NAME).glob("*.json"))]
    entries = [e for b in bundles for e in b.get("entry", [])]
    mapping = {
        e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in entries
        if "fullUrl" in e
    }
    templates = []
    for entry in entries:
        if entry["resource"]["resourceType"] != "Observation":
            continue
        resource, _ = rewrite_references(entry["resource"], mapping)
        line = orjson.dumps(resource)
        at = line.index(b'"id":"' + resource["id"].encode()) + len(b'"id":"')
        templates.append(Template([line[:at], line[at + PREFIX_LEN :]]))
    suffixes = {t.pieces[1][: 36 - PREFIX_LEN] for t in templates}
    if not templates or len(suffixes) != len(templates):
        raise SystemExit(
            f"no distinct Observation ids in {samples / BUNDLES_NAME}: cannot build the RSS inputs"
        )
    return templates


def write_observations(path: Path, templates: list[Template], size: int) -> tuple[int, int]:
    """Stream Observations with fresh ids into one NDJSON file until it holds ``size`` bytes
    (a replica of the templates more at most); returns (resources, bytes)."""
    written = count = replica = 0
    with path.open("wb") as fh:
        while written < size:
            prefix = replica_prefix(replica)
            chunk = b"".join(prefix.join(t.pieces) + b"\n" for t in templates)
            fh.write(chunk)
            written += len(chunk)
            count += len(templates)
            replica += 1
    return count, written


def disk_shortfall(folder: Path, sizes: list[tuple[str, int]]) -> str | None:
    """Why the RSS runs cannot fit on the disk of ``folder``, or None."""
    folder.mkdir(parents=True, exist_ok=True)
    need = max(size for _, size in sizes) * DISK_PER_INPUT_BYTE + DISK_MARGIN
    free = shutil.disk_usage(folder).free
    if free >= need:
        return None
    return (
        f"NOT ENOUGH FREE DISK for --rss-sizes: {free / 10**9:,.1f} GB free under {folder}, "
        f"~{need / 10**9:,.1f} GB needed (the largest input, its SQLite store and slack)"
    )


def rss_child(data: Path, zone: Path, result_path: Path, settings: Settings) -> int:
    """Run in a fresh process by ``rss_by_size``: one file through the pipeline on a fresh zone
    and SQLite store, peak RSS of this process and its pool; the figures go to ``result_path``."""
    shutil.rmtree(zone, ignore_errors=True)
    link_into_zone([data], zone / INCOMING / TENANT)
    source = FolderSource(zone)
    store = SqliteStore(zone / ".dropzone" / "dropzone.sqlite")
    try:
        with Pipeline(settings, store, source, worker_id="bench") as pipeline:
            phase = run_pipeline(f"ingest {data.name}", pipeline, source, data.stat().st_size)
        stored = sum(store.resources.counts([TENANT]).values())
    finally:
        store.close()
    store_bytes = sum(p.stat().st_size for p in (zone / ".dropzone").glob("dropzone.sqlite*"))
    result = phase.as_dict() | {
        "stored": stored,
        "store_bytes": store_bytes,
        "ru_maxrss_self_mb": round(ru_maxrss_mb(resource.RUSAGE_SELF), 1),
        "ru_maxrss_children_mb": round(ru_maxrss_mb(resource.RUSAGE_CHILDREN), 1),
    }
    result_path.write_text(json.dumps(result))
    return 0


def child_command(data: Path, zone: Path, result_path: Path, args: argparse.Namespace) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--rss-child", str(data)]
    command += ["--rss-child-zone", str(zone), "--rss-child-result", str(result_path)]
    if args.workers is not None:
        command += ["--workers", str(args.workers)]
    if args.batch_size is not None:
        command += ["--batch-size", str(args.batch_size)]
    return command


def rss_by_size(args: argparse.Namespace, sample_root: Path, out: Path) -> dict[str, Any]:
    """Each size: generate the file, ingest it in a fresh process (so no heap left by another
    phase or size counts), remove both before the next size. The child samples its own RSS."""
    sizes = parse_sizes(args.rss_sizes)
    folder = out / "rss"
    shortfall = disk_shortfall(out, sizes)
    if shortfall is not None:
        note(shortfall)
        return {"skipped": shortfall, "runs": []}
    templates = load_observation_templates(sample_root)
    runs = []
    for label, size in sizes:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        data, zone, result_path = (
            folder / f"Observation.{label}.ndjson",
            folder / "zone",
            folder / "result.json",
        )
        note(f"RSS by size: writing ~{size / 10**9:,.2f} GB of Observations to {data} ...")
        started = time.perf_counter()
        count, written = write_observations(data, templates, size)
        generated = time.perf_counter() - started
        note(
            f"  {count:,} resources, {written / MB:,.0f} MB in {generated:.1f} s; "
            "ingesting in a fresh process ..."
        )
        subprocess.run(child_command(data, zone, result_path, args), check=True)
        run = json.loads(result_path.read_text())
        runs.append(
            {"label": label, "size": size, "bytes": written, "generate_seconds": round(generated, 1), **run}
        )
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return {"skipped": None, "runs": runs}


def rss_ratio(rss: dict[str, Any] | None) -> float | None:
    """Peak RSS (main + pool) of the largest input over that of the smallest."""
    runs = sorted((rss or {}).get("runs", []), key=lambda r: r["size"])
    if len(runs) < 2 or not runs[0]["rss"].get("peak_rss_total_mb"):
        return None
    return runs[-1]["rss"]["peak_rss_total_mb"] / runs[0]["rss"]["peak_rss_total_mb"]


def print_rss(rss: dict[str, Any]) -> None:
    print()
    if rss.get("skipped"):
        print(f"Peak RSS by input size: {rss['skipped']}")
        return
    print("Peak RSS by input size (one NDJSON file of Observations each; SQLite store; fresh zone and")
    print("process each; sampled every 0.25 s; pool = the validation workers and their forkserver):")
    header = (
        f"  {'size':>6}{'resources':>12}{'NDJSON MB':>11}{'ingest s':>10}{'res/s':>9}"
        f"{'peak RSS MB main / pool / total':>34}{'maxrss main':>13}{'store MB':>10}"
    )
    print(header)
    for r in rss["runs"]:
        m = r["rss"]
        peaks = (
            f"{m['peak_rss_main_mb']:,.0f} / {m['peak_rss_children_mb']:,.0f} / {m['peak_rss_total_mb']:,.0f}"
        )
        print(
            f"  {r['label']:>6}{r['resources']:>12,}{r['bytes'] / MB:>11,.0f}{r['seconds']:>10.1f}"
            f"{r['resources_per_second']:>9,}{peaks:>34}{r['ru_maxrss_self_mb']:>13,.0f}"
            f"{r['store_bytes'] / MB:>10,.0f}"
        )
        if r["stored"] != r["resources"] or r["extra"].get("counts", {}).get("rejected"):
            print(
                f"    WARNING: {r['stored']:,} stored of {r['resources']:,}; "
                f"counts {r['extra'].get('counts')}"
            )


# -- targets --------------------------------------------------------------------------------------------

TARGET_INGEST_OVER_PARSE = 0.09  # first ingest res/s over single-core orjson parse-only res/s
TARGET_REINGEST_SPEEDUP = 10.0  # re-ingest (same resources, other bytes) res/s over first ingest res/s


@dataclass(slots=True)
class Target:
    name: str
    target: str
    figure: float | None
    met: bool | None
    why_not: str = ""  # when there is no figure

    def line(self) -> str:
        if self.figure is None:
            return f"{self.name}: target {self.target}: not measured ({self.why_not})"
        return f"{self.name}: target {self.target}: {self.figure:#.3g} ({'met' if self.met else 'not met'})"


def speed_ratio(a: Phase | None, b: Phase | None) -> float | None:
    return a.per_second / b.per_second if a and b and b.per_second else None


def _at_least(name: str, figure: float | None, bar: float, shown: str) -> Target:
    return Target(
        name,
        shown,
        figure,
        figure is not None and figure >= bar,
        "" if figure is not None else "phase missing",
    )


def compute_targets(phases: list[Phase], stores: list[str], rss: dict[str, Any] | None) -> list[Target]:
    by_name = {p.name: p for p in phases}
    parse = by_name.get("parse-only ceiling")
    out = []
    for kind in stores:
        ingest, again = by_name.get(f"ingest {kind}"), by_name.get(f"re-ingest {kind}")
        out.append(
            _at_least(
                f"first ingest ({kind}) / single-core orjson parse-only",
                speed_ratio(ingest, parse),
                TARGET_INGEST_OVER_PARSE,
                f">= {TARGET_INGEST_OVER_PARSE}",
            )
        )
        out.append(
            _at_least(
                f"re-ingest, same resources in other bytes ({kind}) / first ingest",
                speed_ratio(again, ingest),
                TARGET_REINGEST_SPEEDUP,
                f">= {TARGET_REINGEST_SPEEDUP:g}",
            )
        )
    ratio = rss_ratio(rss)
    why = "--rss-sizes not given" if rss is None else rss.get("skipped") or "needs two sizes"
    out.append(
        Target(
            "peak RSS main + pool, largest / smallest --rss-sizes input",
            f"within +-{RSS_TOLERANCE:.0%} (>= {1 - RSS_TOLERANCE:.2f} and <= {1 + RSS_TOLERANCE:.2f})",
            ratio,
            ratio is not None and abs(ratio - 1) <= RSS_TOLERANCE,
            "" if ratio is not None else why,
        )
    )
    return out


def print_targets(targets: list[Target]) -> None:
    print()
    print("Targets of the issue (figures of this run; nothing is asserted):")
    for t in targets:
        print(f"  {t.line()}")


# -- output ---------------------------------------------------------------------------------------------


def fmt_int(n: float) -> str:
    return f"{round(n):,}"


def print_table(ds: Dataset, phases: list[Phase], settings: Settings) -> None:
    size = f"{ds.bytes_on_disk / MB:,.1f} MB" + (
        f" gzip ({ds.bytes_ndjson / MB:,.1f} MB NDJSON)" if ds.gzip else ""
    )
    how = "reused from an earlier --keep run" if ds.reused else f"generated in {ds.generate_seconds:.1f} s"
    print()
    print(
        f"Data set: {ds.resources:,} resources ({ds.replicas} x the {ds.per_replica:,} of the sample) "
        f"in {len(ds.files)} files, {size}, {how}"
    )
    print(
        f"Machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.1f} GiB RAM, "
        f"Python {platform.python_version()}; pipeline: validation_workers="
        f"{settings.pipeline.validation_workers}, batch_size={settings.pipeline.batch_size}"
    )
    loads = ", ".join(f"{p.name} {p.load_average_1min:.1f}" for p in phases)
    print(
        f"Machine load, 1-min average at the end of each phase ({os.cpu_count()} CPUs; this run itself"
        " adds ~1, and ~3 during the pipeline phases: main + 2 workers):"
    )
    print(f"  {loads}")
    print()
    header = (
        f"{'':34}{'resources':>11}{'wall s':>9}{'res/s':>10}{'MB/s*':>8}"
        f"{'CPU s main/pool':>17}{'peak RSS MB main/pool':>23}"
    )
    print(header)
    print("-" * len(header))
    for p in phases:
        label = p.name if p.extrapolated_from is None else f"{p.name} (extrap. from {p.extrapolated_from:,})"
        rss = f"{p.rss.get('peak_rss_main_mb', 0):,.0f} / {p.rss.get('peak_rss_children_mb', 0):,.0f}"
        cpu = f"{p.main_cpu_seconds:,.1f} / {p.children_cpu_seconds:,.1f}"
        print(
            f"{label:34}{fmt_int(p.resources):>11}{p.seconds:>9.1f}{fmt_int(p.per_second):>10}"
            f"{p.mb_per_second:>8.1f}{cpu:>17}{rss:>23}"
        )
    print("* MB/s of NDJSON text (decompressed when the files are gzip), MB = 10^6 bytes")
    print()
    print("Seconds per stage, wall time in the main process. Pipeline: 'read' = the sha256 pass over each")
    print("file, 'parse' = reading again + orjson + shape checks, 'validate' = waiting on the pool,")
    print("'other' = the rest: sending batches to the pool, per-record bookkeeping, ledger, moves,")
    print("starting the pool. 're-ingest <store>' = the same resources re-serialized (other bytes) in")
    print("new files; '+newline' = byte-identical lines in new files (--newline-reingest).")
    for p in phases:
        if p.stages:
            cells = "  ".join(f"{k} {v:,.1f}" for k, v in p.stages.items())
            print(f"  {p.name:32}{cells}")
    for p in phases:
        if p.extra.get("counts"):
            print(f"  {p.name}: counts {p.extra['counts']}, outcomes {p.extra['outcomes']}")
    naive_phase = next((p for p in phases if p.extrapolated_from is not None), None)
    if naive_phase:
        print(
            f"  naive loader: measured {naive_phase.extra['measured_resources']:,} resources in "
            f"{naive_phase.extra['measured_seconds']:.1f} s "
            f"({naive_phase.extra['measured_resources_per_second']:,}/s), time extrapolated linearly"
        )
    print(
        f"  process lifetime max RSS (getrusage): self {ru_maxrss_mb(resource.RUSAGE_SELF):,.0f} MB, "
        f"largest reaped child {ru_maxrss_mb(resource.RUSAGE_CHILDREN):,.0f} MB"
    )


def ru_maxrss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss * 1024 / MB  # Linux reports KiB


# -- main ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--resources",
        type=int,
        default=1_000_000,
        help="at least this many resources (rounded up to whole replicas of the sample)",
    )
    parser.add_argument("--gzip", action="store_true", help="write .ndjson.gz files")
    parser.add_argument(
        "--workers", type=int, default=None, help="validation processes (default: settings, 2)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="pipeline batch size (default: settings, 500)"
    )
    parser.add_argument("--file-resources", type=int, default=100_000, help="resources per NDJSON file")
    parser.add_argument(
        "--naive-resources",
        type=int,
        default=50_000,
        help="subset for the naive loader (rounded up to whole replicas)",
    )
    parser.add_argument("--skip-naive", action="store_true", help="skip the naive loader")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the data set (reused by a later run with the same options) and the zone",
    )
    parser.add_argument(
        "--stores",
        default="sqlite,memory",
        help="stores for the pipeline phases, in this order (SQLite first: its RSS figure is then not "
        "the memory store's leftover heap)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="work folder")
    parser.add_argument("--samples", type=Path, default=None, help="the shared samples folder")
    parser.add_argument(
        "--newline-reingest",
        action="store_true",
        help="also re-ingest byte-identical lines (copies with one more trailing newline)",
    )
    parser.add_argument(
        "--rss-sizes",
        default=None,
        help="e.g. 1G,4G: peak RSS of one NDJSON file of each size (decimal units K/M/G), SQLite "
        "store, fresh process each; slow (see bench/README.md), off by default",
    )
    # Internal: the fresh process that ingests one --rss-sizes file.
    parser.add_argument("--rss-child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rss-child-zone", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rss-child-result", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_sizes:
        parse_sizes(args.rss_sizes)  # fail on a typo now, not after the main phases
    if args.resources < 1 or args.file_resources < 1 or args.naive_resources < 1:
        parser.error("counts must be positive")
    return args


def open_bench_store(kind: str, zone: Path) -> Store:
    """A fresh store of ``kind``; SQLite in the zone, where the service puts it by default."""
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SqliteStore(zone / ".dropzone" / "dropzone.sqlite")
    raise SystemExit(f"unknown store {kind!r} (memory, sqlite)")


def bench_settings(args: argparse.Namespace) -> Settings:
    settings = Settings()
    if args.workers is not None:
        settings.pipeline.validation_workers = args.workers
    if args.batch_size is not None:
        settings.pipeline.batch_size = args.batch_size
    return settings


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = bench_settings(args)
    if args.rss_child is not None:
        return rss_child(args.rss_child, args.rss_child_zone, args.rss_child_result, settings)
    samples_root: Path = args.samples or default_samples_dir()
    sample_dir = samples_root / SAMPLE_NAME
    if not sample_dir.is_dir():
        raise SystemExit(f"sample folder not found: {sample_dir} (use --samples)")
    out: Path = args.out.resolve()
    data_dir, zone = out / ("data-gz" if args.gzip else "data"), out / "zone"
    reser_dir = data_dir.with_name(data_dir.name + "-reserialized")
    if args.rss_sizes:
        shortfall = disk_shortfall(out, parse_sizes(args.rss_sizes))
        if shortfall is not None:  # said up front too, so nobody waits for the main phases to learn it
            note(shortfall + "; the RSS runs will be skipped")

    templates = load_templates(sample_dir)
    check_templates(templates)
    check_reserialize(templates)
    per_replica = sum(len(g) for g in templates.values())
    replicas = math.ceil(args.resources / per_replica)
    fingerprint = sample_fingerprint(sample_dir)
    wanted = {
        "replicas": replicas,
        "gzip": args.gzip,
        "file_resources": args.file_resources,
        "sample_fingerprint": fingerprint,
    }
    manifest = data_dir / "manifest.json"
    ds = reusable(manifest, wanted)
    if ds is None:
        note(f"Generating {replicas * per_replica:,} resources into {data_dir} ...")
        ds = build_dataset(data_dir, templates, replicas, args.gzip, args.file_resources)
        ds.sample_fingerprint = fingerprint
        manifest.write_text(json.dumps(asdict(ds), indent=2))
    del templates

    note("Re-serializing the data set for the re-ingest phases (not timed) ...")
    reser = write_reserialized(ds, reser_dir)
    how = "reused" if reser.reused else f"written in {reser.seconds:.1f} s"
    note(f"  {len(reser.files)} files, {reser.bytes_ndjson / MB:,.1f} MB NDJSON, {how}")

    stores = [k.strip() for k in args.stores.split(",") if k.strip()]
    phases: list[Phase] = []
    rss: dict[str, Any] | None = None
    stored: dict[str, int] = {}
    try:
        note("Read only ...")
        phases.append(read_only(ds))
        note("Parse-only ceiling ...")
        phases.append(parse_only(ds))
        if not args.skip_naive:
            note(f"Naive loader on ~{args.naive_resources:,} resources ...")
            phases.append(naive(ds, args.naive_resources))

        for kind in stores:
            shutil.rmtree(zone, ignore_errors=True)
            incoming = zone / INCOMING / TENANT
            link_into_zone(ds.paths(), incoming)
            source = FolderSource(zone)
            store = open_bench_store(kind, zone)
            try:
                with Pipeline(settings, store, source, worker_id="bench") as pipeline:
                    note(f"Pipeline ingest ({kind}) ...")
                    phases.append(run_pipeline(f"ingest {kind}", pipeline, source, ds.bytes_ndjson))
                    link_into_zone(reser.paths(), incoming, rename="reser-")
                    note(f"Pipeline re-ingest ({kind}: same resources in other bytes, new files) ...")
                    phases.append(run_pipeline(f"re-ingest {kind}", pipeline, source, reser.bytes_ndjson))
                    if args.newline_reingest:
                        copies_with_trailing_newline(ds.paths(), incoming)
                        note(f"Pipeline re-ingest ({kind}: byte-identical lines, new files) ...")
                        name = f"re-ingest {kind} +newline"
                        phases.append(run_pipeline(name, pipeline, source, ds.bytes_ndjson))
                stored[kind] = sum(store.resources.counts([TENANT]).values())
            finally:
                store.close()
            if stored[kind] != ds.resources:
                note(f"  WARNING: {stored[kind]:,} resources stored in {kind}, {ds.resources:,} expected")
        if args.rss_sizes:
            rss = rss_by_size(args, samples_root, out)
    finally:
        if not args.keep:
            shutil.rmtree(zone, ignore_errors=True)
            shutil.rmtree(data_dir, ignore_errors=True)
            shutil.rmtree(reser_dir, ignore_errors=True)

    print_table(ds, phases, settings)
    if rss is not None:
        print_rss(rss)
    targets = compute_targets(phases, stores, rss)
    print_targets(targets)
    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": {
            "validation_workers": settings.pipeline.validation_workers,
            "batch_size": settings.pipeline.batch_size,
            "stores": args.stores,
        },
        "dataset": {k: v for k, v in asdict(ds).items() if k != "files"} | {"file_count": len(ds.files)},
        "stored_resources": stored,
        "reserialized": {
            "bytes_ndjson": reser.bytes_ndjson,
            "seconds": reser.seconds,
            "reused": reser.reused,
        },
        "rss_by_size": rss,
        "targets": [asdict(t) for t in targets],
        "phases": [p.as_dict() for p in phases],
        "max_rss_lifetime_mb": {
            "self": round(ru_maxrss_mb(resource.RUSAGE_SELF), 1),
            "largest_reaped_child": round(ru_maxrss_mb(resource.RUSAGE_CHILDREN), 1),
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nResults written to {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
