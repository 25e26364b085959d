"""Validator benchmark: FHIR R4 validation alone, one process, resources per second per core.

Run from the repository root (see bench/README.md)::

    .venv/bin/python bench/validator_bench.py                 # 3 s per measurement, ~30 s
    .venv/bin/python bench/validator_bench.py --seconds 1 --json

Compares the new validator (``dropzone.validation.validate_resource``) with the fhir.resources
R4B one (``dropzone.pipeline.validate_fhir_resources.validate_resource``, or, before that module
exists, ``dropzone.pipeline.validate.validate_resource``); a validator that cannot be imported
is reported as "not available" instead of failing the run. Corpora, all built before any timing:

* ``synthea``: every resource of the Synthea Bulk-FHIR sample (the NDJSON files of
  ``smart-bulk-fhir-10-patients/`` except ``log.ndjson``), parsed once with orjson;
* ``synpuf-eob``: the ExplanationOfBenefit resources the project's SynPUF CSV mapping makes from
  every claims CSV under the shared samples (mostly the 2,000 inpatient rows; the carrier,
  outpatient and PDE samples hold a few rows each);
* ``synpuf-fixtures-eob``: EOBs mapped from generated carrier, outpatient and PDE rows
  (``tests/synpuf_fixtures.py``, seeded), because the shared samples have too few of those
  layouts to say anything about them.

Each measurement repeats passes over its corpus until ``--seconds`` have passed (whole passes)
and only the validation call is inside the timing; before each pass the new validator forgets
the values it found valid (``forget_valid_values``), so a pass sees the corpus as a worker sees a
file, once: within a pass repeated codes are still remembered, ids and dates are not. The orjson
parse-only rate over the same Synthea bytes is the reference the pipeline cannot beat. Figures,
never assertions.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO))

SAMPLE_NAME = "smart-bulk-fhir-10-patients"
SYNPUF_DIRS = ("cms-de-synpuf", "cms-de-synpuf-ohdsi-etl-cms")
FIXTURE_CLAIMS = 1_000  # per generated layout: enough for a stable per-resource figure
# Before the switch the fhir.resources validator lives in validate.py; afterwards validate.py may
# re-export the new one, so the dedicated module is tried first.
FHIR_RESOURCES_MODULES = ("dropzone.pipeline.validate_fhir_resources", "dropzone.pipeline.validate")

Validate = Callable[[dict[str, Any]], list[Any]]


def default_samples_dir() -> Path:
    """``../shared/samples`` beside the checkout, else the machine-wide copy."""
    beside = REPO.parent / "shared" / "samples"
    return beside if beside.is_dir() else Path("/work/shared/samples")


# -- validators ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Validator:
    name: str
    source: str  # the module it came from, or why it is not available
    validate: Validate | None
    # Called before each timed pass: forgets what a validator remembers between resources, so
    # that each pass sees the corpus as a worker sees a file, once.
    fresh: Callable[[], None] | None = None


def load_new() -> Validator:
    try:
        from dropzone.validation import forget_valid_values, validate_resource
    except Exception as err:  # the module may be half-written while it is developed
        return Validator("new", f"not available ({type(err).__name__}: {err})", None)
    return Validator("new", "dropzone.validation", validate_resource, forget_valid_values)


def load_fhir_resources(new: Validate | None) -> Validator:
    errors = []
    for module_name in FHIR_RESOURCES_MODULES:
        try:
            fn = importlib.import_module(module_name).validate_resource
        except Exception as err:  # report, never fail the run
            errors.append(f"{module_name}: {type(err).__name__}")
            continue
        if new is not None and fn is new:
            errors.append(f"{module_name}: re-exports the new validator")
            continue
        return Validator("fhir.resources", module_name, fn)
    return Validator("fhir.resources", f"not available ({'; '.join(errors)})", None)


# -- corpora ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Corpus:
    name: str
    resources: list[dict[str, Any]]
    detail: str


def synthea_lines(samples: Path) -> list[bytes]:
    folder = samples / SAMPLE_NAME
    if not folder.is_dir():
        raise SystemExit(f"sample folder not found: {folder} (use --samples)")
    paths = [p for p in sorted(folder.glob("*.ndjson")) if p.name != "log.ndjson"]
    return [ln for p in paths for ln in p.read_bytes().splitlines() if ln.strip()]


def eobs_from_csv(path: Path) -> list[dict[str, Any]]:
    """The EOBs the pipeline's own processor makes from ``path`` (sniffed and chosen like the
    runner does; nothing is stored, so Patient/Coverage lookups find nothing, which only changes
    the processor's statistics, not the EOBs)."""
    from dropzone.config import Settings, TenantSettings
    from dropzone.pipeline.sniff import sniff
    from dropzone.pipeline.streams import open_payload
    from dropzone.store.memory import MemoryStore
    from processors.base import ProcessorContext
    from processors.registry import choose

    settings, tenant = Settings(), TenantSettings(name="bench")
    limits = settings.pipeline
    sniffed = sniff(path, limits)
    cls = choose(sniffed, tenant)
    if cls is None:
        return []
    context = ProcessorContext(
        settings=settings,
        tenant=tenant,
        resources=MemoryStore().resources,
        open_payload=lambda: open_payload(path, sniffed.gzipped, limits.max_decompressed_bytes),
        path=path,
        sniffed=sniffed,
        name=path.name,
    )
    _tests_importable()
    from csv_helpers import mapped_records  # claims left to the workers are built here, as they do

    return [
        res
        for record in mapped_records(cls(context))
        if not record.issues
        for res in record.resources
        if res.get("resourceType") == "ExplanationOfBenefit"
    ]


