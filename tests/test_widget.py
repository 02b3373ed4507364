"""The web chat widget (issue 7), end to end in headless Chromium.

A real uvicorn server in demo mode serves ``chat/static/``; Playwright drives
Debian's Chromium (``/usr/bin/chromium``, no browser download) in one browser
context per person, so each has their own storage and their own WebSocket.
Every wait is on something a person would see (a text, a badge, a disabled
field), bounded by ``TIMEOUT_MS``; nothing sleeps for a fixed time.

Screenshots of the main screens go to ``screenshots/`` at the repository root
(git-ignored), at desktop (1280×800) and phone (390×844) size.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import AsyncIterator
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn
from playwright.async_api import Browser, Page, async_playwright, expect
from sqlalchemy import func, select

from chat.clock import Clock
from chat.config import Settings
from chat.app import App
from chat.storage.models import Message
from chat.web import create_app
from tests import files
from tests.notifiers import install_notifier, notifier_for
from tests.conftest import (
    DIRECTION,
    MARIE,
    NADIA,
    Server,
    actor_for,
    child_id,
    free_socket,
    person_by_email,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# A bound on waiting for something to appear, never a timing assertion.
TIMEOUT_MS = 30_000

MONTREAL = ZoneInfo("America/Toronto")
FRIDAY_EVENING = datetime(2026, 10, 9, 21, 40, tzinfo=MONTREAL)  # Monday 12 is Thanksgiving (QC holiday)
TUESDAY_8AM = datetime(2026, 10, 13, 8, 0, tzinfo=MONTREAL)

# What the widget keeps in localStorage for unsent messages (every person's outbox).
OUTBOX = "() => Object.keys(localStorage).filter(k => k.endsWith('.outbox')).flatMap(k => JSON.parse(localStorage[k]))"

expect.set_options(timeout=TIMEOUT_MS)


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture
def embedded_only(backend: str) -> None:
    if backend != "embedded":
        # The widget speaks only the protocol, which the rest of the suite checks on
        # PostgreSQL + Redis; one browser run (on SQLite + the in-process broker)
        # keeps CI time down without losing coverage.
        pytest.skip("browser tests run on the embedded backend only")


@pytest.fixture
async def widget_server(embedded_only, settings: Settings, engine) -> AsyncIterator[Server]:
    """Like conftest's ``server``, in demo mode, with the page's own origin allowed."""
    async with running_widget(settings, engine, demo=True) as server:
        yield server


@contextlib.asynccontextmanager
async def running_widget(settings: Settings, engine, **changes) -> AsyncIterator[Server]:
    """The hub on a free port with ``changes`` to its settings, the page's own origin allowed."""
    sock = free_socket()
    port = sock.getsockname()[1]
    origin = f"http://127.0.0.1:{port}"
    demo_settings = settings.with_(allowed_origins=(origin,), port=port, **changes)
    service = App(demo_settings, engine)
    await service.start()
    app = create_app(demo_settings, service=service)
    config = uvicorn.Config(app, log_level="warning", ws_max_size=demo_settings.hard_frame_bytes,
                            ws_per_message_deflate=False, lifespan="on", timeout_graceful_shutdown=2)
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve(sockets=[sock]))
    while not srv.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    yield Server(origin, f"ws://127.0.0.1:{port}/ws", service, demo_settings)
    srv.should_exit = True
    await task
    sock.close()
    await service.stop()


@pytest.fixture
async def browser(embedded_only) -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (bash .ci/run does)")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


