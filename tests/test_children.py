"""R20: a parent associates a child (fiche number, permanent code or NIP) only when
the school has their e-mail on file as the child's guardian; until then they
see nothing of the child.  On both backends, over real HTTP.

The demo's Sophie Côté is on file for Noah Tremblay and has not associated him;
Jean Tremblay (Léa's father) is not on file for Noah at all.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from chat import demo, directory
from chat.accounts.throttle import LIMITS, Limit, Throttle
from chat.storage.models import AuditEntry, Guardianship, Nip
from tests.conftest import DIRECTION_FLEUVE, JEAN, MARIE, NADIA, child_id, person_by_email
from tests.test_announcements import school_id
from tests.test_auth import bearer

SOPHIE = "sophie.cote@parent.test"


def noah() -> dict[str, Any]:
    return next(s for s in demo.build()["students"] if s["first_name"] == "Noah")


def by_fiche(**changes: Any) -> dict[str, Any]:
    child = noah()
    return {"organisation": demo.ORG, "first_name": child["first_name"], "last_name": child["last_name"],
            "date_of_birth": child["date_of_birth"], "fiche": child["fiche"]} | changes


def by_code(**changes: Any) -> dict[str, Any]:
    fields = by_fiche()
    del fields["fiche"]
    return fields | {"code_permanent": noah()["code_permanent"]} | changes


async def associate(server, email: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url) as http:
        return await http.post("/api/children", json=body, headers=bearer(await server.token(email)))


async def children_of(server, email: str) -> list[str]:
    async with httpx.AsyncClient(base_url=server.url) as http:
        me = (await http.get("/api/me", headers=bearer(await server.token(email)))).json()
    return [child["name"] for child in me["children"]]


async def school_announcement(server, text: str) -> None:
    async with await server.connect(DIRECTION_FLEUVE) as direction:
        await direction.request("announcement.post", audience={"school": await school_id(server, "FLEUVE")},
                                text=text)


async def feed(server, email: str) -> list[str]:
    async with httpx.AsyncClient(base_url=server.url) as http:
        answer = await http.get("/api/announcements", headers=bearer(await server.token(email)))
    return [a["text"] for a in answer.json()["announcements"]]


async def test_a_parent_on_file_sees_nothing_of_the_child_until_associating_it(server):
    assert await children_of(server, SOPHIE) == []
    noah_id = await child_id(server.service, "Noah")
    direction_id = (await person_by_email(server.service, DIRECTION_FLEUVE)).id
    await school_announcement(server, "Fermeture demain")
    async with httpx.AsyncClient(base_url=server.url) as http:
        headers = bearer(await server.token(SOPHIE))
        contacts = await http.get("/api/contacts", params={"child_id": noah_id}, headers=headers)
        assert contacts.status_code == 403
        created = await http.post("/api/conversations", headers=headers,
                                  json={"child_id": noah_id, "participants": [direction_id]})
        assert created.status_code == 403
        assert (await http.get("/api/conversations", headers=headers)).json()["conversations"] == []
    assert await feed(server, SOPHIE) == []
    assert await feed(server, MARIE) == ["Fermeture demain"]  # Noah's associated guardian

    assert (await associate(server, SOPHIE, by_fiche())).status_code == 200
    await school_announcement(server, "Réouverture lundi")
    assert await feed(server, SOPHIE) == ["Réouverture lundi"]  # from now on, like every guardian


@pytest.mark.parametrize("way", ["fiche", "code_permanent"])
async def test_a_parent_associates_a_child_by_details_and_then_sees_it(server, way):
    body = by_fiche() if way == "fiche" else by_code()
    # As a person types: other case, spaces around, the number with a space.
    body |= {"first_name": " noah ", "last_name": "TREMBLAY"}
    response = await associate(server, SOPHIE, body)
    assert response.status_code == 200, response.text
    assert response.json()["child"]["name"] == "Noah Tremblay"
    assert await children_of(server, SOPHIE) == ["Noah Tremblay"]
    noah_id = await child_id(server.service, "Noah")
    async with httpx.AsyncClient(base_url=server.url) as http:
        contacts = await http.get("/api/contacts", params={"child_id": noah_id},
                                  headers=bearer(await server.token(SOPHIE)))
    assert contacts.status_code == 200 and contacts.json()["contacts"]
    # Associating again changes nothing.
    assert (await associate(server, SOPHIE, body)).status_code == 200
    assert await children_of(server, SOPHIE) == ["Noah Tremblay"]


@pytest.mark.parametrize("mismatch", [
    by_fiche(first_name="Noa"),
    by_fiche(last_name="Tremblay-Roy"),
    by_fiche(date_of_birth="2015-01-01"),
    by_fiche(fiche="0000001"),
    by_code(code_permanent="ZZZZ99999999"),
    by_fiche(organisation="CSS-AUTRE"),
    by_fiche(first_name="Nöah"),  # accents count
], ids=["first-name", "last-name", "date-of-birth", "fiche", "permanent-code", "organisation", "accent"])
async def test_each_mismatch_is_refused_with_one_answer_and_nothing_changes(server, mismatch):
    response = await associate(server, SOPHIE, mismatch)
    assert (response.status_code, response.json()["error"]["code"]) == (403, "child.no_match")
    assert await children_of(server, SOPHIE) == []


async def test_an_e_mail_not_on_file_for_the_child_is_refused_even_with_every_detail_right(server):
    response = await associate(server, JEAN, by_fiche())
    assert (response.status_code, response.json()["error"]["code"]) == (403, "child.no_match")
    assert await children_of(server, JEAN) == ["Léa Tremblay"]  # his own child only


async def test_the_same_child_details_in_another_organisation_are_not_this_child(server):
    """Another organisation with a student of the same fiche number, name and date of
    birth: Sophie is on file for Noah, not for that student."""
    data = demo.build()
    child = noah()
    other = {
        "organisations": [{"code": "CSS-AUTRE", "name": "Centre de services scolaire Autre"}],
        "schools": [{"code": "AUTRE", "organisation": "CSS-AUTRE", "name": "École Autre"}],
        "students": [dict(child, school="AUTRE", group=None, code_permanent="AUTR01010110")],
        "guardians": [{"email": "tuteur@autre.test", "name": "Tuteur Autre", "students": [child["fiche"]]}],
    }
    other["students"][0].pop("group")
    await directory.load(server.service.engine, directory.validate(other))
    assert data  # the demo is unchanged
    response = await associate(server, SOPHIE, by_fiche(organisation="CSS-AUTRE"))
    assert response.json()["error"]["code"] == "child.no_match"
    assert (await associate(server, SOPHIE, by_fiche())).status_code == 200
    assert await children_of(server, SOPHIE) == ["Noah Tremblay"]


async def test_a_nip_from_the_school_associates_the_child_once(server):
    issued = await server.service.children.issue_nip(demo.ORG, noah()["fiche"])
    assert len(issued["nip"]) == 10
    typed = f" {issued['nip'][:5].lower()}-{issued['nip'][5:]} "  # as copied from paper
    response = await associate(server, SOPHIE, {"nip": typed})
    assert response.status_code == 200, response.text
    assert await children_of(server, SOPHIE) == ["Noah Tremblay"]
    again = await associate(server, SOPHIE, {"nip": issued["nip"]})
    assert again.json()["error"]["code"] == "child.no_match"  # single use
    async with server.service.sessions() as session:
        stored = (await session.execute(select(Nip.nip_hash, Nip.used_by))).all()
    assert issued["nip"] not in {h for h, _ in stored}  # stored hashed
    assert [used_by for _, used_by in stored] == [(await person_by_email(server.service, SOPHIE)).id]


async def test_a_nip_for_a_child_the_parent_is_not_on_file_for_is_refused(server):
    issued = await server.service.children.issue_nip(demo.ORG, noah()["fiche"])
    response = await associate(server, JEAN, {"nip": issued["nip"]})
    assert response.json()["error"]["code"] == "child.no_match"
    assert (await associate(server, SOPHIE, {"nip": issued["nip"]})).status_code == 200  # still unused


async def test_an_expired_nip_is_refused(server):
    issued = await server.service.children.issue_nip(demo.ORG, noah()["fiche"], days=-1)
    assert (await associate(server, SOPHIE, {"nip": issued["nip"]})).json()["error"]["code"] == "child.no_match"


@pytest.mark.parametrize("body, code", [
    (by_fiche(code_permanent="TREN01010110"), "child.one_number"),  # both numbers
    ({k: v for k, v in by_fiche().items() if k != "fiche"}, "child.one_number"),  # neither
    (by_fiche(fiche="12345"), "child.one_number"),  # not 7 digits
    ({"organisation": demo.ORG}, "request.missing_field"),
    (by_fiche(first_name=7), "request.wrong_type"),
])
async def test_a_malformed_request_is_a_clear_error(server, body, code):
    response = await associate(server, SOPHIE, body)
    assert (response.status_code, response.json()["error"]["code"]) == (400, code)


async def test_staff_do_not_associate_children(server):
    response = await associate(server, NADIA, by_fiche())
    assert response.status_code == 403


async def test_associations_and_refusals_are_audited(server):
    await associate(server, SOPHIE, by_fiche(date_of_birth="2015-01-01"))
    await associate(server, SOPHIE, by_fiche())
    sophie_id = (await person_by_email(server.service, SOPHIE)).id
    async with server.service.sessions() as session:
        actions = (await session.execute(select(AuditEntry.action, AuditEntry.details)
                                         .where(AuditEntry.action.like("child.%")).order_by(AuditEntry.id))).all()
        linked = (await session.execute(select(Guardianship).where(Guardianship.person_id == sophie_id))).all()
    assert [a for a, _ in actions] == ["child.association_refused", "child.associated"]
    assert "2015-01-01" not in actions[0][1] and noah()["fiche"] not in actions[0][1]
    assert len(linked) == 1


async def test_attempts_are_throttled(server):
    server.service.children.throttle = Throttle(server.service.throttle.counter,
                                                dict(LIMITS, **{"child.account": Limit(2, 3600)}))
    for _ in range(2):
        assert (await associate(server, SOPHIE, by_fiche(fiche="0000001"))).status_code == 403
    refused = await associate(server, SOPHIE, by_fiche())
    assert (refused.status_code, refused.json()["error"]["code"]) == (429, "auth.throttled")
