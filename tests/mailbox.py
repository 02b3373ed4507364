"""A real SMTP server for tests (aiosmtpd), keeping what it receives."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections import Counter
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller


class Mailbox:
    """aiosmtpd's handler (it runs in the controller's thread): keeps every message
    it accepts.  ``hold(address)`` makes the next message to that address wait
    without an answer, and never count — as a relay that has not said 250 yet."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.messages: list = []
        self.arrived = asyncio.Event()  # set (in the test's loop) after each message kept
        self.held_address: str | None = None
        self.holding = asyncio.Event()  # set (in the test's loop) when the held message arrived
        self.release = threading.Event()

    def hold(self, address: str) -> None:
        self.held_address = address

    async def handle_DATA(self, server, session, envelope):
        if envelope.rcpt_tos == [self.held_address]:
            self.held_address = None
            self.loop.call_soon_threadsafe(self.holding.set)
            while not self.release.is_set():
                await asyncio.sleep(0.01)
            return "451 gone"
        self.messages.append((envelope.rcpt_tos[0], message_from_bytes(envelope.content, policy=policy.default)))
        self.loop.call_soon_threadsafe(self.arrived.set)
        return "250 OK"

    def count(self) -> Counter:
        return Counter(address for address, _ in self.messages)

    async def wait_for(self, number: int, timeout: float = 10.0) -> None:
        """Until ``number`` messages were kept (a bound on waiting, not a timing assertion)."""
        async with asyncio.timeout(timeout):
            while True:
                self.arrived.clear()
                if len(self.messages) >= number:
                    return
                await self.arrived.wait()

    async def code_for(self, address: str, after: int = 0, timeout: float = 10.0) -> str:
        """The 6-digit code in the first e-mail to ``address`` among those received
        after the first ``after`` ones (R19), waiting for it within ``timeout``."""
        async with asyncio.timeout(timeout):
            while True:
                self.arrived.clear()
                for to, message in self.messages[after:]:
                    if to == address:
                        found = re.search(r"\b(\d{6})\b", message.get_content())
                        assert found, message.get_content()
                        return found.group(1)
                await self.arrived.wait()


@pytest.fixture
async def mailbox():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    box = Mailbox(asyncio.get_running_loop())
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    box.url = f"smtp://127.0.0.1:{port}"
    yield box
    box.release.set()
    controller.stop()