class Person:
    """One person's browser context and page, and what the page complained about."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.context = page.context
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def status(self):
        return self.page.locator(".topbar .status")

    def log(self):
        return self.page.get_by_role("log")

    def message(self, text: str):
        return self.log().locator(".msg", has_text=text)

    def composer(self):
        return self.page.get_by_label("Votre message")

    async def send(self, text: str) -> None:
        await self.composer().fill(text)
        await self.page.get_by_role("button", name="Envoyer").click()

    async def open_conversation(self, title: str) -> None:
        await self.page.locator(".conv-list").get_by_role("button", name=re.compile(re.escape(title))).click()
        await expect(self.page.locator(".conv-title-heading")).to_contain_text(title)

    async def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(exist_ok=True)
        await self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


async def open_widget(browser: Browser, server: Server, size: dict = DESKTOP) -> Person:
    context = await browser.new_context(viewport=size, locale="fr-CA", timezone_id="America/Toronto")
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    person = Person(page)
    await page.goto(server.url + "/")
    return person


async def sign_in(browser: Browser, server: Server, name: str, size: dict = DESKTOP) -> Person:
    """Open the widget and pick a demo person; wait until the connection is live."""
    person = await open_widget(browser, server, size)
    await person.page.get_by_role("button", name=re.compile("^" + re.escape(name))).click()
    await expect(person.status()).to_have_text(re.compile("^(connecté|connected)$"))
    return person


async def lea_conversation(server: Server, name: str, *emails: str) -> int:
    """A conversation about Léa that Marie created with these people (Nadia by default)."""
    marie = await actor_for(server.service, MARIE)
    people = [(await actor_for(server.service, e)).id for e in emails or (NADIA,)]
    summary = await server.service.membership.create(marie, people, await child_id(server.service, "Léa"), name)
    return summary["id"]


async def stored_messages(server: Server, text: str) -> int:
    async with server.service.sessions() as session:
        return (await session.execute(select(func.count()).select_from(Message).where(Message.text == text))).scalar_one()


async def eventually(probe, timeout: float = TIMEOUT_MS / 1000):
    """Poll ``probe`` (tiny steps) until it gives a truthy value, within ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.05)


class SettableClock(Clock):
    """The notifier's wall clock, moved by the test (R15 without waiting for
    Tuesday); its monotonic clock and its sleeping are the real ones."""

    def __init__(self, now: datetime) -> None:
        self.now = now.astimezone(timezone.utc)

    def time(self) -> float:
        return self.now.timestamp()

    def utcnow(self) -> datetime:
        return self.now

    def set(self, moment: datetime) -> None:
        self.now = moment.astimezone(timezone.utc)


# -- demo mode is off by default ---------------------------------------------------------------------
async def test_demo_people_answer_404_demo_off_when_demo_mode_is_off(server):
    """The default settings (and `serve` without --demo) have no password-less picker."""
    assert server.settings.demo is False
    async with httpx.AsyncClient(base_url=server.url) as http:
        listing = await http.get("/api/demo/people")
        sign_in_attempt = await http.post("/api/demo/people", json={"person_id": 1})
    for answer in (listing, sign_in_attempt):
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "demo.off"
        assert "token" not in answer.text


async def test_without_demo_mode_the_widget_asks_for_e_mail_and_password_and_shows_no_picker(server, browser):
    page = (await open_widget(browser, server)).page
    await expect(page.get_by_role("textbox", name="Courriel")).to_be_visible()  # R19
    await expect(page.get_by_label("Mot de passe")).to_be_visible()
    await expect(page.get_by_text("Mode démo")).to_have_count(0)
    # An operator's access token still works, from the folded section.
    await page.get_by_text("Se connecter avec un jeton d'accès").click()
    await page.get_by_role("textbox", name="Jeton d'accès").fill("not-a-token")
    await page.get_by_role("button", name="Se connecter").click()
    await expect(page.get_by_role("alert")).to_have_text("Le jeton d'accès est invalide.")


