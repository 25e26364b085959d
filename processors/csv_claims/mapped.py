"""CSV files described by a tenant's declarative mappings, and the last resort for CSV files
that nothing recognises (quarantined with a reason that says what was tried)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from dropzone.errors import FileRejected
from processors.base import Record, Sniffed
from processors.csv_claims.base import CsvProcessor
from processors.csv_claims.layouts import closest_layout
from processors.csv_claims.mapping_engine import MappingEngine
from processors.csv_claims.mapping_schema import CsvMapping, MappingError, load_mapping, mapping_path
from processors.csv_claims.reader import sniff_csv_header
from processors.registry import register

if TYPE_CHECKING:
    from dropzone.config import TenantSettings

_SHOWN = 5  # missing column names listed per candidate in a quarantine reason


def header_match(mapping: CsvMapping, header: list[str]) -> tuple[int | None, list[str]]:
    """(score, missing columns): score is the number of declared columns present, None when
    the mapping does not apply (a required column missing, or undeclared extra columns)."""
    rule = mapping.match
    names = [rule.key(n) for n in header]
    present = set(names)
    missing = [c for c in rule.columns if rule.key(c) not in present]
    if missing:
        return None, missing
    declared = {rule.key(c) for c in (*rule.columns, *rule.optional)}
    if len(names) != len(present) and any(names.count(n) > 1 for n in declared):
        return None, []
    if not rule.allow_extra and present - declared:
        return None, []
    return len(present & declared), []


def _summary(missing: list[str]) -> str:
    shown = ", ".join(missing[:_SHOWN])
    more = f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
    return f"missing {shown}{more}"


def unrecognised_reason(header: list[str], attempts: list[tuple[str, tuple[int | None, list[str]]]]) -> str:
    """Why no layout fits, naming only our own column names (a headerless file's first row is
    data, so the file's own names are never echoed)."""
    parts = []
    closest = closest_layout(header)
    if closest:
        layout, missing = closest
        detail = _summary(missing) if missing else "it has other columns too"
        parts.append(f"not a CMS DE-SynPUF layout (closest: {layout.title}, {detail})")
    else:
        parts.append("not a CMS DE-SynPUF layout")
    if not attempts:
        parts.append("the tenant declares no CSV mappings (`mappings:` in config/tenants/<tenant>.yaml)")
    else:
        tried = "; ".join(
            f"{name}: {_summary(missing) if missing else 'has undeclared or repeated columns'}"
            for name, (_, missing) in attempts
        )
        parts.append(f"none of the tenant's CSV mappings matches ({tried})")
    return "the CSV header is not recognised: " + " and ".join(parts)


@register
class MappedCsvProcessor(CsvProcessor):
    """Rows -> resources as a tenant's YAML mapping says (``config/mappings/<name>.yaml``)."""

    name = "csv-mapping"
    priority = 20

    @classmethod
    def accepts(cls, sniffed: Sniffed, tenant: TenantSettings) -> bool:
        return sniffed.kind == "csv" and bool(tenant.mappings) and sniff_csv_header(sniffed.head) is not None

    def _choose(self, header: list[str]) -> CsvMapping:
        attempts: list[tuple[str, tuple[int | None, list[str]]]] = []
        best: tuple[int, CsvMapping] | None = None
        for name in self.context.tenant.mappings:
            try:
                mapping = load_mapping(mapping_path(self.context.settings.config_dir, name))
            except MappingError as err:
                raise FileRejected("mapping_error", str(err)) from None
            score, missing = header_match(mapping, header)
            attempts.append((name, (score, missing)))
            # Ties go to the first mapping the tenant lists.
            if score is not None and (best is None or score > best[0]):
                best = (score, mapping)
        if best is None:
            raise FileRejected("unknown_csv_layout", unrecognised_reason(header, attempts))
        return best[1]

    def records(self) -> Iterator[Record]:
        self._mapping_name: str | None = None
        reader = self.open_reader()
        try:
            assert reader.header is not None
            mapping = self._choose(reader.header)
            self._mapping_name = mapping.name
            if mapping.delimiter not in ("auto", self.delimiter):
                raise FileRejected(
                    "wrong_delimiter",
                    f"mapping '{mapping.name}' expects {mapping.delimiter!r}-separated values",
                )
            engine = MappingEngine(mapping, reader.header)
            width = len(reader.header)
            for row in reader:
                record, readable = self.row_record(row, width)
                if readable:
                    resources, issues = engine.apply(row.fields)
                    record.issues.extend(issues)
                    if not issues:
                        record.resources = resources
                yield record
        finally:
            reader.close()

    def report_details(self) -> dict[str, Any]:
        name = getattr(self, "_mapping_name", None)
        return {"mapping": name} if name else {}


@register
class UnrecognisedCsvProcessor(CsvProcessor):
    """Accepts any CSV nobody else does, to quarantine it with a reason that helps the sender."""

    name = "csv-unrecognised"
    priority = -100

    @classmethod
    def accepts(cls, sniffed: Sniffed, tenant: TenantSettings) -> bool:
        return sniffed.kind == "csv"

    def records(self) -> Iterator[Record]:
        header = sniff_csv_header(self.context.sniffed.head)
        if header is None:
            raise FileRejected(
                "unreadable_header",
                "the CSV header row could not be read (not UTF-8, malformed quoting, or longer than 64 KiB)",
            )
        raise FileRejected("unknown_csv_layout", unrecognised_reason(header, []))
        yield  # pragma: no cover  (makes this a generator)
