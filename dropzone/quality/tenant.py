"""``tenant_quality``: the quality profile of everything a tenant holds, plus the checks that
need the whole tenant (shared identifiers, patients nothing refers to, unresolved references)."""

from __future__ import annotations

import hashlib
from typing import Any

from dropzone.quality.profile import EXAMPLES, QualityProfile, now_text
from dropzone.search.index import REF_PREFIX, search_rows
from dropzone.search.references import reference_report
from dropzone.store.base import ResourceStore, identifier_rows

# Types for which two resources with one identifier are likely one real-world entity twice.
IDENTITY_TYPES = frozenset({"Patient", "Practitioner", "Organization", "Location", "RelatedPerson", "Device"})


def _identity(rtype: str, system: str, value: str) -> bytes:
    # 8 bytes per identifier instead of the value itself: a tenant has millions.
    return hashlib.blake2b(f"{rtype}|{system}|{value}".encode(), digest_size=8).digest()


def tenant_quality(store: ResourceStore, tenant: str) -> dict[str, Any]:
    """Streams every current resource of the tenant once (memory: a few bytes per identifier
    and per Patient id), then reads the reference index."""
    profile = QualityProfile(now_text())
    first_holder: dict[bytes, str] = {}
    patients: set[str] = set()
    counts = store.tenant_counts([tenant]).get(tenant, {})
    for rtype in sorted(counts):
        for resource in store.iter_resources(tenant, rtype):
            rid = resource.get("id", "")
            profile.add(rtype, rid, search_rows(resource), resource)
            if rtype == "Patient":
                patients.add(rid)
            if rtype in IDENTITY_TYPES:
                for value, system in identifier_rows(resource):
                    key = _identity(rtype, system, value)
                    holder = first_holder.setdefault(key, rid)
                    if holder != rid:
                        tally = profile.finding("shared_identifier", rtype, f"{rtype}.identifier")
                        if len(tally.examples) < EXAMPLES and holder not in tally.examples:
                            tally.examples.append(holder)
                        tally.add(rid)
    first_holder.clear()
    referenced: set[str] = set()
    for rtype, _rid, key in store.reference_keys(tenant):
        if rtype == "Patient":
            continue
        ref = key[len(REF_PREFIX) :].partition("|")[2]
        if ref.startswith("Patient/"):
            referenced.add(ref[len("Patient/") :])
    lonely = sorted(patients - referenced)
    if lonely:
        tally = profile.finding("patient_without_data", "Patient", "Patient")
        tally.count = len(lonely)
        tally.examples = lonely[:EXAMPLES]
    references = reference_report(store, tenant)
    out = profile.as_json()
    for group in references["groups"]:
        out["findings"].append(
            {
                "check": "unresolved_reference",
                "resource_type": group["source_type"],
                "path": group["path"],
                "target_type": group["target_type"],
                "reason": group["reason"],
                "count": group["count"],
                "example_ids": group["example_ids"],
            }
        )
    return {
        "tenant": tenant,
        "generated_at": profile.now,
        **out,
        "references": {"total": references["references"], "unresolved": references["unresolved"]},
    }
