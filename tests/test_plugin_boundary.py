"""Processors are plug-ins: they may use the contract (processors.base, processors.lines), the
typed errors, the validator, structured logging and (for type hints) the settings, never the
pipeline's, store's or sources' internals, so a processor from another package needs only these."""

from __future__ import annotations

import ast
from pathlib import Path

PROCESSORS = Path(__file__).resolve().parents[1] / "processors"
ALLOWED = {"dropzone.errors", "dropzone.validation", "dropzone.log", "dropzone.config"}


def _dropzone_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "dropzone":
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "dropzone")
    return found


def test_processors_depend_only_on_the_plugin_contract() -> None:
    files = sorted(PROCESSORS.rglob("*.py"))
    assert len(files) > 5
    used = {p.relative_to(PROCESSORS).as_posix(): _dropzone_imports(p) for p in files}
    outside = {name: sorted(mods - ALLOWED) for name, mods in used.items() if mods - ALLOWED}
    # base.py names the store interface only as the type of ProcessorContext.resources (lookups).
    assert outside == {"base.py": ["dropzone.store.base"]}
    assert any("dropzone.errors" in mods for mods in used.values())
