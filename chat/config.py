"""Configuration: read once from the environment, cast and checked at start-up.

A bad value stops the start with a message that names the variable (the
starlette ``config.py`` habit).  Every limit says why it has its value.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import secrets
import stat
from dataclasses import dataclass, replace
from email.utils import parseaddr
from pathlib import Path
from typing import Callable, Mapping, TypeVar
from urllib.parse import urlsplit

from chat.errors import ConfigError

T = TypeVar("T")

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./chat.db"
DEFAULT_SECRET_FILE = ".chat_secret"


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    # Empty (or "memory://") selects the in-process broker; redis://… selects Redis pub/sub.
    redis_url: str = ""
    # Prefix of every Redis channel, so that several hubs (or test runs) can share one Redis.
    redis_prefix: str = "chat"
    attachments_dir: Path = Path("attachments")
    secret_key: str = ""
    # Access tokens live 12 hours: a school day on one device without signing in
    # again, short enough that a lost token soon stops working (R21 revokes at once).
    token_ttl_seconds: int = 12 * 3600
    # Origins allowed to open a WebSocket from a browser (CSWSH protection);
    # empty means the server's own http://localhost:PORT and http://127.0.0.1:PORT.
    allowed_origins: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    # "json": the hub's log lines as one JSON object each (log collectors).
    log_format: str = "text"
    # Worker processes of `serve` (WEB_CONCURRENCY, or --workers); above 1 needs Redis.
    workers: int = 1
    # A frame above this is refused with request.too_large (the connection stays);
    # 64 KiB holds the longest text (4,000 characters, up to 16 KiB of UTF-8) with room for fields.
    max_frame_bytes: int = 64 * 1024
    # Frames above this are cut by the WebSocket layer itself (close 1009): nothing
    # legitimate is that large, and the server never buffers more per frame.
    hard_frame_bytes: int = 1024 * 1024
    # What may wait for one connection: this many KiB of unsent bytes on its
    # socket (frames in the fallback outbox); a reader that lets more pile up is
    # closed with 4008 and resumes later (see docs/protocol.md). 1 MiB is minutes
    # of a busy conversation.
    send_queue_frames: int = 1000
    # "auto": frames written straight to uvicorn's transports when the installed
    # uvicorn/websockets are tested versions (chat/hub/fastpath.py); "off": always
    # through the public ASGI send.
    hub_fast_path: str = "auto"
    # PostgreSQL connections per worker process, all kept open (no overflow that is
    # opened and closed again under load: a reconnect storm of 5,000 clients cost
    # 1.70-1.80 ms of CPU per client with 10 + 10 overflow, 1.16-1.24 with 20 + 0).
    # Workers x this must stay under the server's max_connections (100 by default).
    database_pool_size: int = 20
    # Per-connection token bucket: 20 actions per second sustained, bursts of 40 —
    # far above a person typing, low enough that a runaway client cannot flood
    # a conversation.  Each person also has a bucket twice as wide per process
    # (shared by their connections and HTTP calls).
    rate_per_second: float = 20.0
    rate_burst: float = 40.0
    # Typing indicators are cheap but chatty: their own, tighter bucket.
    typing_per_second: float = 2.0
    # E-mail (R15 digests): empty SMTP_URL writes e-mails to the log instead.
    smtp_url: str = ""
    mail_from: str = "Clic École <ne-pas-repondre@clic.test>"
    # The address people are sent to in e-mails.
    app_url: str = "http://localhost:8000/"
    # A push gateway that receives notifications as JSON (second delivery channel).
    notify_webhook_url: str = ""
    # Demo mode: the web widget's person picker signs demo people in without a
    # password.  Off unless `serve --demo` or CHAT_DEMO=1; never in production.
    demo: bool = False
    # WebSocket keepalive: a ping this often, the connection closed when its pong
    # is this late.  Under a proxy or load balancer, keep the interval below its
    # idle timeout.
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    # SQLite: how often the WAL is copied into the database file (chat.storage.db):
    # shorter for a shorter latency tail at light load, longer for throughput.
    sqlite_checkpoint_seconds: float = 0.2
    # Notification deliveries (R15 digests, unread e-mails; chat/notifications.py).
    # Each attempt on a channel is cut off after its timeout, everything included:
    # a relay or gateway that hangs costs one slot that long, never the others.
    smtp_timeout_seconds: float = 30.0
    notify_webhook_timeout_seconds: float = 10.0
    # Attempts in flight per channel and worker: 8 keeps well under the connection
    # limits of common relays, and with every attempt hanging to its timeout, the
    # 41 staff of a school still have their first e-mail attempt within 6 x 30 s.
    notify_concurrency: int = 8
    # The lease a worker holds on a delivery while it attempts it (renewed every
    # third of it).  At least twice the longest timeout, so that an attempt in
    # flight is never taken over; short, so that a dead worker's deliveries are
    # taken up by another within two minutes.
    notify_lease_seconds: float = 120.0

    @property
    def origins(self) -> tuple[str, ...]:
        if self.allowed_origins:
            return self.allowed_origins
        return (f"http://localhost:{self.port}", f"http://127.0.0.1:{self.port}")

    @property
    def broker_url(self) -> str:
        return self.redis_url or "memory://"

    def with_(self, **changes: object) -> "Settings":
        return replace(self, **changes)


def _get(env: Mapping[str, str], name: str, parse: Callable[[str], T], default: T) -> T:
    """The variable ``name`` read by ``parse``, or ``default`` when unset or empty.

    ``parse`` raises ValueError whose text is the rule in plain words ("must be
    a whole number between 0 and 65535"); the ConfigError names the variable."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        raise ConfigError(variable=name, value=raw, problem=str(exc)) from None


def whole_number(low: int, high: int | None = None, unit: str = "") -> Callable[[str], int]:
    """A parser of whole numbers from ``low`` (to ``high``), its rule said in words."""
    rule = f"must be a whole number{unit}" + (f" between {low} and {high}" if high is not None else f", at least {low}")

    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(rule) from None
        if value < low or (high is not None and value > high):
            raise ValueError(rule)
        return value

    return parse


def _number(minimum: float, inclusive: bool, unit: str = "", why: str = "") -> Callable[[str], float]:
    rule = f"must be a number{unit}" + (f", at least {minimum:g}" if inclusive else f" above {minimum:g}") + why

    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(rule) from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            raise ValueError(rule)
        return value

    return parse


def _choice(*choices: str) -> Callable[[str], str]:
    rule = "must be " + (", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else choices[0])

    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(rule)
        return value

    return parse


# Whole numbers (PORT and --port, WEB_CONCURRENCY and --workers share their rule).
parse_port = whole_number(0, 65535)
# A machine has a handful of cores; more processes than this is a typo, not a plan.
MAX_WORKERS = 64
parse_workers = whole_number(1, MAX_WORKERS, " of worker processes")


def _database_url(raw: str) -> str:
    if raw.startswith("postgres://"):
        raw = "postgresql://" + raw[len("postgres://") :]
    if raw.startswith("postgresql://"):
        raw = "postgresql+asyncpg://" + raw[len("postgresql://") :]
    if raw.startswith("sqlite:///"):
        raw = "sqlite+aiosqlite:///" + raw[len("sqlite:///") :]
    if not (raw.startswith("sqlite+aiosqlite://") or raw.startswith("postgresql+asyncpg://")):
        raise ValueError("must be sqlite:///PATH or postgresql://USER@HOST/DB")
    return raw


def _redis_url(raw: str) -> str:
    if raw == "memory://":
        return ""
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must be redis://HOST:PORT/DB, rediss://… or unix://… (or memory:// or empty for "
                         "the in-process broker)")
    return raw


_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _redis_prefix(raw: str) -> str:
    if not _PREFIX.fullmatch(raw):
        raise ValueError("must be 1 to 64 letters, digits, '.', '_', ':' or '-'")
    return raw


def _flag(raw: str) -> bool:
    if raw.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.strip().lower() in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be 1 or 0 (true/false, yes/no and on/off work too)")


def _smtp_url(raw: str) -> str:
    rule = "must be smtp://[user:password@]host[:port] or smtps://…"
    parts = urlsplit(raw)
    try:
        parts.port  # a port that is not a number raises here, not at the first e-mail
    except ValueError:
        raise ValueError(rule) from None
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError(rule)
    return raw


def _http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an address starting with http:// or https://")
    return raw


def _mail_from(raw: str) -> str:
    _, address = parseaddr(raw)
    if "@" not in address or " " in address:
        raise ValueError("must be an e-mail address, with a name or without (Clic École <ne-pas-repondre@clic.test>)")
    return raw


_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")


def parse_host(raw: str) -> str:
    host = raw.strip()
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if not _HOST_NAME.fullmatch(host):
        raise ValueError("must be an address or a host name, such as 127.0.0.1, 0.0.0.0, :: or localhost "
                         "(no http://, no :PORT)")
    return host


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            rule = "must be origins separated by commas, each starting with http:// or https:// (or *)"
            raise ValueError(rule + (f" ({origin!r} does not)" if len(origins) > 1 else ""))
    return origins


def _directory(raw: str) -> Path:
    path = Path(raw)
    if path.exists() and not path.is_dir():
        raise ValueError("must name a directory (it is created if missing), not a file")
    return path


# HS256 keys shorter than the hash (32 bytes) are guessable offline from one token.
MIN_SECRET_CHARACTERS = 32


def _secret_from_file(path: Path) -> str:
    """A development secret kept beside the database so `demo` and `serve` agree."""
    try:
        if path.exists():
            key = path.read_text().strip()
            if len(key) < MIN_SECRET_CHARACTERS:
                raise ConfigError(variable="CHAT_SECRET_FILE", value=str(path),
                                  problem=f"must hold a key of at least {MIN_SECRET_CHARACTERS} characters "
                                          "(delete the file to have one generated)")
            return key
        key = secrets.token_urlsafe(48)
        path.write_text(key)
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
        return key
    except OSError as exc:
        raise ConfigError(variable="CHAT_SECRET_FILE", value=str(path),
                          problem=f"must name a file the hub can read, or create ({exc.strerror.lower()})") from None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and check every variable; raise ConfigError naming the bad one."""
    env = os.environ if env is None else env
    secret = env.get("SECRET_KEY", "")
    if secret and len(secret) < MIN_SECRET_CHARACTERS:
        raise ConfigError(variable="SECRET_KEY", value=None,
                          problem=f"must be at least {MIN_SECRET_CHARACTERS} characters long "
                                  f"(it has {len(secret)}; the value is not shown)")
    port = _get(env, "PORT", parse_port, 8000)
    settings = Settings(
        database_url=_get(env, "DATABASE_URL", _database_url, DEFAULT_DATABASE_URL),
        redis_url=_get(env, "REDIS_URL", _redis_url, ""),
        redis_prefix=_get(env, "REDIS_PREFIX", _redis_prefix, "chat"),
        attachments_dir=_get(env, "ATTACHMENTS_DIR", _directory, Path("attachments")),
        token_ttl_seconds=_get(env, "TOKEN_TTL_SECONDS", whole_number(1, unit=" of seconds"), 12 * 3600),
        allowed_origins=_get(env, "ALLOWED_ORIGINS", _origins, ()),
        host=_get(env, "HOST", parse_host, "127.0.0.1"),
        port=port,
        log_level=_get(env, "LOG_LEVEL", _choice("debug", "info", "warning", "error"), "info"),
        log_format=_get(env, "LOG_FORMAT", _choice("text", "json"), "text"),
        workers=_get(env, "WEB_CONCURRENCY", parse_workers, 1),
        send_queue_frames=_get(env, "SEND_QUEUE_FRAMES", whole_number(1), 1000),
        hub_fast_path=_get(env, "HUB_FAST_PATH", _choice("auto", "off"), "auto"),
        database_pool_size=_get(env, "DATABASE_POOL_SIZE", whole_number(1), 20),
        rate_per_second=_get(env, "RATE_PER_SECOND", _number(0, inclusive=False), 20.0),
        rate_burst=_get(env, "RATE_BURST", _number(1, inclusive=True, why=" (a burst below one action refuses "
                                                                          "everything)"), 40.0),
        smtp_url=_get(env, "SMTP_URL", _smtp_url, ""),
        mail_from=_get(env, "MAIL_FROM", _mail_from, Settings.mail_from),
        app_url=_get(env, "APP_URL", _http_url, f"http://localhost:{port}/"),
        notify_webhook_url=_get(env, "NOTIFY_WEBHOOK_URL", _http_url, ""),
        demo=_get(env, "CHAT_DEMO", _flag, False),
        ping_interval=_get(env, "PING_INTERVAL_SECONDS", _number(0, inclusive=False, unit=" of seconds"), 20.0),
        sqlite_checkpoint_seconds=_get(env, "SQLITE_CHECKPOINT_SECONDS",
                                       _number(0, inclusive=False, unit=" of seconds"), 0.2),
        smtp_timeout_seconds=_get(env, "SMTP_TIMEOUT_SECONDS", _number(0, inclusive=False, unit=" of seconds"), 30.0),
        notify_webhook_timeout_seconds=_get(env, "NOTIFY_WEBHOOK_TIMEOUT_SECONDS",
                                            _number(0, inclusive=False, unit=" of seconds"), 10.0),
        notify_concurrency=_get(env, "NOTIFY_CONCURRENCY", whole_number(1), 8),
        notify_lease_seconds=_get(env, "NOTIFY_LEASE_SECONDS", _number(0, inclusive=False, unit=" of seconds"), 120.0),
    )
    check_notification_lease(settings.notify_lease_seconds,
                             (settings.smtp_timeout_seconds, settings.notify_webhook_timeout_seconds))
    if not secret:  # only once everything else is known to be right
        secret = _secret_from_file(Path(env.get("CHAT_SECRET_FILE") or DEFAULT_SECRET_FILE))
    return settings.with_(secret_key=secret)


def check_notification_lease(lease: float, timeouts: tuple[float, ...]) -> None:
    """A delivery's lease must outlast any attempt twice over (see Settings): else a
    worker could take over a delivery whose attempt is still in flight, and send it
    again.  Raises ConfigError naming NOTIFY_LEASE_SECONDS."""
    longest = max(timeouts, default=0.0)
    if lease < 2 * longest:
        raise ConfigError(variable="NOTIFY_LEASE_SECONDS", value=f"{lease:g}",
                          problem=f"expected at least twice the longest delivery timeout ({longest:g} s), "
                                  f"so that no attempt outlives its lease")


def _hide_password(value: object) -> object:
    """postgresql://hub:secret@db/hub → postgresql://hub:***@db/hub (never print a password)."""
    if isinstance(value, str) and "://" in value and "@" in value:
        scheme, rest = value.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        if ":" in credentials:
            credentials = credentials.split(":", 1)[0] + ":***"
        return f"{scheme}://{credentials}@{host}"
    return value


def describe(error: ConfigError) -> str:
    """The one-line start-up message for a configuration error, in plain words:
    ``configuration error: PORT must be a whole number between 0 and 65535, got 'abc'``."""
    f = error.fields
    message = f"configuration error: {f.get('variable')} {f.get('problem')}"
    if f.get("value") is not None:
        message += f", got {_hide_password(f['value'])!r}"
    return message
