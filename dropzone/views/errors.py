"""Typed errors of the view engine. Messages name files, views, columns and paths, never values
from the data (a resource's content or id may be a patient's)."""

from __future__ import annotations

from pathlib import Path

from dropzone.errors import ConfigError, DropzoneError, UsageError


class UnknownViewError(UsageError):
    """The command line or request named a view that has no file (CLI: exit 2; API: 404)."""

    def __init__(self, name: str, folder: Path | None, known: list[str]) -> None:
        where = f"in {folder}" if folder is not None else "(no views folder)"
        listed = ", ".join(known) if known else "none"
        super().__init__(f"no view named {name!r} {where}; known views: {listed}")
        self.name = name
        self.folder = folder
        self.known = known


class NoViewsFolder(UsageError):
    """There is no ``<config>/views/`` folder to read view definitions from."""


class ViewDefinitionError(ConfigError):
    """A view file is not a valid ViewDefinition (or uses something the engine does not
    support). ``source`` is the file, ``where`` the place inside it (e.g. ``select[0].column[2]``)."""

    def __init__(self, source: Path, where: str, problem: str) -> None:
        location = f"{source}: {where}" if where else str(source)
        super().__init__(f"{location}: {problem}")
        self.source = source
        self.where = where
        self.problem = problem


class UnsupportedPath(ViewDefinitionError):
    """A path uses FHIRPath outside the supported subset (see dropzone/views/path.py), or is
    malformed. Names the view, the path and what was not understood."""

    def __init__(self, source: Path, view: str, where: str, path: str, problem: str) -> None:
        super().__init__(source, where, f"view {view!r}, path {path!r}: {problem}")
        self.view = view
        self.path = path


class PathSyntaxError(Exception):
    """Raised by the path parser; the definition loader turns it into ``UnsupportedPath`` with
    the file and view it came from."""


class PathEvaluationError(Exception):
    """Raised while evaluating a path (e.g. ``join()`` over a non-string); wrapped in
    ``ViewEvaluationError`` with the view and column."""


class ViewEvaluationError(DropzoneError):
    """A stored resource does not fit the view (a column path yields several values without
    ``collection: true``, a complex element where a primitive is needed, a value of the wrong
    type for a typed column). Names the view, column, path and the resource's position in id
    order, not its id or content."""

    def __init__(
        self, view: str, column: str, path: str, resource_type: str, ordinal: int, problem: str
    ) -> None:
        super().__init__(
            f"view {view!r}, column {column!r} (path {path!r}): {problem} "
            f"(the {_ordinal(ordinal)} {resource_type} in id order)"
        )
        self.view = view
        self.column = column
        self.path = path
        self.ordinal = ordinal


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
