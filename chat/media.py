"""Reading uploaded files without trusting them, in bounded memory.

* JPEG and PNG are rewritten without their metadata (EXIF with GPS, XMP, IPTC,
  comments, text chunks) — photos of children must not tell where they were
  taken.  The rewrite is lossless: segments are dropped, pixels are not
  re-encoded.  The visible orientation is kept by writing back a minimal EXIF
  block that holds only the Orientation tag when the photo had one other than
  "upright".
* PDF files are scanned for the names that carry active content, including
  inside compressed object streams, and names written with ``#xx`` escapes.
* DOCX files are listed as zip entries for the R7 checks.

Everything reads and writes in chunks: a 20 MB file never sits in memory.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from chat.errors import BadRequest
from chat.policies.attachments import ZipEntry

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Rewritten:
    sha256: str
    size: int
    width: int | None
    height: int | None


class _HashingWriter:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.out.write(data)
        self.hash.update(data)
        self.size += len(data)


def _bad_image() -> BadRequest:
    return BadRequest("attachment.bad_image")


def _read_exact(src: BinaryIO, n: int) -> bytes:
    data = src.read(n)
    if len(data) != n:
        raise _bad_image()
    return data


# -- JPEG -------------------------------------------------------------------------------------------
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def exif_orientation(payload: bytes) -> int:
    """The Orientation tag (1–8) of an APP1 Exif payload, 1 when absent or unreadable."""
    if not payload.startswith(b"Exif\x00\x00") or len(payload) < 14:
        return 1
    tiff = payload[6:]
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return 1
    try:
        (ifd,) = struct.unpack(order + "I", tiff[4:8])
        (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
        for i in range(min(count, 512)):
            entry = tiff[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag == 0x0112 and kind == 3:
                (value,) = struct.unpack(order + "H", entry[8:10])
                return value if 1 <= value <= 8 else 1
    except struct.error:
        return 1
    return 1


def minimal_exif(orientation: int) -> bytes:
    """An APP1 segment holding only the Orientation tag."""
    payload = (
        b"Exif\x00\x00" + b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x01"
        + b"\x01\x12\x00\x03\x00\x00\x00\x01" + struct.pack(">H", orientation) + b"\x00\x00"
        + b"\x00\x00\x00\x00"
    )
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def _keep_jpeg_segment(marker: int, payload: bytes) -> bool:
    if marker == 0xE0:  # APP0: JFIF yes, JFXX (thumbnails) no
        return payload.startswith(b"JFIF\x00")
    if marker == 0xE2:  # APP2: the ICC colour profile only
        return payload.startswith(b"ICC_PROFILE\x00")
    if marker == 0xEE:  # APP14 "Adobe": colour transform needed to decode CMYK
        return payload.startswith(b"Adobe")
    if 0xE1 <= marker <= 0xEF or marker == 0xFE:  # EXIF/XMP, IPTC, other APPn, comments
        return False
    return True


def strip_jpeg(src: BinaryIO, dst: BinaryIO) -> Rewritten:
    out = _HashingWriter(dst)
    if src.read(2) != b"\xff\xd8":
        raise _bad_image()
    out.write(b"\xff\xd8")
    width = height = None
    orientation_written = False
    while True:
        byte = src.read(1)
        if not byte:
            raise _bad_image()
        if byte != b"\xff":
            raise _bad_image()
        marker_byte = src.read(1)
        while marker_byte == b"\xff":  # fill bytes
            marker_byte = src.read(1)
        if not marker_byte:
            raise _bad_image()
        marker = marker_byte[0]
        if marker == 0xD9:  # EOI before any scan
            raise _bad_image()
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            out.write(b"\xff" + marker_byte)
            continue
        (length,) = struct.unpack(">H", _read_exact(src, 2))
        if length < 2:
            raise _bad_image()
        payload = _read_exact(src, length - 2)
        if marker in _SOF and len(payload) >= 5:
            height, width = struct.unpack(">HH", payload[1:5])
        if marker == 0xE1 and not orientation_written and payload.startswith(b"Exif\x00\x00"):
            orientation = exif_orientation(payload)
            if orientation != 1:
                out.write(minimal_exif(orientation))  # keep the visible orientation
            orientation_written = True
        if _keep_jpeg_segment(marker, payload):
            out.write(b"\xff" + marker_byte + struct.pack(">H", length) + payload)
        if marker == 0xDA:  # start of scan: the rest is image data, copied as is
            while chunk := src.read(CHUNK):
                out.write(chunk)
            break
    if not width or not height:
        raise _bad_image()
    return Rewritten(out.hash.hexdigest(), out.size, width, height)


# -- PNG --------------------------------------------------------------------------------------------
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Ancillary chunks that carry metadata: EXIF, free text, timestamps, signatures.
_PNG_DROP = {b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"tIME", b"dSIG"}


def strip_png(src: BinaryIO, dst: BinaryIO) -> Rewritten:
    out = _HashingWriter(dst)
    if src.read(8) != PNG_SIGNATURE:
        raise _bad_image()
    out.write(PNG_SIGNATURE)
    width = height = None
    while True:
        header = src.read(8)
        if len(header) != 8:
            raise _bad_image()  # no IEND
        length, kind = struct.unpack(">I4s", header)
        if length > 0x7FFFFFFF:
            raise _bad_image()
        if kind == b"IHDR":
            data = _read_exact(src, length)
            if length < 8:
                raise _bad_image()
            width, height = struct.unpack(">II", data[:8])
            out.write(header + data + _read_exact(src, 4))
            continue
        if kind in _PNG_DROP:
            src.seek(length + 4, 1)
            continue
        out.write(header)
        remaining = length + 4  # data and CRC
        while remaining:
            chunk = _read_exact(src, min(CHUNK, remaining))
            out.write(chunk)
            remaining -= len(chunk)
        if kind == b"IEND":
            break
    if not width or not height:
        raise _bad_image()
    return Rewritten(out.hash.hexdigest(), out.size, width, height)


def strip_image(mime: str, source: Path, target: Path) -> Rewritten:
    """Rewrite ``source`` into ``target`` without metadata; returns hash, size, dimensions."""
    with source.open("rb") as src, target.open("wb") as dst:
        if mime == "image/jpeg":
            return strip_jpeg(src, dst)
        return strip_png(src, dst)


# -- PDF --------------------------------------------------------------------------------------------
_NAME = re.compile(rb"/([^\s()<>\[\]{}/%]{1,127})")
_STREAM = re.compile(rb"stream\r?\n")
_HEX = re.compile(rb"#([0-9A-Fa-f]{2})")
# Inflating object streams is bounded: a PDF's dictionaries are small.
MAX_INFLATED_BYTES = 32 * 1024 * 1024


def _name(raw: bytes) -> str:
    """A name as a PDF reader reads it: ``#xx`` escapes decoded (``/Obj#53tm`` is ``/ObjStm``)."""
    return _HEX.sub(lambda m: bytes([int(m.group(1), 16)]), raw).decode("latin-1")


