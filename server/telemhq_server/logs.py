"""Structured logs: one JSON object per line on stderr (``ts``, ``level``, ``logger``, ``msg``
and any ``extra={...}`` fields), set up once by the CLI for the server and its workers."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any, Final

__all__ = ["GRANIAN_LOG_CONFIG", "JsonFormatter", "setup_logging"]

_STANDARD: Final = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str = "INFO") -> None:
    """JSON lines on stderr for the ``telemhq_server`` loggers (idempotent)."""
    log = logging.getLogger("telemhq_server")
    log.setLevel(level.upper())
    if not any(isinstance(h.formatter, JsonFormatter) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        log.addHandler(handler)
    log.propagate = False


#: ``logging.config.dictConfig`` for granian's own loggers: the same JSON lines on stderr.
GRANIAN_LOG_CONFIG: Final[dict[str, Any]] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "telemhq_server.logs.JsonFormatter"}},
    "handlers": {
        "json": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
        }
    },
    "loggers": {
        "_granian": {"handlers": ["json"], "level": "INFO", "propagate": False},
        "granian.access": {"handlers": ["json"], "level": "INFO", "propagate": False},
    },
}