# -- the flows of the issue -----------------------------------------------------------------------------
async def test_parent_and_teacher_exchange_live_react_attach_edit_and_retract(widget_server, browser):
    marie = await sign_in(browser, widget_server, "Marie Tremblay")
    nadia = await sign_in(browser, widget_server, "Nadia Chabot")

    # The parent picks the child, then starts a conversation with Léa's teacher (R2).
    await marie.page.get_by_label("Enfant").select_option(label="Léa Tremblay")
    await marie.page.get_by_role("button", name="Nouvelle conversation").click()
    await marie.page.get_by_label("Nom de la conversation").fill("Cahier de maths")
    await marie.page.get_by_label(re.compile("Nadia Chabot")).check()
    await marie.page.get_by_role("button", name="Créer la conversation").click()
    await expect(marie.page.locator(".conv-title-heading")).to_contain_text("Cahier de maths")
    await expect(marie.page.locator(".notice")).to_contain_text("Le délai de réponse peut varier")  # R11

    # The teacher sees it appear and opens it; the parent types (shown), then sends (live).
    item = nadia.page.locator(".conv-list").get_by_role("button", name=re.compile("Cahier de maths"))
    await expect(item).to_be_visible()
    await nadia.open_conversation("Cahier de maths")
    first = "Bonjour Madame Chabot, Léa a oublié son cahier de maths."
    await marie.composer().fill(first)
    await expect(nadia.page.locator(".typing")).to_have_text("Marie Tremblay écrit…")
    await marie.page.get_by_role("button", name="Envoyer").click()
    await expect(marie.message(first).locator(".msg-status")).to_contain_text("envoyé")
    await expect(nadia.message(first)).to_have_count(1)
    await expect(nadia.page.locator(".typing")).to_have_text("")
    await expect(item.locator(".badge")).to_have_count(0)  # on screen is read

    # R6: the teacher reacts; the parent sees the count live.
    await nadia.message(first).get_by_role("button", name="Réagir").click()
    await nadia.message(first).get_by_role("button", name="Réagir avec 👍").click()
    chip = marie.message(first).locator(".reactions .chip")
    await expect(chip).to_contain_text("👍")
    await expect(chip.locator(".count")).to_have_text("1")
    await expect(chip).to_have_attribute("aria-pressed", "false")
    await expect(nadia.message(first).locator(".reactions .chip")).to_have_attribute("aria-pressed", "true")

    # R7: an image goes up with a progress bar and is shown to the teacher; a legacy .doc is refused clearly.
    await marie.page.locator("#composer-file").set_input_files(
        [{"name": "dessin.png", "mimeType": "image/png", "buffer": files.png_with_text()}])
    await expect(marie.page.locator(".uploads .upload")).to_contain_text("dessin.png")
    await expect(marie.page.locator(".uploads progress")).to_have_count(0)  # done
    await marie.send("Voici son dessin.")
    image = nadia.message("Voici son dessin.").get_by_role("img", name="Image jointe : dessin.png")
    await expect(image).to_be_visible()
    assert await eventually(lambda: image.evaluate("img => img.complete && img.naturalWidth")) == 40
    await marie.page.locator("#composer-file").set_input_files(
        [{"name": "bulletin.doc", "mimeType": "application/msword", "buffer": files.legacy_doc()}])
    await expect(marie.page.locator(".uploads .error")).to_contain_text(
        "Les documents Word anciens (.doc) ne sont pas acceptés")
    await marie.page.get_by_role("button", name="Retirer la pièce jointe bulletin.doc").click()
    await expect(marie.page.locator(".uploads .upload")).to_have_count(0)
    # A program is refused by its content; the parent reads the file's name, not the server's MIME type.
    await marie.page.locator("#composer-file").set_input_files(
        [{"name": "photo.jpg", "mimeType": "image/jpeg", "buffer": files.pe_executable()}])
    refused = marie.page.locator(".uploads .error")
    await expect(refused).to_contain_text("« photo.jpg » n'est pas d'un type accepté. Types acceptés : JPG, PNG")
    assert "application/" not in await refused.inner_text()
    await marie.page.get_by_role("button", name="Retirer la pièce jointe photo.jpg").click()
    await expect(marie.page.locator(".uploads .upload")).to_have_count(0)

    # R8: the author edits, the teacher sees the new text marked as edited; then retracts it.
    edited = "Bonjour Madame Chabot, Léa a oublié son cahier de maths et son étui."
    await marie.message(first).get_by_role("button", name="Modifier").click()
    await marie.page.get_by_label("Nouveau texte du message").fill(edited)
    await marie.page.get_by_role("button", name="Enregistrer").click()
    await expect(nadia.message(edited)).to_contain_text("(modifié)")
    await expect(nadia.message(first)).to_have_count(0)
    await nadia.screenshot("desktop-conversation-teacher")
    await marie.screenshot("desktop-conversation-parent")

    await marie.message(edited).get_by_role("button", name="Retirer").click()
    await marie.page.get_by_role("button", name="Oui, retirer").click()
    await expect(nadia.log()).to_contain_text("Message retiré")
    await expect(nadia.message("oublié son cahier")).to_have_count(0)
    await expect(marie.message("oublié son cahier")).to_have_count(0)
    # Only the author may edit: the teacher has no edit button on the parent's messages.
    await expect(nadia.message("Voici son dessin.").get_by_role("button", name="Modifier")).to_have_count(0)
    assert marie.errors == [] and nadia.errors == []


