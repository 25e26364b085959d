"""The process tuning that every process of the pipeline runs with: the service's own and each
pool worker's (a forkserver child starts from a fresh interpreter and inherits neither)."""

from __future__ import annotations

from dropzone.pipeline.gctune import tune_gc
from dropzone.pipeline.malloc_tune import fix_mmap_threshold


def tune_process() -> None:
    """Process-wide and idempotent; see ``gctune`` and ``malloc_tune`` for the measurements."""
    tune_gc()
    fix_mmap_threshold()
