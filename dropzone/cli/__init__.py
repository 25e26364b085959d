"""The ``dropzone`` command line: every command lives in this package.

Human output goes to stdout (tables) and logs to stderr; ``--json`` prints exactly one JSON
object on stdout for scripts. Exit codes (README, "Exit codes"): 0 every file archived or
duplicate, 3 some file partial or quarantined, 2 usage, configuration or connection error,
1 an unexpected failure or a file that could not be finished.

Layout: ``app`` (the group and its registrations), ``context`` (settings and global options),
``output`` (consoles, logging handler, messages), ``errors`` (exit codes), ``options`` (zone,
S3 and SFTP options), ``progress``, ``tables``, ``signals``, and one module per command family
(``ingest``, ``store``, ``api``, ``sftp``).
"""

from __future__ import annotations

from dropzone.cli.app import main

__all__ = ["main"]
