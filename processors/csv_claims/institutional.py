"""Inpatient and outpatient claims -> ExplanationOfBenefit (SYNPUF_MAPPING.md 5, 6 and 9).

One EOB per claim from all its SEGMENT rows: segment 1 is the header; segment 2 adds only line
data (HCPCS items at ``45 + n``) and codes segment 1 lacks. An orphan segment 2 (its segment 1
is in no row of the file) still gives the EOB, dated by the admission period and tagged
``orphan-segment``.
"""

from __future__ import annotations

from typing import Any

from processors.csv_claims.beneficiary import coverage_id
from processors.csv_claims.eob import (
    C4BB_DX,
    CARE_TEAM_COLUMNS,
    DX_TYPE,
    EOB_TYPE,
    HEADER_AMOUNTS,
    ClaimFacts,
    ClaimRow,
    Diagnoses,
    add_claim_diagnoses,
    amount_entries,
    care_team_member,
    eob_header,
    payment_status,
    period_of,
    procedures,
    product,
)
from processors.csv_claims.fhir import (
    BB,
    BBCS,
    C4BB,
    HL7,
    MS_DRG,
    PAYER_ID,
    coded,
    coding,
    concept,
    data_absent,
    money,
    ref,
)
from processors.csv_claims.layouts import Layout


def institutional_facts(layout: Layout, bene: str, rows: list[ClaimRow]) -> ClaimFacts | None:
    """None, with the problem in the header row's values, when the claim has no date to be
    filed under."""
    inpatient = layout.key == "inpatient"
    header = sorted(rows, key=lambda r: r.segment)[0]
    v = header.values
    from_dt, thru_dt = v.date("CLM_FROM_DT"), v.date("CLM_THRU_DT")
    admit = v.date("CLM_ADMSN_DT") if inpatient else None
    discharge = v.date("NCH_BENE_DSCHRG_DT") if inpatient else None
    notes: list[str] = []
    if header.segment != 1:
        # Segment 1 is in no row of this file: date the claim by its admission period (9.5).
        from_dt = from_dt or admit
        thru_dt = thru_dt or discharge
        notes.append("orphan_segment")
    created = thru_dt or discharge or from_dt
    if created is None:
        v.problem(
            "missing_value",
            "CLM_THRU_DT",
            "CLM_THRU_DT is required (it dates the claim and picks the coverage year)",
        )
        return None
    if from_dt is None:
        notes.append("empty_from_date")
    cov = coverage_id(EOB_TYPE[layout.key][3], bene, created[:4])
    return ClaimFacts(bene, cov, created, from_dt, thru_dt, tuple(notes))


