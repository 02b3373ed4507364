"""Announcements (R13, R6 on announcements), integration notices (R12) and
feature switches (R18), end to end."""

from __future__ import annotations

from datetime import datetime, timezone

import httpx
import pytest
from sqlalchemy import select, update

from chat.storage.models import Announcement, AnnouncementRecipient, Group, Guardianship, Person, School, Student
from tests.conftest import BOTH_PATHS, DIRECTION, DIRECTION_FLEUVE, JEAN, MARIE, NADIA, PAUL, SECRETARIAT, person_by_email


async def group_id(server, code: str) -> int:
    async with server.service.sessions() as session:
        return (await session.execute(select(Group.id).where(Group.code == code))).scalar_one()


async def school_id(server, code: str) -> int:
    async with server.service.sessions() as session:
        return (await session.execute(select(School.id).where(School.code == code))).scalar_one()


async def guardians_of_group(server, code: str, exclude: tuple[str, ...] = ()) -> list[str]:
    async with server.service.sessions() as session:
        return list((await session.execute(
            select(Person.email).join(Guardianship, Guardianship.person_id == Person.id)
            .join(Student, Student.id == Guardianship.student_id).join(Group, Group.id == Student.group_id)
            .where(Group.code == code, Person.email.not_in(exclude)).distinct().order_by(Person.email))).scalars().all())


@BOTH_PATHS
async def test_a_teacher_announces_to_her_group_and_its_families_see_it_live_with_a_megaphone(server):
    outsider_email = (await guardians_of_group(server, "ERA-101"))[0]
    async with await server.connect(NADIA) as nadia, await server.connect(MARIE) as marie, \
            await server.connect(JEAN) as jean, await server.connect(outsider_email) as outsider:
        answer = await nadia.request("announcement.post", audience={"groups": [await group_id(server, "ERA-301")]},
                                     text="Sortie au musée vendredi : prévoir un lunch.")
        assert answer["announcement"]["recipient_count"] >= 2
        for family in (marie, jean):
            frame = await family.next("announcement")
            assert frame["announcement"]["megaphone"] is True
            assert frame["announcement"]["text"] == "Sortie au musée vendredi : prévoir un lunch."
            assert frame["announcement"]["author"]["name"] == "Nadia Chabot"
        assert [f for f in await outsider.drain() if f["type"] == "announcement"] == []


@BOTH_PATHS
async def test_a_family_with_two_children_in_the_audience_gets_it_once_labelled_with_each_child(server):
    async with server.service.sessions() as session:
        rows = (await session.execute(select(Guardianship.person_id, Student.group_id).join(
            Student, Student.id == Guardianship.student_id))).all()
    per_person: dict[int, list[int]] = {}
    for pid, gid in rows:
        per_person.setdefault(pid, []).append(gid)
    sibling_parent = next(pid for pid, groups in per_person.items() if len(groups) == 2 and groups[0] == groups[1])
    async with server.service.sessions() as session:
        email = (await session.get(Person, sibling_parent)).email
    async with await server.connect(DIRECTION) as direction, await server.connect(email) as parent:
        await direction.request("announcement.post", audience={"school": await school_id(server, "ERABLES")},
                                text="Journée pédagogique lundi.")
        await parent.next("announcement")
        assert [f for f in await parent.drain() if f["type"] == "announcement"] == []  # once, not once per child
        listed = (await parent.request("announcement.list"))["announcements"]
        assert len(listed) == 1 and len(listed[0]["children"]) == 2


async def test_r13_a_teacher_cannot_announce_to_a_group_that_is_not_hers_nor_to_the_school(server):
    async with await server.connect(PAUL) as paul:
        answer = await paul.refused("announcement.post", audience={"groups": [await group_id(server, "ERA-301")]},
                                    text="Pas mon groupe")
        assert answer["code"] == "announcement.not_allowed"
        answer = await paul.refused("announcement.post", audience={"school": await school_id(server, "ERABLES")},
                                    text="Toute l'école")
        assert answer["code"] == "announcement.not_allowed"
    async with server.service.sessions() as session:
        assert (await session.execute(select(Announcement))).first() is None


async def test_r13_a_parent_cannot_post_an_announcement_nor_reply_to_one(server):
    async with await server.connect(NADIA) as nadia, await server.connect(MARIE) as marie:
        await nadia.request("announcement.post", audience={"groups": [await group_id(server, "ERA-301")]}, text="Info")
        announcement = (await marie.next("announcement"))["announcement"]
        answer = await marie.refused("announcement.post", audience={"groups": [await group_id(server, "ERA-301")]},
                                     text="Je veux annoncer")
        assert answer["code"] == "announcement.not_allowed"
        reply = await marie.refused("announcement.reply", announcement_id=announcement["id"], text="Merci!")
        assert reply["code"] == "announcement.no_replies"
        assert "On ne répond pas" in reply["message"]


