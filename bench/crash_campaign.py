"""Crash campaign: real ``dropzone run`` processes SIGKILLed at random moments, then drained.

Run from the repository root::

    .venv/bin/python bench/crash_campaign.py                       # 20 kills, 1 worker, 60k resources
    .venv/bin/python bench/crash_campaign.py --workers 2 --seed 7  # two processes, killed alternately

What it does:

1. builds 12 NDJSON files (``<Type>.000.ndjson`` and ``<Type>.001.ndjson`` for six types) from the
   shared Synthea Bulk-FHIR sample, replicated with fresh ids; some resources of each ``.000`` file
   are sent again in the ``.001`` file of the same type, half with the same content and half with
   a changed ``meta.tag`` (valid R4, a different canonical hash);
2. starts ``dropzone run`` (1 or 2 processes) on a folder zone with the default SQLite store and
   kills one process with SIGKILL at seeded random moments, restarting it each time;
3. drains the zone with ``dropzone run --once --json`` until ``incoming/`` is empty;
4. checks, by reading the zone and the SQLite database directly: every file archived exactly once,
   one document per distinct (type, id), version count == distinct contents sent, one final ledger
   record per file with exact counts, every claim finished and moved, and no process left behind.

Exit code 1 if any check failed. Nothing about speed is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson

from dropzone.store import packing
from dropzone.store.base import with_server_meta

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO))

from dropzone.store.sqlite import SqliteStore  # noqa: E402

# ../shared/samples next to the checkout (the layout of our machines and CI), else the usual place.
SAMPLES = next(
    (
        folder / "smart-bulk-fhir-10-patients"
        for folder in (REPO.parent / "shared" / "samples", Path("/work/shared/samples"))
        if folder.is_dir()
    ),
    REPO.parent / "shared" / "samples" / "smart-bulk-fhir-10-patients",
)
TENANT = "crash"
# Six types, two files each, so every type can send some ids in both of its files.
TYPES = ("Procedure", "Encounter", "Condition", "Patient", "MedicationRequest", "DocumentReference")
SHARED_FRACTION = 0.05  # of each .000 file, sent again in the .001 file
LEASE_SECONDS = 2.0  # short, so a killed worker's file is taken over within the campaign
KILL_WINDOW = (0.3, 3.0)  # seconds after the previous kill (or the start)
DRAIN_ATTEMPTS = 10
ORPHAN_WAIT_SECONDS = 10.0
SECOND_COPY_TAG = {"system": "urn:dropzone:crash-campaign", "code": "second-copy"}


# -- input ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Expected:
    """What the store and the zone must hold once every file is processed."""

    files: dict[str, int] = field(default_factory=dict)  # file name -> lines
    # (type, id) -> digests of the distinct contents it was sent with
    contents: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    identical_repeats: int = 0  # ids sent twice with the same content
    changed_repeats: int = 0  # ids sent twice with different content

    @property
    def lines(self) -> int:
        return sum(self.files.values())


def content_digest(resource: dict[str, Any]) -> str:
    """Digest of what a resource says, without the server-assigned meta fields.

    Written here rather than imported from dropzone.pipeline.canonical so that a change there
    cannot make the campaign agree with the code it checks."""
    doc = dict(resource)
    meta = {k: v for k, v in (doc.pop("meta", None) or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        doc["meta"] = meta
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()


def load_samples(samples: Path = SAMPLES) -> dict[str, list[dict[str, Any]]]:
    return {
        rtype: [orjson.loads(line) for line in (samples / f"{rtype}.000.ndjson").read_bytes().splitlines()]
        for rtype in TYPES
    }


def replicas(samples: list[dict[str, Any]], start_copy: int) -> Iterator[dict[str, Any]]:
    """The samples again and again, each round with fresh ids (FHIR ids: <= 64 chars)."""
    copy = start_copy
    while True:
        for sample in samples:
            yield {**sample, "id": f"{sample['id'][:40]}-{copy}"}
        copy += 1


def changed_copy(resource: dict[str, Any]) -> dict[str, Any]:
    """The same resource with one more meta.tag: valid R4, a different content."""
    meta = dict(resource.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SECOND_COPY_TAG]
    return {**resource, "meta": meta}


def _interleave(
    own: list[dict[str, Any]], extra: list[dict[str, Any]], rng: random.Random
) -> list[dict[str, Any]]:
    """``own`` with ``extra`` spread at random positions, so a kill anywhere can meet a repeat."""
    slots = sorted(rng.sample(range(len(own) + len(extra)), len(extra)))
    out, extra_iter, own_iter = [], iter(extra), iter(own)
    taken = set(slots)
    for pos in range(len(own) + len(extra)):
        out.append(next(extra_iter) if pos in taken else next(own_iter))
    return out


def _type_files(
    rtype: str, samples: list[dict[str, Any]], per_file: int, rng: random.Random, expected: Expected
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    stream = replicas(samples, 0)
    first = [next(stream) for _ in range(per_file)]
    shared = rng.sample(first, max(2, round(per_file * SHARED_FRACTION)))
    repeats = []
    for n, resource in enumerate(shared):
        if n % 2:
            repeats.append(changed_copy(resource))
            expected.changed_repeats += 1
        else:
            repeats.append(resource)
            expected.identical_repeats += 1
    second = _interleave([next(stream) for _ in range(per_file - len(repeats))], repeats, rng)
    return first, second


def _write_ndjson(path: Path, resources: list[dict[str, Any]], expected: Expected) -> None:
    with path.open("wb") as out:
        for resource in resources:
            out.write(orjson.dumps(resource) + b"\n")
            key = (resource["resourceType"], resource["id"])
            expected.contents.setdefault(key, set()).add(content_digest(resource))
    expected.files[path.name] = len(resources)


def build_input(folder: Path, n_resources: int, seed: int, samples: Path = SAMPLES) -> Expected:
    """12 files in ``folder`` holding ~``n_resources`` lines; returns what they must load to."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    per_file = max(50, n_resources // (2 * len(TYPES)))
    expected = Expected()
    pairs = {
        rtype: _type_files(rtype, rows, per_file, rng, expected)
        for rtype, rows in load_samples(samples).items()
    }
    # The watcher takes files oldest first: the .001 files come six files after their .000, so a
    # repeat is usually stored long after its first copy, and often across a kill.
    order = [(rtype, 0) for rtype in TYPES] + [(rtype, 1) for rtype in TYPES]
    base = time.time() - 3600
    for index, (rtype, part) in enumerate(order):
        path = folder / f"{rtype}.{part:03d}.ndjson"
        _write_ndjson(path, pairs[rtype][part], expected)
        os.utime(path, (base + index, base + index))
    return expected


