"""Structured (JSON lines) logging that never carries content, keys, tokens or personal data.

Call sites log an event name plus identifiers (account ids, case ids, seqs, error codes)
and nothing else; free text from peers never reaches a log line.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["configure", "log_event"]

_logger = logging.getLogger("chat_server")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type and where it happened, never its message: messages of
            # library exceptions can quote the data that triggered them.
            exc_type, _, tb = record.exc_info
            frames = []
            while tb is not None:
                code = tb.tb_frame.f_code
                frames.append(f"{Path(code.co_filename).name}:{tb.tb_lineno}:{code.co_name}")
                tb = tb.tb_next
            entry["exc_type"] = exc_type.__name__
            entry["exc_where"] = frames[-6:]
        return json.dumps(entry, separators=(",", ":"))


def configure(level: str = "INFO", log_file: Path | None = None) -> None:
    handler: logging.Handler
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter())
    _logger.handlers[:] = [handler]
    _logger.setLevel(level.upper())
    _logger.propagate = False
    # websockets logs handshake failures with request details; keep its own logs terse.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    logging.getLogger("websockets").handlers[:] = [handler]
    logging.getLogger("websockets").propagate = False


def log_event(event: str, level: int = logging.INFO, exc: bool = False, **fields: Any) -> None:
    """Log ``event`` with identifier fields. Never pass message content or personal data."""
    if _logger.isEnabledFor(level):
        fields.setdefault("t_ms", int(time.time() * 1000))
        _logger.log(level, event, extra={"fields": fields}, exc_info=exc)
