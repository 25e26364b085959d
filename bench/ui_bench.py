"""Dashboard benchmark: how long the tenant page (``GET /ui/tenants/{tenant}``) takes to render
over a ledger of 10,000 files.

Run from the repository root (see README, "Operations dashboard")::

    .venv/bin/python bench/ui_bench.py                    # 10,000 files, SQLite, 15 runs each
    .venv/bin/python bench/ui_bench.py --files 2000 --store memory --runs 5 --json

Set-up, before any timing: one tenant whose store holds the Synthea Bulk sample
(``smart-bulk-fhir-10-patients``, ~7,000 resources, loaded through the real pipeline), and
whose ledger then gets ``--files`` file records spread over the last 30 days (80 % archived,
10 % partial and 5 % quarantined, each of those with an error report in the zone, 5 %
duplicate). The page is requested through the FastAPI app in process (``TestClient``, so the
HTTP stack but no socket) with a signed-in session cookie:

* ``cold``: the dashboard's cache emptied before each request, so the page reads the newest
  10,000 ledger records for the per-day chart and 200 error reports for the rejects by reason,
  and starts the reference report and the quality profile over every resource in the
  background (it waits for them up to ``SCAN_WAIT``, 0.1 s, then answers without them);
* ``cold until shown``: from that request until a refresh of the page shows both scans;
* ``warm``: the tenant has not changed since the previous request (what an open dashboard's
  5-second refresh costs): the newest 50 records, the store counts and the template.

Prints the median (and min/max) of each; the target is a median under 300 ms for the pages
(the scans have none: they grow with the tenant's resources and run off the request path). Figures, never
assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO))

from dropzone.api.app import create_app  # noqa: E402
from dropzone.api.tenant_files import add_tenant  # noqa: E402
from dropzone.config import load_settings  # noqa: E402
from dropzone.pipeline.runner import Pipeline  # noqa: E402
from dropzone.sources.folder import FolderSource  # noqa: E402
from dropzone.store.base import Store  # noqa: E402
from dropzone.store.memory import MemoryStore  # noqa: E402
from dropzone.store.sqlite import SqliteStore  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

TENANT = "acme"
TARGET_MS = 300.0
SAMPLE_NAME = "smart-bulk-fhir-10-patients"
CODES = [
    ("code_not_in_value_set", "Patient.gender"),
    ("invalid_value", "Patient.birthDate"),
    ("unknown_element", "Observation.valueFoo"),
    ("required_element_missing", "Encounter.status"),
    ("invalid_json", ""),
]


def default_samples_dir() -> Path:
    beside = REPO.parent / "shared" / "samples"
    return beside if beside.is_dir() else Path("/work/shared/samples")


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fake_report(name: str, state: str, rng: random.Random) -> bytes:
    rejected = []
    if state == "partial":
        for n in range(rng.randint(1, 5)):
            code, path = rng.choice(CODES)
            error = {"code": code, "message": "bench"} | ({"path": path} if path else {})
            rejected.append(
                {
                    "location": f"line {n + 1}",
                    "index": n + 1,
                    "resourceType": "Patient",
                    "id": f"p{n}",
                    "errors": [error],
                }
            )
    report = {
        "report_version": 1,
        "file": name,
        "tenant": TENANT,
        "outcome": state,
        "counts": {"read": 10, "loaded": 10 - len(rejected), "unchanged": 0, "rejected": len(rejected)},
        "error": {"code": "unsupported_format", "message": "bench"} if state == "quarantined" else None,
        "rejected_records": rejected,
        "rejected_records_omitted": 0,
        "warnings": [],
        "details": {},
        "generated_at": iso(datetime.now(UTC)),
    }
    return orjson.dumps(report)


def fill_ledger(store: Store, source: FolderSource, files: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    for n in range(files):
        roll = rng.random()
        state = (
            "archived"
            if roll < 0.80
            else "partial"
            if roll < 0.90
            else "quarantined"
            if roll < 0.95
            else "duplicate"
        )
        received = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
        name = f"file-{n:05d}.ndjson"
        area = "quarantine" if state in ("partial", "quarantined") else "archived"
        day = received.strftime("%Y/%m/%d")
        report = None
        if state in ("partial", "quarantined"):
            report = source.put_bytes(
                f"{area}/{TENANT}/{day}/{name}.error.json", fake_report(name, state, rng)
            )
        store.ledger.save_file(
            {
                "_id": uuid.uuid4().hex,
                "tenant": TENANT,
                "key": f"incoming/{TENANT}/{name}",
                "name": name,
                "size": rng.randint(1_000, 5_000_000),
                "sha256": uuid.uuid4().hex * 2,
                "state": state,
                "received_at": iso(received),
                "finished_at": iso(received + timedelta(seconds=2)),
                "destination": f"{area}/{TENANT}/{day}/{name}",
                "report": report,
                "counts": {
                    "read": 10,
                    "loaded": 9,
                    "unchanged": 0,
                    "rejected": 1 if state == "partial" else 0,
                },
                "error": {"code": "unsupported_format", "message": "bench"}
                if state == "quarantined"
                else None,
            }
        )


def timed(
    client: TestClient, path: str, runs: int, before: Any = None, settled: list[float] | None = None
) -> list[float]:
    """Milliseconds per GET. ``settled``: also the time until the page shows the background
    scans (polled every 20 ms), waited for before the next run so runs do not overlap."""
    out = []
    for _ in range(runs):
        if before is not None:
            before()
        started = time.perf_counter()
        r = client.get(path)
        out.append((time.perf_counter() - started) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"GET {path} answered {r.status_code}")
        while settled is not None and "scan-pending" in r.text:
            time.sleep(0.02)
            r = client.get(path)
        if settled is not None:
            settled.append((time.perf_counter() - started) * 1000)
    return out


def describe(label: str, ms: list[float], target: bool = True) -> dict[str, float]:
    median = statistics.median(ms)
    spread = f"(min {min(ms):.1f}, max {max(ms):.1f}, {len(ms)} runs)"
    if target:
        met = "met" if median < TARGET_MS else "not met"
        print(f"{label}: target < {TARGET_MS:.0f} ms median: {median:.1f} ms {spread} ({met})")
    else:
        print(f"{label}: median {median:.1f} ms {spread} (no target)")
    return {"median_ms": round(median, 1), "min_ms": round(min(ms), 1), "max_ms": round(max(ms), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10_000, help="ledger file records (default 10,000)")
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument("--runs", type=int, default=15, help="requests per measurement")
    parser.add_argument("--samples", type=Path, default=default_samples_dir())
    parser.add_argument("--no-resources", action="store_true", help="skip loading the Synthea sample")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dropzone-ui-bench-"))
    try:
        config = work / "config"
        issued = add_tenant(config, TENANT)
        settings = load_settings(config, env={"DROPZONE_API__SIGNING_KEY": "b" * 48}, zone=str(work / "zone"))
        settings = settings.model_copy(
            update={"pipeline": settings.pipeline.model_copy(update={"quiet_seconds": 0.0})}
        )
        store: Store = (
            SqliteStore(work / "store" / "dropzone.sqlite") if args.store == "sqlite" else MemoryStore()
        )
        source = FolderSource(work / "zone")
        started = time.perf_counter()
        resources = 0
        if not args.no_resources:
            incoming = work / "zone" / "incoming" / TENANT
            incoming.mkdir(parents=True)
            for path in sorted((args.samples / SAMPLE_NAME).glob("*.ndjson")):
                if path.name != "log.ndjson":
                    shutil.copyfile(path, incoming / path.name)
            with Pipeline(settings, store, source) as pipeline:
                pipeline.drain()
            resources = sum(store.resources.tenant_counts([TENANT]).get(TENANT, {}).values())
        fill_ledger(store, source, args.files)
        print(
            f"set-up: {resources} resources, {args.files} ledger files ({args.store}) "
            f"in {time.perf_counter() - started:.1f} s"
        )
        app = create_app(settings, store, source)
        with TestClient(app) as client:
            r = client.post(
                "/ui/login", data={"client_id": issued.client_id, "client_secret": issued.client_secret}
            )
            if r.status_code != 200 or "dz_ui_session" not in client.cookies:
                raise SystemExit(f"sign-in failed: {r.status_code}")
            path = f"/ui/tenants/{TENANT}"
            client.get(path)  # templates compiled, modules imported

            def empty_cache() -> None:
                app.state.dropzone_ui_cache.clear()

            scans: list[float] = []
            cold = timed(client, path, args.runs, empty_cache, scans)
            warm = timed(client, path, args.runs)
            overview = timed(client, "/ui", args.runs)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"python {platform.python_version()}, load average {load:.2f}")
        figures = {
            "files": args.files,
            "resources": resources,
            "store": args.store,
            "cold": describe("tenant page, cold (cache emptied)", cold),
            "warm": describe("tenant page, warm (refresh, tenant unchanged)", warm),
            "scans_shown": describe(
                "cold page until references and quality are shown (background)", scans, False
            ),
            "overview": describe("tenants overview /ui", overview),
        }
        if args.json:
            print(json.dumps(figures))
        store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
