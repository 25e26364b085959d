"""Which code systems are known terminologies, and which system URLs are malformed."""

from __future__ import annotations

import re
from functools import lru_cache

# Canonical URLs of the terminologies named by FHIR R4 ("Using Codes in Resources", 4.0.1
# terminologies.html#4.3.0) that US health data uses, plus the HL7-defined ones by prefix.
KNOWN_SYSTEMS = frozenset(
    {
        "http://loinc.org",
        "http://snomed.info/sct",
        "http://www.nlm.nih.gov/research/umls/rxnorm",
        "http://hl7.org/fhir/sid/icd-10-cm",
        "http://hl7.org/fhir/sid/icd-10",
        "http://hl7.org/fhir/sid/icd-9-cm",
        "http://www.cms.gov/Medicare/Coding/ICD10",  # ICD-10-PCS
        "http://www.cms.gov/Medicare/Coding/ICD9",
        "http://www.ama-assn.org/go/cpt",
        "urn:oid:2.16.840.1.113883.6.285",  # HCPCS Level II
        "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
        "http://hl7.org/fhir/sid/ndc",
        "http://hl7.org/fhir/sid/cvx",
        "http://unitsofmeasure.org",
        "http://nucc.org/provider-taxonomy",
        "http://www.nubc.org/patient-discharge",
        "http://www.ada.org/cdt",
        "http://dicom.nema.org/resources/ontology/DCM",
        "urn:ietf:bcp:47",
        "urn:ietf:bcp:13",
        "urn:iso:std:iso:3166",
        "urn:iso:std:iso:4217",
        "urn:oid:2.16.840.1.113883.6.238",  # CDC Race & Ethnicity
        "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode",  # US Core's format codes
    }
)
KNOWN_PREFIXES = (
    "http://terminology.hl7.org/",
    "http://hl7.org/fhir/",
    "https://bluebutton.cms.gov/resources/",
    "https://bluebutton.cms.gov/",
)
# An absolute URI (RFC 3986 scheme, then something without spaces).
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")


@lru_cache(maxsize=4096)
def classify(system: str) -> str:
    """``known``, ``unknown`` (a well-formed URI that is not a known terminology) or
    ``malformed`` (not an absolute URI, as Coding.system must be)."""
    if not _URI.match(system):
        return "malformed"
    if system in KNOWN_SYSTEMS or system.startswith(KNOWN_PREFIXES):
        return "known"
    return "unknown"
