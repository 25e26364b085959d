"""Tables for analysts: ``dropzone export --format parquet|csv --view NAME`` over real data.

The shared Synthea sample (Bulk NDJSON, plus Observations and EOBs taken out of the Synthea
transaction Bundles), an HL7 Coverage example and SynPUF claims are ingested by the real
``dropzone ingest``; every shipped view is exported by the real ``dropzone export`` and read back
with pandas, and compared with a flattening written here by plain dict walking (not the engine).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from synpuf_fixtures import COLUMNS, carrier_rows, write_csv

from conftest import BULK, HL7, REPO, SAMPLES, SYNTHEA
from dropzone.store.base import ResourceWrite
from dropzone.store.memory import MemoryStore
from dropzone.store.sqlite import SqliteStore
from dropzone.views import (
    UnknownViewError,
    UnsupportedPath,
    ViewDefinitionError,
    ViewEvaluationError,
    export_views,
    find_views,
    load_view,
    stream_view,
)
from dropzone.views.flatten import resource_rows

DROPZONE = shutil.which("dropzone", path=str(Path(sys.executable).parent)) or "dropzone"
SHIPPED = REPO / "config" / "views"
VIEW_NAMES = [
    "condition",
    "coverage",
    "encounter",
    "explanation_of_benefit",
    "medication_request",
    "observation",
    "patient",
]
DE_0 = SAMPLES / "cms-de-synpuf-ohdsi-etl-cms" / "DE_0"
SYNPUF_FILES = [
    DE_0 / "DE1_0_2008_Beneficiary_Summary_File_Sample_0.csv",
    DE_0 / "DE1_0_2008_to_2010_Inpatient_Claims_Sample_0.csv",
    DE_0 / "DE1_0_2008_to_2010_Outpatient_Claims_Sample_0.csv",
    DE_0 / "DE1_0_2008_to_2010_Prescription_Drug_Events_Sample_0.csv",
]
# An observation whose decimal a float would turn into 80.0.
WEIGHT = (
    '{"resourceType":"Observation","id":"weight-1","status":"final","code":{"text":"weight"},'
    '"subject":{"reference":"Patient/p-1"},"valueQuantity":{"value":80.00,"unit":"kg"}}'
)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DROPZONE_", "MONGODB_"))}
    env.update(DROPZONE_PIPELINE__VALIDATION_WORKERS="0", DROPZONE_PIPELINE__QUIET_SECONDS="0")
    return subprocess.run([DROPZONE, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=180)


def exact(raw: str) -> Any:
    """JSON with every non-integer number as its token text, so decimals compare as text."""
    return json.loads(raw, parse_float=str)


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    return [exact(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# -- inputs: NDJSON made from the Synthea Bundles, an HL7 Coverage, SynPUF claims ----------------


def bundle_resources(rtype: str) -> list[dict[str, Any]]:
    """``rtype`` entries of the Synthea transaction Bundles, their ``urn:uuid`` references
    rewritten to ``Type/id`` (as a sender of Bulk NDJSON would have them)."""
    out = []
    for path in sorted(SYNTHEA.glob("*.json")):
        entries = json.loads(path.read_text(encoding="utf-8"))["entry"]
        names = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries}

        def rewrite(node: Any, names: dict[str, str] = names) -> Any:
            if isinstance(node, dict):
                return {
                    k: names.get(v, v) if k == "reference" and isinstance(v, str) else rewrite(v)
                    for k, v in node.items()
                }
            if isinstance(node, list):
                return [rewrite(v) for v in node]
            return node

        out.extend(rewrite(e["resource"]) for e in entries if e["resource"]["resourceType"] == rtype)
    return out


def coverage_resources() -> list[dict[str, Any]]:
    example = json.loads((HL7 / "microsoft-fhir-server" / "coverage-example.json").read_text())
    second = copy.deepcopy(example)
    second.update(
        id="cov-2", order=2, beneficiary={"reference": "Patient/p-2"}, payor=[{"display": "self-pay"}]
    )
    for key in ("period", "class"):
        second.pop(key)
    return [example, second]


def write_ndjson(path: Path, resources: list[dict[str, Any]], extra: tuple[str, ...] = ()) -> Path:
    lines = [json.dumps(r) for r in resources] + list(extra)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class Loaded:
    root: Path
    zone: Path
    config: Path
    inputs: dict[str, list[dict[str, Any]]]  # synthea tenant: resourceType -> input resources
    carrier: list[dict[str, str]]  # claims tenant: the carrier CSV rows
    out: Path

    def parquet(self, tenant: str, view: str) -> Path:
        return self.out / tenant / "parquet" / f"{view}.parquet"

    def csv(self, tenant: str, view: str) -> Path:
        return self.out / tenant / "csv" / f"{view}.csv"

    def stored(self, rtype: str) -> list[dict[str, Any]]:
        """The claims tenant's resources as ``dropzone export`` (NDJSON) wrote them."""
        path = self.out / "claims" / "ndjson" / f"{rtype}.ndjson"
        return read_ndjson(path) if path.exists() else []


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    root = tmp_path_factory.mktemp("views")
    config, zone, out, folder = root / "config", root / "zone", root / "out", root / "inputs"
    shutil.copytree(SHIPPED, config / "views")
    folder.mkdir()
    made = {
        "Observation": bundle_resources("Observation"),
        "ExplanationOfBenefit": bundle_resources("ExplanationOfBenefit"),
        "Coverage": coverage_resources(),
    }
    files = [BULK / f"{t}.000.ndjson" for t in ("Patient", "Encounter", "Condition", "MedicationRequest")]
    files.append(write_ndjson(folder / "Observation.ndjson", made["Observation"], (WEIGHT,)))
    files.append(write_ndjson(folder / "ExplanationOfBenefit.ndjson", made["ExplanationOfBenefit"]))
    files.append(write_ndjson(folder / "Coverage.ndjson", made["Coverage"]))
    inputs = {p.name.split(".")[0]: read_ndjson(p) for p in files}
    carrier = carrier_rows(60)
    claims = [write_csv(folder / "carrier_claims.csv", COLUMNS["carrier"], carrier), *SYNPUF_FILES]

    for tenant, sent in (("synthea", files), ("claims", claims)):
        done = cli("ingest", *map(str, sent), "--tenant", tenant, "--zone", str(zone), "--json", cwd=root)
        assert done.returncode == 0, done.stderr
        assert {f["outcome"] for f in json.loads(done.stdout)["files"]} == {"archived"}
    common = ("--config", str(config), "export", "--zone", str(zone), "--json")
    for tenant, fmt in (
        ("synthea", "parquet"),
        ("synthea", "csv"),
        ("claims", "parquet"),
        ("claims", "ndjson"),
    ):
        views = ("--view", "all") if fmt != "ndjson" else ()
        target = out / tenant / fmt
        done = cli(*common, "--tenant", tenant, "--format", fmt, *views, "--out", str(target), cwd=root)
        assert done.returncode == 0, done.stderr
        if fmt != "ndjson":
            summary = json.loads(done.stdout)
            assert [v["view"] for v in summary["views"]] == VIEW_NAMES
            assert sorted(p.name for p in target.iterdir()) == [f"{v}.{fmt}" for v in VIEW_NAMES]
    return Loaded(root, zone, config, inputs, carrier, out)