async def test_parent_back_from_a_network_cut_sees_every_message_once_and_the_outbox_goes_out_once(
        widget_server, browser):
    await lea_conversation(widget_server, "Sortie au musée")
    marie = await sign_in(browser, widget_server, "Marie Tremblay")
    nadia = await sign_in(browser, widget_server, "Nadia Chabot")
    await marie.open_conversation("Sortie au musée")
    await nadia.open_conversation("Sortie au musée")
    await nadia.send("Avant la coupure")
    await expect(marie.message("Avant la coupure")).to_have_count(1)

    await marie.context.set_offline(True)
    await expect(marie.status()).to_have_text("hors ligne")
    written_while_away = [f"Message {n} pendant la coupure" for n in range(1, 4)]
    for text in written_while_away:
        await nadia.send(text)
        await expect(nadia.message(text).locator(".msg-status")).to_contain_text("envoyé")
    # The parent writes while offline: the message waits in the outbox (localStorage).
    offline_text = "Écrit hors ligne : Léa sera absente demain."
    await marie.send(offline_text)
    await expect(marie.message(offline_text).locator(".msg-status")).to_contain_text("envoi…")
    outbox = await marie.page.evaluate(OUTBOX)
    assert [(item["text"], item["state"]) for item in outbox] == [(offline_text, "sending")]
    assert re.fullmatch(r"[0-9a-f-]{36}", outbox[0]["client_id"])
    await expect(marie.page.locator(".composer-note")).to_contain_text("Hors ligne")
    await marie.screenshot("desktop-offline")

    await marie.context.set_offline(False)
    await expect(marie.status()).to_have_text("connecté")
    for text in ["Avant la coupure", *written_while_away]:
        await expect(marie.message(text)).to_have_count(1)
    await expect(marie.message(offline_text).locator(".msg-status")).to_contain_text("envoyé")
    await expect(nadia.message(offline_text)).to_have_count(1)
    # Nothing doubled anywhere: the replay is applied once, the outbox sent once.
    await expect(marie.log().locator(".msg")).to_have_count(5)
    await expect(nadia.log().locator(".msg")).to_have_count(5)
    assert await stored_messages(widget_server, offline_text) == 1
    assert await marie.page.evaluate(OUTBOX) == []
    assert marie.errors == [] and nadia.errors == []


async def test_a_message_typed_offline_survives_closing_the_page_and_is_sent_at_the_next_sign_in(
        widget_server, browser):
    conversation_id = await lea_conversation(widget_server, "Autobus")
    nadia = await sign_in(browser, widget_server, "Nadia Chabot")
    await nadia.open_conversation("Autobus")
    marie = await sign_in(browser, widget_server, "Marie Tremblay")
    await marie.open_conversation("Autobus")
    await nadia.send("Avant la fermeture")
    await expect(marie.message("Avant la fermeture")).to_have_count(1)
    await marie.context.set_offline(True)
    await expect(marie.status()).to_have_text("hors ligne")
    text = "Léa prendra l'autobus 12 ce soir."
    await marie.send(text)
    await expect(marie.message(text).locator(".msg-status")).to_contain_text("envoi…")
    [kept] = await marie.page.evaluate(OUTBOX)
    await marie.page.close()
    await nadia.send("Pendant la fermeture")

    # Same browser (same localStorage), a new tab: still signed in, in the same session (R21).
    await marie.context.set_offline(False)
    page = await marie.context.new_page()
    sent_frames: list[dict] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent_frames.append(json.loads(payload))))
    await page.goto(widget_server.url + "/")
    await expect(nadia.message(text)).to_have_count(1)
    assert await stored_messages(widget_server, text) == 1
    # The new tab resumed from the position kept in localStorage (seq 2: created, then Nadia's message).
    assert sent_frames[0]["type"] == "resume" and sent_frames[0]["positions"] == {str(conversation_id): 2}
    sends = [f for f in sent_frames if f["type"] == "message.send"]
    assert [(f["text"], f["client_id"]) for f in sends] == [(text, kept["client_id"])]
    again = Person(page)
    await again.open_conversation("Autobus")
    for shown in ("Avant la fermeture", "Pendant la fermeture", text):
        await expect(again.message(shown)).to_have_count(1)
    await expect(again.message(text).locator(".msg-status")).to_contain_text("envoyé")
    assert again.errors == []


