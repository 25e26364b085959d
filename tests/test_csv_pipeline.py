"""Claims and mapped CSV files end to end: FolderSource drop zone -> Pipeline -> MemoryStore,
checking outcomes (archived / partial / quarantined / duplicate), reports, rejects and counts."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
from csv_helpers import DATA, OHDSI, REPO, SYNPUF, drop_file, report_of, zone_settings

from dropzone.models import Outcome
from dropzone.pipeline.runner import Pipeline
from dropzone.sources.folder import FolderSource
from dropzone.store.memory import MemoryStore

INPATIENT = SYNPUF / "DE1_0_2008_to_2010_Inpatient_Claims_Sample_1.csv"


@pytest.fixture
def zone(tmp_path: Path) -> Path:
    root = tmp_path / "zone"
    (root / "incoming").mkdir(parents=True)
    return root


def config_dir(tmp_path: Path, tenant_yaml: str) -> Path:
    folder = tmp_path / "config"
    (folder / "tenants").mkdir(parents=True)
    (folder / "tenants" / "acme.yaml").write_text(tenant_yaml)
    shutil.copytree(REPO / "config" / "mappings", folder / "mappings")
    return folder


def drain(zone: Path, store: MemoryStore, config: Path | None = None, **pipeline: object) -> dict:
    with Pipeline(zone_settings(zone, config, **pipeline), store, FolderSource(zone)) as pipe:
        return {r.name: r for r in pipe.drain()}


@pytest.mark.slow
def test_synpuf_sample_loads_and_identical_copies_are_duplicates(zone: Path) -> None:
    originals = sorted(SYNPUF.glob("*.csv"))
    for path in originals:
        drop_file(zone, "acme", path, path.name)
        drop_file(zone, "acme", path, "copy-of-" + path.name)  # dropped together
    store = MemoryStore()
    results = drain(zone, store, validation_workers=2)
    assert len(results) == 8
    for path in originals:
        pair = {results[path.name].outcome, results["copy-of-" + path.name].outcome}
        assert pair == {Outcome.ARCHIVED, Outcome.DUPLICATE}, path.name
    loaded = [r for r in results.values() if r.outcome is Outcome.ARCHIVED]
    assert all(r.counts.rejected == 0 for r in loaded)  # every resource validated as R4
    counts = store.resources.counts(["acme"])
    assert counts["Patient"] == 2055
    assert counts["ExplanationOfBenefit"] == 1997
    assert counts["Coverage"] == 24000
    inpatient = next(r for r in loaded if r.processor == "synpuf-inpatient")
    record = next(f for f in store.ledger.files("acme", limit=20) if f.get("processor") == "synpuf-inpatient")
    assert record["details"]["unresolved_patient_references"] >= 0
    assert inpatient.counts.loaded == 1997
    assert not list((zone / "incoming").rglob("*.csv"))


def test_second_drop_of_the_same_files_writes_nothing(zone: Path) -> None:
    files = sorted((OHDSI / "DE_0").glob("*.csv"))
    for path in files:
        drop_file(zone, "acme", path, path.name)
    store = MemoryStore()
    first = drain(zone, store)
    assert {r.outcome for r in first.values()} == {Outcome.ARCHIVED}
    snapshot = {k: dict(v) for k, v in store.resources._docs.items()}  # type: ignore[attr-defined]
    for path in files:
        drop_file(zone, "acme", path, path.name)
    second = drain(zone, store)
    assert {r.outcome for r in second.values()} == {Outcome.DUPLICATE}
    assert {k: dict(v) for k, v in store.resources._docs.items()} == snapshot  # type: ignore[attr-defined]


def test_other_file_names_and_the_year_variant_load(zone: Path) -> None:
    for path in sorted((OHDSI / "input").glob("*.csv")):
        drop_file(zone, "acme", path, path.name)
    store = MemoryStore()
    results = drain(zone, store)
    assert {r.outcome for r in results.values()} == {Outcome.ARCHIVED}
    assert results["beneficiary_summary.csv"].processor == "synpuf-beneficiary"
    assert store.resources.counts(["acme"])["Patient"] == 2


def _bad_inpatient() -> bytes:
    """The first 20 inpatient rows with four broken ones (rows 3, 6, 10, 12)."""
    lines = INPATIENT.read_bytes().split(b"\n")
    rows = [line.split(b",") for line in lines[1:21]]
    rows[2][4] = b"20090431"  # CLM_THRU_DT: impossible date
    rows[5].pop()  # one field short
    rows[9][6] = b"26,000"  # unquoted comma: one field too many
    rows[11][6] = b"abc"  # CLM_PMT_AMT: not a number
    return b"\n".join([lines[0], *(b",".join(r) for r in rows)]) + b"\n"


def test_bad_rows_make_a_partial_file_with_report_and_rejects(zone: Path) -> None:
    data = _bad_inpatient()
    drop_file(zone, "acme", data, "claims.csv")
    store = MemoryStore()
    result = drain(zone, store)["claims.csv"]
    assert result.outcome is Outcome.PARTIAL
    assert (result.counts.loaded, result.counts.rejected) == (16, 4)
    report = report_of(zone, result)
    items = {item["index"]: item for item in report["rejected_records"]}
    assert sorted(items) == [3, 6, 10, 12]
    assert items[3]["errors"][0]["path"] == "CLM_THRU_DT"
    assert items[12]["errors"][0]["path"] == "CLM_PMT_AMT"
    assert items[6]["errors"][0]["code"] == "field_count"
    assert report["details"]["unresolved_patient_references"] == 16
    text = json.dumps(report)
    for value in ("20090431", "abc", "00016F745862898F", "26,000"):
        assert value not in text  # locations and columns, never values
    rejects = zone / report["rejects_file"]
    lines = data.split(b"\n")
    assert rejects.read_bytes() == b"\n".join([lines[0], lines[3], lines[6], lines[10], lines[12]]) + b"\n"
    assert store.resources.counts(["acme"])["ExplanationOfBenefit"] == 16


def test_policy_file_quarantines_and_loads_nothing(zone: Path, tmp_path: Path) -> None:
    drop_file(zone, "acme", _bad_inpatient(), "claims.csv")
    store = MemoryStore()
    result = drain(zone, store, config_dir(tmp_path, "policy: file\n"))["claims.csv"]
    assert result.outcome is Outcome.QUARANTINED
    assert report_of(zone, result)["error"]["code"] == "policy_file"
    assert store.resources.counts(["acme"]) == {}


def test_unknown_csv_is_quarantined_with_a_clear_reason(zone: Path) -> None:
    drop_file(zone, "acme", b"member,visit_reason\nJane Doe,checkup\n", "mystery.csv")
    result = drain(zone, MemoryStore())["mystery.csv"]
    assert result.outcome is Outcome.QUARANTINED
    error = report_of(zone, result)["error"]
    assert error["code"] == "unknown_csv_layout"
    assert "not recognised" in error["message"] and "Jane" not in error["message"]
    assert result.processor == "csv-unrecognised"


def test_communication_mapping_end_to_end(zone: Path, tmp_path: Path) -> None:
    config = config_dir(tmp_path, "mappings: [outreach-communication]\n")
    drop_file(zone, "acme", DATA / "csv" / "outreach_contacts.csv", "outreach.csv")
    store = MemoryStore()
    result = drain(zone, store, config)["outreach.csv"]
    assert result.outcome is Outcome.PARTIAL
    assert (result.counts.loaded, result.counts.rejected) == (4, 4)
    assert store.resources.counts(["acme"]) == {"Communication": 4}
    report = report_of(zone, result)
    assert report["processor"] == "csv-mapping"
    assert report["details"] == {"mapping": "outreach-communication"}
    assert (zone / report["rejects_file"]).read_bytes().startswith(b"contact_id,member_id")


def test_invalid_mapping_quarantines_with_every_problem(zone: Path, tmp_path: Path) -> None:
    config = config_dir(tmp_path, "mappings: [outreach-communication]\n")
    mapping = config / "mappings" / "outreach-communication.yaml"
    mapping.write_text(mapping.read_text().replace("statusReason.text", "statusReson.text"))
    drop_file(zone, "acme", DATA / "csv" / "outreach_contacts.csv", "outreach.csv")
    result = drain(zone, MemoryStore(), config)["outreach.csv"]
    assert result.outcome is Outcome.QUARANTINED
    error = report_of(zone, result)["error"]
    assert error["code"] == "mapping_error" and "statusReson" in error["message"]


def test_bom_crlf_and_gzip(zone: Path) -> None:
    pde = (OHDSI / "DE_0" / "DE1_0_2008_to_2010_Prescription_Drug_Events_Sample_0.csv").read_bytes()
    crlf = b"\xef\xbb\xbf" + pde.replace(b"\n", b"\r\n")
    drop_file(zone, "acme", gzip.compress(crlf), "pde.csv.gz")
    store = MemoryStore()
    result = drain(zone, store)["pde.csv.gz"]
    assert result.outcome is Outcome.ARCHIVED
    assert store.resources.counts(["acme"])["ExplanationOfBenefit"] == 2


def test_file_in_another_encoding_is_quarantined(zone: Path) -> None:
    latin1 = (DATA / "csv" / "outreach_contacts.csv").read_text().replace("Flu", "Gripe é").encode("latin-1")
    drop_file(zone, "acme", latin1, "latin1.csv")
    result = drain(zone, MemoryStore())["latin1.csv"]
    assert result.outcome is Outcome.QUARANTINED
    assert report_of(zone, result)["error"]["code"] == "unsupported_encoding"


def test_bytes_that_are_not_utf8_late_in_a_file_reject_only_their_rows(zone: Path, tmp_path: Path) -> None:
    config = config_dir(tmp_path, "mappings: [outreach-communication]\n")
    header = b"contact_id,member_id,contact_datetime,channel,outcome\n"
    rows = [b"C-%d,P%d,2024-03-01 09:15,phone,reached\n" % (n, n) for n in range(3000)]  # > 64 KiB head
    rows.append(b"C-x,Jos\xe9,2024-03-01 09:15,phone,reached\n")
    drop_file(zone, "acme", header + b"".join(rows), "late.csv")
    store = MemoryStore()
    result = drain(zone, store, config)["late.csv"]
    assert result.outcome is Outcome.PARTIAL
    assert result.counts.rejected == 1
    item = report_of(zone, result)["rejected_records"][0]
    assert item["errors"][0]["code"] == "encoding" and item["location"].startswith("row 3001 ")
