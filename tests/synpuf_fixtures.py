"""Larger SynPUF-shaped fixtures of our own, in the CMS column order, for the layouts the shared
samples only hold a couple of rows of (Outpatient, Carrier, PDE). Values are random but
deterministic (seeded), shaped like the real rows: 16-hex beneficiary ids, 15-digit claim ids,
YYYYMMDD dates, ICD-9 and HCPCS codes, amounts with and without decimals."""

from __future__ import annotations

import random
from pathlib import Path

from processors.csv_claims.layouts import CARRIER, CARRIER_LINES, INPATIENT, OUTPATIENT, PDE

DX = ["4019", "25000", "V5869", "2724", "4280", "E8889", "71590", "42731", "0416", "V5861"]
HCPCS = ["99213", "G0008", "80053", "36415", "J1100", "0001F", "99214", "A0425", "85025", "G0439"]


def write_csv(path: Path, columns: list[str], rows: list[dict[str, str]], quote_header: bool = True) -> Path:
    header = ",".join(f'"{c}"' if quote_header else c for c in columns)
    lines = [header] + [",".join(row.get(c, "") for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _bene(rng: random.Random) -> str:
    return f"{rng.getrandbits(64):016X}"


def _date(rng: random.Random, year: int | None = None) -> str:
    return f"{year or rng.choice([2008, 2009, 2010])}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"


def _amount(rng: random.Random, decimals: bool) -> str:
    value = rng.choice([0, 10, 40, 60, 100, 250, 1100, 3000])
    return f"{value}.00" if decimals else str(value)


def outpatient_rows(count: int, seed: int = 4) -> tuple[list[dict[str, str]], int]:
    """Rows for ``count`` claims; every tenth claim has a SEGMENT 2 row, written before its
    segment 1 and not next to it (as in the CMS files). Returns (rows, claims)."""
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    seconds: list[dict[str, str]] = []
    for n in range(count):
        bene = _bene(rng)
        start = _date(rng)
        row = {
            "DESYNPUF_ID": bene,
            "CLM_ID": f"{542192281063886 + n}",
            "SEGMENT": "1",
            "CLM_FROM_DT": start,
            "CLM_THRU_DT": start,
            "PRVDR_NUM": f"{rng.randint(1000, 9999)}{rng.choice(['OU', 'PA', 'QB'])}",
            "CLM_PMT_AMT": _amount(rng, n % 2 == 0),
            "NCH_PRMRY_PYR_CLM_PD_AMT": "0",
            "AT_PHYSN_NPI": str(rng.randint(10**9, 10**10 - 1)),
            "OP_PHYSN_NPI": "",
            "OT_PHYSN_NPI": str(rng.randint(10**9, 10**10 - 1)) if n % 3 == 0 else "",
            "NCH_BENE_BLOOD_DDCTBL_LBLTY_AM": "0",
            "NCH_BENE_PTB_DDCTBL_AMT": "0",
            "NCH_BENE_PTB_COINSRNC_AMT": _amount(rng, False),
            "ADMTNG_ICD9_DGNS_CD": rng.choice(DX) if n % 4 == 0 else "",
        }
        for i in range(1, rng.randint(1, 5)):
            row[f"ICD9_DGNS_CD_{i}"] = rng.choice(DX)
        for i in range(1, rng.randint(1, 8)):
            row[f"HCPCS_CD_{i}"] = rng.choice(HCPCS)
        rows.append(row)
        if n % 10 == 0:
            second = {k: v for k, v in row.items() if not k.startswith(("HCPCS", "ICD9"))}
            second.update(SEGMENT="2", CLM_FROM_DT="", CLM_THRU_DT="", HCPCS_CD_1=rng.choice(HCPCS))
            seconds.append(second)
    for k, second in enumerate(seconds):  # earlier in the file than its segment 1, not adjacent
        rows.insert(max(0, k * 10 - 3), second)
    return rows, count


def carrier_rows(count: int, seed: int = 5) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        start = _date(rng)
        row = {
            "DESYNPUF_ID": _bene(rng),
            "CLM_ID": f"{887183386040000 + n}",
            "CLM_FROM_DT": start,
            "CLM_THRU_DT": start,
        }
        for i in range(1, rng.randint(2, 9)):
            row[f"ICD9_DGNS_CD_{i}"] = rng.choice(DX)
        used = 0 if n % 25 == 0 else rng.randint(1, CARRIER_LINES)
        for line in range(1, CARRIER_LINES + 1):
            if line <= used:
                row[f"PRF_PHYSN_NPI_{line}"] = str(rng.randint(10**9, 10**10 - 1))
                row[f"TAX_NUM_{line}"] = str(rng.randint(10**8, 10**9 - 1))
                row[f"HCPCS_CD_{line}"] = rng.choice(HCPCS)
                row[f"LINE_NCH_PMT_AMT_{line}"] = _amount(rng, True)
                row[f"LINE_BENE_PTB_DDCTBL_AMT_{line}"] = "0.00"
                row[f"LINE_BENE_PRMRY_PYR_PD_AMT_{line}"] = "0.00"
                row[f"LINE_COINSRNC_AMT_{line}"] = _amount(rng, True)
                row[f"LINE_ALOWD_CHRG_AMT_{line}"] = _amount(rng, True)
                row[f"LINE_PRCSG_IND_CD_{line}"] = rng.choice("AAAARS")
                row[f"LINE_ICD9_DGNS_CD_{line}"] = rng.choice(DX)
            else:  # unused slots are zero-filled, as in the CMS files
                for group in ("LINE_NCH_PMT_AMT", "LINE_BENE_PTB_DDCTBL_AMT", "LINE_BENE_PRMRY_PYR_PD_AMT",
                              "LINE_COINSRNC_AMT", "LINE_ALOWD_CHRG_AMT"):  # fmt: skip
                    row[f"{group}_{line}"] = "0.00"
        rows.append(row)
    return rows


def pde_rows(count: int, seed: int = 6) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        product = f"{rng.randint(0, 10**11 - 1):011d}"
        if n % 17 == 0:
            product = "OTHER"  # masked product code, as in some CMS extracts
        rows.append(
            {
                "DESYNPUF_ID": _bene(rng),
                "PDE_ID": f"{233004438380000 + n}",
                "SRVC_DT": _date(rng),
                "PROD_SRVC_ID": product,
                "QTY_DSPNSD_NUM": rng.choice(["30", "30.000", "90", "7.500"]),
                "DAYS_SUPLY_NUM": rng.choice(["30", "90", "10"]),
                "PTNT_PAY_AMT": rng.choice(["0", "10", "-10", "60.00"]),
                "TOT_RX_CST_AMT": rng.choice(["10", "270", "40.00", "0"]),
            }
        )
    return rows


COLUMNS = {"inpatient": INPATIENT, "outpatient": OUTPATIENT, "carrier": CARRIER, "pde": PDE}
