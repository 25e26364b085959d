"""While most of a file is new, the pool validates each resource in its first trip, as it digests
it, instead of reading its body again in ``settle``: the verdict must be the one ``settle``
gives, and a file whose resources are already stored must stop paying for it. Resources with
conditional references too: a rewrite keeps them valid, so ``settle`` only rewrites them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import BULK, PipelineFactory, drop
from dropzone.models import Outcome
from dropzone.pipeline import loader
from dropzone.pipeline import settle as settle_module
from dropzone.pipeline.digest import digest_raws
from dropzone.pipeline.settle import settle
from dropzone.search.index import CONDITIONAL_KEY, WAITING_PREFIX, search_rows
from dropzone.search.references import rewrite_conditional
from dropzone.store.sqlite import SqliteStore
from dropzone.validation import validate_resource
from processors.fhir_ndjson import parse_line


def _lines_with_defects() -> list[bytes]:
    """Bulk-export Patients and Conditions (literal references only), every third one with a
    defect of a different kind."""
    lines = [*(BULK / "Patient.000.ndjson").read_bytes().splitlines()[:10]]
    lines += (BULK / "Condition.000.ndjson").read_bytes().splitlines()[:20]
    out = []
    for n, line in enumerate(lines):
        resource = orjson.loads(line)
        if n % 3 == 0:
            kind = n // 3 % 4
            if kind == 0:
                resource["bogusElement"] = True
            elif kind == 1:
                resource["id"] = "x" * 65
            elif kind == 2:
                resource["meta"] = {}
            else:
                resource["text"] = {"status": "bogus", "div": "<div>x</div>"}
        out.append(orjson.dumps(resource))
    return out


def test_first_trip_verdicts_are_settles_verdicts() -> None:
    lines = _lines_with_defects()
    early = digest_raws(parse_line, lines, True)
    late = digest_raws(parse_line, lines, False)
    assert [issues for _, issues, _ in early] == [issues for _, issues, _ in late]
    assert all(verdicts == [] for _, _, verdicts in late)  # not asked: no verdicts
    digested = [(digests, verdicts) for digests, issues, verdicts in early if not issues]
    settled = settle([(digests[0][3], None, None, False) for digests, _ in digested])
    rejected = sum(1 for _, issues, _ in early if issues)  # by the line parser, in both trips
    for (_, verdicts), (_, issues) in zip(digested, settled, strict=True):
        assert verdicts == [issues]
        rejected += bool(issues)
    assert rejected == 10  # every defect found


def test_a_re_sent_file_stops_validating_in_the_first_trip(
    zone: Path, tmp_path: Path, make_pipeline: PipelineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[bool] = []

    def spy(parser: Any, raws: list[Any], validate: bool = False, pack: bool = False) -> Any:
        asked.append(validate)
        return digest_raws(parser, raws, validate, pack)

    monkeypatch.setattr(loader, "digest_raws", spy)
    source = BULK / "Procedure.000.ndjson"
    store = SqliteStore(zone / "store.sqlite")
    pipe = make_pipeline(store, batch_size=50, validation_workers=0)
    drop(zone, "acme", source)
    [first] = pipe.drain()
    assert first.outcome == Outcome.ARCHIVED and first.counts.loaded > 500
    assert all(asked), "a new file is validated as it is digested"
    asked.clear()

    # The same resources in other bytes (keys reversed), in a new file.
    again = tmp_path / "again.ndjson"
    again.write_bytes(
        b"".join(
            orjson.dumps(dict(reversed(orjson.loads(line).items()))) + b"\n"
            for line in source.read_bytes().splitlines()
        )
    )
    drop(zone, "acme", again)
    [second] = pipe.drain()
    assert second.outcome == Outcome.ARCHIVED
    assert second.counts.unchanged == first.counts.loaded and second.counts.loaded == 0
    assert asked[0] and not any(asked[len(asked) // 4 :]), asked


def _with_conditional_references() -> list[dict[str, Any]]:
    found = []
    for path in sorted(BULK.glob("*.ndjson")):
        for line in path.read_bytes().splitlines():
            resource = orjson.loads(line)
            if CONDITIONAL_KEY in search_rows(resource)[0]:
                found.append(resource)
    return found


def test_a_rewrite_keeps_a_valid_resource_valid() -> None:
    """What lets ``settle`` skip validating a resource the first trip found valid: every
    conditional reference rewritten to a stored ``Type/id`` leaves it valid."""
    resources = _with_conditional_references()
    assert len(resources) > 1000  # Encounters, MedicationRequests, Procedures, ...
    for resource in resources:
        assert validate_resource(resource) == []
        keys = [k for k in search_rows(resource)[0] if k.startswith(WAITING_PREFIX)]
        targets = {key: f"{key.split('|')[1]}/target-{n}" for n, key in enumerate(keys)}
        assert rewrite_conditional(resource, targets)
        assert validate_resource(resource) == [], resource["resourceType"]


def test_conditional_resources_are_validated_in_the_first_trip(
    zone: Path, tmp_path: Path, make_pipeline: PipelineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[Any] = []
    validated_in_settle: list[str] = []

    def settle_spy(items: list[Any]) -> Any:
        sent.extend(items)
        return settle(items)

    def validate_spy(resource: dict[str, Any]) -> Any:
        validated_in_settle.append(resource["resourceType"])
        return validate_resource(resource)

    monkeypatch.setattr(loader, "settle", settle_spy)
    monkeypatch.setattr(settle_module, "validate_resource", validate_spy)
    encounters = BULK / "Encounter.000.ndjson"
    lines = encounters.read_bytes().splitlines()
    # One Encounter with a defect: rejected in the first trip, with its path.
    bad = orjson.loads(lines[0])
    bad["status"] = "bogus"
    first = tmp_path / "Encounter.first.ndjson"
    first.write_bytes(b"\n".join([orjson.dumps(bad), *lines[1:]]) + b"\n")
    store = SqliteStore(zone / "store.sqlite")
    pipe = make_pipeline(store, batch_size=50, validation_workers=0)

    # Nothing stored that the references name: they stay as sent, and no resource needs a
    # second trip (before, each one took it to be validated).
    drop(zone, "acme", first)
    [result] = pipe.drain()
    assert result.counts.rejected == 1 and result.counts.loaded == len(lines) - 1
    assert sent == [] and validated_in_settle == []
    assert result.report is not None
    (item,) = orjson.loads((zone / result.report).read_bytes())["rejected_records"]
    assert [e["path"] for e in item["errors"]] == ["Encounter.status"]
    stored = store.resources.get("acme", "Encounter", orjson.loads(lines[1])["id"])
    assert stored is not None and "?identifier=" in stored["participant"][0]["individual"]["reference"]

    # With the practitioners and locations stored, a changed Encounter file's references
    # resolve: the second trip rewrites them and does not validate again.
    drop(zone, "acme", BULK / "Practitioner.000.ndjson", BULK / "Location.000.ndjson")
    assert all(r.outcome == Outcome.ARCHIVED for r in pipe.drain())
    changed = tmp_path / "Encounter.second.ndjson"
    changed.write_bytes(b"".join(_with_language(line) + b"\n" for line in lines[1:]))
    drop(zone, "acme", changed)
    [again] = pipe.drain()
    assert again.counts.loaded == len(lines) - 1 and again.counts.rejected == 0
    assert len(sent) == len(lines) - 1 and all(valid for *_, valid in sent)
    assert validated_in_settle == []
    stored = store.resources.get("acme", "Encounter", orjson.loads(lines[1])["id"])
    assert stored is not None and stored["participant"][0]["individual"]["reference"].startswith(
        "Practitioner/"
    )


def _with_language(line: bytes) -> bytes:
    resource = orjson.loads(line)
    resource["language"] = "en"
    return orjson.dumps(resource)
