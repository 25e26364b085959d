"""FHIR R4 (4.0.1) structural validation, driven by the model compiled from the specification.

``r4_model.json`` is generated from HL7's StructureDefinitions and value sets by
``dropzone.validation.generate``; this module walks a parsed resource against it. It checks, as
the R4 JSON format defines them: element names (typed choice names, one variant per choice),
cardinality (required elements, where a primitive counts through ``x`` or ``_x``; arrays for
repeating elements and never empty), JSON types of primitives without coercion, integer ranges
and every primitive's spec regex, no empty objects and no stray nulls, ``_x`` arrays aligned with
their values, codes of required bindings, contained resources (none nested), Reference target
types where the reference names its type (contained ``#id`` references too), and the extension
rule (``url``; a value or child extensions, not both).

It does not evaluate FHIRPath invariants beyond those, profiles, or terminology beyond the
required bindings whose value sets the spec enumerates. Messages name the element and the rule,
never the value.
"""

from __future__ import annotations

import json
import re
import sys
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from processors.base import Issue

MODEL_PATH = Path(__file__).with_name("r4_model.json")
_SAFE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}")
_PRIMITIVE, _PRIMITIVE_EXT, _COMPLEX, _RESOURCE = range(4)
_UNREAD: Any = object()  # a reference not read before
_FOLLOWED = ("Extension", "Reference")  # complex types with a rule beyond their elements
_JSON_WORD = {
    "boolean": "a JSON boolean",
    "integer": "a JSON integer",
    "decimal": "a JSON number",
    "string": "a JSON string",
}


_MEMO_LIMIT = 20_000  # valid strings remembered per primitive type (codes, systems, dates repeat)
_MEMO_LENGTH = 128
_TEXT_PRIMITIVES = ("string", "markdown")  # regex [ \r\n\t\S]+: non-empty, no form feed or vtab
_BASE64_PLAIN = re.compile(r"[0-9a-zA-Z+/=]+", re.ASCII).fullmatch


class _Primitive:
    __slots__ = ("json", "match", "name", "range", "seen")

    def __init__(self, name: str, spec: dict[str, Any]) -> None:
        self.name = name
        self.json: str = spec["json"]
        regex = spec.get("regex")
        # The spec's regexes are ASCII-minded (Java's \S, \d): so are ours.
        self.match = re.compile(regex, re.ASCII).fullmatch if regex and self.json == "string" else None
        self.range: tuple[int, int] | None = tuple(spec["range"]) if "range" in spec else None  # type: ignore[assignment]
        self.seen: set[str] = set()

    def valid_text(self, value: str) -> bool:
        """The spec's regex, with shortcuts that give the same answer faster."""
        if not value:
            return False  # FHIR JSON has no empty strings, whatever the regex allows (uri: \S*)
        if value in self.seen:
            return True
        name = self.name
        if name in _TEXT_PRIMITIVES:
            return "\x0b" not in value and "\x0c" not in value
        if name == "base64Binary" and _BASE64_PLAIN(value) is not None:
            return len(value) % 4 == 0  # no whitespace: groups of four characters
        ok = self.match is None or self.match(value) is not None
        if ok and len(value) <= _MEMO_LENGTH:
            if len(self.seen) >= _MEMO_LIMIT:
                self.seen.clear()
            self.seen.add(value)
        return ok


class _Rule:
    """How one JSON key of one type is validated."""

    __slots__ = (
        "codes", "complex", "follow", "group", "kind", "label", "many", "primitive", "targets", "text",
        "type", "variant",
    )  # fmt: skip

    def __init__(self, label: str, type_name: str, kind: int, many: bool) -> None:
        self.label = label  # the JSON name as written, e.g. valueQuantity, _birthDate
        self.type = type_name
        self.kind = kind
        self.many = many
        self.primitive: _Primitive | None = None
        # A complex type's compiled type, and the check its objects get after their elements
        # (``_Walker.after``: an Extension's or a Reference's rule), set once every type exists.
        self.complex: _Type | None = None
        self.follow: str | None = None
        self.text = False  # a string or markdown without a binding: checked in line by ``object``
        self.codes: frozenset[str] | None = None
        self.targets: frozenset[str] | None = None
        self.group: str | None = None  # choice element, e.g. value[x]
        self.variant: str | None = None  # its variant, the same for valueString and _valueString