# -- the brute-force flattening: plain dict walking, one function per shipped view ---------------


def walk(node: Any, *keys: str) -> list[Any]:
    """Every value at ``keys`` below ``node``, lists flattened at each step."""
    items = [node]
    for key in keys:
        found = []
        for item in items:
            value = item.get(key) if isinstance(item, dict) else None
            found.extend(value if isinstance(value, list) else [] if value is None else [value])
        items = found
    return items


def first(values: list[Any]) -> Any:
    return values[0] if values else None


def text(value: Any) -> str | None:
    """A number as its JSON text (floats are already their token text, see ``exact``)."""
    return None if value is None else str(value)


def ref_id(reference: Any, rtype: str) -> str | None:
    ref = reference.get("reference") if isinstance(reference, dict) else None
    if not isinstance(ref, str) or "?" in ref or ref.startswith("#"):
        return None
    parts = ref.split("/")
    return parts[-1] if len(parts) >= 2 and parts[-2] == rtype else None


def codes_with(items: list[dict[str, Any]], code: str) -> list[dict[str, Any]]:
    return [i for i in items if any(c.get("code") == code for c in walk(i, "category", "coding"))]


US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-"


def brute_patient(r: dict[str, Any]) -> list[dict[str, Any]]:
    official = [n for n in walk(r, "name") if n.get("use") == "official"]
    name = official[0] if official else {}

    def us_core_text(kind: str) -> str | None:
        outer = [e for e in walk(r, "extension") if e.get("url") == US_CORE + kind]
        inner = [e for o in outer for e in walk(o, "extension") if e.get("url") == "text"]
        return first([e["valueString"] for e in inner if "valueString" in e])

    mrn = [
        i["value"]
        for i in walk(r, "identifier")
        if "value" in i and any(c.get("code") == "MR" for c in walk(i, "type", "coding"))
    ]
    return [
        {
            "id": r["id"],
            "mrn": first(mrn),
            "gender": r.get("gender"),
            "birth_date": r.get("birthDate"),
            "deceased": r.get("deceasedBoolean"),
            "deceased_datetime": r.get("deceasedDateTime"),
            "family_name": name.get("family"),
            "given_names": " ".join(name["given"]) if name.get("given") else None,
            "race": us_core_text("race"),
            "ethnicity": us_core_text("ethnicity"),
            "marital_status": first(walk(r, "maritalStatus", "coding", "code")),
            "multiple_birth": r.get("multipleBirthBoolean"),
            "city": first(walk(r, "address", "city")),
            "state": first(walk(r, "address", "state")),
            "postal_code": first(walk(r, "address", "postalCode")),
            "country": first(walk(r, "address", "country")),
            "language": first(walk(r, "communication", "language", "coding", "code")),
        }
    ]


