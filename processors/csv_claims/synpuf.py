"""Processors for the five CMS DE-SynPUF layouts (one registered class per layout).

A ``Record`` is one CSV row, except that the rows of one claim (SEGMENT 1 and 2, or a repeated
claim id) are judged together: such a record's ``index`` is its first row and the other rows
are remembered so ``write_rejects`` copies them all. Rows are read, checked and grouped here;
a claim's EOB is built in the pipeline's workers from its CSV fields (``claims``). See README
"Claims CSV and mappings".
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dropzone.errors import FileRejected
from dropzone.log import event
from processors.base import Issue, ProcessorContext, Record, Sniffed
from processors.csv_claims.base import CsvProcessor
from processors.csv_claims.beneficiary import map_beneficiary, merge_patient, parse_year, year_from_name
from processors.csv_claims.claims import build_eob, claim_facts, claim_payload, map_claim_payload
from processors.csv_claims.eob import ClaimFacts, ClaimRow
from processors.csv_claims.fhir import DEFAULT_LOCAL, payer_organization
from processors.csv_claims.grouping import repeated_candidates
from processors.csv_claims.layouts import (
    AMOUNTS,
    DATES,
    INTEGERS,
    LAYOUTS,
    REQUIRED,
    YEAR_COLUMN,
    Layout,
    detect_layout,
    normalise,
)
from processors.csv_claims.reader import CsvReader, CsvRow, sniff_csv_header
from processors.csv_claims.values import RowValues
from processors.registry import register

if TYPE_CHECKING:
    from dropzone.config import TenantSettings

_log = logging.getLogger("dropzone.processors.synpuf")
LOOKUP_BATCH = 256  # records whose references are checked with one store query
PATIENT_CACHE = 20_000  # Patients merged in this file, for multi-year files (YEAR column)


class SynpufOptions(BaseModel):
    """Per-tenant options, from ``synpuf:`` in ``config/tenants/<tenant>.yaml``."""

    model_config = ConfigDict(extra="forbid")

    local_namespace: str = Field(
        default=DEFAULT_LOCAL,
        pattern=r"^(https?|urn):\S+$",
        description="base URL for the code systems and extensions neither BFD nor CARIN define",
    )


@dataclass(slots=True)
class _Held:
    number: int
    line: int
    values: RowValues
    size: int  # of the row's text, for the pipeline's batch limit


@dataclass(slots=True)
class _Claim:
    """A claim whose rows passed their checks, with its facts; its EOB is built later."""

    claim_id: str
    rows: list[ClaimRow]
    facts: ClaimFacts
    size: int


def check_row(values: RowValues, layout: Layout) -> None:
    """Type-check every typed column once, so each problem is reported with its column."""
    for column in REQUIRED[layout.key]:
        values.required(column)
    for column in DATES[layout.key]:
        values.date(column)
    for column in AMOUNTS[layout.key]:
        values.amount(column)
    for column, low, high in INTEGERS[layout.key]:
        values.integer(column, low, high)


class SynpufProcessor(CsvProcessor):
    """Shared reading, grouping and reference checks; subclasses name a layout."""

    layout: ClassVar[Layout]
    priority = 30
    # Claims are built into EOBs in the pipeline's workers (beneficiaries never are: merging a
    # Patient across years needs the store).
    raw_parser = staticmethod(map_claim_payload)

    @classmethod
    def accepts(cls, sniffed: Sniffed, tenant: TenantSettings) -> bool:
        if sniffed.kind != "csv":
            return False
        header = sniff_csv_header(sniffed.head)
        layout = detect_layout(header) if header else None
        return layout is not None and layout.key == cls.layout.key

    def __init__(self, context: ProcessorContext) -> None:
        super().__init__(context)
        self.stats: Counter[str] = Counter()
        try:
            options = SynpufOptions.model_validate(getattr(context.tenant, "synpuf", None) or {})
        except ValidationError as err:
            fields = ", ".join(".".join(map(str, e["loc"])) for e in err.errors(include_input=False))
            raise FileRejected("config_error", f"tenant option 'synpuf' is invalid ({fields})") from err
        self.local = options.local_namespace.rstrip("/")
        self._payer_sent = False
        self._index: dict[str, int] = {}

    def _reader(self) -> CsvReader:
        reader = self.open_reader()
        assert reader.header is not None
        if detect_layout(reader.header) is not self.layout:
            reader.close()
            raise FileRejected(
                "unknown_csv_layout", f"the header is not the SynPUF {self.layout.title} layout"
            )
        return reader

    def _start(self, row: CsvRow, width: int, index: dict[str, int]) -> tuple[Record, RowValues | None]:
        record, readable = self.row_record(row, width)
        if not readable:
            return record, None
        values = RowValues(index, row.fields)
        check_row(values, self.layout)
        return record, values

    def records(self) -> Iterator[Record]:
        # The pipeline reads an all-or-nothing file twice (check, then store): start afresh.
        self._members.clear()
        self.stats.clear()
        self._payer_sent = False
        reader = self._reader()
        try:
            assert reader.header is not None
            index = {name: i for i, name in enumerate(normalise(reader.header))}
            self._index = index
            if self.layout.key == "beneficiary":
                yield from self._beneficiary_records(reader, index)
            else:
                yield from self._claim_records(reader, index)
        finally:
            reader.close()
        event(_log, "synpuf.file_mapped", processor=self.name, **dict(sorted(self.stats.items())))

    def report_details(self) -> dict[str, Any]:
        """Counts for the file's report (no values): unresolved references and data notes."""
        return {key: value for key, value in sorted(self.stats.items()) if value}

    def _with_payer(self, record: Record) -> None:
        # The payer every Coverage and EOB references; written once per file (unchanged after).
        if not self._payer_sent and not record.issues:
            record.resources.append(payer_organization())
            self._payer_sent = True

    # -- beneficiaries ----------------------------------------------------------------------

    def _beneficiary_records(self, reader: CsvReader, index: dict[str, int]) -> Iterator[Record]:
        file_year = None
        if YEAR_COLUMN not in index:
            file_year = year_from_name(self.context.name)
            if file_year is None:
                raise FileRejected(
                    "year_unknown",
                    "a Beneficiary Summary file has no year in its rows: name the file with its year "
                    "(as CMS does, e.g. DE1_0_2009_Beneficiary_Summary_File_Sample_1.csv) "
                    "or add a YEAR column",
                )
        cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        pending: list[tuple[Record, Any]] = []
        width = len(index)
        for row in reader:
            record, values = self._start(row, width, index)
            result = None
            if values is not None:
                year = file_year
                if year is None:
                    year = parse_year(values.text(YEAR_COLUMN))
                    if year is None:
                        values.problem("invalid_year", YEAR_COLUMN, "YEAR is not a four-digit year")
                if not values.issues and year is not None:
                    result = map_beneficiary(values, year, self.local)
                record.issues.extend(values.issues)
            pending.append((record, result))
            if len(pending) >= LOOKUP_BATCH:
                yield from self._flush_beneficiaries(pending, cache)
                pending = []
        yield from self._flush_beneficiaries(pending, cache)

    def _flush_beneficiaries(
        self, pending: list[tuple[Record, Any]], cache: OrderedDict[str, dict[str, Any]]
    ) -> Iterator[Record]:
        store, tenant = self.context.resources, self.context.tenant.name
        wanted = sorted({r.bene_id for _, r in pending if r is not None and r.bene_id not in cache})
        stored: dict[str, dict[str, Any]] = {}
        if wanted:
            for bene in store.existing(tenant, "Patient", wanted):
                previous = store.get(tenant, "Patient", bene)
                if previous is not None:
                    stored[bene] = previous
        for record, result in pending:
            if result is not None:
                old = cache.get(result.bene_id) or stored.get(result.bene_id)
                patient = merge_patient(result.patient, old)
                if old is not None:
                    self.stats["patients_merged_with_other_years"] += 1
                cache[result.bene_id] = patient
                cache.move_to_end(result.bene_id)
                if len(cache) > PATIENT_CACHE:
                    cache.popitem(last=False)
                record.resources = [patient, *result.others]
                self._with_payer(record)
            yield record

    # -- claims -----------------------------------------------------------------------------

    def _claim_ids(self, claim_column: str, width: int, index: dict[str, int]) -> Iterator[str]:
        reader = self._reader()
        position = index[claim_column]
        try:
            for row in reader:
                if not row.problem and len(row.fields) == width:
                    yield row.fields[position].strip()
        finally:
            reader.close()

    def _claim_records(self, reader: CsvReader, index: dict[str, int]) -> Iterator[Record]:
        claim_column = self.layout.claim_column
        assert claim_column is not None
        width = len(index)
        candidates = repeated_candidates(self._claim_ids(claim_column, width, index))
        held: dict[str, list[_Held]] = {}
        pending: list[tuple[Record, _Claim | None]] = []
        for row in reader:
            record, values = self._start(row, width, index)
            claim = None
            if values is not None:
                one = _Held(row.number, row.line, values, len(row.raw or ""))
                claim_id = values.text(claim_column)
                if claim_id is not None and claim_id in candidates:
                    held.setdefault(claim_id, []).append(one)
                    continue
                if not values.issues:
                    claim = self._claim([one])
                record.issues.extend(values.issues)
            pending.append((record, claim))
            if len(pending) >= LOOKUP_BATCH:
                yield from self._flush_claims(pending)
                pending = []
        for rows in held.values():
            pending.extend(self._held_group(rows))
            if len(pending) >= LOOKUP_BATCH:
                yield from self._flush_claims(pending)
                pending = []
        yield from self._flush_claims(pending)

    def _claim(self, rows: list[_Held]) -> _Claim | None:
        """The claim of rows without problems; None (the problem in the values) when it
        cannot be dated."""
        first = rows[0].values
        bene = first.text("DESYNPUF_ID")
        claim_id = first.text(self.layout.claim_column or "")
        assert bene is not None and claim_id is not None
        if self.layout.segmented:
            claim_rows = [ClaimRow(r.values, r.values.integer("SEGMENT") or 1) for r in rows]
        else:
            claim_rows = [ClaimRow(rows[0].values, 1)]
        facts = claim_facts(self.layout, bene, claim_rows)
        if facts is None:
            return None
        return _Claim(claim_id, claim_rows, facts, sum(r.size for r in rows))

    def _held_group(self, rows: list[_Held]) -> list[tuple[Record, _Claim | None]]:
        """Rows sharing one claim id: one claim (its segments), and rejects for the rest."""
        column = self.layout.claim_column
        first = rows[0]
        bene = first.values.text("DESYNPUF_ID")
        out: list[tuple[Record, _Claim | None]] = []
        group: list[_Held] = []
        segments: dict[int | None, _Held] = {}
        for row in rows:
            reason = None
            if row.values.text("DESYNPUF_ID") != bene:
                reason = f"{column} is also used for another beneficiary in row {first.number}"
            elif self.layout.segmented:
                segment = row.values.integer("SEGMENT") if not row.values.issues else None
                if segment is not None and segment in segments:
                    reason = f"repeats SEGMENT {segment} of the claim in row {segments[segment].number}"
                elif segment is not None:
                    segments[segment] = row
            elif group:
                reason = f"repeats the {column} of row {first.number}"
            if reason:
                record = Record(index=row.number, location=_location(row))
                record.issues = [Issue("duplicate_claim_id", reason, column), *row.values.issues]
                out.append((record, None))
            else:
                group.append(row)
        if not group:
            return out
        numbers = [r.number for r in group]
        record = Record(index=numbers[0], location=", ".join(_location(r) for r in group))
        if len(group) > 1:
            self._members[numbers[0]] = numbers
        issues = [
            Issue(i.code, f"{_location(r)}: {i.message}" if len(group) > 1 else i.message, i.path)
            for r in group
            for i in r.values.issues
        ]
        claim = None
        if not issues:
            claim = self._claim(group)
            issues = [i for r in group for i in r.values.issues]
        record.issues = issues
        out.insert(0, (record, claim))
        return out

    def _flush_claims(self, pending: list[tuple[Record, _Claim | None]]) -> Iterator[Record]:
        store, tenant = self.context.resources, self.context.tenant.name
        facts = [c.facts for _, c in pending if c is not None]
        patients = store.existing(tenant, "Patient", sorted({f.bene_id for f in facts})) if facts else {}
        coverages = (
            store.existing(tenant, "Coverage", sorted({f.coverage_id for f in facts})) if facts else {}
        )
        for record, claim in pending:
            if claim is not None:
                if not self._payer_sent or self.raw_parser is None:
                    self._build_here(record, claim)
                else:
                    record.raw = claim_payload(
                        self.layout, self.local, self._index, claim.claim_id, claim.facts, claim.rows
                    )
                    record.raw_size = claim.size
                if not record.issues:
                    self._count(record, claim.facts, patients, coverages)
            yield record

    def _build_here(self, record: Record, claim: _Claim) -> None:
        """The file's first claim is built in this process, to carry the payer Organization
        (and every claim of a subclass that sets ``raw_parser = None``)."""
        eob = build_eob(self.layout, claim.claim_id, claim.facts, claim.rows, self.local)
        if eob is None:
            record.issues.extend(i for r in claim.rows for i in r.values.issues)
            return
        record.resources = [eob]
        self._with_payer(record)

    def _count(
        self, record: Record, facts: ClaimFacts, patients: dict[str, Any], coverages: dict[str, Any]
    ) -> None:
        if facts.bene_id not in patients:
            self.stats["unresolved_patient_references"] += 1
        if facts.coverage_id not in coverages:
            self.stats["unresolved_coverage_references"] += 1
        for note in facts.notes:
            self.stats[note] += 1
            record.warnings.append(Issue(note, _NOTES[note]))


_NOTES = {
    "orphan_segment": "SEGMENT 2 without its SEGMENT 1 in this file: loaded, dated by the admission period",
    "empty_from_date": "CLM_FROM_DT is empty: billablePeriod has only its end",
}


def _location(row: _Held) -> str:
    return f"row {row.number} (line {row.line})"


def _processor(layout: Layout) -> type[SynpufProcessor]:
    cls = type(
        f"Synpuf{layout.key.title()}Processor",
        (SynpufProcessor,),
        {"name": f"synpuf-{layout.key}", "layout": layout, "__doc__": f"CMS DE-SynPUF {layout.title}."},
    )
    return register(cls)


PROCESSORS = {key: _processor(layout) for key, layout in LAYOUTS.items()}
