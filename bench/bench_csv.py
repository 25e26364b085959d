"""CSV ingest throughput: rows/s and resources/s for the claims processors.

Builds a large inpatient file by replicating the shared SynPUF sample (every copy gets its own
DESYNPUF_ID and CLM_ID prefix, so no two rows share a claim), then measures:

1. parse only - the stdlib ``csv`` module over a TextIOWrapper, the reader we ship (which also
   keeps each row's text for the rejects file), and pandas ``read_csv(chunksize, dtype=str,
   keep_default_na=False)`` when pandas is installed, to justify the choice of reader;
2. map - the SynPUF inpatient processor's ``records()`` (parse + group + map to FHIR), no
   validation, no store;
3. pipeline - the full path (sniff, map, FHIR R4B validation in the worker pool, MemoryStore
   upsert) through ``Pipeline`` on a folder drop zone.

Usage:  python bench/bench_csv.py [--rows 1000000] [--pipeline-rows 1000000] [--workers 2]
Results print as JSON lines; times depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def samples() -> Path:
    for candidate in (REPO.parent / "shared" / "samples", Path("/work/shared/samples")):
        if candidate.is_dir():
            return candidate
    raise SystemExit("shared samples not found (../shared/samples)")


SAMPLE = samples() / "cms-de-synpuf" / "DE1_0_2008_to_2010_Inpatient_Claims_Sample_1.csv"


def replicate(target: Path, rows: int) -> int:
    """Write ``rows`` data rows (at least) made from the sample; returns the count written."""
    lines = SAMPLE.read_text().splitlines()
    header, body = lines[0], [line.split(",", 2) for line in lines[1:]]
    written = 0
    with target.open("w", encoding="utf-8", newline="") as out:
        out.write(header + "\n")
        copy = 0
        while written < rows:
            prefix = f"{copy:04X}"
            chunk = [f"{prefix}{bene[4:]},{copy:04d}{claim[4:]},{rest}\n" for bene, claim, rest in body]
            take = chunk[: rows - written]
            out.writelines(take)
            written += len(take)
            copy += 1
    return written


def timed(name: str, rows: int, func, resources: int | None = None) -> dict:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    extra = func()
    seconds = time.perf_counter() - started
    result = {"stage": name, "rows": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds)}
    # Peak resident memory of this process so far (validation workers are separate processes).
    result["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    produced = extra if isinstance(extra, int) else resources
    if produced:
        result["resources"] = produced
        result["resources_per_s"] = round(produced / seconds)
    print(json.dumps(result), flush=True)
    return result


def parse_stdlib(path: Path) -> int:
    with path.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
        for _ in csv.reader(text):
            pass
    return 0


def parse_ours(path: Path) -> int:
    from processors.csv_claims.reader import CsvReader

    with path.open("rb") as raw:
        for _ in CsvReader(raw):
            pass
    return 0


def parse_pandas(path: Path) -> int:
    import pandas as pd

    for _ in pd.read_csv(path, chunksize=50_000, dtype=str, keep_default_na=False, na_filter=False):
        pass
    return 0


def map_only(path: Path) -> int:
    sys.path.insert(0, str(REPO / "tests"))
    from csv_helpers import make_context

    from dropzone.store.memory import MemoryStore
    from processors.csv_claims.synpuf import PROCESSORS

    context = make_context(path, MemoryStore().resources)
    return sum(len(r.resources) for r in PROCESSORS["inpatient"](context).records())


def pipeline(path: Path, workers: int) -> int:
    from dropzone.config import load_settings
    from dropzone.pipeline.runner import Pipeline
    from dropzone.sources.folder import FolderSource
    from dropzone.store.memory import MemoryStore

    zone = Path(tempfile.mkdtemp(prefix="dz-bench-csv-"))
    try:
        (zone / "incoming" / "bench").mkdir(parents=True)
        shutil.copyfile(path, zone / "incoming" / "bench" / path.name)
        settings = load_settings(config_dir=None, env={}, zone=str(zone))
        settings = settings.model_copy(
            update={"pipeline": settings.pipeline.model_copy(update={"validation_workers": workers})}
        )
        store = MemoryStore()
        with Pipeline(settings, store, FolderSource(zone)) as pipe:
            (result,) = pipe.drain()
        assert result.outcome.value == "archived", result
        print(json.dumps({"stage": "pipeline-detail", "stage_seconds": pipe.last_times}), flush=True)
        return sum(store.resources.counts().values())
    finally:
        shutil.rmtree(zone, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pipeline-rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--skip", nargs="*", default=[], help="stages to skip: parse map pipeline")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    big = args.out / "inpatient-replicated.csv"
    rows = replicate(big, args.rows)
    print(json.dumps({"file": str(big), "rows": rows, "bytes": big.stat().st_size}), flush=True)
    if "parse" not in args.skip:
        timed("parse-stdlib-csv", rows, lambda: parse_stdlib(big))
        timed("parse-dropzone-reader", rows, lambda: parse_ours(big))
        try:
            import pandas  # noqa: F401
        except ImportError:
            print(json.dumps({"stage": "parse-pandas", "skipped": "pandas not installed"}), flush=True)
        else:
            timed("parse-pandas-chunks", rows, lambda: parse_pandas(big))
    if "map" not in args.skip:
        timed("map-synpuf-inpatient", rows, lambda: map_only(big))
    if "pipeline" not in args.skip:
        small = args.out / "inpatient-pipeline.csv"
        count = replicate(small, args.pipeline_rows)
        timed("pipeline-synpuf-inpatient", count, lambda: pipeline(small, args.workers))


if __name__ == "__main__":
    main()