def brute_encounter(r: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "id": r["id"],
            "patient_id": ref_id(r.get("subject"), "Patient"),
            "status": r.get("status"),
            "class_code": first(walk(r, "class", "code")),
            "type_system": first(walk(r, "type", "coding", "system")),
            "type_code": first(walk(r, "type", "coding", "code")),
            "type_display": first(walk(r, "type", "coding", "display")),
            "start": first(walk(r, "period", "start")),
            "end": first(walk(r, "period", "end")),
            "reason_code": first(walk(r, "reasonCode", "coding", "code")),
            "reason_display": first(walk(r, "reasonCode", "coding", "display")),
            "discharge_disposition": first(
                walk(r, "hospitalization", "dischargeDisposition", "coding", "code")
            ),
            "service_provider_id": ref_id(r.get("serviceProvider"), "Organization"),
            "service_provider_reference": first(walk(r, "serviceProvider", "reference")),
        }
    ]


def brute_condition(r: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "id": r["id"],
            "patient_id": ref_id(r.get("subject"), "Patient"),
            "encounter_id": ref_id(r.get("encounter"), "Encounter"),
            "clinical_status": first(walk(r, "clinicalStatus", "coding", "code")),
            "verification_status": first(walk(r, "verificationStatus", "coding", "code")),
            "category": first(walk(r, "category", "coding", "code")),
            "code_system": first(walk(r, "code", "coding", "system")),
            "code": first(walk(r, "code", "coding", "code")),
            "code_display": first(walk(r, "code", "coding", "display")),
            "code_text": first(walk(r, "code", "text")),
            "onset_datetime": r.get("onsetDateTime"),
            "abatement_datetime": r.get("abatementDateTime"),
            "recorded_date": r.get("recordedDate"),
        }
    ]


def brute_observation(r: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "id": r["id"],
            "patient_id": ref_id(r.get("subject"), "Patient"),
            "encounter_id": ref_id(r.get("encounter"), "Encounter"),
            "status": r.get("status"),
            "category": first(walk(r, "category", "coding", "code")),
            "code_system": first(walk(r, "code", "coding", "system")),
            "code": first(walk(r, "code", "coding", "code")),
            "code_display": first(walk(r, "code", "coding", "display")),
            "effective_datetime": r.get("effectiveDateTime"),
            "issued": r.get("issued"),
            "value_quantity": text(first(walk(r, "valueQuantity", "value"))),
            "value_unit": first(walk(r, "valueQuantity", "unit")),
            "value_code": first(walk(r, "valueCodeableConcept", "coding", "code")),
            "value_display": first(walk(r, "valueCodeableConcept", "coding", "display")),
            "value_string": r.get("valueString"),
            "value_boolean": r.get("valueBoolean"),
            "component_count": len(walk(r, "component")),
        }
    ]


def brute_medication_request(r: dict[str, Any]) -> list[dict[str, Any]]:
    dosage = first(walk(r, "dosageInstruction")) or {}
    repeat = dosage.get("timing", {}).get("repeat", {})
    reasons = [k for k in (ref_id(x, "Condition") for x in walk(r, "reasonReference")) if k]
    return [
        {
            "id": r["id"],
            "patient_id": ref_id(r.get("subject"), "Patient"),
            "encounter_id": ref_id(r.get("encounter"), "Encounter"),
            "status": r.get("status"),
            "intent": r.get("intent"),
            "category": first(walk(r, "category", "coding", "code")),
            "medication_system": first(walk(r, "medicationCodeableConcept", "coding", "system")),
            "medication_code": first(walk(r, "medicationCodeableConcept", "coding", "code")),
            "medication_display": first(walk(r, "medicationCodeableConcept", "coding", "display")),
            "medication_id": ref_id(r.get("medicationReference"), "Medication"),
            "authored_on": r.get("authoredOn"),
            "requester_reference": first(walk(r, "requester", "reference")),
            "reason_condition_id": first(reasons),
            "dose_quantity": text(first(walk(dosage, "doseAndRate", "doseQuantity", "value"))),
            "frequency": repeat.get("frequency"),
            "period": text(repeat.get("period")),
            "period_unit": repeat.get("periodUnit"),
            "as_needed": dosage.get("asNeededBoolean"),
        }
    ]


