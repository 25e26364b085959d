"""The order in which files that are ready at the same time are processed.

Arrival order (mtime, then key), so that a later update wins. One exception, for a Bulk Data
export dropped at once: when every ready file of a tenant is named by a FHIR resource type, as
the export names them (``Patient.ndjson``, ``Organization.000.ndjson.gz``), the types that
references usually point at go first. Such a file holds resources of its type only (one type per
file is the Bulk Data rule), so no file
overtakes an earlier one holding the same resources (files of one type keep arrival order), and
the referrers then find their targets on first load. In arrival order, a Synthea export names
Organization, Location and Practitioner after the files that reference them, and every
referrer was stored a second time, as a new version with its conditional references rewritten,
after the target file (``dropzone.search.references.resolve_pending``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator

from dropzone.models import IncomingFile

# Referenced before referencing: a Location names its Organization, a PractitionerRole its
# Practitioner, Organization and Location, a Patient its general practitioner.
TARGETS_FIRST = (
    "Organization",
    "Location",
    "Practitioner",
    "PractitionerRole",
    "Patient",
    "Substance",
    "Medication",
    "Device",
    "Group",
)
_RANK = {rtype: rank for rank, rtype in enumerate(TARGETS_FIRST)}
_BULK_NAME = re.compile(r"^(?P<type>[A-Z][A-Za-z]{1,63})(?:[._-]\d+)?\.ndjson(?:\.gz)?$")


def bulk_type(name: str) -> str | None:
    """The resource type a Bulk Data file's name declares, else None."""
    match = _BULK_NAME.match(name)
    return match["type"] if match else None


def processing_order(files: Iterable[IncomingFile]) -> list[IncomingFile]:
    """``files`` in the order to process them (see the module docstring)."""
    ordered = sorted(files, key=lambda f: (f.mtime, f.key))
    by_tenant: dict[str, list[IncomingFile]] = defaultdict(list)
    for file in ordered:
        by_tenant[file.tenant].append(file)
    reordered: dict[str, Iterator[IncomingFile]] = {}
    for tenant, group in by_tenant.items():
        types = [bulk_type(f.name) for f in group]
        if len(group) > 1 and all(types):
            ranked = sorted(
                zip(types, group, strict=True),
                key=lambda pair: (_RANK.get(pair[0] or "", len(_RANK)), pair[1].mtime, pair[1].key),
            )
            reordered[tenant] = iter([file for _, file in ranked])
    # The tenant's files take the places its files had: other tenants' files keep theirs.
    return [next(reordered[f.tenant]) if f.tenant in reordered else f for f in ordered]
