"""The widget's account screens in Chromium (R19–R21), with a real SMTP server:
a parent creates an account with the code read from the e-mail, adds a child
(R20) and sees its conversations; on a desktop and on a phone-size viewport.
Then signing in again in two steps, and ending a session from the list."""

from __future__ import annotations

import re
from typing import AsyncIterator

import pytest
from playwright.async_api import expect

from chat import demo
from tests.conftest import DIRECTION_FLEUVE, Server, actor_for, child_id
from tests.mailbox import Mailbox, mailbox  # noqa: F401 - the fixture
from tests.test_widget import DESKTOP, PHONE, Person, browser, embedded_only, open_widget, running_widget  # noqa: F401

SOPHIE = "sophie.cote@parent.test"
PASSWORD = "Bleuet-des-bois-7"


@pytest.fixture
async def mail_server(embedded_only, settings, engine, mailbox: Mailbox) -> AsyncIterator[Server]:
    """The hub outside demo mode (no picker), its e-mails going to ``mailbox``."""
    async with running_widget(settings, engine, smtp_url=mailbox.url) as server:
        yield server


async def create_account(person: Person, mailbox: Mailbox, email: str) -> None:
    page = person.page
    await page.get_by_role("button", name="Créer mon compte").click()
    await page.get_by_role("textbox", name="Courriel").fill(email)
    await page.get_by_label("Nouveau mot de passe").fill("court")
    seen = len(mailbox.messages)
    await page.get_by_role("button", name="Recevoir un code").click()
    # The browser's own check (minlength) or the server's (password.too_short) stops it.
    await expect(page.get_by_role("textbox", name="Code reçu par courriel")).to_have_count(0)
    await page.get_by_label("Nouveau mot de passe").fill(PASSWORD)
    await page.get_by_role("button", name="Recevoir un code").click()
    await expect(page.get_by_role("status").filter(has_text="un code vient d'y être envoyé")).to_be_visible()
    code = await mailbox.code_for(email, after=seen)
    await page.get_by_role("textbox", name="Code reçu par courriel").fill(code)
    await page.get_by_role("button", name="Activer mon compte").click()
    await expect(person.status()).to_have_text(re.compile("^(connecté|connected)$"))


async def add_noah(person: Person, server: Server) -> None:
    page = person.page
    noah = next(s for s in demo.build()["students"] if s["first_name"] == "Noah")
    await expect(page.get_by_text("Aucun enfant associé à ce compte.")).to_be_visible()
    await page.get_by_role("button", name="Ajouter un enfant").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label("Prénom de l'enfant").fill("Noah")
    await dialog.get_by_label("Nom de famille de l'enfant").fill("Tremblay")
    await dialog.get_by_label("Date de naissance").fill(noah["date_of_birth"])
    await dialog.get_by_label("Numéro de fiche (7 chiffres)").fill("0000001")
    await dialog.get_by_role("button", name="Ajouter un enfant").click()
    await expect(dialog.get_by_role("alert")).to_contain_text("Aucun enfant ne correspond")  # R20: one answer
    await dialog.get_by_label("Numéro de fiche (7 chiffres)").fill(noah["fiche"])
    await dialog.get_by_role("button", name="Ajouter un enfant").click()
    await expect(page.get_by_role("dialog")).to_have_count(0)
    await expect(page.get_by_label("Enfant", exact=True)).to_have_value(str(await child_id(server.service, "Noah")))


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
async def test_a_parent_creates_an_account_adds_a_child_and_sees_its_conversations(mail_server, mailbox, browser, size):
    sophie = await open_widget(browser, mail_server, size)
    await create_account(sophie, mailbox, SOPHIE)
    await add_noah(sophie, mail_server)
    # Associated (R20): a conversation the school opens with her about Noah reaches her live.
    direction = await actor_for(mail_server.service, DIRECTION_FLEUVE)
    sophie_actor = await actor_for(mail_server.service, SOPHIE)
    await mail_server.service.membership.create(direction, [sophie_actor.id],
                                                await child_id(mail_server.service, "Noah"), "Rentrée de Noah")
    await expect(sophie.page.locator(".conv-list").get_by_role("button", name=re.compile("Rentrée de Noah"))
                 ).to_be_visible()
    await sophie.screenshot(f"accounts-child-added-{size['width']}")
    assert sophie.errors == []


async def test_signing_in_again_takes_the_password_then_the_e_mailed_code_and_a_session_ends_from_the_list(
        mail_server, mailbox, browser):
    first = await open_widget(browser, mail_server)
    await create_account(first, mailbox, SOPHIE)

    second = await open_widget(browser, mail_server, PHONE)  # another device
    page = second.page
    await page.get_by_role("textbox", name="Courriel").fill(SOPHIE)
    await page.get_by_label("Mot de passe").fill("Pas-le-bon-9")
    await page.get_by_role("button", name="Continuer").click()
    await expect(page.get_by_role("alert")).to_contain_text("Courriel ou mot de passe incorrect")
    await page.get_by_label("Mot de passe").fill(PASSWORD)
    seen = len(mailbox.messages)
    await page.get_by_role("button", name="Continuer").click()
    code = await mailbox.code_for(SOPHIE, after=seen)
    await page.get_by_role("textbox", name="Code reçu par courriel").fill(code)
    await page.get_by_role("button", name="Se connecter").click()
    await expect(second.status()).to_have_text("connecté")

    # From the phone, end the desktop's session: the desktop is signed out (R21).
    await page.get_by_role("button", name="Mes sessions").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog.get_by_text("cet appareil")).to_have_count(1)
    await dialog.get_by_role("button", name="Fermer cette session").click()
    await expect(first.page.get_by_role("textbox", name="Courriel")).to_be_visible()
    await expect(dialog.get_by_role("listitem")).to_have_count(1)
    await expect(second.status()).to_have_text("connecté")
    assert first.errors == [] and second.errors == []
