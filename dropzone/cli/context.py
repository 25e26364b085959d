"""The state every command shares: the global options and how settings are loaded from them."""

from __future__ import annotations

import sys
from typing import Any

from dropzone.cli.errors import EXIT_USAGE
from dropzone.cli.options import connection_overrides
from dropzone.cli.output import configure_logging, say_error
from dropzone.config import Settings, load_settings
from dropzone.errors import UsageError


class Context:
    """``ctx.obj`` of every command. The global options may be set before the subcommand (the
    group) or after it (``global_options``)."""

    def __init__(self, config_dir: str | None, log_format: str | None, log_level: str | None) -> None:
        self.config_dir = config_dir
        self.log_format = log_format
        self.log_level = log_level

    def settings(self, **overrides: Any) -> Settings:
        for section, values in connection_overrides().items():
            overrides.setdefault(section, values)
        # Logging first, with what the command line says, so a config error is said in that format.
        configure_logging(self.log_format or "text", self.log_level or "INFO")
        try:
            settings = load_settings(self.config_dir, **overrides)
        except UsageError as err:
            say_error(str(err), event="config.invalid")
            sys.exit(EXIT_USAGE)
        chosen = settings.logging
        configure_logging(self.log_format or chosen.format, self.log_level or chosen.level)
        return settings
