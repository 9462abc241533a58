"""Logging, configured once per process: JSON lines for machines, short text lines for a terminal.

Never log a token, cookie, password or key: log their absence, length or hash instead.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TextIO

from shared.core.settings import SettingsError

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
#: The trace of the request being handled, set by the tracing middleware (shared.web.tracing) while a
#: server span is open, so a log line can be found from a trace and a trace from a log line.
trace_id: ContextVar[str | None] = ContextVar("trace_id", default=None)

LOG_FORMATS = ("auto", "text", "json")
# What orchestrators and the gateway's health checks poll every few seconds.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
ACCESS_LOGGER = "shared.access"

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """What the caller passed in ``extra``."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _RESERVED and not key.startswith("_")
    }


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, service, process, logger, message, request and trace ids,
    ``extra``."""

    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "service": self.service,
            # Which of a service's workers wrote the line.
            "pid": record.process,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id.get()
        if rid is not None:
            entry["request_id"] = rid
        tid = trace_id.get()
        if tid is not None:
            entry["trace_id"] = tid
        entry.update(_extras(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """One short line for a person at a terminal: local time, level, logger, message, then ``key=value``.

    The same facts as the JSON line, minus what a terminal reader already knows (the service, which
    ``make run`` prints before each line, and the date).
    """

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        fields = _extras(record)
        rid = request_id.get()
        if rid is not None:
            fields["request_id"] = rid
        tid = trace_id.get()
        if tid is not None:
            fields["trace_id"] = tid
        line = f"{clock} {record.levelname.lower():<7} {record.name}: {record.getMessage()}"
        if fields:
            line += "  " + " ".join(f"{key}={value}" for key, value in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class QuietProbes(logging.Filter):
    """Turns the access line of a health check or a metrics scrape into a debug line.

    In dev a terminal is where a person reads the logs, and the gateway's upstream checks alone
    wrote one such line every two seconds per upstream, plus twenty 503s while auth seeded its
    demo users: at info they pushed ``make run``'s banner off the screen. Whether a dependency is
    up is told by the gateway's own upstream log lines and by ``make run``; ``LOG_LEVEL=debug``
    shows every probe.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or _probed_path(record) not in PROBE_PATHS:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _probed_path(record: logging.LogRecord) -> object:
    # shared.web.middleware logs ("%s %s %d", method, path, status); a ``path`` extra would win, and
    # the message's second word is the last resort (tests/unit/test_logs.py goes through the app).
    if (path := getattr(record, "path", None)) is not None:
        return path
    args = record.args if isinstance(record.args, tuple) else ()
    if len(args) > 1:
        return args[1]
    words = record.getMessage().split(" ", 2)
    return words[1] if len(words) > 1 else None


@dataclass(frozen=True)
class LogSettings:
    """How a process logs: ``LOG_FORMAT`` (``auto``, ``text`` or ``json``) and whether probes are quiet."""

    format: str
    quiet_probes: bool

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, terminal: bool) -> LogSettings:
        """``auto`` means text on a terminal and JSON elsewhere: in a pipe or a file.

        The images set ``LOG_FORMAT=json`` (deploy/Dockerfile), so a container's log collector gets
        JSON even when ``docker run -t`` gives it a terminal, while a developer's shell in a dev
        container still gets text. Probes are quiet under ``APP_ENV=dev`` only: in production
        their lines are evidence.
        """
        chosen = (environ.get("LOG_FORMAT") or "auto").lower()
        if chosen not in LOG_FORMATS:
            raise SettingsError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {chosen!r}")
        if chosen == "auto":
            chosen = "text" if terminal else "json"
        return cls(format=chosen, quiet_probes=environ.get("APP_ENV") == "dev")


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def configure_logging(
    service: str,
    level: str = "info",
    *,
    environ: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
) -> None:
    """Send every logger, uvicorn's included, to ``stream`` (stderr) as JSON or text lines.

    The format and the probe filter come from :class:`LogSettings` (``LOG_FORMAT``, ``APP_ENV``
    in ``environ``, the process environment unless given); a bad ``LOG_FORMAT`` is a
    :class:`~shared.core.settings.SettingsError` naming it.
    """
    output = sys.stderr if stream is None else stream
    settings = LogSettings.from_env(os.environ if environ is None else environ, terminal=_is_terminal(output))
    handler = logging.StreamHandler(output)
    handler.setFormatter(JsonFormatter(service) if settings.format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Access lines come from shared.web.middleware, which knows the request id and omits queries.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("httpx").setLevel(logging.WARNING)
    access = logging.getLogger(ACCESS_LOGGER)
    for old in [item for item in access.filters if isinstance(item, QuietProbes)]:
        access.removeFilter(old)
    if settings.quiet_probes:
        access.addFilter(QuietProbes())
