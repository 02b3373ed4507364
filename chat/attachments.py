"""The on-disk attachment store (R7): streamed in, checked by content, stored by hash.

An upload is written to ``ATTACHMENTS_DIR/tmp/`` with ``aiofiles`` while it
arrives; the 20 MB limit is enforced on the way (a 2 GB body is cut off at
20 MB + 1 byte, and a declared ``Content-Length`` above the limit is refused
before reading anything).  The finished file is then typed by libmagic from
its bytes, checked (DOCX zip, PDF names), stripped of image metadata, and
moved to ``ATTACHMENTS_DIR/ab/cd/<sha256>``: content-addressed, outside any
static route, served only through the authorised download endpoint.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

import aiofiles
import magic

from chat import media
from chat.policies import attachments as rules


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    size: int
    content_type: str
    filename: str
    width: int | None = None
    height: int | None = None


class AttachmentStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"

    def ensure(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    async def receive(
        self, chunks: AsyncIterator[bytes], declared_length: int | None, filename: str | None
    ) -> StoredFile:
        """Stream an upload to disk within the limit, then check and store it."""
        if declared_length:  # refused before reading a byte when the client says it is too big
            rules.check_size(declared_length)
        self.ensure()
        temporary = self.tmp / uuid.uuid4().hex
        size = 0
        digest = hashlib.sha256()
        try:
            async with aiofiles.open(temporary, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > rules.MAX_FILE_BYTES:
                        rules.check_size(size)  # raises attachment.too_large: stop reading here
                    digest.update(chunk)
                    await out.write(chunk)
            rules.check_size(size)
            return await asyncio.to_thread(self._finish, temporary, digest.hexdigest(), size, filename)
        finally:
            temporary.unlink(missing_ok=True)

    def _finish(self, temporary: Path, sha256: str, size: int, filename: str | None) -> StoredFile:
        """Type by content, check, strip; runs in a worker thread (blocking I/O)."""
        detected = magic.from_file(str(temporary), mime=True)
        mime = rules.decide_type(detected)
        width = height = None
        if mime == rules.DOCX:
            entries, content_types = media.docx_parts(temporary)
            rules.check_docx(entries, content_types)
        elif mime == rules.PDF:
            rules.check_pdf_names(media.pdf_names(temporary))
        source = temporary
        if mime in rules.IMAGES:
            stripped = temporary.with_suffix(".clean")
            try:
                result = media.strip_image(mime, temporary, stripped)
            except BaseException:
                stripped.unlink(missing_ok=True)
                raise
            source, sha256, size, width, height = stripped, result.sha256, result.size, result.width, result.height
        target = self.path_for(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            source.unlink(missing_ok=True)  # the same content is stored already
        else:
            os.replace(source, target)
        name = rules.safe_filename(filename, rules.ALLOWED[mime])
        return StoredFile(sha256, size, mime, name, width, height)

    def remove(self, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)
