"""What a resource contributes to the search index, computed once when it is stored.

* **keys**: exact-match strings. Token parameters (``code``, ``status``) give
  ``param=system|code`` and ``param=*|code`` (any system); a code without a system gives
  ``param=|code`` and ``param=*|code``. (``system|`` alone, any code of a system, is not
  indexed: one key per coding fewer, for a rare query.) Every Reference element
  of the resource and its backbone elements (``reference_paths``) gives ``>path|reference``
  (``>subject|Patient/1``, ``>performer.actor|Practitioner/2``), which serves reference
  search, the Patient compartment and the reference-integrity view with one index.
* **dates**: ``(param, low, high)`` for each date parameter of the type (see ``dates``).

Identifiers are indexed by the stores' identifier table (``identifier_rows``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any
from urllib.parse import unquote

from dropzone.search.dates import date_range, period_range
from dropzone.search.table import TABLE_PATH, search_table
from dropzone.validation.r4 import MODEL_PATH

SearchRows = tuple[list[str], list[tuple[str, str, str]]]
REF_PREFIX = ">"
# Marks a resource holding a conditional reference (``Type?identifier=...``) not yet rewritten
# (dropzone.search.references): one key finds them all, and ``~c|Type|system|value`` (system
# ``*`` when the reference names none) finds those a newly stored identifier may resolve.
CONDITIONAL_KEY = "~conditional"
_CONDITIONAL = re.compile(r"^(?P<type>[A-Z][A-Za-z]{1,63})\?identifier=(?P<token>[^&]+)$")


@lru_cache(maxsize=4096)  # a conditional reference is usually one of a few (the practitioners)
def parse_conditional(reference: str) -> tuple[str, str | None, str] | None:
    """(type, system or None, value) of ``Type?identifier=[system|]value``, else None."""
    match = _CONDITIONAL.match(reference)
    if match is None:
        return None
    token = unquote(match["token"])
    system, sep, value = token.partition("|")
    if not sep:
        return match["type"], None, token
    return (match["type"], system, value) if value else None


WAITING_PREFIX = "~c|"
# A document or message Bundle is stored whole (an immutable unit); ``~in|Patient/P`` says that
# one of its entries is patient P or in P's compartment, with ``urn:uuid`` references resolved
# through the entries' fullUrls, so ``$everything`` returns the Bundle. Not a ``>`` key: those
# are the Bundle's own references, which the reference-integrity view checks.
ENTRY_PATIENT_PREFIX = "~in|"
WHOLE_BUNDLE_TYPES = ("document", "message")
# R4's Bundle search parameters ``composition`` and ``message`` name the first entry of a
# document (a Composition) or a message (a MessageHeader); the Bundle carries that entry's
# token and reference keys under ``<param>.`` for chained search (``composition.patient=P``)
# and ``<param>=Type/id`` for the parameter itself.
BUNDLE_CHAINS = {"composition": ("document", "Composition"), "message": ("message", "MessageHeader")}


def waiting_key(rtype: str, system: str | None, value: str) -> str:
    """The key of resources waiting for a ``rtype`` with this identifier."""
    return f"{WAITING_PREFIX}{rtype}|{'*' if system is None else system}|{value}"


# Bump when ``search_rows`` changes what it computes; with the two data files it names the index
# a store holds (SQLite re-indexes a database written another way).
INDEX_CODE_VERSION = "2"


@lru_cache(maxsize=1)
def index_signature() -> str:
    digest = hashlib.sha256(INDEX_CODE_VERSION.encode())
    for path in (TABLE_PATH, MODEL_PATH):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def values_at(node: Any, path: str) -> list[Any]:
    """Every value at a dotted JSON path, arrays flattened at each step."""
    first, dot, rest = path.partition(".")
    value = node.get(first) if isinstance(node, dict) else None
    if value is None:
        return []
    if not dot:  # most paths: one step, no list building
        return value if isinstance(value, list) else [value]
    return _below(value, tuple(rest.split(".")))


def token_keys(param: str, value: Any) -> list[str]:
    codings: list[tuple[str, str]] = []
    if isinstance(value, str):
        return [f"{param}=|{value}", f"{param}=*|{value}"]
    if isinstance(value, dict):
        items = value["coding"] if isinstance(value.get("coding"), list) else [value]
        for coding in items:
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                system = coding.get("system")
                codings.append((system if isinstance(system, str) else "", coding["code"]))
    keys: list[str] = []
    for system, code in codings:
        keys += [f"{param}={system}|{code}", f"{param}=*|{code}"]
    return keys


def reference_key(reference: str) -> str | None:
    """How a reference is indexed: local ``#x`` references are not; a versioned relative one
    (``Patient/1/_history/2``) is indexed as ``Patient/1``."""
    if not reference or reference.startswith("#"):
        return None
    if "/_history/" in reference and "://" not in reference:
        reference = reference.split("/_history/", 1)[0]
    return reference


@cache
def reference_paths(rtype: str) -> tuple[str, ...]:
    """The JSON paths of the type's Reference elements, its backbone elements included (from
    the validator's R4 model). References inside data types (``Identifier.assigner``,
    ``Annotation.authorReference``) and extensions are not indexed."""
    types = model_types()
    found: list[str] = []

    def walk(owner: str, prefix: str, depth: int) -> None:
        for leaf, row in types.get(owner, {}).items():
            for kind in row["type"]:
                name = leaf[:-3] + kind[0].upper() + kind[1:] if leaf.endswith("[x]") else leaf
                if kind == "Reference":
                    found.append(prefix + name)
                elif (kind in ("BackboneElement", "Element") or kind == f"{owner}.{leaf}") and depth < 6:
                    walk(f"{owner}.{leaf}", f"{prefix}{name}.", depth + 1)

    walk(rtype, "", 0)
    return tuple(sorted(set(found)))


@lru_cache(maxsize=1)
def model_types() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(MODEL_PATH.read_text())["types"]
    return data


def _entries(bundle: dict[str, Any]) -> tuple[list[tuple[Any, dict[str, Any]]], dict[str, str]]:
    """A Bundle's (fullUrl, resource) entries and fullUrl -> ``Type/id`` for resolving them."""
    entries = bundle.get("entry")
    resources = [
        (e.get("fullUrl"), e["resource"])
        for e in (entries if isinstance(entries, list) else ())
        if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    ]
    local: dict[str, str] = {}
    for full_url, res in resources:
        rtype, rid = res.get("resourceType"), res.get("id")
        if isinstance(full_url, str) and isinstance(rtype, str) and isinstance(rid, str):
            local[full_url] = f"{rtype}/{rid}"
    return resources, local


