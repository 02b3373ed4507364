"""Office documents: a would-be DOCX listed as zip entries for the R7 checks."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

from chat.errors import BadRequest
from chat.policies.attachments import ZipEntry

MAX_CONTENT_TYPES_BYTES = 1024 * 1024


def docx_parts(path: Path) -> tuple[list[ZipEntry], str | None]:
    """The zip entries of a would-be DOCX and its [Content_Types].xml (bounded read)."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = [ZipEntry(i.filename, i.compress_size, i.file_size) for i in archive.infolist()]
            content_types = None
            if "[Content_Types].xml" in archive.namelist():
                info = archive.getinfo("[Content_Types].xml")
                if info.file_size > MAX_CONTENT_TYPES_BYTES:
                    raise BadRequest("attachment.zip_bomb", reason="content_types")
                with archive.open(info) as part:
                    content_types = part.read(MAX_CONTENT_TYPES_BYTES).decode("utf-8", errors="replace")
    # zlib.error: a part whose deflate stream is damaged (zipfile checks the CRC only after inflating);
    # UnicodeDecodeError: an entry name flagged as UTF-8 whose bytes are not.
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, UnicodeDecodeError, EOFError, OSError,
            RuntimeError, NotImplementedError):
        raise BadRequest("attachment.type_not_allowed", detected="damaged zip") from None
    return entries, content_types
