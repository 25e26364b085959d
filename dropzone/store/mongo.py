"""MongoDB store (pymongo). The only module that imports pymongo.

Layout in one database: one collection per resourceType (``Patient``, ``Encounter``, ...),
``_history`` for previous versions, ``_files`` (one record per received file) and ``_claims``
(content leases). Documents are the FHIR JSON plus the ``_dz`` metadata sub-document;
``_id`` is ``<tenant>/<id>`` so two tenants may both hold ``Patient/123``.

Exact numbers: a decimal that a double would not keep (``80.00``, ``100000000000000000001.25``,
``processors.fhir_json``) and an integer beyond int64 are stored as BSON Decimal128, which keeps
digits and exponent (Decimal128('80.00') reads back as 80.00, and the server compares it as a
number); the rare one Decimal128 cannot hold exactly (more than 34 digits, exponent beyond
+-6111) as ``{"_dz_number": "<its JSON text>"}``, which no valid FHIR resource contains. Such a
document is flagged ``_dz.exact_numbers``, so only flagged documents are converted back on read.
"""

from __future__ import annotations

import decimal
import time
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any

import pymongo
from bson.decimal128 import Decimal128
from pymongo import InsertOne, ReplaceOne, ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from dropzone.errors import StoreUnavailable
from dropzone.search.index import REF_PREFIX
from dropzone.search.query import AnyKey, Condition, IdCondition, IdentifierCondition, SearchPage, SearchQuery
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
    existing_from_document,
    strip_document,
)
from dropzone.store.memory import claim_from_document, new_claim_document
from processors import fhir_json

HISTORY = "_history"
FILES = "_files"
CLAIMS = "_claims"
UPLOADS = "_uploads"
_RESERVED = {HISTORY, FILES, CLAIMS, UPLOADS}
_DUPLICATE_KEY = 11000
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_NUMBER_KEY = "_dz_number"
_EXACT_FLAG = "exact_numbers"


def _translate(err: PyMongoError) -> StoreUnavailable:
    return StoreUnavailable(f"MongoDB: {err.__class__.__name__}")


def describe_connection_failure(uri: str, err: BaseException) -> str:
    """Why the store could not be opened at start-up, for people: the hosts (never the user or
    password), the driver's reason with any secret removed, and what to check."""
    from pymongo import uri_parser

    try:
        hosts = ", ".join(f"{host}:{port}" for host, port in uri_parser.parse_uri(uri)["nodelist"])
    except Exception as parse_error:
        return (
            f"MONGODB_URI is not a valid MongoDB connection string ({_redacted(str(parse_error), uri)}); "
            "expected mongodb://[user:password@]host[:port][/?options] or mongodb+srv://"
        )
    reason = _redacted(str(err), uri).split(", Timeout:")[0][:300]
    return (
        f"cannot reach MongoDB at {hosts} ({type(err).__name__}: {reason}); check that the server runs, "
        "that this machine can reach that host and port, and the credentials in MONGODB_URI"
    )


def _redacted(text: str, uri: str) -> str:
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(uri)
        secrets = [parts.password] if parts.password else []
    except ValueError:
        secrets = []
    for secret in secrets + [unquote(s) for s in secrets]:
        text = text.replace(secret, "***")
    return text.replace(uri, "<MONGODB_URI>")


def _bson_number(value: Decimal) -> Decimal128 | dict[str, str]:
    try:
        stored = Decimal128(value)
    except decimal.DecimalException:  # inexact in 34 digits, or exponent out of range
        stored = None
    # Decimal128 may also clamp (10**40 becomes 1.000...E+40): equal value, other digits.
    if stored is not None and stored.to_decimal().as_tuple() == value.as_tuple():
        return stored
    return {_NUMBER_KEY: fhir_json.decimal_text(value)}


def _encode_numbers(node: Any) -> Any:
    """``node`` with decimals and ints beyond int64 in BSON form; the same object when it has
    none (most documents: nothing is copied)."""
    if isinstance(node, dict):
        changed = {key: new for key, value in node.items() if (new := _encode_numbers(value)) is not value}
        return {**node, **changed} if changed else node
    if isinstance(node, list):
        items = [_encode_numbers(value) for value in node]
        return items if any(new is not old for new, old in zip(items, node, strict=True)) else node
    if isinstance(node, Decimal):
        return _bson_number(node)
    if type(node) is int and not _INT64_MIN <= node <= _INT64_MAX:
        return _bson_number(Decimal(node))
    return node