def _names(data: bytes, found: set[str]) -> None:
    for match in _NAME.finditer(data):
        found.add(_name(match.group(1)))


def pdf_names(path: Path) -> set[str]:
    """Every name (``/Something``) in a PDF, in the file and in its object streams."""
    found: set[str] = set()
    stream_offsets: list[int] = []
    overlap = 256
    with path.open("rb") as f:
        offset = 0
        tail = b""
        while chunk := f.read(CHUNK):
            data = tail + chunk
            base = offset - len(tail)
            for match in _NAME.finditer(data):
                name = _name(match.group(1))
                found.add(name)
                # An object stream is known by its /ObjStm name, however it is written:
                # escaped, or apart from its /Type key by a comment or a line break.
                if name == "ObjStm" and (stream := _STREAM.search(data, match.end())) is not None:
                    stream_offsets.append(base + stream.end())
            offset += len(chunk)
            tail = data[-overlap:]
        inflated = 0
        for start in sorted(set(stream_offsets)):
            f.seek(start)
            inflater = zlib.decompressobj()
            carry = b""
            while inflated < MAX_INFLATED_BYTES and not inflater.eof:
                compressed = f.read(64 * 1024)
                if not compressed:
                    break
                try:
                    out = inflater.decompress(compressed, MAX_INFLATED_BYTES - inflated)
                except zlib.error:
                    break
                inflated += len(out)
                _names(carry + out, found)
                carry = out[-overlap:]
            if inflated >= MAX_INFLATED_BYTES:
                raise BadRequest("attachment.zip_bomb", reason="pdf_streams")
    return found


# -- DOCX -------------------------------------------------------------------------------------------
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