async def test_the_principal_locks_from_the_archive_and_the_parents_composer_shows_it(widget_server, browser):
    conversation_id = await lea_conversation(widget_server, "Propos en classe")
    marie_actor = await actor_for(widget_server.service, MARIE)
    sent = await widget_server.service.sending.send(marie_actor, conversation_id, "c-retracted", "Texte retiré ensuite")
    await widget_server.service.messages.retract(marie_actor, sent["message_id"])
    marie = await sign_in(browser, widget_server, "Marie Tremblay")
    await marie.open_conversation("Propos en classe")
    await expect(marie.composer()).to_be_enabled()

    helene = await sign_in(browser, widget_server, "Hélène Bisson")
    await helene.page.get_by_role("button", name="Archives de la direction").click()
    archive = helene.page.get_by_role("dialog", name="Archives de l'école")
    row = archive.locator(".archive-item", has_text="Propos en classe")
    await expect(row).to_be_visible()
    # R9: direction reads retracted text in the archive.
    await row.get_by_role("button", name="Lire l'archive").click()
    await expect(archive.locator(".archive-msg.retracted")).to_contain_text("Texte retiré ensuite")
    await expect(archive.locator(".archive-msg.retracted")).to_contain_text("retiré par l'auteur")
    await helene.screenshot("desktop-archive-conversation")
    await archive.get_by_role("button", name="Retour à la liste").click()

    # R10: lock with a reason; the parent's composer is disabled and says why.
    await archive.locator(".archive-item", has_text="Propos en classe").get_by_role("button", name="Verrouiller").click()
    lock = helene.page.get_by_role("dialog", name="Verrouiller la conversation")
    await lock.get_by_label("Motif").fill("Propos inappropriés")
    await lock.get_by_role("button", name="Verrouiller").click()
    await expect(archive.locator(".archive-item", has_text="Propos en classe")
                 .get_by_role("button", name="Déverrouiller")).to_be_visible()

    await expect(marie.page.locator(".locked-banner")).to_contain_text("La direction a verrouillé cette conversation")
    await expect(marie.page.locator(".locked-banner")).to_contain_text("Motif : Propos inappropriés")
    await expect(marie.composer()).to_be_disabled()
    await expect(marie.page.get_by_role("button", name="Envoyer")).to_be_disabled()
    await expect(marie.page.locator(".composer-note")).to_have_text("Conversation verrouillée : l'envoi est désactivé.")
    await expect(marie.log()).to_contain_text("La direction a verrouillé la conversation.")
    await marie.screenshot("desktop-locked")

    await archive.locator(".archive-item", has_text="Propos en classe").get_by_role("button", name="Déverrouiller").click()
    await expect(marie.composer()).to_be_enabled()
    await expect(marie.page.locator(".locked-banner")).to_have_count(0)
    await expect(marie.log()).to_contain_text("La direction a déverrouillé la conversation.")
    assert marie.errors == [] and helene.errors == []


async def test_a_queued_message_refused_on_reconnection_shows_failed_with_the_servers_reason(widget_server, browser):
    conversation_id = await lea_conversation(widget_server, "Fermée pendant l'absence")
    marie = await sign_in(browser, widget_server, "Marie Tremblay")
    await marie.open_conversation("Fermée pendant l'absence")
    await marie.context.set_offline(True)
    await expect(marie.status()).to_have_text("hors ligne")
    text = "Envoyé trop tard"
    await marie.send(text)
    await expect(marie.message(text).locator(".msg-status")).to_contain_text("envoi…")
    helene = await actor_for(widget_server.service, DIRECTION)
    await widget_server.service.membership.set_lock(helene, conversation_id, True)  # R10, while Marie is away

    await marie.context.set_offline(False)
    status = marie.message(text).locator(".msg-status")
    await expect(status).to_contain_text("échec")
    await expect(status).to_contain_text("La direction a verrouillé cette conversation")  # the server's text
    await expect(marie.composer()).to_be_disabled()
    await marie.message(text).get_by_role("button", name="Abandonner").click()
    await expect(marie.message(text)).to_have_count(0)
    assert await marie.page.evaluate(OUTBOX) == []
    assert await stored_messages(widget_server, text) == 0


