"""How lookalike logs: one handler on the root logger, text or JSON, quiet libraries.

* :func:`configure_logging` is called once by every command (the worker keeps it: Faust is
  told not to set up logging of its own). Logs go to stderr, so stdout stays for what a
  command prints (JSON reports).
* Kafka clients and Faust's internals log every connection, subscription and service start at
  info; they are held at warning unless the level is debug (:data:`LIBRARIES`). What happened
  is said by lookalike's own lines: one per batch, one when the worker is ready, one per stop.
* ``json`` writes one object per line (``time``, ``level``, ``logger``, ``message``,
  ``exception``, and anything passed with ``extra=``) for a log collector.
* On a terminal, a line is written around any progress bar on the screen (tqdm's external
  write mode), so bars and log lines do not overwrite each other.
* :class:`RepeatFilter`: Kafka client libraries log every failed reconnect; the same warning
  from the same library is let through once a minute, with how many were held back.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from datetime import UTC, datetime
from typing import IO, Any

#: Third-party loggers held at warning unless the level is debug.
LIBRARIES = ("kafka", "aiokafka", "faust", "mode", "httpx", "httpcore")
#: Libraries whose repeated warnings are held back (our own logs say things once already).
NOISY_LOGGERS = ("aiokafka", "kafka", "faust", "mode")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: LogRecord attributes that are not "extra" fields.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        return json.dumps(entry, default=str)


class TerminalHandler(logging.StreamHandler):
    """Writes to ``stream`` (default: whatever ``sys.stderr`` is when a record comes, like
    logging's last resort, so a swapped stderr is followed), around any progress bar when it
    is a terminal."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        logging.Handler.__init__(self)
        self._stream = stream

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return self._stream if self._stream is not None else sys.stderr

    @stream.setter
    def stream(self, value: IO[str] | None) -> None:
        self._stream = value

    def emit(self, record: logging.LogRecord) -> None:
        if not is_terminal(self.stream):
            super().emit(record)
            return
        from tqdm import tqdm

        with tqdm.external_write_mode(file=self.stream):
            super().emit(record)


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal (False for a closed or replaced stream)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class RepeatFilter(logging.Filter):
    """Lets a library's warning (same logger, same message template) through once per
    ``window`` seconds; the next one that passes says how many were held back."""

    def __init__(self, window: float = 60.0, prefixes: tuple[str, ...] = NOISY_LOGGERS) -> None:
        super().__init__()
        self.window = window
        self.prefixes = prefixes
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.startswith(self.prefixes):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        with self._lock:
            last, held = self._seen.get(key, (0.0, 0))
            if last and now - last < self.window:
                self._seen[key] = (last, held + 1)
                return False
            self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like it in the last {self.window:.0f}s)"
        return True


def configure_logging(
    level: str = "info", fmt: str = "text", stream: IO[str] | None = None
) -> None:
    """Put one handler of ours on the root logger (replacing ours from an earlier call; a
    handler someone else added, a test runner's, stays)."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    handler = TerminalHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, TerminalHandler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    libraries = logging.DEBUG if numeric <= logging.DEBUG else max(numeric, logging.WARNING)
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(libraries)
