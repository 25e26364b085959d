"""Claims and other CSV files: CMS DE-SynPUF processors and declarative YAML mappings.

Importing this package registers its processors (``processors.registry`` imports it when it
exists): one per SynPUF layout (priority 30), the mapping-driven processor for tenants that
declare mappings (20), and a last resort (-100) that quarantines CSV files nobody recognises
with a reason saying what was tried.
"""

from processors.csv_claims import mapped, synpuf  # noqa: F401  (registration side effects)