def brute_coverage(r: dict[str, Any]) -> list[dict[str, Any]]:
    def class_value(code: str) -> str | None:
        return first(
            [
                c["value"]
                for c in walk(r, "class")
                if "value" in c and code in walk(c, "type", "coding", "code")
            ]
        )

    payors = [k for k in (ref_id(p, "Organization") for p in walk(r, "payor")) if k]
    return [
        {
            "id": r["id"],
            "status": r.get("status"),
            "beneficiary_id": ref_id(r.get("beneficiary"), "Patient"),
            "subscriber_id": r.get("subscriberId"),
            "type_system": first(walk(r, "type", "coding", "system")),
            "type_code": first(walk(r, "type", "coding", "code")),
            "relationship": first(walk(r, "relationship", "coding", "code")),
            "period_start": first(walk(r, "period", "start")),
            "period_end": first(walk(r, "period", "end")),
            "payor_id": first(payors),
            "payor_reference": first(walk(r, "payor", "reference")),
            "group": class_value("group"),
            "plan": class_value("plan"),
            "order": r.get("order"),
        }
    ]


BB = "https://bluebutton.cms.gov/resources/variables/"
LINE_AMOUNTS = {
    "line_submitted_amount": "line_sbmtd_chrg_amt",
    "line_allowed_amount": "line_alowd_chrg_amt",
    "line_payment_amount": "line_nch_pmt_amt",
    "line_provider_payment_amount": "line_prvdr_pmt_amt",
    "line_deductible_amount": "line_bene_ptb_ddctbl_amt",
    "line_coinsurance_amount": "line_coinsrnc_amt",
    "patient_paid_amount": "ptnt_pay_amt",
    "drug_cost_amount": "tot_rx_cst_amt",
}


def brute_explanation_of_benefit(r: dict[str, Any]) -> list[dict[str, Any]]:
    claim = {
        "eob_id": r["id"],
        "claim_id": first([i["value"] for i in walk(r, "identifier") if i.get("system") == BB + "clm_id"]),
        "patient_id": ref_id(r.get("patient"), "Patient"),
        "status": r.get("status"),
        "claim_type": first(
            [
                c["code"]
                for c in walk(r, "type", "coding")
                if c.get("system") == "http://terminology.hl7.org/CodeSystem/claim-type" and "code" in c
            ]
        ),
        "billable_start": first(walk(r, "billablePeriod", "start")),
        "billable_end": first(walk(r, "billablePeriod", "end")),
        "created": r.get("created"),
        "provider_reference": first(walk(r, "provider", "reference")),
        "coverage_reference": first(
            [
                i["coverage"]["reference"]
                for i in walk(r, "insurance")
                if i.get("focal") is True and "reference" in i.get("coverage", {})
            ]
        ),
        "claim_payment_amount": text(first(walk(r, "payment", "amount", "value"))),
    }
    rows = []
    for item in walk(r, "item"):
        line = {
            "line_sequence": item.get("sequence"),
            "product_system": first(walk(item, "productOrService", "coding", "system")),
            "product_code": first(walk(item, "productOrService", "coding", "code")),
            "serviced_date": item.get("servicedDate"),
            "serviced_start": first(walk(item, "servicedPeriod", "start")),
            "serviced_end": first(walk(item, "servicedPeriod", "end")),
            "quantity": text(first(walk(item, "quantity", "value"))),
            "net_amount": text(first(walk(item, "net", "value"))),
        }
        for column, variable in LINE_AMOUNTS.items():
            adjudications = codes_with(walk(item, "adjudication"), BB + variable)
            line[column] = text(first([v for a in adjudications for v in walk(a, "amount", "value")]))
        rows.append({**claim, **line})
    return rows


BRUTE: dict[str, tuple[str, Callable[[dict[str, Any]], list[dict[str, Any]]]]] = {
    "patient": ("Patient", brute_patient),
    "encounter": ("Encounter", brute_encounter),
    "condition": ("Condition", brute_condition),
    "observation": ("Observation", brute_observation),
    "medication_request": ("MedicationRequest", brute_medication_request),
    "coverage": ("Coverage", brute_coverage),
    "explanation_of_benefit": ("ExplanationOfBenefit", brute_explanation_of_benefit),
}


def expected_rows(
    view: str, resources: list[dict[str, Any]], with_meta: bool = False
) -> list[dict[str, Any]]:
    rtype, flatten = BRUTE[view]
    rows = []
    for resource in sorted(resources, key=lambda r: r["id"]):  # the store's id order
        assert resource["resourceType"] == rtype
        for row in flatten(resource):
            if with_meta and view != "explanation_of_benefit":
                row["last_updated"] = resource["meta"]["lastUpdated"]
            rows.append(row)
    return rows


