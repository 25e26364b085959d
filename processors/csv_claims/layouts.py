"""The five CMS DE-SynPUF layouts, recognised by their header row (never by the file name).

Column names are compared trimmed and upper-cased, as a set: the CMS files quote the header and
the OHDSI copies do not, and the mappers read fields by name, so order does not matter. A layout
matches only if the header has exactly its columns (plus ``YEAR`` for the multi-year Beneficiary
variant), so a file with a missing or extra column is not silently half-read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def _numbered(prefix: str, count: int) -> list[str]:
    return [f"{prefix}_{n}" for n in range(1, count + 1)]


BENEFICIARY = [
    "DESYNPUF_ID", "BENE_BIRTH_DT", "BENE_DEATH_DT", "BENE_SEX_IDENT_CD", "BENE_RACE_CD",
    "BENE_ESRD_IND", "SP_STATE_CODE", "BENE_COUNTY_CD", "BENE_HI_CVRAGE_TOT_MONS",
    "BENE_SMI_CVRAGE_TOT_MONS", "BENE_HMO_CVRAGE_TOT_MONS", "PLAN_CVRG_MOS_NUM",
    "SP_ALZHDMTA", "SP_CHF", "SP_CHRNKIDN", "SP_CNCR", "SP_COPD", "SP_DEPRESSN", "SP_DIABETES",
    "SP_ISCHMCHT", "SP_OSTEOPRS", "SP_RA_OA", "SP_STRKETIA",
    "MEDREIMB_IP", "BENRES_IP", "PPPYMT_IP", "MEDREIMB_OP", "BENRES_OP", "PPPYMT_OP",
    "MEDREIMB_CAR", "BENRES_CAR", "PPPYMT_CAR",
]  # fmt: skip

INPATIENT = [
    "DESYNPUF_ID", "CLM_ID", "SEGMENT", "CLM_FROM_DT", "CLM_THRU_DT", "PRVDR_NUM", "CLM_PMT_AMT",
    "NCH_PRMRY_PYR_CLM_PD_AMT", "AT_PHYSN_NPI", "OP_PHYSN_NPI", "OT_PHYSN_NPI", "CLM_ADMSN_DT",
    "ADMTNG_ICD9_DGNS_CD", "CLM_PASS_THRU_PER_DIEM_AMT", "NCH_BENE_IP_DDCTBL_AMT",
    "NCH_BENE_PTA_COINSRNC_LBLTY_AM", "NCH_BENE_BLOOD_DDCTBL_LBLTY_AM", "CLM_UTLZTN_DAY_CNT",
    "NCH_BENE_DSCHRG_DT", "CLM_DRG_CD",
    *_numbered("ICD9_DGNS_CD", 10), *_numbered("ICD9_PRCDR_CD", 6), *_numbered("HCPCS_CD", 45),
]  # fmt: skip

OUTPATIENT = [
    "DESYNPUF_ID", "CLM_ID", "SEGMENT", "CLM_FROM_DT", "CLM_THRU_DT", "PRVDR_NUM", "CLM_PMT_AMT",
    "NCH_PRMRY_PYR_CLM_PD_AMT", "AT_PHYSN_NPI", "OP_PHYSN_NPI", "OT_PHYSN_NPI",
    "NCH_BENE_BLOOD_DDCTBL_LBLTY_AM",
    *_numbered("ICD9_DGNS_CD", 10), *_numbered("ICD9_PRCDR_CD", 6),
    "NCH_BENE_PTB_DDCTBL_AMT", "NCH_BENE_PTB_COINSRNC_AMT", "ADMTNG_ICD9_DGNS_CD",
    *_numbered("HCPCS_CD", 45),
]  # fmt: skip

CARRIER_LINE_GROUPS = [
    "PRF_PHYSN_NPI", "TAX_NUM", "HCPCS_CD", "LINE_NCH_PMT_AMT", "LINE_BENE_PTB_DDCTBL_AMT",
    "LINE_BENE_PRMRY_PYR_PD_AMT", "LINE_COINSRNC_AMT", "LINE_ALOWD_CHRG_AMT", "LINE_PRCSG_IND_CD",
    "LINE_ICD9_DGNS_CD",
]  # fmt: skip
CARRIER_LINES = 13
CARRIER = [
    "DESYNPUF_ID", "CLM_ID", "CLM_FROM_DT", "CLM_THRU_DT", *_numbered("ICD9_DGNS_CD", 8),
    *[col for group in CARRIER_LINE_GROUPS for col in _numbered(group, CARRIER_LINES)],
]  # fmt: skip

PDE = [
    "DESYNPUF_ID", "PDE_ID", "SRVC_DT", "PROD_SRVC_ID", "QTY_DSPNSD_NUM", "DAYS_SUPLY_NUM",
    "PTNT_PAY_AMT", "TOT_RX_CST_AMT",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Layout:
    key: str  # processor suffix and EOB id prefix
    title: str
    columns: tuple[str, ...]
    claim_column: str | None  # the claim id column (None for Beneficiary)
    segmented: bool = False


LAYOUTS: dict[str, Layout] = {
    layout.key: layout
    for layout in (
        Layout("beneficiary", "Beneficiary Summary", tuple(BENEFICIARY), None),
        Layout("inpatient", "Inpatient Claims", tuple(INPATIENT), "CLM_ID", segmented=True),
        Layout("outpatient", "Outpatient Claims", tuple(OUTPATIENT), "CLM_ID", segmented=True),
        Layout("carrier", "Carrier Claims", tuple(CARRIER), "CLM_ID"),
        Layout("pde", "Prescription Drug Events", tuple(PDE), "PDE_ID"),
    )
}
YEAR_COLUMN = "YEAR"


def normalise(header: Sequence[str]) -> list[str]:
    return [name.strip().upper() for name in header]


def detect_layout(header: Sequence[str]) -> Layout | None:
    names = normalise(header)
    if len(set(names)) != len(names):
        return None
    found = set(names)
    for layout in LAYOUTS.values():
        if found == set(layout.columns):
            return layout
        if layout.key == "beneficiary" and found == {*layout.columns, YEAR_COLUMN}:
            return layout
    return None


def closest_layout(header: Sequence[str]) -> tuple[Layout, list[str]] | None:
    """The layout sharing most columns with ``header`` and the columns it lacks, for messages
    about near misses (only our own column names are reported, never the file's)."""
    found = set(normalise(header))
    best: tuple[int, Layout] | None = None
    for layout in LAYOUTS.values():
        shared = len(found & set(layout.columns))
        if shared and (best is None or shared > best[0]):
            best = (shared, layout)
    if best is None or best[0] < len(best[1].columns) // 2:
        return None
    layout = best[1]
    return layout, [c for c in layout.columns if c not in found]


# Typed columns, checked on every row before mapping so each problem is reported once, with
# its column, whatever the mapper later reads.
_CARRIER_AMOUNTS = [
    f"{group}_{n}"
    for group in CARRIER_LINE_GROUPS
    if group.startswith("LINE_") and group.endswith("_AMT")
    for n in range(1, CARRIER_LINES + 1)
]
DATES: dict[str, tuple[str, ...]] = {
    "beneficiary": ("BENE_BIRTH_DT", "BENE_DEATH_DT"),
    "inpatient": ("CLM_FROM_DT", "CLM_THRU_DT", "CLM_ADMSN_DT", "NCH_BENE_DSCHRG_DT"),
    "outpatient": ("CLM_FROM_DT", "CLM_THRU_DT"),
    "carrier": ("CLM_FROM_DT", "CLM_THRU_DT"),
    "pde": ("SRVC_DT",),
}
AMOUNTS: dict[str, tuple[str, ...]] = {
    "beneficiary": tuple(c for c in BENEFICIARY if c.split("_")[0] in ("MEDREIMB", "BENRES", "PPPYMT")),
    "inpatient": (
        "CLM_PMT_AMT", "NCH_PRMRY_PYR_CLM_PD_AMT", "CLM_PASS_THRU_PER_DIEM_AMT", "NCH_BENE_IP_DDCTBL_AMT",
        "NCH_BENE_PTA_COINSRNC_LBLTY_AM", "NCH_BENE_BLOOD_DDCTBL_LBLTY_AM",
    ),
    "outpatient": (
        "CLM_PMT_AMT", "NCH_PRMRY_PYR_CLM_PD_AMT", "NCH_BENE_BLOOD_DDCTBL_LBLTY_AM",
        "NCH_BENE_PTB_DDCTBL_AMT", "NCH_BENE_PTB_COINSRNC_AMT",
    ),
    "carrier": tuple(_CARRIER_AMOUNTS),
    "pde": ("QTY_DSPNSD_NUM", "PTNT_PAY_AMT", "TOT_RX_CST_AMT"),
}  # fmt: skip
INTEGERS: dict[str, tuple[tuple[str, int | None, int | None], ...]] = {
    "beneficiary": tuple(
        (c, 0, 12)
        for c in (
            "BENE_HI_CVRAGE_TOT_MONS",
            "BENE_SMI_CVRAGE_TOT_MONS",
            "BENE_HMO_CVRAGE_TOT_MONS",
            "PLAN_CVRG_MOS_NUM",
        )
    ),
    "inpatient": (("SEGMENT", 1, 2), ("CLM_UTLZTN_DAY_CNT", 0, None)),
    "outpatient": (("SEGMENT", 1, 2),),
    "carrier": (),
    "pde": (("DAYS_SUPLY_NUM", 0, None),),
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "beneficiary": ("DESYNPUF_ID",),
    "inpatient": ("DESYNPUF_ID", "CLM_ID", "SEGMENT"),
    "outpatient": ("DESYNPUF_ID", "CLM_ID", "SEGMENT"),
    "carrier": ("DESYNPUF_ID", "CLM_ID"),
    "pde": ("DESYNPUF_ID", "PDE_ID", "SRVC_DT"),
}
