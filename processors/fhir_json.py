"""FHIR JSON with exact numbers: one rule for what a number becomes, on every parse path.

FHIR decimals carry their precision (``80.00`` is not ``80.0``, R4 2.1.28.0.1), and orjson and
ijson's floats drop it. The rule, applied the same way by ``loads``, ``normalise`` (numbers from
ijson's ``use_float=False``) and ``number`` (decimals built in code, e.g. from CSV text):

* an integer token (no fraction, no exponent) is an ``int`` of any size;
* any other token is read as a decimal ``d`` (digits and exponent); it is an ``int`` when its
  exponent is 0 (``80e0``), a ``float`` when the text orjson writes for ``float(d)`` equals
  ``decimal_text(d)``, else a ``JsonDecimal``.

``decimal_text`` is the number's JSON text: plain notation when the exponent is not positive
(the sender's text, since that is how plain tokens look), scientific otherwise. So a token in
plain notation (``80.00``, ``1.50``, ``0.0000001``) is written back exactly as sent; one in
exponent notation keeps its value and significant digits in a canonical form (``1e5`` ->
``1E+5``). That canonical form, rather than the literal token, is what every path can agree on:
ijson hands over a ``Decimal`` without its token, and MongoDB's Decimal128 keeps digits and
exponent, not notation.

``dumps`` writes floats as orjson does and decimals (and ints beyond 64 bits) as their exact
text; the common document without either costs one plain ``orjson.dumps``.
"""

from __future__ import annotations

import functools
import json
import re
from decimal import Decimal
from typing import Any

import orjson

# orjson.JSONDecodeError subclasses it, so one ``except`` covers both parsers.
JSONDecodeError = json.JSONDecodeError
JSONEncodeError = orjson.JSONEncodeError

# Plain notation for exponents down to this many places below the point: beyond it a text such as
# ``1e-100000000`` would become 100 MB of zeros.
_PLAIN_LIMIT = 100
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1

# Number tokens orjson may not read by the rule: a fraction, an exponent, or 19+ digits (orjson
# reads integers beyond 64 bits as floats). Inside a document a number token always follows
# ``:``, ``,`` or ``[`` plus JSON whitespace, so none is missed (a top-level number is checked
# apart); a match inside a string only costs an exact, slower parse.
_CANDIDATE = re.compile(rb"[:,\[][ \t\r\n]*(-?(?:\d+\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d{19,}))")
# In text that orjson wrote, a float in exponent form: the rule makes it a JsonDecimal.
_ORJSON_EXPONENT = re.compile(rb"e[+-]\d+(?:[,\]}]|\Z)")
_NUMBER_START = frozenset(b"-0123456789")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class JsonDecimal(Decimal):
    """A decimal JSON number that a float would not write back the same; ``str()`` is its JSON
    text (``decimal_text``)."""

    __slots__ = ("_fragment", "_text")
    _text: str
    _fragment: orjson.Fragment  # what ``dumps`` writes: made once per (cached) instance

    def __new__(cls, value: str | Decimal) -> JsonDecimal:
        self = super().__new__(cls, value)
        if not self.is_finite():
            raise ValueError("NaN and Infinity are not JSON numbers")
        self._text = _canonical(self)
        self._fragment = orjson.Fragment(self._text)
        return self

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"JsonDecimal('{self._text}')"


def _canonical(d: Decimal) -> str:
    text = Decimal.__str__(d)
    if "E" not in text:
        return text  # str() is plain notation exactly when the exponent is <= 0 and small
    exponent = d.as_tuple().exponent
    if isinstance(exponent, int) and exponent <= 0 and d.adjusted() >= -_PLAIN_LIMIT:
        return Decimal.__format__(d, "f")
    return text


def decimal_text(d: Decimal) -> str:
    """The JSON text of a finite decimal (see the module docstring)."""
    if isinstance(d, JsonDecimal):
        return d._text
    if not d.is_finite():
        raise ValueError("NaN and Infinity are not JSON numbers")
    return _canonical(d)


