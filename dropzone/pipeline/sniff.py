"""Decide what a file is from its content (extension second), before any record is stored.

Checks, in order: empty, size limit, gzip (integrity pass to the end: a truncated archive is
quarantined up front), encoding (UTF-8 with or without BOM; UTF-16/32 and binary are refused),
then the shape: NDJSON (one JSON object per line), a JSON document (one resource or a Bundle;
the whole document is syntax-checked in a streaming pass so a truncated Bundle never loads
half), or delimited text (CSV, for the claims processors).

The name counts only where content is ambiguous: a ``.ndjson`` file whose first line is broken
is still NDJSON when a later line is a FHIR resource, so one bad line rejects one record.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any

import ijson

from dropzone.config import PipelineSettings
from dropzone.errors import FileRejected
from dropzone.pipeline.streams import check_gzip, is_gzip, open_payload
from processors import fhir_json
from processors.base import Sniffed
from processors.lines import iter_lines

HEAD_BYTES = 64 * 1024
_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
_WHITESPACE = b" \t\r\n"
# FHIR resources nest a few tens of levels at most (extensions in extensions); far deeper is hostile.
MAX_DEPTH = 128


# Codes that already describe the gzip stream itself: no need to decompress again for them.
_STREAM_CODES = frozenset({"too_large", "corrupt_gzip"})
# Document-parse failures a broken first NDJSON line causes (the rest of the file is never read).
_FIRST_LINE_CODES = frozenset({"invalid_json", "too_deep"})
_NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz")
# How many lines after a broken first one may be read to find a resource (each bounded in size).
PROBE_LINES = 100


def sniff(path: Path, limits: PipelineSettings, *, name: str | None = None) -> Sniffed:
    """``name`` is the file's name as dropped (default: the local path's, which for remote zones
    may be a temporary name)."""
    size = path.stat().st_size
    if size == 0:
        raise FileRejected("empty_file", "the file is empty")
    if size > limits.max_file_bytes:
        raise FileRejected("too_large", f"the file is larger than the limit of {limits.max_file_bytes} bytes")
    gzipped = is_gzip(path)
    with path.open("rb") as raw:
        if not gzipped and raw.read(4).startswith(_UTF16_32_BOMS):
            raise FileRejected("unsupported_encoding", "UTF-16/UTF-32 text is not accepted; send UTF-8")
    with open_payload(path, gzipped, limits.max_decompressed_bytes) as stream:
        head = stream.read(HEAD_BYTES)
    try:
        return _sniff_content(path, gzipped, head, limits, _named_ndjson(name or path.name))
    except FileRejected as err:
        if gzipped and err.code not in _STREAM_CODES:
            # The head alone decided (NULs, blank, prose): a bomb must still say too_large, and a
            # truncated archive corrupt_gzip, whatever its first 64 KiB look like.
            check_gzip(path, limits.max_decompressed_bytes)
        raise


def _sniff_content(
    path: Path, gzipped: bool, head: bytes, limits: PipelineSettings, ndjson_name: bool
) -> Sniffed:
    if head.startswith(_UTF16_32_BOMS):
        raise FileRejected("unsupported_encoding", "UTF-16/UTF-32 text is not accepted; send UTF-8")
    if not head.strip(_WHITESPACE):
        raise FileRejected("empty_file", "the file has no content")
    if b"\x00" in head:
        raise FileRejected(
            "unsupported_encoding", "the file contains NUL bytes: binary data or UTF-16/32 text"
        )
    first = head.lstrip(_WHITESPACE)[:1]
    if first not in (b"{", b"[") and ndjson_name:
        # A first line cut at its start (or garbage) is one bad record of an NDJSON file.
        found = _ndjson_past_first_line(path, gzipped, head, limits)
        if found is not None:
            return found
    # NDJSON: one badly encoded line is that record's problem, so only the first line decides here.
    _require_utf8(head.split(b"\n", 1)[0] if first == b"{" else head)
    if first == b"{":
        return _sniff_json(path, gzipped, head, limits, ndjson_name)
    if first == b"[":
        raise FileRejected("not_fhir", "a JSON array is not a FHIR resource, Bundle or NDJSON")
    if _looks_delimited(head):
        return _checked(Sniffed("csv", gzipped, head), path, limits)
    raise FileRejected("unknown_format", "not FHIR JSON, NDJSON or delimited text")


def _checked(sniffed: Sniffed, path: Path, limits: PipelineSettings) -> Sniffed:
    """Line-oriented files load record by record: a truncated gzip must be caught before the
    first record is stored, so decompress once to the end first."""
    if sniffed.gzipped:
        check_gzip(path, limits.max_decompressed_bytes)
    return sniffed


def _require_utf8(head: bytes) -> None:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        # A multi-byte character cut by the head limit is fine; anything earlier is not UTF-8.
        if err.start < len(head) - 3:
            raise FileRejected(
                "unsupported_encoding", f"the file is not valid UTF-8 (byte offset {err.start})"
            ) from None


def _looks_delimited(head: bytes) -> bool:
    first_line = head.split(b"\n", 1)[0]
    return any(first_line.count(sep) >= 1 for sep in (b",", b"\t", b"|", b";"))


def _named_ndjson(name: str) -> bool:
    return name.lower().endswith(_NDJSON_SUFFIXES)


def _ndjson_past_first_line(
    path: Path, gzipped: bool, head: bytes, limits: PipelineSettings
) -> Sniffed | None:
    """NDJSON when one of the next ``PROBE_LINES`` lines is a FHIR resource: enough evidence,
    with the name, that the first line is a bad record rather than the file being something else."""
    with open_payload(path, gzipped, limits.max_decompressed_bytes) as stream:
        lines = iter_lines(stream, limits.max_record_bytes)
        next(lines, None)
        for _lineno, line in islice(lines, PROBE_LINES):
            if isinstance(line, bytes) and isinstance(_json_object(line).get("resourceType"), str):
                return _checked(Sniffed("ndjson", gzipped, head, {"first_resource_type": None}), path, limits)
    return None


def _json_object(line: bytes) -> dict[str, Any]:
    """The line parsed when it is a JSON object, else an empty dict."""
    try:
        parsed = fhir_json.loads(line)
    except fhir_json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _sniff_json(
    path: Path, gzipped: bool, head: bytes, limits: PipelineSettings, ndjson_name: bool
) -> Sniffed:
    """NDJSON when the first line is a whole JSON object and more content follows it."""
    with open_payload(path, gzipped, limits.max_decompressed_bytes) as stream:
        first_line = stream.readline(limits.max_record_bytes + 1)
        more = bool(stream.read(4096).strip(_WHITESPACE))
    if more and first_line.endswith(b"\n"):
        try:
            parsed = fhir_json.loads(first_line)
        except fhir_json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            sniffed = Sniffed("ndjson", gzipped, head, {"first_resource_type": parsed.get("resourceType")})
            return _checked(sniffed, path, limits)
    # A JSON document is read to the end by _sniff_document, which also checks a gzip stream.
    try:
        return _sniff_document(path, gzipped, head, limits)
    except FileRejected as err:
        # Valid documents keep their routing; only a broken one named .ndjson gets a second look.
        if err.code in _FIRST_LINE_CODES and ndjson_name:
            found = _ndjson_past_first_line(path, gzipped, head, limits)
            if found is not None:
                return found
        raise


def _sniff_document(path: Path, gzipped: bool, head: bytes, limits: PipelineSettings) -> Sniffed:
    """Stream the whole document once: syntax check, nesting limit, and the top-level facts we
    route on. ``basic_parse`` has no per-event path strings: ijson's ``parse`` builds one per
    event, which a hostile 100k-deep document turns into gigabytes."""
    details: dict[str, Any] = {"entries": 0}
    depth = 0
    key: str | None = None
    in_entries = False
    with open_payload(path, gzipped, limits.max_decompressed_bytes) as stream:
        try:
            # use_float=False: with floats, yajl refuses integers beyond 64 bits ("integer overflow").
            for event, value in ijson.basic_parse(stream, use_float=False):
                if event in ("start_map", "start_array"):
                    depth += 1
                    if depth > MAX_DEPTH:
                        raise FileRejected("too_deep", f"the JSON nests deeper than {MAX_DEPTH} levels")
                    if depth == 2 and event == "start_array" and key == "entry":
                        in_entries = True
                    elif depth == 3 and event == "start_map" and in_entries:
                        details["entries"] += 1
                elif event in ("end_map", "end_array"):
                    if depth == 2 and event == "end_array":
                        in_entries = False
                    depth -= 1
                elif event == "map_key":
                    if depth == 1:
                        key = value
                elif depth == 1 and event == "string" and key in ("resourceType", "type"):
                    details[key] = value
        except ijson.IncompleteJSONError as err:
            raise FileRejected(
                "invalid_json", f"the JSON document is truncated or malformed ({_where(err)})"
            ) from None
        except ijson.JSONError as err:
            raise FileRejected("invalid_json", f"the JSON document is malformed ({_where(err)})") from None
        except UnicodeDecodeError as err:
            raise FileRejected(
                "unsupported_encoding", f"the file is not valid UTF-8 ({err.reason})"
            ) from None
    rtype = details.get("resourceType")
    if not isinstance(rtype, str):
        raise FileRejected("not_fhir", "the JSON object has no resourceType: not a FHIR resource")
    if rtype == "Bundle":
        return Sniffed("json-bundle", gzipped, head, details)
    return Sniffed("json-resource", gzipped, head, details)


def _where(err: Exception) -> str:
    """ijson's messages are about syntax positions, never content; keep only the first line."""
    text = str(err).splitlines()[0] if str(err) else err.__class__.__name__
    return text[:200]
