"""The SynPUF mappers share constant elements between resources (``processors.csv_claims.fhir``):
nothing on the way to the store may change them, or every later claim would carry the change."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from csv_helpers import SYNPUF, make_context, mapped_records
from synpuf_fixtures import COLUMNS, carrier_rows, write_csv

from conftest import PipelineFactory, drop
from dropzone.models import Outcome
from dropzone.store.memory import MemoryStore
from dropzone.store.sqlite import SqliteStore
from processors import fhir_json
from processors.csv_claims import carrier, eob, fhir
from processors.csv_claims.synpuf import PROCESSORS

INPATIENT = SYNPUF / "DE1_0_2008_to_2010_Inpatient_Claims_Sample_1.csv"
SHARED = (
    fhir.coded,
    fhir.bb_category,
    fhir._money,
    fhir._amount_entry,
    eob.product,
    eob.payment_status,
    carrier._indicator_extension,
)


def _clear_shared() -> None:
    for builder in SHARED:
        builder.cache_clear()


def _mapped(path: Path, layout: str) -> dict[str, bytes]:
    """Every resource the layout's processor maps from ``path``, as text, by type/id."""
    context = make_context(path, MemoryStore().resources)
    return {
        f"{r['resourceType']}/{r['id']}": fhir_json.dumps(r)
        for record in mapped_records(PROCESSORS[layout](context))
        for r in record.resources
    }


def _without_meta(text: bytes) -> bytes:
    return fhir_json.dumps({k: v for k, v in fhir_json.loads(text).items() if k != "meta"})


def test_mapped_claims_share_their_constant_elements(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "car.csv", COLUMNS["carrier"], carrier_rows(20), quote_header=False)
    context = make_context(path, MemoryStore().resources)
    eobs = [
        r
        for record in mapped_records(PROCESSORS["carrier"](context))
        for r in record.resources
        if r["resourceType"] == "ExplanationOfBenefit" and "careTeam" in r
    ]
    first, second = eobs[0], eobs[1]
    assert first["item"][0]["adjudication"][0] is second["item"][0]["adjudication"][0]  # payment status
    assert first["careTeam"][0]["role"] is second["careTeam"][0]["role"]
    assert first["careTeam"][0] is not second["careTeam"][0]  # the member itself is the claim's own
    # An amount entry (category and Money) is one object per category and amount text, reused
    # across lines and claims.
    by_text: dict[bytes, set[int]] = {}
    uses = 0
    for e in eobs:
        for entry in [*(a for item in e["item"] for a in item["adjudication"][1:]), *e.get("total", [])]:
            by_text.setdefault(fhir_json.dumps(entry), set()).add(id(entry))
            uses += 1
    assert all(len(ids) == 1 for ids in by_text.values())
    assert uses > len(by_text)


@pytest.mark.parametrize("layout", ["carrier", "inpatient"])
def test_the_pipeline_changes_no_shared_element(
    layout: str, zone: Path, tmp_path: Path, make_pipeline: PipelineFactory
) -> None:
    if layout == "carrier":
        source = write_csv(tmp_path / "car.csv", COLUMNS["carrier"], carrier_rows(150), quote_header=False)
    else:
        source = INPATIENT
    _clear_shared()
    store = SqliteStore(zone / "store.sqlite")
    drop(zone, "acme", source)
    results = make_pipeline(store).drain()
    assert [r.outcome for r in results] == [Outcome.ARCHIVED], [r.reason for r in results]

    stored: dict[str, Any] = {}
    for rtype in ("ExplanationOfBenefit", "Patient", "Coverage"):
        for doc in store.resources.iter_resources("acme", rtype):
            body = {k: v for k, v in doc.items() if k != "meta"}
            stored[f"{rtype}/{doc['id']}"] = fhir_json.dumps(body)
    # The shared elements, as the pipeline left them, against the same builders called afresh.
    assert fhir.coded(fhir.ICD9, "4019") == fhir.coded.__wrapped__(fhir.ICD9, "4019")
    assert eob.payment_status() == eob.payment_status.__wrapped__()
    # Mapped again from clean caches: every claim stored as the uncached mapping writes it, so no
    # element changed between the first claim that built it and the last that shared it.
    _clear_shared()
    expected = _mapped(source, layout)
    eob_ids = [k for k in expected if k.startswith("ExplanationOfBenefit/")]
    assert len(eob_ids) >= 100
    for key in eob_ids:
        assert stored[key] == _without_meta(expected[key]), key


@pytest.mark.parametrize(
    "build",
    [fhir.money, lambda value: fhir.amount_entry(fhir.C4BB + "C4BBAdjudication", "coinsurance", "x", value)],
    ids=["money", "amount_entry"],
)
def test_shared_amounts_keep_their_digits(build: Any) -> None:
    _clear_shared()
    amounts = [build(Decimal(text)) for text in ("80.00", "80.0", "80", "80.00")]
    # Equal Decimals, different JSON texts: one shared object per text, never per value.
    assert amounts[0] is amounts[3] and amounts[0] is not amounts[1]
    assert [fhir_json.dumps(a.get("amount", a)) for a in amounts] == [
        b'{"value":80.00,"currency":"USD"}',
        b'{"value":80.0,"currency":"USD"}',
        b'{"value":80,"currency":"USD"}',
        b'{"value":80.00,"currency":"USD"}',
    ]
