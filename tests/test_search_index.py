"""What one resource contributes to the search index (``dropzone.search.index.search_rows``).

``search_rows`` follows only the indexed paths whose first element a resource has; these pin its
rows for top-level, repeated and backbone paths, so a faster reading cannot change the index."""

from __future__ import annotations

from typing import Any

from dropzone.search.index import CONDITIONAL_KEY, search_rows

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}, {"code": "local"}]},
    "subject": {"reference": "Patient/p1/_history/2"},
    "performer": [
        {"reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|99"},
        {"reference": "#c1"},
        {"display": "no reference"},
    ],
    "effectivePeriod": {"start": "2020-01-01", "end": "2020-01-02T10:00:00Z"},
    "issued": "2020-01-03T00:00:00Z",  # not a search parameter of Observation
}


def test_tokens_references_conditional_references_and_a_period_are_indexed() -> None:
    keys, dates = search_rows(OBSERVATION)
    assert keys == [
        ">performer|Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|99",
        ">subject|Patient/p1",  # a versioned reference is indexed without its version
        "code=*|8302-2",
        "code=*|local",
        "code=http://loinc.org|8302-2",
        "code=|local",
        "status=*|final",
        "status=|final",
        CONDITIONAL_KEY,
        "~c|Practitioner|http://hl7.org/fhir/sid/us-npi|99",  # waits for that practitioner
    ]
    assert dates == [("date", "2020-01-01T00:00:00.000Z", "2020-01-02T10:00:00.999Z")]


def test_references_inside_repeated_backbone_elements_are_indexed_by_their_path() -> None:
    eob = {
        "resourceType": "ExplanationOfBenefit",
        "id": "e1",
        "status": "active",
        "patient": {"reference": "Patient/p1"},
        "careTeam": [
            {"sequence": 1, "provider": {"reference": "Practitioner/d1"}},
            {"sequence": 2, "provider": {"reference": "Practitioner/d2"}},
        ],
        "item": [{"sequence": 1, "encounter": [{"reference": "Encounter/v1"}]}],
        "created": "2020-02-01",
    }
    keys, dates = search_rows(eob)
    assert keys == [
        ">careTeam.provider|Practitioner/d1",
        ">careTeam.provider|Practitioner/d2",
        ">item.encounter|Encounter/v1",
        ">patient|Patient/p1",
        "status=*|active",
        "status=|active",
    ]
    assert dates == [("created", "2020-02-01T00:00:00.000Z", "2020-02-01T23:59:59.999Z")]


def test_values_of_the_wrong_shape_give_no_rows() -> None:
    odd = {
        "resourceType": "Observation",
        "id": "o2",
        "status": None,
        "code": {"coding": "not a list"},
        "subject": ["Patient/p1"],
        "performer": [None, {"reference": None}],
        "effectivePeriod": {"start": 5},
    }
    assert search_rows(odd) == ([], [])