async def test_the_bell_shows_a_held_notification_only_when_working_hours_resume(widget_server, browser):
    clock = SettableClock(FRIDAY_EVENING)
    # The notifier's parts hold the clock they were built with: the running
    # notifier is replaced by one on the test's clock (service.stop() stops it).
    service = widget_server.service
    await service.notifier.stop()
    install_notifier(service, notifier_for(service, clock=clock)).start()
    await lea_conversation(widget_server, "Question du soir")
    nadia = await sign_in(browser, widget_server, "Nadia Chabot")
    marie = await sign_in(browser, widget_server, "Marie Tremblay")
    await marie.open_conversation("Question du soir")
    await marie.send("Bonsoir, une question pour demain.")
    # R15: the message itself is live at once...
    item = nadia.page.locator(".conv-list").get_by_role("button", name=re.compile("Question du soir"))
    await expect(item.locator(".badge")).to_contain_text("1")
    # ...but the teacher's notification is held: no badge, an empty feed.
    bell = nadia.page.get_by_role("button", name=re.compile("^Notifications"))
    await expect(bell.locator(".badge")).to_be_hidden()
    await bell.click()
    feed = nadia.page.get_by_role("dialog", name="Notifications")
    await expect(feed).to_contain_text("Aucune notification.")
    await feed.get_by_role("button", name="Fermer").click()

    clock.set(TUESDAY_8AM)
    await widget_server.service.notifier.release_due()
    await expect(bell.locator(".badge")).to_have_text("1")
    await expect(bell).to_have_accessible_name(re.compile("1 notification non lue$"))  # singular (Intl.PluralRules)
    await bell.click()
    entry = feed.locator(".feed-item", has_text="Marie Tremblay vous a écrit (Question du soir).")
    await expect(entry).to_contain_text("nouveau")
    await nadia.screenshot("desktop-bell")
    # R16: opening one shows it and marks it read.
    await entry.get_by_role("button", name=re.compile("Marie Tremblay vous a écrit")).click()
    await expect(entry.get_by_role("button", name="Ouvrir la conversation")).to_be_visible()
    await expect(entry).not_to_contain_text("nouveau")
    await expect(bell.locator(".badge")).to_be_hidden()
    await entry.get_by_role("button", name="Ouvrir la conversation").click()
    await expect(nadia.message("Bonsoir, une question pour demain.")).to_have_count(1)
    await expect(item.locator(".badge")).to_have_count(0)  # the read marker moved
    assert marie.errors == [] and nadia.errors == []


