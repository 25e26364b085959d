"""CMS DE-SynPUF processors on the shared samples and on fixtures of our own."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from csv_helpers import OHDSI, SYNPUF, Run, make_context, run_file
from synpuf_fixtures import COLUMNS, carrier_rows, outpatient_rows, pde_rows, write_csv

from dropzone.errors import FileRejected
from dropzone.store.memory import MemoryStore
from processors import fhir_json
from processors.csv_claims.synpuf import PROCESSORS

BENE_FILES = [SYNPUF / f"DE1_0_{year}_Beneficiary_Summary_File_Sample_1.csv" for year in (2008, 2009, 2010)]
INPATIENT = SYNPUF / "DE1_0_2008_to_2010_Inpatient_Claims_Sample_1.csv"
SEGMENTED = {"196851176990818", "196801177000710", "196991176984077"}  # the sample's 2-segment claims


def stored(store: MemoryStore, rtype: str) -> dict[str, dict[str, Any]]:
    docs = store.resources._docs.get(rtype, {})  # type: ignore[attr-defined]
    out = {}
    for doc in docs.values():
        resource = {k: v for k, v in doc.items() if k not in ("_id", "_dz", "meta")}
        out[resource["id"]] = resource
    return out


@pytest.fixture(scope="module")
def loaded() -> tuple[MemoryStore, list[Run]]:
    """The four shared SynPUF files, in file order, into one store (counting only: the
    end-to-end test validates every resource through the pipeline)."""
    store = MemoryStore()
    runs = [run_file(path, store, validate_resources=False) for path in [*BENE_FILES, INPATIENT]]
    return store, runs


def test_shared_sample_counts(loaded: tuple[MemoryStore, list[Run]]) -> None:
    store, runs = loaded
    counts = store.resources.counts()
    assert counts["Patient"] == 2055  # distinct DESYNPUF_IDs across the three yearly files
    assert counts["Coverage"] == 4 * 3 * 2000  # Parts A-D per beneficiary per year present
    assert counts["Observation"] == 3 * 2000  # chronic-condition flags per beneficiary-year
    assert counts["ExplanationOfBenefit"] == 1997  # 2,000 rows, three claims in two segments
    assert counts["Organization"] == 1
    assert all(not run.rejected for run in runs)
    assert [type(run.processor).name for run in runs] == ["synpuf-beneficiary"] * 3 + ["synpuf-inpatient"]


def test_patients_take_the_latest_year(loaded: tuple[MemoryStore, list[Run]]) -> None:
    store, _ = loaded
    patients = stored(store, "Patient")
    years_by_bene: dict[str, set[int]] = {}
    for path, year in zip(BENE_FILES, (2008, 2009, 2010), strict=True):
        for line in path.read_text().splitlines()[1:]:
            years_by_bene.setdefault(line.split(",", 1)[0], set()).add(year)
    for bene, years in years_by_bene.items():
        reference = next(e for e in patients[bene]["extension"] if e["url"].endswith("/rfrnc_yr"))
        assert reference["valueDate"] == str(max(years))


def test_second_ingest_writes_nothing(loaded: tuple[MemoryStore, list[Run]]) -> None:
    store, _ = loaded
    before = store.resources.counts()
    versions = {rtype: _versions(store, rtype) for rtype in before}
    # A different file (sha) with the same rows, e.g. the sender dropped it again re-exported.
    again = [
        run_file(path, store, validate_resources=False, file_sha="resent")
        for path in [*BENE_FILES, INPATIENT]
    ]
    assert [run.loaded for run in again] == [0, 0, 0, 0]
    assert sum(run.unchanged for run in again) == 3 * 2000 * 6 + 1997 + 4  # + the payer, once a file
    assert store.resources.counts() == before
    assert {rtype: _versions(store, rtype) for rtype in before} == versions


def _versions(store: MemoryStore, rtype: str) -> dict[str, int]:
    docs = store.resources._docs.get(rtype, {})  # type: ignore[attr-defined]
    return {key: doc["_dz"]["version"] for key, doc in docs.items()}


def test_yearly_files_in_any_order_give_the_same_patients(loaded: tuple[MemoryStore, list[Run]]) -> None:
    store, _ = loaded
    other = MemoryStore()
    for path in (BENE_FILES[2], BENE_FILES[0], BENE_FILES[1]):
        run_file(path, other, validate_resources=False)
    assert stored(other, "Patient") == stored(store, "Patient")
    assert stored(other, "Coverage") == stored(store, "Coverage")


def test_death_date_survives_an_older_year_arriving_later() -> None:
    store = MemoryStore()
    run_file(BENE_FILES[1], store, validate_resources=False)  # 2009 first
    died_2009 = {
        p["id"]: p["deceasedDateTime"] for p in stored(store, "Patient").values() if "deceasedDateTime" in p
    }
    assert died_2009
    run_file(BENE_FILES[0], store, validate_resources=False)  # then 2008 (no death dates there)
    patients = stored(store, "Patient")
    for bene, death in died_2009.items():
        assert patients[bene]["deceasedDateTime"] == death
        assert "deceasedBoolean" not in patients[bene]


def test_coverage_and_chronic_conditions_follow_the_mapping(loaded: tuple[MemoryStore, list[Run]]) -> None:
    store, _ = loaded
    coverages = stored(store, "Coverage")
    bene = "00016F745862898F"
    part_a = coverages[f"part-a-{bene}-2009"]
    assert part_a["status"] == "active"
    assert part_a["beneficiary"] == {"reference": f"Patient/{bene}"}
    assert part_a["payor"] == [{"reference": "Organization/cms"}]
    assert part_a["period"] == {"start": "2009-01-01", "end": "2009-12-31"}
    assert {c["value"] for c in part_a["class"]} == {"Medicare", "Part A"}
    urls = {e["url"].rsplit("/", 1)[-1] for e in part_a["extension"]}
    assert {"rfrnc_yr", "a_mo_cnt", "esrd_ind", "medreimb_ip", "benres_ip", "pppymt_ip"} <= urls
    observation = stored(store, "Observation")[f"cc-{bene}-2009"]
    assert len(observation["component"]) == 11
    assert all(isinstance(c["valueBoolean"], bool) for c in observation["component"])


def test_segmented_claims_become_one_eob(loaded: tuple[MemoryStore, list[Run]]) -> None:
    store, runs = loaded
    eobs = stored(store, "ExplanationOfBenefit")
    for claim in SEGMENTED:
        eob = eobs[f"inpatient-{claim}"]
        assert eob["billablePeriod"]["start"]  # from segment 1 (segment 2 has no dates)
        assert "meta" not in eob  # not an orphan
    records = {r.resources[0]["id"]: r for r in runs[3].records if r.resources}
    for claim in SEGMENTED:
        assert records[f"inpatient-{claim}"].location.count("row") == 2
    assert runs[3].processor.report_details().get("orphan_segment") is None


def test_inpatient_eob_matches_the_spec_example(loaded: tuple[MemoryStore, list[Run]]) -> None:
    store, _ = loaded
    eob = stored(store, "ExplanationOfBenefit")["inpatient-196201177000368"]
    assert eob["patient"] == {"reference": "Patient/00016F745862898F"}
    assert eob["billablePeriod"] == {"start": "2009-04-12", "end": "2009-04-18"}
    assert eob["created"] == "2009-04-18"
    assert eob["insurance"] == [
        {"focal": True, "coverage": {"reference": "Coverage/part-a-00016F745862898F-2009"}}
    ]
    assert eob["payment"]["amount"] == {"value": 26000.0, "currency": "USD"}
    assert eob["diagnosis"][0]["diagnosisCodeableConcept"]["coding"][0]["code"] == "1970"
    assert eob["diagnosis"][-1]["type"][0]["coding"][0]["code"] == "admitting"
    assert eob["diagnosis"][-1]["sequence"] == 10
    assert [i["sequence"] for i in eob["item"]] == [1]
    assert len(eob["total"]) == len(eob["adjudication"]) - 1  # every amount, not the status entry
    drg = eob["supportingInfo"][1]["code"]["coding"][0]["code"]
    assert drg == "201"


def test_claims_before_their_beneficiaries_count_unresolved_references() -> None:
    run = run_file(INPATIENT, MemoryStore(), validate_resources=False)
    details = run.processor.report_details()
    assert details["unresolved_patient_references"] == 1997
    assert details["unresolved_coverage_references"] == 1997
    assert len(run.resources("Patient")) == 0  # no stub Patient


def test_unresolved_references_after_the_beneficiaries(loaded: tuple[MemoryStore, list[Run]]) -> None:
    _, runs = loaded
    details = runs[3].processor.report_details()
    # 1,155 inpatient beneficiaries; the first 2,000 rows of each yearly file do not hold all of them
    assert 0 < details["unresolved_patient_references"] < 1997
    assert details["unresolved_coverage_references"] >= details["unresolved_patient_references"]


def _subset(path: Path, tmp_path: Path, keep: int, shuffle: bool) -> Path:
    lines = path.read_text().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    chosen = [r for r in rows if r.split(",")[1] in SEGMENTED] + rows[:keep]
    if shuffle:
        random.Random(7).shuffle(chosen)
    out = tmp_path / ("shuffled.csv" if shuffle else "ordered.csv")
    out.write_text(header + "".join(chosen))
    return out


def test_row_order_does_not_change_the_claims(tmp_path: Path) -> None:
    ordered = run_file(_subset(INPATIENT, tmp_path, 60, False), MemoryStore())
    shuffled = run_file(_subset(INPATIENT, tmp_path, 60, True), MemoryStore())
    assert not ordered.invalid and not shuffled.invalid
    by_id = {r["id"]: r for r in ordered.resources("ExplanationOfBenefit")}
    assert {r["id"]: r for r in shuffled.resources("ExplanationOfBenefit")} == by_id
    assert len(by_id) == 63


def test_orphan_segment_two_still_gives_the_eob(tmp_path: Path) -> None:
    lines = INPATIENT.read_text().splitlines(keepends=True)
    second = next(line for line in lines[1:] if line.split(",")[1] == "196851176990818")
    path = tmp_path / "orphan.csv"
    path.write_text(lines[0] + second)
    run = run_file(path, MemoryStore())
    assert not run.rejected and not run.invalid
    eob = run.resources("ExplanationOfBenefit")[0]
    assert eob["id"] == "inpatient-196851176990818"
    assert eob["meta"]["tag"][0]["code"] == "orphan-segment"
    assert eob["billablePeriod"] == {"start": "2008-08-27", "end": "2008-10-01"}  # admission -> discharge
    assert run.records[0].warnings[0].code == "orphan_segment"
    assert run.processor.report_details()["orphan_segment"] == 1


def _mutated(tmp_path: Path, edits: list[tuple[int, str, str | None]]) -> Path:
    """The first rows of the inpatient sample with field edits (row number, column, value;
    None drops the last field to make the row ragged)."""
    lines = INPATIENT.read_text().splitlines()
    header = [c.strip('"') for c in lines[0].split(",")]
    rows = [line.split(",") for line in lines[1:21]]
    for number, column, value in edits:
        if value is None:
            rows[number - 1].pop()
        else:
            rows[number - 1][header.index(column)] = value
    path = tmp_path / "edited.csv"
    path.write_text("\n".join([lines[0], *(",".join(r) for r in rows)]) + "\n")
    return path


def test_row_errors_name_row_and_column_never_the_value(tmp_path: Path) -> None:
    path = _mutated(
        tmp_path,
        [
            (2, "", None),
            (3, "CLM_THRU_DT", "20090231"),
            (4, "CLM_PMT_AMT", "12O0.00"),
            (5, "CLM_ID", ""),
            (6, "DESYNPUF_ID", ""),
            (7, "CLM_ADMSN_DT", "2009-04-12"),
            (8, "SEGMENT", "3"),
        ],
    )
    run = run_file(path, MemoryStore())
    rejected = {r.index: r for r in run.rejected}
    assert sorted(rejected) == [2, 3, 4, 5, 6, 7, 8]
    expected = {
        2: ("field_count", None),
        3: ("invalid_date", "CLM_THRU_DT"),
        4: ("invalid_number", "CLM_PMT_AMT"),
        5: ("missing_value", "CLM_ID"),
        6: ("missing_value", "DESYNPUF_ID"),
        7: ("invalid_date", "CLM_ADMSN_DT"),
        8: ("invalid_integer", "SEGMENT"),
    }
    for number, (code, column) in expected.items():
        issue = rejected[number].issues[0]
        assert (issue.code, issue.path) == (code, column)
        assert rejected[number].location.startswith(f"row {number} ")
        for secret in ("20090231", "12O0.00", "2009-04-12", "00016F745862898F"):
            assert secret not in issue.message
    assert len(run.resources("ExplanationOfBenefit")) == 13
    assert not run.invalid


def test_empty_from_date_on_a_single_segment_claim_loads_with_a_warning(tmp_path: Path) -> None:
    run = run_file(_mutated(tmp_path, [(1, "CLM_FROM_DT", "")]), MemoryStore())
    record = run.records[0]
    assert not record.issues
    assert record.warnings[0].code == "empty_from_date"
    assert record.resources[0]["billablePeriod"] == {"end": "2009-04-18"}
    assert not run.invalid


def test_claim_without_any_date_is_rejected(tmp_path: Path) -> None:
    run = run_file(
        _mutated(tmp_path, [(1, "CLM_FROM_DT", ""), (1, "CLM_THRU_DT", ""), (1, "NCH_BENE_DSCHRG_DT", "")])
    )
    issue = run.records[0].issues[0]
    assert (issue.code, issue.path) == ("missing_value", "CLM_THRU_DT")


def test_a_bad_segment_rejects_its_whole_claim(tmp_path: Path) -> None:
    lines = INPATIENT.read_text().splitlines(keepends=True)
    rows = [line for line in lines[1:] if line.split(",")[1] == "196851176990818"]
    bad = rows[0].replace("20080827", "20081327")  # segment 2's admission date
    path = tmp_path / "claim.csv"
    path.write_text(lines[0] + bad + rows[1])
    run = run_file(path, MemoryStore())
    assert len(run.records) == 1
    record = run.records[0]
    assert record.issues and record.issues[0].message.startswith("row 1 ")
    buffer = __import__("io").BytesIO()
    run.processor.write_rejects({record.index}, buffer)
    assert buffer.getvalue() == (lines[0] + bad + rows[1]).encode()


# -- carrier, outpatient and PDE --------------------------------------------------------------------


def test_ohdsi_rows_map_to_valid_eobs() -> None:
    store = MemoryStore()
    runs = {path.name: run_file(path, store) for path in sorted((OHDSI / "DE_0").glob("*.csv"))}
    for name, run in runs.items():
        assert not run.rejected and not run.invalid, name
    counts = store.resources.counts()
    assert counts["ExplanationOfBenefit"] == 2 + 2 + 1 + 1 + 2  # IP, OP, carrier A, carrier B, PDE
    assert counts["Patient"] == 2


def test_same_rows_under_other_names_are_recognised_by_header() -> None:
    names = {
        path.stem: type(run_file(path, MemoryStore()).processor).name
        for path in (OHDSI / "input").glob("*.csv")
    }
    assert names == {
        "beneficiary_summary": "synpuf-beneficiary",
        "carrier_claims": "synpuf-carrier",
        "inpatient_claims": "synpuf-inpatient",
        "outpatient_claims": "synpuf-outpatient",
        "prescription_drug_events": "synpuf-pde",
    }


def test_year_column_variant_is_handled_and_matches_the_yearly_files() -> None:
    yearly = MemoryStore()
    for year in (2008, 2009, 2010):
        run_file(OHDSI / "DE_0" / f"DE1_0_{year}_Beneficiary_Summary_File_Sample_0.csv", yearly)
    variant = MemoryStore()
    run = run_file(OHDSI / "input" / "beneficiary_summary.csv", variant)
    assert not run.rejected and not run.invalid
    for rtype in ("Patient", "Coverage", "Observation"):
        assert stored(variant, rtype) == stored(yearly, rtype)


def test_beneficiary_file_without_a_year_is_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "beneficiaries.csv"
    path.write_bytes((OHDSI / "DE_0" / "DE1_0_2008_Beneficiary_Summary_File_Sample_0.csv").read_bytes())
    processor = PROCESSORS["beneficiary"](make_context(path, MemoryStore().resources))
    with pytest.raises(FileRejected) as caught:
        list(processor.records())
    assert caught.value.code == "year_unknown"


def test_own_outpatient_fixture(tmp_path: Path) -> None:
    rows, claims = outpatient_rows(120)
    run = run_file(write_csv(tmp_path / "op.csv", COLUMNS["outpatient"], rows), MemoryStore())
    assert not run.rejected and not run.invalid
    eobs = {e["id"]: e for e in run.resources("ExplanationOfBenefit")}
    assert len(eobs) == claims
    two_segments = eobs[f"outpatient-{542192281063886 + 10}"]
    assert any(item["sequence"] == 46 for item in two_segments["item"])  # segment 2's first line
    assert two_segments["billablePeriod"]["start"]


def test_own_carrier_fixture(tmp_path: Path) -> None:
    rows = carrier_rows(80)
    run = run_file(
        write_csv(tmp_path / "car.csv", COLUMNS["carrier"], rows, quote_header=False), MemoryStore()
    )
    assert not run.rejected and not run.invalid
    eobs = run.resources("ExplanationOfBenefit")
    assert len(eobs) == 80
    for eob in eobs:
        paid = sum(
            a["amount"]["value"]
            for item in eob["item"]
            for a in item.get("adjudication", [])
            if a["category"]["coding"][0]["code"] == "benefit"
        )
        assert eob.get("payment", {"amount": {"value": 0}})["amount"]["value"] == pytest.approx(paid)
    no_lines = next(e for e in eobs if e["id"] == f"carrier-{887183386040000}")
    assert no_lines["item"][0]["productOrService"]["coding"][0]["code"] == "not-applicable"


def test_own_pde_fixture(tmp_path: Path) -> None:
    run = run_file(write_csv(tmp_path / "pde.csv", COLUMNS["pde"], pde_rows(60)), MemoryStore())
    assert not run.rejected and not run.invalid
    eobs = {e["id"]: e for e in run.resources("ExplanationOfBenefit")}
    masked = eobs[f"pde-{233004438380000}"]["item"][0]["productOrService"]
    assert masked["coding"][0]["code"] == "masked" and masked["text"] == "OTHER"


def test_repeated_carrier_claim_ids(tmp_path: Path) -> None:
    rows = carrier_rows(5)
    rows.append(dict(rows[1]))  # the same claim again
    rows.append(dict(rows[2], DESYNPUF_ID="0123456789ABCDEF"))  # its id used for another bene
    run = run_file(write_csv(tmp_path / "dup.csv", COLUMNS["carrier"], rows), MemoryStore())
    rejected = {r.index: r.issues[0] for r in run.rejected}
    assert sorted(rejected) == [6, 7]
    assert rejected[6].code == rejected[7].code == "duplicate_claim_id"
    assert "another beneficiary" in rejected[7].message
    assert len(run.resources("ExplanationOfBenefit")) == 5


def test_mapping_is_deterministic(tmp_path: Path) -> None:
    path = _subset(INPATIENT, tmp_path, 300, shuffle=False)
    first = run_file(path, MemoryStore(), write=False, validate_resources=False)
    second = run_file(path, MemoryStore(), write=False, validate_resources=False)
    dump = lambda run: [fhir_json.dumps(r, sort_keys=True) for r in run.resources()]  # noqa: E731
    assert dump(first) == dump(second)
