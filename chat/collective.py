"""Collective sends (R14): one message from a staff member to many families, each
receiving it in its own private conversation with that staff member.

A send is a job in the database: one row, and one target row per student.  A
worker takes a lease on the job (a row update, valid 30 s and renewed after
every step of FAMILIES_PER_STEP families — never a Redis-only flag), then for
each target finds or creates the family's conversation (the child, its
guardians, the staff member) and posts the message with a client id derived
from the job and the student.  The families of a step go together: their
conversations are looked up at once, and their messages share group commits.
Message sends are idempotent on that id, so a worker that dies between
posting and recording the target is harmless: whoever resumes the job posts
again and gets the same message back.  Jobs left running are resumed at
start-up, by exactly one worker thanks to the lease.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Sequence

from sqlalchemy import bindparam, func, or_, select, update

from chat.clock import SYSTEM, Clock
from chat.errors import BadRequest, ChatError, NotFound
from chat.frames import dumps, timestamp
from chat.policies import announcements as rules
from chat.policies import messages
from chat.policies.facts import Caller, PersonFacts
from chat.storage.models import (
    CollectiveSend,
    CollectiveTarget,
    Conversation,
    Guardianship,
    Participant,
    Person,
    Student,
)
from chat.storage.health import DatabaseHealth
from chat.tasks import cancel_and_wait, every

log = logging.getLogger("chat.collective")

# A lease outlives a slow family (a few database round trips) many times over,
# and a crashed worker's job is picked up again within half a minute.
LEASE_SECONDS = 30.0


class CollectiveSends:
    """Creates collective sends and runs them in the background (R14).

    Its collaborators: ``sessions`` (ORM sessions), ``hub`` (the progress frame to
    the author), ``people`` (a person's facts: role, schools, groups),
    ``require_feature`` (R18), ``database`` (outages logged once),
    ``create_conversation`` and ``send_message`` (the conversation use cases each
    family goes through, so R1–R5, R10 and R18 apply as for any send),
    ``make_actor`` (the caller a job runs as: id, role, name, language) and
    ``clock`` (the leases' time and the renewals' sleeping).
    """

    def __init__(self, *, sessions: Callable[[], Any], hub: Any,
                 people: Callable[[Any, Sequence[int]], Awaitable[list[PersonFacts]]],
                 require_feature: Callable[[Any, int, str], Awaitable[None]], database: DatabaseHealth,
                 create_conversation: Callable[..., Awaitable[dict[str, Any]]],
                 send_message: Callable[..., Awaitable[dict[str, Any]]],
                 make_actor: Callable[[int, str, str, str], Caller], clock: Clock = SYSTEM) -> None:
        self.sessions = sessions
        self.hub = hub
        self.people = people
        self.require_feature = require_feature
        self.database = database
        self.create_conversation = create_conversation
        self.send_message = send_message
        self.make_actor = make_actor
        self.clock = clock
        self.worker = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._tasks: set[asyncio.Task] = set()

    # -- creating ---------------------------------------------------------------------------------
    async def create(
        self, actor: Caller, client_id: str, text: str, student_ids: Sequence[int] = (), group_ids: Sequence[int] = (),
        start: bool = True,
    ) -> dict[str, Any]:
        """Record the job (idempotent on the sender's client id), then run it in the background."""
        messages.check_client_id(client_id)
        messages.check_text(text)
        async with self.sessions() as session, session.begin():
            existing = (await session.execute(select(CollectiveSend).where(
                CollectiveSend.author_id == actor.id, CollectiveSend.client_id == client_id))).scalar_one_or_none()
            if existing is not None:
                return {"send": self._view(existing), "duplicate": True}
            query = select(Student.id, Student.school_id, Student.group_id)
            if group_ids:
                query = query.where(or_(Student.id.in_(student_ids or [-1]), Student.group_id.in_(group_ids)))
            else:
                query = query.where(Student.id.in_(student_ids or [-1]))
            rows = (await session.execute(query)).all()
            missing = set(student_ids) - {r[0] for r in rows}
            if missing:
                raise NotFound("child.not_found", child_id=min(missing))
            facts = (await self.people(session, [actor.id]))[0]
            rules.check_collective(facts, {r[0]: r[1] for r in rows}, {r[0]: r[2] for r in rows})
            schools = {r[1] for r in rows}
            if len(schools) != 1:
                raise BadRequest("request.invalid", detail="a collective send goes to the families of one school")
            (school_id,) = schools
            await self.require_feature(session, school_id, "collective_sends")
            job = CollectiveSend(author_id=actor.id, school_id=school_id, client_id=client_id, text=text,
                                 total=len(rows))
            session.add(job)
            await session.flush()
            for student_id in sorted(r[0] for r in rows):
                session.add(CollectiveTarget(send_id=job.id, student_id=student_id))
        if start:
            self._spawn(job.id)
        return {"send": self._view(job), "duplicate": False}

    @staticmethod
    def _view(job: CollectiveSend) -> dict[str, Any]:
        return {"id": job.id, "client_id": job.client_id, "status": job.status, "total": job.total,
                "done": job.done, "created_at": timestamp(job.created_at)}

    async def status(self, actor: Caller, send_id: int) -> dict[str, Any]:
        async with self.sessions() as session:
            job = await session.get(CollectiveSend, send_id)
            if job is None or job.author_id != actor.id:
                raise NotFound("collective.not_found", send_id=send_id)
            targets = (await session.execute(select(CollectiveTarget).where(
                CollectiveTarget.send_id == send_id).order_by(CollectiveTarget.student_id))).scalars().all()
        return {"send": self._view(job), "families": [
            {"student_id": t.student_id, "conversation_id": t.conversation_id, "message_id": t.message_id,
             "delivered": t.done_at is not None} for t in targets]}

    # -- running -------------------------------------------------------------------------------------
    def _spawn(self, send_id: int) -> None:
        task = asyncio.create_task(self.run(send_id))
        task.send_id = send_id  # type: ignore[attr-defined]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._stopped)

    def _stopped(self, task: asyncio.Task) -> None:
        """A job that failed stays running in the database and is taken up again
        by the next look-up (:meth:`start`); a database outage is logged once
        (chat.storage.health), anything else here with its traceback."""
        if task.cancelled() or task.exception() is None:
            return
        if not self.database.outage(task.exception()):
            log.error("collective send %s stopped; it is taken up again within %.0f s", task.send_id,
                      LEASE_SECONDS, exc_info=task.exception())

    async def resume_all(self) -> int:
        """At start-up: take up every job still running (another worker's lease may hold some)."""
        async with self.sessions() as session:
            ids = (await session.execute(select(CollectiveSend.id).where(
                CollectiveSend.status == "running"))).scalars().all()
        running = {getattr(t, "send_id", None) for t in self._tasks}
        for send_id in ids:
            if send_id not in running:
                self._spawn(send_id)
        return len(ids)

    def start(self) -> None:
        """Resume running jobs now, and look again every lease period for jobs whose
        worker died (an outage is logged once, by chat.storage.health)."""
        task = every(LEASE_SECONDS, self.resume_all, name="looking for collective sends to resume",
                     reported=self.database.outage, clock=self.clock)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)

    async def _lease(self, send_id: int) -> bool:
        """Take or renew the job's lease; False when another worker holds it."""
        now = self.clock.time()
        async with self.sessions() as session, session.begin():
            result = await session.execute(
                update(CollectiveSend)
                .where(CollectiveSend.id == send_id, CollectiveSend.status == "running",
                       or_(CollectiveSend.lease_owner.is_(None), CollectiveSend.lease_until < now,
                           CollectiveSend.lease_owner == self.worker))
                .values(lease_owner=self.worker, lease_until=now + LEASE_SECONDS))
            return result.rowcount == 1

    async def run(self, send_id: int, stop_after: int | None = None) -> None:
        """Deliver to every family not yet done, FAMILIES_PER_STEP at a time.
        ``stop_after`` (tests) stops after that many families, as a crash would."""
        if not await self._lease(send_id):
            return
        async with self.sessions() as session:
            job = await session.get(CollectiveSend, send_id)
            author = await session.get(Person, job.author_id)
        actor = self.make_actor(author.id, author.role, author.name, author.language)
        # The lease is also renewed while a step runs: a step held up (a saturated
        # pool, a slow database) must not let another worker start the same families.
        lost = asyncio.Event()
        def renewal_failed(exc: Exception) -> bool:
            if not self.database.outage(exc):  # an outage is logged once (chat.storage.health)
                log.warning("collective send %s: renewing the lease failed", send_id, exc_info=exc)
            return True

        keeper = every(LEASE_SECONDS / 3, lambda: self._keep_lease(send_id, lost), wait_first=True,
                       name=f"collective-lease-{send_id}", reported=renewal_failed, clock=self.clock)
        try:
            delivered = 0
            while True:
                size = FAMILIES_PER_STEP if stop_after is None else min(FAMILIES_PER_STEP, stop_after - delivered)
                async with self.sessions() as session:
                    students = list((await session.execute(select(CollectiveTarget.student_id).where(
                        CollectiveTarget.send_id == send_id, CollectiveTarget.done_at.is_(None))
                        .order_by(CollectiveTarget.student_id).limit(max(size, 1)))).scalars().all())
                if not students:
                    break
                if size <= 0:
                    return  # stop_after: the worker "dies" with families left
                results, failure = await self._deliver(actor, job, students)
                if results:
                    done = await self._record(send_id, results)
                    delivered += len(results)
                    await self._progress(actor.id, send_id, done, job.total, "running")
                if failure is not None:
                    raise failure  # the job stays running: resumed later, idempotently
                if lost.is_set() or not await self._lease(send_id):
                    return  # someone else took over (our lease expired): let them finish
        finally:
            await cancel_and_wait(keeper)
        async with self.sessions() as session, session.begin():
            await session.execute(update(CollectiveSend).where(CollectiveSend.id == send_id).values(
                status="done", lease_owner=None, lease_until=0.0))
        await self._progress(actor.id, send_id, job.total, job.total, "done")

    async def _keep_lease(self, send_id: int, lost: asyncio.Event) -> None:
        """One beat of the lease keeper: renew the lease, or flag it lost (and stop
        renewing).  A beat that fails is logged; the next tries again, the lease
        has two more."""
        if not lost.is_set() and not await self._lease(send_id):
            lost.set()

    async def _record(self, send_id: int, results: dict[int, tuple[int | None, int | None]]) -> int:
        """The step's families done (one statement), and the job's count."""
        now = self.clock.utcnow()
        async with self.sessions() as session, session.begin():
            await session.execute(_MARK_DONE, [
                {"b_send": send_id, "b_student": student_id, "b_conversation": conversation_id,
                 "b_message": message_id, "b_at": now}
                for student_id, (conversation_id, message_id) in results.items()])
            done = (await session.execute(select(func.count()).select_from(CollectiveTarget).where(
                CollectiveTarget.send_id == send_id, CollectiveTarget.done_at.is_not(None)))).scalar_one()
            await session.execute(update(CollectiveSend).where(CollectiveSend.id == send_id).values(done=done))
        return done

    async def _deliver(self, actor: Caller, job: CollectiveSend, student_ids: Sequence[int]
                       ) -> tuple[dict[int, tuple[int | None, int | None]], BaseException | None]:
        """Post the job's message to these families, together: their conversations
        are looked up in three queries, the missing ones created side by side, and
        the sends share group commits (chat.sending).  A family refused (e.g.
        direction locked its conversation, R10) is recorded as (None, None): the job
        must not stall on one family.  Returns what was delivered, and the first
        unexpected failure (a database error), once every family of the step has
        finished: the delivered ones are recorded before it is raised."""
        conversations = await self.family_conversations(actor, student_ids)

        async def one(student_id: int) -> tuple[int | None, int | None]:
            try:
                conversation_id = conversations[student_id]
                if conversation_id is _NEW:
                    conversation_id = (await self.create_conversation(
                        actor, sorted(conversations.guardians[student_id]), child_id=student_id))["id"]
                if conversation_id is None:
                    return None, None  # a student with no guardian on file: nobody to write to
                ack = await self.send_message(
                    actor, conversation_id, f"collective-{job.id}-{student_id}", job.text)
            except ChatError as exc:
                log.info("collective send %s: family of student %s skipped (%s)", job.id, student_id, exc.code)
                return None, None
            return conversation_id, ack["message_id"]

        answers = await asyncio.gather(*(one(student_id) for student_id in student_ids), return_exceptions=True)
        failures = [a for a in answers if isinstance(a, BaseException)]
        return ({s: a for s, a in zip(student_ids, answers) if not isinstance(a, BaseException)},
                failures[0] if failures else None)

    async def _progress(self, author_id: int, send_id: int, done: int, total: int, status: str) -> None:
        await self.hub.publish_person(author_id, "frame", dumps(
            {"type": "collective.progress", "send_id": send_id, "done": done, "total": total, "status": status}))

    async def deliver_one(self, actor: Caller, job: CollectiveSend, student_id: int) -> tuple[int | None, int | None]:
        """Post the job's message in this family's private conversation (idempotent)."""
        results, failure = await self._deliver(actor, job, [student_id])
        if failure is not None:
            raise failure
        return results[student_id]

    async def family_conversations(self, actor: Caller, student_ids: Sequence[int]) -> "_Families":
        """Per child: the conversation about it whose active members are exactly the
        staff member and the child's guardians (the lowest id if several); ``_NEW``
        when there is none yet (to be created with the child context); None for a
        child with no guardian on file."""
        found = _Families()
        async with self.sessions() as session:
            for student_id, person_id in (await session.execute(
                    select(Guardianship.student_id, Guardianship.person_id)
                    .where(Guardianship.student_id.in_(student_ids)))).all():
                found.guardians.setdefault(student_id, set()).add(person_id)
            candidates = (await session.execute(
                select(Conversation.id, Conversation.child_id)
                .join(Participant, Participant.conversation_id == Conversation.id)
                .where(Conversation.child_id.in_(student_ids), Participant.person_id == actor.id,
                       Participant.active == True)  # noqa: E712
                .order_by(Conversation.id))).all()
            members: dict[int, set[int]] = {}
            if candidates:
                for conversation_id, person_id in (await session.execute(
                        select(Participant.conversation_id, Participant.person_id).where(
                            Participant.conversation_id.in_([c for c, _ in candidates]),
                            Participant.active == True))).all():  # noqa: E712
                    members.setdefault(conversation_id, set()).add(person_id)
        for student_id in student_ids:
            guardians = found.guardians.get(student_id)
            found[student_id] = _NEW if guardians else None
        for conversation_id, student_id in candidates:
            guardians = found.guardians.get(student_id)
            if found[student_id] is _NEW and members.get(conversation_id) == guardians | {actor.id}:
                found[student_id] = conversation_id
        return found


class _Families(dict):
    """student id -> conversation id, ``_NEW`` or None; ``guardians``: student id -> person ids."""

    def __init__(self) -> None:
        super().__init__()
        self.guardians: dict[int, set[int]] = {}


_NEW = object()  # a family with no conversation of this kind yet
# Families delivered together: one look-up, sends in shared batches, one progress frame.
FAMILIES_PER_STEP = 32
_MARK_DONE = (
    update(CollectiveTarget.__table__)
    .where(CollectiveTarget.__table__.c.send_id == bindparam("b_send"),
           CollectiveTarget.__table__.c.student_id == bindparam("b_student"))
    .values(conversation_id=bindparam("b_conversation"), message_id=bindparam("b_message"),
            done_at=bindparam("b_at")))