def map_institutional(
    layout: Layout, claim_id: str, facts: ClaimFacts, rows: list[ClaimRow], local: str
) -> dict[str, Any] | None:
    """One EOB from the SEGMENT rows of one inpatient or outpatient claim that passed the row
    check (``check_row``) and gave ``facts``."""
    inpatient = layout.key == "inpatient"
    rows = sorted(rows, key=lambda r: r.segment)
    header = rows[0]
    orphan = header.segment != 1
    v = header.values
    bene, from_dt, thru_dt, created = facts.bene_id, facts.from_dt, facts.thru_dt, facts.created
    admit = v.date("CLM_ADMSN_DT") if inpatient else None
    discharge = v.date("NCH_BENE_DSCHRG_DT") if inpatient else None
    amounts = amount_entries(v, HEADER_AMOUNTS[layout.key])
    payment = v.amount("CLM_PMT_AMT")
    per_diem = v.amount("CLM_PASS_THRU_PER_DIEM_AMT") if inpatient else None
    days = v.integer("CLM_UTLZTN_DAY_CNT", 0) if inpatient else None
    if v.issues:
        return None

    tag = coding(f"{local}/CodeSystem/ingest-flags", "orphan-segment") if orphan else None
    eob = eob_header(layout, claim_id, bene, tag)
    period = period_of(from_dt, thru_dt)
    if period:
        eob["billablePeriod"] = period
    eob["created"] = created
    eob["insurer"] = ref("Organization", PAYER_ID)
    provider_number = v.text("PRVDR_NUM")
    if provider_number:
        eob["contained"] = [
            {
                "resourceType": "Organization",
                "id": "provider-org",
                "identifier": [
                    {
                        "type": coded(HL7 + "v2-0203", "PRN", "Provider number"),
                        "system": BB + "prvdr_num",
                        "value": provider_number,
                    }
                ],
            }
        ]
        eob["provider"] = {"reference": "#provider-org"}
    else:
        eob["provider"] = data_absent("unknown")
    eob["outcome"] = "complete"

    care_team: list[dict[str, Any]] = []
    seen_care: set[tuple[str, str]] = set()
    for column, role in CARE_TEAM_COLUMNS:
        npi = v.text(column)
        if npi and (npi, role) not in seen_care:
            seen_care.add((npi, role))
            care_team.append(care_team_member(len(care_team) + 1, npi, role))
    if care_team:
        eob["careTeam"] = care_team

    info: list[dict[str, Any]] = []
    if inpatient:
        admission = period_of(admit, discharge)
        if admission:
            info.append(
                {
                    "sequence": 1,
                    "category": coded(C4BB + "C4BBSupportingInfoType", "admissionperiod"),
                    "timingPeriod": admission,
                }
            )
        drg = v.text("CLM_DRG_CD")
        if drg and drg not in ("OTH", "000"):
            info.append(
                {
                    "sequence": len(info) + 1,
                    "category": concept(
                        coding(C4BB + "C4BBSupportingInfoType", "drg"),
                        coding(BBCS + "information", BB + "clm_drg_cd"),
                    ),
                    "code": concept(coding(MS_DRG, drg), coding(BB + "clm_drg_cd", drg)),
                }
            )
    if info:
        eob["supportingInfo"] = info

    dx = Diagnoses()
    add_claim_diagnoses(dx, v, 10, carrier=False)
    for extra in rows[1:]:
        add_claim_diagnoses(dx, extra.values, 10, carrier=False, only_new=True)
    admitting = v.text("ADMTNG_ICD9_DGNS_CD")
    if admitting:
        if inpatient:
            dx.add(admitting, DX_TYPE, "admitting")
        else:
            dx.add(admitting, C4BB_DX, "patientreasonforvisit")
    if dx.entries:
        eob["diagnosis"] = dx.entries
    procedure_entries = procedures(rows)
    if procedure_entries:
        eob["procedure"] = procedure_entries
    eob["insurance"] = [{"focal": True, "coverage": {"reference": f"Coverage/{facts.coverage_id}"}}]

    items = []
    for row in rows:
        for n in range(1, 46):
            code = row.values.text(f"HCPCS_CD_{n}")
            if code:
                items.append(
                    _institutional_item(
                        45 * (row.segment - 1) + n, code, inpatient, admit, discharge, from_dt
                    )
                )
    if not items:  # CARIN needs one item; SynPUF institutional lines are mostly empty
        items.append(_institutional_item(1, None, inpatient, admit, discharge, from_dt))
    eob["item"] = items

    eob["adjudication"] = [payment_status(), *amounts]
    if amounts:
        eob["total"] = [dict(a) for a in amounts]
    if payment is not None:
        eob["payment"] = {"amount": money(payment)}
    financial = []
    if days is not None:
        financial.append(
            {
                "type": coded(BBCS + "benefit-balance", BB + "clm_utlztn_day_cnt"),
                "usedUnsignedInt": days,
            }
        )
    if per_diem is not None:
        financial.append(
            {
                "type": coded(BBCS + "benefit-balance", BB + "clm_pass_thru_per_diem_amt"),
                "usedMoney": money(per_diem),
            }
        )
    if financial:
        eob["benefitBalance"] = [
            {
                "category": coded(HL7 + "ex-benefitcategory", "1", "Medical Care"),
                "financial": financial,
            }
        ]
    return eob


def _institutional_item(
    sequence: int,
    code: str | None,
    inpatient: bool,
    admit: str | None,
    discharge: str | None,
    from_dt: str | None,
) -> dict[str, Any]:
    item: dict[str, Any] = {"sequence": sequence, "productOrService": product(code, inpatient)}
    if inpatient:
        period = period_of(admit, discharge)
        if period:
            item["servicedPeriod"] = period
    elif from_dt:
        item["servicedDate"] = from_dt
    return item
