"""Code systems and small FHIR element builders shared by the SynPUF mappers.

URL conventions follow CMS Blue Button 2.0 (BFD) and CARIN Blue Button (see
docs in README, "Claims CSV and mappings", and SYNPUF_MAPPING.md).

Builders of constant elements (``coded``, ``bb_category``, ``money`` and ``amount_entry``, by
the amount's text, here; ``payment_status`` and ``product`` in ``eob``) return one shared object
per arguments: a carrier claim asks for ~140 codings and ~100 amounts, and building each anew
was a third of its mapping time; marked with ``dropzone.validation.shared``, each is also
validated once, not once per resource. So a mapped resource's elements may be shared with other
resources, and nothing may change a mapped resource in place (nothing does: the pipeline
serialises it, and rewriting a conditional reference works on a fresh parse of the text,
``dropzone.search.references``); tests/test_synpuf_shared_elements.py fails if that changes.
The caches are bounded (a few tens of MB at most).
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from typing import Any

from dropzone.validation import shared
from processors import fhir_json

BB = "https://bluebutton.cms.gov/resources/variables/"
BBCS = "https://bluebutton.cms.gov/resources/codesystem/"
C4BB = "http://hl7.org/fhir/us/carin-bb/CodeSystem/"
HL7 = "http://terminology.hl7.org/CodeSystem/"
ICD9 = "http://hl7.org/fhir/sid/icd-9-cm"
NPI = "http://hl7.org/fhir/sid/us-npi"
NDC = "http://hl7.org/fhir/sid/ndc"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
MS_DRG = (
    "https://www.cms.gov/Medicare/Medicare-Fee-for-Service-Payment/AcuteInpatientPPS/"
    "MS-DRG-Classifications-and-Software"
)
TAX_OID = "urn:oid:2.16.840.1.113883.4.4"
OMB = "urn:oid:2.16.840.1.113883.6.238"
DAR_EXT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
US_CORE_RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
US_CORE_ETHNICITY = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"
DEFAULT_LOCAL = "http://example.org/fhir/synpuf"
PAYER_ID = "cms"


def coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def concept(*codings: dict[str, Any], text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": list(codings)}
    if text:
        out["text"] = text
    return out


@lru_cache(maxsize=32_768)  # shared: see the module docstring; ICD-9 has ~17,000 codes
def coded(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    """A CodeableConcept of one coding."""
    return shared(concept(coding(system, code, display)))


def money(value: Decimal) -> dict[str, Any]:
    return _money(fhir_json.decimal_text(value), value)


@lru_cache(maxsize=32_768)  # shared: see the module docstring; a claim has up to ~100 amounts
def _money(text: str, value: Decimal) -> dict[str, Any]:
    # Keyed by the amount's JSON text too: Decimal("80.00") == Decimal("80.0") (one cache entry
    # by value alone), and each must keep its digits.
    return shared({"value": fhir_json.number(value), "currency": "USD"})


def ref(rtype: str, rid: str) -> dict[str, str]:
    return {"reference": f"{rtype}/{rid}"}


@lru_cache(maxsize=4096)  # shared: see the module docstring
def bb_category(carin_system: str, carin_code: str, variable: str) -> dict[str, Any]:
    """BFD's two-coding amount category: the CARIN/HL7 code, then BBCS:adjudication whose code
    is the BB variable URL."""
    return shared(concept(coding(carin_system, carin_code), coding(BBCS + "adjudication", BB + variable)))


def amount_entry(system: str, code: str, variable: str, value: Decimal) -> dict[str, Any]:
    """An adjudication or total entry: the amount's ``bb_category`` and its Money."""
    return _amount_entry(system, code, variable, fhir_json.decimal_text(value), value)


@lru_cache(maxsize=32_768)  # shared: see the module docstring; SynPUF amounts repeat (round dollars)
def _amount_entry(system: str, code: str, variable: str, text: str, value: Decimal) -> dict[str, Any]:
    return shared({"category": bb_category(system, code, variable), "amount": _money(text, value)})


def data_absent(code: str) -> dict[str, Any]:
    return {"extension": [{"url": DAR_EXT, "valueCode": code}]}


def payer_organization() -> dict[str, Any]:
    """The one payer every SynPUF Coverage and EOB points at."""
    return {
        "resourceType": "Organization",
        "id": PAYER_ID,
        "identifier": [{"value": "CMS"}],  # as BFD writes the payer identifier
        "active": True,
        "type": [concept(coding(HL7 + "organization-type", "pay", "Payer"))],
        "name": "Centers for Medicare and Medicaid Services",
    }