async def test_direction_of_another_school_cannot_announce_here_and_staff_cannot_reach_the_organisation(server):
    async with await server.connect(DIRECTION_FLEUVE) as other, await server.connect(SECRETARIAT) as staff:
        answer = await other.refused("announcement.post", audience={"school": await school_id(server, "ERABLES")},
                                     text="x")
        assert answer["code"] == "announcement.not_allowed"
        async with server.service.sessions() as session:
            org = (await session.execute(select(School.organisation_id))).scalars().first()
        assert (await staff.refused("announcement.post", audience={"organisation": org}, text="x"))["code"] == \
            "announcement.not_allowed"
        closure = await other.request("announcement.post", audience={"organisation": org}, text="Tempête : écoles fermées.",
                                      urgent=True)
        assert closure["announcement"]["urgent"] is True and closure["announcement"]["recipient_count"] > 30


async def test_the_sender_sees_read_and_reaction_counts_and_who_reacted(server):
    async with await server.connect(NADIA) as nadia, await server.connect(MARIE) as marie, \
            await server.connect(JEAN) as jean:
        posted = await nadia.request("announcement.post", audience={"groups": [await group_id(server, "ERA-301")]},
                                     text="Photo de classe mardi")
        aid = posted["announcement"]["id"]
        await marie.request("announcement.read", announcement_id=aid)
        await marie.request("announcement.react", announcement_id=aid, emoji="👍")
        await jean.request("announcement.react", announcement_id=aid, emoji="👍")
        await jean.request("announcement.react", announcement_id=aid, emoji="❤️")
        await jean.request("announcement.unreact", announcement_id=aid, emoji="❤️")
        live = [await nadia.next("announcement.reaction") for _ in range(4)]
        assert [(f["emoji"], f["count"], f["added"]) for f in live] == [
            ("👍", 1, True), ("👍", 2, True), ("❤️", 1, True), ("❤️", 0, False)]
        assert [f for f in await nadia.drain() if f["type"] == "announcement.reaction"] == []
        token = await server.token(NADIA)
        async with httpx.AsyncClient(base_url=server.url) as http:
            detail = (await http.get(f"/api/announcements/{aid}", headers={"Authorization": f"Bearer {token}"})).json()
        assert detail["stats"]["read"] == 1
        assert detail["stats"]["reactions"]["👍"] == {"count": 2, "people": ["Marie Tremblay", "Jean Tremblay"]}
        marie_view = (await marie.request("announcement.list"))["announcements"][0]
        assert "stats" not in marie_view and marie_view["read"] is True and marie_view["my_reactions"] == ["👍"]


async def test_a_family_that_was_offline_gets_the_announcements_it_missed_on_resume(server):
    marie = await server.connect(MARIE)
    first = (await marie.request("announcement.list"))["announcements"]
    assert first == []
    await marie.close()
    async with await server.connect(NADIA) as nadia:
        await nadia.request("announcement.post", audience={"groups": [await group_id(server, "ERA-301")]},
                            text="Pendant votre absence")
    marie = await server.connect(MARIE, start=False)
    await marie.request("resume", positions={}, announcements_after=0)
    frame = await marie.next("announcement")
    assert frame["announcement"]["text"] == "Pendant votre absence"
    assert frame["announcement"]["children"][0]["name"] == "Léa"
    await marie.close()


async def test_r18_a_school_that_turned_announcements_off_answers_feature_unavailable(server):
    async with server.service.sessions() as session, session.begin():
        await session.execute(update(School).where(School.code == "ERABLES").values(features='["messaging"]'))
    server.service.schools.features.clear()
    async with await server.connect(NADIA) as nadia:
        answer = await nadia.refused("announcement.post", audience={"groups": [await group_id(server, "ERA-301")]},
                                     text="x")
        assert answer["code"] == "feature.unavailable" and answer["fields"]["feature"] == "announcements"
        assert "n'est pas offerte" in answer["message"]


async def test_r18_messaging_itself_can_be_turned_off(server):
    async with server.service.sessions() as session, session.begin():
        await session.execute(update(School).where(School.code == "ERABLES").values(features='["announcements"]'))
    server.service.schools.features.clear()
    nadia_id = (await person_by_email(server.service, NADIA)).id
    async with await server.connect(MARIE) as marie:
        async with server.service.sessions() as session:
            lea = (await session.execute(select(Student.id).where(Student.first_name == "Léa"))).scalar_one()
        answer = await marie.refused("conversation.create", child_id=lea, participants=[nadia_id])
        assert answer["code"] == "feature.unavailable" and answer["fields"]["feature"] == "messaging"