def parquet_records(path: Path, drop: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    frame = pd.read_parquet(path, dtype_backend="pyarrow")  # nulls stay None, ints stay ints
    return [{k: v for k, v in row.items() if k not in drop} for row in frame.to_dict("records")]


def as_csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- every shipped view against the brute force -----------------------------------------------


@pytest.mark.parametrize("view", VIEW_NAMES)
def test_each_shipped_view_equals_a_brute_force_flattening_of_the_input(loaded: Loaded, view: str) -> None:
    rtype = BRUTE[view][0]
    expected = expected_rows(view, loaded.inputs[rtype])
    actual = parquet_records(loaded.parquet("synthea", view), drop=("last_updated",))
    assert len(actual) == len(expected) > 0
    assert actual == expected
    if view != "explanation_of_benefit":  # one row per resource, each with its stored version time
        assert len(actual) == len(loaded.inputs[rtype])
        stamps = pd.read_parquet(loaded.parquet("synthea", view))["last_updated"]
        assert stamps.notna().all() and stamps.str.endswith("Z").all()
    else:
        assert len(actual) == sum(len(r.get("item", [])) for r in loaded.inputs[rtype])


@pytest.mark.parametrize("view", VIEW_NAMES)
def test_each_view_over_synpuf_claims_equals_the_stored_resources(loaded: Loaded, view: str) -> None:
    stored = loaded.stored(BRUTE[view][0])
    expected = expected_rows(view, stored, with_meta=True)
    actual = parquet_records(loaded.parquet("claims", view))
    assert actual == expected
    if BRUTE[view][0] in (
        "Patient",
        "Coverage",
        "Observation",
        "ExplanationOfBenefit",
    ):  # what SynPUF maps to
        assert actual


@pytest.mark.parametrize("view", ["patient", "observation", "medication_request", "explanation_of_benefit"])
def test_csv_holds_the_same_table_as_text(loaded: Loaded, view: str) -> None:
    frame = pd.read_csv(loaded.csv("synthea", view), dtype=str, keep_default_na=False)
    actual = [{k: v for k, v in row.items() if k != "last_updated"} for row in frame.to_dict("records")]
    expected = [
        {k: as_csv_text(v) for k, v in row.items()}
        for row in expected_rows(view, loaded.inputs[BRUTE[view][0]])
    ]
    assert actual == expected
    if "last_updated" in frame:
        parquet = parquet_records(loaded.parquet("synthea", view))
        assert list(frame["last_updated"]) == [row["last_updated"] for row in parquet]


def test_synpuf_eob_has_one_row_per_claim_line_with_the_amounts_as_sent(loaded: Loaded) -> None:
    frame = pd.read_parquet(loaded.parquet("claims", "explanation_of_benefit"), dtype_backend="pyarrow")
    lines = frame[frame["eob_id"].str.startswith("carrier-")]
    expected = []
    for row in sorted(loaded.carrier, key=lambda r: f"carrier-{r['CLM_ID']}"):
        used = [n for n in range(1, 14) if row.get(f"HCPCS_CD_{n}")]
        for n in used:
            expected.append(
                {
                    "claim_id": row["CLM_ID"],
                    "patient_id": row["DESYNPUF_ID"],
                    "line_sequence": n,
                    "product_code": row[f"HCPCS_CD_{n}"],
                    "line_payment_amount": row[f"LINE_NCH_PMT_AMT_{n}"],
                    "line_allowed_amount": row[f"LINE_ALOWD_CHRG_AMT_{n}"],
                    "line_coinsurance_amount": row[f"LINE_COINSRNC_AMT_{n}"],
                    "line_deductible_amount": row[f"LINE_BENE_PTB_DDCTBL_AMT_{n}"],
                }
            )
        if not used:  # a claim without lines still has one item (productOrService not-applicable)
            expected.append(
                {
                    "claim_id": row["CLM_ID"],
                    "patient_id": row["DESYNPUF_ID"],
                    "line_sequence": 1,
                    "product_code": "not-applicable",
                    "line_payment_amount": None,
                    "line_allowed_amount": None,
                    "line_coinsurance_amount": None,
                    "line_deductible_amount": None,
                }
            )
    actual = lines[list(expected[0])].to_dict("records")
    assert actual == expected
    assert len(actual) > len(loaded.carrier)  # claims with several lines: several rows
    assert "1100.00" in set(lines["line_payment_amount"].dropna())  # never 1100.0


def test_decimals_and_dates_are_exact_text_and_booleans_and_integers_are_typed(loaded: Loaded) -> None:
    weight = [r for r in parquet_records(loaded.parquet("synthea", "observation")) if r["id"] == "weight-1"]
    assert weight[0]["value_quantity"] == "80.00" and weight[0]["value_unit"] == "kg"
    assert '"weight-1",' in loaded.csv("synthea", "observation").read_text()
    assert ',"80.00","kg",' in loaded.csv("synthea", "observation").read_text()
    observation = pq.read_schema(loaded.parquet("synthea", "observation"))
    assert observation.field("value_quantity").type == pa.string()
    assert observation.field("effective_datetime").type == pa.string()
    assert observation.field("value_boolean").type == pa.bool_()
    assert observation.field("component_count").type == pa.int64()
    medication = pd.read_parquet(loaded.parquet("synthea", "medication_request"), dtype_backend="pyarrow")
    assert medication["as_needed"].dtype == pd.ArrowDtype(pa.bool_())
    assert medication["as_needed"].value_counts().to_dict() == {False: 332, True: 78}  # the rest: no dosage
    assert medication["frequency"].dtype == pd.ArrowDtype(pa.int64())
    assert "1.0" in set(medication["dose_quantity"].dropna())  # a decimal 1.0 is not "1"
    patient = pd.read_parquet(loaded.parquet("synthea", "patient"), dtype_backend="pyarrow")
    assert all(len(d) == 10 and d[4] == "-" for d in patient["birth_date"])  # text, not a timestamp


def test_export_streams_in_chunks_with_the_same_result(loaded: Loaded, tmp_path: Path) -> None:
    (view,) = find_views(loaded.config / "views", ["encounter"])
    store = SqliteStore(loaded.zone / ".dropzone" / "dropzone.sqlite")
    try:
        (written,) = export_views(store.resources, "synthea", [view], tmp_path, "parquet", chunk_rows=100)
        csv_blocks = list(stream_view(store.resources, "synthea", view, "csv", chunk_rows=100))
    finally:
        store.close()
    assert written.rows == written.resources == 1215
    assert pq.ParquetFile(written.path).metadata.num_row_groups == 13  # 12 x 100 + 15
    assert pq.read_table(written.path).equals(pq.read_table(loaded.parquet("synthea", "encounter")))
    assert len(csv_blocks) == 13
    assert b"".join(csv_blocks) == loaded.csv("synthea", "encounter").read_bytes()


# -- errors -----------------------------------------------------------------------------------


def test_an_unknown_view_exits_2_naming_it_and_the_known_views(loaded: Loaded) -> None:
    done = cli(
        "--config", str(loaded.config), "export", "--tenant", "synthea", "--zone", str(loaded.zone),
        "--format", "parquet", "--view", "patient", "--view", "patients", "--out", str(loaded.root / "x"),
        cwd=loaded.root,
    )  # fmt: skip
    assert done.returncode == 2
    assert "no view named 'patients'" in done.stderr and "known views: condition, coverage" in done.stderr
    assert not (loaded.root / "x").exists()  # checked before anything is written


def test_view_options_need_a_table_format_and_a_view(loaded: Loaded) -> None:
    base = ("--config", str(loaded.config), "export", "--tenant", "synthea", "--zone", str(loaded.zone))
    out = ("--out", str(loaded.root / "y"))
    cases = {
        "--view needs --format parquet or csv": ("--view", "patient"),
        "--format parquet needs --view NAME": ("--format", "parquet"),
        "--type applies to --format ndjson only": ("--format", "csv", "--view", "all", "--type", "Patient"),
    }
    for message, args in cases.items():
        done = cli(*base, *args, *out, cwd=loaded.root)
        assert done.returncode == 2 and message in done.stderr, done.stderr


def test_a_bad_view_file_is_a_typed_error_naming_the_file(loaded: Loaded, tmp_path: Path) -> None:
    config = tmp_path / "config"
    views = config / "views"
    views.mkdir(parents=True)
    broken = views / "broken.yaml"
    broken.write_text("resource: Patient\nselect:\n  - column: [{name: id, path: id}\n")
    with pytest.raises(ViewDefinitionError) as caught:
        load_view(broken)
    assert str(broken) in str(caught.value) and "not valid YAML" in str(caught.value)
    assert caught.value.source == broken
    done = cli(
        "--config", str(config), "export", "--tenant", "synthea", "--zone", str(loaded.zone),
        "--format", "csv", "--view", "broken", "--out", str(tmp_path / "out"), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2 and str(broken) in done.stderr


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("name.given[0]", "unsupported syntax"),
        ("name.substring(1)", "function substring() is not supported"),
        ("(gender)", "parentheses are not supported"),
        ("gender = ", "expected an element or function name"),
        ("%resource.id", "unsupported syntax"),
        ("value.ofType()", "ofType() needs a type name"),
    ],
)
def test_paths_outside_the_subset_are_refused_naming_view_and_path(
    tmp_path: Path, path: str, problem: str
) -> None:
    source = tmp_path / "odd.yaml"
    source.write_text(
        json.dumps({"resource": "Patient", "select": [{"column": [{"name": "x", "path": path}]}]})
    )
    with pytest.raises(UnsupportedPath) as caught:
        load_view(source)
    message = str(caught.value)
    assert str(source) in message and "view 'odd'" in message and repr(path) in message and problem in message
    assert "select[0].column[0].path" in message