async def test_announcements_with_the_megaphone_reactions_preferences_per_child_and_the_language_switch(
        widget_server, browser):
    marie = await sign_in(browser, widget_server, "Marie Tremblay")
    helene = await sign_in(browser, widget_server, "Hélène Bisson")

    # R13: direction posts to the whole school.
    await helene.page.get_by_role("button", name=re.compile("^Annonces")).click()
    post = helene.page.get_by_role("dialog", name="Annonces")
    await post.get_by_label("Destinataires").select_option(label="Toute l'école : École primaire des Érables")
    await post.get_by_label("Texte de l'annonce").fill("Journée pédagogique vendredi : le service de garde est ouvert.")
    await post.get_by_role("button", name="Publier").click()
    await expect(post.get_by_role("status")).to_contain_text("Annonce publiée")

    # The family sees it live, with the megaphone, and reacts (they do not reply).
    button = marie.page.get_by_role("button", name=re.compile("^Annonces"))
    await expect(button.locator(".badge")).to_have_text("1")
    await button.click()
    panel = marie.page.get_by_role("dialog", name="Annonces")
    announcement = panel.locator(".announcement", has_text="Journée pédagogique vendredi")
    await expect(announcement.get_by_role("img", name="Annonce (mégaphone)")).to_be_visible()
    await expect(announcement).to_contain_text("De Hélène Bisson")
    await expect(announcement).to_contain_text("Pour Léa")
    await announcement.get_by_role("button", name=re.compile("^❤️")).click()
    await expect(announcement.get_by_role("button", name=re.compile("^❤️"))).to_have_attribute("aria-pressed", "true")
    await expect(post.locator(".announcement .chip", has_text="❤️")).to_contain_text("1")  # the author sees it live
    await expect(button.locator(".badge")).to_be_hidden()  # shown is read
    await marie.screenshot("desktop-announcements")
    await panel.get_by_role("button", name="Fermer").click()

    # R17: notifications switched off per child and per kind.
    await marie.page.get_by_role("button", name="Préférences de notification").click()
    prefs = marie.page.get_by_role("dialog", name="Préférences de notification")
    await expect(prefs.get_by_role("group", name="Pour Léa Tremblay")).to_be_visible()
    await prefs.get_by_label("Messages", exact=True).uncheck()
    await expect(prefs.get_by_role("status")).to_have_text("Préférence enregistrée.")
    await marie.screenshot("desktop-preferences")
    await prefs.get_by_role("button", name="Fermer").click()
    actor = await actor_for(widget_server.service, MARIE)
    lea = await child_id(widget_server.service, "Léa")
    saved = (await widget_server.service.notifier.preferences(actor))["preferences"]
    assert saved == [{"child_id": lea, "kind": "message", "enabled": False}]
    await marie.page.get_by_label("Enfant").select_option(label="Noah Tremblay")
    await marie.page.get_by_role("button", name="Préférences de notification").click()
    await expect(prefs.get_by_role("group", name="Pour Noah Tremblay")).to_be_visible()
    await expect(prefs.get_by_label("Messages", exact=True)).to_be_checked()  # the other child is untouched
    await prefs.get_by_role("button", name="Fermer").click()

    # R22: French by default, English on request; the choice is remembered.
    await expect(marie.page.locator("html")).to_have_attribute("lang", "fr")
    await marie.page.get_by_role("button", name="EN", exact=True).click()
    await expect(marie.status()).to_have_text("connected")
    await expect(marie.page.get_by_role("heading", name="Conversations")).to_be_visible()
    await expect(marie.page.get_by_role("button", name="Sign out")).to_be_visible()
    await expect(marie.page.locator("html")).to_have_attribute("lang", "en")
    await marie.screenshot("desktop-english")

    async def stored_language(wanted: str) -> bool:
        return (await person_by_email(widget_server.service, MARIE)).language == wanted

    # The choice reaches the server: stored with Marie, and her connection's refusals follow it.
    assert await eventually(lambda: stored_language("en"))
    refusal = await marie.page.evaluate("""() => window.chatWidget.conn.request(
        {type: "conversation.history", conversation_id: 987654321}).catch((err) => err.message)""")
    assert refusal.startswith("Conversation not found"), refusal
    await marie.page.reload()
    await expect(marie.status()).to_have_text("connected")
    await marie.page.get_by_role("button", name="FR", exact=True).click()
    await expect(marie.status()).to_have_text("connecté")
    assert await eventually(lambda: stored_language("fr"))
    assert marie.errors == [] and helene.errors == []


async def test_adding_people_with_or_without_the_earlier_history(widget_server, browser):
    marie_actor = await actor_for(widget_server.service, MARIE)
    shared = await lea_conversation(widget_server, "Avec historique")
    private = await lea_conversation(widget_server, "Sans historique")
    await widget_server.service.sending.send(marie_actor, shared, "c-shared", "Premier message partagé")
    await widget_server.service.sending.send(marie_actor, private, "c-private", "Premier message privé")
    marie = await sign_in(browser, widget_server, "Marie Tremblay")

    for title, choice in (("Avec historique", "Leur montrer l'historique de la conversation"),
                          ("Sans historique", "Ne pas leur montrer l'historique")):
        await marie.open_conversation(title)
        await marie.page.get_by_role("button", name="Ajouter des personnes").click()
        dialog = marie.page.get_by_role("dialog", name="Ajouter des personnes")
        await dialog.get_by_label(re.compile("Jean Tremblay")).check()
        await dialog.get_by_label(choice).check()
        if title == "Avec historique":
            await marie.screenshot("desktop-add-people")
        await dialog.get_by_role("button", name="Ajouter").click()
        await expect(dialog).to_have_count(0)
        await expect(marie.log()).to_contain_text("Marie Tremblay a ajouté Jean Tremblay")

    # Jean reads English (his language in the directory): the widget follows it (R22).
    jean = await sign_in(browser, widget_server, "Jean Tremblay")
    await expect(jean.status()).to_have_text("connected")
    await jean.open_conversation("Avec historique")
    await expect(jean.message("Premier message partagé")).to_have_count(1)
    await expect(jean.log()).to_contain_text("Marie Tremblay added Jean Tremblay; the conversation history was shared.")
    await jean.open_conversation("Sans historique")
    await expect(jean.log()).to_contain_text("Marie Tremblay added Jean Tremblay, without the conversation history.")
    await expect(jean.message("Premier message privé")).to_have_count(0)
    await jean.screenshot("desktop-added-without-history")
    assert marie.errors == [] and jean.errors == []


