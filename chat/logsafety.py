"""Logs never contain message text or tokens.

The hub's own log lines carry ids, counts and error codes only.  Some
libraries under it trace whole frames, SQL parameters or HTTP headers at
DEBUG level (websockets' frame and header traces under ``uvicorn.error``,
aiosqlite's statements, SQLAlchemy's echo, asyncpg, httpcore): their DEBUG
records are dropped by a filter on their loggers, whatever level the
operator chose, so ``LOG_LEVEL=debug`` stays safe.
"""

from __future__ import annotations

import logging

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


_FILTER = DropLibraryDebug()


def install() -> None:
    """Attach the filter (idempotent)."""
    for name in CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
