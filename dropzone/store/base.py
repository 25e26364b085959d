"""The store interface: resources (versioned, tenant-scoped) and the ledger (files and leases).

Three implementations share this contract: ``sqlite.SqliteStore`` (the embedded default, one
database file), ``memory.MemoryStore`` (nothing persists: tests and demos) and
``mongo.MongoStore`` (pymongo). The versioning rules live here, once:

* identity is tenant + resourceType + id;
* identical content (same canonical hash) changes nothing;
* changed content bumps ``meta.versionId``, sets ``meta.lastUpdated`` and copies the previous
  version to history.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dropzone.errors import StoreUnavailable
from dropzone.log import event
from dropzone.search.index import SearchRows, search_rows
from dropzone.search.query import SearchPage, SearchQuery
from dropzone.store import packing
from processors import fhir_json

_log = logging.getLogger("dropzone.store")
# Rounds of "read again, write again" for resources another process keeps changing meanwhile.
CONFLICT_ATTEMPTS = 5

META_KEY = "_dz"


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Existing:
    """What the store already holds for one resource (no content)."""

    hash: str
    version: int
    file_sha256: str | None
    first_ingested: str


@dataclass(slots=True)
class ResourceWrite:
    """One resource to store. ``resource`` or ``body`` (its JSON text, as ``fhir_json.dumps``
    writes it) or both: the pipeline hands over the text its workers made, and a store that
    keeps text (SQLite) never parses it again. ``identifiers``: (value, system) pairs of
    ``identifier``, and ``index`` its search rows, when already known. ``replaces``: (hash,
    search rows) of the stored version this write was made from, when known (a store that
    must delete the old version's index rows then need not read and index it again; it checks
    the hash is still the stored one)."""

    type: str
    id: str
    resource: dict[str, Any] | None
    hash: str
    body: bytes | None = None
    identifiers: list[tuple[str, str]] | None = None
    index: SearchRows | None = None
    replaces: tuple[str, SearchRows] | None = None
    # The body as a packing store keeps it (``dropzone.store.packing``: packed when large). A
    # pool worker packs it already for such a store; ``body`` is then made only when needed.
    stored: bytes | None = None

    @classmethod
    def of_digest(
        cls,
        rtype: str,
        rid: str,
        digest: str,
        body: bytes,
        identifiers: list[tuple[str, str]],
        index: SearchRows | None,
    ) -> ResourceWrite:
        """From a worker's digest, whose body may be packed (``packing.is_packed``)."""
        if packing.is_packed(body):
            return cls(rtype, rid, None, digest, None, identifiers, index, stored=body)
        return cls(rtype, rid, None, digest, body, identifiers, index)

    def content(self) -> dict[str, Any]:
        if self.resource is None:
            if self.body is None and self.stored is None:
                raise ValueError(f"{self.type}/{self.id}: a write needs a resource or a body")
            self.resource = fhir_json.loads(self.text())
        return self.resource

    def text(self) -> bytes:
        if self.body is None:
            if self.stored is not None:
                self.body = packing.unpack(self.stored)  # type: ignore[assignment]
            else:
                self.body = fhir_json.dumps(self.content())
        return self.body  # type: ignore[return-value]

    def stored_body(self) -> bytes:
        """The body as a packing store keeps it: packed when large (``packing.PACK_FROM``)."""
        if self.stored is None:
            self.stored = packing.pack(self.text())
        return self.stored

    def identifier_rows(self) -> list[tuple[str, str]]:
        if self.identifiers is None:
            self.identifiers = identifier_rows(self.content())
        return self.identifiers

    def search_rows(self) -> SearchRows:
        """Its search keys and date ranges (``dropzone.search.index``)."""
        if self.index is None:
            self.index = search_rows(self.content())
        return self.index


def identifier_rows(resource: dict[str, Any]) -> list[tuple[str, str]]:
    """(value, system or "") of each ``identifier`` that has a string value."""
    rows = []
    for ident in resource.get("identifier") or ():
        if isinstance(ident, dict) and isinstance(ident.get("value"), str):
            system = ident.get("system")
            rows.append((ident["value"], system if isinstance(system, str) else ""))
    return rows


