"""Configuration is read once, cast and checked; a bad value stops the start with
a message naming the variable (STYLE.md).  Every test passes its own
environment dict and keeps the development secret file in ``tmp_path``.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from chat.config import DEFAULT_DATABASE_URL, describe, load_settings
from chat.errors import ConfigError

GOOD_SECRET = "s" * 32


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
    assert "'mysql://x'" in message
    assert "expected sqlite:///PATH or postgresql://" in message


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
