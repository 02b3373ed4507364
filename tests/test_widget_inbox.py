"""The widget's one inbox across children (issue 20), in headless Chromium: a
parent acting for one child sees what is unread for the others."""

from __future__ import annotations

import re

from playwright.async_api import expect

from tests.conftest import MARIE, NADIA, actor_for, child_id
from tests.test_widget import (  # noqa: F401 - the fixtures
    PHONE,
    browser,
    embedded_only,
    eventually,
    lea_conversation,
    sign_in,
    widget_server,
)

TITLE = "Messagerie école–famille"


async def test_unread_for_another_child_shows_on_the_child_picker_and_in_the_title(widget_server, browser):
    conversation_id = await lea_conversation(widget_server, "Sortie au musée")
    lea, noah = (await child_id(widget_server.service, "Léa"), await child_id(widget_server.service, "Noah"))
    marie = await sign_in(browser, widget_server, "Marie Tremblay")
    picker = marie.page.get_by_label("Enfant")
    await picker.select_option(value=str(noah))
    await expect(marie.page.locator(".conv-list")).not_to_contain_text("Sortie au musée")  # Léa's, not shown

    nadia = await actor_for(widget_server.service, NADIA)
    for n, text in enumerate(("Le départ est à 8 h 30.", "Prévoir un lunch froid.")):
        await widget_server.service.sending.send(nadia, conversation_id, f"c-museum-{n}", text)
    lea_option = picker.locator(f'option[value="{lea}"]')
    await expect(lea_option).to_have_text("Léa Tremblay — 2 non lus")
    await expect(picker.locator(f'option[value="{noah}"]')).to_have_text("Noah Tremblay")
    await expect(marie.page).to_have_title(f"(2) {TITLE}")
    shortcut = marie.page.get_by_role("button", name="Passer à Léa Tremblay : 2 non lus")
    await expect(shortcut).to_contain_text("Léa")
    await marie.screenshot("desktop-unread-other-child")

    # The shortcut picks Léa; reading the conversation clears every count.
    await shortcut.click()
    await expect(picker).to_have_value(str(lea))
    await expect(shortcut).to_have_count(0)
    await marie.open_conversation("Sortie au musée")
    await expect(marie.message("Prévoir un lunch froid.")).to_have_count(1)
    await expect(lea_option).to_have_text("Léa Tremblay")
    await expect(marie.page).to_have_title(TITLE)
    actor = await actor_for(widget_server.service, MARIE)

    async def read_on_the_server() -> bool:
        return (await widget_server.service.reading.conversation(actor, conversation_id))["unread"] == 0

    assert await eventually(read_on_the_server)  # the read marker reached the server too
    assert marie.errors == []


async def test_one_unread_message_is_singular_in_french(widget_server, browser):
    conversation_id = await lea_conversation(widget_server, "Devoirs")
    noah = await child_id(widget_server.service, "Noah")
    marie = await sign_in(browser, widget_server, "Marie Tremblay", PHONE)
    await marie.page.get_by_label("Enfant").select_option(value=str(noah))
    await widget_server.service.sending.send(await actor_for(widget_server.service, NADIA), conversation_id,
                                             "c-homework", "Les devoirs sont en ligne.")
    await expect(marie.page.get_by_label("Enfant").locator("option", has_text=re.compile("^Léa"))).to_have_text(
        "Léa Tremblay — 1 non lu")
    await expect(marie.page).to_have_title(f"(1) {TITLE}")
    assert marie.errors == []
