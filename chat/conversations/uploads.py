"""Attachments (R7): recording an upload, who may download it (R4, R8), attaching
one's own uploads to a send, and collecting the uploads never attached."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from chat.attachments import AttachmentStore, StoredFile
from chat.errors import Conflict, NotFound
from chat.people import Actor
from chat.policies import access
from chat.policies import attachments as attachment_rules
from chat.storage import queries
from chat.storage.executor import Executor
from chat.storage.models import Message, Participant, Upload

log = logging.getLogger("chat.uploads")

# An upload not attached to a message within a day is garbage-collected: the
# widget attaches within seconds; a day covers a composer left open overnight.
UPLOAD_TTL_SECONDS = 24 * 3600
UPLOAD_GC_INTERVAL_SECONDS = 3600


def upload_view(upload: Any) -> dict[str, Any]:
    """What members see of an attachment: name, size, type, image dimensions."""
    view: dict[str, Any] = {"id": upload.id, "name": upload.filename, "size": upload.size,
                            "type": upload.content_type, "url": f"/api/attachments/{upload.id}"}
    if upload.width:
        view["width"], view["height"] = upload.width, upload.height
    return view


async def own_uploads(executor: Executor, actor: Actor, upload_ids: Sequence[str]) -> list[Any]:
    """R7: only the sender's own uploads, each attached once (locked until the commit).
    The rows carry what :func:`upload_view` shows."""
    if not upload_ids:
        return []
    upload_ids = [attachment_rules.require_upload_id(upload_id) for upload_id in upload_ids]
    rows = {u.id: u for u in (await executor.execute(queries.UPLOADS_TO_ATTACH, {"ids": upload_ids})).all()}
    uploads = []
    for upload_id in upload_ids:
        upload = rows.get(upload_id)
        if upload is None or upload.owner_id != actor.id:
            raise NotFound("attachment.not_found", upload_id=upload_id)
        if upload.message_id is not None:
            raise Conflict("attachment.already_used", upload_id=upload_id)
        uploads.append(upload)
    return uploads


class Uploads:
    """Uploads and their clean-up."""

    def __init__(self, *, sessions: async_sessionmaker, store: AttachmentStore) -> None:
        self.sessions = sessions
        self.store = store

    async def upload(self, actor: Actor, stored: StoredFile) -> dict[str, Any]:
        """Record a checked, stored file as the actor's upload, ready to attach."""
        upload = Upload(id=uuid.uuid4().hex, owner_id=actor.id, sha256=stored.sha256, size=stored.size,
                        content_type=stored.content_type, filename=stored.filename,
                        width=stored.width, height=stored.height)
        async with self.sessions() as session, session.begin():
            session.add(upload)
        return upload_view(upload)

    async def for_download(self, actor: Actor, upload_id: str) -> Upload:
        """The upload, if ``actor`` may read it (:func:`chat.policies.access.may_download`);
        anyone else gets attachment.not_found."""
        async with self.sessions() as session:
            upload = await session.get(Upload, attachment_rules.require_upload_id(upload_id))
            if upload is None:
                raise NotFound("attachment.not_found", upload_id=upload_id)
            if upload.owner_id == actor.id:
                return upload
            if upload.message_id is not None:
                message = await session.get(Message, upload.message_id)
                participant = await session.get(Participant, (message.conversation_id, actor.id))
                member = participant is not None and participant.active
                if access.may_download(actor.id, upload.owner_id, posted=True, member=member,
                                       visible_from_seq=participant.visible_from_seq if member else 0,
                                       message_seq=message.seq, retracted=message.retracted_at is not None):
                    return upload
        raise NotFound("attachment.not_found", upload_id=upload_id)

    async def collect_stale(self) -> None:
        """One pass of the periodic clean-up (chat.app runs it every UPLOAD_GC_INTERVAL_SECONDS)."""
        removed = await self.collect(time.time())
        if removed:
            log.info("garbage-collected %d unattached uploads", removed)

    async def collect(self, now: float) -> int:
        """Delete uploads never attached within UPLOAD_TTL_SECONDS, and their files
        when no other upload shares the content."""
        cutoff = datetime.fromtimestamp(now - UPLOAD_TTL_SECONDS, timezone.utc)
        async with self.sessions() as session, session.begin():
            stale = (await session.execute(select(Upload).where(
                Upload.message_id.is_(None), Upload.created_at < cutoff))).scalars().all()
            hashes = {u.sha256 for u in stale}
            for upload in stale:
                await session.delete(upload)
            await session.flush()
            still_used = set((await session.execute(
                select(Upload.sha256).where(Upload.sha256.in_(hashes)))).scalars().all()) if hashes else set()
        for sha256 in hashes - still_used:
            self.store.remove(sha256)
        return len(stale)
