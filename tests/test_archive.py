"""Direction's archive (R9), the append-only audit log, and locks (R10), end to end.

The direction of a school reads, searches and exports every conversation of
that school, including retracted messages and every version of edited ones;
every access is in the audit log, which nobody can change.  While direction
has locked a conversation, nobody posts, edits, retracts, reacts, adds or
renames in it.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import DBAPIError

from chat.storage.models import (
    AuditEntry,
    Conversation,
    Event,
    Message,
    MessageVersion,
    Participant,
    Person,
    Reaction,
    School,
)
from tests import files
from tests.conftest import (
    DIRECTION,
    DIRECTION_FLEUVE,
    JEAN,
    MARIE,
    NADIA,
    SECRETARIAT,
    child_id,
    person_by_email,
)

PAUL = "paul.girard@erables.test"     # teacher at Érables, not in Léa's group
SIMON = "simon.leclerc@fleuve.test"   # Noah's teacher at Fleuve


# -- helpers ---------------------------------------------------------------------------------------
async def get(server, email: str, path: str, **params) -> httpx.Response:
    token = await server.token(email)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        return await http.get(path, params={k: v for k, v in params.items() if v is not None},
                              headers={"Authorization": f"Bearer {token}"})


async def ok(server, email: str, path: str, **params) -> dict:
    response = await get(server, email, path, **params)
    assert response.status_code == 200, response.text
    return response.json()


async def pid(server, email: str) -> int:
    return (await person_by_email(server.service, email)).id


async def school_id(server, code: str) -> int:
    async with server.service.sessions() as session:
        return (await session.execute(select(School.id).where(School.code == code))).scalar_one()


async def create(server, client, child: str | None, *emails: str, name: str | None = None) -> int:
    fields = {"participants": [await pid(server, e) for e in emails]}
    if child is not None:
        fields["child_id"] = await child_id(server.service, child)
    if name is not None:
        fields["name"] = name
    return (await client.request("conversation.create", **fields))["conversation"]["id"]


async def send(client, cid: int, client_id: str, text: str, **extra) -> int:
    return (await client.request("message.send", conversation_id=cid, client_id=client_id, text=text,
                                 **extra))["message_id"]


async def search(server, email: str = DIRECTION, school: str = "ERABLES", **params) -> list[dict]:
    sid = await school_id(server, school)
    return (await ok(server, email, f"/api/archive/schools/{sid}/conversations", **params))["conversations"]


async def audit(server, email: str = DIRECTION, school: str = "ERABLES", **params) -> list[dict]:
    sid = await school_id(server, school)
    return (await ok(server, email, f"/api/archive/schools/{sid}/audit", **params))["entries"]


async def audit_count(server) -> int:
    """How many archive look-ups were recorded (R9). Each request in these tests signs its
    caller in first, which the audit log records too (R21); those rows are not counted."""
    async with server.service.sessions() as session:
        query = select(func.count()).select_from(AuditEntry).where(AuditEntry.action.like("archive.%"))
        return (await session.execute(query)).scalar_one()


async def conversation_with_history(server, marie, nadia) -> dict:
    """Marie and Nadia talk about Léa; Marie edits one message twice and retracts another."""
    cid = await create(server, marie, "Léa", NADIA)
    edited = await send(marie, cid, "e", "Léa sera absente lundi")
    await marie.request("message.edit", message_id=edited, text="Léa sera absente mardi")
    await marie.request("message.edit", message_id=edited, text="Léa sera absente mercredi")
    retracted = await send(marie, cid, "r", "Propos regrettable 7c1e")
    await marie.request("message.retract", message_id=retracted)
    answer = await send(nadia, cid, "n", "Merci, c'est noté.")
    await marie.request("reaction.add", message_id=answer, emoji="👍")
    return {"cid": cid, "edited": edited, "retracted": retracted, "answer": answer}


# -- R9: reading the archive ----------------------------------------------------------------------------
async def test_r9_direction_reads_retracted_text_and_every_version_of_an_edited_message(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        ids = await conversation_with_history(server, marie, nadia)
    archive = await ok(server, DIRECTION, f"/api/archive/conversations/{ids['cid']}")
    messages = {m["id"]: m for m in archive["messages"]}
    assert [m["seq"] for m in archive["messages"]] == sorted(m["seq"] for m in archive["messages"])
    edited = messages[ids["edited"]]
    assert edited["edited"] is True and edited["text"] == "Léa sera absente mercredi"
    assert [(v["version"], v["text"]) for v in edited["versions"]] == [
        (1, "Léa sera absente lundi"), (2, "Léa sera absente mardi"), (3, "Léa sera absente mercredi")]
    assert all(v["created_at"] for v in edited["versions"])
    retracted = messages[ids["retracted"]]
    assert retracted["retracted"] is True and retracted["retracted_at"] is not None
    assert retracted["text"] == "Propos regrettable 7c1e"
    assert retracted["author"] == {"id": await pid(server, MARIE), "name": "Marie Tremblay", "role": "parent"}
    answer = messages[ids["answer"]]
    assert answer["retracted"] is False and answer["edited"] is False
    assert [(r["emoji"], r["count"], [p["id"] for p in r["people"]]) for r in answer["reactions"]] == [
        ("👍", 1, [await pid(server, MARIE)])]
    assert archive["school"]["name"] == "École primaire des Érables"
    assert archive["child"]["name"] == "Léa Tremblay"
    assert {p["id"] for p in archive["participants"]} == {await pid(server, MARIE), await pid(server, NADIA)}
    assert [e["kind"] for e in archive["events"]] == ["conversation.created"]


async def test_r9_the_archive_keeps_former_members_renames_and_additions(server):
    async with await server.connect(MARIE) as marie, await server.connect(JEAN) as jean:
        cid = await create(server, marie, "Léa", NADIA)
        await marie.request("conversation.add", conversation_id=cid, participants=[await pid(server, JEAN)],
                            share_history=True)
        await jean.request("conversation.rename", conversation_id=cid, name="Sortie au musée")
        await jean.request("conversation.leave", conversation_id=cid)
    archive = await ok(server, DIRECTION, f"/api/archive/conversations/{cid}")
    assert [e["kind"] for e in archive["events"]] == [
        "conversation.created", "member.added", "conversation.renamed", "member.left"]
    assert archive["events"][1]["history_shared"] is True
    assert archive["events"][3]["person"]["id"] == await pid(server, JEAN)
    jean = await pid(server, JEAN)
    jean_row = next(p for p in archive["participants"] if p["id"] == jean)
    assert jean_row["active"] is False and jean_row["left_at"] is not None and jean_row["joined_at"]
    summary = (await search(server))[0]
    assert summary["name"] == "Sortie au musée"
    assert {(m["id"], m["active"]) for m in summary["members"]} == {
        (await pid(server, MARIE), True), (await pid(server, NADIA), True), (jean, False)}


async def test_r9_only_the_direction_of_the_school_may_open_the_archive(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        ids = await conversation_with_history(server, marie, nadia)
    erables = await school_id(server, "ERABLES")
    paths = [
        f"/api/archive/schools/{erables}/conversations",
        f"/api/archive/schools/{erables}/audit",
        f"/api/archive/conversations/{ids['cid']}",
        f"/api/archive/conversations/{ids['cid']}/export?format=json",
        f"/api/archive/conversations/{ids['cid']}/export?format=html",
    ]
    before = await audit_count(server)
    for email in (MARIE, NADIA, SECRETARIAT, DIRECTION_FLEUVE):
        for path in paths:
            response = await get(server, email, path)
            assert response.status_code == 403, (email, path, response.text)
            error = response.json()["error"]
            assert error["code"] == "direction.only" and error["message"]
            assert "Propos regrettable" not in response.text
    assert await audit_count(server) == before  # refused: nothing was read, nothing recorded


async def test_r9_unknown_ids_are_not_found_for_the_direction(server):
    for path, code in [
        ("/api/archive/conversations/999999", "conversation.not_found"),
        ("/api/archive/conversations/999999/export", "conversation.not_found"),
        ("/api/archive/schools/999999/conversations", "school.not_found"),
        ("/api/archive/schools/999999/audit", "school.not_found"),
        ("/api/archive/attachments/0123456789abcdef0123456789abcdef", "attachment.not_found"),
    ]:
        response = await get(server, DIRECTION, path)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"]["code"] == code
    # Someone who is not direction learns nothing about which ids exist.
    response = await get(server, MARIE, "/api/archive/conversations/999999")
    assert response.status_code == 403 and response.json()["error"]["code"] == "direction.only"


async def test_r9_error_texts_follow_the_language_french_by_default(server):
    response = await get(server, MARIE, "/api/archive/conversations/1")
    assert response.json()["error"]["message"].startswith("Réservé à la direction")
    response = await get(server, JEAN, "/api/archive/conversations/1")  # Jean reads English
    assert response.json()["error"]["message"].startswith("Reserved for the principal")


# -- R9: searching -------------------------------------------------------------------------------------
async def test_r9_search_by_participant_child_and_only_in_the_directions_school(server):
    async with await server.connect(MARIE) as marie, await server.connect(JEAN) as jean, \
            await server.connect(NADIA) as nadia:
        with_nadia = await create(server, marie, "Léa", NADIA)
        with_secretariat = await create(server, jean, "Léa", SECRETARIAT)
        staff_only = await create(server, nadia, None, PAUL)
        at_fleuve = await create(server, marie, "Noah", SIMON)
    assert {c["id"] for c in await search(server)} == {with_nadia, with_secretariat, staff_only}
    assert [c["id"] for c in await search(server, participant=await pid(server, JEAN))] == [with_secretariat]
    assert {c["id"] for c in await search(server, participant=await pid(server, NADIA))} == {with_nadia, staff_only}
    lea = await child_id(server.service, "Léa")
    assert {c["id"] for c in await search(server, child=lea)} == {with_nadia, with_secretariat}
    assert [c["id"] for c in await search(server, DIRECTION_FLEUVE, "FLEUVE")] == [at_fleuve]
    summary = next(c for c in await search(server) if c["id"] == with_nadia)
    assert summary["child"] == {"id": lea, "name": "Léa Tremblay"}
    assert (summary["locked"], summary["message_count"], summary["last_message_at"]) == (False, 0, None)
    assert summary["created_at"].endswith("Z")
    first, second = await search(server, limit=1), await search(server, limit=1, offset=1)
    assert len(first) == len(second) == 1 and first[0]["id"] != second[0]["id"]


async def test_r9_text_search_finds_edited_away_versions_and_retracted_text_ignoring_case(server):
    async with await server.connect(MARIE) as marie, await server.connect(JEAN) as jean, \
            await server.connect(NADIA) as nadia:
        edited_in = await create(server, marie, "Léa", NADIA)
        message = await send(marie, edited_in, "a", "Premier brouillon de l'École")
        await marie.request("message.edit", message_id=message, text="Texte final")
        retracted_in = await create(server, jean, "Léa", SECRETARIAT)
        message = await send(jean, retracted_in, "b", "Mot déplacé 3b9f")
        await jean.request("message.retract", message_id=message)
        plain = await create(server, nadia, None, PAUL)
        await send(nadia, plain, "c", "Réunion à 100 %")
    assert [c["id"] for c in await search(server, q="BROUILLON")] == [edited_in]  # an earlier version
    assert [c["id"] for c in await search(server, q="l'école")] == [edited_in]    # É folds to é
    assert [c["id"] for c in await search(server, q="texte FINAL")] == [edited_in]  # the current text
    assert [c["id"] for c in await search(server, q="mot déplacé 3B9F")] == [retracted_in]
    assert [c["id"] for c in await search(server, q="100 %")] == [plain]
    assert [c["id"] for c in await search(server, q="%")] == [plain]  # not a LIKE wildcard
    assert await search(server, q="r.union") == []  # searched as text, not as a pattern
    assert await search(server, q="introuvable") == []


async def test_r9_search_by_date_range(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        old = await create(server, nadia, None, PAUL)
        await send(nadia, old, "o", "L'an dernier")
        recent = await create(server, marie, "Léa", NADIA)
        await send(marie, recent, "r", "Cette semaine")
    last_year = datetime(2025, 1, 10, 15, 0, tzinfo=timezone.utc)
    async with server.service.sessions() as session, session.begin():
        await session.execute(update(Conversation).where(Conversation.id == old).values(
            created_at=last_year, last_message_at=last_year))
        await session.execute(update(Message).where(Message.conversation_id == old).values(created_at=last_year))
    assert [c["id"] for c in await search(server, since="2025-01-01", until="2025-01-31T23:59:59Z")] == [old]
    today = datetime.now(timezone.utc) - timedelta(hours=1)
    assert [c["id"] for c in await search(server, since=today.isoformat())] == [recent]
    assert [c["id"] for c in await search(server, until="2025-06-01T00:00:00-04:00")] == [old]
    assert [c["id"] for c in await search(server)] == [recent, old]  # most recent activity first


@pytest.mark.parametrize("params, code", [
    ({"since": "hier"}, "request.wrong_type"),
    ({"until": "2025-13-45"}, "request.wrong_type"),
    # Valid dates whose instant in UTC falls outside years 1–9999 (found by tests/test_fuzz_frames.py).
    ({"until": "0001-01-01T00:00:00+14:00"}, "request.wrong_type"),
    ({"since": "9999-12-31T23:59:59-14:00"}, "request.wrong_type"),
    ({"participant": "marie"}, "request.wrong_type"),
    ({"child": "1.5"}, "request.wrong_type"),
    ({"limit": "beaucoup"}, "request.wrong_type"),
    ({"limit": "0"}, "request.invalid"),
    ({"limit": "201"}, "request.invalid"),
    ({"offset": "-1"}, "request.invalid"),
    ({"since": "2025-02-01", "until": "2025-01-01"}, "request.invalid"),
    ({"q": "x" * 201}, "request.invalid"),
])
async def test_r9_bad_search_values_are_refused_with_a_stable_code(server, params, code):
    sid = await school_id(server, "ERABLES")
    response = await get(server, DIRECTION, f"/api/archive/schools/{sid}/conversations", **params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code


# -- R9: exports -----------------------------------------------------------------------------------------
async def test_r9_json_export_is_a_download_with_retracted_text_and_versions(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        ids = await conversation_with_history(server, marie, nadia)
    response = await get(server, DIRECTION, f"/api/archive/conversations/{ids['cid']}/export", format="json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert re.fullmatch(rf'attachment; filename="conversation-{ids["cid"]}-\d{{8}}-\d{{6}}\.json"',
                        response.headers["content-disposition"])
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    document = json.loads(response.content)
    assert document["exported_by"]["id"] == await pid(server, DIRECTION) and document["exported_at"]
    messages = {m["id"]: m for m in document["messages"]}
    assert messages[ids["retracted"]]["text"] == "Propos regrettable 7c1e"
    assert [v["text"] for v in messages[ids["edited"]]["versions"]] == [
        "Léa sera absente lundi", "Léa sera absente mardi", "Léa sera absente mercredi"]


async def test_r9_html_export_is_self_contained_french_and_escapes_what_people_wrote(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        ids = await conversation_with_history(server, marie, nadia)
        await send(marie, ids["cid"], "x", '<script>alert("x")</script> & <img src=x onerror=alert(1)>')
        await nadia.request("conversation.rename", conversation_id=ids["cid"], name="<b>Sortie</b>")
    response = await get(server, DIRECTION, f"/api/archive/conversations/{ids['cid']}/export", format="html")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == "default-src 'none'; style-src 'unsafe-inline'"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert re.fullmatch(rf'attachment; filename="conversation-{ids["cid"]}-\d{{8}}-\d{{6}}\.html"',
                        response.headers["content-disposition"])
    page = response.text
    assert '<meta charset="utf-8">' in page
    assert "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src &#x27;none&#x27;; " \
           "style-src &#x27;unsafe-inline&#x27;\">" in page
    assert "<script" not in page.lower() and "<img" not in page.lower() and "<b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(1)&gt;" in page
    assert not re.search(r"(src|href)\s*=|https?://|@import|url\(", page.replace("&lt;img src=x", ""))
    assert '<html lang="fr">' in page and "Archive de la conversation" in page
    assert "École primaire des Érables" in page and "Léa Tremblay" in page
    assert "Message retiré" in page and "Propos regrettable 7c1e" in page
    assert "Versions antérieures" in page
    assert page.index("Léa sera absente lundi") < page.index("Léa sera absente mardi")
    assert "Léa sera absente mercredi" in page
    assert "Hélène Bisson" in page  # who exported it


async def test_r22_html_export_follows_a_directions_choice_of_english(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        ids = await conversation_with_history(server, marie, nadia)
    async with server.service.sessions() as session, session.begin():
        await session.execute(update(Person).where(Person.email == DIRECTION).values(language="en"))
    response = await get(server, DIRECTION, f"/api/archive/conversations/{ids['cid']}/export", format="html")
    page = response.text
    assert '<html lang="en">' in page and "Conversation archive" in page
    assert "Message removed" in page and "Earlier versions" in page and "Message retiré" not in page


async def test_r9_export_format_must_be_json_or_html(server):
    async with await server.connect(MARIE) as marie:
        cid = await create(server, marie, "Léa", NADIA)
    response = await get(server, DIRECTION, f"/api/archive/conversations/{cid}/export", format="pdf")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "request.invalid_choice"


async def test_r9_direction_downloads_an_attachment_even_from_a_retracted_message(server):
    token = await server.token(MARIE)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        response = await http.post("/api/uploads", params={"name": "dessin.png"}, content=files.png_with_text(),
                                   headers={"Authorization": f"Bearer {token}"})
    upload = response.json()["upload"]
    async with await server.connect(MARIE) as marie:
        cid = await create(server, marie, "Léa", NADIA)
        message = await send(marie, cid, "p", "", attachments=[upload["id"]])
        await marie.request("message.retract", message_id=message)
    archive = await ok(server, DIRECTION, f"/api/archive/conversations/{cid}")
    attachment = archive["messages"][0]["attachments"][0]
    assert (attachment["id"], attachment["name"], attachment["type"]) == (upload["id"], "dessin.png", "image/png")
    response = await get(server, DIRECTION, attachment["url"])
    assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert response.headers["content-disposition"].startswith('inline; filename="dessin.png"')
    for email in (NADIA, DIRECTION_FLEUVE, MARIE):
        refused = await get(server, email, attachment["url"])
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "direction.only"
    entry = (await audit(server))[0]
    assert (entry["action"], entry["target"]) == ("archive.attachment", f"upload:{upload['id']}")
    assert entry["details"]["conversation_id"] == cid


# -- the audit log --------------------------------------------------------------------------------------
async def test_every_archive_access_is_in_the_audit_log_newest_first_with_who_what_when(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        ids = await conversation_with_history(server, marie, nadia)
    cid, direction = ids["cid"], await pid(server, DIRECTION)
    started = datetime.now(timezone.utc) - timedelta(seconds=5)
    await search(server, q="absente", participant=await pid(server, MARIE))
    await ok(server, DIRECTION, f"/api/archive/conversations/{cid}")
    await get(server, DIRECTION, f"/api/archive/conversations/{cid}/export", format="json")
    await get(server, DIRECTION, f"/api/archive/conversations/{cid}/export", format="html")
    entries = await audit(server)
    assert [(e["action"], e["target"], e["details"].get("format")) for e in entries] == [
        ("archive.export", f"conversation:{cid}", "html"),
        ("archive.export", f"conversation:{cid}", "json"),
        ("archive.read", f"conversation:{cid}", None),
        ("archive.search", f"school:{await school_id(server, 'ERABLES')}", None),
    ]
    assert all(e["actor"] == {"id": direction, "name": "Hélène Bisson", "role": "direction"} for e in entries)
    assert all(datetime.fromisoformat(e["at"].replace("Z", "+00:00")) >= started for e in entries)
    assert entries[-1]["details"]["q"] == "absente"
    assert entries[-1]["details"]["participant"] == await pid(server, MARIE)
    assert [e["id"] for e in await audit(server, limit=2, offset=1)] == [entries[1]["id"], entries[2]["id"]]
    # Another school's direction sees none of it, and their own log only.
    assert await audit(server, DIRECTION_FLEUVE, "FLEUVE") == []


async def test_the_audit_log_cannot_be_changed_by_any_request_or_by_the_database(server):
    await search(server)  # one entry to try to change
    sid = await school_id(server, "ERABLES")
    token = await server.token(DIRECTION)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            response = await http.request(method, f"/api/archive/schools/{sid}/audit",
                                          headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 405, (method, response.text)
    with pytest.raises(DBAPIError, match="append-only"):
        async with server.service.sessions() as session, session.begin():
            await session.execute(update(AuditEntry).values(action="archive.nothing"))
    with pytest.raises(DBAPIError, match="append-only"):
        async with server.service.sessions() as session, session.begin():
            await session.execute(delete(AuditEntry))
    entries = await audit(server)
    assert [e["action"] for e in entries] == ["archive.search"]


# -- R10: locks -------------------------------------------------------------------------------------------
async def snapshot(server, cid: int) -> dict:
    async with server.service.sessions() as session:
        counts = {}
        for model, where in [
            (Message, Message.conversation_id == cid),
            (MessageVersion, MessageVersion.message_id.in_(select(Message.id).where(Message.conversation_id == cid))),
            (Reaction, Reaction.message_id.in_(select(Message.id).where(Message.conversation_id == cid))),
            (Participant, Participant.conversation_id == cid),
            (Event, Event.conversation_id == cid),
        ]:
            query = select(func.count()).select_from(model).where(where)
            counts[model.__name__] = (await session.execute(query)).scalar_one()
        conversation = await session.get(Conversation, cid)
        texts = (await session.execute(select(Message.text, Message.retracted_at).where(
            Message.conversation_id == cid).order_by(Message.seq))).all()
        return counts | {"name": conversation.name, "last_seq": conversation.last_seq,
                         "messages": [tuple(t) for t in texts]}


async def test_r10_direction_locks_members_see_it_live_and_the_lock_is_audited(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia, \
            await server.connect(DIRECTION) as direction:
        cid = await create(server, marie, "Léa", NADIA)
        answer = await direction.request("conversation.lock", conversation_id=cid, reason="Propos inappropriés")
        assert answer["locked"] is True
        for member in (marie, nadia):
            event = await member.event("conversation.locked")
            assert (event["conversation_id"], event["reason"], event["actor"]) == (
                cid, "Propos inappropriés", await pid(server, DIRECTION))
        listed = (await marie.request("conversation.list"))["conversations"][0]
        assert (listed["locked"], listed["lock_reason"]) == (True, "Propos inappropriés")
    summary = (await search(server))[0]
    assert (summary["locked"], summary["lock_reason"]) == (True, "Propos inappropriés")
    entry = next(e for e in await audit(server) if e["action"] == "conversation.locked")
    assert entry["target"] == f"conversation:{cid}" and entry["details"] == {"reason": "Propos inappropriés"}
    assert entry["actor"]["id"] == await pid(server, DIRECTION)
    archive = await ok(server, DIRECTION, f"/api/archive/conversations/{cid}")
    assert archive["locked"] is True and archive["events"][-1]["kind"] == "conversation.locked"


async def test_r10_while_locked_no_one_posts_edits_retracts_reacts_adds_or_renames(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia, \
            await server.connect(DIRECTION) as direction:
        cid = await create(server, marie, "Léa", NADIA)
        mine = await send(marie, cid, "before", "Avant le verrou")
        await direction.request("conversation.lock", conversation_id=cid, reason="Pause")
        await marie.event("conversation.locked")
        await nadia.event("conversation.locked")
        await nadia.drain()
        before = await snapshot(server, cid)
        attempts = [
            (marie, "message.send", {"conversation_id": cid, "client_id": "during", "text": "Pendant"}),
            (marie, "message.edit", {"message_id": mine, "text": "Modifié pendant"}),
            (marie, "message.retract", {"message_id": mine}),
            (nadia, "reaction.add", {"message_id": mine, "emoji": "👍"}),
            (marie, "conversation.add", {"conversation_id": cid, "participants": [await pid(server, JEAN)],
                                         "share_history": True}),
            (nadia, "conversation.rename", {"conversation_id": cid, "name": "Nouveau nom"}),
        ]
        for client, frame_type, fields in attempts:
            answer = await client.refused(frame_type, **fields)
            assert answer["code"] == "conversation.locked", (frame_type, answer)
            assert answer["message"].startswith("La direction a verrouillé")
        assert await snapshot(server, cid) == before
        assert await nadia.events() == []  # nothing happened in the conversation


async def test_r10_after_unlock_members_write_again(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia, \
            await server.connect(DIRECTION) as direction:
        cid = await create(server, marie, "Léa", NADIA)
        await direction.request("conversation.lock", conversation_id=cid, reason="Pause")
        await direction.request("conversation.unlock", conversation_id=cid)
        assert (await nadia.event("conversation.unlocked"))["conversation_id"] == cid
        sent = await marie.request("message.send", conversation_id=cid, client_id="after", text="Après")
        assert (await nadia.event("message.new"))["message"]["text"] == "Après" and sent["seq"]
        listed = (await marie.request("conversation.list"))["conversations"][0]
        assert (listed["locked"], listed["lock_reason"]) == (False, None)
    assert [e["action"] for e in await audit(server)][:2] == ["conversation.unlocked", "conversation.locked"]


async def test_r10_only_the_direction_of_the_conversations_school_locks(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia, \
            await server.connect(DIRECTION_FLEUVE) as other_direction:
        cid = await create(server, marie, "Léa", NADIA)
        for client in (marie, nadia, other_direction):
            answer = await client.refused("conversation.lock", conversation_id=cid, reason="Non")
            assert answer["code"] == "direction.only"
        assert (await nadia.refused("conversation.unlock", conversation_id=cid))["code"] == "direction.only"
        await marie.request("message.send", conversation_id=cid, client_id="still", text="Toujours ouvert")
    assert (await search(server))[0]["locked"] is False
    assert [e for e in await audit(server) if e["action"].startswith("conversation.")] == []
