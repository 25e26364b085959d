"""``settle.validation_issues`` reads a digest's body with plain orjson first and only an
invalid resource exactly: the verdict and the report must be those of the exact reading, for
every kind of number a body can hold."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from dropzone.pipeline.settle import validation_issues
from dropzone.validation import validate_resource
from processors import fhir_json
from processors.fhir_json import JsonDecimal


def _observation(**value: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"text": "x"},
        **value,
    }


def _exact(resource: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    body = fhir_json.dumps(resource)
    return [(i.code, i.message, i.path) for i in validate_resource(fhir_json.loads(body))]


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ({"valueQuantity": {"value": JsonDecimal("80.00")}}, True),  # orjson: the float 80.0
        ({"valueQuantity": {"value": JsonDecimal("1E+400")}}, True),  # orjson cannot read it
        ({"valueQuantity": {"value": 2**70}}, True),  # orjson: a float; a decimal either way
        ({"valueInteger": 2**70}, False),  # exact: out of range; orjson: not an integer
        ({"valueInteger": -(2**64)}, False),
        ({"valueInteger": JsonDecimal("80.00")}, False),
        ({"valueInteger": 2**31 - 1}, True),
        ({"valueInteger": 2**31}, False),
        ({"valueQuantity": {"value": 1.5}, "valueInteger": 1}, False),  # two choice variants
    ],
)
def test_the_quick_reading_gives_the_exact_verdict_and_report(value: dict[str, Any], valid: bool) -> None:
    resource = _observation(**value)
    expected = _exact(resource)
    assert (expected == []) is valid
    assert validation_issues(fhir_json.dumps(resource)) == expected


def test_a_claim_with_many_decimal_amounts_is_valid_without_the_exact_parse() -> None:
    amounts = [
        {"value": fhir_json.number(Decimal(f"{n}.{n % 100:02d}")), "currency": "USD"} for n in range(50)
    ]
    eob = {
        "resourceType": "ExplanationOfBenefit",
        "id": "e1",
        "status": "active",
        "type": {"text": "carrier"},
        "use": "claim",
        "patient": {"reference": "Patient/p"},
        "created": "2009-01-01",
        "insurer": {"reference": "Organization/cms"},
        "provider": {"reference": "Practitioner/x"},
        "outcome": "complete",
        "insurance": [{"focal": True, "coverage": {"reference": "Coverage/c"}}],
        "total": [{"category": {"text": f"t{n}"}, "amount": amount} for n, amount in enumerate(amounts)],
    }
    assert _exact(eob) == []
    assert validation_issues(fhir_json.dumps(eob)) == []