def _tests_importable() -> None:
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)


def unique_by_id(resources: Iterator[dict[str, Any]]) -> list[dict[str, Any]]:
    """DE_0/ and input/ of the OHDSI extract hold the same claims: count each EOB once."""
    seen: dict[str, dict[str, Any]] = {}
    for res in resources:
        seen.setdefault(res["id"], res)
    return list(seen.values())


def synpuf_corpus(samples: Path) -> Corpus:
    paths = [p for d in SYNPUF_DIRS for p in sorted((samples / d).rglob("*.csv"))]
    per_file = {p: eobs_from_csv(p) for p in paths}
    eobs = unique_by_id(r for group in per_file.values() for r in group)
    files = sum(1 for group in per_file.values() if group)
    return Corpus("synpuf-eob", eobs, f"{len(eobs):,} distinct EOBs from {files} claims CSV files")


def fixtures_corpus(work: Path) -> Corpus:
    """EOBs from generated carrier/outpatient/PDE rows (tests/synpuf_fixtures.py, seeded)."""
    _tests_importable()
    from synpuf_fixtures import COLUMNS, carrier_rows, outpatient_rows, pde_rows, write_csv

    rows = {
        "carrier": carrier_rows(FIXTURE_CLAIMS),
        "outpatient": outpatient_rows(FIXTURE_CLAIMS)[0],
        "pde": pde_rows(FIXTURE_CLAIMS),
    }
    counts: dict[str, int] = {}
    eobs: list[dict[str, Any]] = []
    for layout, layout_rows in rows.items():
        path = write_csv(work / f"{layout}.csv", COLUMNS[layout], layout_rows)
        made = eobs_from_csv(path)
        counts[layout] = len(made)
        eobs.extend(made)
    detail = ", ".join(f"{n:,} {k}" for k, n in counts.items())
    return Corpus("synpuf-fixtures-eob", eobs, f"generated EOBs: {detail}")


# -- measuring -------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Result:
    validator: str
    corpus: str
    resources: int  # validated in the timed passes
    seconds: float  # wall
    cpu_seconds: float  # this process: the figure per core even if other work shares the machine
    rejected: int  # resources of one pass with at least one issue
    per_second: float = 0.0
    per_cpu_second: float = 0.0
    available: bool = True


def count_rejected(validate: Validate, corpus: list[dict[str, Any]]) -> int:
    """One untimed pass: also the warm-up (model classes are imported and cached lazily)."""
    return sum(1 for res in corpus if validate(res))


def timed_passes(step: Callable[[], int], seconds: float) -> tuple[int, float, float]:
    """Whole passes until ``seconds`` of wall time: (items, wall s, CPU s)."""
    items, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while True:
        items += step()
        wall = time.perf_counter() - wall0
        if wall >= seconds:
            return items, wall, time.process_time() - cpu0


def validation_pass(
    validate: Validate, corpus: list[dict[str, Any]], fresh: Callable[[], None] | None = None
) -> Callable[[], int]:
    def step() -> int:
        if fresh is not None:
            fresh()
        for res in corpus:
            validate(res)
        return len(corpus)

    return step


def parse_pass(lines: list[bytes]) -> Callable[[], int]:
    loads = orjson.loads

    def step() -> int:
        for line in lines:
            loads(line)
        return len(lines)

    return step


