"""Tables for analysts: SQL-on-FHIR v2 style views over the stored resources.

``definition`` loads and checks the YAML views of ``<config>/views/``, ``path`` compiles the
FHIRPath subset they may use, ``flatten`` turns a resource into rows, ``writers`` writes chunks
of rows as Parquet, CSV or NDJSON, and ``export`` runs a view over a tenant's resources.
Importing this package imports pyarrow: the CLI imports it only for ``--format parquet|csv``.
"""

from __future__ import annotations

from dropzone.views.definition import (
    ALL,
    ViewDefinition,
    find_view,
    find_views,
    load_view,
    view_names,
    views_folder,
)
from dropzone.views.errors import (
    NoViewsFolder,
    UnknownViewError,
    UnsupportedPath,
    ViewDefinitionError,
    ViewEvaluationError,
)
from dropzone.views.export import FORMATS, ExportedView, export_views, stream_view

__all__ = [
    "ALL",
    "FORMATS",
    "ExportedView",
    "NoViewsFolder",
    "UnknownViewError",
    "UnsupportedPath",
    "ViewDefinition",
    "ViewDefinitionError",
    "ViewEvaluationError",
    "export_views",
    "find_view",
    "find_views",
    "load_view",
    "stream_view",
    "view_names",
    "views_folder",
]
