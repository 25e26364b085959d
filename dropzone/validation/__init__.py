"""FHIR R4 4.0.1 validation compiled from the specification (see ``r4`` and ``generate``)."""

from dropzone.validation.r4 import R4Model, forget_valid_values, model, shared, validate_resource

__all__ = ["R4Model", "forget_valid_values", "model", "shared", "validate_resource"]
