"""The validation pool's workers run with the service's own process tuning.

A forkserver child starts from a fresh interpreter, so the garbage-collector thresholds the
service sets for itself (``gctune``) were not in the workers, which do most of the parsing:
with CPython's defaults they spent ~35% more CPU in ``digest_raws`` on the Synthea sample."""

from __future__ import annotations

import gc

from dropzone.pipeline.gctune import THRESHOLDS
from dropzone.pipeline.validate import Validator


def test_pool_workers_have_the_tuned_gc_thresholds() -> None:
    with_pool = Validator(1)
    try:
        worker = with_pool.result(with_pool.call(gc.get_threshold))
    finally:
        with_pool.close()
    assert all(w >= t for w, t in zip(worker, THRESHOLDS, strict=True)), worker
