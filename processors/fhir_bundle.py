"""FHIR Bundles: transaction (all or nothing), batch (per entry), collection and searchset
(entries stored one by one), document and message (stored whole, as one Bundle: see
``fhir_bundle_unit``). Response Bundles (batch-response, transaction-response, history) are a
server's answer, not data, and are refused.

Entries are streamed with ijson, so a Bundle larger than memory is fine; a transaction is read
more than once (ids first, then entries), never held whole.

A searchset's ``search.mode: outcome`` entries are the searching server's OperationOutcome about
the search (R4 value set search-entry-mode), not data: they are skipped, not records, and counted in the
report's details; a searchset holding nothing else is refused (``search_outcome_only``).

Transaction rules (FHIR R4 3.1.0.11.2 "transaction processing rules"):
* ``urn:uuid:`` fullUrls of POSTed entries get deterministic ids (uuid5 of tenant + fullUrl)
  and every reference to them inside the Bundle is rewritten to ``Type/id``;
* entries run DELETE before POST/PUT (GET/HEAD entries and ``$operations`` are reads, skipped
  with a warning and not counted as records);
* conditional create (``ifNoneExist``), conditional update (``PUT Type?identifier=...``) and
  conditional delete are implemented for the ``identifier`` search parameter only; any other
  search parameter rejects the entry with a clear message;
* ``ifMatch``/``ifNoneMatch``/``ifModifiedSince`` name the sender's versions, which are not ours:
  they are ignored with a warning rather than failing the upload;
* a request url whose type differs from the resource's type is an entry error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import parse_qsl

import ijson

from dropzone.errors import FileRejected
from processors import fhir_json
from processors.base import Issue, Processor, ProcessorContext, Record, Sniffed
from processors.fhir_bundle_unit import UNIT_TYPES, unit_record
from processors.fhir_common import (
    FHIR_ID,
    RESOURCE_TYPE,
    deterministic_id,
    repeated_key_issue,
    rewrite_references,
    shape_issues,
    unresolved_uuid_references,
)
from processors.json_keys import KeyTrackingDict, items_noting_repeated_keys
from processors.registry import register

if TYPE_CHECKING:
    from dropzone.config import TenantSettings

STORED_TYPES = ("collection", "searchset")
SUPPORTED_TYPES = ("transaction", "batch", *STORED_TYPES, *UNIT_TYPES)
# A server's answers: loading them would replay another server's results, versions and deletes.
RESPONSE_TYPES = ("batch-response", "transaction-response", "history")


class _EntryPlan:
    """What one transaction/batch entry will do, decided before any entry is stored."""

    __slots__ = ("index", "issues", "method", "rid", "rtype", "skip", "warnings")

    def __init__(self, index: int) -> None:
        self.index = index
        self.method = ""
        self.rtype: str | None = None
        self.rid: str | None = None
        self.issues: list[Issue] = []
        self.warnings: list[Issue] = []
        self.skip = False


@register
class FhirBundleProcessor(Processor):
    name = "fhir-bundle"
    rejects_extension = "json"

    def __init__(self, context: ProcessorContext) -> None:
        super().__init__(context)
        self._repeated: dict[int, list[str]] = {}
        self._entry_count = 0
        self._outcome_entries = 0  # searchset entries skipped as not data (report details)

    @classmethod
    def accepts(cls, sniffed: Sniffed, tenant: TenantSettings) -> bool:
        return sniffed.kind == "json-bundle"

    @property
    def bundle_type(self) -> str:
        btype = self.context.sniffed.details.get("type")
        if not isinstance(btype, str):
            raise FileRejected(
                "missing_bundle_type", "Bundle.type is missing; it must say how to process the entries"
            )
        if btype not in SUPPORTED_TYPES:
            accepted = ", ".join(SUPPORTED_TYPES)
            if btype in RESPONSE_TYPES:
                why = f"Bundle.type '{btype}' is a server's response, not data to load"
            else:
                why = "Bundle.type is not one this service loads"  # the text is not echoed
            raise FileRejected("unsupported_bundle_type", f"{why} (send one of {accepted})")
        return btype

    def atomic(self) -> bool:
        return self.bundle_type == "transaction"

    def _entries(self) -> Iterator[tuple[int, Any]]:
        """Entries in file order, numbers by ``fhir_json``'s rule (ijson's ``use_float=False``
        hands over exact Decimals); keys an entry repeats are kept in ``self._repeated``."""
        self._repeated = {}
        with self.context.open_payload() as stream:
            items = ijson.items(stream, "entry.item", use_float=False, map_type=KeyTrackingDict)
            try:
                for index, (entry, repeated) in enumerate(items_noting_repeated_keys(items)):
                    if repeated:
                        self._repeated[index] = repeated
                    yield index, fhir_json.normalise(entry)
            except ijson.JSONError:
                raise FileRejected("invalid_json", "the Bundle is malformed") from None

    def _repeated_key_issues(self, index: int) -> list[Issue]:
        return [repeated_key_issue(key) for key in self._repeated.get(index, ())[:1]]

    def records(self) -> Iterator[Record]:
        btype = self.bundle_type
        tenant = self.context.tenant.name
        if btype in UNIT_TYPES:
            yield unit_record(self.context)
            return
        if btype in STORED_TYPES:
            mapping, outcomes = self._collection_ids()
            self._outcome_entries = len(outcomes)
            if outcomes and len(outcomes) == self._entry_count:
                raise FileRejected(
                    "search_outcome_only",
                    "the searchset holds only search.mode 'outcome' entries (the server's "
                    "OperationOutcome about a search), no data",
                )
            for index, entry in self._entries():
                if index not in outcomes:
                    yield self._stored_entry(index, entry, mapping)
            return
        plans, mapping = self._plan(tenant)
        # DELETEs first (FHIR transaction order), then writes, in file order within each.
        for deletes_pass in (True, False):
            for index, entry in self._entries():
                plan = plans[index]
                if plan.skip or (plan.method == "DELETE") != deletes_pass:
                    continue
                yield self._request_entry(plan, entry, mapping)

    # -- collection / searchset ----------------------------------------------------------------

    def report_details(self) -> dict[str, Any]:
        skipped = self._outcome_entries
        return {"search_outcome_entries": skipped} if skipped else {}

    def _collection_ids(self) -> tuple[dict[str, str], set[int]]:
        """Entries without an id but with a ``urn:uuid`` fullUrl get a deterministic id; also
        the indexes of a searchset's ``search.mode: outcome`` entries, which are not data."""
        mapping: dict[str, str] = {}
        outcomes: set[int] = set()
        searchset = self.bundle_type == "searchset"
        self._entry_count = 0
        for index, entry in self._entries():
            self._entry_count += 1
            if searchset and _search_mode(entry) == "outcome":
                outcomes.add(index)
                continue
            resource = entry.get("resource") if isinstance(entry, dict) else None
            full_url = entry.get("fullUrl") if isinstance(entry, dict) else None
            if not isinstance(resource, dict) or not isinstance(full_url, str):
                continue
            rtype, rid = resource.get("resourceType"), resource.get("id")
            if not isinstance(rtype, str):
                continue
            if rid is None and full_url.startswith("urn:"):
                rid = deterministic_id(self.context.tenant.name, full_url)
            if isinstance(rid, str):
                mapping[full_url] = f"{rtype}/{rid}"
        return mapping, outcomes

    def _stored_entry(self, index: int, entry: Any, mapping: dict[str, str]) -> Record:
        location = f"entry {index}"
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            return Record(
                index,
                location,
                issues=[Issue("missing_resource", "the entry has no resource", f"Bundle.entry[{index}]")],
            )
        resource = entry["resource"]
        full_url = entry.get("fullUrl")
        if resource.get("id") is None and isinstance(full_url, str) and full_url in mapping:
            resource = {**resource, "id": mapping[full_url].rsplit("/", 1)[1]}
        resource, _ = rewrite_references(resource, mapping)
        issues = self._repeated_key_issues(index) + shape_issues(resource)
        return Record(index, location, resources=[] if issues else [resource], issues=issues)

    # -- transaction / batch ---------------------------------------------------------------------

    def _plan(self, tenant: str) -> tuple[dict[int, _EntryPlan], dict[str, str]]:
        """First pass: decide each entry's method and final id, and map fullUrls to ``Type/id``."""
        plans: dict[int, _EntryPlan] = {}
        mapping: dict[str, str] = {}
        for index, entry in self._entries():
            plan = self._plan_entry(index, entry, tenant)
            plan.issues[:0] = self._repeated_key_issues(index)
            plans[index] = plan
            full_url = entry.get("fullUrl") if isinstance(entry, dict) else None
            if isinstance(full_url, str) and plan.rtype and plan.rid and plan.method in ("POST", "PUT"):
                mapping[full_url] = f"{plan.rtype}/{plan.rid}"
        return plans, mapping

    def _plan_entry(self, index: int, entry: Any, tenant: str) -> _EntryPlan:
        plan = _EntryPlan(index)
        where = f"Bundle.entry[{index}].request"
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(request, dict):
            plan.issues.append(Issue("missing_request", "a transaction/batch entry needs a request", where))
            return plan
        method, url = request.get("method"), request.get("url")
        if not isinstance(method, str) or not isinstance(url, str) or not url:
            plan.issues.append(Issue("invalid_request", "request.method and request.url are required", where))
            return plan
        plan.method = method.upper()
        for ignored in ("ifMatch", "ifNoneMatch", "ifModifiedSince"):
            if ignored in request:
                plan.warnings.append(
                    Issue(
                        "precondition_ignored",
                        f"request.{ignored} names the sender's versions, not ours; ignored",
                        f"{where}.{ignored}",
                    )
                )
        if plan.method in ("GET", "HEAD"):
            plan.skip = True
            return plan
        path, _, query = url.partition("?")
        path = path.strip("/")
        if "$" in path:
            plan.skip = True  # an operation call ($lookup, ...) is not data to store
            return plan
        rtype, _, url_id = path.partition("/")
        if not RESOURCE_TYPE.match(rtype) or "/" in url_id:
            plan.issues.append(
                Issue(
                    "invalid_request_url",
                    "request.url must be 'Type', 'Type/id' or 'Type?identifier=...'",
                    f"{where}.url",
                )
            )
            return plan
        plan.rtype = rtype
        resource = entry.get("resource")
        if plan.method in ("POST", "PUT"):
            if not isinstance(resource, dict):
                plan.issues.append(
                    Issue(
                        "missing_resource",
                        f"a {plan.method} entry needs a resource",
                        f"Bundle.entry[{index}]",
                    )
                )
                return plan
            if resource.get("resourceType") != rtype:
                plan.issues.append(
                    Issue(
                        "type_mismatch",
                        "request.url names a different resource type than the entry's resource",
                        f"{where}.url",
                    )
                )
                return plan
        if plan.method == "POST":
            if url_id:
                plan.issues.append(
                    Issue("invalid_request_url", "POST goes to 'Type', not 'Type/id'", f"{where}.url")
                )
                return plan
            self._plan_post(plan, entry, request, tenant)
        elif plan.method == "PUT":
            self._plan_put(plan, url_id, query, resource, tenant, entry)
        elif plan.method == "DELETE":
            self._plan_delete(plan, url_id, query)
        else:
            plan.issues.append(
                Issue(
                    "unsupported_method",
                    f"request.method {plan.method} is not supported (use POST, PUT or DELETE)",
                    f"{where}.method",
                )
            )
        return plan

    def _plan_post(
        self, plan: _EntryPlan, entry: dict[str, Any], request: dict[str, Any], tenant: str
    ) -> None:
        condition = request.get("ifNoneExist")
        if isinstance(condition, str) and condition:
            where = f"Bundle.entry[{plan.index}].request.ifNoneExist"
            found, match = self._single_match(plan, condition, where, "ifNoneExist")
            if not found:
                return
            if match:
                plan.rid = match
                plan.skip = True  # exists already: nothing to create, but references resolve to it
                return
        full_url = entry.get("fullUrl")
        # POST ignores any id in the resource (the server assigns one): ours is stable, so a
        # re-sent Bundle updates the same resources instead of creating copies.
        seed = (
            full_url if isinstance(full_url, str) and full_url else f"{self.context.name}#entry{plan.index}"
        )
        plan.rid = deterministic_id(tenant, seed)

    def _plan_put(
        self,
        plan: _EntryPlan,
        url_id: str,
        query: str,
        resource: dict[str, Any],
        tenant: str,
        entry: dict[str, Any],
    ) -> None:
        where = f"Bundle.entry[{plan.index}].request.url"
        if url_id:
            if not FHIR_ID.match(url_id):
                plan.issues.append(Issue("invalid_id", "the id in request.url is not a valid FHIR id", where))
            elif resource.get("id") not in (None, url_id):
                plan.issues.append(
                    Issue("id_mismatch", "the resource id differs from the id in request.url", where)
                )
            else:
                plan.rid = url_id
            return
        found, match = self._single_match(plan, query, where, "conditional update")
        if not found:
            return
        rid = resource.get("id")
        full_url = entry.get("fullUrl")
        if match:
            plan.rid = match
        elif isinstance(rid, str):
            plan.rid = rid
        else:
            plan.rid = deterministic_id(tenant, str(full_url or f"{self.context.name}#entry{plan.index}"))

    def _plan_delete(self, plan: _EntryPlan, url_id: str, query: str) -> None:
        where = f"Bundle.entry[{plan.index}].request.url"
        if url_id:
            plan.rid = url_id
            return
        found, match = self._single_match(plan, query, where, "conditional delete")
        if found:
            plan.rid = match  # None when nothing matches: in FHIR, deleting nothing succeeds

    def _single_match(self, plan: _EntryPlan, query: str, where: str, what: str) -> tuple[bool, str | None]:
        """(usable, matched id or None) for a conditional request; records why when not usable."""
        matches = self._search(plan, query, where)
        if matches is None:
            return False, None
        if len(matches) > 1:
            plan.issues.append(
                Issue("multiple_matches", f"{what} matched more than one stored resource", where)
            )
            return False, None
        return True, matches[0] if matches else None

    def _search(self, plan: _EntryPlan, query: str, where: str) -> list[str] | None:
        params = parse_qsl(query, keep_blank_values=True)
        if len(params) != 1 or params[0][0] != "identifier" or not params[0][1]:
            plan.issues.append(
                Issue(
                    "unsupported_condition",
                    "conditional requests support exactly one 'identifier=[system|]value' parameter",
                    where,
                )
            )
            return None
        token = params[0][1]
        system, sep, value = token.partition("|")
        if not sep:
            system, value = None, token
        assert plan.rtype is not None
        return self.context.resources.find_by_identifier(
            self.context.tenant.name, plan.rtype, system or None, value
        )

    def _request_entry(self, plan: _EntryPlan, entry: dict[str, Any], mapping: dict[str, str]) -> Record:
        location = f"entry {plan.index}"
        record = Record(plan.index, location, issues=list(plan.issues), warnings=list(plan.warnings))
        if record.issues:
            if plan.rtype:
                record.target = (plan.rtype, plan.rid or "")
            return record
        assert plan.rtype is not None
        if plan.method == "DELETE":
            record.method = "DELETE"
            record.target = (plan.rtype, plan.rid or "")
            return record
        resource = {**entry["resource"], "id": plan.rid}
        resource, _ = rewrite_references(resource, mapping)
        if self.bundle_type == "transaction":
            for path in unresolved_uuid_references(resource):
                record.issues.append(
                    Issue(
                        "unresolved_reference",
                        "references a urn:uuid that is not an entry of this Bundle",
                        f"{plan.rtype}.{path}",
                    )
                )
        record.issues.extend(shape_issues(resource))
        if not record.issues:
            record.resources = [resource]
        else:
            record.target = (plan.rtype, plan.rid or "")
        return record

    # -- rejects ----------------------------------------------------------------------------------

    def write_rejects(self, indexes: set[int], out: BinaryIO) -> None:
        """A Bundle of the same type holding only the rejected entries, as sent (numbers with
        the sender's digits); a document or message is one record: the file itself."""
        btype = self.context.sniffed.details.get("type") or "collection"
        if btype in UNIT_TYPES:
            with self.context.open_payload() as stream:
                while chunk := stream.read(1 << 20):
                    out.write(chunk)
            return
        out.write(b'{"resourceType":"Bundle","type":' + fhir_json.dumps(btype) + b',"entry":[')
        first = True
        for index, entry in self._entries():
            if index in indexes:
                out.write((b"" if first else b",") + fhir_json.dumps(entry))
                first = False
        out.write(b"]}\n")


def _search_mode(entry: Any) -> Any:
    search = entry.get("search") if isinstance(entry, dict) else None
    return search.get("mode") if isinstance(search, dict) else None
