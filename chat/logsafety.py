"""Logs never contain message text or tokens, and bad input does not flood them.

The hub's own log lines carry ids, counts and error codes only.  Some
libraries under it trace whole frames, SQL parameters or HTTP headers at
DEBUG level (websockets' frame and header traces under ``uvicorn.error``,
aiosqlite's statements, SQLAlchemy's echo, asyncpg, httpcore): their DEBUG
records are dropped by a filter on their loggers, whatever level the
operator chose, so ``LOG_LEVEL=debug`` stays safe.

uvicorn logs a client's text frame that is not UTF-8 as an ERROR with a
traceback (and closes the connection with 1007, as it should).  That is the
client's mistake, not the server's, and any client can send it at will: it
becomes one WARNING line without traceback, at most once a minute
(:class:`BadInputOnce`).
"""

from __future__ import annotations

import logging
import time

CHATTY_LOGGERS = ("aiosqlite", "sqlalchemy.engine", "sqlalchemy.pool", "asyncpg", "websockets", "uvicorn.error",
                  "uvicorn.protocols", "httpcore", "httpx", "hpack", "aiosmtplib", "mail.log")


class DropLibraryDebug(logging.Filter):
    """Drops DEBUG traces of frames, statements and headers; uvicorn's own debug
    lines (connections opening and closing) stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG:
            return True
        if record.name.startswith("uvicorn"):
            return "/websockets/" not in record.pathname.replace("\\", "/")
        return False


class BadInputOnce(logging.Filter):
    """uvicorn's "Invalid UTF-8 sequence received from client." (an ERROR with
    the decoding traceback) as one WARNING line without traceback, at most one
    per ``interval`` seconds; the next line counts those left out."""

    interval = 60.0

    def __init__(self) -> None:
        super().__init__()
        self.last = float("-inf")
        self.left_out = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not (record.exc_info and isinstance(record.exc_info[1], UnicodeDecodeError)
                and "/uvicorn/protocols/websockets/" in record.pathname.replace("\\", "/")):
            return True  # anything else, a decoding error of the hub's own included, as it is
        now = time.monotonic()
        if now - self.last < self.interval:
            self.left_out += 1
            return False
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg = "a client sent a text frame that is not UTF-8: closed with 1007"
        record.args = ()
        if self.left_out:
            record.msg += f" ({self.left_out} more since the last such line)"
        record.exc_info = record.exc_text = None
        self.last, self.left_out = now, 0
        return True


_FILTER = DropLibraryDebug()
BAD_INPUT = BadInputOnce()


def install() -> None:
    """Attach the filters (idempotent)."""
    for name in CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    server = logging.getLogger("uvicorn.error")
    if BAD_INPUT not in server.filters:
        server.addFilter(BAD_INPUT)
