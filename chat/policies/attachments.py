"""What may be attached to a message (R7), decided on plain values.

The limits are Clic École's, from the parents' technical guide (seed 000):
"Les fichiers ou images peuvent être du type JPG, JPEG, PNG, DOCX ou PDF. Le
maximum est de 10 pièces jointes par message et de 20 Mo par fichier."  The
press article also names DOC; the guide is authoritative, so legacy ``.doc``
is refused with a message suggesting DOCX or PDF.

The store (``chat/attachments.py``) reads the bytes and hands these functions
what it found: the type libmagic saw, the entries of a DOCX's zip, the names
found in a PDF.  Nothing here opens a file.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable

from chat.errors import BadRequest, NotFound, TooLarge

# R7: the Clic École limits.
MAX_FILES_PER_MESSAGE = 10
MAX_FILE_BYTES = 20 * 1024 * 1024  # 20 MB ("20 Mo") per file

JPEG = "image/jpeg"
PNG = "image/png"
PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
ALLOWED = {JPEG: "jpg", PNG: "png", PDF: "pdf", DOCX: "docx"}
IMAGES = {JPEG, PNG}

# What libmagic calls a legacy Word file (OLE2 compound document).
LEGACY_DOC = {"application/msword", "application/x-ole-storage", "application/cdfv2", "application/vnd.ms-office"}
# A DOCX is a zip; older libmagic versions only see the zip.
ZIP_LIKE = {DOCX, "application/zip", "application/x-zip-compressed"}

# Zip-bomb limits for a DOCX.  A long report with photos has a few hundred
# entries and rarely 50 MB once inflated; Word itself compresses text about 5–10×.
MAX_ZIP_ENTRIES = 1000
MAX_ZIP_TOTAL_BYTES = 200 * 1024 * 1024
MAX_ZIP_ENTRY_BYTES = 100 * 1024 * 1024
MAX_ZIP_RATIO = 100  # inflated / compressed, per entry larger than 1 MiB

# Content types that mean macros (".docm" and friends) inside [Content_Types].xml.
MACRO_CONTENT_TYPES = ("macroenabled", "vbaproject", "vnd.ms-office.activex", "vnd.ms-word.template.macro")
# PDF names that carry active content: scripts, automatic actions, launching, embedded files.
PDF_ACTIVE_NAMES = frozenset({"JavaScript", "JS", "OpenAction", "Launch", "EmbeddedFile", "EmbeddedFiles", "AA",
                              "RichMedia", "XFA"})

# File names: what survives sanitising, and how long it may be.
MAX_FILENAME_CHARS = 120
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f\x7f]')


@dataclass(frozen=True)
class ZipEntry:
    name: str
    compressed: int
    uncompressed: int


def check_count(count: int) -> None:
    """R7: at most ten attachments per message."""
    if count > MAX_FILES_PER_MESSAGE:
        raise BadRequest("attachment.too_many", count=count, limit=MAX_FILES_PER_MESSAGE)


def check_size(size: int) -> None:
    """R7: 20 MB per file; an empty file is no attachment."""
    if size == 0:
        raise BadRequest("attachment.empty")
    if size > MAX_FILE_BYTES:
        raise TooLarge(limit_mb=MAX_FILE_BYTES // (1024 * 1024))


def decide_type(magic_mime: str) -> str:
    """The attachment's type from what libmagic saw in its bytes — never from its
    name or the type the client declared.  DOCX candidates still need
    :func:`check_docx`."""
    mime = magic_mime.lower().split(";")[0].strip()
    if mime in (JPEG, PNG, PDF):
        return mime
    if mime in ZIP_LIKE:
        return DOCX
    if mime in LEGACY_DOC:
        raise BadRequest("attachment.legacy_doc")
    raise BadRequest("attachment.type_not_allowed", detected=mime)


def _is_traversal(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":")


def check_docx(entries: Iterable[ZipEntry], content_types_xml: str | None) -> None:
    """A real Word document: the parts Word needs, no macros, no bomb, no traversal."""
    entries = list(entries)
    if len(entries) > MAX_ZIP_ENTRIES:
        raise BadRequest("attachment.zip_bomb", reason="entries")
    total = 0
    names = set()
    for entry in entries:
        if _is_traversal(entry.name):
            raise BadRequest("attachment.unsafe_archive")
        if entry.uncompressed > MAX_ZIP_ENTRY_BYTES:
            raise BadRequest("attachment.zip_bomb", reason="entry_size")
        if entry.uncompressed > 1024 * 1024 and entry.uncompressed > MAX_ZIP_RATIO * max(entry.compressed, 1):
            raise BadRequest("attachment.zip_bomb", reason="ratio")
        total += entry.uncompressed
        names.add(entry.name.lower())
    if total > MAX_ZIP_TOTAL_BYTES:
        raise BadRequest("attachment.zip_bomb", reason="total_size")
    if any(n.endswith("vbaproject.bin") or n.endswith("vbadata.xml") for n in names):
        raise BadRequest("attachment.macro")
    if content_types_xml is None or "word/document.xml" not in names:
        raise BadRequest("attachment.type_not_allowed", detected="application/zip")
    lowered = content_types_xml.lower()
    if any(marker in lowered for marker in MACRO_CONTENT_TYPES):
        raise BadRequest("attachment.macro")
    if "wordprocessingml.document.main+xml" not in lowered:
        raise BadRequest("attachment.type_not_allowed", detected="application/zip")


def check_pdf_names(names: Iterable[str]) -> None:
    """A PDF carrying scripts, automatic actions or embedded files is refused."""
    found = sorted(set(names) & PDF_ACTIVE_NAMES)
    if found:
        raise BadRequest("attachment.pdf_active_content", names=", ".join("/" + n for n in found))


def safe_filename(name: str | None, extension: str) -> str:
    """A display/download name that is safe everywhere: no path, no control or
    bidirectional-override characters, no reserved device names, not too long,
    and ending with the extension of the type actually detected."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co", "Cn"))
    name = _UNSAFE.sub("_", name).strip(" .")
    stem = name.rsplit(".", 1)[0] if "." in name else name
    stem = stem.strip(" .") or "fichier"
    if stem.split(".")[0].upper() in _WINDOWS_RESERVED:
        stem = "_" + stem
    stem = stem[: MAX_FILENAME_CHARS - len(extension) - 1].rstrip(" .") or "fichier"
    return f"{stem}.{extension}"


# Upload ids are uuid4().hex (chat/conversations/uploads.py, upload): any other text names no
# upload, whatever the table holds.
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


def require_upload_id(upload_id: str) -> str:
    """``upload_id`` if it has the shape of an upload id, else ``attachment.not_found``
    before any look-up: a NUL (which PostgreSQL cannot even compare) or a 4,000-digit
    path names no upload.  The error echoes at most 32 characters of it."""
    if _UPLOAD_ID.fullmatch(upload_id) is None:
        raise NotFound("attachment.not_found", upload_id=upload_id[:32])
    return upload_id