# -- integrations (R12) -------------------------------------------------------------------------------
async def post_notice(server, key: str, **body) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url) as http:
        return await http.post("/api/integrations/notices", json=body, headers={"Authorization": f"Bearer {key}"})


async def lea_fiche(server) -> str:
    async with server.service.sessions() as session:
        return (await session.execute(select(Student.fiche).where(Student.first_name == "Léa"))).scalar_one()


async def test_a_bus_delay_notice_reaches_the_childs_guardians_and_is_traceable_to_its_key(server):
    key_id, key = await server.service.announcements.create_key("ERABLES", "Autobus Laval", ["transport"])
    outsider_email = (await guardians_of_group(server, "ERA-101"))[0]
    async with await server.connect(MARIE) as marie, await server.connect(outsider_email) as outsider:
        response = await post_notice(server, key, kind="transport", text="Autobus 12 : 20 minutes de retard.",
                                     students=[await lea_fiche(server)])
        assert response.status_code == 201, response.text
        frame = (await marie.next("announcement"))["announcement"]
        assert (frame["kind"], frame["source"], frame["megaphone"]) == ("transport", "Autobus Laval", False)
        assert [f for f in await outsider.drain() if f["type"] == "announcement"] == []
    async with server.service.sessions() as session:
        stored = (await session.execute(select(Announcement))).scalar_one()
        recipients = (await session.execute(select(AnnouncementRecipient.person_id).where(
            AnnouncementRecipient.announcement_id == stored.id))).scalars().all()
    assert stored.integration_key_id == key_id
    assert {(await person_by_email(server.service, e)).id for e in (MARIE, JEAN)} == set(recipients)


async def test_an_integration_key_posts_only_its_kinds_its_school_and_not_once_revoked(server):
    key_id, key = await server.service.announcements.create_key("ERABLES", "Autobus", ["transport"])
    fiche = await lea_fiche(server)
    wrong_kind = await post_notice(server, key, kind="observation", text="x", students=[fiche])
    assert (wrong_kind.status_code, wrong_kind.json()["error"]["code"]) == (403, "integration.kind_not_allowed")
    async with server.service.sessions() as session:
        other_school = (await session.execute(select(Student.fiche).join(School, School.id == Student.school_id)
                                              .where(School.code == "FLEUVE"))).scalars().first()
    wrong_school = await post_notice(server, key, kind="transport", text="x", students=[other_school])
    assert (wrong_school.status_code, wrong_school.json()["error"]["code"]) == (404, "integration.student_not_found")
    assert await server.service.announcements.revoke_key(key_id)
    revoked = await post_notice(server, key, kind="transport", text="x", students=[fiche])
    assert (revoked.status_code, revoked.json()["error"]["code"]) == (401, "integration.invalid_key")
    forged = await post_notice(server, "ik_not-a-real-key", kind="transport", text="x", students=[fiche])
    assert forged.status_code == 401
    async with server.service.sessions() as session:
        assert (await session.execute(select(Announcement))).first() is None


async def test_a_school_announcements_notifications_are_read_from_its_students_in_order_without_a_sort(service, backend):
    """The notification rows of an announcement to a school come from one
    ``INSERT … SELECT`` (chat.announcements._notified): SQLite walks the school's
    students in id order, each one's guardians in an index and recipient row by key —
    not every recipient's guardianships (their children elsewhere too) sorted
    in a temporary B-tree.  Checked on SQLite's plan for the statement the post
    runs.  (PostgreSQL's plan depends on statistics.)"""
    if backend != "embedded":
        pytest.skip("query plans are checked on SQLite")
    from chat import announcements
    from chat.storage import direct

    async with service.sessions() as session:
        school = (await session.execute(select(School.id).where(School.code == "ERABLES"))).scalar_one()
    params = {"school": school, "announcement": 1, "n_kind": "announcement", "n_code": "notify.announcement",
              "n_fields": "{}", "n_link": "{}", "n_urgent": False, "n_now": datetime.now(timezone.utc)}
    compiled = direct.plan(announcements._NOTIFIED["school"], service.engine.dialect, params)
    async with service.engine.connect() as connection:
        plan = [row[-1] for row in (await connection.exec_driver_sql(
            f"EXPLAIN QUERY PLAN {compiled.sql}", tuple(compiled.args(params)))).all()]
    assert plan[0].startswith("SEARCH student USING COVERING INDEX ix_student_school_id"), plan
    # Each guardian read in the index by student (migration 0008), not in the table.
    assert any(step.startswith("SEARCH guardianship USING COVERING INDEX ix_guardianship_student_id")
               for step in plan), plan
    assert any("announcementrecipient" in step and "person_id=?" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan
