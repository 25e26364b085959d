"""SynPUF claims are built into EOBs in the pipeline's worker processes (``raw_parser``): the
processor sends each checked claim as a small payload of CSV fields, keeps the facts it needs
(references to count, data notes to warn about) and builds only the file's first claim itself,
to carry the payer Organization. Through real workers the store, the counts and the report must
be what building every EOB in one process gives."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
from csv_helpers import SYNPUF, make_context, report_of
from synpuf_fixtures import COLUMNS, carrier_rows, write_csv

from conftest import drop, make_settings
from dropzone.models import Outcome
from dropzone.pipeline.runner import Pipeline
from dropzone.sources.folder import FolderSource
from dropzone.store.sqlite import SqliteStore
from processors import fhir_json
from processors.csv_claims.claims import map_claim_payload
from processors.csv_claims.synpuf import PROCESSORS, SynpufProcessor

INPATIENT = SYNPUF / "DE1_0_2008_to_2010_Inpatient_Claims_Sample_1.csv"
ORPHAN_CLAIM = "196851176990818"  # a SEGMENT 2 row whose SEGMENT 1 is in no row of the sample


def _inpatient_with_notes(tmp_path: Path) -> Path:
    """Sixty claims of the inpatient sample, one with an impossible date (rejected, so the file
    is partial and has a report), then (not first, so a worker builds them) the orphan segment 2
    and a claim whose CLM_FROM_DT is empty: both load with a warning."""
    lines = INPATIENT.read_text().splitlines(keepends=True)
    header = [c.strip('"') for c in lines[0].strip().split(",")]
    orphan = next(line for line in lines[1:] if line.split(",")[1] == ORPHAN_CLAIM)
    body = [line for line in lines[1:] if line.split(",")[1] != ORPHAN_CLAIM][:60]
    bad = body[30].split(",")
    bad[header.index("CLM_THRU_DT")] = "20090231"
    body[30] = ",".join(bad)
    fields = body[-1].rstrip("\n").split(",")
    fields[header.index("CLM_FROM_DT")] = ""
    fields[header.index("CLM_ID")] = "999000000000001"
    path = tmp_path / "inpatient.csv"
    path.write_text(lines[0] + "".join(body) + orphan + ",".join(fields) + "\n")
    return path


def _source(layout: str, tmp_path: Path) -> Path:
    if layout == "carrier":
        rows = carrier_rows(120)
        rows[50]["CLM_THRU_DT"] = "20090231"  # rejected: the file is partial and has a report
        return write_csv(tmp_path / "car.csv", COLUMNS["carrier"], rows, quote_header=False)
    return _inpatient_with_notes(tmp_path)


def _ingest(zone: Path, source: Path, workers: int) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The stored documents (without meta, which holds times) and the file's report."""
    store = SqliteStore(zone / "store.sqlite")
    drop(zone, "acme", source)
    with Pipeline(make_settings(zone, validation_workers=workers), store, FolderSource(zone)) as pipe:
        [result] = pipe.drain()
    assert result.outcome == Outcome.PARTIAL, result.reason
    stored = {
        f"{rtype}/{doc['id']}": fhir_json.dumps({k: v for k, v in doc.items() if k != "meta"})
        for rtype in ("ExplanationOfBenefit", "Organization")
        for doc in store.resources.iter_resources("acme", rtype)
    }
    store.close()
    report = report_of(zone, result)
    return stored, report


@pytest.mark.parametrize("layout", ["carrier", "inpatient"])
def test_workers_store_and_report_what_one_process_does(
    layout: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _source(layout, tmp_path)
    in_workers, worker_report = _ingest(tmp_path / "two-workers", source, workers=2)
    # Without a raw_parser the processor builds every EOB itself, in this process.
    monkeypatch.setattr(SynpufProcessor, "raw_parser", None)
    here, here_report = _ingest(tmp_path / "one-process", source, workers=0)
    assert in_workers == here
    assert len([k for k in here if k.startswith("ExplanationOfBenefit/")]) >= 60
    assert "Organization/cms" in here  # the payer, from the claim built in this process
    for key in ("counts", "details", "warnings", "quality"):
        assert worker_report[key] == here_report[key], key
    counts = worker_report["counts"]
    assert counts["read"] == counts["loaded"] + counts["unchanged"] + counts["rejected"]
    assert counts["rejected"] == 1
    assert worker_report["rejected_records"] == here_report["rejected_records"]
    if layout == "inpatient":
        codes = [w["code"] for entry in worker_report["warnings"] for w in entry["warnings"]]
        assert codes == ["orphan_segment", "empty_from_date"]
        assert worker_report["details"]["orphan_segment"] == 1
        assert worker_report["details"]["empty_from_date"] == 1


def test_a_claim_travels_as_fields_and_maps_to_the_same_eob(tmp_path: Path) -> None:
    path = _inpatient_with_notes(tmp_path)
    store = SqliteStore(tmp_path / "store.sqlite")
    records = list(PROCESSORS["inpatient"](make_context(path, store.resources)).records())
    store.close()
    first, rest = records[0], records[1:]
    # The first claim is built here and carries the payer; the others go to a worker.
    assert [r["resourceType"] for r in first.resources] == ["ExplanationOfBenefit", "Organization"]
    assert first.raw is None
    rejected = [r for r in rest if r.issues]
    assert [(r.issues[0].code, r.raw) for r in rejected] == [("invalid_date", None)]  # judged here
    sent = [r for r in rest if not r.issues]
    assert sent and all(r.raw is not None and not r.resources for r in sent)
    for record in sent:
        payload = record.raw
        assert 0 < record.raw_size < 4096
        # Plain data: fields as text, no processor, no store.
        resources, issues = map_claim_payload(pickle.loads(pickle.dumps(payload)))
        assert not issues
        assert [r["resourceType"] for r in resources] == ["ExplanationOfBenefit"]
        assert resources[0]["id"].startswith("inpatient-")
    orphan = next(r for r in sent if r.warnings and r.warnings[0].code == "orphan_segment")
    eob = map_claim_payload(orphan.raw)[0][0]
    assert eob["meta"]["tag"][0]["code"] == "orphan-segment"
    assert eob["billablePeriod"] == {"start": "2008-08-27", "end": "2008-10-01"}
