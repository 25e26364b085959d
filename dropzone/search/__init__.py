"""FHIR search over the stores: what is indexed at load time (``index``), the R4 parameter
table it is driven by (``table``, compiled by ``generate``), query parsing (``query``) and the
Patient compartment and reference-integrity views built on the same index."""
