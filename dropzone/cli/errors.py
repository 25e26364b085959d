"""Exit codes and the one place that turns an error into a message and an exit code."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from dropzone import log
from dropzone.cli.output import say_error
from dropzone.errors import DropzoneError, UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SOME_REJECTED = 0, 1, 2, 3
_log = logging.getLogger("dropzone.cli")


@contextlib.contextmanager
def handle_errors() -> Iterator[None]:
    try:
        yield
    except UsageError as err:
        say_error(str(err))
        sys.exit(EXIT_USAGE)
    except DropzoneError as err:
        say_error(f"{type(err).__name__}: {err}", error_type=type(err).__name__)
        sys.exit(EXIT_FAILED)
    except Exception as err:
        # A bug: one structured event (JSON in JSON mode), the traceback only at DEBUG, and not
        # the message, which might quote a value from a file.
        debug = _log.isEnabledFor(logging.DEBUG)
        log.event(_log, "cli.failed", logging.ERROR, error_type=type(err).__name__, exc_info=debug)
        say_error(
            f"internal error ({type(err).__name__}); --log-level DEBUG shows the traceback",
            event="cli.internal_error",
        )
        sys.exit(EXIT_FAILED)
