"""The second pool trip of a batch, for the resources the store lookup did not settle: their
conditional references rewritten to the targets the main process found, then validation
unless the first trip found the resource valid as sent. A rewrite keeps a valid resource
valid: the reference becomes ``Type/id`` of a stored resource (a valid id) of the type the
condition named (which the validator checked against the element's allowed targets), and the
reference as sent, a valid string, moves to an extension with a url, which Reference allows.

The main process only looks up (hashes in the store, identifiers of reference targets); the
parsing, rewriting, re-hashing and validating happen here, in a worker. A resource whose
rewritten form hashes to what is stored is unchanged and is not validated again: what is
stored was valid when it was stored. Bytes in and plain tuples out keep pickling cheap.
"""

from __future__ import annotations

import hashlib

import orjson

from dropzone.pipeline.canonical import canonical_bytes, resource_hash
from dropzone.pipeline.digest import TOO_DEEP, Digest, IssueTuple, TooDeep, digest_resource, issue_tuples
from dropzone.search.index import SearchRows, search_rows
from dropzone.search.references import rewrite_conditional
from dropzone.store import packing
from dropzone.store.base import identifier_rows
from dropzone.validation import validate_resource
from processors import fhir_json

# JSON text (or packed, ``dropzone.store.packing``), targets of its conditional references by
# waiting key (None: no rewriting), hash the store holds for it (None: not stored), and whether
# the first trip found it valid (then it is not validated again).
Item = tuple[bytes, dict[str, str] | None, str | None, bool]
# A digest whose identifiers and search rows are left for the store to make if it needs them.
Unchanged = tuple[str, str, str, bytes, None, None]
# A stored resource rewritten: its digest, and (hash, search rows) of the version it replaces.
Rewritten = tuple[Digest, tuple[str, SearchRows]]
# The new digest when a reference was rewritten, and the validation issues (none when valid or
# unchanged).
Settled = tuple[Digest | Unchanged | None, list[IssueTuple]]


def settle(items: list[Item]) -> list[Settled]:
    """Pool entry point: one outcome per item, in order."""
    out: list[Settled] = []
    for sent, targets, stored_hash, valid in items:
        body: bytes = packing.unpack(sent)  # type: ignore[assignment]
        if not targets:
            out.append((None, [] if valid else validation_issues(body)))
            continue
        resource = fhir_json.loads(body)
        digest: Digest | Unchanged | None = None
        if rewrite_conditional(resource, targets):
            try:
                canonical = canonical_bytes(resource)
                rewritten = fhir_json.dumps(resource)
            except (fhir_json.JSONEncodeError, RecursionError):
                out.append((None, [(TOO_DEEP.code, TOO_DEEP.message, TOO_DEEP.path)]))
                continue
            digest_hash = hashlib.sha256(canonical).hexdigest()
            if digest_hash == stored_hash:
                # A re-ingest: stored as it is now. Its index rows are only made if the store
                # finds it changed after all (another file wrote it meanwhile).
                out.append(
                    ((resource["resourceType"], resource["id"], digest_hash, rewritten, None, None), [])
                )
                continue
            rtype, rid = resource["resourceType"], resource["id"]
            digest = (rtype, rid, digest_hash, rewritten, identifier_rows(resource), search_rows(resource))
        issues = [] if valid else issue_tuples(validate_resource(resource))
        out.append((digest, issues))
    return out


def validation_issues(body: bytes) -> list[IssueTuple]:
    """The validator's issues for a resource in the text ``fhir_json.dumps`` wrote (a digest's
    body). orjson reads that text as the exact parse does except for numbers: a decimal becomes
    a float (the validator takes both as a JSON number), an int beyond 64 bits a float (valid
    where a decimal is; where an integer is, both readings are wrong), and a number beyond a
    double's range fails. So a resource valid as orjson reads it is valid, and only an invalid
    one is read again exactly, for the report. For claims this skips the slow exact parse of
    every decimal amount (a SynPUF carrier EOB: ~75 instead of ~300 us)."""
    try:
        if not validate_resource(orjson.loads(body)):
            return []
    except orjson.JSONDecodeError:
        pass
    return issue_tuples(validate_resource(fhir_json.loads(body)))


def rewrite_digests(items: list[tuple[bytes, dict[str, str]]]) -> list[Rewritten | None]:
    """Pool entry point for ``resolve_pending``: stored resources (valid when stored; a rewritten
    reference keeps them valid) rewritten and digested, each with the canonical hash and search
    rows of the version it was made from (the store then need not index that one again); None
    where nothing changed."""
    out: list[Rewritten | None] = []
    for body, targets in items:
        resource = fhir_json.loads(body)
        try:
            before = (resource_hash(resource), search_rows(resource))
            out.append(
                (digest_resource(resource), before) if rewrite_conditional(resource, targets) else None
            )
        except (TooDeep, fhir_json.JSONEncodeError, RecursionError):
            out.append(None)  # the extension would nest it too deeply: it stays as sent
    return out
