"""The in-memory store (``store.kind: memory``): everything in this process's memory, O(1) per
operation, for tests and throw-away demos.

Nothing persists: the CLI says so whenever this store is in use. Only one process can use a
drop zone with it (see ``dropzone.zone_lock``), since a second process would have its own ledger.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from dropzone.search.index import REF_PREFIX
from dropzone.search.match import matches
from dropzone.search.query import SearchPage, SearchQuery
from dropzone.store.base import (
    META_KEY,
    Claim,
    ClaimAnswer,
    ClaimState,
    Existing,
    Ledger,
    ResourceStore,
    Store,
    claim_key,
    identifier_rows,
    strip_document,
)
from processors import fhir_json

# Keys of the search index that no search parameter has: the pipeline's own (see ``_internal_keys``).
INTERNAL_PREFIX = "~"


class MemoryResourceStore(ResourceStore):
    """Documents are held as JSON bytes (``fhir_json``: numbers keep their exact digits), with
    their metadata in a tuple beside them.

    Why not dicts: Python's cyclic garbage collector re-scans every container object the process
    holds, and a parsed FHIR resource is ~80 of them. With a growing store, collections triggered
    by ordinary allocations took ~60% of the pipeline process's CPU at 143k stored resources (and
    more as the store grows), and each document cost ~5.6 KB of objects. Bytes are not tracked by
    the collector and take ~1.5 KB; tuples of plain values get untracked by it. Reads decode a
    fresh copy, which also replaces the deep copy callers needed before.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        # resourceType -> document id -> document as JSON bytes
        self._blobs: dict[str, dict[str, bytes]] = defaultdict(dict)
        # resourceType -> document id -> (tenant, hash, version, file_sha256, first_ingested)
        self._meta: dict[str, dict[str, tuple[str, str, int, str | None, str]]] = defaultdict(dict)
        # (resourceType, document id) -> [(version, document bytes)]
        self._history: dict[tuple[str, str], list[tuple[int, bytes]]] = defaultdict(list)
        self._by_identifier: dict[tuple[str, str, str | None, str], set[str]] = defaultdict(set)
        # (tenant, key) -> {(resourceType, id)} for the few internal ``~`` keys of each resource
        # (conditional references waiting for a target, Bundle entries' patients), which the
        # pipeline asks after every file: a scan there made ingest quadratic.
        self._internal_keys: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)

    @property
    def _docs(self) -> dict[str, Mapping[str, dict[str, Any]]]:
        """Read-only view of every collection, decoding documents on access: for tests and
        debugging that look inside the store (the name predates the bytes storage)."""
        return {rtype: _DecodedDocuments(coll) for rtype, coll in self._blobs.items()}

    def ensure_indexes(self) -> None:
        """Nothing to do: dictionaries are the indexes."""

    def existing(self, tenant: str, rtype: str, ids: Sequence[str]) -> dict[str, Existing]:
        with self._lock:
            metas = self._meta.get(rtype, {})
            found = {}
            for rid in ids:
                meta = metas.get(f"{tenant}/{rid}")
                if meta is not None:
                    found[rid] = Existing(meta[1], meta[2], meta[3], meta[4])
            return found

    def _write_documents(
        self, rtype: str, docs: list[dict[str, Any]], history: list[tuple[str, int]]
    ) -> set[str]:
        with self._lock:
            coll, metas = self._blobs[rtype], self._meta[rtype]
            for doc_id, _version in history:
                old = coll.get(doc_id)
                if old is not None:
                    old_version = metas[doc_id][2]
                    versions = self._history[(rtype, doc_id)]
                    if not any(v == old_version for v, _ in versions):
                        versions.append((old_version, old))
            for doc in docs:
                doc_id = doc["_id"]
                old = coll.get(doc_id)
                if old is not None:
                    self._unindex(rtype, fhir_json.loads(old))
                # An exact-size copy: the bytes orjson returns keep its growth buffer allocated
                # (measured: 3.3x their length retained for 1.5 KB documents).
                coll[doc_id] = bytes(memoryview(fhir_json.dumps(doc)))
                m = doc[META_KEY]
                metas[doc_id] = (m["tenant"], m["hash"], m["version"], m["file_sha256"], m["first_ingested"])
                self._index(rtype, doc)
        return set()  # one process, under one lock: nothing changes between read and write

    def _delete_document(self, rtype: str, doc_id: str) -> bool:
        with self._lock:
            old = self._blobs.get(rtype, {}).pop(doc_id, None)
            self._meta.get(rtype, {}).pop(doc_id, None)
            if old is not None:
                self._unindex(rtype, fhir_json.loads(old))
            return old is not None

    def _identifier_keys(self, rtype: str, doc: dict[str, Any]) -> list[tuple[str, str, str | None, str]]:
        tenant = doc[META_KEY]["tenant"]
        keys = []
        for ident in doc.get("identifier") or []:
            if isinstance(ident, dict) and isinstance(ident.get("value"), str):
                keys.append((tenant, rtype, ident.get("system"), ident["value"]))
                keys.append((tenant, rtype, None, ident["value"]))
        return keys

    def _index(self, rtype: str, doc: dict[str, Any]) -> None:
        for key in self._identifier_keys(rtype, doc):
            self._by_identifier[key].add(doc["id"])
        tenant = doc[META_KEY]["tenant"]
        for key in doc[META_KEY].get("keys", ()):
            if key.startswith(INTERNAL_PREFIX):
                self._internal_keys[(tenant, key)].add((rtype, doc["id"]))

    def _unindex(self, rtype: str, doc: dict[str, Any]) -> None:
        for key in self._identifier_keys(rtype, doc):
            self._by_identifier[key].discard(doc["id"])
        tenant = doc[META_KEY]["tenant"]
        for key in doc[META_KEY].get("keys", ()):
            if key.startswith(INTERNAL_PREFIX):
                holders = self._internal_keys.get((tenant, key))
                if holders is not None:
                    holders.discard((rtype, doc["id"]))
                    if not holders:
                        del self._internal_keys[(tenant, key)]

    def get_document(self, tenant: str, rtype: str, resource_id: str) -> dict[str, Any] | None:
        with self._lock:
            doc = self._blobs.get(rtype, {}).get(f"{tenant}/{resource_id}")
        return fhir_json.loads(doc) if doc is not None else None

    def written_by(
        self, tenant: str, rtype: str, ids: Sequence[str], file_sha256: str
    ) -> set[tuple[str, str]]:
        found = set()
        with self._lock:
            versions = {rid: list(self._history.get((rtype, f"{tenant}/{rid}"), ())) for rid in ids}
        for rid, kept in versions.items():
            for _version, blob in kept:
                meta = fhir_json.loads(blob)[META_KEY]
                if meta["file_sha256"] == file_sha256:
                    found.add((rid, meta["hash"]))
        return found

    def history(self, tenant: str, rtype: str, resource_id: str) -> list[dict[str, Any]]:
        with self._lock:
            versions = sorted(self._history.get((rtype, f"{tenant}/{resource_id}"), []))
        return [fhir_json.loads(doc) for _, doc in versions]

    def find_by_identifier(self, tenant: str, rtype: str, system: str | None, value: str) -> list[str]:
        with self._lock:
            return sorted(self._by_identifier.get((tenant, rtype, system, value), set()))

    def counts(self, tenants: Iterable[str] | None = None) -> dict[str, int]:
        wanted = set(tenants) if tenants is not None else None
        with self._lock:
            out: dict[str, int] = {}
            for rtype, coll in self._blobs.items():
                if wanted is None:
                    n = len(coll)
                else:
                    n = sum(1 for meta in self._meta[rtype].values() if meta[0] in wanted)
                if n:
                    out[rtype] = n
            return dict(sorted(out.items()))

    def tenant_counts(self, tenants: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
        wanted = set(tenants) if tenants is not None else None
        out: dict[str, dict[str, int]] = defaultdict(dict)
        with self._lock:
            for rtype in sorted(self._meta):
                for meta in self._meta[rtype].values():
                    if wanted is None or meta[0] in wanted:
                        out[meta[0]][rtype] = out[meta[0]].get(rtype, 0) + 1
        return dict(sorted(out.items()))

    def resource_types(self) -> list[str]:
        with self._lock:
            return sorted(t for t, coll in self._blobs.items() if coll)

    def iter_resources(self, tenant: str, rtype: str, since: str | None = None) -> Iterator[dict[str, Any]]:
        prefix = f"{tenant}/"
        with self._lock:
            ids = sorted(i for i in self._blobs.get(rtype, {}) if i.startswith(prefix))
        for doc_id in ids:
            with self._lock:
                blob = self._blobs.get(rtype, {}).get(doc_id)
            if blob is None:
                continue
            doc = fhir_json.loads(blob)
            if since is None or doc[META_KEY]["last_ingested"] >= since:
                yield strip_document(doc)

    def _tenant_documents(self, tenant: str, rtype: str) -> Iterator[dict[str, Any]]:
        """The tenant's documents of one type in id order (decoded one at a time)."""
        prefix = f"{tenant}/"
        with self._lock:
            blobs = [(i, b) for i, b in self._blobs.get(rtype, {}).items() if i.startswith(prefix)]
        for _doc_id, blob in sorted(blobs):
            yield fhir_json.loads(blob)

    def search(self, tenant: str, query: SearchQuery) -> SearchPage:
        # A scan: the memory store is for tests and demos; ``matches`` is the reference semantics.
        hits: list[tuple[tuple[str, ...], dict[str, Any]]] = []
        for doc in self._tenant_documents(tenant, query.rtype):
            meta = doc[META_KEY]
            dates = [(d["p"], d["lo"], d["hi"]) for d in meta.get("dates", ())]
            if matches(
                query, doc["id"], meta["last_ingested"], meta.get("keys", ()), dates, identifier_rows(doc)
            ):
                key = (meta["last_ingested"], doc["id"]) if query.sort == "_lastUpdated" else (doc["id"],)
                hits.append((key, doc))
        hits.sort(key=lambda hit: hit[0])
        after = [hit for hit in hits if query.after is None or hit[0] > query.after]
        page = SearchPage([strip_document(doc) for _, doc in after[: query.count]], len(hits))
        if len(after) > query.count:
            page.after = after[query.count - 1][0]
        return page

    def keyed(self, tenant: str, keys: Sequence[str], types: Iterable[str]) -> list[tuple[str, str, str]]:
        wanted = set(keys)
        if all(key.startswith(INTERNAL_PREFIX) for key in wanted):
            order = {rtype: position for position, rtype in enumerate(types)}
            with self._lock:
                rows = [
                    (rtype, rid, key)
                    for key in wanted
                    for rtype, rid in self._internal_keys.get((tenant, key), ())
                    if rtype in order
                ]
            return sorted(rows, key=lambda row: (order[row[0]], row[1], row[2]))
        found = []
        for rtype in types:
            for doc in self._tenant_documents(tenant, rtype):
                found += [(rtype, doc["id"], k) for k in doc[META_KEY].get("keys", ()) if k in wanted]
        return found

    def reference_keys(self, tenant: str) -> Iterator[tuple[str, str, str]]:
        for rtype in self.resource_types():
            for doc in self._tenant_documents(tenant, rtype):
                for key in doc[META_KEY].get("keys", ()):
                    if key.startswith(REF_PREFIX):
                        yield rtype, doc["id"], key

    def close(self) -> None:
        """Nothing to release."""


class _DecodedDocuments(Mapping[str, dict[str, Any]]):
    """One collection as a read-only mapping of document id -> decoded document."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self._blobs = blobs

    def __getitem__(self, doc_id: str) -> dict[str, Any]:
        return fhir_json.loads(self._blobs[doc_id])  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[str]:
        return iter(self._blobs)

    def __len__(self) -> int:
        return len(self._blobs)


class MemoryLedger(Ledger):
    def __init__(self, clock: Any = time.time) -> None:
        self._lock = threading.RLock()
        self._claims: dict[str, dict[str, Any]] = {}
        self._files: dict[str, dict[str, Any]] = {}
        self._by_key: dict[str, set[str]] = defaultdict(set)
        self._uploads: dict[str, dict[str, Any]] = {}
        self._clock = clock

    def claim(self, tenant: str, sha256: str, path: str, owner: str, lease_seconds: float) -> ClaimAnswer:
        key = claim_key(tenant, sha256)
        now = self._clock()
        with self._lock:
            doc = self._claims.get(key)
            if doc is None:
                doc = new_claim_document(key, path, owner, now + lease_seconds)
                self._claims[key] = doc
                return ClaimAnswer(ClaimState.ACQUIRED, claim_from_document(doc, resumed=False))
            if doc["state"] == "processing" and doc["lease_until"] < now:
                doc.update(
                    owner=owner, lease_until=now + lease_seconds, path=path, attempt=doc["attempt"] + 1
                )
                return ClaimAnswer(ClaimState.ACQUIRED, claim_from_document(doc, resumed=True))
            if doc["state"] == "done" and doc["outcome"] == "quarantined":
                fresh = new_claim_document(key, path, owner, now + lease_seconds)
                fresh["attempt"] = doc["attempt"] + 1
                self._claims[key] = fresh
                return ClaimAnswer(ClaimState.ACQUIRED, claim_from_document(fresh, resumed=False))
            if doc["state"] == "processing":
                return ClaimAnswer(ClaimState.BUSY)
            return ClaimAnswer(ClaimState.DONE, done=dict(doc))

    def finished_claim(self, tenant: str, sha256: str) -> dict[str, Any] | None:
        with self._lock:
            doc = self._claims.get(claim_key(tenant, sha256))
            return dict(doc) if doc and doc["state"] == "done" and doc["outcome"] != "quarantined" else None

    def _owned(self, claim: Claim) -> dict[str, Any] | None:
        doc = self._claims.get(claim.key)
        if (
            doc
            and doc["state"] == "processing"
            and doc["owner"] == claim.owner
            and doc["attempt"] == claim.attempt
        ):
            return doc
        return None

    def renew(self, claim: Claim, lease_seconds: float) -> bool:
        with self._lock:
            doc = self._owned(claim)
            if doc is None:
                return False
            doc["lease_until"] = self._clock() + lease_seconds
            return True

    def release(self, claim: Claim) -> None:
        with self._lock:
            doc = self._owned(claim)
            if doc is not None:
                doc["lease_until"] = 0.0

    def complete(self, claim: Claim, outcome: str, destination: str | None) -> bool:
        with self._lock:
            doc = self._owned(claim)
            if doc is None:
                return False
            doc.update(state="done", outcome=outcome, destination=destination, moved=False)
            return True

    def mark_moved(self, key: str) -> None:
        with self._lock:
            if key in self._claims:
                self._claims[key]["moved"] = True

    def save_file(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._files[record["_id"]] = copy.deepcopy(record)
            if record.get("key"):
                self._by_key[record["key"]].add(record["_id"])

    def get_file(self, file_id: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._files.get(file_id)
            return copy.deepcopy(record) if record else None

    def files(self, tenant: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            chosen = [f for f in self._files.values() if tenant is None or f.get("tenant") == tenant]
        chosen.sort(key=lambda f: f.get("received_at") or "", reverse=True)
        return [copy.deepcopy(f) for f in chosen[:limit]]

    def summary(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        with self._lock:
            for record in self._files.values():
                out[record.get("tenant", "?")][record.get("state", "?")] += 1
        return {t: dict(states) for t, states in sorted(out.items())}

    def find_file(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            chosen = [self._files[i] for i in self._by_key.get(key, ()) if self._files[i].get("key") == key]
            newest = max(chosen, key=lambda f: f.get("received_at") or "", default=None)
            return copy.deepcopy(newest) if newest else None

    def save_upload(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._uploads[record["_id"]] = copy.deepcopy(record)

    def get_upload(self, upload_id: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._uploads.get(upload_id)
            return copy.deepcopy(record) if record else None


def new_claim_document(key: str, path: str, owner: str, lease_until: float) -> dict[str, Any]:
    import uuid

    return {
        "_id": key,
        "state": "processing",
        "owner": owner,
        "lease_until": lease_until,
        "path": path,
        "attempt": 1,
        "file_id": uuid.uuid4().hex,
        "outcome": None,
        "destination": None,
        "moved": False,
    }


def claim_from_document(doc: dict[str, Any], resumed: bool) -> Claim:
    return Claim(doc["_id"], doc["file_id"], doc["owner"], doc["attempt"], resumed)


class MemoryStore(Store):
    persistent = False
    description = "embedded in-memory store (nothing persists after this process exits)"

    def __init__(self) -> None:
        self.resources = MemoryResourceStore()
        self.ledger = MemoryLedger()
