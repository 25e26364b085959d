"""Ingest benchmark: a large NDJSON set through the real pipeline, with two reference points.

Run from the repository root (see bench/README.md)::

    .venv/bin/python bench/ingest_bench.py                 # >= 1,000,000 resources
    .venv/bin/python bench/ingest_bench.py --resources 100000 --skip-naive

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
5. re-ingest: the same files again under new names with one extra trailing newline (new content
   hashes, so not duplicates; unchanged resources, so validation is skipped).

Prints a table and writes ``<out>/results.json``. Times are measured, never asserted.
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
    """Drain the zone file by file (same code path as ``dropzone run --once``), summing the
    per-file stage times the Pipeline exposes in ``last_times``."""
    files: list[IncomingFile] = sorted(source.list_incoming(), key=lambda f: (f.mtime, f.key))
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
    print("starting the pool.")
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
    args = parser.parse_args(argv)
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sample_dir = (args.samples or default_samples_dir()) / SAMPLE_NAME
    if not sample_dir.is_dir():
        raise SystemExit(f"sample folder not found: {sample_dir} (use --samples)")
    out: Path = args.out.resolve()
    data_dir, zone = out / ("data-gz" if args.gzip else "data"), out / "zone"

    settings = Settings()
    if args.workers is not None:
        settings.pipeline.validation_workers = args.workers
    if args.batch_size is not None:
        settings.pipeline.batch_size = args.batch_size

    templates = load_templates(sample_dir)
    check_templates(templates)
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

    phases: list[Phase] = []
    try:
        note("Read only ...")
        phases.append(read_only(ds))
        note("Parse-only ceiling ...")
        phases.append(parse_only(ds))
        if not args.skip_naive:
            note(f"Naive loader on ~{args.naive_resources:,} resources ...")
            phases.append(naive(ds, args.naive_resources))

        stored: dict[str, int] = {}
        for kind in [k.strip() for k in args.stores.split(",") if k.strip()]:
            shutil.rmtree(zone, ignore_errors=True)
            incoming = zone / INCOMING / TENANT
            link_into_zone(ds.paths(), incoming)
            source = FolderSource(zone)
            store = open_bench_store(kind, zone)
            try:
                with Pipeline(settings, store, source, worker_id="bench") as pipeline:
                    note(f"Pipeline ingest ({kind}) ...")
                    phases.append(run_pipeline(f"ingest {kind}", pipeline, source, ds.bytes_ndjson))
                    copies_with_trailing_newline(ds.paths(), incoming)
                    note(f"Pipeline re-ingest ({kind}: same resources, new files) ...")
                    phases.append(run_pipeline(f"re-ingest {kind}", pipeline, source, ds.bytes_ndjson))
                stored[kind] = sum(store.resources.counts([TENANT]).values())
            finally:
                store.close()
            if stored[kind] != ds.resources:
                note(f"  WARNING: {stored[kind]:,} resources stored in {kind}, {ds.resources:,} expected")
    finally:
        if not args.keep:
            shutil.rmtree(zone, ignore_errors=True)
            shutil.rmtree(data_dir, ignore_errors=True)

    print_table(ds, phases, settings)
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
