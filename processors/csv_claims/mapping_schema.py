"""The declarative CSV mapping format (``config/mappings/<name>.yaml``) and its loader.

A mapping says which CSV header it applies to and how each row becomes one or more FHIR
resources. It is checked when it is loaded, in three steps, and every problem is reported
with its location in the file:

1. shape (pydantic): known keys only, right types, exactly one source per element;
2. cross-references: every column used is declared in ``match``, every lookup exists, paths
   are well formed and do not overlap, templates use plain ``{column}`` placeholders;
3. FHIR: each resource is built once from placeholder values and validated with the
   FHIR R4 validator, so a misspelt element (``medum``) fails at load, not per row.

The format is documented in README ("Claims CSV and mappings").
"""

from __future__ import annotations

import re
import string
import zoneinfo
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dropzone.errors import ConfigError

MAPPING_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_PATH_TOKEN = re.compile(r"^([a-zA-Z][A-Za-z0-9]*)(?:\[(\d{1,3})\])?$")
ValueType = Literal["string", "code", "id", "uri", "integer", "decimal", "boolean", "date", "datetime"]
Token = tuple[str, int | None]


class MappingError(ConfigError):
    """A mapping file is missing or invalid; the message lists every problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ElementSpec(_Strict):
    """Where one FHIR element's value comes from and how it is converted."""

    column: str | None = Field(default=None, description="take the value of this column")
    value: Any = Field(default=None, description="a constant (scalar, object or list)")
    template: str | None = Field(default=None, description="text with {column} placeholders")
    type: ValueType = "string"
    formats: list[str] | None = Field(default=None, description="strptime formats for date/datetime")
    lookup: str | None = Field(default=None, description="name of a table in 'lookups'")
    on_unknown: Literal["reject", "omit", "keep"] = "reject"
    required: bool = False
    default: Any = None

    @model_validator(mode="after")
    def _one_source(self) -> ElementSpec:
        sources = [k for k in ("column", "value", "template") if k in self.model_fields_set]
        if len(sources) != 1:
            raise ValueError("give exactly one of 'column', 'value' or 'template'")
        if self.formats is not None and self.type not in ("date", "datetime"):
            raise ValueError("'formats' only applies to type date or datetime")
        if "value" in self.model_fields_set and (
            self.lookup or self.required or "default" in self.model_fields_set
        ):
            raise ValueError("a constant 'value' takes no 'lookup', 'required' or 'default'")
        return self


