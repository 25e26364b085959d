"""Streaming: files much larger than the memory they may use. A 200 MB Bundle and a 200 MB
NDJSON are loaded in a fresh process whose peak RSS must grow far less than the file size.
(Memory is a limit we assert; speed lives in bench/.)"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

ENTRY_BYTES = 2_000_000
FILE_BYTES = 200_000_000

MEASURE = r"""
import resource, sys, json
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from conftest import make_settings
from dropzone.pipeline.runner import Pipeline
from dropzone.sources.folder import FolderSource
from dropzone.store.memory import MemoryStore
zone = Path(sys.argv[1])
settings = make_settings(zone, batch_size=20)
pipeline = Pipeline(settings, MemoryStore(), FolderSource(zone))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
(result,) = pipeline.drain()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"outcome": result.outcome.value, "read": result.counts.read, "growth": after - before}))
"""


def _document(i: int) -> dict:
    # The same resource again and again: the store keeps one document, so any growth is the parser's.
    data = base64.b64encode(b"\0" * (ENTRY_BYTES * 3 // 4)).decode()
    return {
        "resourceType": "DocumentReference",
        "id": "big-doc",
        "status": "current",
        "content": [{"attachment": {"contentType": "application/pdf", "data": data}}],
    }


def _measure(zone: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(zone), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=280,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("shape", ["bundle", "ndjson"])
def test_a_200_mb_file_loads_in_bounded_memory(zone: Path, shape: str) -> None:
    (zone / "incoming" / "acme").mkdir()
    entry = json.dumps(_document(0)).encode()
    count = FILE_BYTES // len(entry)
    if shape == "bundle":
        path = zone / "incoming" / "acme" / "big-bundle.json"
        with path.open("wb") as out:
            out.write(b'{"resourceType": "Bundle", "type": "collection", "entry": [')
            for i in range(count):
                out.write((b"," if i else b"") + b'{"resource": ' + entry + b"}")
            out.write(b"]}")
    else:
        path = zone / "incoming" / "acme" / "big.ndjson"
        with path.open("wb") as out:
            for _ in range(count):
                out.write(entry + b"\n")
    size = path.stat().st_size
    assert size >= FILE_BYTES * 0.95

    measured = _measure(zone)
    assert measured["outcome"] == "archived" and measured["read"] == count
    assert measured["growth"] < size / 4, (
        f"peak RSS grew {measured['growth'] / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB file"
    )
