"""While most of a file is new, the pool validates each resource in its first trip, as it digests
it, instead of reading its body again in ``settle``: the verdict must be the one ``settle``
gives, and a file whose resources are already stored must stop paying for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import BULK, PipelineFactory, drop
from dropzone.models import Outcome
from dropzone.pipeline import loader
from dropzone.pipeline.digest import digest_raws
from dropzone.pipeline.settle import settle
from dropzone.store.sqlite import SqliteStore
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
    settled = settle([(digests[0][3], None, None) for digests, _ in digested])
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