# -- processes -----------------------------------------------------------------------------------


def service_env(lease_seconds: float = LEASE_SECONDS) -> dict[str, str]:
    """The caller's environment without any dropzone/MongoDB setting, plus the campaign's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DROPZONE_", "MONGODB_"))}
    env.update(
        DROPZONE_PIPELINE__QUIET_SECONDS="0",
        DROPZONE_PIPELINE__LEASE_SECONDS=str(lease_seconds),
        DROPZONE_PIPELINE__BATCH_SIZE="200",
        # A file skipped as busy (a dead worker's lease) is looked at again after 1 s, not the
        # default 30 s, so resumes happen during the campaign and not only in the drain.
        DROPZONE_PIPELINE__RESCAN_SECONDS="1",
        PYTHONPATH=str(REPO),
    )
    return env


def _command(zone: Path, once: bool) -> list[str]:
    cmd = [sys.executable, "-m", "dropzone", "--log-format", "json", "--log-level", "DEBUG", "run"]
    return [*cmd, "--zone", str(zone), *(["--once", "--json"] if once else [])]


class Worker:
    """One ``dropzone run`` process; its stderr is parsed in a thread (the pipe never fills) and
    copied to a log file."""

    def __init__(self, zone: Path, cwd: Path, log_path: Path) -> None:
        self.log_path = log_path
        self.batches = 0
        self.finished: list[str] = []
        self.claimed: list[str] = []
        self.last_event = ""
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            _command(zone, once=False),
            cwd=cwd,
            env=service_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(target=self._read, name=f"stderr-{self.proc.pid}", daemon=True)
        self._reader.start()

    @property
    def in_progress(self) -> list[str]:
        """Keys claimed and not (yet) finished by this process."""
        left = Counter(self.claimed)
        left.subtract(self.finished)
        return sorted(k for k, n in left.items() if n > 0)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        with self.log_path.open("wb") as log:
            for raw in self.proc.stderr:
                log.write(raw)
                self._note(raw)

    def _note(self, raw: bytes) -> None:
        try:
            entry = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return  # a traceback or rich output: kept in the log file
        name = entry.get("event", "")
        self.last_event = name
        if name == "file.batch":
            self.batches += 1
        elif name == "file.claimed":
            self.claimed.append(entry.get("key", "?"))
        elif name in ("file.finished", "file.move_completed"):
            self.finished.append(entry.get("key", "?"))

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def finish_reading(self) -> None:
        """Wait for the last lines: the pipe closes when the pool processes, which inherited
        it, are gone too (about a second after their parent)."""
        self._reader.join(timeout=ORPHAN_WAIT_SECONDS)

    def stop(self) -> None:
        """SIGTERM: the service releases its lease and exits."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()
        self.finish_reading()


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time in clock ticks), from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), fields[19])
    return table


