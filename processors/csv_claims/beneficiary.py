"""Beneficiary Summary row -> Patient, four Coverages (Parts A-D) and a chronic-condition
Observation, per SYNPUF_MAPPING.md section 3.

The three yearly files describe the same people. Patient ids are the bare DESYNPUF_ID, so the
files update one Patient; which year's demographics win is decided by ``merge_patient`` from the
reference year recorded on the Patient (``BB:rfrnc_yr``), so the result does not depend on the
order the files arrive in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from processors.csv_claims.fhir import (
    BB,
    DAR_EXT,
    HL7,
    OMB,
    PAYER_ID,
    US_CORE_ETHNICITY,
    US_CORE_RACE,
    coding,
    concept,
    money,
    ref,
)
from processors.csv_claims.values import RowValues

# SSA state code -> USPS (SYNPUF_MAPPING 3.6). 54 ("Others") and SSA codes without a USPS code are absent.
SSA_STATES = {
    "01": "AL", "02": "AK", "03": "AZ", "04": "AR", "05": "CA", "06": "CO", "07": "CT", "08": "DE",
    "09": "DC", "10": "FL", "11": "GA", "12": "HI", "13": "ID", "14": "IL", "15": "IN", "16": "IA",
    "17": "KS", "18": "KY", "19": "LA", "20": "ME", "21": "MD", "22": "MA", "23": "MI", "24": "MN",
    "25": "MS", "26": "MO", "27": "MT", "28": "NE", "29": "NV", "30": "NH", "31": "NJ", "32": "NM",
    "33": "NY", "34": "NC", "35": "ND", "36": "OH", "37": "OK", "38": "OR", "39": "PA", "41": "RI",
    "42": "SC", "43": "SD", "44": "TN", "45": "TX", "46": "UT", "47": "VT", "49": "VA", "50": "WA",
    "51": "WV", "52": "WI", "53": "WY",
}  # fmt: skip
RACE_DISPLAY = {"1": "White", "2": "Black", "3": "Other", "5": "Hispanic"}
OMB_RACE = {"1": ("2106-3", "White"), "2": ("2054-5", "Black or African American")}
GENDER = {"1": "male", "2": "female"}
CHRONIC = {
    "SP_ALZHDMTA": "Alzheimer or related disorders or senile",
    "SP_CHF": "Heart failure",
    "SP_CHRNKIDN": "Chronic kidney disease",
    "SP_CNCR": "Cancer",
    "SP_COPD": "COPD",
    "SP_DEPRESSN": "Depression",
    "SP_DIABETES": "Diabetes",
    "SP_ISCHMCHT": "Ischemic heart disease",
    "SP_OSTEOPRS": "Osteoporosis",
    "SP_RA_OA": "Rheumatoid arthritis/osteoarthritis",
    "SP_STRKETIA": "Stroke/TIA",
}
# (part, month-count column, month-count variable, annual amount columns)
PARTS = (
    ("a", "BENE_HI_CVRAGE_TOT_MONS", "a_mo_cnt", ("MEDREIMB_IP", "BENRES_IP", "PPPYMT_IP")),
    (
        "b",
        "BENE_SMI_CVRAGE_TOT_MONS",
        "b_mo_cnt",
        ("MEDREIMB_OP", "BENRES_OP", "PPPYMT_OP", "MEDREIMB_CAR", "BENRES_CAR", "PPPYMT_CAR"),
    ),
    ("c", "BENE_HMO_CVRAGE_TOT_MONS", "hmo_mo", ()),
    ("d", "PLAN_CVRG_MOS_NUM", "plncovmo", ()),
)
REFERENCE_YEAR = BB + "rfrnc_yr"


@dataclass(slots=True)
class BeneficiaryResult:
    bene_id: str
    year: int
    patient: dict[str, Any]
    others: list[dict[str, Any]]  # Coverages and the Observation
    death: str | None


def map_beneficiary(values: RowValues, year: int, local: str) -> BeneficiaryResult | None:
    """Map one row; None when it has problems (they are in ``values.issues``)."""
    bene = values.required("DESYNPUF_ID")
    birth = values.date("BENE_BIRTH_DT")
    death = values.date("BENE_DEATH_DT")
    months = {part: values.integer(column, 0, 12) for part, column, _, _ in PARTS}
    amounts = {col: values.amount(col) for _, _, _, cols in PARTS for col in cols}
    if values.issues or bene is None:
        return None

    period_end = f"{year}-12-31"
    if death and death.startswith(f"{year}-"):
        period_end = death
    period = {"start": f"{year}-01-01", "end": period_end}

    patient = _patient(values, bene, birth, death, year, local)
    others = [
        _coverage(values, bene, year, part, months[part], variable, cols, amounts, period, local)
        for part, _, variable, cols in PARTS
    ]
    observation = _chronic_conditions(values, bene, year, period, local)
    if observation is not None:
        others.append(observation)
    return BeneficiaryResult(bene, year, patient, others, death)


def _patient(
    values: RowValues, bene: str, birth: str | None, death: str | None, year: int, local: str
) -> dict[str, Any]:
    extensions: list[dict[str, Any]] = [{"url": REFERENCE_YEAR, "valueDate": str(year)}]
    race = values.text("BENE_RACE_CD")
    if race:
        extensions.append(
            {"url": BB + "race", "valueCoding": coding(BB + "race", race, RACE_DISPLAY.get(race))}
        )
        omb = OMB_RACE.get(race)
        category = coding(OMB, omb[0], omb[1]) if omb else coding(HL7 + "v3-NullFlavor", "UNK", "Unknown")
        extensions.append(
            {
                "url": US_CORE_RACE,
                "extension": [
                    {"url": "ombCategory", "valueCoding": category},
                    {"url": "text", "valueString": omb[1] if omb else "Unknown"},
                ],
            }
        )
        if race == "5":
            extensions.append(
                {
                    "url": US_CORE_ETHNICITY,
                    "extension": [
                        {"url": "ombCategory", "valueCoding": coding(OMB, "2135-2", "Hispanic or Latino")},
                        {"url": "text", "valueString": "Hispanic or Latino"},
                    ],
                }
            )
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": bene,
        "extension": extensions,
        "identifier": [
            {
                "type": concept(coding(HL7 + "v2-0203", "MB", "Member Number")),
                "system": f"{local}/sid/desynpuf-id",
                "value": bene,
            }
        ],
        # SynPUF has no names; say so instead of inventing one.
        "name": [{"extension": [{"url": DAR_EXT, "valueCode": "unknown"}]}],
    }
    sex = values.text("BENE_SEX_IDENT_CD")
    if sex:
        patient["gender"] = GENDER.get(sex, "unknown")
    if birth:
        patient["birthDate"] = birth
    if death:
        patient["deceasedDateTime"] = death
    else:
        patient["deceasedBoolean"] = False
    address = _address(values)
    if address:
        patient["address"] = [address]
    return patient


def _address(values: RowValues) -> dict[str, Any] | None:
    state = values.text("SP_STATE_CODE")
    county = values.text("BENE_COUNTY_CD")
    extensions = []
    if state:
        extensions.append({"url": BB + "state_cd", "valueCoding": coding(BB + "state_cd", state)})
    if county:
        extensions.append({"url": BB + "cnty_cd", "valueCoding": coding(BB + "cnty_cd", county)})
    if not extensions:
        return None
    address: dict[str, Any] = {"extension": extensions}
    usps = SSA_STATES.get(state or "")
    if usps:  # "54" (Others) and unknown codes keep only the raw code
        address["state"] = usps
    return address


def _coverage(
    values: RowValues,
    bene: str,
    year: int,
    part: str,
    months: int | None,
    variable: str,
    amount_columns: tuple[str, ...],
    amounts: dict[str, Decimal | None],
    period: dict[str, str],
    local: str,
) -> dict[str, Any]:
    extensions: list[dict[str, Any]] = [{"url": REFERENCE_YEAR, "valueDate": str(year)}]
    if months is not None:
        extensions.append({"url": BB + variable, "valueUnsignedInt": months})
    if part == "a":
        esrd = values.text("BENE_ESRD_IND")
        if esrd:
            extensions.append({"url": BB + "esrd_ind", "valueCoding": coding(BB + "esrd_ind", esrd)})
    for column in amount_columns:
        amount = amounts[column]
        if amount is not None:
            extensions.append(
                {"url": f"{local}/StructureDefinition/{column.lower()}", "valueMoney": money(amount)}
            )
    return {
        "resourceType": "Coverage",
        "id": coverage_id(part, bene, year),
        "extension": extensions,
        # No termination code in SynPUF: a year with covered months is active.
        "status": "active" if months is None or months > 0 else "cancelled",
        "type": concept(coding(HL7 + "v3-ActCode", "SUBSIDIZ", "subsidized health program")),
        "subscriberId": bene,
        "beneficiary": ref("Patient", bene),
        "relationship": concept(coding(HL7 + "subscriber-relationship", "self", "Self")),
        "period": dict(period),
        "payor": [ref("Organization", PAYER_ID)],
        "class": [
            {"type": concept(coding(HL7 + "coverage-class", "group")), "value": "Medicare"},
            {"type": concept(coding(HL7 + "coverage-class", "plan")), "value": f"Part {part.upper()}"},
        ],
    }


def coverage_id(part: str, bene: str, year: int | str) -> str:
    return f"part-{part}-{bene}-{year}"


def _chronic_conditions(
    values: RowValues, bene: str, year: int, period: dict[str, str], local: str
) -> dict[str, Any] | None:
    system = f"{local}/CodeSystem/synpuf-chronic-conditions"
    components = []
    for column, label in CHRONIC.items():
        flag = values.text(column)
        if flag in ("1", "2"):  # 1 = yes, 2 = no; anything else carries no information
            components.append({"code": concept(coding(system, column, label)), "valueBoolean": flag == "1"})
    if not components:
        return None
    return {
        "resourceType": "Observation",
        "id": f"cc-{bene}-{year}",
        "status": "final",
        "code": concept(coding(system, "flags", "SynPUF chronic condition flags")),
        "subject": ref("Patient", bene),
        "effectivePeriod": dict(period),
        "component": components,
    }


def patient_year(patient: dict[str, Any]) -> int | None:
    for ext in patient.get("extension") or ():
        if isinstance(ext, dict) and ext.get("url") == REFERENCE_YEAR:
            value = str(ext.get("valueDate", ""))[:4]
            return int(value) if value.isdigit() else None
    return None


def _death(patient: dict[str, Any]) -> str | None:
    value = patient.get("deceasedDateTime")
    return value[:10] if isinstance(value, str) else None


def merge_patient(new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    """Combine a Patient built from one year's row with what is already known.

    Demographics come from the latest reference year (a tie goes to the new row, so a corrected
    file replaces its own earlier version). The death date is the latest one seen in any year:
    CMS fills it only in the year of death, so an earlier year's row must not erase it.
    """
    if old is None:
        return new
    old_year, new_year = patient_year(old), patient_year(new)
    if old_year is None or (new_year is not None and new_year >= old_year):
        base, other = new, old
    else:
        base, other = old, new
    merged = {k: v for k, v in base.items() if k != "meta"}
    deaths = [d for d in (_death(base), _death(other)) if d]
    if deaths:
        merged.pop("deceasedBoolean", None)
        merged["deceasedDateTime"] = max(deaths)
    return _ordered(merged)


_PATIENT_ORDER = (
    "resourceType", "id", "meta", "extension", "identifier", "name", "gender", "birthDate",
    "deceasedBoolean", "deceasedDateTime", "address",
)  # fmt: skip


def _ordered(patient: dict[str, Any]) -> dict[str, Any]:
    rank = {k: i for i, k in enumerate(_PATIENT_ORDER)}
    return dict(sorted(patient.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def year_from_name(name: str) -> int | None:
    """The reference year in a Beneficiary file name such as DE1_0_2009_Beneficiary_...csv
    (exactly one year-like number, so ``..._2008_to_2010_...`` gives none)."""
    years = {int(y) for y in re.findall(r"(?<!\d)(20\d\d|19\d\d)(?!\d)", name)}
    return years.pop() if len(years) == 1 else None


def parse_year(value: str | None) -> int | None:
    if value and len(value) == 4 and value.isdigit() and 1900 <= int(value) <= 2100:
        return int(value)
    return None
