"""Claim rows -> ExplanationOfBenefit, per SYNPUF_MAPPING.md sections 4-9.

``map_claim`` takes every row of one claim (inpatient and outpatient claims can be split into
two SEGMENT rows) and returns one EOB whose id is ``<type>-<claim id>``. Segment 1 is the
header; segment 2 adds only line data (and codes segment 1 lacks). An orphan segment 2 (its
segment 1 is in no row of the file) still gives the EOB, tagged ``orphan-segment``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from processors.csv_claims.beneficiary import coverage_id
from processors.csv_claims.fhir import (
    BB,
    BBCS,
    C4BB,
    CPT,
    HCPCS,
    HL7,
    ICD9,
    MS_DRG,
    NDC,
    NPI,
    PAYER_ID,
    TAX_OID,
    bb_category,
    coding,
    concept,
    data_absent,
    money,
    ref,
)
from processors.csv_claims.layouts import CARRIER_LINES, Layout
from processors.csv_claims.values import RowValues

_CPT_CODE = re.compile(r"^\d{4}[0-9FTU]$")
_HCPCS_CODE = re.compile(r"^[A-V]\d{4}$")
ADJ = HL7 + "adjudication"
C4BB_ADJ = C4BB + "C4BBAdjudication"
DX_TYPE = HL7 + "ex-diagnosistype"
C4BB_DX = C4BB + "C4BBClaimDiagnosisType"
EOB_TYPE = {
    "inpatient": ("institutional", "INPATIENT", "inpatient", "a"),
    "outpatient": ("institutional", "OUTPATIENT", "outpatient", "b"),
    "carrier": ("professional", "CARRIER", None, "b"),
    "pde": ("pharmacy", "PDE", None, "d"),
}
# Claim-level (institutional header) amounts: column -> (category system, code, BB variable).
HEADER_AMOUNTS = {
    "inpatient": [
        ("CLM_PMT_AMT", C4BB_ADJ, "paidtoprovider", "clm_pmt_amt"),
        ("NCH_PRMRY_PYR_CLM_PD_AMT", C4BB_ADJ, "priorpayerpaid", "prpayamt"),
        ("NCH_BENE_IP_DDCTBL_AMT", ADJ, "deductible", "nch_bene_ip_ddctbl_amt"),
        ("NCH_BENE_PTA_COINSRNC_LBLTY_AM", C4BB_ADJ, "coinsurance", "nch_bene_pta_coinsrnc_lblty_amt"),
        ("NCH_BENE_BLOOD_DDCTBL_LBLTY_AM", ADJ, "deductible", "nch_bene_blood_ddctbl_lblty_am"),
    ],
    "outpatient": [
        ("CLM_PMT_AMT", C4BB_ADJ, "paidtoprovider", "clm_pmt_amt"),
        ("NCH_PRMRY_PYR_CLM_PD_AMT", C4BB_ADJ, "priorpayerpaid", "prpayamt"),
        ("NCH_BENE_BLOOD_DDCTBL_LBLTY_AM", ADJ, "deductible", "nch_bene_blood_ddctbl_lblty_am"),
        ("NCH_BENE_PTB_DDCTBL_AMT", ADJ, "deductible", "nch_bene_ptb_ddctbl_amt"),
        ("NCH_BENE_PTB_COINSRNC_AMT", C4BB_ADJ, "coinsurance", "nch_bene_ptb_coinsrnc_amt"),
    ],
}
CARRIER_LINE_AMOUNTS = [
    ("LINE_NCH_PMT_AMT", ADJ, "benefit", "line_nch_pmt_amt"),
    ("LINE_BENE_PTB_DDCTBL_AMT", ADJ, "deductible", "line_bene_ptb_ddctbl_amt"),
    ("LINE_BENE_PRMRY_PYR_PD_AMT", C4BB_ADJ, "priorpayerpaid", "line_bene_prmry_pyr_pd_amt"),
    ("LINE_COINSRNC_AMT", C4BB_ADJ, "coinsurance", "line_coinsrnc_amt"),
    ("LINE_ALOWD_CHRG_AMT", ADJ, "eligible", "line_alowd_chrg_amt"),
]
CARE_TEAM_COLUMNS = [
    ("AT_PHYSN_NPI", "attending"),
    ("OP_PHYSN_NPI", "operating"),
    ("OT_PHYSN_NPI", "otheroperating"),
]


def eob_id(layout: Layout, claim_id: str) -> str:
    return f"{layout.key}-{claim_id}"


@dataclass(slots=True)
class ClaimRow:
    values: RowValues
    segment: int


@dataclass(slots=True)
class ClaimResult:
    eob: dict[str, Any]
    bene_id: str
    coverage_id: str | None
    orphan_segment: bool = False
    notes: list[str] = field(default_factory=list)


def _payment_status() -> dict[str, Any]:
    return {
        "category": concept(coding(C4BB + "C4BBAdjudicationDiscriminator", "benefitpaymentstatus")),
        "reason": concept(coding(C4BB + "C4BBPayerAdjudicationStatus", "other")),
    }


def _eob_header(
    layout: Layout, claim_id: str, bene: str, tag: dict[str, Any] | None = None
) -> dict[str, Any]:
    claim_type, eob_type, sub_type, _ = EOB_TYPE[layout.key]
    id_system = BB + ("pde_id" if layout.key == "pde" else "clm_id")
    eob: dict[str, Any] = {"resourceType": "ExplanationOfBenefit", "id": eob_id(layout, claim_id)}
    if tag:
        eob["meta"] = {"tag": [tag]}
    eob |= {
        "identifier": [
            {
                "type": concept(coding(C4BB + "C4BBIdentifierType", "uc", "Unique Claim ID")),
                "system": id_system,
                "value": claim_id,
            }
        ],
        "status": "active",
        "type": concept(coding(HL7 + "claim-type", claim_type), coding(BBCS + "eob-type", eob_type)),
    }
    if sub_type:
        eob["subType"] = concept(coding(C4BB + "C4BBInstitutionalClaimSubType", sub_type))
    eob["use"] = "claim"
    eob["patient"] = ref("Patient", bene)
    return eob


class _Diagnoses:
    """Diagnosis entries numbered 1..n without holes; deduplicated within one role only."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self._seen: dict[tuple[str, str], int] = {}
        self._by_code: dict[str, int] = {}

    def add(self, code: str, type_system: str, type_code: str) -> int:
        key = (code, type_code)
        if key in self._seen:
            return self._seen[key]
        sequence = len(self.entries) + 1
        self.entries.append(
            {
                "sequence": sequence,
                "diagnosisCodeableConcept": concept(coding(ICD9, code)),
                "type": [concept(coding(type_system, type_code))],
            }
        )
        self._seen[key] = sequence
        self._by_code.setdefault(code, sequence)
        return sequence

    def has(self, code: str) -> bool:
        return code in self._by_code

    def sequence_of(self, code: str) -> int | None:
        return self._by_code.get(code)


