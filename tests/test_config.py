"""Configuration is read once, cast and checked; a bad value stops the start with
a message naming the variable (STYLE.md).  Every test passes its own
environment dict and keeps the development secret file in ``tmp_path``.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from chat.config import DEFAULT_DATABASE_URL, VARIABLES, Settings, describe, load_settings
from chat.errors import ConfigError

GOOD_SECRET = "s" * 32
OPERATIONS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


def env(tmp_path: Path, **variables: str) -> dict[str, str]:
    return {"CHAT_SECRET_FILE": str(tmp_path / "secret"), **variables}


def config_error(tmp_path: Path, **variables: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(env(tmp_path, **variables))
    return info.value


# --- defaults -------------------------------------------------------------------------


def test_defaults_select_embedded_sqlite_and_memory_broker(tmp_path):
    settings = load_settings(env(tmp_path))
    assert settings.database_url == DEFAULT_DATABASE_URL == "sqlite+aiosqlite:///./chat.db"
    assert settings.redis_url == ""
    assert settings.broker_url == "memory://"


def test_defaults_listen_on_localhost_port_8000_at_info_level(tmp_path):
    settings = load_settings(env(tmp_path))
    assert (settings.host, settings.port, settings.log_level) == ("127.0.0.1", 8000, "info")


def test_default_allowed_origins_are_the_local_server_itself(tmp_path):
    settings = load_settings(env(tmp_path, PORT="9001"))
    assert settings.allowed_origins == ()
    assert settings.origins == ("http://localhost:9001", "http://127.0.0.1:9001")


def test_default_origins_follow_a_port_changed_after_loading(tmp_path):
    # `serve --port` replaces the port after load_settings(); the origins must follow.
    settings = load_settings(env(tmp_path, PORT="9001")).with_(port=9002)
    assert settings.origins == ("http://localhost:9002", "http://127.0.0.1:9002")


def test_explicit_allowed_origins_replace_the_defaults(tmp_path):
    settings = load_settings(env(tmp_path, ALLOWED_ORIGINS="https://ecole.test"))
    assert settings.origins == ("https://ecole.test",)


def test_without_secret_key_a_private_secret_file_is_created(tmp_path):
    settings = load_settings(env(tmp_path))
    secret_file = tmp_path / "secret"
    assert len(settings.secret_key) >= 32
    assert secret_file.read_text() == settings.secret_key
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600


def test_secret_file_is_reused_so_demo_and_serve_agree(tmp_path):
    assert load_settings(env(tmp_path)).secret_key == load_settings(env(tmp_path)).secret_key


def test_secret_key_variable_wins_and_writes_no_file(tmp_path):
    settings = load_settings(env(tmp_path, SECRET_KEY=GOOD_SECRET))
    assert settings.secret_key == GOOD_SECRET
    assert not (tmp_path / "secret").exists()


# --- DATABASE_URL / REDIS_URL ---------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://chat@db.test/chat", "postgresql+asyncpg://chat@db.test/chat"),
        ("postgresql://chat@db.test/chat", "postgresql+asyncpg://chat@db.test/chat"),
        ("postgresql+asyncpg://chat@db.test/chat", "postgresql+asyncpg://chat@db.test/chat"),
        ("sqlite:///data/chat.db", "sqlite+aiosqlite:///data/chat.db"),
        ("sqlite+aiosqlite:///data/chat.db", "sqlite+aiosqlite:///data/chat.db"),
    ],
    ids=["postgres", "postgresql", "asyncpg", "sqlite", "aiosqlite"],
)
def test_database_url_is_mapped_to_its_async_driver(tmp_path, given, expected):
    assert load_settings(env(tmp_path, DATABASE_URL=given)).database_url == expected


def test_memory_redis_url_selects_the_in_process_broker(tmp_path):
    assert load_settings(env(tmp_path, REDIS_URL="memory://")).broker_url == "memory://"


def test_redis_url_is_kept(tmp_path):
    assert load_settings(env(tmp_path, REDIS_URL="redis://cache.test:6379/2")).redis_url == "redis://cache.test:6379/2"


# --- bad values name the variable -----------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "mysql://chat@db.test/chat"),
        ("DATABASE_URL", "chat.db"),
        ("REDIS_URL", "http://cache.test:6379"),
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("PORT", "-1"),
        ("LOG_LEVEL", "verbose"),
        ("SECRET_KEY", "too-short"),
        ("ALLOWED_ORIGINS", "school.test"),
        ("ALLOWED_ORIGINS", "https://school.test, ftp://files.test"),
        ("TOKEN_TTL_SECONDS", "0"),
        ("RATE_PER_SECOND", "fast"),
        ("RATE_BURST", "0.5"),
        ("SEND_QUEUE_FRAMES", "-3"),
        ("DATABASE_POOL_SIZE", "0"),
        ("PING_INTERVAL_SECONDS", "0"),
        ("SQLITE_CHECKPOINT_SECONDS", "-1"),
    ],
)
def test_bad_value_raises_config_error_naming_the_variable(tmp_path, variable, value):
    error = config_error(tmp_path, **{variable: value})
    assert error.code == "config.invalid"
    assert error.fields["variable"] == variable


@pytest.mark.parametrize(
    ("variable", "value"),
    [("DATABASE_URL", "mysql://x"), ("REDIS_URL", "http://x"), ("PORT", "abc"), ("LOG_LEVEL", "verbose"),
     ("SECRET_KEY", "too-short"), ("ALLOWED_ORIGINS", "school.test")],
)
def test_start_up_message_names_the_variable(tmp_path, variable, value):
    message = describe(config_error(tmp_path, **{variable: value}))
    assert message.startswith("configuration error: ")
    assert variable in message


def test_start_up_message_says_what_was_expected(tmp_path):
    message = describe(config_error(tmp_path, DATABASE_URL="mysql://x"))
    assert message == ("configuration error: DATABASE_URL must be sqlite:///PATH or postgresql://USER@HOST/DB, "
                       "got 'mysql://x'")


# Every variable the hub reads, a value it refuses, and the one line that says so:
# the rule in plain words, then what was given (never SECRET_KEY's value).
PLAIN_WORDS = [
    ("DATABASE_URL", "mysql://chat@db.test/chat",
     "DATABASE_URL must be sqlite:///PATH or postgresql://USER@HOST/DB, got 'mysql://chat@db.test/chat'"),
    ("REDIS_URL", "http://cache.test:6379",
     "REDIS_URL must be redis://HOST:PORT/DB, rediss://… or unix://… (or memory:// or empty for the in-process "
     "broker), got 'http://cache.test:6379'"),
    ("REDIS_PREFIX", "my hub", "REDIS_PREFIX must be 1 to 64 letters, digits, '.', '_', ':' or '-', got 'my hub'"),
    ("SECRET_KEY", "hunter2-short",
     "SECRET_KEY must be at least 32 characters long (it has 13; the value is not shown)"),
    ("CHAT_SECRET_FILE", "{tmp}/no-such-directory/secret",
     "CHAT_SECRET_FILE must name a file the hub can read, or create (no such file or directory), "
     "got '{tmp}/no-such-directory/secret'"),
    ("TOKEN_TTL_SECONDS", "12h", "TOKEN_TTL_SECONDS must be a whole number of seconds, at least 1, got '12h'"),
    ("ALLOWED_ORIGINS", "school.test",
     "ALLOWED_ORIGINS must be origins separated by commas, each starting with http:// or https:// (or *), "
     "got 'school.test'"),
    ("ATTACHMENTS_DIR", "{tmp}/a-file",
     "ATTACHMENTS_DIR must name a directory (it is created if missing), not a file, got '{tmp}/a-file'"),
    ("HOST", "http://0.0.0.0",
     "HOST must be an address or a host name, such as 127.0.0.1, 0.0.0.0, :: or localhost (no http://, no :PORT), "
     "got 'http://0.0.0.0'"),
    ("PORT", "abc", "PORT must be a whole number between 0 and 65535, got 'abc'"),
    ("LOG_LEVEL", "verbose", "LOG_LEVEL must be debug, info, warning or error, got 'verbose'"),
    ("LOG_FORMAT", "xml", "LOG_FORMAT must be text or json, got 'xml'"),
    ("WEB_CONCURRENCY", "abc", "WEB_CONCURRENCY must be a whole number of worker processes between 1 and 64, "
                               "got 'abc'"),
    ("DATABASE_POOL_SIZE", "0", "DATABASE_POOL_SIZE must be a whole number, at least 1, got '0'"),
    ("SEND_QUEUE_FRAMES", "1 MiB", "SEND_QUEUE_FRAMES must be a whole number, at least 1, got '1 MiB'"),
    ("PING_INTERVAL_SECONDS", "0", "PING_INTERVAL_SECONDS must be a number of seconds above 0, got '0'"),
    ("SQLITE_CHECKPOINT_SECONDS", "nan", "SQLITE_CHECKPOINT_SECONDS must be a number of seconds above 0, got 'nan'"),
    ("RATE_PER_SECOND", "fast", "RATE_PER_SECOND must be a number above 0, got 'fast'"),
    ("RATE_BURST", "0.5",
     "RATE_BURST must be a number, at least 1 (a burst below one action refuses everything), got '0.5'"),
    ("SMTP_URL", "smtp://mail.test:abc",
     "SMTP_URL must be smtp://[user:password@]host[:port] or smtps://…, got 'smtp://mail.test:abc'"),
    ("MAIL_FROM", "ecole",
     "MAIL_FROM must be an e-mail address, with a name or without (Clic École <ne-pas-repondre@clic.test>), "
     "got 'ecole'"),
    ("APP_URL", "chat.ecole.test", "APP_URL must be an address starting with http:// or https://, "
                                   "got 'chat.ecole.test'"),
    ("NOTIFY_WEBHOOK_URL", "push.test/hook",
     "NOTIFY_WEBHOOK_URL must be an address starting with http:// or https://, got 'push.test/hook'"),
    ("CHAT_DEMO", "maybe", "CHAT_DEMO must be 1 or 0 (true/false, yes/no and on/off work too), got 'maybe'"),
    ("SMTP_TIMEOUT_SECONDS", "30s", "SMTP_TIMEOUT_SECONDS must be a number of seconds above 0, got '30s'"),
    ("NOTIFY_WEBHOOK_TIMEOUT_SECONDS", "-1",
     "NOTIFY_WEBHOOK_TIMEOUT_SECONDS must be a number of seconds above 0, got '-1'"),
    ("NOTIFY_CONCURRENCY", "0", "NOTIFY_CONCURRENCY must be a whole number, at least 1, got '0'"),
    ("NOTIFY_LEASE_SECONDS", "inf", "NOTIFY_LEASE_SECONDS must be a number of seconds above 0, got 'inf'"),
    ("HUB_FAST_PATH", "on", "HUB_FAST_PATH must be auto or off, got 'on'"),
    ("SESSION_TTL_SECONDS", "59", "SESSION_TTL_SECONDS must be a whole number of seconds, at least 60, got '59'"),
    ("CODE_TTL_SECONDS", "15m", "CODE_TTL_SECONDS must be a whole number of seconds, at least 60, got '15m'"),
]


@pytest.mark.parametrize(("variable", "value", "message"), PLAIN_WORDS, ids=[v for v, _, _ in PLAIN_WORDS])
def test_every_variable_refuses_a_bad_value_in_plain_words(tmp_path, variable, value, message):
    (tmp_path / "a-file").write_text("not a directory")
    tmp = str(tmp_path)
    error = config_error(tmp_path, **{variable: value.format(tmp=tmp)})
    assert (error.code, error.fields["variable"]) == ("config.invalid", variable)
    assert describe(error) == "configuration error: " + message.format(tmp=tmp)


def test_every_variable_of_the_operations_guide_has_its_plain_words_check():
    """The configuration table of docs/operations.md lists what the hub reads;
    each of them is in PLAIN_WORDS above (a new variable comes with its check)."""
    text = OPERATIONS.read_text(encoding="utf-8")
    table = text[text.index("## Configuration"):].split("\n\n")[2]
    documented = {name for row in table.splitlines()[2:] for name in re.findall(r"`([A-Z_]+)`", row.split("|")[1])}
    assert documented == {variable for variable, _, _ in PLAIN_WORDS}


def _documented_defaults() -> dict[str, str]:
    """The configuration table of docs/operations.md: variable -> default cell, backticks removed."""
    text = OPERATIONS.read_text(encoding="utf-8")
    table = text[text.index("## Configuration"):].split("\n\n")[2]
    rows = [row.split("|") for row in table.splitlines()[2:]]
    return {re.fullmatch(r"\s*`([A-Z_]+)`\s*", cells[1]).group(1): cells[2].strip().replace("`", "")
            for cells in rows}


def test_the_operations_guide_lists_exactly_the_declared_variables_and_their_defaults():
    """One row per variable of chat.config.VARIABLES, its default as declared there."""
    assert _documented_defaults() == {v.name: v.shown for v in VARIABLES}


@pytest.mark.parametrize("variable", [v for v in VARIABLES if not v.derived], ids=lambda v: v.name)
def test_a_declared_default_is_what_its_documented_text_reads_as(variable):
    raw = "" if variable.shown == "empty" else variable.shown
    assert variable.read({variable.name: raw}) == variable.default


def test_the_defaults_of_settings_are_those_of_its_variables(tmp_path):
    """Settings() built in code and load_settings() with an empty environment agree
    (except what is derived at start-up: the secret, and APP_URL from PORT)."""
    loaded = load_settings(env(tmp_path))
    assert loaded.with_(secret_key="") == Settings()


def test_every_variable_is_read_through_its_declaration(tmp_path):
    """Setting each variable to the text of its default changes nothing (nothing reads
    the environment behind VARIABLES' back under another name)."""
    raw = {v.name: v.shown for v in VARIABLES if not v.derived and v.shown != "empty"}
    raw["CHAT_SECRET_FILE"] = str(tmp_path / "secret")
    assert load_settings(raw) == load_settings(env(tmp_path))


def test_the_hub_fast_path_is_auto_unless_turned_off(tmp_path):
    assert load_settings(env(tmp_path)).hub_fast_path == "auto"
    assert load_settings(env(tmp_path, HUB_FAST_PATH="OFF")).hub_fast_path == "off"


def test_several_origins_name_the_one_that_is_wrong(tmp_path):
    message = describe(config_error(tmp_path, ALLOWED_ORIGINS="https://school.test, ftp://files.test"))
    assert "('ftp://files.test' does not)" in message


def test_a_secret_file_too_short_to_sign_with_is_refused(tmp_path):
    (tmp_path / "secret").write_text("short\n")
    message = describe(config_error(tmp_path))
    assert message == ("configuration error: CHAT_SECRET_FILE must hold a key of at least 32 characters (delete the "
                       f"file to have one generated), got '{tmp_path / 'secret'}'")


def test_short_secret_key_is_not_echoed_in_the_message(tmp_path):
    message = describe(config_error(tmp_path, SECRET_KEY="hunter2-short-secret"))
    assert "SECRET_KEY" in message
    assert "hunter2" not in message


def test_short_secret_key_writes_no_secret_file(tmp_path):
    config_error(tmp_path, SECRET_KEY="too-short")
    assert not (tmp_path / "secret").exists()


# --- accepted values ------------------------------------------------------------------


def test_port_zero_asks_the_os_for_a_free_port(tmp_path):
    assert load_settings(env(tmp_path, PORT="0")).port == 0


def test_workers_and_log_format_are_read_with_the_rest(tmp_path):
    settings = load_settings(env(tmp_path))
    assert (settings.workers, settings.log_format) == (1, "text")
    settings = load_settings(env(tmp_path, WEB_CONCURRENCY="3", LOG_FORMAT="JSON"))
    assert (settings.workers, settings.log_format) == (3, "json")


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::", "::1", "localhost", "hub-1.ecole.test"])
def test_hosts_are_addresses_or_names(tmp_path, host):
    assert load_settings(env(tmp_path, HOST=host)).host == host


def test_mail_from_with_or_without_a_name(tmp_path):
    for value in ("ecole@clic.test", "École des Érables <ecole@clic.test>"):
        assert load_settings(env(tmp_path, MAIL_FROM=value)).mail_from == value


def test_log_level_is_case_insensitive(tmp_path):
    assert load_settings(env(tmp_path, LOG_LEVEL="DEBUG")).log_level == "debug"


def test_allowed_origins_are_split_trimmed_and_lose_their_trailing_slash(tmp_path):
    settings = load_settings(env(tmp_path, ALLOWED_ORIGINS=" https://ecole.test/ , http://localhost:3000,"))
    assert settings.allowed_origins == ("https://ecole.test", "http://localhost:3000")


def test_rate_limits_are_read_as_numbers(tmp_path):
    settings = load_settings(env(tmp_path, RATE_PER_SECOND="2.5", RATE_BURST="1", SEND_QUEUE_FRAMES="10"))
    assert (settings.rate_per_second, settings.rate_burst, settings.send_queue_frames) == (2.5, 1.0, 10)


def test_the_postgresql_pool_size_is_twenty_unless_set(tmp_path):
    assert load_settings(env(tmp_path)).database_pool_size == 20
    assert load_settings(env(tmp_path, DATABASE_POOL_SIZE="8")).database_pool_size == 8


def test_the_keepalive_interval_is_read_in_seconds(tmp_path):
    assert load_settings(env(tmp_path)).ping_interval == 20.0
    assert load_settings(env(tmp_path, PING_INTERVAL_SECONDS="45")).ping_interval == 45.0


def test_the_sqlite_checkpoint_interval_is_read_in_seconds(tmp_path):
    assert load_settings(env(tmp_path)).sqlite_checkpoint_seconds == 0.2
    assert load_settings(env(tmp_path, SQLITE_CHECKPOINT_SECONDS="1")).sqlite_checkpoint_seconds == 1.0


def test_empty_variable_means_default(tmp_path):
    settings = load_settings(env(tmp_path, PORT="", DATABASE_URL="", REDIS_URL=""))
    assert (settings.port, settings.database_url, settings.redis_url) == (8000, DEFAULT_DATABASE_URL, "")


def test_a_database_password_never_appears_in_the_error_message(tmp_path):
    error = config_error(tmp_path, DATABASE_URL="mysql://hub:s3cr3t-pass@db.example/hub")
    message = describe(error)
    assert "DATABASE_URL" in message and "s3cr3t-pass" not in message and "hub:***@db.example" in message


def test_a_bad_configuration_creates_no_secret_file(tmp_path):
    config_error(tmp_path, PORT="not-a-port")
    assert not (tmp_path / "secret").exists()
