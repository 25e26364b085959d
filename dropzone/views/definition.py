"""View definitions: YAML files in ``<config>/views/`` in the shape of SQL-on-FHIR v2
ViewDefinitions, loaded and checked completely before any data is read.

Supported keys: ``resource``, ``select[]`` (each with ``column[]``, nested ``select[]``,
``forEach`` or ``forEachOrNull``, ``unionAll[]``), ``where[]`` (``path``, must be true), and the
descriptive ``resourceType: ViewDefinition``, ``name`` (must equal the file name), ``title``,
``description``, ``status``, ``url``, ``fhirVersion``. A column is ``{name, path, type?,
collection?, description?}``. Anything else (``constant``, ``repeat``, column ``tag``...) is refused
with a ``ViewDefinitionError`` naming the file and place, so a view never silently means less
than it says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dropzone.views.errors import (
    NoViewsFolder,
    PathSyntaxError,
    UnknownViewError,
    UnsupportedPath,
    ViewDefinitionError,
)
from dropzone.views.path import Compiled, compile_path
from processors.fhir_common import RESOURCE_TYPE

VIEW_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
COLUMN_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
ALL = "all"

# FHIR primitive types a column may declare. Booleans and integers become typed columns; the text
# types (notably date, dateTime, instant and decimal) are written as their exact JSON text.
BOOLEAN_TYPES = frozenset({"boolean"})
INTEGER_TYPES = frozenset({"integer", "positiveInt", "unsignedInt", "integer64"})
TEXT_TYPES = frozenset(
    {
        "string", "code", "id", "uri", "url", "canonical", "markdown", "oid", "uuid",
        "base64Binary", "date", "dateTime", "instant", "time", "decimal",
    }
)  # fmt: skip
COLUMN_TYPES = BOOLEAN_TYPES | INTEGER_TYPES | TEXT_TYPES

_VIEW_KEYS = frozenset(
    {
        "resourceType",
        "name",
        "title",
        "description",
        "status",
        "url",
        "fhirVersion",
        "resource",
        "select",
        "where",
    }
)
_SELECT_KEYS = frozenset({"column", "select", "forEach", "forEachOrNull", "unionAll"})
_COLUMN_KEYS = frozenset({"name", "path", "type", "collection", "description"})
_WHERE_KEYS = frozenset({"path", "description"})


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    path: str
    evaluate: Compiled
    kind: str  # "text", "boolean" or "integer": what the value becomes in the table
    collection: bool = False
    fhir_type: str | None = None


@dataclass(frozen=True, slots=True)
class Select:
    columns: tuple[Column, ...] = ()
    selects: tuple[Select, ...] = ()
    union_all: tuple[Select, ...] = ()
    for_each: Compiled | None = None
    for_each_path: str | None = None
    or_null: bool = False

    def all_columns(self) -> list[Column]:
        """Output order: this select's columns, then nested selects', then unionAll's."""
        out = list(self.columns)
        for sub in self.selects:
            out.extend(sub.all_columns())
        if self.union_all:
            out.extend(self.union_all[0].all_columns())
        return out


@dataclass(frozen=True, slots=True)
class Where:
    path: str
    evaluate: Compiled


@dataclass(frozen=True, slots=True)
class ViewDefinition:
    name: str
    resource: str
    root: Select
    where: tuple[Where, ...]
    source: Path
    title: str | None = None
    description: str | None = None
    columns: tuple[Column, ...] = field(default=())


def views_folder(config_dir: Path | None) -> Path:
    """``<config>/views``; the project ships ``config/views/``."""
    if config_dir is None:
        raise NoViewsFolder(
            "no views folder: no config folder is in use (pass --config DIR or set DROPZONE_CONFIG to a "
            "folder with views/; the project ships config/views/)"
        )
    folder = Path(config_dir) / "views"
    if not folder.is_dir():
        raise NoViewsFolder(f"no views folder: {folder} does not exist (the project ships config/views/)")
    return folder


def view_names(folder: Path) -> list[str]:
    return sorted(p.stem for p in _view_files(folder))


def _view_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()]


def find_views(folder: Path, names: list[str] | tuple[str, ...]) -> list[ViewDefinition]:
    """The named views (``all``: every file in ``folder``), each loaded and checked; unknown names
    raise ``UnknownViewError`` before anything is loaded."""
    files = {p.stem: p for p in sorted(_view_files(folder))}
    wanted = sorted(files) if ALL in names else list(dict.fromkeys(names))
    for name in wanted:
        if name not in files:
            raise UnknownViewError(name, folder, sorted(files))
    return [load_view(files[name]) for name in wanted]


def find_view(folder: Path, name: str) -> ViewDefinition:
    """One view by name (``all`` is not special here: the API asks for one view at a time)."""
    files = {p.stem: p for p in _view_files(folder)}
    if name not in files or name == ALL:
        raise UnknownViewError(name, folder, sorted(n for n in files if n != ALL))
    return load_view(files[name])


def load_view(source: Path) -> ViewDefinition:
    """Parse and check one view file; ``ViewDefinitionError`` naming the file otherwise."""
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise ViewDefinitionError(source, where, "not valid YAML") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ViewDefinitionError(source, "", f"cannot be read ({type(err).__name__})") from None
    return _Builder(source).view(data)


