"""References that resolve, and a report of those that do not.

**Conditional references** (``Location?identifier=system|value``, as Synthea's Bulk export
writes them) are rewritten to ``Type/id`` when exactly one stored resource of the tenant has
that identifier. The reference as sent is kept beside it, in an extension on the Reference:
``{"url": ORIGINAL_REFERENCE_URL, "valueString": "Location?identifier=..."}``. Ambiguous or
unmatched ones stay as sent. This happens when a resource is stored (``ConditionalResolver``,
the loader) and again after each file for resources still holding one (``resolve_pending``),
so a reference resolves once its target arrives in a later file.

**The integrity report** (``reference_report``) lists every reference of a tenant that does not
point at a stored resource, grouped by source type, path and target type, with counts and up to
five example source ids. Reference text and identifier values never appear in it.
"""

from __future__ import annotations

import bisect
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dropzone.log import event
from dropzone.search.index import (
    CONDITIONAL_KEY,
    REF_PREFIX,
    WAITING_PREFIX,
    parse_conditional,
    reference_values,
    waiting_key,
)
from dropzone.store.base import ResourceStore, ResourceWrite
from processors import fhir_json

if TYPE_CHECKING:
    from dropzone.pipeline.settle import Rewritten

_log = logging.getLogger("dropzone.references")
ORIGINAL_REFERENCE_URL = "urn:dropzone:fhir:original-reference"
_RELATIVE = re.compile(r"^(?P<type>[A-Z][A-Za-z]{1,63})/(?P<id>[A-Za-z0-9\-.]{1,64})$")
EXAMPLES = 5


class ConditionalResolver:
    """Resolves conditional references against one tenant's stored resources; remembers each
    answer for its lifetime (a file), since one file repeats the same few references."""

    def __init__(self, store: ResourceStore, tenant: str) -> None:
        self._store = store
        self._tenant = tenant
        self._answers: dict[str, str | None] = {}
        self._matches: dict[tuple[str, str | None, str], str | None] = {}
        # The same answers by waiting key: the loader asks by key for every resource it reads.
        self._by_waiting_key: dict[str, str | None] = {}

    def target(self, reference: str) -> str | None:
        """``Type/id`` of the one stored resource the conditional reference names, else None."""
        if reference not in self._answers:
            parsed = parse_conditional(reference)
            self._answers[reference] = self._match(*parsed) if parsed is not None else None
        return self._answers[reference]

    def unique(self, rtype: str, system: str | None, value: str) -> bool:
        """Whether exactly one stored ``rtype`` has this identifier."""
        return self._match(rtype, system, value) is not None

    def _match(self, rtype: str, system: str | None, value: str) -> str | None:
        key = (rtype, system, value)
        if key not in self._matches:
            ids = self._store.find_by_identifier(self._tenant, rtype, system, value)
            self._matches[key] = f"{rtype}/{ids[0]}" if len(ids) == 1 else None
        return self._matches[key]

    def forget(self, types: Iterable[str] | None = None) -> None:
        """After writes of ``types`` (default: any) that may add targets."""
        if types is None:
            self._answers.clear()
            self._matches.clear()
            self._by_waiting_key.clear()
            return
        written = set(types)
        self._matches = {k: v for k, v in self._matches.items() if k[0] not in written}
        self._answers = {k: v for k, v in self._answers.items() if k.split("?", 1)[0] not in written}
        start = len(WAITING_PREFIX)
        self._by_waiting_key = {
            k: v for k, v in self._by_waiting_key.items() if k[start:].split("|", 1)[0] not in written
        }

    def targets(self, keys: Sequence[str]) -> dict[str, str]:
        """Of these search keys (sorted, as ``search_rows`` makes them), the waiting keys that
        now name exactly one stored resource, each with that resource's ``Type/id`` (what
        ``rewrite_conditional`` takes)."""
        out = {}
        # The loader asks for every resource of a batch: the waiting keys are one sorted run.
        for position in range(bisect.bisect_left(keys, WAITING_PREFIX), len(keys)):
            key = keys[position]
            if not key.startswith(WAITING_PREFIX):
                break
            try:
                target = self._by_waiting_key[key]
            except KeyError:
                rtype, system, value = key[len(WAITING_PREFIX) :].split("|", 2)
                target = self._match(rtype, None if system == "*" else system, value)
                self._by_waiting_key[key] = target
            if target is not None:
                out[key] = target
        return out

    def conditional_targets(self, resource: dict[str, Any]) -> dict[str, str]:
        """The targets of ``resource``'s conditional references that resolve, by waiting key."""
        out = {}
        for value, key in _conditional_references(resource):
            if key not in out:
                target = self.target(value["reference"])
                if target is not None:
                    out[key] = target
        return out

    def apply(self, write: ResourceWrite) -> ResourceWrite:
        """``write`` itself, or a new write of its rewritten resource."""
        keys = write.search_rows()[0]
        if CONDITIONAL_KEY not in keys:
            return write
        # The waiting keys name each conditional reference's type and identifier: when none
        # resolves, the resource is not even parsed.
        targets = self.targets(keys)
        if not targets:
            return write
        # A fresh parse of the text is the copy (several times cheaper than copy.deepcopy).
        rewritten = fhir_json.loads(write.text())
        if not rewrite_conditional(rewritten, targets):
            return write
        from dropzone.pipeline.digest import digest_resource  # the pipeline imports the store

        rtype, rid, digest, body, identifiers, index = digest_resource(rewritten)
        return ResourceWrite(rtype, rid, rewritten, digest, body, identifiers, index)


