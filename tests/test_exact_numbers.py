"""Numbers keep their exact text (``processors.fhir_json``): parsing, writing, every parse path
(NDJSON, single resource, Bundle through ijson, CSV), every store, the API, export and rejects."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import ijson
import pytest
from api_support import build, in_process
from hypothesis import given
from hypothesis import strategies as st

from conftest import drop
from dropzone.export import export_ndjson
from dropzone.models import Outcome
from dropzone.pipeline.canonical import canonical_bytes, resource_hash
from dropzone.store.base import Store
from dropzone.store.mongo import to_stored
from processors import fhir_json
from processors.csv_claims.fhir import money
from processors.csv_claims.values import RowValues
from processors.fhir_json import JsonDecimal

# -- loads / dumps ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("80.00", JsonDecimal),
        ("1.50", JsonDecimal),
        ("100000000000000000001.25", JsonDecimal),
        ("0.0000001", JsonDecimal),
        ("-0.0", float),
        ("0.1", float),
        ("72.5", float),
        ("12345678901234567890", int),
        ("-123456789012345678901234567890", int),
        ("42", int),
    ],
)
def test_plain_numbers_keep_their_text(text: str, kind: type) -> None:
    for doc in (f'{{"v":{text}}}', f'{{ "v" : [ {text} ] }}'):  # orjson's own form, and not
        value = fhir_json.loads(doc.encode())
        number = value["v"] if isinstance(value["v"], int | float | Decimal) else value["v"][0]
        assert type(number) is kind
        assert fhir_json.dumps(number) == text.encode()


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("1e5", b"1E+5"),
        ("1E-7", b"0.0000001"),
        ("1.0E-7", b"0.00000010"),
        ("1e400", b"1E+400"),
        ("80e0", b"80"),
    ],
)
def test_exponent_notation_keeps_value_and_digits_in_one_canonical_form(text: str, written: bytes) -> None:
    value = fhir_json.loads(f"[{text}]".encode())[0]
    assert fhir_json.dumps(value) == written
    assert fhir_json.dumps(fhir_json.loads(written)) == written  # stable once written


def test_what_orjson_alone_gets_wrong() -> None:
    import orjson

    assert orjson.dumps(orjson.loads(b"[80.00,100000000000000000001.25]")) == b"[80.0,1e+20]"
    assert fhir_json.dumps(fhir_json.loads(b"[80.00,100000000000000000001.25]")) == (
        b"[80.00,100000000000000000001.25]"
    )


def test_number_looking_text_inside_strings_stays_a_string() -> None:
    raw = b'{"text":"a:1.50, [2.50","v":1.5}'
    value = fhir_json.loads(raw)
    assert value == {"text": "a:1.50, [2.50", "v": 1.5} and type(value["v"]) is float
    assert fhir_json.dumps(value) == raw


@pytest.mark.parametrize(
    "raw",
    [
        b"NaN",
        b"[1.50, NaN]",
        b'{"v": Infinity, "w": 1.50}',
        b"[-Infinity]",
        b"\xff\xfe[1.50]",
        b'["caf\xe9", 1.50]',  # Latin-1, not UTF-8
        b'["\\ud800", 1.50]',  # a lone surrogate escape
        b"[1.50,]",
        b'{"v": 1.50',
        b"[01.50]",
    ],
)
def test_malformed_json_raises_one_exception_type(raw: bytes) -> None:
    with pytest.raises(fhir_json.JSONDecodeError):
        fhir_json.loads(raw)


def test_a_surrogate_pair_escape_is_fine() -> None:
    assert fhir_json.loads(b'["\\ud83d\\ude00", 1.50]') == ["\U0001f600", Decimal("1.50")]


def test_dumps_writes_decimals_and_big_ints_as_numbers_and_sorts_keys() -> None:
    doc = {"b": [Decimal("1.50"), 2**70, -(2**64)], "a": JsonDecimal("80.00")}
    assert fhir_json.dumps(doc, sort_keys=True) == (
        b'{"a":80.00,"b":[1.50,1180591620717411303424,-18446744073709551616]}'
    )
    with pytest.raises(fhir_json.JSONEncodeError):
        fhir_json.dumps([Decimal("NaN")])


def test_equal_decimals_written_otherwise_stay_apart() -> None:
    """The number rule is cached by text: 80.0, 80.00 and 8E+1 are equal Decimals (one hash)
    but three different JSON numbers."""
    for _ in range(2):  # the second round is answered from the caches
        built = [fhir_json.number(Decimal(t)) for t in ("80.0", "80.00", "8E+1", "80")]
        assert fhir_json.dumps(built) == b"[80.0,80.00,8E+1,80]"
        parsed = fhir_json.loads(b"[80.0, 80.00, 80.000, 8E+1, 80]")
        assert fhir_json.dumps(parsed) == b"[80.0,80.00,80.000,8E+1,80]"


def test_a_string_like_a_placeholder_is_written_as_a_string() -> None:
    doc = {"text": "dz-number-0", "v": Decimal("1.50")}
    assert fhir_json.dumps(doc) == b'{"text":"dz-number-0","v":1.50}'


def test_json_decimal_survives_copy_and_pickle() -> None:
    import copy
    import pickle

    value = JsonDecimal("80.00")
    for clone in (copy.deepcopy(value), pickle.loads(pickle.dumps(value))):
        assert type(clone) is JsonDecimal and str(clone) == "80.00"


_PLAIN = st.from_regex(r"-?(0|[1-9][0-9]{0,24})\.[0-9]{1,20}", fullmatch=True)
_EXPONENT = st.from_regex(r"-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,15})?[eE][+-]?[0-9]{1,3}", fullmatch=True)


@given(st.one_of(_PLAIN, _EXPONENT))
def test_every_parse_path_gives_the_same_number(token: str) -> None:
    """orjson's fast path, the exact parser and ijson's Decimals all follow the one rule."""
    compact = fhir_json.loads(f'{{"v":{token}}}'.encode())["v"]
    spaced = fhir_json.loads(f'{{ "v" : {token} }}'.encode())["v"]
    streamed = fhir_json.normalise(
        next(ijson.items(io.BytesIO(f"[{token}]".encode()), "item", use_float=False))
    )
    assert type(compact) is type(spaced) is type(streamed)
    assert fhir_json.dumps(compact) == fhir_json.dumps(spaced) == fhir_json.dumps(streamed)
    assert Decimal(fhir_json.dumps(compact).decode()) == Decimal(token)  # the value, always
    if "e" not in token.lower():
        assert fhir_json.dumps(compact) == token.encode()


# -- canonical hash --------------------------------------------------------------------------------


def test_canonical_hash_tells_80_00_from_80_0() -> None:
    first = fhir_json.loads(b'{"resourceType":"Observation","id":"o","valueQuantity":{"value":80.00}}')
    second = fhir_json.loads(b'{"resourceType":"Observation","id":"o","valueQuantity":{"value":80.0}}')
    assert resource_hash(first) != resource_hash(second)
    assert b'"value":80.00' in canonical_bytes(first)


# -- CSV amounts -----------------------------------------------------------------------------------


def test_csv_amounts_keep_the_csv_digits() -> None:
    values = RowValues({"A": 0, "B": 1, "C": 2}, ["80.00", "12.5", "7"])
    amounts = [values.amount(column) for column in "ABC"]
    assert [fhir_json.dumps(money(a)) for a in amounts if a is not None] == [
        b'{"value":80.00,"currency":"USD"}',
        b'{"value":12.5,"currency":"USD"}',
        b'{"value":7,"currency":"USD"}',
    ]


# -- end to end: three formats, every store, API, export, rejects ---------------------------------

OBSERVATION = (
    b'{"resourceType":"Observation","id":"bp-1","status":"final",'
    b'"code":{"text":"weight"},"subject":{"reference":"Patient/p-1"},'
    b'"valueQuantity":{"value":80.00,"unit":"kg"},'
    b'"referenceRange":[{"low":{"value":1.50},"high":{"value":100000000000000000001.25}}]}'
)
BIG_INTEGER = (
    b'{"resourceType":"Observation","id":"big-1","status":"final",'
    b'"code":{"text":"count"},"valueQuantity":{"value":12345678901234567890}}'
)
RESOURCES = (OBSERVATION, BIG_INTEGER)
FORMATS = ("ndjson", "json", "bundle")


def _write_inputs(folder: Path) -> dict[str, list[Path]]:
    """The same two resources as NDJSON (tenant ndjson), as single-resource files (tenant json)
    and as entries of a collection Bundle (tenant bundle), pretty-printed in places."""
    folder.mkdir(parents=True, exist_ok=True)
    ndjson = folder / "Observation.ndjson"
    ndjson.write_bytes(b"\n".join(RESOURCES) + b"\n")
    singles = []
    for n, raw in enumerate(RESOURCES):
        path = folder / f"single-{n}.json"
        path.write_bytes(raw.replace(b",", b",\n  "))  # not orjson's form: the exact parser
        singles.append(path)
    bundle = folder / "bundle.json"
    entries = b",".join(b'{"fullUrl":"urn:x:%d","resource":%s}' % (n, raw) for n, raw in enumerate(RESOURCES))
    bundle.write_bytes(b'{"resourceType":"Bundle","type":"collection","entry":[' + entries + b"]}")
    return {"ndjson": [ndjson], "json": singles, "bundle": [bundle]}


def _load_all(zone: Path, store: Store, make_pipeline: Any, tmp_path: Path) -> None:
    inputs = _write_inputs(tmp_path / "inputs")
    for tenant, files in inputs.items():
        drop(zone, tenant, *files)
    results = make_pipeline(store).drain()
    assert {r.outcome for r in results} == {Outcome.ARCHIVED}, [(r.name, r.reason) for r in results]


def _content(resource: dict[str, Any]) -> bytes:
    resource = {k: v for k, v in resource.items() if k != "meta"}
    return fhir_json.dumps(resource, sort_keys=True)


def test_every_format_stores_the_same_exact_numbers(
    zone: Path, any_store: Store, make_pipeline: Any, tmp_path: Path
) -> None:
    _load_all(zone, any_store, make_pipeline, tmp_path)
    for rid, raw in (("bp-1", OBSERVATION), ("big-1", BIG_INTEGER)):
        stored = {t: any_store.resources.get(t, "Observation", rid) for t in FORMATS}
        assert all(stored.values()), stored
        contents = {t: _content(r) for t, r in stored.items() if r is not None}
        assert len(set(contents.values())) == 1, contents
        assert contents["ndjson"] == _content(fhir_json.loads(raw))
    weight = any_store.resources.get("json", "Observation", "bp-1")
    assert weight is not None
    assert fhir_json.dumps(weight["valueQuantity"]) == b'{"value":80.00,"unit":"kg"}'
    assert b'"high":{"value":100000000000000000001.25}' in fhir_json.dumps(weight)
    big = any_store.resources.get("ndjson", "Observation", "big-1")
    assert big is not None and big["valueQuantity"]["value"] == 12345678901234567890
    assert type(big["valueQuantity"]["value"]) is int
    hashes = {any_store.resources.existing(t, "Observation", ["bp-1"])["bp-1"].hash for t in FORMATS}
    assert len(hashes) == 1


def test_export_writes_the_exact_numbers(
    zone: Path, any_store: Store, make_pipeline: Any, tmp_path: Path
) -> None:
    _load_all(zone, any_store, make_pipeline, tmp_path)
    for tenant in FORMATS:
        out = tmp_path / "export" / tenant
        export_ndjson(any_store.resources, tenant, out)
        text = (out / "Observation.ndjson").read_bytes()
        assert b'"valueQuantity":{"value":80.00,"unit":"kg"}' in text
        assert b'"low":{"value":1.50}' in text and b"100000000000000000001.25" in text
        assert b'"value":12345678901234567890}' in text


def test_api_reads_and_writes_the_exact_numbers(
    zone: Path, any_store: Store, make_pipeline: Any, tmp_path: Path
) -> None:
    _load_all(zone, any_store, make_pipeline, tmp_path)
    harness = build(tmp_path / "api", tenants=("ndjson", "bundle"))
    harness.store = any_store  # type: ignore[assignment]
    with in_process(harness) as api:
        read = api.client.get("/api/fhir/Observation/bp-1", headers=api.auth("bundle"))
        assert read.status_code == 200, read.text
        assert b'"valueQuantity":{"value":80.00,"unit":"kg"}' in read.content
        assert b'"high":{"value":100000000000000000001.25}' in read.content
        body = OBSERVATION.replace(b"80.00", b"80.0")  # a different decimal: a new version
        headers = {**api.auth("ndjson"), "Content-Type": "application/fhir+json"}
        put = api.client.put("/api/fhir/Observation/bp-1", content=body, headers=headers)
        assert put.status_code == 200, put.text
        assert put.json()["meta"]["versionId"] == "2" and b'"value":80.0,' in put.content
        again = api.client.put("/api/fhir/Observation/bp-1", content=body, headers=headers)
        assert again.json()["meta"]["versionId"] == "2"  # identical content: unchanged
        old = api.client.get("/api/fhir/Observation/bp-1/_history/1", headers=api.auth("ndjson"))
        assert b'"value":80.00,' in old.content


def test_bundle_rejects_keep_the_senders_numbers(zone: Path, make_pipeline: Any, tmp_path: Path) -> None:
    bad = OBSERVATION.replace(b'"status":"final"', b'"status":"not-a-status"').replace(b"bp-1", b"bp-2")
    entries = b",".join(b'{"resource":%s}' % raw for raw in (OBSERVATION, bad))
    bundle = tmp_path / "mixed.json"
    bundle.write_bytes(b'{"resourceType":"Bundle","type":"collection","entry":[' + entries + b"]}")
    drop(zone, "acme", bundle)
    (result,) = make_pipeline().drain()
    assert result.outcome == Outcome.PARTIAL
    (rejects,) = list(zone.rglob("*.rejects.json"))
    text = rejects.read_bytes()
    assert b'"id":"bp-2"' in text and b'"value":80.00' in text and b"100000000000000000001.25" in text


def test_sqlite_body_holds_the_exact_text(zone: Path, make_pipeline: Any, tmp_path: Path) -> None:
    from dropzone.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "db" / "dropzone.sqlite")
    _load_all(zone, store, make_pipeline, tmp_path)
    rows = store.resources._db.read(  # type: ignore[attr-defined]
        "SELECT body FROM resources WHERE tenant = 'bundle' AND id = 'bp-1'"
    )
    assert '"valueQuantity":{"value":80.00,"unit":"kg"}' in rows[0][0]


# -- MongoDB encoding ------------------------------------------------------------------------------


def test_mongo_keeps_decimals_as_decimal128_and_the_rest_as_text() -> None:
    from bson.decimal128 import Decimal128

    long_decimal = JsonDecimal("1" * 40 + ".25")
    doc = {
        "_id": "t/o",
        "v": JsonDecimal("80.00"),
        "big": 2**70,
        "huge": [long_decimal, 10**40],
        "plain": 1.5,
        "_dz": {"tenant": "t"},
    }
    stored = to_stored(doc)
    assert stored["v"] == Decimal128("80.00") and stored["big"] == Decimal128(str(2**70))
    assert stored["huge"] == [{"_dz_number": str(long_decimal)}, {"_dz_number": str(10**40)}]
    assert stored["plain"] == 1.5 and stored["_dz"]["exact_numbers"] is True
    assert to_stored({"v": 1.5, "_dz": {}}) == {"v": 1.5, "_dz": {}}  # nothing to convert: unflagged


def test_mongomock_round_trips_decimal128() -> None:
    from conftest import mongomock_store
    from dropzone.store.base import ResourceWrite

    store = mongomock_store()
    resource = fhir_json.loads(b'{"resourceType":"Observation","id":"o","valueQuantity":{"value":80.00}}')
    resource["component"] = [
        {"valueQuantity": {"value": 10**40}},
        {"valueDecimal": JsonDecimal("9" * 40 + ".5")},
    ]
    store.resources.upsert("t", [ResourceWrite("Observation", "o", resource, resource_hash(resource))], None)
    read = store.resources.get("t", "Observation", "o")
    assert read is not None
    assert _content(read) == _content(resource)
    assert type(read["valueQuantity"]["value"]) is JsonDecimal
    raw = store._client["dropzone_test"]["Observation"].find_one({"_id": "t/o"})  # type: ignore[attr-defined]
    assert str(raw["valueQuantity"]["value"]) == "80.00"  # Decimal128 in the database


# -- the console script ----------------------------------------------------------------------------


def test_dropzone_export_command_writes_the_exact_numbers(tmp_path: Path) -> None:
    zone = tmp_path / "zone"
    inputs = _write_inputs(tmp_path / "inputs")
    drop(zone, "acme", *inputs["ndjson"])
    dropzone = shutil.which("dropzone", path=str(Path(sys.executable).parent)) or "dropzone"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DROPZONE_", "MONGODB_"))}
    env.update({"DROPZONE_PIPELINE__VALIDATION_WORKERS": "0", "DROPZONE_PIPELINE__QUIET_SECONDS": "0"})

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([dropzone, *args], capture_output=True, text=True, env=env, timeout=180)
        assert done.returncode == 0, done.stderr
        return done

    run("run", "--once", "--zone", str(zone), "--json")
    out = tmp_path / "export"
    run("export", "--tenant", "acme", "--out", str(out), "--zone", str(zone), "--json")
    lines = (out / "Observation.ndjson").read_bytes().splitlines()
    assert len(lines) == 2
    assert b'"valueQuantity":{"value":80.00,"unit":"kg"}' in b"".join(lines)
    assert all(json.loads(line)["resourceType"] == "Observation" for line in lines)