@dataclass(slots=True)
class WriteResult:
    loaded: int = 0
    unchanged: int = 0
    new_ids: list[tuple[str, str]] = field(default_factory=list)
    # (type, id) of every resource counted as loaded: callers map them back to their records.
    written: set[tuple[str, str]] = field(default_factory=set)


def document_id(tenant: str, resource_id: str) -> str:
    return f"{tenant}/{resource_id}"


def strip_document(doc: dict[str, Any]) -> dict[str, Any]:
    """The FHIR resource from a stored document (drops ``_id`` and the metadata)."""
    return {k: v for k, v in doc.items() if k not in ("_id", META_KEY)}


class ResourceStore(ABC):
    """Versioned resource storage. Subclasses implement the primitive reads and writes."""

    # Keeps large bodies packed (``ResourceWrite.stored_body``): the pipeline's workers then
    # pack them where they are made.
    packs_bodies = False

    @abstractmethod
    def ensure_indexes(self) -> None: ...

    @abstractmethod
    def existing(self, tenant: str, rtype: str, ids: Sequence[str]) -> dict[str, Existing]: ...

    @abstractmethod
    def _write_documents(self, rtype: str, docs: list[Any], history: list[tuple[str, int]]) -> set[str]:
        """Replace/insert ``docs`` (made by ``_new_document``); first copy the current versions
        named in ``history`` (document id, version) to the history collection. Returns the ids
        of documents not written because another writer changed them since ``existing`` was
        read (a store whose writes are serialised, in a transaction or one process, has none)."""

    def _new_document(
        self, tenant: str, write: ResourceWrite, version: int, file_sha256: str | None, now: str, first: str
    ) -> Any:
        """What ``_write_documents`` stores for one write (default: ``build_document``)."""
        return build_document(tenant, write, version, file_sha256, now, first)

    @abstractmethod
    def _delete_document(self, rtype: str, doc_id: str) -> bool: ...

    @abstractmethod
    def get_document(self, tenant: str, rtype: str, resource_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def written_by(
        self, tenant: str, rtype: str, ids: Sequence[str], file_sha256: str
    ) -> set[tuple[str, str]]:
        """(id, hash) of the previous versions in history that the file ``file_sha256`` wrote."""

    @abstractmethod
    def history(self, tenant: str, rtype: str, resource_id: str) -> list[dict[str, Any]]: ...

    @abstractmethod
    def find_by_identifier(self, tenant: str, rtype: str, system: str | None, value: str) -> list[str]: ...

    @abstractmethod
    def counts(self, tenants: Iterable[str] | None = None) -> dict[str, int]: ...

    @abstractmethod
    def tenant_counts(self, tenants: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
        """``{tenant: {resourceType: n}}`` for the current versions."""

    @abstractmethod
    def resource_types(self) -> list[str]: ...

    @abstractmethod
    def iter_resources(self, tenant: str, rtype: str, since: str | None = None) -> Iterator[dict[str, Any]]:
        """The tenant's current resources of one type as FHIR JSON (no internal metadata), in id
        order, streaming; ``since``: only those stored at or after this ``utc_now_iso()`` time."""

    @abstractmethod
    def search(self, tenant: str, query: SearchQuery) -> SearchPage:
        """One page of the tenant's ``query.rtype`` resources matching every condition, in
        ``query.sort`` order after ``query.after``; ``total`` counts every match."""

    @abstractmethod
    def keyed(self, tenant: str, keys: Sequence[str], types: Iterable[str]) -> list[tuple[str, str, str]]:
        """(type, id, key) of the tenant's resources of ``types`` holding any of ``keys``."""

    def keys_present(self, tenant: str, keys: Sequence[str], types: Iterable[str]) -> set[str]:
        """Which of ``keys`` at least one resource holds (default: from ``keyed``)."""
        return {key for _, _, key in self.keyed(tenant, keys, types)}

    @abstractmethod
    def reference_keys(self, tenant: str) -> Iterator[tuple[str, str, str]]:
        """(type, id, key) of every reference key (``>path|reference``) of the tenant."""

    def get_many(self, tenant: str, rtype: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The current resources among ``ids`` (default: one read each)."""
        found = {}
        for rid in ids:
            resource = self.get(tenant, rtype, rid)
            if resource is not None:
                found[rid] = resource
        return found

    @abstractmethod
    def close(self) -> None: ...

    # -- shared rules ------------------------------------------------------------------------

    def change_token(self) -> object | None:
        """Something that differs whenever another process has committed a change since it was
        taken (SQLite: ``PRAGMA data_version``), so a caller knows whether what ``existing``
        answered then still holds; None: the store cannot tell (the caller then relies on no
        other process writing the same resources at once)."""
        return None

    def transaction(self, durable: bool = True) -> contextlib.AbstractContextManager[None]:
        """Several ``upsert`` batches as one transaction, where the store has them (SQLite):
        the batches inside join it, and it commits (or, on an exception, rolls back) at the
        end. Default: nothing."""
        return self._batch(durable)

    def _batch(self, durable: bool = True) -> contextlib.AbstractContextManager[None]:
        """Around one ``upsert`` batch: a store with transactions makes the batch one (a crash
        then leaves it wholly written or not at all). ``durable=False``: the caller makes it
        durable later (see ``upsert``). Default: nothing."""
        return contextlib.nullcontext()

    def get(self, tenant: str, rtype: str, resource_id: str) -> dict[str, Any] | None:
        doc = self.get_document(tenant, rtype, resource_id)
        return strip_document(doc) if doc else None

    def upsert(
        self,
        tenant: str,
        writes: Sequence[ResourceWrite],
        file_sha256: str | None,
        known: dict[tuple[str, str], Existing | None] | None = None,
        *,
        durable: bool = True,
    ) -> WriteResult:
        """Idempotent versioned upsert of one batch.

        A resource whose stored hash equals the new one is *unchanged*, unless the stored copy
        was written by this same file (a retry after a crash): then it counts as *loaded*, so a
        file finished by a second worker reports the same counts as an uninterrupted run.

        A retried file also meets resources it wrote before it died that another file has
        changed since (found by the crash campaign): its content is then in history, written by
        this file, and writing it again would add a version and put the older content back over
        the newer. It counts as *loaded* and nothing is written.

        ``known``: what ``existing`` answered for these resources, when the caller already asked
        and nothing has written them since (saves the lookup). ``durable=False``: the pipeline,
        whose closing ledger write makes the file's batches durable; anyone who reports a write
        as done right away (the API) keeps the default.
        """
        result = WriteResult()
        with self._batch(durable):
            self._upsert_types(tenant, writes, file_sha256, known, result)
        return result

    def _upsert_types(
        self,
        tenant: str,
        writes: Sequence[ResourceWrite],
        file_sha256: str | None,
        known: dict[tuple[str, str], Existing | None] | None,
        result: WriteResult,
    ) -> None:
        for rtype, group in _group_by_type(writes).items():
            for chunk in _without_repeated_ids(group):
                pending, trust_known = chunk, known is not None
                for _attempt in range(CONFLICT_ATTEMPTS):
                    conflicts = self._upsert_chunk(
                        tenant, rtype, pending, file_sha256, known if trust_known else None, result
                    )
                    if not conflicts:
                        break
                    # Another process wrote some of them between our read and our write (a
                    # store without transactions says so): read those again and redo them.
                    pending = [w for w in pending if document_id(tenant, w.id) in conflicts]
                    trust_known = False
                    event(_log, "store.write_conflict", logging.DEBUG, type=rtype, resources=len(pending))
                else:
                    raise StoreUnavailable(
                        f"{rtype}: {len(pending)} resources kept changing under concurrent writers"
                    )
                if known is not None:
                    for w in chunk:  # written now: a later chunk naming the id must ask again
                        known.pop((rtype, w.id), None)

    def _upsert_chunk(
        self,
        tenant: str,
        rtype: str,
        chunk: list[ResourceWrite],
        file_sha256: str | None,
        known: dict[tuple[str, str], Existing | None] | None,
        result: WriteResult,
    ) -> set[str]:
        """One chunk (no id twice); ``result`` gets the outcome of every write not returned as a
        conflict (document ids that another writer changed since they were read)."""
        ids = [w.id for w in chunk]
        if known is not None and all((rtype, i) in known for i in ids):
            current = {i: e for i in ids if (e := known[(rtype, i)]) is not None}
        else:
            current = self.existing(tenant, rtype, ids)
        now = utc_now_iso()
        docs: list[Any] = []
        history: list[tuple[str, int]] = []
        outcomes: list[tuple[str, str, bool]] = []  # (document id, "loaded"/"unchanged", new)
        earlier = self._earlier_writes(tenant, rtype, chunk, current, file_sha256)
        for w in chunk:
            doc_id = document_id(tenant, w.id)
            before = current.get(w.id)
            if before is not None and before.hash == w.hash:
                same_file = file_sha256 is not None and before.file_sha256 == file_sha256
                outcomes.append((doc_id, "loaded" if same_file else "unchanged", False))
                continue
            if (w.id, w.hash) in earlier:
                outcomes.append((doc_id, "loaded", False))
                continue
            version = 1 if before is None else before.version + 1
            if before is not None:
                history.append((doc_id, before.version))
            docs.append(
                self._new_document(
                    tenant, w, version, file_sha256, now, before.first_ingested if before else now
                )
            )
            outcomes.append((doc_id, "loaded", before is None))
        conflicts = self._write_documents(rtype, docs, history) if docs else set()
        for (doc_id, outcome, new), w in zip(outcomes, chunk, strict=True):
            if doc_id in conflicts:
                continue
            if outcome == "unchanged":
                result.unchanged += 1
                continue
            result.loaded += 1
            result.written.add((rtype, w.id))
            if new:
                result.new_ids.append((rtype, w.id))
        return conflicts

    def _earlier_writes(
        self,
        tenant: str,
        rtype: str,
        chunk: list[ResourceWrite],
        current: dict[str, Existing],
        file_sha256: str | None,
    ) -> set[tuple[str, str]]:
        """Only resources that exist with another content can have been written earlier by this
        file; a first load never pays for the lookup."""
        if file_sha256 is None:
            return set()
        changed = [w.id for w in chunk if w.id in current and current[w.id].hash != w.hash]
        return self.written_by(tenant, rtype, changed, file_sha256) if changed else set()

    def delete(self, tenant: str, rtype: str, resource_id: str) -> bool:
        """Remove the current version (kept in history). True if something was deleted."""
        current = self.existing(tenant, rtype, [resource_id]).get(resource_id)
        if current is None:
            return False
        self._write_documents(rtype, [], [(document_id(tenant, resource_id), current.version)])
        return self._delete_document(rtype, document_id(tenant, resource_id))


def build_document(
    tenant: str, write: ResourceWrite, version: int, file_sha256: str | None, now: str, first: str
) -> dict[str, Any]:
    doc = with_server_meta(dict(write.content()), version, now)
    doc["_id"] = document_id(tenant, write.id)
    doc[META_KEY] = {
        "tenant": tenant,
        "hash": write.hash,
        "version": version,
        "file_sha256": file_sha256,
        "first_ingested": first,
        "last_ingested": now,
    }
    keys, dates = write.search_rows()
    doc[META_KEY]["keys"] = keys
    doc[META_KEY]["dates"] = [{"p": param, "lo": low, "hi": high} for param, low, high in dates]
    return doc


def with_server_meta(resource: dict[str, Any], version: int, last_updated: str) -> dict[str, Any]:
    """``resource`` (changed in place) with the store's ``meta.versionId`` and
    ``meta.lastUpdated``, over whatever the sender put there."""
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = last_updated
    resource["meta"] = meta
    return resource


def existing_from_document(doc: dict[str, Any]) -> Existing:
    meta = doc[META_KEY]
    return Existing(meta["hash"], meta["version"], meta.get("file_sha256"), meta["first_ingested"])


def _group_by_type(writes: Sequence[ResourceWrite]) -> dict[str, list[ResourceWrite]]:
    groups: dict[str, list[ResourceWrite]] = {}
    for w in writes:
        groups.setdefault(w.type, []).append(w)
    return groups


def _without_repeated_ids(group: list[ResourceWrite]) -> list[list[ResourceWrite]]:
    """Split so no chunk names one id twice: later copies then see the earlier write."""
    chunks: list[list[ResourceWrite]] = [[]]
    seen: set[str] = set()
    for w in group:
        if w.id in seen:
            chunks.append([])
            seen = set()
        chunks[-1].append(w)
        seen.add(w.id)
    return [c for c in chunks if c]


# -- ledger --------------------------------------------------------------------------------------


class ClaimState(enum.StrEnum):
    ACQUIRED = "acquired"
    BUSY = "busy"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Claim:
    """A lease on one file content (tenant + sha256) held by one worker."""

    key: str
    file_id: str
    owner: str
    attempt: int
    resumed: bool


@dataclass(frozen=True, slots=True)
class ClaimAnswer:
    state: ClaimState
    claim: Claim | None = None
    done: dict[str, Any] | None = None


def claim_key(tenant: str, sha256: str) -> str:
    return f"{tenant}/{sha256}"


class Ledger(ABC):
    """One record per received file, plus content leases so each file's effect happens once.

    Claim rules (both implementations):
    * no lease for this content -> ACQUIRED (new file id);
    * a lease whose holder stopped renewing it -> ACQUIRED with ``resumed=True`` (same file id);
    * content finished as ``quarantined`` -> ACQUIRED again (a fixed config may now accept it);
    * a live lease -> BUSY; content finished otherwise -> DONE (the caller decides: finish the
      move of the same path, or record a duplicate).
    """

    @abstractmethod
    def claim(self, tenant: str, sha256: str, path: str, owner: str, lease_seconds: float) -> ClaimAnswer: ...

    @abstractmethod
    def finished_claim(self, tenant: str, sha256: str) -> dict[str, Any] | None:
        """The claim of this content when it is done and not quarantined (``claim`` would answer
        DONE), else None; reads only (``dropzone preview``)."""

    @abstractmethod
    def renew(self, claim: Claim, lease_seconds: float) -> bool: ...

    @abstractmethod
    def release(self, claim: Claim) -> None:
        """Give the lease up without an outcome (shutdown, transient error)."""

    @abstractmethod
    def complete(self, claim: Claim, outcome: str, destination: str | None) -> bool:
        """Mark the content done; False if the lease was lost to another worker."""

    @abstractmethod
    def mark_moved(self, key: str) -> None: ...

    @abstractmethod
    def save_file(self, record: dict[str, Any]) -> None:
        """Insert or replace the file record ``record['_id']``."""

    @abstractmethod
    def get_file(self, file_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def files(self, tenant: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first."""

    @abstractmethod
    def summary(self) -> dict[str, dict[str, int]]:
        """``{tenant: {state: count}}`` over all file records."""

    @abstractmethod
    def find_file(self, key: str) -> dict[str, Any] | None:
        """The newest file record for an incoming key (``incoming/<tenant>/<relpath>``)."""

    # Pushed uploads (the API): the receipt is written before the file reaches incoming/, so
    # ``GET /api/batch/<id>`` can answer "received" before any worker has seen the file.

    @abstractmethod
    def save_upload(self, record: dict[str, Any]) -> None:
        """Insert or replace the upload receipt ``record['_id']`` (tenant, key, name, size)."""

    @abstractmethod
    def get_upload(self, upload_id: str) -> dict[str, Any] | None: ...


class Store(ABC):
    """What the pipeline needs: resources + ledger, and a human-readable description."""

    resources: ResourceStore
    ledger: Ledger
    persistent: bool
    description: str

    def close(self) -> None:
        self.resources.close()
