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

import copy
import logging
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dropzone.log import event
from dropzone.search.index import (
    CONDITIONAL_KEY,
    REF_PREFIX,
    WAITING_PREFIX,
    parse_conditional,
    reference_paths,
    values_at,
    waiting_key,
)
from dropzone.store.base import ResourceStore, ResourceWrite

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

    def target(self, reference: str) -> str | None:
        """``Type/id`` of the one stored resource the conditional reference names, else None."""
        if reference not in self._answers:
            parsed = parse_conditional(reference)
            self._answers[reference] = self._match(*parsed) if parsed is not None else None
        return self._answers[reference]

    def _waiting_resolves(self, key: str) -> bool:
        rtype, system, value = key[len(WAITING_PREFIX) :].split("|", 2)
        return self.unique(rtype, None if system == "*" else system, value)

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
            return
        written = set(types)
        self._matches = {k: v for k, v in self._matches.items() if k[0] not in written}
        self._answers = {k: v for k, v in self._answers.items() if k.split("?", 1)[0] not in written}

    def rewrite(self, resource: dict[str, Any]) -> dict[str, Any] | None:
        """A copy with every resolvable conditional reference rewritten, or None if none is
        (then nothing is copied: most unresolved references stay unresolved file after file)."""
        paths = [
            path
            for path in reference_paths(resource.get("resourceType", ""))
            if any(_conditional(v) and self.target(v["reference"]) for v in values_at(resource, path))
        ]
        if not paths:
            return None
        out = copy.deepcopy(resource)
        for path in paths:
            for value in values_at(out, path):
                target = self.target(value["reference"]) if _conditional(value) else None
                if target is not None:
                    original = value["reference"]
                    value["reference"] = target
                    value["extension"] = [
                        *value.get("extension", []),
                        {"url": ORIGINAL_REFERENCE_URL, "valueString": original},
                    ]
        return out

    def apply(self, write: ResourceWrite) -> ResourceWrite:
        """``write`` itself, or a new write of its rewritten resource."""
        keys = write.search_rows()[0]
        if CONDITIONAL_KEY not in keys:
            return write
        # The waiting keys name each conditional reference's type and identifier: when none
        # resolves, the resource is not even parsed.
        if not any(self._waiting_resolves(k) for k in keys if k.startswith(WAITING_PREFIX)):
            return write
        rewritten = self.rewrite(write.content())
        if rewritten is None:
            return write
        from dropzone.pipeline.digest import digest_resource  # the pipeline imports the store

        rtype, rid, digest, body, identifiers, index = digest_resource(rewritten)
        return ResourceWrite(rtype, rid, rewritten, digest, body, identifiers, index)


def _conditional(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("reference"), str) and "?" in value["reference"]


def resolve_pending(
    store: ResourceStore, tenant: str, identifiers: Iterable[tuple[str, str, str]] | None = None
) -> int:
    """Rewrite stored resources whose conditional references now resolve (new versions).
    ``identifiers``: (type, system, value) of what was just stored, so that only resources
    waiting for those are read; None reads every resource still holding one. Returns how many
    resources changed."""
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
    changed = 0
    for rtype, id_set in pending.items():
        ids = sorted(id_set)
        for start in range(0, len(ids), 500):
            writes = []
            for resource in store.get_many(tenant, rtype, ids[start : start + 500]).values():
                stored = ResourceWrite(rtype, resource["id"], _without_server_meta(resource), "")
                write = resolver.apply(stored)
                if write is not stored:
                    writes.append(write)
            if writes:
                changed += store.upsert(tenant, writes, None, durable=False).loaded
    if changed:
        event(_log, "references.resolved", tenant=tenant, resources=changed)
    return changed


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
