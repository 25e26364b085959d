"""Data-quality profiles: what a file or a tenant holds and what in it looks wrong (counts, ids,
paths and system URLs only, never a value)."""
