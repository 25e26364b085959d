"""Carrier claims -> ExplanationOfBenefit (SYNPUF_MAPPING.md 7): up to 13 line slots, each
used slot one item with its line amounts; claim totals are the sums over used lines."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from dropzone.validation import shared
from processors.csv_claims.beneficiary import coverage_id
from processors.csv_claims.eob import (
    C4BB_DX,
    CARRIER_LINE_AMOUNTS,
    ClaimFacts,
    Diagnoses,
    add_claim_diagnoses,
    care_team_member,
    eob_header,
    payment_status,
    period_of,
    product,
)
from processors.csv_claims.fhir import (
    BB,
    HL7,
    PAYER_ID,
    TAX_OID,
    amount_entry,
    coded,
    coding,
    data_absent,
    money,
    ref,
)
from processors.csv_claims.layouts import CARRIER_LINES, Layout
from processors.csv_claims.values import RowValues


@dataclass(frozen=True, slots=True)
class _Slot:
    """The column names of line slot ``n``, made once rather than per claim."""

    hcpcs: str
    npi: str
    tax: str
    dx: str
    indicator: str
    amounts: tuple[str, ...]  # in CARRIER_LINE_AMOUNTS order

    @classmethod
    def of(cls, n: int) -> _Slot:
        amounts = tuple(f"{column}_{n}" for column, *_ in CARRIER_LINE_AMOUNTS)
        return cls(
            f"HCPCS_CD_{n}",
            f"PRF_PHYSN_NPI_{n}",
            f"TAX_NUM_{n}",
            f"LINE_ICD9_DGNS_CD_{n}",
            f"LINE_PRCSG_IND_CD_{n}",
            amounts,
        )


_SLOTS = {n: _Slot.of(n) for n in range(1, CARRIER_LINES + 1)}


def _line_used(v: RowValues, n: int) -> bool:
    slot = _SLOTS[n]
    for column in (slot.hcpcs, slot.npi, slot.tax, slot.dx, slot.indicator):
        if v.text(column):
            return True
    for column in slot.amounts:
        raw = v.text(column)
        if raw is not None and _nonzero(raw):
            return True
    return False


def _nonzero(raw: str) -> bool:
    try:
        return float(raw) != 0
    except ValueError:
        return True  # not a number: the line is used, and the amount check reports it


def carrier_facts(bene: str, v: RowValues) -> ClaimFacts | None:
    """None, with the problem in ``v``, when the claim has no date to file it under."""
    from_dt, thru_dt = v.date("CLM_FROM_DT"), v.date("CLM_THRU_DT")
    created = thru_dt or from_dt
    if created is None:
        v.problem("missing_value", "CLM_THRU_DT", "CLM_THRU_DT is required (it dates the claim)")
        return None
    return ClaimFacts(bene, coverage_id("b", bene, created[:4]), created, from_dt, thru_dt)


def map_carrier(layout: Layout, claim_id: str, facts: ClaimFacts, v: RowValues) -> dict[str, Any] | None:
    """The EOB of a row that passed the row check (``check_row``) and gave ``facts``."""
    bene, from_dt, thru_dt, created = facts.bene_id, facts.from_dt, facts.thru_dt, facts.created
    used = [n for n in range(1, CARRIER_LINES + 1) if _line_used(v, n)]
    line_amounts = {
        n: [(s, v.amount(col)) for s, col in zip(CARRIER_LINE_AMOUNTS, _SLOTS[n].amounts, strict=True)]
        for n in used
    }
    if v.issues:
        return None
    eob = eob_header(layout, claim_id, bene)
    period = period_of(from_dt, thru_dt)
    if period:
        eob["billablePeriod"] = period
    eob["created"] = created
    eob["insurer"] = ref("Organization", PAYER_ID)
    tax = next((t for n in used if (t := v.text(_SLOTS[n].tax))), None)
    if tax:
        eob["provider"] = {
            "identifier": {
                "type": coded(HL7 + "v2-0203", "TAX", "Tax ID number"),
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
        npi = v.text(_SLOTS[n].npi)
        if npi and npi not in care_seq:
            care_seq[npi] = len(care_team) + 1
            care_team.append(care_team_member(care_seq[npi], npi, "rendering", responsible=True))
    if care_team:
        eob["careTeam"] = care_team

    dx = Diagnoses()
    add_claim_diagnoses(dx, v, 8, carrier=True)
    line_dx: dict[int, int] = {}
    for n in used:
        code = v.text(_SLOTS[n].dx)
        if code:
            line_dx[n] = dx.sequence_of(code) or dx.add(code, C4BB_DX, "secondary")
    if dx.entries:
        eob["diagnosis"] = dx.entries
    eob["insurance"] = [{"focal": True, "coverage": {"reference": f"Coverage/{facts.coverage_id}"}}]

    items = []
    # Exact sums of the line amounts' CSV text (Decimal), so a total needs no rounding.
    totals: dict[str, tuple[tuple[str, str, str], Decimal]] = {}  # column -> (category, sum)
    for n in used:
        item: dict[str, Any] = {"sequence": n}
        extensions = []
        slot = _SLOTS[n]
        tax_n = v.text(slot.tax)
        if tax_n:  # not shared: one per provider, too many to keep
            extensions.append({"url": BB + "tax_num", "valueCoding": coding(BB + "tax_num", tax_n)})
        indicator = v.text(slot.indicator)
        if indicator:
            extensions.append(_indicator_extension(indicator))
        if extensions:
            item = {"extension": extensions, **item}
        npi = v.text(slot.npi)
        if npi:
            item["careTeamSequence"] = [care_seq[npi]]
        if n in line_dx:
            item["diagnosisSequence"] = [line_dx[n]]
        item["productOrService"] = product(v.text(slot.hcpcs))
        if period:
            item["servicedPeriod"] = dict(period)
        adjudication = [payment_status()]
        for (column, system, code, variable), amount in line_amounts[n]:
            if amount is None:
                continue
            adjudication.append(amount_entry(system, code, variable, amount))
            previous = totals.get(column, ((system, code, variable), Decimal(0)))[1]
            totals[column] = ((system, code, variable), previous + amount)
        item["adjudication"] = adjudication
        items.append(item)
    if not items:
        items.append({"sequence": 1, "productOrService": product(None)})
    eob["item"] = items
    eob["total"] = [
        amount_entry(*category, total)
        for column, *_ in CARRIER_LINE_AMOUNTS
        if column in totals
        for category, total in [totals[column]]
    ]
    if not eob["total"]:
        del eob["total"]
    if "LINE_NCH_PMT_AMT" in totals:
        eob["payment"] = {"amount": money(totals["LINE_NCH_PMT_AMT"][1])}
    return eob


@lru_cache(maxsize=256)  # shared: see processors.csv_claims.fhir; a handful of processing codes
def _indicator_extension(code: str) -> dict[str, Any]:
    """A line's processing indicator as BFD writes it: an extension with a Coding."""
    return shared({"url": BB + "line_prcsg_ind_cd", "valueCoding": coding(BB + "line_prcsg_ind_cd", code)})