def rewrite_conditional(resource: dict[str, Any], targets: Mapping[str, str]) -> bool:
    """In place: every conditional reference whose waiting key is in ``targets`` becomes that
    ``Type/id``, the reference as sent kept in an extension. Pure (no store), so pool workers
    run it with the targets the main process looked up. Returns whether anything changed."""
    changed = False
    for value, key in _conditional_references(resource):
        target = targets.get(key)
        if target is not None:
            original = value["reference"]
            value["reference"] = target
            value["extension"] = [
                *value.get("extension", []),
                {"url": ORIGINAL_REFERENCE_URL, "valueString": original},
            ]
            changed = True
    return changed


def _conditional_references(resource: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    """Each Reference element of ``resource`` that is conditional, with its waiting key."""
    for value in reference_values(resource):
        key = _waiting_key_of(value)
        if key is not None:
            yield value, key


def _waiting_key_of(value: Any) -> str | None:
    if not _conditional(value):
        return None
    parsed = parse_conditional(value["reference"])
    return waiting_key(*parsed) if parsed is not None else None


def _conditional(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("reference"), str) and "?" in value["reference"]


# Starts rewriting stored resources, each (JSON text, targets by waiting key), and returns what
# waits for the outcome: per item its rewrite, or None when nothing changed
# (``dropzone.pipeline.settle.rewrite_digests``; the pipeline runs it in its pool).
Submit = Callable[[list[tuple[bytes, dict[str, str]]]], Callable[[], "list[Rewritten | None]"]]


def _here(items: list[tuple[bytes, dict[str, str]]]) -> Callable[[], list[Rewritten | None]]:
    from dropzone.pipeline.settle import rewrite_digests  # the pipeline imports the store

    done = rewrite_digests(items)
    return lambda: done


def resolve_pending(
    store: ResourceStore,
    tenant: str,
    identifiers: Iterable[tuple[str, str, str]] | None = None,
    submit: Submit | None = None,
) -> int:
    """Rewrite stored resources whose conditional references now resolve (new versions).
    ``identifiers``: (type, system, value) of what was just stored, so that only resources
    waiting for those are read; None reads every resource still holding one. ``submit`` does
    the rewriting and hashing (the pipeline passes its pool, so this process reads the next
    chunk meanwhile; default: here). Returns how many resources changed."""
    resolver = ConditionalResolver(store, tenant)
    types = store.resource_types()
    if identifiers is None:
        rows = store.keyed(tenant, [CONDITIONAL_KEY], types)
    else:
        candidates: dict[str, tuple[str, str | None, str]] = {}
        for rtype, system, value in identifiers:
            candidates[waiting_key(rtype, None, value)] = (rtype, None, value)
            if system:
                candidates[waiting_key(rtype, system, value)] = (rtype, system, value)
        # Which of them anything waits for (one indexed query per chunk), then which of those
        # now name exactly one resource: a waiting resource is read only when it will change.
        present = store.keys_present(tenant, sorted(candidates), types)
        resolving = sorted(key for key in present if resolver.unique(*candidates[key]))
        rows = store.keyed(tenant, resolving, types) if resolving else []
    pending: dict[str, set[str]] = defaultdict(set)
    for rtype, rid, _key in rows:
        pending[rtype].add(rid)
    chunks = [
        (rtype, ordered[start : start + 500])
        for rtype, ids in pending.items()
        for ordered in (sorted(ids),)
        for start in range(0, len(ordered), 500)
    ]
    start_rewrite = submit or _here
    changed = 0
    previous: Callable[[], list[Rewritten | None]] | None = None
    for rtype, ids in chunks:
        items = []
        for resource in store.get_many(tenant, rtype, ids).values():
            content = _without_server_meta(resource)
            targets = resolver.conditional_targets(content)
            if targets:
                items.append((fhir_json.dumps(content), targets))
        # The workers rewrite this chunk while the previous one is stored (other resources).
        current = start_rewrite(items) if items else None
        if previous is not None:
            changed += _store_rewritten(store, tenant, previous())
        previous = current
    if previous is not None:
        changed += _store_rewritten(store, tenant, previous())
    if changed:
        event(_log, "references.resolved", tenant=tenant, resources=changed)
    return changed


def _store_rewritten(store: ResourceStore, tenant: str, outcomes: list[Rewritten | None]) -> int:
    writes = [
        ResourceWrite(t, i, None, h, body, idents, index, replaces=before)
        for outcome in outcomes
        if outcome is not None
        for (t, i, h, body, idents, index), before in (outcome,)
    ]
    return store.upsert(tenant, writes, None, durable=False).loaded if writes else 0


def _without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource as the sender's content (the store adds versionId/lastUpdated on read)."""
    out = dict(resource)
    meta = {k: v for k, v in (out.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        out["meta"] = meta
    else:
        out.pop("meta", None)
    return out


@dataclass(slots=True)
class _Group:
    count: int = 0
    examples: list[str] = field(default_factory=list)


def reference_report(store: ResourceStore, tenant: str) -> dict[str, Any]:
    """Every reference of the tenant that does not resolve to a stored resource, grouped."""
    relative: dict[str, set[str]] = defaultdict(set)
    refs: list[tuple[str, str, str, str]] = []  # source type, source id, path, reference
    total = 0
    for rtype, rid, key in store.reference_keys(tenant):
        path, _, ref = key[len(REF_PREFIX) :].partition("|")
        total += 1
        refs.append((rtype, rid, path, ref))
        match = _RELATIVE.match(ref)
        if match:
            relative[match["type"]].add(match["id"])
    present: dict[str, set[str]] = {}
    for target_type, ids in relative.items():
        ordered = sorted(ids)
        found: set[str] = set()
        for start in range(0, len(ordered), 900):
            found.update(store.existing(tenant, target_type, ordered[start : start + 900]))
        present[target_type] = found
    resolver = ConditionalResolver(store, tenant)
    groups: dict[tuple[str, str, str, str], _Group] = defaultdict(_Group)
    for rtype, rid, path, ref in refs:
        reason, target_type = _unresolved(ref, present, resolver)
        if reason is None:
            continue
        group = groups[(rtype, path, target_type, reason)]
        group.count += 1
        if len(group.examples) < EXAMPLES and rid not in group.examples:
            group.examples.append(rid)
    rows = [
        {
            "source_type": s,
            "path": f"{s}.{p}",
            "target_type": t,
            "reason": reason,
            "count": g.count,
            "example_ids": g.examples,
        }
        for (s, p, t, reason), g in sorted(groups.items())
    ]
    return {
        "tenant": tenant,
        "references": total,
        "unresolved": sum(r["count"] for r in rows),  # type: ignore[misc]
        "groups": rows,
    }


def _unresolved(
    ref: str, present: dict[str, set[str]], resolver: ConditionalResolver
) -> tuple[str | None, str]:
    """(reason or None when it resolves, target type or "?")."""
    match = _RELATIVE.match(ref)
    if match:
        return (None if match["id"] in present.get(match["type"], ()) else "missing_target"), match["type"]
    parsed = parse_conditional(ref)
    if parsed is not None:
        if resolver.target(ref) is not None:
            return "conditional_not_yet_rewritten", parsed[0]
        return "conditional_no_single_match", parsed[0]
    if ref.startswith("urn:"):
        return "unresolved_urn", "?"
    if "://" in ref:
        return "external", ref.rsplit("/", 2)[-2] if ref.count("/") >= 2 else "?"
    return "unparsable", "?"
