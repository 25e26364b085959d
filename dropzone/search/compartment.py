"""A patient's whole record: the R4 Patient compartment, from the index.

Membership is what the R4 CompartmentDefinition for Patient says: a resource is in patient P's
compartment when one of its type's listed reference parameters points at ``Patient/P`` (and P
itself); a document or message Bundle, stored whole, is in it when one of its entries is. The
reference keys were indexed when each resource was stored, so the lookup is one
indexed query (SQLite) or one per resource type (MongoDB), never a scan of the data.
"""

from __future__ import annotations

from dropzone.search.index import ENTRY_PATIENT_PREFIX, REF_PREFIX
from dropzone.search.query import SearchPage
from dropzone.search.table import search_table
from dropzone.store.base import ResourceStore


def compartment_members(store: ResourceStore, tenant: str, patient_id: str) -> list[tuple[str, str]]:
    """(type, id) of every stored resource in the patient's compartment, sorted, the Patient
    included when it is stored."""
    table = search_table()
    target = f"Patient/{patient_id}"
    keys = sorted({f"{REF_PREFIX}{path}|{target}" for path in table.compartment_paths()})
    members: set[tuple[str, str]] = set()
    for rtype, rid, key in store.keyed(tenant, keys, table.compartment):
        path = key[len(REF_PREFIX) : key.index("|")]
        if path in table.compartment.get(rtype, ()):
            members.add((rtype, rid))
    # Document and message Bundles, stored whole, with an entry in the compartment (index.py).
    for rtype, rid, _key in store.keyed(tenant, [f"{ENTRY_PATIENT_PREFIX}{target}"], ("Bundle",)):
        members.add((rtype, rid))
    if store.existing(tenant, "Patient", [patient_id]):
        members.add(("Patient", patient_id))
    return sorted(members)


def everything(
    store: ResourceStore, tenant: str, patient_id: str, count: int, after: tuple[str, ...] | None
) -> SearchPage:
    """One page of ``compartment_members`` in (type, id) order after ``after``."""
    members = compartment_members(store, tenant, patient_id)
    rest = [m for m in members if after is None or m > tuple(after)]
    chosen = rest[:count]
    by_type: dict[str, list[str]] = {}
    for rtype, rid in chosen:
        by_type.setdefault(rtype, []).append(rid)
    fetched = {rtype: store.get_many(tenant, rtype, ids) for rtype, ids in by_type.items()}
    resources = [fetched[rtype][rid] for rtype, rid in chosen if rid in fetched[rtype]]
    page = SearchPage(resources, len(members))
    if len(rest) > count:
        page.after = chosen[-1]
    return page