@pytest.mark.parametrize(
    ("definition", "problem"),
    [
        (
            {"resource": "Patient", "constant": [], "select": [{"column": [{"name": "i", "path": "id"}]}]},
            "'constant'",
        ),
        (
            {"resource": "patient", "select": [{"column": [{"name": "i", "path": "id"}]}]},
            "resource: must name",
        ),
        ({"resource": "Patient", "select": []}, "select: must be a non-empty list"),
        (
            {"resource": "Patient", "select": [{"column": [{"name": "i", "path": "id", "type": "float"}]}]},
            "type",
        ),
        (
            {"resource": "Patient", "name": "other", "select": [{"column": [{"name": "i", "path": "id"}]}]},
            "name",
        ),
        (
            {
                "resource": "Patient",
                "select": [{"column": [{"name": "i", "path": "id"}, {"name": "i", "path": "gender"}]}],
            },
            "used twice",
        ),
        (
            {
                "resource": "Patient",
                "select": [
                    {
                        "unionAll": [
                            {"column": [{"name": "a", "path": "id"}]},
                            {"column": [{"name": "b", "path": "id"}]},
                        ]
                    }
                ],
            },
            "same columns",
        ),
    ],
)
def test_definitions_the_engine_does_not_support_are_refused(
    tmp_path: Path, definition: dict[str, Any], problem: str
) -> None:
    source = tmp_path / "v.yaml"
    source.write_text(json.dumps(definition))
    with pytest.raises(ViewDefinitionError) as caught:
        load_view(source)
    assert str(source) in str(caught.value) and problem in str(caught.value)


