"""Prescription Drug Events -> ExplanationOfBenefit (SYNPUF_MAPPING.md 8)."""

from __future__ import annotations

from typing import Any

from processors import fhir_json
from processors.csv_claims.beneficiary import coverage_id
from processors.csv_claims.eob import C4BB_ADJ, ClaimFacts, eob_header, payment_status
from processors.csv_claims.fhir import (
    C4BB,
    HL7,
    NDC,
    PAYER_ID,
    amount_entry,
    coded,
    coding,
    concept,
    data_absent,
    ref,
)
from processors.csv_claims.layouts import Layout
from processors.csv_claims.values import RowValues


def pde_facts(bene: str, v: RowValues) -> ClaimFacts | None:
    """None, with the problem in ``v``, when the event has no service date."""
    served = v.date("SRVC_DT")
    if served is None:
        if not any(i.path == "SRVC_DT" for i in v.issues):
            v.problem("missing_value", "SRVC_DT", "SRVC_DT is required (it dates the event)")
        return None
    return ClaimFacts(bene, coverage_id("d", bene, served[:4]), served, served, served)


def map_pde(layout: Layout, pde_id: str, facts: ClaimFacts, v: RowValues) -> dict[str, Any] | None:
    """The EOB of a row that passed the row check (``check_row``) and gave ``facts``."""
    served = facts.created
    quantity = v.amount("QTY_DSPNSD_NUM")
    days = v.integer("DAYS_SUPLY_NUM", 0)
    patient_paid = v.amount("PTNT_PAY_AMT")
    total_cost = v.amount("TOT_RX_CST_AMT")
    if v.issues:
        return None
    eob = eob_header(layout, pde_id, facts.bene_id)
    eob["billablePeriod"] = {"start": served, "end": served}
    eob["created"] = served
    eob["insurer"] = ref("Organization", PAYER_ID)
    eob["provider"] = data_absent("unknown")  # SynPUF PDE has no pharmacy or prescriber
    eob["outcome"] = "complete"
    if days is not None:
        eob["supportingInfo"] = [
            {
                "sequence": 1,
                "category": coded(C4BB + "C4BBSupportingInfoType", "dayssupply"),
                "valueQuantity": {"value": days},
            }
        ]
    eob["insurance"] = [{"focal": True, "coverage": {"reference": f"Coverage/{facts.coverage_id}"}}]
    product = v.text("PROD_SRVC_ID")
    if product is None:
        product_concept = coded(HL7 + "data-absent-reason", "unknown", "Unknown")
    elif product.isdigit():
        product_concept = coded(NDC, product)
    else:  # e.g. the literal OTHER: not an NDC
        product_concept = concept(coding(HL7 + "data-absent-reason", "masked", "Masked"), text=product)
    item: dict[str, Any] = {"sequence": 1, "productOrService": product_concept, "servicedDate": served}
    if quantity is not None:
        item["quantity"] = {"value": fhir_json.number(quantity)}
    drug_cost = (
        amount_entry(C4BB_ADJ, "drugcost", "tot_rx_cst_amt", total_cost) if total_cost is not None else None
    )
    adjudication = []
    if patient_paid is not None:
        adjudication.append(amount_entry(C4BB_ADJ, "paidbypatient", "ptnt_pay_amt", patient_paid))
    if drug_cost is not None:
        adjudication.append(drug_cost)
    if adjudication:
        item["adjudication"] = adjudication
    eob["item"] = [item]
    eob["adjudication"] = [payment_status()]
    if drug_cost is not None:
        eob["total"] = [drug_cost]  # the line's cost is the event's total
    return eob
