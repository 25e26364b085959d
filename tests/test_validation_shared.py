"""Objects a mapper shares between resources (``dropzone.validation.shared``) are walked once
per rule they stand under: the verdict must stay what a walk of a fresh copy gives, wherever
the object is put, whatever it holds."""

from __future__ import annotations

import copy
from typing import Any

from dropzone.validation import r4, shared, validate_resource


def _observation(code: Any, **more: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": "o1", "status": "final", "code": code, **more}


def _issues(resource: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(i.code, i.path) for i in validate_resource(resource)]


def test_a_shared_object_valid_once_is_valid_again_under_the_same_rule() -> None:
    concept = shared({"coding": [{"system": "http://loinc.org", "code": "1234-5"}]})
    assert _issues(_observation(concept)) == []
    assert _issues(_observation(concept)) == []
    assert _issues(_observation(copy.deepcopy(concept))) == []


def test_a_shared_object_is_judged_again_under_another_rule() -> None:
    concept = shared({"coding": [{"system": "http://loinc.org", "code": "1234-5"}]})
    assert _issues(_observation(concept)) == []
    # The same object where a Quantity is expected: no 'coding' element there.
    fresh = _issues(_observation({"text": "x"}, valueQuantity=copy.deepcopy(concept)))
    again = _issues(_observation({"text": "x"}, valueQuantity=concept))
    assert again == fresh == [("unknown_element", "Observation.valueQuantity.coding")]


def test_a_defect_in_a_shared_object_is_reported_every_time_with_its_path() -> None:
    concept = shared({"coding": [{"system": "http://loinc.org", "code": ""}]})
    first = _issues(_observation(concept))
    assert first == [("invalid_value", "Observation.code.coding[0].code")]
    assert _issues(_observation(concept)) == first
    assert _issues(_observation({"text": "x"}, bodySite=concept)) == [
        ("invalid_value", "Observation.bodySite.coding[0].code")
    ]


def test_a_shared_reference_to_a_contained_resource_is_checked_in_each_resource() -> None:
    subject = shared({"reference": "#p1"})
    contained = [{"resourceType": "Patient", "id": "p1"}]
    code = {"text": "x"}
    assert _issues(_observation(code, subject=subject, contained=contained)) == []
    # The same object in a resource without that contained Patient: unresolved there.
    assert _issues(_observation(code, subject=subject)) == [
        ("unresolved_contained_reference", "Observation.subject.reference")
    ]


def test_a_full_registry_forgets_only_the_objects_nothing_else_holds(monkeypatch: Any) -> None:
    monkeypatch.setattr(r4, "_SHARED", {})
    monkeypatch.setattr(r4, "_SHARED_LIMIT", 8)
    monkeypatch.setattr(r4, "_sweep_at", 8)
    held = shared({"coding": [{"system": "http://loinc.org", "code": "1234-5"}]})
    assert _issues(_observation(held)) == []
    for n in range(50):  # built, marked and dropped, as a bounded cache drops what it evicts
        shared({"text": f"t{n}"})
    assert id(held) in r4._SHARED and r4._SHARED[id(held)][1], "still marked, verdict kept"
    assert len(r4._SHARED) <= 8
    # Objects still held are kept however many: the next sweep waits until twice as many.
    kept = [shared({"text": f"k{n}"}) for n in range(50)]
    assert all(id(obj) in r4._SHARED for obj in kept)
    assert r4._sweep_at >= 8