def _secondary_type(code: str, carrier: bool) -> tuple[str, str]:
    if carrier:
        return C4BB_DX, "secondary"
    return C4BB_DX, ("externalcauseofinjury" if code.upper().startswith("E") else "other")


def _add_claim_diagnoses(
    dx: _Diagnoses, values: RowValues, count: int, carrier: bool, only_new: bool = False
) -> None:
    for n in range(1, count + 1):
        code = values.text(f"ICD9_DGNS_CD_{n}")
        if not code:
            continue
        if only_new:  # segment 2: only codes segment 1 lacks
            if not dx.has(code):
                dx.add(code, *_secondary_type(code, carrier))
        elif n == 1:
            dx.add(code, DX_TYPE, "principal")
        else:
            dx.add(code, *_secondary_type(code, carrier))


def _procedures(rows: list[ClaimRow]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for row in rows:
        for n in range(1, 7):
            code = row.values.text(f"ICD9_PRCDR_CD_{n}")
            if not code or code in seen:
                continue
            seen.add(code)
            kind = "principal" if not out else "other"
            out.append(
                {
                    "sequence": len(out) + 1,
                    "type": [concept(coding(C4BB + "C4BBClaimProcedureType", kind))],
                    "procedureCodeableConcept": concept(coding(ICD9, code)),
                }
            )
    return out


def _product(code: str | None, inpatient: bool = False) -> dict[str, Any]:
    if not code:
        return concept(coding(HL7 + "data-absent-reason", "not-applicable", "Not Applicable"))
    codings = [coding(BBCS + "hcpcs", code)]
    if inpatient:
        codings.append(coding(BB + "hcpcs_cd", code))
    if _CPT_CODE.match(code):
        codings.append(coding(CPT, code))
    elif _HCPCS_CODE.match(code):
        codings.append(coding(HCPCS, code))
    return concept(*codings)


def _care_team_member(sequence: int, npi: str, role: str, responsible: bool = False) -> dict[str, Any]:
    member: dict[str, Any] = {
        "sequence": sequence,
        "provider": {
            "identifier": {
                "type": concept(coding(C4BB + "C4BBIdentifierType", "npi", "National Provider Identifier")),
                "system": NPI,
                "value": npi,
            }
        },
    }
    if responsible:
        member["responsible"] = True
    member["role"] = concept(coding(C4BB + "C4BBClaimCareTeamRole", role))
    return member


def _amount_entries(values: RowValues, spec: list[tuple[str, str, str, str]]) -> list[dict[str, Any]]:
    out = []
    for column, system, code, variable in spec:
        amount = values.amount(column)
        if amount is not None:
            out.append({"category": bb_category(system, code, variable), "amount": money(amount)})
    return out


def _period(start: str | None, end: str | None) -> dict[str, str] | None:
    if not start and not end:
        return None
    if start and end and start > end:
        return {"start": start}  # per-1: start <= end; keep the start only
    period = {}
    if start:
        period["start"] = start
    if end:
        period["end"] = end
    return period


# -- institutional (inpatient, outpatient) -------------------------------------------------------


def map_institutional(
    layout: Layout, claim_id: str, bene: str, rows: list[ClaimRow], local: str
) -> ClaimResult | None:
    """One EOB from the SEGMENT rows of one inpatient or outpatient claim."""
    inpatient = layout.key == "inpatient"
    rows = sorted(rows, key=lambda r: r.segment)
    header = rows[0]
    orphan = header.segment != 1
    v = header.values
    from_dt, thru_dt = v.date("CLM_FROM_DT"), v.date("CLM_THRU_DT")
    admit = v.date("CLM_ADMSN_DT") if inpatient else None
    discharge = v.date("NCH_BENE_DSCHRG_DT") if inpatient else None
    amounts = _amount_entries(v, HEADER_AMOUNTS[layout.key])
    payment = v.amount("CLM_PMT_AMT")
    per_diem = v.amount("CLM_PASS_THRU_PER_DIEM_AMT") if inpatient else None
    days = v.integer("CLM_UTLZTN_DAY_CNT", 0) if inpatient else None

    notes: list[str] = []
    if orphan:
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

    tag = coding(f"{local}/CodeSystem/ingest-flags", "orphan-segment") if orphan else None
    eob = _eob_header(layout, claim_id, bene, tag)
    period = _period(from_dt, thru_dt)
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
                        "type": concept(coding(HL7 + "v2-0203", "PRN", "Provider number")),
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
            care_team.append(_care_team_member(len(care_team) + 1, npi, role))
    if care_team:
        eob["careTeam"] = care_team

    info: list[dict[str, Any]] = []
    if inpatient:
        admission = _period(admit, discharge)
        if admission:
            info.append(
                {
                    "sequence": 1,
                    "category": concept(coding(C4BB + "C4BBSupportingInfoType", "admissionperiod")),
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

    dx = _Diagnoses()
    _add_claim_diagnoses(dx, v, 10, carrier=False)
    for extra in rows[1:]:
        _add_claim_diagnoses(dx, extra.values, 10, carrier=False, only_new=True)
    admitting = v.text("ADMTNG_ICD9_DGNS_CD")
    if admitting:
        if inpatient:
            dx.add(admitting, DX_TYPE, "admitting")
        else:
            dx.add(admitting, C4BB_DX, "patientreasonforvisit")
    if dx.entries:
        eob["diagnosis"] = dx.entries
    procedures = _procedures(rows)
    if procedures:
        eob["procedure"] = procedures
    eob["insurance"] = [{"focal": True, "coverage": {"reference": f"Coverage/{cov}"}}]

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

    eob["adjudication"] = [_payment_status(), *amounts]
    if amounts:
        eob["total"] = [dict(a) for a in amounts]
    if payment is not None:
        eob["payment"] = {"amount": money(payment)}
    financial = []
    if days is not None:
        financial.append(
            {
                "type": concept(coding(BBCS + "benefit-balance", BB + "clm_utlztn_day_cnt")),
                "usedUnsignedInt": days,
            }
        )
    if per_diem is not None:
        financial.append(
            {
                "type": concept(coding(BBCS + "benefit-balance", BB + "clm_pass_thru_per_diem_amt")),
                "usedMoney": money(per_diem),
            }
        )
    if financial:
        eob["benefitBalance"] = [
            {
                "category": concept(coding(HL7 + "ex-benefitcategory", "1", "Medical Care")),
                "financial": financial,
            }
        ]
    return ClaimResult(eob, bene, cov, orphan, notes)


def _institutional_item(
    sequence: int,
    code: str | None,
    inpatient: bool,
    admit: str | None,
    discharge: str | None,
    from_dt: str | None,
) -> dict[str, Any]:
    item: dict[str, Any] = {"sequence": sequence, "productOrService": _product(code, inpatient)}
    if inpatient:
        period = _period(admit, discharge)
        if period:
            item["servicedPeriod"] = period
    elif from_dt:
        item["servicedDate"] = from_dt
    return item


# -- carrier ----------------------------------------------------------------------------------


def _line_used(v: RowValues, n: int) -> bool:
    for group in ("HCPCS_CD", "PRF_PHYSN_NPI", "TAX_NUM", "LINE_ICD9_DGNS_CD", "LINE_PRCSG_IND_CD"):
        if v.text(f"{group}_{n}"):
            return True
    for column, *_ in CARRIER_LINE_AMOUNTS:
        raw = v.text(f"{column}_{n}")
        if raw is not None and _nonzero(raw):
            return True
    return False


def _nonzero(raw: str) -> bool:
    try:
        return float(raw) != 0
    except ValueError:
        return True  # not a number: the line is used, and the amount check reports it


def map_carrier(layout: Layout, claim_id: str, bene: str, v: RowValues) -> ClaimResult | None:
    from_dt, thru_dt = v.date("CLM_FROM_DT"), v.date("CLM_THRU_DT")
    used = [n for n in range(1, CARRIER_LINES + 1) if _line_used(v, n)]
    line_amounts = {n: [(spec, v.amount(f"{spec[0]}_{n}")) for spec in CARRIER_LINE_AMOUNTS] for n in used}
    if v.issues:
        return None
    created = thru_dt or from_dt
    if created is None:
        v.problem("missing_value", "CLM_THRU_DT", "CLM_THRU_DT is required (it dates the claim)")
        return None
    cov = coverage_id("b", bene, created[:4])
    eob = _eob_header(layout, claim_id, bene)
    period = _period(from_dt, thru_dt)
    if period:
        eob["billablePeriod"] = period
    eob["created"] = created
    eob["insurer"] = ref("Organization", PAYER_ID)
    tax = next((v.text(f"TAX_NUM_{n}") for n in used if v.text(f"TAX_NUM_{n}")), None)
    if tax:
        eob["provider"] = {
            "identifier": {
                "type": concept(coding(HL7 + "v2-0203", "TAX", "Tax ID number")),
                "system": TAX_OID,
                "value": tax,
            }
        }
    else:
        eob["provider"] = data_absent("unknown")
    eob["outcome"] = "complete"

    care_team: list[dict[str, Any]] = []
    care_seq: dict[str, int] = {}
    for n in used:
        npi = v.text(f"PRF_PHYSN_NPI_{n}")
        if npi and npi not in care_seq:
            care_seq[npi] = len(care_team) + 1
            care_team.append(_care_team_member(care_seq[npi], npi, "rendering", responsible=True))
    if care_team:
        eob["careTeam"] = care_team

    dx = _Diagnoses()
    _add_claim_diagnoses(dx, v, 8, carrier=True)
    line_dx: dict[int, int] = {}
    for n in used:
        code = v.text(f"LINE_ICD9_DGNS_CD_{n}")
        if code:
            line_dx[n] = dx.sequence_of(code) or dx.add(code, C4BB_DX, "secondary")
    if dx.entries:
        eob["diagnosis"] = dx.entries
    eob["insurance"] = [{"focal": True, "coverage": {"reference": f"Coverage/{cov}"}}]

    items = []
    totals: dict[str, tuple[dict[str, Any], float]] = {}
    for n in used:
        item: dict[str, Any] = {"sequence": n}
        extensions = []
        tax_n = v.text(f"TAX_NUM_{n}")
        if tax_n:
            extensions.append({"url": BB + "tax_num", "valueCoding": coding(BB + "tax_num", tax_n)})
        indicator = v.text(f"LINE_PRCSG_IND_CD_{n}")
        if indicator:
            extensions.append(
                {"url": BB + "line_prcsg_ind_cd", "valueCoding": coding(BB + "line_prcsg_ind_cd", indicator)}
            )
        if extensions:
            item = {"extension": extensions, **item}
        npi = v.text(f"PRF_PHYSN_NPI_{n}")
        if npi:
            item["careTeamSequence"] = [care_seq[npi]]
        if n in line_dx:
            item["diagnosisSequence"] = [line_dx[n]]
        item["productOrService"] = _product(v.text(f"HCPCS_CD_{n}"))
        if period:
            item["servicedPeriod"] = dict(period)
        adjudication = [_payment_status()]
        for (column, system, code, variable), amount in line_amounts[n]:
            if amount is None:
                continue
            category = bb_category(system, code, variable)
            adjudication.append({"category": category, "amount": money(amount)})
            previous = totals.get(column, (category, 0.0))[1]
            totals[column] = (category, round(previous + amount, 2))
        item["adjudication"] = adjudication
        items.append(item)
    if not items:
        items.append({"sequence": 1, "productOrService": _product(None)})
    eob["item"] = items
    eob["total"] = [
        {"category": category, "amount": money(total)}
        for column, *_ in CARRIER_LINE_AMOUNTS
        if column in totals
        for category, total in [totals[column]]
    ]
    if not eob["total"]:
        del eob["total"]
    if "LINE_NCH_PMT_AMT" in totals:
        eob["payment"] = {"amount": money(totals["LINE_NCH_PMT_AMT"][1])}
    return ClaimResult(eob, bene, cov)


# -- prescription drug events -----------------------------------------------------------------


def map_pde(layout: Layout, pde_id: str, bene: str, v: RowValues) -> ClaimResult | None:
    served = v.date("SRVC_DT")
    if served is None and not any(i.path == "SRVC_DT" for i in v.issues):
        v.problem("missing_value", "SRVC_DT", "SRVC_DT is required (it dates the event)")
    quantity = v.amount("QTY_DSPNSD_NUM")
    days = v.integer("DAYS_SUPLY_NUM", 0)
    patient_paid = v.amount("PTNT_PAY_AMT")
    total_cost = v.amount("TOT_RX_CST_AMT")
    if v.issues or served is None:
        return None
    cov = coverage_id("d", bene, served[:4])
    eob = _eob_header(layout, pde_id, bene)
    eob["billablePeriod"] = {"start": served, "end": served}
    eob["created"] = served
    eob["insurer"] = ref("Organization", PAYER_ID)
    eob["provider"] = data_absent("unknown")  # SynPUF PDE has no pharmacy or prescriber
    eob["outcome"] = "complete"
    if days is not None:
        eob["supportingInfo"] = [
            {
                "sequence": 1,
                "category": concept(coding(C4BB + "C4BBSupportingInfoType", "dayssupply")),
                "valueQuantity": {"value": days},
            }
        ]
    eob["insurance"] = [{"focal": True, "coverage": {"reference": f"Coverage/{cov}"}}]
    product = v.text("PROD_SRVC_ID")
    if product is None:
        product_concept = concept(coding(HL7 + "data-absent-reason", "unknown", "Unknown"))
    elif product.isdigit():
        product_concept = concept(coding(NDC, product))
    else:  # e.g. the literal OTHER: not an NDC
        product_concept = concept(coding(HL7 + "data-absent-reason", "masked", "Masked"), text=product)
    item: dict[str, Any] = {"sequence": 1, "productOrService": product_concept, "servicedDate": served}
    if quantity is not None:
        item["quantity"] = {"value": quantity}
    adjudication = []
    if patient_paid is not None:
        adjudication.append(
            {
                "category": bb_category(C4BB_ADJ, "paidbypatient", "ptnt_pay_amt"),
                "amount": money(patient_paid),
            }
        )
    if total_cost is not None:
        adjudication.append(
            {"category": bb_category(C4BB_ADJ, "drugcost", "tot_rx_cst_amt"), "amount": money(total_cost)}
        )
    if adjudication:
        item["adjudication"] = adjudication
    eob["item"] = [item]
    eob["adjudication"] = [_payment_status()]
    if total_cost is not None:
        eob["total"] = [
            {"category": bb_category(C4BB_ADJ, "drugcost", "tot_rx_cst_amt"), "amount": money(total_cost)}
        ]
    return ClaimResult(eob, bene, cov)