def _whole_bundle(resource: dict[str, Any]) -> bool:
    return resource.get("resourceType") == "Bundle" and resource.get("type") in WHOLE_BUNDLE_TYPES


def _entry_reference(value: Any, local: dict[str, str]) -> str | None:
    ref = value.get("reference") if isinstance(value, dict) else None
    return reference_key(local.get(ref, ref)) if isinstance(ref, str) else None


def chain_keys(bundle: dict[str, Any]) -> set[str]:
    """The keys of a document's Composition or a message's MessageHeader (its first entry),
    prefixed for chained search on the Bundle (``BUNDLE_CHAINS``)."""
    if not _whole_bundle(bundle):
        return set()
    resources, local = _entries(bundle)
    first = resources[0][1] if resources else {}
    out: set[str] = set()
    for param, (bundle_type, rtype) in BUNDLE_CHAINS.items():
        if bundle.get("type") != bundle_type or first.get("resourceType") != rtype:
            continue
        if isinstance(first.get("id"), str):
            out.add(f"{param}={rtype}/{first['id']}")
        inner: set[str] = set()
        for token, paths in search_table().params(rtype).tokens.items():
            for path in paths:
                for value in values_at(first, path):
                    inner.update(token_keys(token, value))
        for path in reference_paths(rtype):
            for value in values_at(first, path):
                key = _entry_reference(value, local)
                if key is not None:
                    inner.add(f"{REF_PREFIX}{path}|{key}")
        out.update(f"{param}.{key}" for key in inner)
    return out


