"""Claims and other CSV files: CMS DE-SynPUF processors and declarative YAML mappings.

Importing this package registers its processors (``processors.registry`` imports it when it
exists): one per SynPUF layout, the mapping-driven processor, and a last-resort processor that
quarantines CSV files nobody recognises with a reason that says why.
"""

from processors.csv_claims import synpuf  # noqa: F401  (registers the SynPUF processors)