def measure(validator: Validator, corpus: Corpus, seconds: float) -> Result:
    if validator.validate is None:
        return Result(validator.name, corpus.name, 0, 0.0, 0.0, 0, available=False)
    rejected = count_rejected(validator.validate, corpus.resources)
    passes = validation_pass(validator.validate, corpus.resources, validator.fresh)
    items, wall, cpu = timed_passes(passes, seconds)
    return Result(
        validator.name,
        corpus.name,
        items,
        wall,
        cpu,
        rejected,
        per_second=items / wall,
        per_cpu_second=items / cpu if cpu else 0.0,
    )


def measure_parse(lines: list[bytes], seconds: float) -> Result:
    items, wall, cpu = timed_passes(parse_pass(lines), seconds)
    return Result(
        "orjson parse-only", "synthea", items, wall, cpu, 0, items / wall, items / cpu if cpu else 0
    )


# -- output ---------------------------------------------------------------------------------------------


def ratio(a: Result | None, b: Result | None) -> float | None:
    if a is None or b is None or not a.available or not b.available or not b.per_second:
        return None
    return a.per_second / b.per_second


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def find(results: list[Result], validator: str, corpus: str) -> Result | None:
    return next((r for r in results if r.validator == validator and r.corpus == corpus), None)


def ratios(results: list[Result], corpora: list[Corpus]) -> dict[str, float | None]:
    parse = find(results, "orjson parse-only", "synthea")
    out: dict[str, float | None] = {}
    for c in corpora:
        out[f"new/fhir.resources {c.name}"] = ratio(
            find(results, "new", c.name), find(results, "fhir.resources", c.name)
        )
    for name in ("new", "fhir.resources"):
        out[f"validate/parse {name} synthea"] = ratio(find(results, name, "synthea"), parse)
    return out


def print_table(validators: list[Validator], corpora: list[Corpus], results: list[Result]) -> None:
    print(f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"1-min load average {os.getloadavg()[0]:.2f} (this run adds ~1)")  # fmt: skip
    for v in validators:
        print(f"  validator {v.name}: {v.source}")
    for c in corpora:
        print(f"  corpus {c.name}: {len(c.resources):,} resources ({c.detail})")
    print()
    header = (
        f"{'validator':20}{'corpus':22}{'resources':>11}{'seconds':>9}{'res/s':>10}"
        f"{'res/CPU s':>11}{'rejected':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        if not r.available:
            print(f"{r.validator:20}{r.corpus:22}{'not available':>40}")
            continue
        rejected = "-" if r.validator == "orjson parse-only" else f"{r.rejected:,}"
        print(
            f"{r.validator:20}{r.corpus:22}{r.resources:>11,}{r.seconds:>9.2f}{r.per_second:>10,.0f}"
            f"{r.per_cpu_second:>11,.0f}{rejected:>10}"
        )
    print("res/s = per wall second in one process (= per core); res/CPU s = per CPU second of it;")
    print("rejected = resources of one pass with at least one issue (0 expected: valid samples)")
    print()
    for name, value in ratios(results, corpora).items():
        print(f"  {name:42} {fmt_ratio(value)}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="wall seconds per measurement (whole passes)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--samples", type=Path, default=None, help="the shared samples folder")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    samples: Path = args.samples or default_samples_dir()
    new = load_new()
    validators = [new, load_fhir_resources(new.validate)]

    lines = synthea_lines(samples)
    with tempfile.TemporaryDirectory(prefix="dz-validator-bench-") as work:
        corpora = [
            Corpus("synthea", [orjson.loads(ln) for ln in lines], f"{SAMPLE_NAME}, log.ndjson skipped"),
            synpuf_corpus(samples),
            fixtures_corpus(Path(work)),
        ]
    # The corpora live for the whole run; freezing them keeps the collector from rescanning
    # them, as a pool worker only ever holds one batch.
    gc.collect()
    gc.freeze()

    results = [measure_parse(lines, args.seconds)]
    for corpus in corpora:
        for v in validators:
            results.append(measure(v, corpus, args.seconds))

    if args.json:
        print(
            json.dumps(
                {
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                    "load_average_1min": round(os.getloadavg()[0], 2),
                    "seconds_per_measurement": args.seconds,
                    "validators": [
                        {"name": v.name, "source": v.source, "available": v.validate is not None}
                        for v in validators
                    ],
                    "corpora": [
                        {"name": c.name, "resources": len(c.resources), "detail": c.detail} for c in corpora
                    ],
                    "results": [asdict(r) for r in results],
                    "ratios": ratios(results, corpora),
                }
            )
        )
    else:
        print_table(validators, corpora, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
