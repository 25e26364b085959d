"""Structured logging: ``text`` for people, ``json`` (one object per line) for log shippers.

Call sites pass fields with ``event(logger, "file.finished", outcome=..., counts=...)``. Fields
are ids, counts, paths and codes; never resource content (no PHI in logs).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

_FIELDS = "dz_fields"


def event(
    logger: logging.Logger, name: str, level: int = logging.INFO, *, exc_info: bool = False, **fields: Any
) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, name, exc_info=exc_info, extra={_FIELDS: fields})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        payload.update(getattr(record, _FIELDS, {}) or {})
        if record.exc_info and record.exc_info[0] is not None:
            payload["error_type"] = record.exc_info[0].__name__
        return orjson.dumps(payload, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, _FIELDS, {}) or {}
        tail = " ".join(f"{k}={_short(v)}" for k, v in fields.items())
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname:<7} {record.getMessage()}" + (f"  {tail}" if tail else "")
        if record.exc_info and record.exc_info[0] is not None:
            line += f"  error_type={record.exc_info[0].__name__}"
        return line


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    return str(value)


def configure(fmt: str = "text", level: str = "INFO", handler: logging.Handler | None = None) -> None:
    """Log to stderr in ``fmt``; ``handler`` replaces the plain stream handler (the CLI passes one
    that writes through its rich console, so logs never land inside a progress bar)."""
    root = logging.getLogger("dropzone")
    root.handlers.clear()
    handler = handler or logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    for noisy in ("watchdog", "botocore", "boto3", "paramiko", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
