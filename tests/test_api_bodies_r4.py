"""The FHIR bodies the API writes itself are valid R4: every OperationOutcome shape it can
answer (each status it maps, with and without element issues) passes the R4 4.0.1 validator
that guards ingest, and fhir.resources' model as a second opinion (OperationOutcome is the
same in R4 and R4B). The CapabilityStatement is checked the same way over HTTP in
``test_api_search``."""

from __future__ import annotations

import pytest

from dropzone.api.errors import _FHIR_CODES, operation_outcome
from dropzone.pipeline.validate_fhir_resources import validate_resource as second_opinion
from dropzone.validation import validate_resource
from processors.base import Issue

ELEMENT_ISSUES = [
    Issue("invalid.required", "a required element is missing", "Patient.gender"),
    Issue("invalid.code", "the code is not in the required value set", "Observation.status"),
    Issue("unknown_element", "the element is not defined for this type"),
]


@pytest.mark.parametrize("status", sorted({*_FHIR_CODES, 500, 502}))
@pytest.mark.parametrize("issues", [[], ELEMENT_ISSUES], ids=["plain", "with-issues"])
def test_every_operation_outcome_the_api_writes_is_valid_r4(status: int, issues: list[Issue]) -> None:
    body = operation_outcome(status, "some_code", "what went wrong", issues)
    assert body["resourceType"] == "OperationOutcome"
    assert len(body["issue"]) == max(1, len(issues))
    assert validate_resource(body) == []
    assert second_opinion(body) == []