def _decode_numbers(node: Any) -> Any:
    """The inverse of ``_encode_numbers``: each number by ``fhir_json``'s rule."""
    if isinstance(node, dict):
        text = node.get(_NUMBER_KEY)
        if len(node) == 1 and isinstance(text, str):
            return fhir_json.number(Decimal(text))
        return {key: _decode_numbers(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_decode_numbers(value) for value in node]
    if isinstance(node, Decimal128):
        return fhir_json.number(node.to_decimal())
    return node


def to_stored(doc: dict[str, Any]) -> dict[str, Any]:
    """A document as written to MongoDB (see the module docstring on exact numbers)."""
    encoded: dict[str, Any] = _encode_numbers(doc)
    if encoded is not doc:
        encoded[META_KEY] = {**encoded[META_KEY], _EXACT_FLAG: True}
    return encoded


def from_stored(doc: dict[str, Any]) -> dict[str, Any]:
    """A document as read from MongoDB, numbers back in ``fhir_json``'s types."""
    if not doc.get(META_KEY, {}).get(_EXACT_FLAG):
        return doc
    decoded: dict[str, Any] = _decode_numbers(doc)
    return decoded


_MONGO_DATES = {
    "eq": lambda lo, hi: {"lo": {"$gte": lo}, "hi": {"$lte": hi}},
    "gt": lambda lo, hi: {"hi": {"$gt": hi}},
    "lt": lambda lo, hi: {"lo": {"$lt": lo}},
    "ge": lambda lo, hi: {"hi": {"$gte": lo}},
    "le": lambda lo, hi: {"lo": {"$lte": hi}},
    "sa": lambda lo, hi: {"lo": {"$gt": hi}},
    "eb": lambda lo, hi: {"hi": {"$lt": lo}},
}


def _mongo_condition(condition: Condition) -> dict[str, Any]:
    """One search condition as a MongoDB filter on the document and its ``_dz`` index fields."""
    if isinstance(condition, IdCondition):
        return {"id": {"$in": list(condition.ids)}}
    if isinstance(condition, AnyKey):
        return {f"{META_KEY}.keys": {"$in": list(condition.keys)}}
    if isinstance(condition, IdentifierCondition):
        alternatives = []
        for system, value in condition.values:
            match: dict[str, Any] = {"value": value}
            if system == "":
                match["system"] = {"$exists": False}
            elif system is not None:
                match["system"] = system
            alternatives.append({"identifier": {"$elemMatch": match}})
        return {"$or": alternatives}
    lo, hi = condition.qlow, condition.qhigh
    if condition.param == "_lastUpdated":
        field = f"{META_KEY}.last_ingested"
        if condition.prefix == "ne":
            return {"$or": [{field: {"$lt": lo}}, {field: {"$gt": hi}}]}
        spec = _MONGO_DATES[condition.prefix](lo, hi)
        merged: dict[str, Any] = {}
        for ops in spec.values():
            merged.update(ops)
        return {field: merged}
    if condition.prefix == "ne":
        return {
            f"{META_KEY}.dates": {
                "$elemMatch": {"p": condition.param, "$or": [{"lo": {"$lt": lo}}, {"hi": {"$gt": hi}}]}
            }
        }
    return {
        f"{META_KEY}.dates": {"$elemMatch": {"p": condition.param, **_MONGO_DATES[condition.prefix](lo, hi)}}
    }


class MongoResourceStore(ResourceStore):
    def __init__(self, db: Any) -> None:
        self._db = db
        self._indexed: set[str] = set()

    def _coll(self, rtype: str) -> Any:
        if rtype in _RESERVED or not rtype.isidentifier():
            raise ValueError("not a resourceType")
        coll = self._db[rtype]
        if rtype not in self._indexed:
            coll.create_index([(f"{META_KEY}.tenant", 1), ("id", 1)])
            coll.create_index([("identifier.value", 1)], sparse=True)
            # The search index (dropzone.search.index): keys and date ranges per document.
            coll.create_index([(f"{META_KEY}.tenant", 1), (f"{META_KEY}.keys", 1), ("id", 1)])
            coll.create_index(
                [(f"{META_KEY}.tenant", 1), (f"{META_KEY}.dates.p", 1), (f"{META_KEY}.dates.lo", 1)]
            )
            coll.create_index([(f"{META_KEY}.tenant", 1), (f"{META_KEY}.last_ingested", 1), ("id", 1)])
            self._indexed.add(rtype)
        return coll

    def ensure_indexes(self) -> None:
        try:
            self._db[HISTORY].create_index([(f"{META_KEY}.doc", 1), (f"{META_KEY}.version", 1)])
            self._db[FILES].create_index([("tenant", 1), ("received_at", -1)])
            self._db[FILES].create_index([("received_at", -1)])
            self._db[FILES].create_index([("key", 1), ("received_at", -1)])
            self._db[CLAIMS].create_index([("state", 1), ("lease_until", 1)])
            for name in self._db.list_collection_names():
                if name not in _RESERVED and not name.startswith("system."):
                    self._coll(name)
        except PyMongoError as err:
            raise _translate(err) from err

    def existing(self, tenant: str, rtype: str, ids: Sequence[str]) -> dict[str, Existing]:
        wanted = [f"{tenant}/{i}" for i in ids]
        try:
            cursor = self._coll(rtype).find({"_id": {"$in": wanted}}, {"id": 1, META_KEY: 1})
            return {doc["id"]: existing_from_document(doc) for doc in cursor}
        except PyMongoError as err:
            raise _translate(err) from err

    def _write_documents(
        self, rtype: str, docs: list[dict[str, Any]], history: list[tuple[str, int]]
    ) -> set[str]:
        coll = self._coll(rtype)
        try:
            if history:
                old_docs = list(coll.find({"_id": {"$in": [doc_id for doc_id, _ in history]}}))
                copies = []
                for old in old_docs:
                    copy = dict(old)
                    copy[META_KEY] = dict(old[META_KEY], doc=old["_id"], type=rtype)
                    copy["_id"] = f"{rtype}/{old['_id']}/{old[META_KEY]['version']}"
                    copies.append(copy)
                if copies:
                    try:
                        self._db[HISTORY].insert_many(copies, ordered=False)
                    except BulkWriteError as err:
                        # A retried file re-copies versions already kept: duplicates are fine.
                        if any(e.get("code") != _DUPLICATE_KEY for e in err.details.get("writeErrors", [])):
                            raise
            if docs:
                return self._write_if_unchanged(coll, docs)
        except PyMongoError as err:
            raise _translate(err) from err
        return set()

    def _write_if_unchanged(self, coll: Any, docs: list[dict[str, Any]]) -> set[str]:
        """Each document only over the version it was made from (optimistic concurrency: two
        workers may read the same resource at once, and the later write must not replace the
        earlier one's version unseen): a first version is an insert, version n replaces n - 1.
        Returns the ids another writer got to first."""
        writes: list[Any] = []
        replaced: dict[str, tuple[int, str]] = {}
        for doc in docs:
            version = doc[META_KEY]["version"]
            if version == 1:
                writes.append(InsertOne(to_stored(doc)))
            else:
                writes.append(
                    ReplaceOne({"_id": doc["_id"], f"{META_KEY}.version": version - 1}, to_stored(doc))
                )
                replaced[doc["_id"]] = (version, doc[META_KEY]["hash"])
        conflicts: set[str] = set()
        try:
            outcome = coll.bulk_write(writes, ordered=False)
            matched = outcome.matched_count
        except BulkWriteError as err:
            errors = err.details.get("writeErrors", [])
            if any(e.get("code") != _DUPLICATE_KEY for e in errors):
                raise
            # A first version someone else inserted (``index`` is the position in ``writes``).
            conflicts = {docs[e["index"]]["_id"] for e in errors}
            matched = err.details.get("nMatched", 0)
        if replaced and matched < len(replaced):
            # Which replacements found another version: those not holding what was written
            # (version and hash: the other writer may have written the same version number).
            fields = {f"{META_KEY}.version": 1, f"{META_KEY}.hash": 1}
            found = coll.find({"_id": {"$in": list(replaced)}}, fields)
            at = {d["_id"]: (d[META_KEY]["version"], d[META_KEY]["hash"]) for d in found}
            conflicts |= {doc_id for doc_id, wrote in replaced.items() if at.get(doc_id) != wrote}
        return conflicts

    def _delete_document(self, rtype: str, doc_id: str) -> bool:
        try:
            return self._coll(rtype).delete_one({"_id": doc_id}).deleted_count == 1
        except PyMongoError as err:
            raise _translate(err) from err

    def get_document(self, tenant: str, rtype: str, resource_id: str) -> dict[str, Any] | None:
        try:
            doc = self._coll(rtype).find_one({"_id": f"{tenant}/{resource_id}"})
            return from_stored(doc) if doc is not None else None
        except PyMongoError as err:
            raise _translate(err) from err

    def written_by(
        self, tenant: str, rtype: str, ids: Sequence[str], file_sha256: str
    ) -> set[tuple[str, str]]:
        query = {
            f"{META_KEY}.doc": {"$in": [f"{tenant}/{i}" for i in ids]},
            f"{META_KEY}.type": rtype,
            f"{META_KEY}.file_sha256": file_sha256,
        }
        try:
            cursor = self._db[HISTORY].find(query, {"id": 1, f"{META_KEY}.hash": 1})
            return {(doc["id"], doc[META_KEY]["hash"]) for doc in cursor}
        except PyMongoError as err:
            raise _translate(err) from err

    def history(self, tenant: str, rtype: str, resource_id: str) -> list[dict[str, Any]]:
        try:
            cursor = self._db[HISTORY].find(
                {f"{META_KEY}.doc": f"{tenant}/{resource_id}", f"{META_KEY}.type": rtype}
            )
            return [from_stored(d) for d in sorted(cursor, key=lambda d: d[META_KEY]["version"])]
        except PyMongoError as err:
            raise _translate(err) from err

    def find_by_identifier(self, tenant: str, rtype: str, system: str | None, value: str) -> list[str]:
        match: dict[str, Any] = {"value": value}
        if system is not None:
            match["system"] = system
        query = {f"{META_KEY}.tenant": tenant, "identifier": {"$elemMatch": match}}
        try:
            return sorted(doc["id"] for doc in self._coll(rtype).find(query, {"id": 1}))
        except PyMongoError as err:
            raise _translate(err) from err

    def counts(self, tenants: Iterable[str] | None = None) -> dict[str, int]:
        query = {} if tenants is None else {f"{META_KEY}.tenant": {"$in": list(tenants)}}
        out = {}
        try:
            for rtype in self.resource_types():
                n = self._db[rtype].count_documents(query)
                if n:
                    out[rtype] = n
        except PyMongoError as err:
            raise _translate(err) from err
        return out

    def tenant_counts(self, tenants: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
        match = [] if tenants is None else [{"$match": {f"{META_KEY}.tenant": {"$in": list(tenants)}}}]
        group = [{"$group": {"_id": f"${META_KEY}.tenant", "n": {"$sum": 1}}}]
        out: dict[str, dict[str, int]] = {}
        try:
            for rtype in self.resource_types():
                for row in self._db[rtype].aggregate(match + group):
                    out.setdefault(row["_id"], {})[rtype] = row["n"]
        except PyMongoError as err:
            raise _translate(err) from err
        return dict(sorted(out.items()))

    def iter_resources(self, tenant: str, rtype: str, since: str | None = None) -> Iterator[dict[str, Any]]:
        query: dict[str, Any] = {f"{META_KEY}.tenant": tenant}
        if since is not None:
            query[f"{META_KEY}.last_ingested"] = {"$gte": since}
        try:
            # Sorted by the (tenant, id) index; the cursor streams in batches.
            for doc in self._coll(rtype).find(query).sort("id", pymongo.ASCENDING):
                yield strip_document(from_stored(doc))
        except PyMongoError as err:
            raise _translate(err) from err

    def search(self, tenant: str, query: SearchQuery) -> SearchPage:
        clauses: list[dict[str, Any]] = [{f"{META_KEY}.tenant": tenant}]
        clauses += [_mongo_condition(c) for c in query.conditions]
        by_updated = query.sort == "_lastUpdated"
        order = [(f"{META_KEY}.last_ingested", 1), ("id", 1)] if by_updated else [("id", 1)]
        filter_ = {"$and": clauses}
        try:
            coll = self._coll(query.rtype)
            total = coll.count_documents(filter_)
            if query.after is not None:
                if by_updated:
                    last, rid = query.after
                    clauses.append(
                        {
                            "$or": [
                                {f"{META_KEY}.last_ingested": {"$gt": last}},
                                {f"{META_KEY}.last_ingested": last, "id": {"$gt": rid}},
                            ]
                        }
                    )
                else:
                    clauses.append({"id": {"$gt": query.after[0]}})
            docs = [from_stored(d) for d in coll.find({"$and": clauses}).sort(order).limit(query.count + 1)]
        except PyMongoError as err:
            raise _translate(err) from err
        page = SearchPage([strip_document(d) for d in docs[: query.count]], total)
        if len(docs) > query.count:
            last_doc = docs[query.count - 1]
            page.after = (
                (last_doc[META_KEY]["last_ingested"], last_doc["id"]) if by_updated else (last_doc["id"],)
            )
        return page

    def keyed(self, tenant: str, keys: Sequence[str], types: Iterable[str]) -> list[tuple[str, str, str]]:
        wanted = set(keys)
        found: list[tuple[str, str, str]] = []
        present = set(self.resource_types())
        try:
            for rtype in types:
                if rtype not in present:
                    continue
                cursor = self._coll(rtype).find(
                    {f"{META_KEY}.tenant": tenant, f"{META_KEY}.keys": {"$in": list(keys)}},
                    {"id": 1, f"{META_KEY}.keys": 1},
                )
                for doc in cursor:
                    found += [(rtype, doc["id"], k) for k in doc[META_KEY]["keys"] if k in wanted]
        except PyMongoError as err:
            raise _translate(err) from err
        return found

    def reference_keys(self, tenant: str) -> Iterator[tuple[str, str, str]]:
        try:
            for rtype in self.resource_types():
                cursor = self._coll(rtype).find(
                    {f"{META_KEY}.tenant": tenant}, {"id": 1, f"{META_KEY}.keys": 1}
                )
                for doc in cursor:
                    for key in doc[META_KEY].get("keys", ()):
                        if key.startswith(REF_PREFIX):
                            yield rtype, doc["id"], key
        except PyMongoError as err:
            raise _translate(err) from err

    def resource_types(self) -> list[str]:
        try:
            names = self._db.list_collection_names()
        except PyMongoError as err:
            raise _translate(err) from err
        return sorted(n for n in names if n not in _RESERVED and not n.startswith("system."))

    def close(self) -> None:
        """The client is closed by MongoStore."""


class MongoLedger(Ledger):
    def __init__(self, db: Any, clock: Any = time.time) -> None:
        self._claims = db[CLAIMS]
        self._files = db[FILES]
        self._uploads = db[UPLOADS]
        self._clock = clock

    def claim(self, tenant: str, sha256: str, path: str, owner: str, lease_seconds: float) -> ClaimAnswer:
        key = claim_key(tenant, sha256)
        now = self._clock()
        try:
            doc = new_claim_document(key, path, owner, now + lease_seconds)
            try:
                self._claims.insert_one(doc)
                return ClaimAnswer(ClaimState.ACQUIRED, claim_from_document(doc, resumed=False))
            except DuplicateKeyError:
                pass
            stolen = self._claims.find_one_and_update(
                {"_id": key, "state": "processing", "lease_until": {"$lt": now}},
                {
                    "$set": {"owner": owner, "lease_until": now + lease_seconds, "path": path},
                    "$inc": {"attempt": 1},
                },
                return_document=ReturnDocument.AFTER,
            )
            if stolen is not None:
                return ClaimAnswer(ClaimState.ACQUIRED, claim_from_document(stolen, resumed=True))
            fresh = new_claim_document(key, path, owner, now + lease_seconds)
            del fresh["_id"]
            retried = self._claims.find_one_and_update(
                {"_id": key, "state": "done", "outcome": "quarantined"},
                {"$set": {k: v for k, v in fresh.items() if k != "attempt"}, "$inc": {"attempt": 1}},
                return_document=ReturnDocument.AFTER,
            )
            if retried is not None:
                return ClaimAnswer(ClaimState.ACQUIRED, claim_from_document(retried, resumed=False))
            current = self._claims.find_one({"_id": key})
        except PyMongoError as err:
            raise _translate(err) from err
        if current is None or current["state"] == "processing":
            return ClaimAnswer(ClaimState.BUSY)
        return ClaimAnswer(ClaimState.DONE, done=current)

    def finished_claim(self, tenant: str, sha256: str) -> dict[str, Any] | None:
        try:
            doc = self._claims.find_one({"_id": claim_key(tenant, sha256), "state": "done"})
        except PyMongoError as err:
            raise _translate(err) from err
        return doc if doc and doc.get("outcome") != "quarantined" else None

    @staticmethod
    def _owned(claim: Claim) -> dict[str, Any]:
        return {"_id": claim.key, "state": "processing", "owner": claim.owner, "attempt": claim.attempt}

    def renew(self, claim: Claim, lease_seconds: float) -> bool:
        try:
            res = self._claims.update_one(
                self._owned(claim), {"$set": {"lease_until": self._clock() + lease_seconds}}
            )
        except PyMongoError as err:
            raise _translate(err) from err
        return res.matched_count == 1

    def release(self, claim: Claim) -> None:
        try:
            self._claims.update_one(self._owned(claim), {"$set": {"lease_until": 0.0}})
        except PyMongoError as err:
            raise _translate(err) from err

    def complete(self, claim: Claim, outcome: str, destination: str | None) -> bool:
        update = {"$set": {"state": "done", "outcome": outcome, "destination": destination, "moved": False}}
        try:
            return self._claims.update_one(self._owned(claim), update).matched_count == 1
        except PyMongoError as err:
            raise _translate(err) from err

    def mark_moved(self, key: str) -> None:
        try:
            self._claims.update_one({"_id": key}, {"$set": {"moved": True}})
        except PyMongoError as err:
            raise _translate(err) from err

    def save_file(self, record: dict[str, Any]) -> None:
        try:
            self._files.replace_one({"_id": record["_id"]}, record, upsert=True)
        except PyMongoError as err:
            raise _translate(err) from err

    def get_file(self, file_id: str) -> dict[str, Any] | None:
        try:
            return self._files.find_one({"_id": file_id})
        except PyMongoError as err:
            raise _translate(err) from err

    def files(self, tenant: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        query = {} if tenant is None else {"tenant": tenant}
        try:
            return list(self._files.find(query).sort("received_at", pymongo.DESCENDING).limit(limit))
        except PyMongoError as err:
            raise _translate(err) from err

    def summary(self) -> dict[str, dict[str, int]]:
        pipeline = [{"$group": {"_id": {"tenant": "$tenant", "state": "$state"}, "n": {"$sum": 1}}}]
        out: dict[str, dict[str, int]] = {}
        try:
            for row in self._files.aggregate(pipeline):
                out.setdefault(row["_id"]["tenant"], {})[row["_id"]["state"]] = row["n"]
        except PyMongoError as err:
            raise _translate(err) from err
        return dict(sorted(out.items()))

    def find_file(self, key: str) -> dict[str, Any] | None:
        try:
            found = list(self._files.find({"key": key}).sort("received_at", pymongo.DESCENDING).limit(1))
        except PyMongoError as err:
            raise _translate(err) from err
        return found[0] if found else None

    def save_upload(self, record: dict[str, Any]) -> None:
        try:
            self._uploads.replace_one({"_id": record["_id"]}, record, upsert=True)
        except PyMongoError as err:
            raise _translate(err) from err

    def get_upload(self, upload_id: str) -> dict[str, Any] | None:
        try:
            return self._uploads.find_one({"_id": upload_id})
        except PyMongoError as err:
            raise _translate(err) from err


class MongoStore(Store):
    persistent = True

    def __init__(
        self,
        uri: str | None = None,
        database: str = "dropzone",
        client: Any = None,
        connect_timeout_seconds: float = 5.0,
    ) -> None:
        timeout_ms = int(connect_timeout_seconds * 1000)
        try:
            self._client = (
                client
                if client is not None
                else pymongo.MongoClient(uri, serverSelectionTimeoutMS=timeout_ms)
            )
            db = self._client[database]
        except PyMongoError as err:
            raise _translate(err) from err
        self.description = f"MongoDB database '{database}'"
        self.resources = MongoResourceStore(db)
        self.ledger = MongoLedger(db)

    def close(self) -> None:
        self._client.close()
