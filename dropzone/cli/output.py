"""Where the CLI writes: stdout for results (tables, ``--json``), stderr for logs and messages.

Text mode: logs go through the same rich console as the progress display, so a live bar and a
log line never share a line (rich prints them above the live region). JSON mode (``--log-format
json``): stderr carries only JSON lines, so CLI messages become log events and no rich output
(no bar, no colour) reaches it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from dropzone import log

_log = logging.getLogger("dropzone.cli")

# Rich assumes 80 columns when the output is not a terminal (CI logs, `| tee`, cron mail) and
# folds every cell to fit; there, lines may be as wide as their content unless COLUMNS says so.
NOT_A_TERMINAL_WIDTH = 10_000


def make_console(to_stderr: bool = False) -> Console:
    console = Console(stderr=to_stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=to_stderr, width=NOT_A_TERMINAL_WIDTH)
    return console


stdout = make_console()
stderr = make_console(to_stderr=True)


class ConsoleLogHandler(logging.Handler):
    """Log records as plain lines through a rich console: while a progress display is live they
    land above it. Never hard-wrapped and never read as markup (paths may hold brackets)."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            self.console.print(Text(line), soft_wrap=True, highlight=False)
        except Exception:
            self.handleError(record)


class _Mode:
    """Whether stderr is JSON-only; set once the command's settings are known."""

    json_logs = False


mode = _Mode()


def configure_logging(fmt: str, level: str) -> None:
    mode.json_logs = fmt == "json"
    handler = None if mode.json_logs else ConsoleLogHandler(stderr)
    log.configure(fmt, level, handler=handler)


def rich_stderr_allowed() -> bool:
    """A live display or coloured message may go to stderr (a terminal, text logs)."""
    return not mode.json_logs and stderr.is_terminal


def say(message: str, event: str = "cli.message", **fields: Any) -> None:
    """A message for the operator on stderr (a JSON event in JSON mode)."""
    if mode.json_logs:
        log.event(_log, event, message=message, **fields)
        return
    stderr.print(escape(message), soft_wrap=True, highlight=False)


def say_error(message: str, event: str = "cli.error", **fields: Any) -> None:
    """Never hard-wrapped (a suggested command must stay on one line to copy it) and never read
    as markup (paths and names may hold brackets)."""
    if mode.json_logs:
        log.event(_log, event, logging.ERROR, message=message, **fields)
        return
    stderr.print(f"[red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)


def print_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(payload).decode() + "\n")
    sys.stdout.flush()


def print_line(text: str) -> None:
    """One plain line on stdout, whole (no wrap, no markup)."""
    stdout.print(Text(text), soft_wrap=True, highlight=False)