class IdRule(_Strict):
    """The resource id: a template giving a FHIR id, or a UUID v5 of a template's text."""

    template: str | None = None
    uuid5: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        return {"template": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one(self) -> IdRule:
        if (self.template is None) == (self.uuid5 is None):
            raise ValueError("give the id as a template string, {template: ...} or {uuid5: ...}")
        return self

    @property
    def text(self) -> str:
        return self.template if self.template is not None else str(self.uuid5)


class ResourceSpec(_Strict):
    resource_type: str
    id: IdRule
    elements: dict[str, ElementSpec] = Field(min_length=1)

    @field_validator("resource_type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        from dropzone.validation import model

        if value not in model().resource_types:
            raise ValueError(f"'{value}' is not a FHIR R4 resource type")
        return value


class MatchRule(_Strict):
    """Which header this mapping applies to."""

    columns: list[str] = Field(min_length=1, description="columns the header must have")
    optional: list[str] = Field(default_factory=list, description="columns used when present")
    allow_extra: bool = Field(default=True, description="false: no columns beyond the declared ones")
    case_sensitive: bool = False

    def key(self, name: str) -> str:
        name = name.strip()
        return name if self.case_sensitive else name.casefold()


class CsvMapping(_Strict):
    version: Literal[1] = 1
    name: str
    description: str | None = None
    match: MatchRule
    delimiter: Literal[",", "|", "\t", ";", "auto"] = "auto"
    null_values: list[str] = Field(default_factory=lambda: [""], description="values meaning 'empty'")
    timezone: str = Field(default="UTC", description="for date-times written without an offset")
    lookups: dict[str, dict[str, Any]] = Field(default_factory=dict)
    resources: list[ResourceSpec] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not MAPPING_NAME.match(value):
            raise ValueError("mapping names are lower-case letters, digits, '.', '_' or '-'")
        return value

    @field_validator("lookups", mode="before")
    @classmethod
    def _text_keys(cls, value: Any) -> Any:
        # YAML reads yes/no/on/off as booleans and 01 as a number, but CSV values are text.
        if isinstance(value, dict):
            for name, table in value.items():
                odd = [k for k in table if not isinstance(k, str)] if isinstance(table, dict) else []
                if odd:
                    raise ValueError(
                        f"table '{name}' has key {odd[0]!r}, which is not text (quote it in the YAML)"
                    )
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone '{value}' (use an IANA name such as America/New_York)"
            ) from None
        return value

    @model_validator(mode="after")
    def _cross_references(self) -> CsvMapping:
        problems: list[str] = []
        declared = [self.match.key(c) for c in (*self.match.columns, *self.match.optional)]
        if len(set(declared)) != len(declared):
            problems.append("match: a column is declared twice")
        known = set(declared)

        def check_columns(where: str, names: list[str]) -> None:
            for name in names:
                if self.match.key(name) not in known:
                    problems.append(
                        f"{where}: column '{name}' is not declared in match.columns or match.optional"
                    )

        for r_pos, spec in enumerate(self.resources):
            where = f"resources[{r_pos}]"
            try:
                check_columns(f"{where}.id", template_fields(spec.id.text))
            except ValueError as err:
                problems.append(f"{where}.id: {err}")
            paths: list[tuple[str, list[Token]]] = []
            for path, element in spec.elements.items():
                at = f"{where}.elements.{path}"
                try:
                    tokens = parse_path(path)
                except ValueError as err:
                    problems.append(f"{at}: {err}")
                    continue
                paths.append((path, tokens))
                if element.column is not None:
                    check_columns(at, [element.column])
                if element.template is not None:
                    try:
                        check_columns(at, template_fields(element.template))
                    except ValueError as err:
                        problems.append(f"{at}: {err}")
                if element.lookup is not None and element.lookup not in self.lookups:
                    problems.append(f"{at}: lookup '{element.lookup}' is not defined in 'lookups'")
            problems.extend(f"{where}.elements: {p}" for p in overlapping(paths))
        for name, table in self.lookups.items():
            keys = [str(k).strip().casefold() for k in table]
            if len(set(keys)) != len(keys):
                problems.append(f"lookups.{name}: two keys differ only in case or spaces")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def lookup_table(self, name: str) -> dict[str, Any]:
        """The table keyed by trimmed, case-folded text (lookups ignore case)."""
        return {str(k).strip().casefold(): v for k, v in self.lookups[name].items()}


def template_fields(template: str) -> list[str]:
    """The column names in a template; only plain ``{name}`` placeholders are allowed."""
    names = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ValueError(f"malformed template ({err})") from None
    for _, field_name, spec, conversion in parsed:
        if field_name is None:
            continue
        if not field_name or spec or conversion or any(c in field_name for c in ".[]"):
            raise ValueError("templates take plain {column} placeholders (no formats, indexes or attributes)")
        names.append(field_name)
    return names


def parse_path(path: str) -> list[Token]:
    """``medium[0].coding[0]`` -> [("medium", 0), ("coding", 0)]."""
    tokens: list[Token] = []
    for part in path.split("."):
        found = _PATH_TOKEN.match(part)
        if not found:
            raise ValueError("not an element path like 'identifier[0].value' or 'subject.reference'")
        index = found.group(2)
        tokens.append((found.group(1), int(index) if index is not None else None))
    if tokens[0][0] in ("resourceType", "id"):
        raise ValueError(f"'{tokens[0][0]}' is set by the mapping itself (see 'resource_type' and 'id')")
    return tokens


def overlapping(paths: list[tuple[str, list[Token]]]) -> list[str]:
    """Pairs where one path sets an element another path writes inside."""
    problems = []
    for a_text, a in paths:
        for b_text, b in paths:
            if a is b or len(a) >= len(b):
                continue
            head, last = b[: len(a)], a[-1]
            same_prefix = head[:-1] == a[:-1] and head[-1][0] == last[0]
            if same_prefix and (last[1] is None or head[-1][1] == last[1]):
                problems.append(f"'{a_text}' overlaps '{b_text}'")
    return problems


# -- loading ----------------------------------------------------------------------------------

_CACHE: dict[Path, tuple[tuple[int, int], CsvMapping]] = {}


def _format(path: Path, err: ValidationError) -> str:
    lines = [f"invalid CSV mapping {path}:"]
    for item in err.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        for part in message.split("; "):
            lines.append(f"  {where}: {part}" if where != "(top level)" else f"  {part}")
    return "\n".join(lines)


def load_mapping(path: Path) -> CsvMapping:
    """Read, validate and FHIR-check one mapping file (cached while the file is unchanged)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise MappingError(f"CSV mapping file {path} does not exist") from None
    stamp = (stat.st_mtime_ns, stat.st_size)
    cached = _CACHE.get(path)
    if cached and cached[0] == stamp:
        return cached[1]
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise MappingError(f"invalid CSV mapping {path}: not valid YAML ({err.__class__.__name__})") from err
    if not isinstance(data, dict):
        raise MappingError(f"invalid CSV mapping {path}: expected a mapping at the top level")
    data.setdefault("name", path.stem)
    if data["name"] != path.stem:
        raise MappingError(f"invalid CSV mapping {path}: name '{data['name']}' must match the file name")
    try:
        mapping = CsvMapping.model_validate(data)
    except ValidationError as err:
        raise MappingError(_format(path, err)) from None
    from processors.csv_claims.mapping_engine import fhir_check

    problems = fhir_check(mapping)
    if problems:
        raise MappingError("\n".join([f"invalid CSV mapping {path}:", *(f"  {p}" for p in problems)]))
    _CACHE[path] = (stamp, mapping)
    return mapping


def mapping_path(config_dir: Path | None, name: str) -> Path:
    if config_dir is None:
        raise MappingError(
            f"CSV mapping '{name}' is declared but no config folder is set (--config or DROPZONE_CONFIG)"
        )
    if not MAPPING_NAME.match(name):
        raise MappingError(f"'{name}' is not a valid mapping name")
    return Path(config_dir) / "mappings" / f"{name}.yaml"
