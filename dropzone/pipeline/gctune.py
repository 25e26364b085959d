"""Garbage-collector thresholds for a process that parses millions of JSON objects.

Each parsed resource is ~80 container objects that live for a few batches (parse -> validate ->
store). With CPython's default thresholds (700, 10, 10) they outlive the young collections and
get promoted, so full collections run again and again while a file loads, each one scanning
every batch in flight. Measured on 143,200 Synthea resources (ingest, then re-ingest of the
same resources, 2 cores), the pipeline process spent 14.5-15.3 s / 9.6-10.4 s of CPU with the
defaults and 9.6-10.9 s / 6.1-6.9 s with a first threshold of 50,000. Claims are bigger: a
SynPUF carrier EOB is ~520 dicts and lists, and the batches in flight (4 x 500 claims) outlived
the young collections, which promoted them for the older generations to scan again. Measured
2026-12-07 (20,000 rows per layout, A/B pairs in one run): at 200,000 mapping a carrier claim
took 395 us instead of 496, and the carrier pipeline ran 14% faster; at 1,000,000 the pipeline
process ran as with the collector off (carrier 1,101-1,125 -> 1,341-1,356 rows/s, inpatient
+4-9%), with no change beyond noise for the Synthea NDJSON and the same peak RSS. Memory is
unaffected: the count is of container objects allocated and still alive since the last
collection, and garbage without cycles is freed at once by reference counting, so only
short-lived cycles (rare here: no parsed document has one) wait longer, for at most 1,000,000
allocations.
"""

from __future__ import annotations

import gc

THRESHOLDS = (1_000_000, 20, 100)


def tune_gc() -> None:
    """Raise the thresholds (never lower them: a process that chose larger ones keeps them)."""
    current = gc.get_threshold()
    if current[0] == 0:
        return  # automatic collection was switched off on purpose: leave it so
    gc.set_threshold(*(max(c, t) for c, t in zip(current, THRESHOLDS, strict=False)))
