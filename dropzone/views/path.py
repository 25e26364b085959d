"""The FHIRPath subset that view paths may use, compiled once per view into plain functions.

Every expression evaluates a *collection* (a Python list) to a collection, as FHIRPath does.
Paths are relative to the resource (``name.family``, not ``Patient.name.family``). Supported:

* member access ``a.b.c``: a list-valued element contributes each item, a missing one nothing;
* choice elements with ``ofType``: ``value.ofType(Quantity)`` reads ``valueQuantity``,
  ``deceased.ofType(dateTime)`` reads ``deceasedDateTime``. A bare ``value`` reads a key named
  ``value`` only (the engine has no FHIR model to expand choice types);
* ``$this`` (the current item, e.g. inside ``where``);
* literals ``'text'`` (escapes ``\\'``, ``\\\\``, ``\\n``, ``\\t``), integers, decimals, ``true``,
  ``false``;
* ``=`` and ``!=`` (FHIRPath collection equality; empty if either side is empty), ``and``,
  ``or`` (three-valued), with ``=``/``!=`` binding tighter than ``and``, ``and`` than ``or``;
* functions: ``first()``, ``last()``, ``count()``, ``exists()``, ``exists(criteria)``, ``empty()``,
  ``not()``, ``where(criteria)``, ``ofType(Type)`` (after a member: the choice element; otherwise
  resources whose resourceType is ``Type``), ``extension('url')``, ``getResourceKey()``,
  ``getReferenceKey()`` and ``getReferenceKey(Type)`` (the id in a ``Type/id`` reference, also
  inside an absolute URL or before ``/_history``; nothing for ``#contained``, conditional
  ``Type?query`` and ``urn:`` references), ``join()`` and ``join('separator')``.

Anything else (other functions, operators, indexers ``[0]``, parentheses, ``%constants``,
type prefixes) raises ``PathSyntaxError``, which the loader reports naming the view and path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from dropzone.views.errors import PathEvaluationError, PathSyntaxError
from processors import fhir_json

Collection = list[Any]
Compiled = Callable[[Collection], Collection]

SUPPORTED_FUNCTIONS = (
    "first",
    "last",
    "count",
    "exists",
    "empty",
    "not",
    "where",
    "ofType",
    "extension",
    "getResourceKey",
    "getReferenceKey",
    "join",
)

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^'\\]|\\.)*')
    | (?P<number>\d+(?:\.\d+)?)
    | (?P<this>\$this\b)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>!=|[.(),=])
    )""",
    re.VERBOSE,
)
_ESCAPES = {"'": "'", "\\": "\\", "n": "\n", "t": "\t", "r": "\r", '"': '"', "`": "`", "/": "/"}
_TYPE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_KEYWORDS = {"and", "or", "true", "false"}


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # string | number | this | ident | op | end
    text: str
    at: int


def tokenize(path: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(path):
        if path[pos:].strip() == "":
            break
        match = _TOKEN.match(path, pos)
        if match is None or match.end() == pos:
            start = pos + (len(path[pos:]) - len(path[pos:].lstrip()))
            raise PathSyntaxError(
                f"unsupported syntax at character {start + 1}: {path[start : start + 12]!r}"
            )
        kind = match.lastgroup or "op"
        text = match.group(kind)
        tokens.append(Token(kind, text, match.start(kind)))
        pos = match.end()
    tokens.append(Token("end", "", len(path)))
    return tokens


# -- evaluation helpers ---------------------------------------------------------------------------


def _members(items: Collection, key: str) -> Collection:
    out: Collection = []
    for item in items:
        if isinstance(item, dict):
            value = item.get(key)
            if isinstance(value, list):
                out.extend(v for v in value if v is not None)
            elif value is not None:
                out.append(value)
    return out


def _boolean(items: Collection, what: str) -> bool | None:
    """FHIRPath singleton evaluation in a boolean context: empty is unknown (None), one boolean is
    itself, one other item is true; several items are an error."""
    if not items:
        return None
    if len(items) > 1:
        raise PathEvaluationError(f"{what} gave {len(items)} items where one boolean was expected")
    value = items[0]
    return value if isinstance(value, bool) else True


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float | Decimal) and isinstance(b, int | float | Decimal):
        return _as_decimal(a) == _as_decimal(b)
    return type(a) is type(b) and a == b


def _as_decimal(n: int | float | Decimal) -> Decimal:
    if isinstance(n, float):
        return Decimal(fhir_json.dumps(n).decode())  # the float's JSON text, not its binary value
    return Decimal(n)


