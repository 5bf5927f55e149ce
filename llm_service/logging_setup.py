"""Structured JSON logs carrying the request id and tenant id; never keys, prompts or PII values."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
TENANT_ID: ContextVar[str | None] = ContextVar("tenant_id", default=None)

# Attributes every LogRecord has; anything else passed with `extra=` is logged as a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_base_factory = logging.getLogRecordFactory()


def _record_with_context(*args: object, **kwargs: object) -> logging.LogRecord:
    # Stamp the ids when the record is created: handlers may format it later, elsewhere.
    record = _base_factory(*args, **kwargs)
    record.request_id = REQUEST_ID.get()
    record.tenant_id = TENANT_ID.get()
    return record


logging.setLogRecordFactory(_record_with_context)
_STANDARD -= {"request_id", "tenant_id"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record with its context and extra fields."""
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and value is not None:
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            # The type only: a message or traceback may quote data.
            entry["error_type"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Send every log record to stderr as JSON."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every provider request line at INFO: noise, and URLs are not ours to log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
