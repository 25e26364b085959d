"""dropzone: health-system data drops (FHIR R4, claims CSV) into MongoDB, one path for every file."""

__version__ = "0.1.0"