def reference_key(reference: Any, wanted: str | None) -> str | None:
    """The id in a literal reference ``[base/]Type/id[/_history/v]`` (``Type`` = ``wanted`` when
    given); None for contained (``#x``), conditional (``Type?...``) and ``urn:`` references."""
    if not isinstance(reference, str) or not reference or reference.startswith(("#", "urn:")):
        return None
    if "?" in reference:
        return None
    parts = reference.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2:
        return None
    rtype, rid = parts[-2], parts[-1]
    if not _TYPE_NAME.match(rtype) or not rtype[0].isupper() or not rid:
        return None
    if wanted is not None and rtype != wanted:
        return None
    return rid


# -- the parser: tokens -> compiled functions -----------------------------------------------------


class _Parser:
    def __init__(self, path: str) -> None:
        self.path = path
        self.tokens = tokenize(path)
        self.pos = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def at_op(self, text: str) -> bool:
        return self.token.kind == "op" and self.token.text == text

    def at_word(self, word: str) -> bool:
        return self.token.kind == "ident" and self.token.text == word

    def expect_op(self, text: str) -> None:
        if not self.at_op(text):
            raise self.error(f"expected {text!r}")
        self.advance()

    def error(self, problem: str) -> PathSyntaxError:
        token = self.token
        found = "the end" if token.kind == "end" else repr(token.text)
        return PathSyntaxError(f"{problem} at character {token.at + 1} (found {found})")

    def parse(self) -> Compiled:
        if self.token.kind == "end":
            raise PathSyntaxError("the path is empty")
        compiled = self.expression()
        if self.token.kind != "end":
            raise self.error("unsupported syntax")
        return compiled

    def expression(self) -> Compiled:
        left = self.conjunction()
        while self.at_word("or"):
            self.advance()
            left = _or(left, self.conjunction())
        return left

    def conjunction(self) -> Compiled:
        left = self.equality()
        while self.at_word("and"):
            self.advance()
            left = _and(left, self.equality())
        return left

    def equality(self) -> Compiled:
        left = self.operand()
        if self.at_op("=") or self.at_op("!="):
            negate = self.advance().text == "!="
            right = self.operand()
            if self.at_op("=") or self.at_op("!="):
                raise self.error("chained comparisons are not supported")
            return _equals(left, right, negate)
        return left

    def operand(self) -> Compiled:
        token = self.token
        if token.kind == "string":
            self.advance()
            return _literal(_unquote(token.text))
        if token.kind == "number":
            self.advance()
            return _literal(
                int(token.text) if "." not in token.text else fhir_json.number(Decimal(token.text))
            )
        if token.kind == "ident" and token.text in ("true", "false"):
            self.advance()
            return _literal(token.text == "true")
        if self.at_op("("):
            raise self.error("parentheses are not supported")
        return self.path_expression()

    def path_expression(self) -> Compiled:
        steps: list[Compiled] = []
        if self.token.kind == "this":
            self.advance()
        else:
            steps.append(self.invocation(previous_member=None))
        while self.at_op("."):
            self.advance()
            previous = getattr(steps[-1], "member", None) if steps else None
            step = self.invocation(previous_member=previous)
            if getattr(step, "replaces_previous", False):
                steps[-1] = step
            else:
                steps.append(step)
        return _chain(steps)

    def invocation(self, previous_member: str | None) -> Compiled:
        token = self.token
        if token.kind != "ident" or token.text in _KEYWORDS:
            raise self.error("expected an element or function name")
        self.advance()
        if not self.at_op("("):
            return _member(token.text)
        self.advance()
        return self.function(token.text, previous_member)

    def function(self, name: str, previous_member: str | None) -> Compiled:
        if name in ("first", "last", "count", "empty", "not", "getResourceKey"):
            self.expect_op(")")
            return _SIMPLE[name]
        if name in ("where", "exists"):
            if name == "exists" and self.at_op(")"):
                self.advance()
                return _exists(None)
            criteria = self.expression()
            self.expect_op(")")
            return _where(criteria) if name == "where" else _exists(criteria)
        if name in ("ofType", "getReferenceKey"):
            type_name = None
            if not self.at_op(")"):
                word = self.advance()
                if word.kind != "ident" or not _TYPE_NAME.match(word.text):
                    raise PathSyntaxError(f"{name}() takes a type name such as Patient or Quantity")
                type_name = word.text
            self.expect_op(")")
            if name == "getReferenceKey":
                return _reference_keys(type_name)
            if type_name is None:
                raise PathSyntaxError("ofType() needs a type name")
            if previous_member is not None:
                return _choice(previous_member, type_name)
            return _resources_of_type(type_name)
        if name in ("join", "extension"):
            argument = None
            if not self.at_op(")"):
                word = self.advance()
                if word.kind != "string":
                    raise PathSyntaxError(f"{name}() takes a quoted string argument")
                argument = _unquote(word.text)
            self.expect_op(")")
            if name == "join":
                return _join(argument or "")
            if argument is None:
                raise PathSyntaxError("extension() needs the extension's url as a quoted string")
            return _extension(argument)
        supported = ", ".join(f"{f}()" for f in SUPPORTED_FUNCTIONS)
        raise PathSyntaxError(f"function {name}() is not supported (supported: {supported})")