def descendants(pid: int) -> set[tuple[int, str]]:
    """(pid, start time) of every descendant: the forkserver, resource tracker, pool workers."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _start) in table.items():
        children.setdefault(parent, []).append(child)
    found, todo = set(), list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.add((child, table[child][1]))
        todo.extend(children.get(child, []))
    return found


def _alive(pid: int, start: str) -> bool:
    """Running (not a zombie) and the same process, not a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0] != "Z" and fields[19] == start


def processes_naming(text: str) -> list[int]:
    """Live pids (not this one) whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


# -- the campaign --------------------------------------------------------------------------------


@dataclass(slots=True)
class Kill:
    index: int
    slot: int
    at: float  # seconds since the campaign started
    age: float  # seconds the victim had run
    worker: Worker  # what it logged, read to the end after the kill

    @property
    def pid(self) -> int:
        return self.worker.proc.pid

    @property
    def in_progress(self) -> list[str]:
        return self.worker.in_progress

    def line(self) -> str:
        w = self.worker
        held = ",".join(k.rsplit("/", 1)[-1] for k in w.in_progress) or "-"
        return (
            f"kill {self.index + 1:>2}: worker {self.slot} pid {self.pid} at {self.at:6.2f}s "
            f"(ran {self.age:4.2f}s, {w.batches} batches stored, {len(w.finished)} files finished, "
            f"in progress: {held}, last event: {w.last_event or '-'})"
        )


@dataclass(slots=True)
class CampaignResult:
    seed: int
    workers: int
    kills: list[Kill] = field(default_factory=list)
    drains: list[dict[str, Any]] = field(default_factory=list)  # --once --json summaries
    drain_codes: list[int] = field(default_factory=list)
    self_exits: list[str] = field(default_factory=list)  # workers that ended without being killed
    leftovers: list[str] = field(default_factory=list)  # processes still alive afterwards
    watched_children: int = 0  # child processes of ended workers checked for orphans
    campaign_seconds: float = 0.0
    drain_seconds: float = 0.0

    @property
    def problems(self) -> list[str]:
        out = list(self.self_exits) + list(self.leftovers)
        out += [f"drain exit code {code}" for code in self.drain_codes if code != 0]
        return out


def _spawn(zone: Path, cwd: Path, logs: Path, slot: int, serial: int) -> Worker:
    return Worker(zone, cwd, logs / f"worker{slot}-{serial:02d}.log")


def _kill_one(worker: Worker, index: int, slot: int, t0: float, watched: set[tuple[int, str]]) -> Kill:
    watched.update(descendants(worker.proc.pid))
    worker.kill()
    now = time.monotonic()
    return Kill(index, slot, round(now - t0, 2), round(now - worker.started, 2), worker)


def _check_alive(worker: Worker, result: CampaignResult) -> None:
    """A worker must only end when we end it: anything else is a crash (or a crash loop)."""
    code = worker.proc.poll()
    if code is not None and not any(f"pid {worker.proc.pid} " in e for e in result.self_exits):
        result.self_exits.append(
            f"worker pid {worker.proc.pid} exited by itself with code {code} (log {worker.log_path})"
        )


def _kill_phase(
    zone: Path,
    work: Path,
    kills: int,
    workers: int,
    next_delay: Callable[[], float],
    result: CampaignResult,
    out: TextIO,
) -> set[tuple[int, str]]:
    logs, cwd = work / "logs", work / "cwd"
    logs.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)  # not the repo: its ./config must not be picked up
    watched: set[tuple[int, str]] = set()
    serial = 0
    running = [_spawn(zone, cwd, logs, slot, serial) for slot in range(workers)]
    t0 = time.monotonic()
    for index in range(kills):
        time.sleep(next_delay())
        slot = index % workers  # two workers: killed alternately
        for worker in running:
            _check_alive(worker, result)
        kill = _kill_one(running[slot], index, slot, t0, watched)
        result.kills.append(kill)
        print(f"kill {index + 1:>2}: worker {slot} pid {kill.pid} at {kill.at:.2f}s", file=out, flush=True)
        if index < kills - 1:
            serial += 1
            running[slot] = _spawn(zone, cwd, logs, slot, serial)
    for slot, worker in enumerate(running):
        if worker.proc.poll() is None:  # two workers: the one not killed last
            watched.update(descendants(worker.proc.pid))
            worker.stop()
            print(f"stopped worker {slot} pid {worker.proc.pid} with SIGTERM", file=out, flush=True)
    result.campaign_seconds = round(time.monotonic() - t0, 2)
    for kill in result.kills:
        kill.worker.finish_reading()
        print(kill.line(), file=out, flush=True)
    return watched


def incoming_files(zone: Path) -> list[Path]:
    return sorted(p for p in (zone / "incoming").rglob("*") if p.is_file())


def drain(zone: Path, work: Path, result: CampaignResult, out: TextIO) -> None:
    """``run --once`` until incoming/ is empty. Each attempt waits a lease first: the last
    killed worker's lease may still be live, and a live lease makes ``--once`` skip the file."""
    started = time.monotonic()
    for attempt in range(DRAIN_ATTEMPTS):
        if not incoming_files(zone):
            break
        time.sleep(LEASE_SECONDS + 0.5)
        done = subprocess.run(
            _command(zone, once=True),
            cwd=work / "cwd",
            env=service_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=900,
        )
        (work / "logs" / f"drain-{attempt}.log").write_bytes(done.stderr)
        result.drain_codes.append(done.returncode)
        summary = orjson.loads(done.stdout) if done.stdout.strip() else {}
        result.drains.append(summary)
        names = [f"{f['name']}:{f['outcome']}" for f in summary.get("files", [])]
        print(f"drain {attempt + 1}: exit {done.returncode}, files {names}", file=out, flush=True)
    result.drain_seconds = round(time.monotonic() - started, 2)


