"""The crash campaign, short form: real `dropzone run` processes SIGKILLed 5 times, then drained.

The full form (20 kills, ~60k resources) is `bench/crash_campaign.py`; this runs the same code on
~12k resources so each case stays under a minute on 2 cores. Seeds are fixed (and printed by
the campaign) so a failure can be replayed with `bench/crash_campaign.py --seed N`.
"""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType

import pytest

CAMPAIGN_PATH = Path(__file__).parents[1] / "bench" / "crash_campaign.py"
KILLS = 5
RESOURCES = 12_000


def _load_campaign() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crash_campaign", CAMPAIGN_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: dataclasses look their module up in sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


campaign = _load_campaign()


@pytest.mark.parametrize(("workers", "seed"), [(1, 1101), (2, 2202)], ids=["one-worker", "two-workers"])
def test_killed_workers_leave_every_file_loaded_once(tmp_path: Path, workers: int, seed: int) -> None:
    zone = tmp_path / "zone"
    expected = campaign.build_input(zone / "incoming" / campaign.TENANT, RESOURCES, seed)
    out = io.StringIO()

    result = campaign.run_campaign(zone, KILLS, seed, workers, out=out)
    print(out.getvalue())  # the kill moments, shown when the test fails

    assert result.problems == []  # no worker died by itself, drains exit 0, no orphan process
    assert campaign.verify(zone, expected) == []
    fig = campaign.figures(zone)
    assert len(result.kills) == KILLS and result.watched_children > 0  # pool processes were watched
    assert {k.slot for k in result.kills} == set(range(workers))  # two workers: both were killed
    assert len(expected.files) == 12 and expected.lines == RESOURCES
    assert fig.archived_files == 12 and fig.ledger_records == 12
    assert (
        fig.resources
        == len(expected.contents)
        == RESOURCES - expected.identical_repeats - expected.changed_repeats
    )
    assert fig.versioned == fig.history_rows == expected.changed_repeats > 0
    assert (fig.loaded, fig.unchanged) == (RESOURCES - expected.identical_repeats, expected.identical_repeats)
