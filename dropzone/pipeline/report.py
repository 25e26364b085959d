"""The machine-readable error report (``<file>.error.json``) and the rejects bookkeeping.

Format (documented in README, "Error reports"): one JSON object with the file, tenant, sha256,
processor, outcome, counts, the file-level error if any, and one item per rejected record with
its location, resourceType/id when known and messages with FHIR element paths. Never values.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from dropzone.models import Counts
from processors.base import Issue, Record

REPORT_VERSION = 1
# Distinct (code, path) reasons counted per file; past this many, the rest count as one.
MAX_REASONS = 500
_POSITION = re.compile(r"\[\d+\]")


def reason_path(path: str | None) -> str:
    """A FHIR path without array positions: ``Patient.name[2].family`` -> ``Patient.name.family``."""
    return _POSITION.sub("", path) if path else ""


@dataclass(slots=True)
class RejectLog:
    """Rejected records of one file: all indexes (for the rejects file), details up to a cap."""

    cap: int
    indexes: set[int] = field(default_factory=set)
    items: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    omitted: int = 0
    # Every rejected record's issues by (code, path without positions), not capped like items.
    reasons: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, record: Record, issues: list[Issue]) -> None:
        self.indexes.add(record.index)
        for issue in issues:
            key = (issue.code, reason_path(issue.path))
            if key in self.reasons or len(self.reasons) < MAX_REASONS:
                self.reasons[key] += 1
            else:
                self.reasons[("other", "")] += 1
        if len(self.items) >= self.cap:
            self.omitted += 1
            return
        self.items.append(
            {
                "location": record.location,
                "index": record.index,
                **record.describe(),
                "errors": [issue_json(i) for i in issues],
            }
        )

    def reason_list(self) -> list[dict[str, Any]]:
        """Most frequent first: ``[{"code", "path", "count"}]`` (issues, so a record with two
        problems counts in both)."""
        return [
            {"code": code, "path": path, "count": n}
            for (code, path), n in sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0]))
        ]

    def warn(self, record: Record) -> None:
        if len(self.warnings) < self.cap:
            self.warnings.append(
                {"location": record.location, "warnings": [issue_json(w) for w in record.warnings]}
            )


def issue_json(issue: Issue) -> dict[str, Any]:
    out: dict[str, Any] = {"code": issue.code, "message": issue.message}
    if issue.path:
        out["path"] = issue.path
    return out


def build_report(
    *,
    file_name: str,
    original_key: str,
    tenant: str,
    sha256: str | None,
    processor: str | None,
    outcome: str,
    counts: Counts,
    error: Issue | None,
    rejects: RejectLog | None,
    destination: str | None,
    rejects_key: str | None,
    generated_at: str,
    details: dict[str, Any] | None = None,
    quality: dict[str, Any] | None = None,
) -> bytes:
    report: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "file": file_name,
        "original_key": original_key,
        "tenant": tenant,
        "sha256": sha256,
        "processor": processor,
        "outcome": outcome,
        "destination": destination,
        "counts": counts.as_dict(),
        "error": issue_json(error) if error else None,
        "rejected_records": rejects.items if rejects else [],
        "rejected_records_omitted": rejects.omitted if rejects else 0,
        "reject_reasons": rejects.reason_list() if rejects else [],
        "rejects_file": rejects_key,
        "warnings": rejects.warnings if rejects else [],
        "details": details or {},
        # The quality profile of the accepted records (dropzone.quality.profile).
        "quality": quality,
        "generated_at": generated_at,
    }
    return orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n"