def check_orphans(zone: Path, watched: set[tuple[int, str]], result: CampaignResult) -> None:
    """Children of killed workers must die with them (PR_SET_PDEATHSIG, EOF on their pipes)."""
    deadline = time.monotonic() + ORPHAN_WAIT_SECONDS
    while time.monotonic() < deadline:
        alive = [pid for pid, start in watched if _alive(pid, start)] + processes_naming(str(zone))
        if not alive:
            return
        time.sleep(0.2)
    for pid in sorted(set(alive)):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
        except OSError:
            cmd = "?"
        result.leftovers.append(
            f"process {pid} still alive {ORPHAN_WAIT_SECONDS:.0f}s after the campaign: {cmd}"
        )
        # Ours (a descendant of a worker we started): end it so the campaign leaves nothing.
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def run_campaign(
    zone: Path,
    kills: int,
    seed: int,
    workers: int,
    window: tuple[float, float] = KILL_WINDOW,
    out: TextIO = sys.stdout,
) -> CampaignResult:
    """Kill ``workers`` processes ``kills`` times in all, then drain; the zone's incoming/ must
    already hold the input. Work files (logs, the processes' cwd) go beside the zone."""
    work = zone.parent / f"{zone.name}-work"
    rng = random.Random(seed)
    result = CampaignResult(seed=seed, workers=workers)
    watched = _kill_phase(zone, work, kills, workers, lambda: rng.uniform(*window), result, out)
    drain(zone, work, result, out)
    result.watched_children = len(watched)
    check_orphans(zone, watched, result)
    return result


# -- verification --------------------------------------------------------------------------------


@dataclass(slots=True)
class Figures:
    archived_files: int = 0
    resources: int = 0
    versioned: int = 0  # documents with more than one version
    history_rows: int = 0
    ledger_records: int = 0
    loaded: int = 0
    unchanged: int = 0


def _db_path(zone: Path) -> Path:
    return zone / ".dropzone" / "dropzone.sqlite"


