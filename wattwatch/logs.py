"""Logging for every wattwatch command, configured once at start-up.

Services log to stderr, one line per event: timestamp, level, component (the logger's name
below `wattwatch.`) and the message. `WATTWATCH_LOG_LEVEL` sets the level; tracebacks of
unexpected errors are logged at DEBUG only, so a service never prints a bare traceback.
"""

from __future__ import annotations

import logging
import sys

from wattwatch.errors import first_line

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMAT = "%(asctime)s %(levelname)s %(component)s: %(message)s"


class _ComponentFilter(logging.Filter):
    """Adds `component`: the logger name without the package prefix ('detector', 'ingest')."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.component = record.name.removeprefix("wattwatch.")
        return True


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each line (tests capture it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure(level: str = "INFO") -> None:
    """Send the `wattwatch` loggers to stderr at `level`; calling it again only changes the level."""
    root = logging.getLogger("wattwatch")
    root.setLevel(level.upper())
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(FORMAT, datefmt="%Y-%m-%dT%H:%M:%S%z"))
        handler.addFilter(_ComponentFilter())
        root.addHandler(handler)


def get(component: str) -> logging.Logger:
    """The logger of one component, e.g. get('detector') -> 'wattwatch.detector'."""
    return logging.getLogger(f"wattwatch.{component}")


def unexpected(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """One line naming an unexpected error and what it hit; its traceback at DEBUG only."""
    logger.error("%s: %s: %s", what, type(exc).__name__, first_line(exc))
    logger.debug("traceback of the error above", exc_info=exc)


def startup(logger: logging.Logger, service: str, role: str, **settings: object) -> None:
    """The one start-up line of a long-running service: version, database role, key settings
    (never a secret: pass only the settings a reader of the log needs)."""
    from wattwatch import __version__

    shown = ", ".join(f"{name}={value}" for name, value in settings.items())
    logger.info("wattwatch %s %s starting as database role %s%s", __version__, service, role,
                f": {shown}" if shown else "")