def _unquote(text: str) -> str:
    body = text[1:-1]
    out = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            nxt = body[i + 1] if i + 1 < len(body) else ""
            if nxt not in _ESCAPES:
                raise PathSyntaxError(f"unsupported escape \\{nxt} in a string literal")
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


# -- compiled steps -------------------------------------------------------------------------------


def _chain(steps: list[Compiled]) -> Compiled:
    if not steps:
        return lambda items: list(items)
    if len(steps) == 1:
        return steps[0]

    def run(items: Collection) -> Collection:
        for step in steps:
            items = step(items)
        return items

    return run


def _member(name: str) -> Compiled:
    def member(items: Collection) -> Collection:
        return _members(items, name)

    member.member = name  # type: ignore[attr-defined]  # lets a following ofType() pick the choice
    return member


def _choice(name: str, type_name: str) -> Compiled:
    key = name + type_name[0].upper() + type_name[1:]

    def choice(items: Collection) -> Collection:
        return _members(items, key)

    choice.replaces_previous = True  # type: ignore[attr-defined]
    return choice


def _resources_of_type(type_name: str) -> Compiled:
    return lambda items: [i for i in items if isinstance(i, dict) and i.get("resourceType") == type_name]


def _literal(value: Any) -> Compiled:
    return lambda _items: [value]


def _equals(left: Compiled, right: Compiled, negate: bool) -> Compiled:
    def equals(items: Collection) -> Collection:
        a, b = left(items), right(items)
        if not a or not b:
            return []
        same = len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
        return [same != negate]

    return equals


def _and(left: Compiled, right: Compiled) -> Compiled:
    def conjunction(items: Collection) -> Collection:
        a, b = _boolean(left(items), "'and'"), _boolean(right(items), "'and'")
        if a is False or b is False:
            return [False]
        if a is None or b is None:
            return []
        return [True]

    return conjunction


def _or(left: Compiled, right: Compiled) -> Compiled:
    def disjunction(items: Collection) -> Collection:
        a, b = _boolean(left(items), "'or'"), _boolean(right(items), "'or'")
        if a is True or b is True:
            return [True]
        if a is None or b is None:
            return []
        return [False]

    return disjunction


def _where(criteria: Compiled) -> Compiled:
    return lambda items: [i for i in items if _boolean(criteria([i]), "where()") is True]


def _exists(criteria: Compiled | None) -> Compiled:
    if criteria is None:
        return lambda items: [bool(items)]
    return lambda items: [any(_boolean(criteria([i]), "exists()") is True for i in items)]


def _not(items: Collection) -> Collection:
    value = _boolean(items, "not()")
    return [] if value is None else [not value]


def _resource_keys(items: Collection) -> Collection:
    return [
        i["id"] for i in items if isinstance(i, dict) and "resourceType" in i and isinstance(i.get("id"), str)
    ]


def _reference_keys(type_name: str | None) -> Compiled:
    def keys(items: Collection) -> Collection:
        out = []
        for item in items:
            if isinstance(item, dict):
                key = reference_key(item.get("reference"), type_name)
                if key is not None:
                    out.append(key)
        return out

    return keys


def _join(separator: str) -> Compiled:
    def join(items: Collection) -> Collection:
        if not items:
            return []
        if not all(isinstance(i, str) for i in items):
            raise PathEvaluationError("join() needs strings")
        return [separator.join(items)]

    return join


def _extension(url: str) -> Compiled:
    def extension(items: Collection) -> Collection:
        return [e for e in _members(items, "extension") if isinstance(e, dict) and e.get("url") == url]

    return extension


_SIMPLE: dict[str, Compiled] = {
    "first": lambda items: items[:1],
    "last": lambda items: items[-1:],
    "count": lambda items: [len(items)],
    "empty": lambda items: [not items],
    "not": _not,
    "getResourceKey": _resource_keys,
}


def compile_path(path: str) -> Compiled:
    """The function evaluating ``path`` on a collection; ``PathSyntaxError`` for anything outside
    the subset described in the module docstring."""
    if not isinstance(path, str):
        raise PathSyntaxError("a path must be a string")
    return _Parser(path).parse()