class _Type:
    __slots__ = ("is_resource", "name", "required", "rules")

    def __init__(self, name: str, is_resource: bool) -> None:
        self.name = name
        self.is_resource = is_resource
        self.rules: dict[str, _Rule] = {}
        self.required: list[tuple[str, tuple[str, ...]]] = []  # (element label, keys that satisfy it)


class R4Model:
    """The compiled specification, ready for walking."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.version: str = data["fhirVersion"]
        self.primitives = {name: _Primitive(name, spec) for name, spec in data["primitives"].items()}
        self.resource_types = frozenset(data["resources"])
        valuesets = {url: frozenset(codes) for url, codes in data["valuesets"].items()}
        self.types: dict[str, _Type] = {}
        # reference -> the resource type it names (None: none), remembered: references repeat
        # (the patient, the encounter, a conditional reference to the practitioner).
        self.reference_types: dict[str, str | None] = {}
        for name, elements in data["types"].items():
            self.types[name] = self._compile(name, elements, valuesets)
        for owner in self.types.values():
            for rule in owner.rules.values():
                if rule.kind == _COMPLEX:
                    rule.complex = self.types[rule.type]
                    rule.follow = rule.type if rule.type in _FOLLOWED else None
                elif rule.kind == _PRIMITIVE_EXT:
                    rule.complex = self.types["Element"]

    def read_reference(self, reference: str) -> str | None:
        """The type ``reference`` names (``_referenced_type``), remembered like valid values."""
        named = _referenced_type(reference, self.resource_types)
        if len(reference) <= _MEMO_LENGTH:
            if len(self.reference_types) >= _MEMO_LIMIT:
                self.reference_types.clear()
            self.reference_types[reference] = named
        return named

    def _compile(self, name: str, elements: dict[str, Any], valuesets: dict[str, frozenset[str]]) -> _Type:
        owner = _Type(name, name in self.resource_types)
        for leaf, row in elements.items():
            kinds: list[str] = row["type"]
            choice = leaf.endswith("[x]")
            base = leaf[:-3] if choice else leaf
            keys: list[str] = []
            for type_name in kinds:
                key = base + type_name[0].upper() + type_name[1:] if choice else base
                primitive = self.primitives.get(type_name)
                kind = _PRIMITIVE if primitive else _RESOURCE if type_name == "Resource" else _COMPLEX
                rule = _Rule(key, type_name, kind, row["many"])
                rule.primitive = primitive
                if "binding" in row and row["binding"] in valuesets:
                    rule.codes = valuesets[row["binding"]]
                rule.text = type_name in _TEXT_PRIMITIVES and rule.codes is None
                targets = row.get("targets", {}).get(type_name)
                if targets:
                    rule.targets = frozenset(targets)
                if choice:
                    rule.group, rule.variant = leaf, key
                owner.rules[key] = rule
                keys.append(key)
                if primitive and not row.get("bare"):
                    ext = _Rule("_" + key, "Element", _PRIMITIVE_EXT, row["many"])
                    ext.group, ext.variant = rule.group, rule.variant
                    owner.rules[ext.label] = ext
                    keys.append(ext.label)
            if row["min"] > 0:
                owner.required.append((leaf, tuple(keys)))
        return owner


@lru_cache(maxsize=1)
def model() -> R4Model:
    return R4Model(json.loads(MODEL_PATH.read_text()))


# JSON objects their builder hands to many resources (``shared``), by id, each with the rules it
# was found valid under. An entry holds its object, so no other object can take its id.
_SHARED: dict[int, tuple[Any, set[Any]]] = {}
_SHARED_LIMIT = 100_000  # marked objects before the first sweep (``_forget_unheld``)
T = TypeVar("T")


def shared(element: T) -> T:
    """Mark a JSON object that a mapper builds once and puts into many resources (a SynPUF code's
    CodeableConcept): the validator then walks it once per rule it stands under, not once per
    resource. Only for objects nothing changes after they are built (the pipeline never changes a
    resource in place; ``tests/test_synpuf_shared_elements.py``)."""
    global _sweep_at
    if len(_SHARED) >= _sweep_at:
        _forget_unheld()
        # Sweep again once as many again are marked: a registry of objects still held (by the
        # builders' bounded caches) is not swept at every call.
        _sweep_at = max(_SHARED_LIMIT, 2 * len(_SHARED))
    _SHARED[id(element)] = (element, set())
    return element


_sweep_at = _SHARED_LIMIT
# References to an object that only the registry holds, as ``getrefcount`` counts them in
# ``_forget_unheld``: the entry's tuple, the loop's name and the call's argument.
_ONLY_THE_REGISTRY = 3


def _forget_unheld() -> None:
    """Drop the objects that nothing else holds any more (a builder's cache let them go). The
    ones still handed out stay marked: clearing everything would leave those a cache keeps
    returning unmarked for good, walked in every resource again."""
    unheld = [key for key, (obj, _) in _SHARED.items() if sys.getrefcount(obj) <= _ONLY_THE_REGISTRY]
    for key in unheld:
        del _SHARED[key]


def forget_valid_values() -> None:
    """Forget every value, reference and shared object read so far, as a fresh worker has: a
    benchmark that validates one corpus again and again calls it before each pass, or the
    resources' ids and dates, unique in a real file, are all remembered from the pass before."""
    r4 = model()
    for spec in r4.primitives.values():
        spec.seen.clear()
    r4.reference_types.clear()
    for _, rules in _SHARED.values():
        rules.clear()


def validate_resource(resource: Any) -> list[Issue]:
    """Every R4 defect of one resource (an empty list when it is valid)."""
    walker = _Walker(model())
    try:
        walker.resource(resource, None, contained=False)
    except RecursionError:
        return [Issue("too_deep", "the resource nests deeper than the validator follows", None)]
    return walker.issues


# Where an element is: the root's text, or (parent, element name, array index or None) per step
# down. Made into text only when an issue is reported: formatting a path for every element
# visited was a large part of a walk.
Where = str | tuple[Any, str, int | None]


def _text(where: Where) -> str:
    steps: list[str] = []
    while type(where) is tuple:
        where, key, index = where
        steps.append(f".{key}" if index is None else f".{key}[{index}]")
    return where + "".join(reversed(steps))


def _at(where: Where, key: str) -> str:
    return f"{_text(where)}.{key}"


def _shown(key: str) -> str:
    """A key is an element name, not a value; an odd one is not echoed at all."""
    return key if _SAFE_KEY.fullmatch(key) else "(a key)"


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


class _Walker:
    __slots__ = ("issues", "local_refs", "model")

    def __init__(self, r4: R4Model) -> None:
        self.model = r4
        self.issues: list[Issue] = []
        self.local_refs: list[tuple[Where, str, frozenset[str]]] = []

    def add(self, code: str, message: str, path: Where | None) -> None:
        self.issues.append(Issue(code, message, None if path is None else _text(path)))

    # -- resources --------------------------------------------------------------------------------

    def resource(self, node: Any, path: Where | None, contained: bool) -> None:
        if not isinstance(node, dict):
            self.add("wrong_type", f"expected a resource (a JSON object), found {_json_kind(node)}", path)
            return
        rtype = node.get("resourceType")
        if not isinstance(rtype, str) or rtype not in self.model.resource_types:
            where = _at(path, "resourceType") if path else "resourceType"
            self.add("unknown_resource_type", "not a FHIR R4 (4.0.1) resource type", where)
            return
        here = path or rtype
        if contained and "contained" in node:
            self.add(
                "nested_contained",
                "a contained resource cannot contain resources (dom-2)",
                _at(here, "contained"),
            )
        outer_refs = self.local_refs
        if not contained:
            self.local_refs = []
        self.object(node, self.model.types[rtype], here)
        if not contained:
            self._check_local_refs(node, here)
            self.local_refs = outer_refs

    def _check_local_refs(self, node: dict[str, Any], path: Where) -> None:
        if not self.local_refs:
            return
        kinds = {}
        for item in node.get("contained") or ():
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                kinds[item["id"]] = item.get("resourceType")
        for where, local_id, targets in self.local_refs:
            kind = kinds.get(local_id)
            if kind is None:
                if local_id:  # "#" alone points at the container itself
                    self.add("unresolved_contained_reference", "no contained resource has this id", where)
            elif kind not in targets:
                self.add(
                    "invalid_reference_target", "the contained resource's type is not allowed here", where
                )

    # -- objects ----------------------------------------------------------------------------------

    def object(self, node: dict[str, Any], owner: _Type, path: Where) -> None:
        if not node:
            self.add("empty_object", "an object must have at least one element", path)
            return
        rules = owner.rules
        variants: dict[str, str] | None = None
        for key, value in node.items():
            rule = rules.get(key)
            if rule is None:
                if key == "resourceType" and owner.is_resource:
                    continue
                self.add(
                    "unknown_element",
                    f"{owner.name} has no element {_shown(key)!r} in R4",
                    _at(path, _shown(key)),
                )
                continue
            if rule.group is not None:
                if variants is None:
                    variants = {}
                chosen = variants.setdefault(rule.group, rule.variant)  # type: ignore[arg-type]
                if chosen != rule.variant:
                    self.add(
                        "multiple_choice_variants",
                        f"{rule.group} may take one type; found {chosen} and {rule.variant}",
                        _at(path, key),
                    )
                    continue
            if value is None:
                self.add("null_value", "null is not a value in FHIR JSON; omit the element", _at(path, key))
                continue
            if rule.many:
                if type(value) is not list:
                    self.add("not_an_array", f"{key} repeats: it must be a JSON array", _at(path, key))
                    continue
                if not value:
                    self.add(
                        "empty_array",
                        "an array must have at least one item; omit the element",
                        _at(path, key),
                    )
                    continue
                if rule.kind == _PRIMITIVE or rule.kind == _PRIMITIVE_EXT:
                    self._primitive_array(node, key, value, rule, path)
                elif rule.kind == _COMPLEX:
                    for index, item in enumerate(value):
                        # A plain object walked here, as in ``item``, without its call.
                        if type(item) is dict and not (_SHARED and id(item) in _SHARED):
                            where = (path, key, index)
                            self.object(item, rule.complex, where)  # type: ignore[arg-type]
                            if rule.follow is not None:
                                self.after(item, rule, where)
                        else:
                            self.item(item, rule, (path, key, index))
                else:
                    for index, item in enumerate(value):
                        self.item(item, rule, (path, key, index))
            else:
                if type(value) is list:
                    self.add(
                        "unexpected_array", f"{key} does not repeat: it must not be an array", _at(path, key)
                    )
                    continue
                if rule.kind == _PRIMITIVE:
                    # The common cases, without a call: free text (display, reference), and a
                    # value met before (a bound code: in its value set too).
                    if type(value) is str and (
                        (rule.text and value and "\x0b" not in value and "\x0c" not in value)
                        or (
                            value in rule.primitive.seen  # type: ignore[union-attr]
                            and (rule.codes is None or value in rule.codes)
                        )
                    ):
                        continue
                    self.primitive(value, rule, path, key)
                elif rule.kind == _COMPLEX and type(value) is dict and not (_SHARED and id(value) in _SHARED):
                    where = (path, key, None)
                    self.object(value, rule.complex, where)  # type: ignore[arg-type]
                    if rule.follow is not None:
                        self.after(value, rule, where)
                else:
                    self.item(value, rule, (path, key, None))
        for label, keys in owner.required:
            for key in keys:
                if key in node:
                    break
            else:
                self.add(
                    "required", f"{owner.name}.{label} is required (minimum cardinality 1)", _at(path, label)
                )

    def item(self, value: Any, rule: _Rule, path: Where) -> None:
        kind = rule.kind
        if kind == _COMPLEX:
            if type(value) is not dict:
                self.add(
                    "wrong_type", f"expected {rule.type} (a JSON object), found {_json_kind(value)}", path
                )
                return
            known = _SHARED.get(id(value)) if _SHARED else None
            if known is not None:
                if rule in known[1]:
                    return  # this very object, valid under this rule before
                before = (len(self.issues), len(self.local_refs))
            self.object(value, rule.complex, path)  # type: ignore[arg-type]
            if rule.follow is not None:
                self.after(value, rule, path)
            if known is not None and before == (len(self.issues), len(self.local_refs)):
                known[1].add(rule)  # nothing found and no contained reference left to check
        elif kind == _PRIMITIVE_EXT:
            if type(value) is not dict:
                self.add(
                    "wrong_type",
                    f"expected the primitive's id/extension object, found {_json_kind(value)}",
                    path,
                )
                return
            self.object(value, rule.complex, path)  # type: ignore[arg-type]
        else:  # primitives are checked by ``primitive`` directly
            self.resource(value, path, contained=rule.label == "contained")

    def _primitive_array(
        self, node: dict[str, Any], key: str, values: list[Any], rule: _Rule, path: Where
    ) -> None:
        """``x`` and ``_x`` arrays: same length, and a null in one needs a value in the other."""
        partner_key = key[1:] if rule.kind == _PRIMITIVE_EXT else "_" + key
        partner = node.get(partner_key)
        if partner is not None and (type(partner) is not list or len(partner) != len(values)):
            if rule.kind == _PRIMITIVE:  # say it once, from the value side
                self.add(
                    "misaligned_primitive_extension",
                    f"{partner_key} must be an array as long as {key}",
                    _at(path, partner_key),
                )
            partner = None
        spec = rule.primitive
        for index, item in enumerate(values):
            if item is None:
                if partner is None or partner[index] is None:
                    self.add(
                        "null_value",
                        "a null array item needs its value or extension in the partner array",
                        (path, key, index),
                    )
                continue
            if rule.kind == _PRIMITIVE:
                # As in ``object``: free text and values met before without the call.
                if type(item) is str and (
                    (rule.text and item and "\x0b" not in item and "\x0c" not in item)
                    or (item in spec.seen and (rule.codes is None or item in rule.codes))  # type: ignore[union-attr]
                ):
                    continue
                self.primitive(item, rule, path, key, index)
            else:
                self.item(item, rule, (path, key, index))

    def primitive(self, value: Any, rule: _Rule, path: Where, key: str, index: int | None = None) -> None:
        where = (path, key, index)
        spec = rule.primitive
        assert spec is not None
        kind = spec.json
        if kind == "string":
            if type(value) is not str:
                self._wrong_primitive(spec, value, where)
            elif not spec.valid_text(value):
                self.add("invalid_value", f"not a valid {spec.name} (the R4 {spec.name} pattern)", where)
            elif rule.codes is not None and value not in rule.codes:
                self.add(
                    "code_not_in_value_set",
                    "the code is not in the element's required value set",
                    where,
                )
        elif kind == "decimal":
            if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
                self._wrong_primitive(spec, value, where)
        elif kind == "integer":
            if type(value) is not int:
                self._wrong_primitive(spec, value, where)
            elif spec.range is not None and not spec.range[0] <= value <= spec.range[1]:
                low, high = spec.range
                self.add("out_of_range", f"a {spec.name} must be between {low} and {high}", where)
        elif type(value) is not bool:
            self._wrong_primitive(spec, value, where)

    def _wrong_primitive(self, spec: _Primitive, value: Any, where: Where) -> None:
        article = "an" if spec.name[0] in "aeiou" else "a"
        self.add(
            "wrong_type",
            f"{article} {spec.name} must be {_JSON_WORD[spec.json]}, found {_json_kind(value)}",
            where,
        )

    def after(self, node: dict[str, Any], rule: _Rule, path: Where) -> None:
        """The rule of an Extension or a Reference beyond its elements."""
        if rule.follow == "Extension":
            self._extension_rule(node, path)
        else:
            self._reference(node, rule, path)

    def _extension_rule(self, node: dict[str, Any], path: Where) -> None:
        if "extension" in node and any(key.startswith(("value", "_value")) for key in node):
            self.add(
                "extension_value_and_children",
                "an extension has a value or child extensions, not both (ext-1)",
                path,
            )

    def _reference(self, node: dict[str, Any], rule: _Rule, path: Where) -> None:
        targets = rule.targets
        reference = node.get("reference")
        if targets is None or type(reference) is not str:
            return
        if reference.startswith("#"):
            self.local_refs.append(((path, "reference", None), reference[1:], targets))
            return
        named = self.model.reference_types.get(reference, _UNREAD)
        if named is _UNREAD:
            named = self.model.read_reference(reference)
        if named is not None and named not in targets:
            self.add(
                "invalid_reference_target",
                f"a reference to a {named} is not allowed here",
                _at(path, "reference"),
            )


def _referenced_type(reference: str, known: frozenset[str]) -> str | None:
    """The resource type a literal or conditional reference names, when it names one."""
    if reference.startswith(("urn:", "#")):
        return None
    head = reference.split("?", 1)
    parts = head[0].rstrip("/").split("/")
    if len(head) == 2 and parts and parts[-1] in known:  # Type?identifier=...
        return parts[-1]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2] in known:
        return parts[-2]
    return None
