"""R22: the person chooses the language the server writes to them in, French by
default; the choice is stored, so that errors, ``hello`` and e-mails follow it
(docs/protocol.md, ``language.set`` and ``PUT /api/me/language``)."""

from __future__ import annotations

import httpx

from chat.people import Actor
from tests.conftest import MARIE, person_by_email

UNKNOWN_CONVERSATION = 987654321


async def stored_language(server, email: str) -> str:
    return (await person_by_email(server.service, email)).language


async def test_r22_language_set_changes_this_connections_errors_and_the_next_hello(server):
    async with await server.connect(MARIE) as marie:
        assert marie.hello["person"]["language"] == "fr"
        before = await marie.refused("conversation.history", conversation_id=UNKNOWN_CONVERSATION)
        assert before["message"].startswith("Conversation introuvable"), before
        assert (await marie.request("language.set", language="en"))["language"] == "en"
        after = await marie.refused("conversation.history", conversation_id=UNKNOWN_CONVERSATION)
        assert after["code"] == before["code"] and after["message"].startswith("Conversation not found"), after
    assert await stored_language(server, MARIE) == "en"
    async with await server.connect(MARIE) as again:
        assert again.hello["person"]["language"] == "en"
        await again.request("language.set", language="fr")
        assert (await again.refused("conversation.history", conversation_id=UNKNOWN_CONVERSATION)
                )["message"].startswith("Conversation introuvable")
    assert await stored_language(server, MARIE) == "fr"


async def test_r22_a_language_other_than_french_or_english_is_refused_and_changes_nothing(server):
    async with await server.connect(MARIE) as marie:
        for wrong in ("de", "EN", "en-CA", "", "fr" * 20):
            refused = await marie.refused("language.set", language=wrong)
            assert refused["code"] == "request.invalid_choice" and refused["message"].startswith("Le paramètre")
        wrong_type = await marie.refused("language.set", language=["en"])
        assert wrong_type["code"] == "request.wrong_type"
        assert (await marie.request("ping"))["pong"] is True  # the connection is still usable
    assert await stored_language(server, MARIE) == "fr"


async def test_r22_put_me_language_over_http(server):
    token = await server.token(MARIE)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.put("/api/me/language", json={"language": "en"}, headers=headers)
        assert response.status_code == 200 and response.json() == {"language": "en"}
        assert (await http.get("/api/me", headers=headers)).json()["language"] == "en"
        # The refusal is in the language just chosen (the person's, as stored).
        refused = await http.put("/api/me/language", json={"language": "xx"}, headers=headers)
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "request.invalid_choice"
        assert refused.json()["error"]["message"].startswith("The parameter")
        unsigned = await http.put("/api/me/language", json={"language": "fr"})
        assert unsigned.status_code == 401
    assert await stored_language(server, MARIE) == "en"


async def test_r22_the_stored_language_is_what_a_new_actor_reads(server):
    person = await person_by_email(server.service, MARIE)
    actor = Actor(person.id, person.role, person.name, person.language)
    assert await server.service.people.set_language(actor, "en") == "en"
    token = await server.token(MARIE)
    assert (await server.service.people.authenticate(token)).language == "en"
