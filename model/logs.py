"""How every aduan process logs: to stderr, one line per record, the time with its zone.

`plain` (the default) is for people: `2026-03-12T10:11:12.345+07:00 INFO aduan.x: message`;
`json` (`ADUAN_LOG_FORMAT=json`) is for log collectors: one object per line, and a message
that is already a JSON object (the access log's) is merged into it rather than quoted. The
level comes from `ADUAN_LOG_LEVEL` (default INFO). The CLI and the server both configure
logging here, so a command's stdout carries only its data.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime
from enum import StrEnum

LEVEL_ENV = "ADUAN_LOG_LEVEL"
FORMAT_ENV = "ADUAN_LOG_FORMAT"
# Libraries that narrate at INFO what nobody running aduan asked about.
QUIET = ("httpx", "urllib3", "filelock", "fsspec", "matplotlib", "alembic", "PIL")


class LogFormat(StrEnum):
    PLAIN = "plain"
    JSON = "json"


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


def timestamp(record: logging.LogRecord) -> str:
    """ISO 8601 in the local zone with its offset, to the millisecond."""
    when = datetime.fromtimestamp(record.created).astimezone()
    return when.isoformat(timespec="milliseconds")


class PlainFormatter(logging.Formatter):
    """`time LEVEL logger: message`, unwrapped (a log file is read with grep, not a terminal)."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger and the message (already JSON or text)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        try:
            payload = json.loads(message) if message.startswith("{") else {"message": message}
        except json.JSONDecodeError:
            payload = {"message": message}
        if not isinstance(payload, dict):
            payload = {"message": message}
        out = {"time": timestamp(record), "level": record.levelname, "logger": record.name}
        out |= payload
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


FORMATTERS: dict[LogFormat, type[logging.Formatter]] = {
    LogFormat.PLAIN: PlainFormatter,
    LogFormat.JSON: JsonFormatter,
}


def parse_level(value: str | None) -> str:
    """A level name (any case) as logging knows it; an unknown one is a ValueError."""
    level = (value or LogLevel.INFO).upper()
    if level not in LogLevel.__members__:
        raise ValueError(f"log level must be one of {', '.join(LogLevel)}, got {value!r}")
    return level


def parse_format(value: str | None) -> LogFormat:
    try:
        return LogFormat((value or LogFormat.PLAIN).lower())
    except ValueError:
        raise ValueError(
            f"log format must be one of {', '.join(LogFormat)}, got {value!r}"
        ) from None


def configure_logging(
    level: str | None = None, fmt: str | None = None, *, replace: bool = False
) -> None:
    """Log records at `level` (default: ADUAN_LOG_LEVEL, else INFO) to stderr in `fmt`
    (default: ADUAN_LOG_FORMAT, else plain).

    Without `replace`, a process whose root logger already has handlers (an application
    embedding aduan, pytest's capture) keeps its logging as it is."""
    root = logging.getLogger()
    # Parsed first: a bad setting fails before anything changes.
    wanted = parse_level(level or os.environ.get(LEVEL_ENV))
    formatter = FORMATTERS[parse_format(fmt or os.environ.get(FORMAT_ENV))]()
    if root.handlers and not replace:
        return
    root.setLevel(wanted)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root.handlers[:] = [handler]
    for noisy in QUIET:
        logging.getLogger(noisy).setLevel(logging.WARNING)
