"""Configuration: every environment variable declared once, read once, cast and checked at start-up.

Each variable is declared by :func:`variable` as the default of its
:class:`Settings` field: its name, its default, its check and what it is for,
in one place.  :data:`VARIABLES` lists them all (what docs/operations.md must
list, tests/test_config.py checks it), and :func:`load_settings` reads the
environment through them and nothing else.  A bad value stops the start with a
message that names the variable (the starlette ``config.py`` habit).  Every
limit says why it has its value.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import secrets
import stat
from dataclasses import dataclass, field, fields, replace
from email.utils import parseaddr
from pathlib import Path
from typing import Any, Callable, Generic, Mapping, TypeVar
from urllib.parse import urlsplit

from chat.errors import ConfigError

T = TypeVar("T")

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./chat.db"
# The key of a Settings field's metadata that holds its Variable.
_VARIABLE = "variable"


@dataclass(frozen=True)
class Variable(Generic[T]):
    """One environment variable: its name, its default, the check that casts it, and what it is for.

    ``parse`` raises ValueError whose text is the rule in plain words ("must be
    a whole number between 0 and 65535"); :meth:`read` turns it into a
    ConfigError naming the variable.  ``shown`` is the default as
    docs/operations.md writes it (``parse(shown) == default`` unless it is
    ``empty``); ``derived`` says the default is worked out at start-up instead
    (``shown`` then says from what)."""

    name: str
    default: T
    parse: Callable[[str], T]
    doc: str
    shown: str
    derived: bool = False
    secret: bool = False  # its value never appears in a message

    def read(self, env: Mapping[str, str]) -> T:
        """The variable read from ``env`` by ``parse``, or ``default`` when unset or empty."""
        raw = env.get(self.name)
        if raw is None or raw == "":
            return self.default
        try:
            return self.parse(raw)
        except ValueError as exc:
            raise ConfigError(variable=self.name, value=None if self.secret else raw, problem=str(exc)) from None


def _shown(default: object) -> str:
    """How docs/operations.md writes a default: ``empty``, ``on``/``off``, numbers without a trailing .0."""
    if default in ("", ()):
        return "empty"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


def declare(name: str, default: T, parse: Callable[[str], T], doc: str, *, shown: str | None = None,
            derived: bool = False, secret: bool = False) -> Variable[T]:
    """A :class:`Variable`; ``shown`` only when the docs cannot write ``default`` as it is."""
    return Variable(name, default, parse, doc, _shown(default) if shown is None else shown, derived, secret)


def variable(name: str, default: T, parse: Callable[[str], T], doc: str, *, shown: str | None = None,
             derived: bool = False, secret: bool = False) -> Any:
    """The default of a :class:`Settings` field that is read from the environment variable ``name``."""
    return field(default=default, metadata={
        _VARIABLE: declare(name, default, parse, doc, shown=shown, derived=derived, secret=secret)})


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


def _secret_key(raw: str) -> str:
    if len(raw) < MIN_SECRET_CHARACTERS:
        raise ValueError(f"must be at least {MIN_SECRET_CHARACTERS} characters long "
                         f"(it has {len(raw)}; the value is not shown)")
    return raw


def _secret_from_file(path: Path) -> str:
    """A development secret kept beside the database so `demo` and `serve` agree."""
    try:
        if path.exists():
            key = path.read_text().strip()
            if len(key) < MIN_SECRET_CHARACTERS:
                raise ConfigError(variable=SECRET_FILE.name, value=str(path),
                                  problem=f"must hold a key of at least {MIN_SECRET_CHARACTERS} characters "
                                          "(delete the file to have one generated)")
            return key
        key = secrets.token_urlsafe(48)
        path.write_text(key)
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
        return key
    except OSError as exc:
        raise ConfigError(variable=SECRET_FILE.name, value=str(path),
                          problem=f"must name a file the hub can read, or create ({exc.strerror.lower()})") from None


# Fields with no variable are fixed in code (docs/operations.md says which and why).
@dataclass(frozen=True)
class Settings:
    database_url: str = variable(
        "DATABASE_URL", DEFAULT_DATABASE_URL, _database_url,
        "sqlite:///PATH or postgresql://USER[:PASSWORD]@HOST[:PORT]/DB, mapped to its async driver.",
        shown="sqlite:///./chat.db")
    redis_url: str = variable(
        "REDIS_URL", "", _redis_url,
        "Empty (or memory://) selects the in-process broker; redis://… selects Redis pub/sub.")
    redis_prefix: str = variable(
        "REDIS_PREFIX", "chat", _redis_prefix,
        "Prefix of every Redis channel, so that several hubs (or test runs) can share one Redis.")
    attachments_dir: Path = variable(
        "ATTACHMENTS_DIR", Path("attachments"), _directory,
        "The on-disk store for uploads, created at start-up if missing.")
    secret_key: str = variable(
        "SECRET_KEY", "", _secret_key,
        "HS256 key for access tokens; unset, one is generated into CHAT_SECRET_FILE.",
        shown="generated", derived=True, secret=True)
    token_ttl_seconds: int = variable(
        "TOKEN_TTL_SECONDS", 15 * 60, whole_number(1, unit=" of seconds"),
        "Access tokens live 15 minutes: a lost one soon stops working (ending its session revokes it "
        "at once, R21); the widget gets the next one with its refresh credential.")
    session_ttl_seconds: int = variable(
        "SESSION_TTL_SECONDS", 30 * 24 * 3600, whole_number(60, unit=" of seconds"),
        "A session (a device signed in) ends when it has not been used for this long: 30 days, so that "
        "a parent who opens the app once a month stays signed in.")
    code_ttl_seconds: int = variable(
        "CODE_TTL_SECONDS", 15 * 60, whole_number(60, unit=" of seconds"),
        "How long an e-mailed 6-digit code (R19) may be used: 15 minutes.")
    allowed_origins: tuple[str, ...] = variable(
        "ALLOWED_ORIGINS", (), _origins,
        "Origins allowed to open a WebSocket from a browser (CSWSH protection); empty means the "
        "server's own http://localhost:PORT and http://127.0.0.1:PORT.",
        shown="http://localhost:PORT,http://127.0.0.1:PORT", derived=True)
    host: str = variable("HOST", "127.0.0.1", parse_host, "The address to listen on (--host overrides it).")
    port: int = variable("PORT", 8000, parse_port, "The port to listen on, 0 for any free one (--port overrides it).")
    log_level: str = variable("LOG_LEVEL", "info", _choice("debug", "info", "warning", "error"),
                              "debug also turns on uvicorn's access log and Alembic's migration steps.")
    log_format: str = variable("LOG_FORMAT", "text", _choice("text", "json"),
                               "json: the hub's log lines as one JSON object each (log collectors).")
    workers: int = variable("WEB_CONCURRENCY", 1, parse_workers,
                            "Worker processes of `serve` (--workers overrides it); above 1 needs Redis.")
    # A frame above this is refused with request.too_large (the connection stays);
    # 64 KiB holds the longest text (4,000 characters, up to 16 KiB of UTF-8) with room for fields.
    max_frame_bytes: int = 64 * 1024
    # Frames above this are cut by the WebSocket layer itself (close 1009): nothing
    # legitimate is that large, and the server never buffers more per frame.
    hard_frame_bytes: int = 1024 * 1024
    send_queue_frames: int = variable(
        "SEND_QUEUE_FRAMES", 1000, whole_number(1),
        "What may wait for one connection: this many KiB of unsent bytes on its socket (frames in "
        "the fallback outbox); a reader that lets more pile up is closed with 4008 and resumes later "
        "(see docs/protocol.md). 1 MiB is minutes of a busy conversation.")
    database_pool_size: int = variable(
        "DATABASE_POOL_SIZE", 20, whole_number(1),
        "PostgreSQL connections per worker process, all kept open (no overflow that is opened and "
        "closed again under load; docs/operations.md has the measurements). Workers x this must stay "
        "under the server's max_connections (100 by default).")
    rate_per_second: float = variable(
        "RATE_PER_SECOND", 20.0, _number(0, inclusive=False),
        "Per-connection token bucket: 20 actions per second sustained — far above a person typing, "
        "low enough that a runaway client cannot flood a conversation.  Each person also has a "
        "bucket twice as wide per process (shared by their connections and HTTP calls).")
    rate_burst: float = variable(
        "RATE_BURST", 40.0, _number(1, inclusive=True, why=" (a burst below one action refuses everything)"),
        "The burst of that bucket.")
    # Typing indicators are cheap but chatty: their own, tighter bucket.
    typing_per_second: float = 2.0
    smtp_url: str = variable(
        "SMTP_URL", "", _smtp_url,
        "E-mail (R15 digests): empty writes e-mails to the log instead.")
    mail_from: str = variable(
        "MAIL_FROM", "Clic École <ne-pas-repondre@clic.test>", _mail_from,
        "The From of notification e-mails.")
    app_url: str = variable(
        "APP_URL", "http://localhost:8000/", _http_url,
        "The address people are sent to in e-mails; unset, http://localhost:PORT/ with PORT from the "
        "environment.", shown="http://localhost:PORT/", derived=True)
    notify_webhook_url: str = variable(
        "NOTIFY_WEBHOOK_URL", "", _http_url,
        "A push gateway that receives notifications as JSON (second delivery channel).")
    demo: bool = variable(
        "CHAT_DEMO", False, _flag,
        "Demo mode: the web widget's person picker signs demo people in without a password.  Off "
        "unless `serve --demo` or CHAT_DEMO=1; never in production.")
    ping_interval: float = variable(
        "PING_INTERVAL_SECONDS", 20.0, _number(0, inclusive=False, unit=" of seconds"),
        "WebSocket keepalive: a ping this often.  Under a proxy or load balancer, keep it below its "
        "idle timeout.")
    # The connection is closed when its pong is this late.
    ping_timeout: float = 20.0
    sqlite_checkpoint_seconds: float = variable(
        "SQLITE_CHECKPOINT_SECONDS", 0.2, _number(0, inclusive=False, unit=" of seconds"),
        "SQLite: how often the WAL is copied into the database file (chat.storage.db): shorter for a "
        "shorter latency tail at light load, longer for throughput.")
    smtp_timeout_seconds: float = variable(
        "SMTP_TIMEOUT_SECONDS", 30.0, _number(0, inclusive=False, unit=" of seconds"),
        "Notification deliveries (R15 digests, unread e-mails): each e-mail attempt is cut off after "
        "this, everything included; a relay that hangs costs one slot that long, never the others.")
    notify_webhook_timeout_seconds: float = variable(
        "NOTIFY_WEBHOOK_TIMEOUT_SECONDS", 10.0, _number(0, inclusive=False, unit=" of seconds"),
        "The same for one POST to the push gateway.")
    notify_concurrency: int = variable(
        "NOTIFY_CONCURRENCY", 8, whole_number(1),
        "Attempts in flight per channel and worker: 8 keeps well under the connection limits of "
        "common relays, and with every attempt hanging to its timeout, the 41 staff of a school "
        "still have their first e-mail attempt within 6 x 30 s.")
    notify_lease_seconds: float = variable(
        "NOTIFY_LEASE_SECONDS", 120.0, _number(0, inclusive=False, unit=" of seconds"),
        "The lease a worker holds on a delivery while it attempts it (renewed every third of it). "
        "At least twice the longest timeout, so that an attempt in flight is never taken over; "
        "short, so that a dead worker's deliveries are taken up by another within two minutes.")
    hub_fast_path: str = variable(
        "HUB_FAST_PATH", "auto", _choice("auto", "off"),
        "The uvicorn fast path (frames written straight to the transport): auto uses it when the "
        "installed uvicorn/websockets versions are known, off always uses the public send path.")

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


# Where the development secret is kept when SECRET_KEY is unset (the one variable
# that is not a Settings field: it only says where to find one).
SECRET_FILE: Variable[Path] = declare(
    "CHAT_SECRET_FILE", Path(".chat_secret"), Path,
    "Where the generated key is kept when SECRET_KEY is unset, so that `demo`, `token` and `serve` agree.")


def variable_of(field_name: str) -> Variable:
    """The variable a :class:`Settings` field is read from."""
    return Settings.__dataclass_fields__[field_name].metadata[_VARIABLE]


def _declared() -> tuple[Variable, ...]:
    by_field = [f.metadata[_VARIABLE] for f in fields(Settings) if _VARIABLE in f.metadata]
    at = by_field.index(variable_of("secret_key")) + 1  # the secret file beside the secret
    return (*by_field[:at], SECRET_FILE, *by_field[at:])


# Every environment variable the hub reads, in the order of docs/operations.md.
VARIABLES: tuple[Variable, ...] = _declared()


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and check every variable of :data:`VARIABLES`; raise ConfigError naming the bad one.

    The development secret file is read (or created) last, once everything else
    is known to be right."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {f.name: f.metadata[_VARIABLE].read(env)
                              for f in fields(Settings) if _VARIABLE in f.metadata}
    if not env.get(variable_of("app_url").name):  # its default follows the PORT variable (not --port)
        values["app_url"] = f"http://localhost:{values['port']}/"
    check_notification_lease(values["notify_lease_seconds"],
                             (values["smtp_timeout_seconds"], values["notify_webhook_timeout_seconds"]))
    if not values["secret_key"]:
        values["secret_key"] = _secret_from_file(SECRET_FILE.read(env))
    return Settings(**values)


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
