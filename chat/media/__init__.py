"""Reading uploaded files without trusting them, in bounded memory (R7).

* :mod:`~chat.media.jpeg`, :mod:`~chat.media.png` — photos rewritten without
  their metadata (EXIF with GPS, XMP, IPTC, comments, text chunks): photos of
  children must not tell where they were taken.  :mod:`~chat.media.images`
  picks the rewriter by type.
* :mod:`~chat.media.pdf` — every name of a PDF, the names inside its object
  streams included (:mod:`~chat.media.pdf_syntax` reads the syntax,
  :mod:`~chat.media.pdf_filters` decodes the streams); what the hub cannot
  read is refused as ``attachment.type_not_allowed``.
* :mod:`~chat.media.office` — a DOCX listed as zip entries.
* :mod:`~chat.media.rewriting` — the read size and the hashing writer they share.

Everything reads and writes in chunks: a 20 MB file never sits in memory.
"""

from __future__ import annotations

from chat.media.images import strip_image
from chat.media.jpeg import exif_orientation, minimal_exif, strip_jpeg
from chat.media.office import MAX_CONTENT_TYPES_BYTES, docx_parts
from chat.media.pdf import MAX_OBJECT_STREAM_NAMES, pdf_names
from chat.media.pdf_filters import MAX_DECODED_BYTES, MAX_PDF_FILTERS
from chat.media.pdf_syntax import MAX_PDF_PARSE_STEPS
from chat.media.png import PNG_SIGNATURE, strip_png
from chat.media.rewriting import CHUNK, Rewritten

__all__ = [
    "CHUNK", "MAX_CONTENT_TYPES_BYTES", "MAX_DECODED_BYTES", "MAX_OBJECT_STREAM_NAMES", "MAX_PDF_FILTERS",
    "MAX_PDF_PARSE_STEPS", "PNG_SIGNATURE", "Rewritten", "docx_parts", "exif_orientation", "minimal_exif",
    "pdf_names", "strip_image", "strip_jpeg", "strip_png",
]
