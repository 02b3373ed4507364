"""Managing a conversation in the widget (issue 20), in headless Chromium:
rename (R3), remove (R5, the creator only), leave (R5) without ever leaving a
conversation with no school staff (R1); and a new conversation with the same
people about the same child offers the one that exists."""

from __future__ import annotations

import re

from playwright.async_api import expect

from tests.conftest import JEAN, MARIE, NADIA, actor_for
from tests.test_widget import (  # noqa: F401 - the fixtures
    PHONE,
    browser,
    embedded_only,
    eventually,
    lea_conversation,
    sign_in,
    widget_server,
)


async def members_of(server, conversation_id: int) -> set[str]:
    actor = await actor_for(server.service, NADIA)
    summary = await server.service.reading.conversation(actor, conversation_id)
    return {m["name"] for m in summary["members"]}


async def test_the_creator_renames_and_removes_the_teacher_cannot_remove_nor_leave_alone_the_parent_leaves(
        widget_server, browser):
    conversation_id = await lea_conversation(widget_server, "Sortie", NADIA, JEAN)
    marie = await sign_in(browser, widget_server, "Marie Tremblay")
    nadia = await sign_in(browser, widget_server, "Nadia Chabot")
    await marie.open_conversation("Sortie")
    await nadia.open_conversation("Sortie")

    # R3: any member renames; everyone sees it live.
    await marie.page.get_by_role("button", name="Gérer").click()
    manage = marie.page.get_by_role("dialog", name="Gérer la conversation")
    await manage.get_by_label("Nom de la conversation").fill("Sortie au zoo")
    await manage.get_by_role("button", name="Renommer").click()
    await expect(manage.get_by_role("status")).to_have_text("Conversation renommée.")
    await expect(nadia.page.locator(".conv-title-heading")).to_contain_text("Sortie au zoo")
    await expect(nadia.log()).to_contain_text("Marie Tremblay a renommé la conversation « Sortie au zoo ».")

    # R5: the creator removes Jean; the list of participants follows.
    await expect(manage.get_by_role("listitem")).to_have_count(3)
    await manage.get_by_role("button", name="Retirer Jean Tremblay de la conversation").click()
    await expect(manage.get_by_role("status")).to_have_text("Jean Tremblay ne fait plus partie de la conversation.")
    await expect(manage.get_by_role("listitem")).to_have_count(2)
    await marie.screenshot("desktop-manage-conversation")
    await manage.get_by_role("button", name="Fermer").click()
    await expect(nadia.log()).to_contain_text("Marie Tremblay a retiré Jean Tremblay de la conversation.")
    assert await members_of(widget_server, conversation_id) == {"Marie Tremblay", "Nadia Chabot"}

    # The teacher did not create it: no removal; as its only staff member she may not leave (R1).
    await nadia.page.get_by_role("button", name="Gérer").click()
    theirs = nadia.page.get_by_role("dialog", name="Gérer la conversation")
    await expect(theirs.get_by_role("listitem")).to_have_count(2)
    await expect(theirs.get_by_role("button", name=re.compile("^Retirer"))).to_have_count(0)
    await theirs.get_by_role("button", name="Quitter la conversation").click()
    await theirs.get_by_role("button", name="Oui, quitter").click()
    await expect(theirs.get_by_role("alert")).to_have_text(
        "Une conversation doit toujours compter au moins un membre du personnel de l'école.")
    await theirs.get_by_role("button", name="Fermer").click()

    # The parent leaves: the conversation is gone from her list, the teacher is told.
    await marie.page.get_by_role("button", name="Gérer").click()
    await manage.get_by_role("button", name="Quitter la conversation").click()
    await expect(manage).to_contain_text("Vous ne recevrez plus les messages de cette conversation.")
    await manage.get_by_role("button", name="Oui, quitter").click()
    await expect(manage).to_have_count(0)
    await expect(marie.page.locator(".conv-list")).not_to_contain_text("Sortie au zoo")
    await expect(nadia.log()).to_contain_text("Marie Tremblay a quitté la conversation.")
    assert await members_of(widget_server, conversation_id) == {"Nadia Chabot"}
    assert marie.errors == [] and nadia.errors == []


async def test_a_new_conversation_with_the_same_people_and_child_offers_the_existing_one(widget_server, browser):
    await lea_conversation(widget_server, "Cahier de maths")
    marie = await sign_in(browser, widget_server, "Marie Tremblay", PHONE)
    await marie.page.get_by_role("button", name="Nouvelle conversation").click()
    new = marie.page.get_by_role("dialog", name="Nouvelle conversation")
    await new.get_by_label(re.compile("Nadia Chabot")).check()
    await new.get_by_role("button", name="Créer la conversation").click()
    await expect(new.get_by_role("alert")).to_contain_text(
        "Vous avez déjà une conversation avec ces personnes : « Cahier de maths ».")
    await marie.screenshot("phone-same-conversation")
    await new.get_by_role("button", name="Ouvrir celle-ci").click()
    await expect(new).to_have_count(0)
    await expect(marie.page.locator(".conv-title-heading")).to_contain_text("Cahier de maths")

    # Pressing "create" again after the notice starts another one, as asked.
    await marie.page.get_by_role("button", name="Retour").click()
    await marie.page.get_by_role("button", name="Nouvelle conversation").click()
    await new.get_by_label(re.compile("Nadia Chabot")).check()
    await new.get_by_label("Nom de la conversation").fill("Autre sujet")
    await new.get_by_role("button", name="Créer la conversation").click()
    await expect(new.get_by_role("alert")).to_contain_text("Vous avez déjà une conversation")
    await new.get_by_role("button", name="Créer la conversation").click()
    await expect(marie.page.locator(".conv-title-heading")).to_contain_text("Autre sujet")

    async def conversations() -> int:
        return len(await widget_server.service.reading.list_conversations(await actor_for(widget_server.service, MARIE)))

    assert await eventually(lambda: conversations()) == 2
    assert marie.errors == []
