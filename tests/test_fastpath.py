"""The uvicorn fast path's start-up check: tested versions only, else the ASGI
send path with one log line (chat.hub.fastpath)."""

from __future__ import annotations

import logging
from importlib import metadata

import pytest

from chat.config import Settings, load_settings
from chat.errors import ConfigError
from chat.hub import fastpath


def test_the_installed_uvicorn_and_websockets_are_tested_versions(caplog):
    caplog.set_level(logging.INFO, logger="chat.hub")
    assert fastpath.unknown_versions() == []
    assert fastpath.enabled(Settings()) is True
    assert caplog.records == []


def test_off_turns_the_fast_path_off_without_a_word(caplog):
    caplog.set_level(logging.INFO, logger="chat.hub")
    assert fastpath.enabled(Settings(hub_fast_path="off")) is False
    assert caplog.records == []


@pytest.mark.parametrize("library", ["uvicorn", "websockets"])
def test_an_unknown_version_falls_back_to_the_asgi_send_with_one_log_line(library, monkeypatch, caplog):
    real = metadata.version
    monkeypatch.setattr(fastpath.metadata, "version", lambda name: "99.1.0" if name == library else real(name))
    caplog.set_level(logging.INFO, logger="chat.hub")
    assert fastpath.enabled(Settings()) is False
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", f"hub fast path off: {library} 99.1.0 not among the tested versions; "
                    "frames go through ASGI send")]


def test_a_missing_library_falls_back_too(monkeypatch, caplog):
    def version(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(fastpath.metadata, "version", version)
    caplog.set_level(logging.INFO, logger="chat.hub")
    assert fastpath.enabled(Settings()) is False
    (record,) = caplog.records
    assert "uvicorn (not installed), websockets (not installed)" in record.getMessage()


def test_a_send_that_is_not_uvicorns_protocol_gets_no_direct_socket():
    async def send(message) -> None:
        return None

    assert fastpath.direct_socket(send) is None


def test_hub_fast_path_is_read_from_the_environment_and_checked(tmp_path):
    env = {"CHAT_SECRET_FILE": str(tmp_path / "secret")}
    assert load_settings(env).hub_fast_path == "auto"
    assert load_settings(env | {"HUB_FAST_PATH": "off"}).hub_fast_path == "off"
    with pytest.raises(ConfigError) as raised:
        load_settings(env | {"HUB_FAST_PATH": "maybe"})
    assert "HUB_FAST_PATH" in str(raised.value)