# -- the main screens at both sizes ---------------------------------------------------------------------
@pytest.mark.parametrize("size_name", ["desktop", "phone"])
async def test_main_screens_are_usable_and_photographed_at_desktop_and_phone_size(widget_server, browser, size_name):
    size = DESKTOP if size_name == "desktop" else PHONE
    conversation_id = await lea_conversation(widget_server, "Devoirs de Léa", NADIA, DIRECTION)
    nadia_actor = await actor_for(widget_server.service, NADIA)
    marie_actor = await actor_for(widget_server.service, MARIE)
    await widget_server.service.sending.send(marie_actor, conversation_id, "c-1", "Bonjour! Léa a-t-elle des devoirs?")
    answer = await widget_server.service.sending.send(nadia_actor, conversation_id, "c-2",
                                                      "Oui : lire les pages 12 à 15 pour jeudi.")
    await widget_server.service.messages.react(marie_actor, answer["message_id"], "👍", add=True)

    person = await open_widget(browser, widget_server, size)
    page = person.page
    await expect(page.get_by_role("heading", name="Mode démo : choisissez une personne")).to_be_visible()
    await person.screenshot(f"{size_name}-signin")
    await page.get_by_role("button", name=re.compile("^Marie Tremblay")).click()
    await expect(person.status()).to_have_text("connecté")
    await expect(page.locator(".conv-list")).to_contain_text("Devoirs de Léa")
    await person.screenshot(f"{size_name}-conversations")
    await person.open_conversation("Devoirs de Léa")
    await expect(person.message("pages 12 à 15")).to_be_visible()
    back = page.get_by_role("button", name="Retour aux conversations")
    if size_name == "phone":
        # One pane at a time: the list gives way to the conversation, with a way back.
        await expect(page.locator(".list-pane")).to_be_hidden()
        await expect(back).to_be_visible()
    else:
        await expect(page.locator(".list-pane")).to_be_visible()
        await expect(back).to_be_hidden()
    await person.screenshot(f"{size_name}-conversation")
    assert await page.evaluate("() => document.documentElement.scrollWidth") <= size["width"]

    await page.get_by_role("button", name=re.compile("^Notifications")).click()
    await expect(page.get_by_role("dialog", name="Notifications")).to_contain_text("Nadia Chabot vous a écrit")
    await person.screenshot(f"{size_name}-bell")
    await page.keyboard.press("Escape")
    await page.get_by_role("button", name="Préférences de notification").click()
    await expect(page.get_by_role("dialog", name="Préférences de notification").get_by_label("Annonces", exact=True)).to_be_checked()
    await person.screenshot(f"{size_name}-preferences")
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("dialog")).to_have_count(0)

    # Keyboard and labels: every control has a name, every field a label.
    unnamed = await page.evaluate("""() => [...document.querySelectorAll('button, input, select, textarea')]
        .filter(el => !el.closest('[hidden]') && el.type !== 'file')
        .filter(el => !(el.getAttribute('aria-label') || el.labels?.length || el.textContent.trim()))
        .map(el => el.outerHTML.slice(0, 80))""")
    assert unnamed == []
    if size_name == "phone":
        await back.click()
        await expect(page.locator(".list-pane")).to_be_visible()
        await expect(page.locator(".conv-list").get_by_role("button", name=re.compile("Devoirs de Léa"))).to_be_focused()

    direction = await sign_in(browser, widget_server, "Hélène Bisson", size)
    await direction.open_conversation("Devoirs de Léa")
    await expect(direction.page.get_by_role("button", name="Verrouiller")).to_be_visible()
    await direction.screenshot(f"{size_name}-direction-conversation")
    await direction.page.get_by_role("button", name="Archives de la direction").click()
    await expect(direction.page.get_by_role("dialog", name="Archives de l'école")).to_contain_text("Devoirs de Léa")
    await direction.screenshot(f"{size_name}-archive")
    assert person.errors == [] and direction.errors == []
