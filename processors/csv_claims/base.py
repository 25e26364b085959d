"""What every CSV processor shares: opening the payload as CSV, row records for unreadable or
ragged rows, and writing rejected rows back with the header, byte for byte."""

from __future__ import annotations

from typing import BinaryIO

from dropzone.errors import FileRejected
from processors.base import Issue, Processor, ProcessorContext, Record
from processors.csv_claims.reader import CsvReader, CsvRow, sniff_delimiter


class CsvProcessor(Processor):
    rejects_extension = "csv"

    def __init__(self, context: ProcessorContext) -> None:
        super().__init__(context)
        self.delimiter = sniff_delimiter(context.sniffed.head)
        self._max_row = context.settings.pipeline.max_record_bytes
        # Records built from several rows: first row number -> every row number.
        self._members: dict[int, list[int]] = {}

    def open_reader(self) -> CsvReader:
        reader = CsvReader(self.context.open_payload(), self.delimiter, self._max_row)
        if reader.header is None:
            reader.close()
            raise FileRejected("unreadable_header", reader.header_problem or "the file has no header row")
        return reader

    @staticmethod
    def row_record(row: CsvRow, width: int) -> tuple[Record, bool]:
        """A record for the row; False when the row cannot be mapped at all (unreadable, not
        UTF-8, or a field count different from the header's)."""
        record = Record(index=row.number, location=row.location)
        if row.problem:
            record.issues.append(Issue(row.problem_code or "malformed_csv", row.problem))
            return record, False
        if len(row.fields) != width:
            record.issues.append(Issue("field_count", f"expected {width} fields, found {len(row.fields)}"))
            return record, False
        return record, True

    def write_rejects(self, indexes: set[int], out: BinaryIO) -> None:
        """The header, then each rejected row's original text (all rows of a multi-row record).
        Rows longer than the row limit were never held in memory and are not copied."""
        wanted = set(indexes)
        for index in indexes:
            wanted.update(self._members.get(index, ()))
        reader = self.open_reader()
        try:
            ending = reader.line_ending.encode()
            header = reader.header_raw.encode("utf-8", "surrogateescape")
            out.write(header if header.endswith((b"\n", b"\r")) else header + ending)
            for row in reader:
                if row.number in wanted and row.raw:
                    data = row.raw_bytes()
                    out.write(data if data.endswith((b"\n", b"\r")) else data + ending)
        finally:
            reader.close()