def entry_patients(bundle: dict[str, Any]) -> set[str]:
    """Ids of the patients a document or message Bundle's entries are (in the compartment of)."""
    if not _whole_bundle(bundle):
        return set()
    resources, local = _entries(bundle)
    compartment = search_table().compartment
    found: set[str] = set()
    for _, res in resources:
        rtype = res.get("resourceType")
        if rtype == "Patient" and isinstance(res.get("id"), str):
            found.add(res["id"])
        for path in compartment.get(rtype, ()) if isinstance(rtype, str) else ():
            for value in values_at(res, path):
                key = _entry_reference(value, local)
                if key is not None and key.startswith("Patient/") and key.count("/") == 1:
                    found.add(key[len("Patient/") :])
    return found


_TOKEN, _REFERENCE, _DATE = range(3)


@dataclass(frozen=True, slots=True)
class _Read:
    """One indexed path of a type, from below its first step: a token parameter's, a Reference
    element's (``param`` is then the path) or a date parameter's (``leaf``: its leaf type)."""

    kind: int
    param: str
    rest: tuple[str, ...]
    leaf: str = ""


@cache
def _reads(rtype: str) -> dict[str, tuple[_Read, ...]]:
    """The type's indexed paths by their first step: ``search_rows`` and ``reference_values``
    follow only the paths whose first element the resource has (an EOB has 26 Reference paths,
    a few present)."""
    params = search_table().params(rtype)
    found: dict[str, list[_Read]] = {}

    def add(kind: int, param: str, path: str, leaf: str = "") -> None:
        first, *rest = path.split(".")
        found.setdefault(first, []).append(_Read(kind, param, tuple(rest), leaf))

    for param, paths in params.tokens.items():
        for path in paths:
            add(_TOKEN, param, path)
    for path in reference_paths(rtype):
        add(_REFERENCE, path, path)
    for param, leaves in params.dates.items():
        for path, leaf in leaves:
            add(_DATE, param, path, leaf)
    return {first: tuple(reads) for first, reads in found.items()}


def _below(value: Any, rest: tuple[str, ...]) -> list[Any]:
    """Every value at the steps ``rest`` below ``value`` (the value of a path's first step),
    arrays flattened at each step."""
    current = value if isinstance(value, list) else [value]
    for name in rest:
        nxt: list[Any] = []
        for item in current:
            if isinstance(item, dict) and name in item:
                found = item[name]
                if isinstance(found, list):
                    nxt.extend(found)
                else:
                    nxt.append(found)
        if not nxt:
            return nxt
        current = nxt
    return current


def _present(resource: dict[str, Any]) -> Iterator[tuple[_Read, list[Any]]]:
    """Each indexed path of the resource's type that it has, with the values at that path, in
    the order of its elements."""
    reads = _reads(resource.get("resourceType", ""))
    for first, value in resource.items():
        here = reads.get(first)
        if here is not None and value is not None:
            for read in here:
                yield read, _below(value, read.rest)


def reference_values(resource: dict[str, Any]) -> Iterator[Any]:
    """Every value at the type's Reference paths (``reference_paths``) that the resource has."""
    for read, values in _present(resource):
        if read.kind == _REFERENCE:
            yield from values


def search_rows(resource: dict[str, Any]) -> SearchRows:
    keys: set[str] = set()
    waiting: set[str] = set()
    dates: set[tuple[str, str, str]] = set()
    for read, values in _present(resource):
        if read.kind == _TOKEN:
            for item in values:
                keys.update(token_keys(read.param, item))
        elif read.kind == _REFERENCE:
            for item in values:
                ref = item.get("reference") if isinstance(item, dict) else None
                key = reference_key(ref) if isinstance(ref, str) else None
                if key is None:
                    continue
                keys.add(f"{REF_PREFIX}{read.param}|{key}")
                if "?" in key and (parsed := parse_conditional(key)) is not None:
                    waiting.add(waiting_key(*parsed))
        else:
            for item in values:
                if read.leaf == "Period":
                    span = period_range(item) if isinstance(item, dict) else None
                else:
                    span = date_range(item) if isinstance(item, str) else None
                if span is not None:
                    dates.add((read.param, span[0], span[1]))
    if waiting:
        keys |= waiting
        keys.add(CONDITIONAL_KEY)
    if resource.get("resourceType") == "Bundle":
        keys.update(f"{ENTRY_PATIENT_PREFIX}Patient/{pid}" for pid in entry_patients(resource))
        keys.update(chain_keys(resource))
    return sorted(keys), sorted(dates)
