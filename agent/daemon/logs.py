"""One structured line per event on standard error, as journald and log shippers read them:
logfmt (`ts=... level=info logger=xcheck.daemon msg="..." key=value`) or JSON, one object per line.

An event's fields come from `extra={"fields": {...}}`. Every value is text from somewhere (a peer's
words in a check's log line, a file name in a config error): `inert_log_record` makes it one inert
line, and logfmt quotes what needs quoting, so no value can forge another field or another line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone
from typing import Any

from agent.text import inert_log_record, visible

_BARE = re.compile(r"[A-Za-z0-9_.:/@+-]+")


def _logfmt_value(value: Any) -> str:
    text = visible(str(value))
    if _BARE.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    event = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
             .replace("+00:00", "Z"),
             "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
    extra = getattr(record, "fields", None)
    if isinstance(extra, dict):
        event.update({str(key): value for key, value in extra.items() if key not in event})
    if record.exc_info and record.exc_info[1] is not None:
        error = record.exc_info[1]
        event["error"] = f"{type(error).__name__}: {error}"
    return event


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # ensure_ascii: a peer's bidi override or line separator stays an escape, not a character.
        return json.dumps(_fields(record), default=str)


FORMATTERS = {"logfmt": LogfmtFormatter, "json": JsonFormatter}


def configure(log_format: str, level: int = logging.INFO) -> None:
    """Every logger of the process to standard error, one line per event, in `log_format`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(FORMATTERS[log_format]())
    handler.addFilter(inert_log_record)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
