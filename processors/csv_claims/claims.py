"""A SynPUF claim's facts and EOB, by layout, and the claim as a payload for a worker process.

The processor reads, checks and groups rows and works out each claim's facts in the pipeline's
main process; building the EOB is most of the mapping's cost, so it happens where the pipeline
digests and validates: in a worker, from a small payload (``claim_payload``), through the
processor's ``raw_parser`` (``map_claim_payload``).
"""

from __future__ import annotations

from typing import Any

from processors.base import Issue, RawParsed
from processors.csv_claims.carrier import carrier_facts, map_carrier
from processors.csv_claims.eob import ClaimFacts, ClaimRow
from processors.csv_claims.institutional import institutional_facts, map_institutional
from processors.csv_claims.layouts import LAYOUTS, Layout
from processors.csv_claims.pde import map_pde, pde_facts
from processors.csv_claims.values import RowValues

# layout key, local namespace, column -> position, claim id, its facts, (SEGMENT, fields) per
# row. The column index is one object per file, so pickling a batch of payloads writes it once.
ClaimPayload = tuple[str, str, dict[str, int], str, ClaimFacts, list[tuple[int, list[str]]]]

UNMAPPABLE = Issue("unmappable_claim", "the claim passed its row checks but could not be mapped")


def claim_facts(layout: Layout, bene: str, rows: list[ClaimRow]) -> ClaimFacts | None:
    """None, with the problem in the rows' values, when the claim cannot be dated."""
    if layout.key in ("inpatient", "outpatient"):
        return institutional_facts(layout, bene, rows)
    if layout.key == "carrier":
        return carrier_facts(bene, rows[0].values)
    return pde_facts(bene, rows[0].values)


def build_eob(
    layout: Layout, claim_id: str, facts: ClaimFacts, rows: list[ClaimRow], local: str
) -> dict[str, Any] | None:
    if layout.key in ("inpatient", "outpatient"):
        return map_institutional(layout, claim_id, facts, rows, local)
    if layout.key == "carrier":
        return map_carrier(layout, claim_id, facts, rows[0].values)
    return map_pde(layout, claim_id, facts, rows[0].values)


def claim_payload(
    layout: Layout,
    local: str,
    index: dict[str, int],
    claim_id: str,
    facts: ClaimFacts,
    rows: list[ClaimRow],
) -> ClaimPayload:
    return (layout.key, local, index, claim_id, facts, [(r.segment, r.values.fields) for r in rows])


def map_claim_payload(payload: ClaimPayload) -> RawParsed:
    """``raw_parser`` of the claim layouts: a checked claim's payload -> its EOB. The issues
    path is there for safety only, as the row check and the facts leave the mapper nothing to
    reject."""
    key, local, index, claim_id, facts, sent = payload
    rows = [ClaimRow(RowValues(index, fields), segment) for segment, fields in sent]
    eob = build_eob(LAYOUTS[key], claim_id, facts, rows, local)
    if eob is None:
        issues = [i for r in rows for i in r.values.issues]
        return [], issues or [UNMAPPABLE]
    return [eob], []
