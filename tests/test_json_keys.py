"""``processors.json_keys.loads_noting_repeated_key`` and ``fhir_json.loads_checked``: the
comparison up to whitespace that spares spaced senders the counting scans must never hide a
repeated key or a number orjson would change."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors import fhir_json
from processors.json_keys import loads_noting_repeated_key

_keys = st.text(alphabet="abcxyz _:,\"'é", min_size=1, max_size=6)
_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
)
_values = st.recursive(
    _leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=20,
)
_layouts = [
    {"separators": (",", ":")},
    {"separators": (", ", ": ")},  # what Python's json.dumps writes by default
    {"indent": 2},
    {"indent": "\t", "ensure_ascii": False},
]


@given(value=st.dictionaries(_keys, _values, max_size=5), layout=st.sampled_from(range(len(_layouts))))
def test_any_layout_parses_as_the_exact_parser_does_and_repeats_nothing(
    value: dict[str, Any], layout: int
) -> None:
    raw = json.dumps(value, **_layouts[layout]).encode()
    parsed, repeated = loads_noting_repeated_key(raw)
    assert repeated is None
    assert fhir_json.dumps(parsed) == fhir_json.dumps(fhir_json._exact_loads(raw))


@given(
    value=st.dictionaries(_keys, _values, min_size=1, max_size=5),
    layout=st.sampled_from(range(len(_layouts))),
    data=st.data(),
)
def test_a_repeated_key_is_found_in_any_layout(
    value: dict[str, Any], layout: int, data: st.DataObject
) -> None:
    key = data.draw(st.sampled_from(sorted(value)))
    text = json.dumps(value, **_layouts[layout])
    inner = json.dumps({key: value[key]}, **_layouts[layout])[1:-1].strip()
    raw = (text[:-1].rstrip() + ", " + inner + "}").encode()  # the same key once more, at the end
    assert loads_noting_repeated_key(raw)[1] == key


@pytest.mark.parametrize(
    "raw",
    [
        b'{"resourceType":"Patient","id":"a","active":true}',
        b'{"resourceType": "Patient", "id": "a", "active": true}',
        b'{\n  "resourceType" : "Patient",\n\t"id": "a", "active": true\n}',
        b'{"v": [1, 2.5, -3e-7, "x y"]}',
    ],
)
def test_text_that_is_orjsons_up_to_whitespace_takes_the_short_way(raw: bytes) -> None:
    assert fhir_json.loads_checked(raw)[1] is True


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b'{"v": 80.00}', "80.00"),  # orjson would write 80.0
        (b'{"v": 1e+20}', "1E+20"),  # exponent form: a JsonDecimal, not a float
        (b'{"v": 1E2}', "1E+2"),
        (b'{"v": 12345678901234567890123}', "12345678901234567890123"),
    ],
)
def test_numbers_orjson_would_change_follow_the_rule_in_spaced_text(raw: bytes, value: str) -> None:
    parsed = fhir_json.loads_checked(raw)[0]
    assert str(parsed["v"]) == value
    assert fhir_json.dumps(parsed) == b'{"v":' + value.encode() + b"}"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"name": "a\\u0020b"}',  # an escape orjson writes otherwise
        b'{"url": "http:\\/\\/x"}',
        b'{"a": 1, "a": 1}',  # the same key and value twice
    ],
)
def test_other_escapes_and_repeats_are_not_taken_for_the_same_text(raw: bytes) -> None:
    assert fhir_json.loads_checked(raw)[1] is False
