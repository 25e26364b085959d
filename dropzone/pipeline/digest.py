"""What the loader needs of a resource before it looks at the store, made where the resource is
parsed: identity, canonical hash, the JSON text to store, its identifiers and search rows.

For records that carry a raw payload (``Record.raw``: NDJSON lines, claims' CSV fields)
``digest_raws`` runs in a pool worker: parsing or mapping, the processor's record checks,
hashing and serialising then use every core, and the main process only compares hashes and
stores text. Results are plain tuples so that pickling them back is cheap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

from dropzone.pipeline.canonical import canonical_bytes
from dropzone.search.index import SearchRows, search_rows
from dropzone.store import packing
from dropzone.store.base import identifier_rows
from dropzone.validation import validate_resource
from processors import fhir_json
from processors.base import Issue, RawParsed

# resourceType, id, canonical sha256, JSON text (``fhir_json.dumps``; packed when asked, see
# ``digest_resource``), (value, system) identifiers, search rows (``dropzone.search.index``)
Digest = tuple[str, str, str, bytes, list[tuple[str, str]], SearchRows]
IssueTuple = tuple[str, str, str | None]
# A digest's validation issues when the worker validated it already (None: not asked to). A
# resource with conditional references is validated as sent: rewriting them keeps it valid.
Verdict = list[IssueTuple] | None
# The digests of a record's resources and their verdicts (none when not asked to validate), or
# its issues (then no digests).
RawOutcome = tuple[list[Digest], list[IssueTuple], list[Verdict]]

TOO_DEEP = Issue("too_deep", "the resource nests too deeply to store")


class TooDeep(Exception):
    """orjson writes at most 255 levels of nesting: such a resource cannot be stored."""


def digest_resource(resource: dict[str, Any], pack: bool = False) -> Digest:
    """``pack``: the body packed when large (``dropzone.store.packing``), for a store that keeps
    it so (``ResourceStore.packs_bodies``)."""
    try:
        canonical = canonical_bytes(resource)
        body = fhir_json.dumps(resource)
    except (fhir_json.JSONEncodeError, RecursionError) as err:
        raise TooDeep from err
    if pack:
        body = packing.pack(body)
    return (
        resource["resourceType"],
        resource["id"],
        hashlib.sha256(canonical).hexdigest(),
        body,
        identifier_rows(resource),
        search_rows(resource),
    )


def digest_raws(
    parser: Callable[[Any], RawParsed], raws: list[Any], validate: bool = False, pack: bool = False
) -> list[RawOutcome]:
    """Pool entry point: each record's raw payload -> its digests or its issues. With
    ``validate`` (the loader asks while most of a file is new) each resource is validated here,
    from the parse or mapping at hand: ``settle`` would read its body again (for a carrier EOB
    that reading costs half as much as validating) and it would travel to a worker twice."""
    out: list[RawOutcome] = []
    for raw in raws:
        resources, issues = parser(raw)
        if issues:
            out.append(([], issue_tuples(issues), []))
            continue
        try:
            digests = [digest_resource(r, pack) for r in resources]
        except TooDeep:
            out.append(([], [(TOO_DEEP.code, TOO_DEEP.message, TOO_DEEP.path)], []))
            continue
        verdicts = [issue_tuples(validate_resource(r)) for r in resources] if validate else []
        out.append((digests, [], verdicts))
    return out


def issue_tuples(issues: Iterable[Issue]) -> list[IssueTuple]:
    """Issues as the plain tuples a pool trip sends back (cheap to pickle)."""
    return [(i.code, i.message, i.path) for i in issues]