def _rows(zone: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    # Read-only: the campaign must not be able to change what it checks.
    conn = sqlite3.connect(f"file:{_db_path(zone)}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _check_zone(zone: Path, expected: Expected) -> list[str]:
    problems = [f"left in incoming/: {p.relative_to(zone)}" for p in incoming_files(zone)]
    problems += [
        f"in quarantine/: {p.relative_to(zone)}"
        for p in sorted((zone / "quarantine").rglob("*"))
        if p.is_file()
    ]
    archived = Counter(p.name for p in (zone / "archived").rglob("*") if p.is_file())
    for name in sorted(set(archived) | set(expected.files)):
        if archived[name] != 1:
            problems.append(f"archived/ holds {name} {archived[name]} times (expected once)")
    return problems


def _stored(zone: Path) -> dict[tuple[str, str], tuple[int, dict[str, Any]]]:
    # body is the resource as received (packed when large); the store adds meta.versionId and
    # lastUpdated from columns.
    sql = "SELECT type, id, version, last_ingested, body FROM resources WHERE tenant = ?"
    return {
        (t, i): (v, with_server_meta(orjson.loads(packing.unpack(b)), v, last))
        for t, i, v, last, b in _rows(zone, sql, (TENANT,))
    }


def _history(zone: Path) -> dict[tuple[str, str], list[int]]:
    found: dict[tuple[str, str], list[int]] = {}
    for t, i, v in _rows(zone, "SELECT type, id, version FROM history WHERE tenant = ?", (TENANT,)):
        found.setdefault((t, i), []).append(v)
    return {key: sorted(versions) for key, versions in found.items()}


def _version_problem(
    key: tuple[str, str], sent: set[str], version: int, doc: dict[str, Any], past: list[int]
) -> str | None:
    """One version per distinct content sent; a repeat of the same content is not a version."""
    version_id = doc.get("meta", {}).get("versionId")
    if (version, version_id, past) != (len(sent), str(len(sent)), list(range(1, len(sent)))):
        return (
            f"{key}: version {version} (versionId {version_id}), history versions {past}, "
            f"sent with {len(sent)} distinct contents"
        )
    if content_digest(doc) not in sent:
        return f"{key}: the stored content is none of the contents sent"
    return None


def _check_resources(zone: Path, expected: Expected) -> list[str]:
    problems = []
    stored, history = _stored(zone), _history(zone)
    missing = sorted(set(expected.contents) - set(stored))
    extra = sorted(set(stored) - set(expected.contents))
    if missing:
        problems.append(f"{len(missing)} resources missing, e.g. {missing[:3]}")
    if extra:
        problems.append(f"{len(extra)} resources not in the input, e.g. {extra[:3]}")
    wrong = [
        problem
        for key, sent in expected.contents.items()
        if key in stored and (problem := _version_problem(key, sent, *stored[key], history.get(key, [])))
    ]
    if wrong:
        problems.append(f"{len(wrong)} resources with a wrong version history, e.g. {wrong[:3]}")
    return problems


def _check_ledger(zone: Path, expected: Expected) -> list[str]:
    problems = []
    store = SqliteStore(_db_path(zone))
    try:
        records = store.ledger.files(TENANT, limit=1000)
        summary = store.ledger.summary()
    finally:
        store.close()
    by_name: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_name.setdefault(record.get("name", "?"), []).append(record)
    for name in sorted(set(by_name) | set(expected.files)):
        problems += _check_records(name, by_name.get(name, []), expected.files.get(name))
    if summary != {TENANT: {"archived": len(expected.files)}}:
        problems.append(
            f"ledger summary {summary}, expected {{{TENANT!r}: {{'archived': {len(expected.files)}}}}}"
        )
    loaded = sum(r.get("counts", {}).get("loaded", 0) for r in records)
    unchanged = sum(r.get("counts", {}).get("unchanged", 0) for r in records)
    # Each id sent twice with the same content is 'unchanged' exactly once, whatever the order.
    if (loaded, unchanged) != (expected.lines - expected.identical_repeats, expected.identical_repeats):
        problems.append(
            f"ledger totals loaded={loaded} unchanged={unchanged}, expected loaded="
            f"{expected.lines - expected.identical_repeats} unchanged={expected.identical_repeats}"
        )
    claims = _rows(zone, "SELECT key, state, outcome, moved FROM claims")
    bad = [c for c in claims if c[1:] != ("done", "archived", 1)]
    if len(claims) != len(expected.files) or bad:
        problems.append(
            f"{len(claims)} claims (expected {len(expected.files)}), unfinished or unmoved: {bad[:3]}"
        )
    return problems


def _check_records(name: str, records: list[dict[str, Any]], lines: int | None) -> list[str]:
    if lines is None:
        return [f"ledger has records for {name}, which was not sent: {[r.get('state') for r in records]}"]
    if len(records) != 1:
        states = [(r.get("state"), r.get("attempt")) for r in records]
        return [f"ledger has {len(records)} records for {name} (state, attempt): {states}"]
    record = records[0]
    counts = record.get("counts") or {}
    read, loaded, unchanged, rejected = (counts.get(k) for k in ("read", "loaded", "unchanged", "rejected"))
    problems = []
    if record.get("state") != "archived":
        problems.append(f"{name}: ledger state {record.get('state')}")
    if read != lines or rejected != 0 or read != (loaded or 0) + (unchanged or 0) + (rejected or 0):
        problems.append(
            f"{name}: counts {counts}, expected read={lines} rejected=0 read=loaded+unchanged+rejected"
        )
    return problems


def verify(zone: Path, expected: Expected) -> list[str]:
    """Every difference between what the zone and store hold and what ``expected`` says."""
    if not _db_path(zone).exists():
        return [f"no store database at {_db_path(zone)}"]
    return _check_zone(zone, expected) + _check_resources(zone, expected) + _check_ledger(zone, expected)


def figures(zone: Path) -> Figures:
    ((resources, versioned),) = _rows(zone, "SELECT count(*), coalesce(sum(version > 1), 0) FROM resources")
    ((history,),) = _rows(zone, "SELECT count(*) FROM history")
    records = [orjson.loads(r[0]) for r in _rows(zone, "SELECT record FROM files")]
    return Figures(
        archived_files=sum(1 for p in (zone / "archived").rglob("*") if p.is_file()),
        resources=resources,
        versioned=versioned,
        history_rows=history,
        ledger_records=len(records),
        loaded=sum((r.get("counts") or {}).get("loaded", 0) for r in records),
        unchanged=sum((r.get("counts") or {}).get("unchanged", 0) for r in records),
    )


# -- command line --------------------------------------------------------------------------------


def _report(
    expected: Expected, result: CampaignResult, fig: Figures, problems: list[str], seconds: float
) -> None:
    busy = sum(1 for k in result.kills if k.in_progress)
    print(
        f"\nfiles: {len(expected.files)} sent, {fig.archived_files} archived; "
        f"ledger records: {fig.ledger_records}\n"
        f"resources: {expected.lines} lines, {len(expected.contents)} distinct (type, id) expected, "
        f"{fig.resources} stored\n"
        f"versions: {expected.changed_repeats} ids sent with 2 contents, {fig.versioned} stored with "
        f"version 2, {fig.history_rows} history rows; {expected.identical_repeats} ids sent twice unchanged\n"
        f"ledger counts: loaded {fig.loaded}, unchanged {fig.unchanged}\n"
        f"kills: {len(result.kills)} ({busy} with a file in progress), workers: {result.workers}, "
        f"drain runs: {len(result.drains)}; child processes checked for orphans: "
        f"{result.watched_children}, left alive: {len(result.leftovers)}\n"
        f"seconds: kill phase {result.campaign_seconds}, drain {result.drain_seconds}, total {seconds:.1f}\n"
        f"problems: {len(problems)}"
    )
    for problem in problems:
        print(f"  - {problem}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    parser.add_argument("--workers", type=int, choices=(1, 2), default=1)
    parser.add_argument("--resources", type=int, default=60_000)
    parser.add_argument(
        "--window",
        type=float,
        nargs=2,
        default=KILL_WINDOW,
        metavar=("LO", "HI"),
        help="seconds between kills, drawn uniformly (default %(default)s)",
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="work in DIR and keep it (default: a temp dir, removed)"
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    print(f"seed {seed} (repeat with --seed {seed}); kills {args.kills}; workers {args.workers}", flush=True)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        return _run(args.keep, args, seed)
    with tempfile.TemporaryDirectory(prefix="crash-campaign-") as tmp:
        return _run(Path(tmp), args, seed)


def _run(base: Path, args: argparse.Namespace, seed: int) -> int:
    zone = base / "zone"
    if zone.exists():
        raise SystemExit(f"{zone} exists: pass an empty --keep folder")
    started = time.monotonic()
    expected = build_input(zone / "incoming" / TENANT, args.resources, seed)
    print(f"input: {len(expected.files)} files, {expected.lines} lines in {zone}", flush=True)
    result = run_campaign(zone, args.kills, seed, args.workers, (args.window[0], args.window[1]))
    problems = result.problems + verify(zone, expected)
    _report(expected, result, figures(zone), problems, time.monotonic() - started)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
