"""The FHIR R4 Bundle invariants (bdl-1 to bdl-12, Bundle.html "Constraints") on a whole Bundle.

The R4 validator (``dropzone.validation``) checks structure, not FHIRPath invariants, and the
streamed Bundle types never hold a whole Bundle. Document and message Bundles are stored whole,
so their invariants are checked here before the validator sees them. Each failure is an
``Issue`` with a stable code, the invariant's key in the message and the element's FHIR path;
no value from the Bundle is ever quoted.

Not checked: bdl-6 does not exist in R4 4.0.1; bdl-3/bdl-4's "mandatory" halves are left to the
transaction/batch processing, which reports ``missing_request`` per entry already.
"""

from __future__ import annotations

from typing import Any

from processors.base import Issue

_SEARCH_TYPES = ("searchset", "history")  # bdl-1: Bundle.total
_REQUEST_TYPES = ("batch", "transaction", "history")  # bdl-3: entry.request
_RESPONSE_TYPES = ("batch-response", "transaction-response", "history")  # bdl-4: entry.response


def invariant_issues(bundle: dict[str, Any]) -> list[Issue]:
    """Every R4 Bundle invariant ``bundle`` breaks (an empty list when it keeps them all)."""
    btype = bundle.get("type")
    raw_entries = bundle.get("entry")
    # A non-list entry is the validator's to report (not_an_array); nothing to check here.
    entries: list[Any] = raw_entries if isinstance(raw_entries, list) else []
    issues: list[Issue] = []
    if btype == "document":
        issues.extend(_document_issues(bundle, entries))
    elif btype == "message" and _first_resource_type(entries) != "MessageHeader":
        issues.append(
            Issue(
                "message_header_first",
                "a message Bundle must have a MessageHeader as its first entry's resource (bdl-12)",
                "Bundle.entry[0].resource",
            )
        )
    if "total" in bundle and btype not in _SEARCH_TYPES:
        issues.append(
            Issue(
                "total_not_allowed", "Bundle.total is only for a searchset or history (bdl-1)", "Bundle.total"
            )
        )
    issues.extend(_entry_issues(btype, entries))
    return issues


def _document_issues(bundle: dict[str, Any], entries: list[Any]) -> list[Issue]:
    issues: list[Issue] = []
    identifier = bundle.get("identifier")
    if not (
        isinstance(identifier, dict)
        and _has_value(identifier.get("system"))
        and _has_value(identifier.get("value"))
    ):
        issues.append(
            Issue(
                "document_identifier_required",
                "a document Bundle must have identifier.system and identifier.value (bdl-9)",
                "Bundle.identifier",
            )
        )
    if not _has_value(bundle.get("timestamp")):  # hasValue(): an extension alone does not count
        issues.append(
            Issue(
                "document_timestamp_required",
                "a document Bundle must have a timestamp (bdl-10)",
                "Bundle.timestamp",
            )
        )
    if _first_resource_type(entries) != "Composition":
        issues.append(
            Issue(
                "document_composition_first",
                "a document Bundle must have a Composition as its first entry's resource (bdl-11)",
                "Bundle.entry[0].resource",
            )
        )
    return issues


def _entry_issues(btype: Any, entries: list[Any]) -> list[Issue]:
    issues: list[Issue] = []
    seen: set[tuple[str, str]] = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue  # the validator reports a non-object entry
        where = f"Bundle.entry[{index}]"
        if "search" in entry and btype != "searchset":
            issues.append(
                Issue("search_not_allowed", "entry.search is only for a searchset (bdl-2)", f"{where}.search")
            )
        if "request" in entry and btype not in _REQUEST_TYPES:
            issues.append(
                Issue(
                    "request_not_allowed",
                    "entry.request is only for a batch, transaction or history (bdl-3)",
                    f"{where}.request",
                )
            )
        if "response" in entry and btype not in _RESPONSE_TYPES:
            issues.append(
                Issue(
                    "response_not_allowed",
                    "entry.response is only for a batch-response, transaction-response or history (bdl-4)",
                    f"{where}.response",
                )
            )
        if not any(key in entry for key in ("resource", "request", "response")):
            issues.append(
                Issue("missing_resource", "an entry needs a resource, a request or a response (bdl-5)", where)
            )
        full_url = entry.get("fullUrl")
        if not isinstance(full_url, str):
            continue
        if "/_history/" in full_url:
            issues.append(
                Issue(
                    "versioned_full_url",
                    "fullUrl cannot be a version-specific reference (bdl-8)",
                    f"{where}.fullUrl",
                )
            )
        if btype == "history":
            continue  # bdl-7 exempts history: one resource's versions share a fullUrl
        key = (full_url, _version_id(entry.get("resource")))
        if key in seen:
            issues.append(
                Issue(
                    "duplicate_full_url",
                    "fullUrl must be unique in a Bundle unless the entries' meta.versionId differ (bdl-7)",
                    f"{where}.fullUrl",
                )
            )
        seen.add(key)
    return issues


def _first_resource_type(entries: list[Any]) -> str | None:
    first = entries[0] if entries else None
    resource = first.get("resource") if isinstance(first, dict) else None
    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    return rtype if isinstance(rtype, str) else None


def _version_id(resource: Any) -> str:
    meta = resource.get("meta") if isinstance(resource, dict) else None
    version = meta.get("versionId") if isinstance(meta, dict) else None
    return version if isinstance(version, str) else ""


def _has_value(value: Any) -> bool:
    return isinstance(value, str) and bool(value)