def test_unknown_view_names_are_refused_before_any_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "patient.yaml").write_text("not: [valid")  # never parsed: the name check comes first
    with pytest.raises(UnknownViewError) as caught:
        find_views(tmp_path, ["patient", "nope"])
    assert caught.value.known == ["patient"]


# -- the engine's rules on small resources ------------------------------------------------------


def view_from(tmp_path: Path, definition: dict[str, Any], name: str = "t") -> Any:
    source = tmp_path / f"{name}.yaml"
    source.write_text(json.dumps(definition))
    return load_view(source)


def rows_of(view: Any, *resources: dict[str, Any]) -> Iterator[list[Any]]:
    for n, resource in enumerate(resources, start=1):
        yield from resource_rows(view, resource, n)


PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "active": True,
    "name": [
        {"use": "official", "family": "Doe", "given": ["Jane", "Q"]},
        {"use": "nickname", "given": ["JD"]},
    ],
    "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "2"}],
    "managingOrganization": {"reference": "https://example.org/fhir/Organization/o9/_history/3"},
    "generalPractitioner": [{"reference": "#gp"}, {"reference": "Practitioner?identifier=x|1"}],
    "link": [{"other": {"reference": "Patient/p0"}}],
}


def test_for_each_for_each_or_null_nested_select_and_union_all(tmp_path: Path) -> None:
    view = view_from(
        tmp_path,
        {
            "resource": "Patient",
            "select": [
                {"column": [{"name": "id", "path": "getResourceKey()"}]},
                {"forEachOrNull": "address", "column": [{"name": "city", "path": "city"}]},
                {
                    "unionAll": [
                        {
                            "forEach": "name",
                            "column": [
                                {"name": "kind", "path": "use"},
                                {"name": "v", "path": "given.join(',')"},
                            ],
                        },
                        {
                            "forEach": "telecom.where(system = 'email')",
                            "column": [{"name": "kind", "path": "system"}, {"name": "v", "path": "value"}],
                        },
                    ]
                },
            ],
        },
    )
    assert [c.name for c in view.columns] == ["id", "city", "kind", "v"]
    assert list(rows_of(view, PATIENT)) == [
        ["p1", None, "official", "Jane,Q"],
        ["p1", None, "nickname", "JD"],
        ["p1", None, "email", "2"],
    ]
    no_names = {"resourceType": "Patient", "id": "p2", "address": [{"city": "A"}, {"city": "B"}]}
    assert list(rows_of(view, no_names)) == []  # forEach over nothing: no row, whatever the rest gives