class _Builder:
    def __init__(self, source: Path) -> None:
        self.source = source
        self.name = source.stem

    def fail(self, where: str, problem: str) -> ViewDefinitionError:
        return ViewDefinitionError(self.source, where, problem)

    def view(self, data: Any) -> ViewDefinition:
        if not isinstance(data, dict):
            raise self.fail("", "a view file must be a mapping (resource, select, ...)")
        self.keys(data, _VIEW_KEYS, "")
        if not VIEW_NAME.match(self.name):
            raise self.fail("", "the file name must be a view name: lower case letters, digits and _")
        if self.name == ALL:
            raise self.fail("", "'all' is reserved (--view all means every view): rename the file")
        if data.get("resourceType", "ViewDefinition") != "ViewDefinition":
            raise self.fail("resourceType", "must be ViewDefinition when given")
        if "name" in data and data["name"] != self.name:
            raise self.fail("name", f"must match the file name ({self.name})")
        resource = data.get("resource")
        if not isinstance(resource, str) or not RESOURCE_TYPE.match(resource):
            raise self.fail("resource", "must name a FHIR resource type, e.g. Patient")
        selects = data.get("select")
        if not isinstance(selects, list) or not selects:
            raise self.fail("select", "must be a non-empty list")
        root = Select(selects=tuple(self.select(s, f"select[{i}]") for i, s in enumerate(selects)))
        where = tuple(self.where(w, f"where[{i}]") for i, w in enumerate(self.list_of(data, "where", "")))
        columns = root.all_columns()
        seen: set[str] = set()
        for column in columns:
            if column.name in seen:
                raise self.fail("select", f"column name {column.name!r} is used twice")
            seen.add(column.name)
        return ViewDefinition(
            name=self.name,
            resource=resource,
            root=root,
            where=where,
            source=self.source,
            title=self.text(data, "title", ""),
            description=self.text(data, "description", ""),
            columns=tuple(columns),
        )

    def select(self, data: Any, where: str) -> Select:
        if not isinstance(data, dict):
            raise self.fail(where, "a select must be a mapping")
        self.keys(data, _SELECT_KEYS, where)
        if "forEach" in data and "forEachOrNull" in data:
            raise self.fail(where, "forEach and forEachOrNull cannot both be given")
        columns = tuple(
            self.column(c, f"{where}.column[{i}]") for i, c in enumerate(self.list_of(data, "column", where))
        )
        selects = tuple(
            self.select(s, f"{where}.select[{i}]") for i, s in enumerate(self.list_of(data, "select", where))
        )
        unions = tuple(
            self.select(s, f"{where}.unionAll[{i}]")
            for i, s in enumerate(self.list_of(data, "unionAll", where))
        )
        if not (columns or selects or unions):
            raise self.fail(where, "a select needs column, select or unionAll")
        if unions:
            first = [c.name for c in unions[0].all_columns()]
            for i, branch in enumerate(unions[1:], start=1):
                if [c.name for c in branch.all_columns()] != first:
                    raise self.fail(
                        f"{where}.unionAll[{i}]", "every unionAll branch needs the same columns in order"
                    )
        key = "forEach" if "forEach" in data else "forEachOrNull" if "forEachOrNull" in data else None
        for_each = for_each_path = None
        if key is not None:
            for_each_path = data[key]
            for_each = self.path(for_each_path, f"{where}.{key}")
        return Select(columns, selects, unions, for_each, for_each_path, key == "forEachOrNull")

    def column(self, data: Any, where: str) -> Column:
        if not isinstance(data, dict):
            raise self.fail(where, "a column must be a mapping with name and path")
        self.keys(data, _COLUMN_KEYS, where)
        name = data.get("name")
        if not isinstance(name, str) or not COLUMN_NAME.match(name):
            raise self.fail(f"{where}.name", "must be a letter then letters, digits or _ (at most 63)")
        path = data.get("path")
        evaluate = self.path(path, f"{where}.path")
        fhir_type = data.get("type")
        if fhir_type is not None and fhir_type not in COLUMN_TYPES:
            raise self.fail(
                f"{where}.type", f"unsupported type (supported: {', '.join(sorted(COLUMN_TYPES))})"
            )
        collection = data.get("collection", False)
        if not isinstance(collection, bool):
            raise self.fail(f"{where}.collection", "must be true or false")
        kind = (
            "boolean" if fhir_type in BOOLEAN_TYPES else "integer" if fhir_type in INTEGER_TYPES else "text"
        )
        return Column(name, path, evaluate, kind, collection, fhir_type)

    def where(self, data: Any, where: str) -> Where:
        if not isinstance(data, dict):
            raise self.fail(where, "a where entry must be a mapping with a path")
        self.keys(data, _WHERE_KEYS, where)
        path = data.get("path")
        return Where(path, self.path(path, f"{where}.path"))

    def path(self, path: Any, where: str) -> Compiled:
        if not isinstance(path, str) or not path.strip():
            raise self.fail(where, "must be a non-empty FHIRPath string")
        try:
            return compile_path(path)
        except PathSyntaxError as err:
            raise UnsupportedPath(self.source, self.name, where, path, str(err)) from None

    def keys(self, data: dict[str, Any], allowed: frozenset[str], where: str) -> None:
        for key in data:
            if key not in allowed:
                place = f"{where}.{key}" if where else str(key)
                raise self.fail(
                    place, f"{key!r} is not supported here (supported: {', '.join(sorted(allowed))})"
                )

    def list_of(self, data: dict[str, Any], key: str, where: str) -> list[Any]:
        value = data.get(key, [])
        if not isinstance(value, list):
            raise self.fail(f"{where}.{key}" if where else key, "must be a list")
        return value

    def text(self, data: dict[str, Any], key: str, where: str) -> str | None:
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise self.fail(f"{where}.{key}" if where else key, "must be text")
        return value
