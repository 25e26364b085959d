"""Document and message Bundles: each file is one record, stored as one Bundle resource.

A document is an immutable, attested unit (R4 documents.html: the Bundle is what was attested
and sent), and a message is one event with its content (R4 messaging.html): splitting either
into its entries would lose what it is. So the Bundle is read whole (at most
``pipeline.max_record_bytes``), checked against the Bundle invariants (``bundle_invariants``:
bdl-9/10/11 for documents, bdl-12 for messages, and the entry rules) and validated as a
``Bundle`` with the R4 validator, entries included (by the pipeline's pool; here as well when
an invariant already failed, so one report names every defect), and stored as sent, numbers
with their digits and references untouched (a document's ``urn:uuid`` references are part of
the signed content, so nothing is rewritten).

Its id is ``Bundle.id``. Without one, the id is derived from ``Bundle.identifier`` (uuid5 of the
tenant, system and value), so re-sending the same document stores nothing new instead of a
copy; a message with neither ``id`` nor ``identifier`` is rejected (``missing_id``): nothing
stable names it.
"""

from __future__ import annotations

from typing import Any

from dropzone.errors import FileRejected
from dropzone.validation import validate_resource
from processors import fhir_json
from processors.base import Issue, ProcessorContext, Record
from processors.bundle_invariants import invariant_issues
from processors.fhir_common import deterministic_id, repeated_key_issue, shape_issues
from processors.json_keys import loads_noting_repeated_key

UNIT_TYPES = ("document", "message")
# Same location as a single-resource file: the whole file is the record.
LOCATION = "resource"


def unit_record(context: ProcessorContext) -> Record:
    """The file's one record: the Bundle to store, or why it cannot be stored."""
    limit = context.settings.pipeline.max_record_bytes
    with context.open_payload() as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise FileRejected(
            "record_too_large",
            f"a document or message Bundle is stored whole and may be at most {limit} bytes "
            "(pipeline.max_record_bytes)",
        )
    try:
        bundle, repeated = loads_noting_repeated_key(data)
    except fhir_json.JSONDecodeError:
        raise FileRejected("invalid_json", "the JSON document is malformed") from None
    issues: list[Issue] = []
    if repeated is not None:
        issues.append(repeated_key_issue(repeated))
    rid = stored_id(bundle, context.tenant.name)
    if rid is not None and bundle.get("id") is None:
        # resourceType first, then id, as FHIR JSON writes them; the rest in the sender's order.
        bundle = {"resourceType": bundle.get("resourceType"), "id": rid, **bundle}
    shape = shape_issues(bundle, need_id=False)
    issues.extend(shape)
    if rid is None and not shape:
        issues.append(
            Issue(
                "missing_id",
                "a message Bundle needs Bundle.id or Bundle.identifier.value to be stored",
                "Bundle.id",
            )
        )
    issues.extend(invariant_issues(bundle))
    if issues and not shape:
        # A record with issues skips the pipeline's validation: validate here, so the sender
        # learns every defect from one report rather than one round trip per kind.
        issues.extend(validate_resource(bundle))
    return Record(
        1,
        LOCATION,
        resources=[] if issues else [bundle],
        issues=issues,
        described=("Bundle", rid),
    )


def stored_id(bundle: dict[str, Any], tenant: str) -> str | None:
    """``Bundle.id``, else an id derived from ``Bundle.identifier``, else None."""
    rid = bundle.get("id")
    if rid is not None:
        return rid if isinstance(rid, str) else None  # a non-string id: shape_issues says so
    identifier = bundle.get("identifier")
    if not isinstance(identifier, dict):
        return None
    value, system = identifier.get("value"), identifier.get("system")
    if not isinstance(value, str) or not value:
        return None
    # The identifier is the document's identity across servers (R4 documents.html), so the same
    # document always maps to the same id, on every machine and run.
    return deterministic_id(tenant, "Bundle.identifier", system if isinstance(system, str) else "", value)
