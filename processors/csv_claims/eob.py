"""What the four SynPUF claim mappers share (SYNPUF_MAPPING.md section 4): EOB header,
diagnoses, procedures, HCPCS products, care team, amount categories and periods."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, NamedTuple

from dropzone.validation import shared
from processors.csv_claims.fhir import (
    BB,
    BBCS,
    C4BB,
    CPT,
    HCPCS,
    HL7,
    ICD9,
    NPI,
    amount_entry,
    coded,
    coding,
    concept,
    ref,
)
from processors.csv_claims.layouts import Layout
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


class ClaimFacts(NamedTuple):
    """What a claim's rows say before its EOB is built: the dates it is filed under, the
    Coverage it references and its data notes. The processor reads them to count unresolved
    references and to warn, without building the EOB (that may happen in a worker process,
    which gets them with the claim: a tuple pickles small); the mapper builds from them."""

    bene_id: str
    coverage_id: str
    created: str
    from_dt: str | None
    thru_dt: str | None
    notes: tuple[str, ...] = ()


@cache  # shared: see processors.csv_claims.fhir
def payment_status() -> dict[str, Any]:
    return shared(
        {
            "category": coded(C4BB + "C4BBAdjudicationDiscriminator", "benefitpaymentstatus"),
            "reason": coded(C4BB + "C4BBPayerAdjudicationStatus", "other"),
        }
    )


def eob_header(layout: Layout, claim_id: str, bene: str, tag: dict[str, Any] | None = None) -> dict[str, Any]:
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


class Diagnoses:
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
                "diagnosisCodeableConcept": coded(ICD9, code),
                "type": [coded(type_system, type_code)],
            }
        )
        self._seen[key] = sequence
        self._by_code.setdefault(code, sequence)
        return sequence

    def has(self, code: str) -> bool:
        return code in self._by_code

    def sequence_of(self, code: str) -> int | None:
        return self._by_code.get(code)


def secondary_type(code: str, carrier: bool) -> tuple[str, str]:
    if carrier:
        return C4BB_DX, "secondary"
    return C4BB_DX, ("externalcauseofinjury" if code.upper().startswith("E") else "other")


def add_claim_diagnoses(
    dx: Diagnoses, values: RowValues, count: int, carrier: bool, only_new: bool = False
) -> None:
    for n in range(1, count + 1):
        code = values.text(f"ICD9_DGNS_CD_{n}")
        if not code:
            continue
        if only_new:  # segment 2: only codes segment 1 lacks
            if not dx.has(code):
                dx.add(code, *secondary_type(code, carrier))
        elif n == 1:
            dx.add(code, DX_TYPE, "principal")
        else:
            dx.add(code, *secondary_type(code, carrier))


def procedures(rows: list[ClaimRow]) -> list[dict[str, Any]]:
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
                    "type": [coded(C4BB + "C4BBClaimProcedureType", kind)],
                    "procedureCodeableConcept": coded(ICD9, code),
                }
            )
    return out


@lru_cache(maxsize=32_768)  # shared: see processors.csv_claims.fhir; HCPCS + CPT: ~20,000 codes
def product(code: str | None, inpatient: bool = False) -> dict[str, Any]:
    if not code:
        return shared(concept(coding(HL7 + "data-absent-reason", "not-applicable", "Not Applicable")))
    codings = [coding(BBCS + "hcpcs", code)]
    if inpatient:
        codings.append(coding(BB + "hcpcs_cd", code))
    if _CPT_CODE.match(code):
        codings.append(coding(CPT, code))
    elif _HCPCS_CODE.match(code):
        codings.append(coding(HCPCS, code))
    return shared(concept(*codings))


def care_team_member(sequence: int, npi: str, role: str, responsible: bool = False) -> dict[str, Any]:
    member: dict[str, Any] = {
        "sequence": sequence,
        "provider": {
            "identifier": {
                "type": coded(C4BB + "C4BBIdentifierType", "npi", "National Provider Identifier"),
                "system": NPI,
                "value": npi,
            }
        },
    }
    if responsible:
        member["responsible"] = True
    member["role"] = coded(C4BB + "C4BBClaimCareTeamRole", role)
    return member


def amount_entries(values: RowValues, spec: list[tuple[str, str, str, str]]) -> list[dict[str, Any]]:
    out = []
    for column, system, code, variable in spec:
        amount = values.amount(column)
        if amount is not None:
            out.append(amount_entry(system, code, variable, amount))
    return out


def period_of(start: str | None, end: str | None) -> dict[str, str] | None:
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
