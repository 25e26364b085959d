"""A store that remembers what the previewed files would write, over the tenant's real store,
which it only reads.

Writes land in an overlay that holds, per resource, what the pipeline compares (hash, version)
and its identifiers, and the body only of resources holding a conditional reference not yet
resolved (so that a later file's targets resolve them as in ingest, ``resolve_pending``): about
150 bytes per resource otherwise. Reads see the overlay first, then the real store: a resource
the first previewed file "creates" is "unchanged" when the second file sends it again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from dropzone.search.index import CONDITIONAL_KEY, REF_PREFIX, WAITING_PREFIX
from dropzone.search.query import SearchPage, SearchQuery
from dropzone.store.base import (
    ClaimAnswer,
    ClaimState,
    Existing,
    Ledger,
    ResourceStore,
    ResourceWrite,
    Store,
)
from dropzone.store.memory import MemoryLedger
from processors import fhir_json

EXAMPLES = 5


@dataclass(slots=True)
class WriteTally:
    """What the previewed writes would do to the tenant's store."""

    new: int = 0
    changed: int = 0
    deleted: int = 0
    # New versions of earlier resources whose conditional references a file resolved (outside
    # the file's counts, as in ingest).
    rewritten: int = 0


@dataclass(slots=True)
class _RefGroup:
    count: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Planned:
    """One overlay write, as ``_write_documents`` receives it."""

    doc_id: str
    rid: str
    existing: Existing
    identifiers: list[tuple[str, str]]
    waiting: tuple[frozenset[str], bytes] | None  # its waiting keys and body, if any