def number(d: Decimal) -> int | float | JsonDecimal:
    """A decimal as the rule's Python value (see the module docstring)."""
    return _number_of_text(decimal_text(d))


@functools.lru_cache(maxsize=8192)
def _number_of_text(text: str) -> int | float | JsonDecimal:
    """By the decimal's JSON text, which tells ``80.00`` from ``80.0`` (the ``Decimal`` values
    are equal, and would share a cache entry). The values are immutable, so one instance can
    serve every document: claims repeat a few hundred amounts (``0.00``, ``50.00``) across
    thousands of rows."""
    if "." not in text and "E" not in text:
        return int(text)  # exponent 0: the text of an integer token
    as_float = float(text)
    if orjson.dumps(as_float) == text.encode():
        return as_float
    return JsonDecimal(text)


@functools.lru_cache(maxsize=8192)
def _parse_float(token: str) -> int | float | JsonDecimal:
    """The standard library parser's hook, once per distinct token (see ``_number_of_text``)."""
    return number(Decimal(token))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_float=_parse_float, parse_constant=_reject_constant)


# -- parsing ---------------------------------------------------------------------------------------


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON with the number rule; malformed input raises ``JSONDecodeError``."""
    return loads_checked(data)[0]


def loads_checked(data: bytes | bytearray | memoryview | str) -> tuple[Any, bool]:
    """``loads``, and whether orjson writes what it read back as the text itself, up to JSON
    whitespace between tokens (``same_text``). Then every token came through unchanged: no
    number lost digits, and no object repeated a key (orjson keeps only the last one)."""
    raw = _as_bytes(data)
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        if _needs_exact_parse(raw):
            return _exact_loads(raw), False  # e.g. 1e400, which orjson refuses as infinite
        raise
    try:
        dumped: bytes | None = orjson.dumps(value)
    except JSONEncodeError:  # nested deeper than orjson writes
        dumped = None
    if dumped is not None and _same_tokens(raw, dumped):
        # Every number token is orjson's own float or int text; only an exponent form is not
        # the rule's reading of it.
        if (b"e-" in dumped or b"e+" in dumped) and _ORJSON_EXPONENT.search(dumped):
            return _exact_loads(raw), True
        return value, True
    if _needs_exact_parse(raw):
        return _exact_loads(raw), False
    return value, False


_JSON_WHITESPACE = b" \t\r\n"


def _same_tokens(raw: bytes, dumped: bytes) -> bool:
    """Whether ``raw`` is orjson's text ``dumped`` with JSON whitespace between its tokens.
    Deleting every whitespace byte from both is enough: a string cannot hold a raw control
    character, and the spaces inside strings are the same in both, since ``dumped`` was written
    from what ``raw`` says. Compact Bulk Data NDJSON is usually ``dumped`` byte for byte; the
    comparison of the stripped texts (~3 us for 2 KB) serves spaced and indented senders (e.g.
    Python's ``json.dumps`` writes ``", "`` and ``": "``)."""
    if dumped == raw:
        return True
    return raw.translate(None, _JSON_WHITESPACE) == dumped.translate(None, _JSON_WHITESPACE)


def _as_bytes(data: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        try:
            return data.encode()
        except UnicodeEncodeError as err:
            raise JSONDecodeError("lone surrogate in the text", "", err.start) from None
    return bytes(data)


def _needs_exact_parse(raw: bytes) -> bool:
    start = raw.lstrip(b" \t\r\n")[:1]
    if start and start[0] in _NUMBER_START:
        return True  # the whole document is one number: rare, let the exact parser decide
    for match in _CANDIDATE.finditer(raw):
        token = match.group(1)
        if b"." not in token or b"e" in token or b"E" in token:
            return True  # exponent or long integer: rare, and orjson's reading is not the rule's
        if orjson.dumps(float(token)) != token:
            return True
    return False


def _exact_loads(raw: bytes) -> Any:
    """The standard library's parser, as strict as orjson: UTF-8 only, no NaN/Infinity, no lone
    surrogate escapes."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise JSONDecodeError(f"not valid UTF-8 ({err.reason})", "", err.start) from None
    try:
        value = _DECODER.decode(text)
    except JSONDecodeError:
        raise
    except RecursionError:
        raise JSONDecodeError("nested too deeply", text, 0) from None
    except ValueError as err:  # NaN/Infinity, or an integer past Python's digit limit
        raise JSONDecodeError(str(err), text, _constant_position(text)) from None
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise JSONDecodeError("lone surrogate escape in a string", text, 0)
    return value


def _constant_position(text: str) -> int:
    found = re.search(r"[:,\[]\s*(-?Infinity|NaN)", text)
    return found.start(1) if found else 0


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            try:
                node.encode()
            except UnicodeEncodeError:
                return True
    return False


def normalise(node: Any) -> Any:
    """Apply the number rule, in place, to what ijson built with ``use_float=False`` (ints stay,
    each ``Decimal`` becomes ``number(d)``). Returns ``node`` (or its replacement when it is a
    number itself)."""
    if isinstance(node, Decimal):
        return number(node)
    stack = [node] if isinstance(node, dict | list) else []
    while stack:
        container = stack.pop()
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for key, value in items:
            if isinstance(value, Decimal):
                # dict.__setitem__ also for dict subclasses: json_keys.KeyTrackingDict notes keys.
                if isinstance(container, dict):
                    dict.__setitem__(container, key, number(value))
                else:
                    container[key] = number(value)
            elif isinstance(value, dict | list):
                stack.append(value)
    return node


# -- writing ---------------------------------------------------------------------------------------

_COPY_ABOVE = 1 << 16


def _exact_size(out: bytes) -> bytes:
    """orjson's bytes keep its growth buffer (measured: a 2 MB resource held 16 MB), so a large
    one is copied to its exact size; a batch of big resources then holds what it says."""
    return bytes(memoryview(out)) if len(out) > _COPY_ABOVE else out


def _fragment(value: Any) -> orjson.Fragment:
    """orjson's ``default`` for what it cannot write itself: a decimal goes in as its JSON text."""
    if type(value) is JsonDecimal:
        return value._fragment
    if isinstance(value, Decimal):
        return orjson.Fragment(decimal_text(value))
    raise TypeError(f"{type(value).__name__} is not JSON")


def dumps(obj: Any, *, sort_keys: bool = False) -> bytes:
    """orjson.dumps, with decimals and ints beyond 64 bits written as their exact JSON text.
    A document without either costs one plain ``orjson.dumps`` (``default`` is only called for
    the values orjson cannot write); with decimals, orjson writes each one's text in place
    (measured on SynPUF carrier EOBs, ~100 decimals in 24 KB: 43 us, where placeholders
    substituted afterwards took 92)."""
    option = orjson.OPT_SORT_KEYS if sort_keys else 0
    try:
        return _exact_size(orjson.dumps(obj, default=_fragment, option=option))
    except JSONEncodeError:
        # An int beyond 64 bits (orjson never hands ints to ``default``); nesting too deep or a
        # NaN decimal (``decimal_text`` refuses it inside ``default``) this dumps raises again.
        return _exact_size(orjson.dumps(_with_big_ints_as_text(obj), default=_fragment, option=option))


def _with_big_ints_as_text(node: Any) -> Any:
    """A copy with every int beyond 64 bits replaced by its text as a JSON fragment."""
    if isinstance(node, dict):
        return {key: _with_big_ints_as_text(value) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [_with_big_ints_as_text(value) for value in node]
    if type(node) is int and not _INT64_MIN <= node <= _UINT64_MAX:
        return orjson.Fragment(str(node))
    return node
