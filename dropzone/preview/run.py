"""Run the pipeline over files without writing anything, and say what ingest would do.

The pipeline is the real one (``Pipeline``): the same sniffing, processors,
validation, mapping and conditional-reference rewriting as ``ingest``. Only its surroundings
differ: the zone is ``PreviewSource`` (files read in place, reports kept in memory) and the
store is ``PreviewStore`` (writes go to an overlay over the tenant's store, opened read-only).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from dropzone.config import Settings
from dropzone.models import Counts, FileResult, IncomingFile
from dropzone.pipeline.runner import Pipeline
from dropzone.preview.source import PreviewSource
from dropzone.preview.store import PreviewResources, PreviewStore
from dropzone.search.index import parse_conditional
from dropzone.search.references import ConditionalResolver
from dropzone.store.base import Store

TOP_REASONS = 10
_RELATIVE = re.compile(r"^(?P<type>[A-Z][A-Za-z]{1,63})/(?P<id>[A-Za-z0-9\-.]{1,64})$")


@dataclass(slots=True)
class FilePreview:
    name: str
    path: str
    outcome: str
    reason: str | None
    counts: Counts
    new: int = 0
    changed: int = 0
    deleted: int = 0
    processor: str | None = None
    reject_reasons: list[dict[str, Any]] = field(default_factory=list)
    quality: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "outcome": self.outcome,
            "reason": self.reason,
            "processor": self.processor,
            "counts": self.counts.as_dict(),
            "against_store": {
                "new": self.new,
                "changed": self.changed,
                "unchanged": self.counts.unchanged,
                "deleted": self.deleted,
            },
            "reject_reasons": self.reject_reasons,
            "quality": self.quality,
        }


@dataclass(slots=True)
class Preview:
    tenant: str
    sample: int | None
    files: list[FilePreview]
    unresolved_references: list[dict[str, Any]]
    not_finished: dict[str, str]

    def as_json(self) -> dict[str, Any]:
        total = Counts()
        for f in self.files:
            total.add(f.counts)
        return {
            "preview": True,
            "tenant": self.tenant,
            "sample": self.sample,
            "files": [f.as_json() for f in self.files],
            "totals": {
                **total.as_dict(),
                "new": sum(f.new for f in self.files),
                "changed": sum(f.changed for f in self.files),
            },
            "unresolved_references": self.unresolved_references,
            "not_finished": self.not_finished,
        }


def preview_files(
    settings: Settings,
    store: Store,
    tenant: str,
    files: list[Path],
    *,
    sample: int | None = None,
    progress: Callable[[IncomingFile, int], None] | None = None,
    before: Callable[[IncomingFile], None] | None = None,
    after: Callable[[IncomingFile, FileResult | None], None] | None = None,
) -> Preview:
    """What ``ingest`` of ``files`` into ``tenant`` would do, given what ``store`` holds;
    ``store`` is only read."""
    source = PreviewSource(tenant, files)
    overlay = PreviewStore(store, tenant)
    results: list[FilePreview] = []
    with Pipeline(settings, overlay, source, progress=progress, record_limit=sample) as pipeline:
        for item, path in zip(source.items, files, strict=True):
            tally = overlay.resources.tally
            start = (tally.new, tally.changed, tally.deleted)
            if before is not None:
                before(item)
            result = pipeline.process(item)
            if after is not None:
                after(item, result)
            if result is None:
                continue
            record = overlay.ledger.find_file(item.key) or {}
            report = orjson.loads(source.reports[result.report]) if result.report in source.reports else {}
            results.append(
                FilePreview(
                    name=item.name,
                    path=str(path),
                    outcome=result.outcome.value,
                    reason=result.reason,
                    counts=result.counts,
                    new=tally.new - start[0],
                    changed=tally.changed - start[1],
                    deleted=tally.deleted - start[2],
                    processor=result.processor,
                    reject_reasons=report.get("reject_reasons", [])[:TOP_REASONS],
                    quality=record.get("quality"),
                )
            )
        not_finished = dict(pipeline.unfinished)
    return Preview(tenant, sample, results, unresolved(overlay.resources), not_finished)


def unresolved(resources: PreviewResources) -> list[dict[str, Any]]:
    """References of the previewed resources that would not resolve after loading them all
    (against the previewed resources and what the tenant holds), grouped as in
    ``dropzone references``."""
    targets: dict[str, set[str]] = {}
    for _src, _path, ref in resources.references:
        match = _RELATIVE.match(ref)
        if match:
            targets.setdefault(match["type"], set()).add(match["id"])
    present = {}
    for rtype, ids in targets.items():
        ordered = sorted(ids)
        found: set[str] = set()
        for start in range(0, len(ordered), 900):
            found |= resources.present(rtype, ordered[start : start + 900])
        present[rtype] = found
    resolver = ConditionalResolver(resources, resources.tenant)
    groups: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for (src, path, ref), tally in sorted(resources.references.items()):
        match = _RELATIVE.match(ref)
        if match:
            if match["id"] in present.get(match["type"], ()):
                continue
            reason, target = "missing_target", match["type"]
        elif (parsed := parse_conditional(ref)) is not None:
            if resolver.target(ref) is not None:
                continue
            reason, target = "conditional_no_single_match", parsed[0]
        elif ref.startswith("urn:"):
            reason, target = "unresolved_urn", "?"
        elif "://" in ref:
            continue  # an absolute URL: not ours to check
        else:
            reason, target = "unparsable", "?"
        group = groups.setdefault(
            (src, path, target, reason),
            {
                "source_type": src,
                "path": f"{src}.{path}",
                "target_type": target,
                "reason": reason,
                "count": 0,
                "example_ids": [],
            },
        )
        group["count"] += tally.count
        for rid in tally.examples:
            if len(group["example_ids"]) < 5 and rid not in group["example_ids"]:
                group["example_ids"].append(rid)
    return list(groups.values())