def test_functions_operators_and_references(tmp_path: Path) -> None:
    columns = {
        "org": "managingOrganization.getReferenceKey(Organization)",
        "org_wrong_type": "managingOrganization.getReferenceKey(Patient)",
        "gp_keys": "generalPractitioner.getReferenceKey().count()",
        "link": "link.other.getReferenceKey()",
        "last_given": "name.first().given.last()",
        "has_nick": "name.exists(use = 'nickname')",
        "no_photo": "photo.empty()",
        "active_not": "active.not()",
        "both": "active and name.exists()",
        "either": "photo.exists() or active",
        "unknown_and": "deceased.ofType(boolean) and active",
        "not_official": "name.where(use != 'official').given.first()",
        "this": "name.given.where($this = 'Q').count()",
        "numbers": "1.50 = 1.5",
    }
    kinds = {"gp_keys": "integer", "this": "integer", "has_nick": "boolean", "no_photo": "boolean",
             "active_not": "boolean", "both": "boolean", "either": "boolean", "unknown_and": "boolean",
             "numbers": "boolean"}  # fmt: skip
    view = view_from(
        tmp_path,
        {
            "resource": "Patient",
            "select": [
                {
                    "column": [
                        {"name": k, "path": p, "type": kinds.get(k, "string")} for k, p in columns.items()
                    ]
                }
            ],
        },
    )
    (row,) = rows_of(view, PATIENT)
    assert dict(zip(columns, row, strict=True)) == {
        "org": "o9",
        "org_wrong_type": None,
        "gp_keys": 0,  # contained and conditional references have no key
        "link": "p0",
        "last_given": "Q",
        "has_nick": True,
        "no_photo": True,
        "active_not": False,
        "both": True,
        "either": True,
        "unknown_and": None,
        "not_official": "JD",
        "this": 1,
        "numbers": True,
    }


def test_where_filters_resources_and_collections_become_lists_or_json_text(tmp_path: Path) -> None:
    view = view_from(
        tmp_path,
        {
            "resource": "Patient",
            "where": [{"path": "active"}],
            "select": [
                {
                    "column": [
                        {"name": "id", "path": "id"},
                        {"name": "given", "path": "name.given", "collection": True},
                    ]
                }
            ],
        },
    )
    inactive = {**PATIENT, "id": "p2", "active": False}
    no_flag = {k: v for k, v in PATIENT.items() if k != "active"} | {"id": "p3"}
    assert list(rows_of(view, PATIENT, inactive, no_flag)) == [["p1", ["Jane", "Q", "JD"]]]

    store = MemoryStore()
    store.resources.upsert(
        "t", [ResourceWrite("Patient", r["id"], r, r["id"]) for r in (PATIENT, inactive)], None
    )
    (written,) = export_views(store.resources, "t", [view], tmp_path / "out", "parquet")
    assert written.resources == 2 and written.rows == 1
    table = pq.read_table(written.path)
    assert table.schema.field("given").type == pa.list_(pa.string())
    assert table.to_pylist() == [{"id": "p1", "given": ["Jane", "Q", "JD"]}]
    csv_text = b"".join(stream_view(store.resources, "t", view, "csv")).decode()
    assert csv_text == '"id","given"\n"p1","[""Jane"",""Q"",""JD""]"\n'
    ndjson = b"".join(stream_view(store.resources, "t", view, "json"))
    assert ndjson == b'{"id":"p1","given":["Jane","Q","JD"]}\n'


def test_a_resource_that_does_not_fit_is_a_typed_error_without_its_values(tmp_path: Path) -> None:
    several = view_from(
        tmp_path, {"resource": "Patient", "select": [{"column": [{"name": "g", "path": "name.given"}]}]}
    )
    with pytest.raises(ViewEvaluationError) as caught:
        list(rows_of(several, {"resourceType": "Patient", "id": "a"}, PATIENT))
    message = str(caught.value)
    assert "view 't'" in message and "column 'g'" in message and "'name.given'" in message
    assert "3 values where one was expected" in message and "2nd Patient" in message
    assert "Jane" not in message and "p1" not in message
    complex_ = view_from(
        tmp_path,
        {"resource": "Patient", "select": [{"column": [{"name": "n", "path": "name.first()"}]}]},
        "c",
    )
    with pytest.raises(ViewEvaluationError, match="a complex element"):
        list(rows_of(complex_, PATIENT))
    typed = view_from(
        tmp_path,
        {"resource": "Patient", "select": [{"column": [{"name": "n", "path": "id", "type": "integer"}]}]},
        "i",
    )
    with pytest.raises(ViewEvaluationError, match="not an integer"):
        list(rows_of(typed, PATIENT))