class PreviewResources(ResourceStore):
    def __init__(self, base: ResourceStore, tenant: str) -> None:
        self.base = base
        self.tenant = tenant
        self.tally = WriteTally()
        self._written: dict[str, dict[str, Existing]] = defaultdict(dict)  # type -> id -> state
        self._deleted: set[tuple[str, str]] = set()
        self._identifiers: dict[tuple[str, str | None, str], set[str]] = defaultdict(set)
        # (type, id) -> (waiting keys, body) of overlay resources with unresolved conditionals
        self._waiting: dict[tuple[str, str], tuple[frozenset[str], bytes]] = {}
        # (source type, path, reference) -> count and example source ids, for the integrity check
        self.references: dict[tuple[str, str, str], _RefGroup] = defaultdict(_RefGroup)

    def ensure_indexes(self) -> None:
        """Nothing: the overlay is dictionaries, and the real store is not touched."""

    def existing(self, tenant: str, rtype: str, ids: Sequence[str]) -> dict[str, Existing]:
        written = self._written.get(rtype, {})
        found = {rid: written[rid] for rid in ids if rid in written}
        rest = [rid for rid in ids if rid not in found and (rtype, rid) not in self._deleted]
        if rest:
            found.update(self.base.existing(tenant, rtype, rest))
        return found

    def _new_document(
        self, tenant: str, write: ResourceWrite, version: int, file_sha256: str | None, now: str, first: str
    ) -> _Planned:
        if file_sha256 is None:
            self.tally.rewritten += 1  # resolve_pending: not a file's write
        elif version == 1:
            self.tally.new += 1
        else:
            self.tally.changed += 1
        keys, _dates = write.search_rows()
        waiting = None
        if CONDITIONAL_KEY in keys:
            marks = frozenset(k for k in keys if k == CONDITIONAL_KEY or k.startswith(WAITING_PREFIX))
            waiting = (marks, write.text())
        for key in keys:
            if key.startswith(REF_PREFIX):
                path, _, ref = key[len(REF_PREFIX) :].partition("|")
                group = self.references[(write.type, path, ref)]
                group.count += 1
                if len(group.examples) < EXAMPLES:
                    group.examples.append(write.id)
        return _Planned(
            f"{tenant}/{write.id}",
            write.id,
            Existing(write.hash, version, file_sha256, first),
            write.identifier_rows(),
            waiting,
        )

    def _write_documents(self, rtype: str, docs: list[Any], history: list[tuple[str, int]]) -> set[str]:
        for planned in docs:
            self._written[rtype][planned.rid] = planned.existing
            self._deleted.discard((rtype, planned.rid))
            if planned.waiting is None:
                self._waiting.pop((rtype, planned.rid), None)
            else:
                self._waiting[(rtype, planned.rid)] = planned.waiting
            for value, system in planned.identifiers:
                self._identifiers[(rtype, system, value)].add(planned.rid)
                self._identifiers[(rtype, None, value)].add(planned.rid)
        return set()  # an overlay in this process: nothing else writes to it

    def _delete_document(self, rtype: str, doc_id: str) -> bool:
        rid = doc_id.partition("/")[2]
        self._written.get(rtype, {}).pop(rid, None)
        self._waiting.pop((rtype, rid), None)
        self._deleted.add((rtype, rid))
        self.tally.deleted += 1
        return True

    def get_document(self, tenant: str, rtype: str, resource_id: str) -> dict[str, Any] | None:
        if (rtype, resource_id) in self._deleted:
            return None
        return self.base.get_document(tenant, rtype, resource_id)

    def written_by(
        self, tenant: str, rtype: str, ids: Sequence[str], file_sha256: str
    ) -> set[tuple[str, str]]:
        return self.base.written_by(tenant, rtype, ids, file_sha256)

    def history(self, tenant: str, rtype: str, resource_id: str) -> list[dict[str, Any]]:
        return self.base.history(tenant, rtype, resource_id)

    def find_by_identifier(self, tenant: str, rtype: str, system: str | None, value: str) -> list[str]:
        ids = set(self.base.find_by_identifier(tenant, rtype, system, value))
        ids -= {rid for t, rid in self._deleted if t == rtype}
        ids |= self._identifiers.get((rtype, system, value), set())
        return sorted(ids)

    def present(self, rtype: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` exist after the previewed writes."""
        return set(self.existing(self.tenant, rtype, ids))

    # What ``resolve_pending`` reads: the real store's answers, corrected by the overlay.

    def resource_types(self) -> list[str]:
        return sorted(set(self.base.resource_types()) | set(self._written))

    def _shadowed(self, rtype: str, rid: str) -> bool:
        return (rtype, rid) in self._deleted or rid in self._written.get(rtype, {})

    def keyed(self, tenant: str, keys: Sequence[str], types: Iterable[str]) -> list[tuple[str, str, str]]:
        types = list(types)
        rows = [r for r in self.base.keyed(tenant, keys, types) if not self._shadowed(r[0], r[1])]
        wanted, allowed = set(keys), set(types)
        for (rtype, rid), (marks, _body) in self._waiting.items():
            if rtype in allowed:
                rows.extend((rtype, rid, key) for key in marks & wanted)
        return rows

    def get_many(self, tenant: str, rtype: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        found = {}
        rest = []
        for rid in ids:
            held = self._waiting.get((rtype, rid))
            if held is not None:
                found[rid] = fhir_json.loads(held[1])
            elif (rtype, rid) not in self._deleted:
                rest.append(rid)
        found.update(self.base.get_many(tenant, rtype, rest) if rest else {})
        return found

    # Reads the pipeline does not make: answered by the real store.

    def counts(self, tenants: Iterable[str] | None = None) -> dict[str, int]:
        return self.base.counts(tenants)

    def tenant_counts(self, tenants: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
        return self.base.tenant_counts(tenants)

    def iter_resources(self, tenant: str, rtype: str, since: str | None = None) -> Iterator[dict[str, Any]]:
        return self.base.iter_resources(tenant, rtype, since)

    def search(self, tenant: str, query: SearchQuery) -> SearchPage:
        return self.base.search(tenant, query)

    def reference_keys(self, tenant: str) -> Iterator[tuple[str, str, str]]:
        return self.base.reference_keys(tenant)

    def close(self) -> None:
        """The real store is closed by whoever opened it."""


class PreviewLedger(MemoryLedger):
    """A fresh in-memory ledger, except that content the real ledger has finished (and not
    quarantined) is DONE, so a file already loaded previews as the duplicate it would be."""

    def __init__(self, base: Ledger) -> None:
        super().__init__()
        self.base = base

    def claim(self, tenant: str, sha256: str, path: str, owner: str, lease_seconds: float) -> ClaimAnswer:
        done = self.base.finished_claim(tenant, sha256)
        if done is not None:
            # Not this path: the pipeline records a duplicate instead of finishing a move.
            return ClaimAnswer(ClaimState.DONE, done={**done, "path": None})
        return super().claim(tenant, sha256, path, owner, lease_seconds)


class PreviewStore(Store):
    persistent = False

    def __init__(self, base: Store, tenant: str) -> None:
        self.base = base
        self.resources: PreviewResources = PreviewResources(base.resources, tenant)
        self.ledger: PreviewLedger = PreviewLedger(base.ledger)
        self.description = f"preview over {base.description} (nothing is written)"

    def close(self) -> None:
        """The real store is closed by whoever opened it."""
