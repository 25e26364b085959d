"""What an operator sees on a real terminal (a pseudo-terminal rendered by pyte at 80 columns):
the progress display of an ingest of a large file, with logs printed around it, never inside."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pyte
import pytest
from rich.filesize import decimal

from conftest import BULK, write_replicas

DROPZONE = Path(sys.executable).parent / "dropzone"
COLUMNS, LINES = 80, 24
_ESC = re.compile(rb"(?=\x1b)")


def _big_ndjson(path: Path, copies: int) -> int:
    return write_replicas(BULK / "Patient.000.ndjson", path, copies)


def _run_on_a_terminal(
    args: list[str], env: dict[str, str], timeout: float = 240
) -> tuple[list[str], str, int]:
    """Run with stderr on a pty (80x24) and stdout on a pipe; every screen state stderr passes
    through, as pyte renders it, and stdout."""
    main_fd, child_fd = pty.openpty()
    os.set_blocking(main_fd, False)
    import fcntl
    import struct
    import termios

    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=child_fd, stdin=subprocess.DEVNULL, env=env)
    os.close(child_fd)
    screen = pyte.Screen(COLUMNS, LINES)
    stream = pyte.ByteStream(screen)
    states: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main_fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(main_fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            # One piece per escape sequence, so no intermediate frame is skipped.
            for piece in _ESC.split(chunk):
                stream.feed(piece)
                states.extend(line.rstrip() for line in screen.display if line.strip())
        elif proc.poll() is not None:
            break
    out = proc.stdout.read().decode() if proc.stdout else ""
    proc.wait(timeout=30)
    os.close(main_fd)
    return states, out, proc.returncode


@pytest.mark.slow
def test_progress_of_a_large_file_at_80_columns(tmp_path: Path) -> None:
    big = tmp_path / "Patient.big.ndjson"
    records = _big_ndjson(big, copies=300)
    size = big.stat().st_size
    # The width comes from the terminal (TIOCSWINSZ), not COLUMNS, which would apply to stdout too.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DROPZONE_", "MONGODB_", "COLUMNS"))}
    env |= {
        "TERM": "xterm",
        "DROPZONE_PIPELINE__VALIDATION_WORKERS": "0",
        "DROPZONE_PIPELINE__QUIET_SECONDS": "0",
    }
    args = [str(DROPZONE), "ingest", str(big), "--tenant", "acme", "--zone", str(tmp_path / "zone")]
    lines, out, code = _run_on_a_terminal(args, env)
    assert code == 0, out
    bar_lines = [line for line in lines if "━" in line]
    assert bar_lines, "no progress display was shown"
    for line in bar_lines:
        assert "INFO" not in line and "file." not in line, line  # no log text inside a bar line
        assert len(line) <= COLUMNS
    log_lines = [line for line in lines if " INFO " in line]
    assert any("file.finished" in line for line in log_lines)  # the logs were shown, on their own lines
    # The overall row ends at the file's whole size, in bytes ("25.0/25.0 MB"), with 1/1 files.
    number, unit = decimal(size).split()
    overall = [line for line in bar_lines if line.startswith("all:")]
    assert any(f"{number}/{number} {unit}" in line and "1/1 files" in line for line in overall), overall[-3:]
    assert any("/s" in line for line in bar_lines)  # throughput
    assert any("rec/s" in line for line in bar_lines)  # records per second of the file
    assert any(str(records) in line and "Patient.big.ndjson" in line for line in out.splitlines())
