"""Reading uploaded files without trusting them, in bounded memory.

* JPEG and PNG are rewritten without their metadata (EXIF with GPS, XMP, IPTC,
  comments, text chunks) — photos of children must not tell where they were
  taken (R7).  The rewrite is lossless: segments are dropped, pixels are not
  re-encoded.  A JPEG's scan data is walked to the marker that ends it, so
  that metadata between the scans of a progressive JPEG goes too, and nothing
  after its end-of-image marker is kept.  The visible orientation is kept by
  writing back a minimal EXIF block that holds only the Orientation tag when
  the photo had one other than "upright".
* PDF files are scanned for the names that carry active content, including
  names written with ``#xx`` escapes and the names inside object streams.  An
  object stream is decoded through its filters — FlateDecode (zlib or raw
  deflate), ASCIIHexDecode and ASCII85Decode, chained in any order, with the
  decoded size bounded — and one the hub cannot decode (LZW, a predictor,
  Crypt or an encrypted file, damaged data) or whose dictionary it cannot
  delimit is refused as ``attachment.type_not_allowed``: what the hub cannot
  read could hide anything.
* DOCX files are listed as zip entries for the R7 checks.

Everything reads and writes in chunks: a 20 MB file never sits in memory.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import os
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from chat.errors import BadRequest
from chat.policies.attachments import PDF_ACTIVE_NAMES, ZipEntry

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


class _JpegSource:
    """The JPEG read a chunk at a time, so that the scan data can be searched for
    the marker that ends it and the rest of the chunk kept: each byte is read and
    searched once, however many scans and segments the file has."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self._buffer = b""
        self._position = 0

    def _refill(self) -> bool:
        chunk = self._src.read(CHUNK)
        if not chunk:
            return False
        self._buffer = self._buffer[self._position:] + chunk
        self._position = 0
        return True

    def _ensure(self, n: int) -> bool:
        """Whether ``n`` more bytes are there (reading on when needed)."""
        while len(self._buffer) - self._position < n:
            if not self._refill():
                return False
        return True

    def start_of_image(self) -> bool:
        if not self._ensure(2) or not self._buffer.startswith(b"\xff\xd8", self._position):
            return False
        self._position += 2
        return True

    def marker(self) -> int | None:
        """The code of the marker that stands here, after its 0xFF and any fill
        bytes; None at the end of the file."""
        buffer, position = self._buffer, self._position
        if position + 2 <= len(buffer) and buffer[position] == 0xFF and buffer[position + 1] != 0xFF:
            self._position = position + 2  # the usual case, without fill bytes
            return buffer[position + 1]
        if not self._ensure(1):
            return None
        if self._buffer[self._position] != 0xFF:
            raise _bad_image()
        self._position += 1
        while True:
            if not self._ensure(1):
                raise _bad_image()
            code = self._buffer[self._position]
            self._position += 1
            if code != 0xFF:
                return code

    def segment(self) -> bytes:
        """A marker segment's length field and payload."""
        buffer, position = self._buffer, self._position
        if position + 2 <= len(buffer):
            end = position + (buffer[position] << 8 | buffer[position + 1])
            if position + 2 <= end <= len(buffer):  # the usual case: all of it is read already
                self._position = end
                return buffer[position:end]
        if not self._ensure(2):
            raise _bad_image()
        (length,) = struct.unpack_from(">H", self._buffer, self._position)
        if length < 2 or not self._ensure(length):
            raise _bad_image()
        segment = self._buffer[self._position:self._position + length]
        self._position += length
        return segment

    def copy_scan_data(self, out: _HashingWriter) -> int | None:
        """Copy the entropy-coded data that follows a start-of-scan header to ``out``,
        byte for byte, up to the marker that ends it; return that marker (its 0xFF
        and code consumed), or None when the file ends first.  In scan data a 0xFF
        is followed by 0x00 (a stuffed 0xFF), by a restart marker RST0–RST7, or by
        more 0xFF (fill bytes); anything else is a marker."""
        while True:
            end = _SCAN_END.search(self._buffer, self._position)
            if end is not None:
                out.write(self._buffer[self._position:end.start()])
                self._position = end.end()
                return self._buffer[end.end() - 1]
            # Keep a trailing 0xFF: what it means is in the next chunk.
            stop = max(self._position, len(self._buffer) - self._buffer.endswith(b"\xff"))
            out.write(self._buffer[self._position:stop])
            self._position = stop
            if not self._refill():
                out.write(self._buffer[self._position:])
                self._position = len(self._buffer)
                return None


# The end of a scan's data: a 0xFF followed by neither 0x00, nor RST0–RST7, nor another 0xFF.
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_SOS, _EOI, _SOI = 0xDA, 0xD9, 0xD8


def strip_jpeg(src: BinaryIO, dst: BinaryIO) -> Rewritten:
    """Rewrite a JPEG without its metadata, in one pass and bounded memory.

    Up to the first scan, the segments :func:`_keep_jpeg_segment` keeps are
    copied (the orientation is written back as a minimal EXIF block).  From the
    first scan on — a progressive JPEG has several, with tables between them —
    the scan data is copied as it is and every segment but APPn and COM is kept:
    metadata placed between scans is dropped too.  The file ends with its EOI
    marker: bytes after it (a second image, an appended archive, text) are dropped.
    """
    source = _JpegSource(src)
    out = _HashingWriter(dst)
    if not source.start_of_image():
        raise _bad_image()
    out.write(b"\xff\xd8")
    width = height = None
    orientation_written = False
    scanning = False  # True from the first start of scan on
    marker: int | None = None  # a marker already read: the one that ended a scan's data
    while True:
        if marker is None:
            marker = source.marker()
            if marker is None:
                if not scanning:
                    raise _bad_image()
                break  # a file cut after a scan: what was there is kept
        if marker == _EOI:
            if not scanning:
                raise _bad_image()  # no image data
            out.write(b"\xff\xd9")
            break  # anything after the end of the image is dropped
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # RSTn, TEM: no length
            out.write(bytes((0xFF, marker)))
            marker = None
            continue
        if marker == _SOI and scanning:
            raise _bad_image()  # a second image inside the first: decoders refuse it
        segment = source.segment()
        payload = segment[2:]
        if not scanning:
            if marker in _SOF and len(payload) >= 5:
                height, width = struct.unpack(">HH", payload[1:5])
            if marker == 0xE1 and not orientation_written and payload.startswith(b"Exif\x00\x00"):
                orientation = exif_orientation(payload)
                if orientation != 1:
                    out.write(minimal_exif(orientation))  # keep the visible orientation
                orientation_written = True
            keep = _keep_jpeg_segment(marker, payload)
        else:  # R7: no EXIF, XMP or comment hidden between scans either
            keep = not (0xE0 <= marker <= 0xEF or marker == 0xFE)
        if keep:
            out.write(bytes((0xFF, marker)) + segment)
        if marker == _SOS:  # the scan's data follows, up to the next marker
            scanning = True
            marker = source.copy_scan_data(out)
            if marker is None:
                break  # a file cut in its scan data: what was there is kept
        else:
            marker = None
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
# A reader runs what an object stream holds as if it stood in the file, so the names of
# every object stream are read too.  Which streams those are, and how their data is
# encoded, is read from their dictionaries; what the hub cannot decode is refused
# rather than let through unread (attachment.type_not_allowed, "PDF object stream: …").
_DELIMITER = rb"\x00\t\n\x0c\r ()<>\[\]{}/%"
# A name ends at PDF white space (NUL included) or a delimiter; \x0b ends one here too, which
# can only find more names than a reader does.
_NAME = re.compile(rb"/([^\x0b" + _DELIMITER + rb"]{1,127})")
_HEX = re.compile(rb"#([0-9A-Fa-f]{2})")
_NAME_CARRY = 256  # more than the longest name _NAME reads (127 characters and its slash)
# Decoding object streams is bounded: a PDF's dictionaries are small.  The output of every
# filter of a chain counts, so that a chain of filters cannot multiply the work.
MAX_DECODED_BYTES = 32 * 1024 * 1024
# The filters the hub decodes, by their names and the abbreviations readers also accept.
# Anything else on an object stream (LZW, RunLength, Crypt, image codecs) is refused.
_PDF_FILTERS = {"FlateDecode": "FlateDecode", "Fl": "FlateDecode", "ASCIIHexDecode": "ASCIIHexDecode",
                "AHx": "ASCIIHexDecode", "ASCII85Decode": "ASCII85Decode", "A85": "ASCII85Decode"}
MAX_PDF_FILTERS = 4  # writers chain two at most (an ASCII armour over compression)
# What makes a stream an object stream to a reader: /Type /ObjStm for the specification, /First
# for pdf.js, which reads any stream with /First and /N as one, whatever its /Type says.
_OBJECT_STREAM_NAMES = frozenset({"ObjStm", "First"})
# Outline entries with children also have /First: a 20 MB PDF has a few thousand at most.
MAX_OBJECT_STREAM_NAMES = 50_000
# How far before such a name the "obj" of the object holding it may stand (an object
# stream's dictionary is a few dozen bytes; an outline entry's title a few hundred), and
# how long a dictionary is read from there.
_OBJECT_REACH = 64 * 1024
_DICTIONARY_LIMIT = 2 * _OBJECT_REACH
_NESTING_LIMIT = 32  # arrays and dictionaries inside each other
# Tokens read and object starts tried, for a whole file: far above what a real PDF needs
# (one or two short dictionaries per name), low enough to stop a file built to be slow.
MAX_PDF_PARSE_STEPS = 4_000_000

_OBJECT_START = re.compile(rb"(?<![^" + _DELIMITER + rb"])obj(?![^" + _DELIMITER + rb"])")
_SKIP = rb"(?>(?:[\x00\t\n\x0c\r ]+|%[^\r\n]*)*)"  # white space and comments (atomic: no backtracking)
# One token after what is skipped; a string without nested parentheses is read whole,
# one with them by _skip_string.
_TOKEN = re.compile(
    _SKIP + rb"(?:(?P<open><<)|(?P<close>>>)|(?P<array>\[)|(?P<end_array>\])"
    rb"|/(?P<name>[^" + _DELIMITER + rb"]*)"
    rb"|(?P<hex><[0-9A-Fa-f\x00\t\n\x0c\r ]*>)"
    rb"|(?P<string>\((?:[^()\\]|\\.)*\))"
    rb"|(?P<nested>\()"
    rb"|(?P<word>[^" + _DELIMITER + rb"]+))",
    re.DOTALL,
)
_OPEN = re.compile(_SKIP + rb"<<")
_STRING_PART = re.compile(rb"[()\\]")
_INTEGER = re.compile(rb"[+-]?\d+")
_STREAM_DATA = re.compile(rb" *(?:\r\n|\n|\r)")  # after the "stream" keyword
# A stream inside an object stream (which the specification forbids and pdf.js reads).
_STREAM_IN_OBJECT_STREAM = re.compile(rb">>(?:[\x00\t\n\x0c\r ]|%[^\r\n]*[\r\n])*stream(?![^" + _DELIMITER + rb"])")
_PDF_WHITESPACE = b"\x00\t\n\x0c\r "
_HEX_DIGITS = re.compile(rb"[0-9A-Fa-f]*")
_A85_GROUPS = re.compile(rb"(?:z|[!-u]{5})*")
_A85_PARTIAL = re.compile(rb"[!-u]{0,4}")


def _name(raw: bytes) -> str:
    """A name as a PDF reader reads it: ``#xx`` escapes decoded (``/Obj#53tm`` is ``/ObjStm``)."""
    if b"#" not in raw:
        return raw.decode("latin-1")
    return _HEX.sub(lambda m: bytes([int(m.group(1), 16)]), raw).decode("latin-1")


def _unreadable(what: str) -> BadRequest:
    """An object stream the hub cannot read: it could hide anything, so the PDF is refused."""
    return BadRequest("attachment.type_not_allowed", detected=f"PDF object stream: {what}")


class _NameScanner:
    """The names of a byte stream fed in pieces, each reported once with its offset,
    including a name cut between two pieces."""

    def __init__(self) -> None:
        self._carry = b""
        self._carry_at = 0  # offset of the carry in the stream
        self._next = 0  # where the next name not yet reported may start

    def feed(self, data: bytes, final: bool = False) -> list[tuple[int, str]]:
        text = self._carry + data
        names = []
        for match in _NAME.finditer(text):
            at = self._carry_at + match.start()
            if at < self._next:
                continue  # reported with the previous piece
            if match.end() == len(text) and not final:
                break  # the name may go on in the next piece
            names.append((at, _name(match.group(1))))
            self._next = self._carry_at + match.end()
        keep = min(len(text), _NAME_CARRY)
        self._carry_at += len(text) - keep
        self._carry = text[len(text) - keep:]
        return names

    def finish(self) -> list[tuple[int, str]]:
        return self.feed(b"", final=True)


class _Steps:
    """The parse budget of one file (MAX_PDF_PARSE_STEPS)."""

    def __init__(self) -> None:
        self.left = MAX_PDF_PARSE_STEPS

    def take(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise _unreadable("too many objects to check")


class _Broken(Exception):
    """A dictionary that does not parse, or does not end within the limit."""


@dataclass(frozen=True)
class _Ref:
    number: bytes
    generation: bytes


class _Name(str):
    pass


_STRING = object()  # the text of strings does not matter here
_UNCLEAR = -1  # a "stream" keyword not followed by a line break


@dataclass(frozen=True)
class _Dictionary:
    start: int  # offset of its "<<"
    end: int  # just after its ">>"
    keys: dict[str, object]
    repeated_keys: bool
    data_start: int | None  # where the stream's data starts, when a stream follows; _UNCLEAR when unsure


def _skip_string(data: bytes, position: int, limit: int, steps: _Steps) -> int:
    """The end of a string with nested parentheses that starts before ``position``."""
    depth = 1
    while depth:
        steps.take()
        part = _STRING_PART.search(data, position, limit)
        if part is None:
            raise _Broken()
        if data[part.start()] == 0x5C:  # a backslash escapes the next byte
            position = part.start() + 2
            continue
        depth += 1 if data[part.start()] == 0x28 else -1
        position = part.end()
    return position


def _read_dictionary(data: bytes, position: int, limit: int, at_eof: bool,
                     steps: _Steps) -> tuple[dict[str, object], bool, int]:
    """The dictionary whose "<<" ends at ``position``: its keys and values (``12 0 R``
    read as one reference), whether a key is repeated, and where it ends."""
    containers: list[list[object]] = [[]]
    closings = ["close"]
    repeated = False
    while True:
        steps.take()
        match = _TOKEN.match(data, position, limit)
        if match is None or (match.end() == limit and not at_eof):
            raise _Broken()  # nothing readable, or a token that may go on past the limit
        position = match.end()
        kind = match.lastgroup
        value: object
        if kind == "open" or kind == "array":
            containers.append([])
            closings.append("close" if kind == "open" else "end_array")
            if len(containers) > _NESTING_LIMIT:
                raise _Broken()
            continue
        if kind == "close" or kind == "end_array":
            if kind != closings.pop():
                raise _Broken()
            items = containers.pop()
            if kind == "close":
                if len(items) % 2 or any(type(key) is not _Name for key in items[::2]):
                    raise _Broken()
                value = dict(zip(items[::2], items[1::2]))
                repeated = repeated or len(value) != len(items) // 2
                if not containers:
                    return value, repeated, position  # type: ignore[return-value]
            else:
                value = items
        elif kind == "name":
            value = _Name(_name(match.group(kind)))
        elif kind == "word":
            value = match.group(kind)
            items = containers[-1]
            if (value == b"R" and len(items) >= 2 and type(items[-1]) is bytes and type(items[-2]) is bytes
                    and _INTEGER.fullmatch(items[-1]) and _INTEGER.fullmatch(items[-2])):
                value = _Ref(items.pop(-2), items.pop())
        else:  # strings: their text does not matter here
            if kind == "nested":
                position = _skip_string(data, position, limit, steps)
            value = _STRING
        containers[-1].append(value)


class _PdfWindow:
    """The part of the file around the names being looked at, moving forward with
    them, and the object starts ("obj" keywords) in it, found once per window."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f, self._size = f, size
        self.base = 0
        self.data = b""
        self.object_starts: list[int] = []

    def cover(self, start: int, end: int) -> None:
        start, end = max(0, start), min(end, self._size)
        if self.base <= start and end <= self.base + len(self.data):
            return
        # One byte more in front, to see what precedes an "obj" at the start; a chunk
        # more behind, so that the names that follow fall in this window too.
        self.base = max(0, start - 1)
        self._f.seek(self.base)
        self.data = self._f.read(end - self.base + CHUNK)
        self.object_starts = [self.base + match.start() for match in _OBJECT_START.finditer(self.data)
                              if match.start() > 0 or self.base == 0]

    def starts_before(self, at: int) -> Iterator[int]:
        """The object starts in the reach of a name at ``at``, the nearest first."""
        low = bisect.bisect_left(self.object_starts, at - _OBJECT_REACH)
        for index in range(bisect.bisect_left(self.object_starts, at) - 1, low - 1, -1):
            yield self.object_starts[index]

    def dictionary_at(self, object_start: int, steps: _Steps) -> _Dictionary | None:
        """The dictionary that follows the "obj" at ``object_start`` (None when
        something else follows); raises _Broken when it cannot be read."""
        limit = min(object_start - self.base + _DICTIONARY_LIMIT, len(self.data))
        at_eof = self.base + limit == self._size
        opening = _OPEN.match(self.data, object_start - self.base + 3, limit)
        if opening is None:
            return None
        keys, repeated, end = _read_dictionary(self.data, opening.end(), limit, at_eof, steps)
        data_start: int | None = None
        following = _TOKEN.match(self.data, end, limit)
        if following is None or (following.end() == limit and not at_eof):
            data_start = _UNCLEAR
        elif following.group("word") == b"stream":
            line_break = _STREAM_DATA.match(self.data, following.end(), limit)
            data_start = self.base + line_break.end() if line_break else _UNCLEAR
        return _Dictionary(self.base + opening.end() - 2, self.base + end, keys, repeated, data_start)

    def commented(self, object_start: int) -> bool:
        """Whether a "%" stands before ``object_start`` on its line: the "obj" may be
        inside a comment, where another object's dictionary would go on."""
        position = object_start - self.base
        line = max(self.data.rfind(b"\n", 0, position), self.data.rfind(b"\r", 0, position))
        if line < 0 and self.base > 0:
            return True  # the line starts before the window: cannot tell
        return b"%" in self.data[line + 1:position]


def _filter_chain(keys: dict[str, object]) -> tuple[str, ...]:
    """The decoders an object stream's dictionary asks for; what the hub does not
    decode (another filter, a predictor, data in another file) is refused."""
    def filter_names(value: object) -> list[object] | None:
        if value == b"null":
            return []
        if isinstance(value, _Name):
            return [value]
        if isinstance(value, list) and all(isinstance(name, _Name) for name in value):
            return value
        return None

    # /F is the filter's abbreviation to pdf.js, and a file specification (the data
    # in another file) to the specification: a name or names are read as filters.
    if "FFilter" in keys or "FDecodeParms" in keys or ("F" in keys and filter_names(keys["F"]) is None):
        raise _unreadable("data in another file")
    given = [keys[key] for key in ("F", "Filter") if key in keys]
    if len(given) == 2 and given[0] != given[1]:
        raise _unreadable("two filter entries")
    names = filter_names(given[0]) if given else []
    if names is None:
        raise _unreadable("filter given by reference")
    if len(names) > MAX_PDF_FILTERS:
        raise _unreadable(f"more than {MAX_PDF_FILTERS} filters")
    chain = []
    for name in names:
        if name not in _PDF_FILTERS:
            raise _unreadable(f"/{name}")
        chain.append(_PDF_FILTERS[str(name)])
    for key in ("DP", "DecodeParms"):
        parameters = keys.get(key, b"null")
        for entry in parameters if isinstance(parameters, list) else [parameters]:
            if entry == b"null":
                continue
            if not isinstance(entry, dict):
                raise _unreadable("decoding parameters given by reference")
            if entry.get("Predictor", b"1") != b"1":
                raise _unreadable("/Predictor")
    return tuple(chain)


@dataclass(frozen=True)
class _ObjectStream:
    data_start: int
    filters: tuple[str, ...]


def _object_streams(f: BinaryIO, size: int, names_at: list[int], steps: _Steps) -> set[_ObjectStream]:
    """The object streams whose dictionary holds one of the names at ``names_at``.

    For each name, the dictionaries after the "obj" keywords before it are read, the
    nearest first, up to the first whose dictionary holds the name.  An "obj" inside
    a string of that dictionary does not start a readable dictionary; one inside a
    comment might, so a comment before the "obj" on its line is refused, and so is a
    name no dictionary holds, or a dictionary that does not parse: either could hide
    an object stream's real dictionary.
    """
    window = _PdfWindow(f, size)
    dictionaries: dict[int, _Dictionary | None] = {}
    streams: set[_ObjectStream] = set()
    for at in names_at:
        window.cover(at - _OBJECT_REACH - 1, at + _DICTIONARY_LIMIT)
        for object_start in window.starts_before(at):
            steps.take()
            if object_start not in dictionaries:
                try:
                    dictionaries[object_start] = window.dictionary_at(object_start, steps)
                except _Broken:
                    raise _unreadable("a damaged dictionary") from None
            dictionary = dictionaries[object_start]
            if dictionary is None or not dictionary.start < at < dictionary.end:
                continue
            if window.commented(object_start):
                raise _unreadable("an object start inside a comment")
            keys = dictionary.keys
            if ("First" in keys or keys.get("Type") == "ObjStm") and dictionary.data_start is not None:
                if dictionary.data_start == _UNCLEAR or dictionary.repeated_keys:
                    raise _unreadable("an ambiguous dictionary")
                streams.add(_ObjectStream(dictionary.data_start, _filter_chain(keys)))
            break
        else:
            raise _unreadable("/First or /ObjStm outside any object")
    return streams


class _Decoder:
    """One filter, fed its input in pieces; ``eof`` once its data has ended."""

    eof = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        raise NotImplementedError

    def finish(self) -> Iterator[bytes]:
        """What is left when the input ends before the filter's own end."""
        return iter(())


class _FlateDecoder(_Decoder):
    """zlib data, or raw deflate data without the zlib header (which some readers accept)."""

    def __init__(self) -> None:
        self._inflater: Any = None
        self._head = b""

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._inflater is None:
            self._head += data
            if len(self._head) < 2:
                return
            data, self._head = self._head, b""
            zlib_header = data[0] & 0x0F == 8 and data[0] >> 4 <= 7 and (data[0] << 8 | data[1]) % 31 == 0
            self._inflater = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        while not self.eof:
            out = self._inflater.decompress(data, CHUNK)  # a bounded piece at a time
            data = self._inflater.unconsumed_tail
            self.eof = self._inflater.eof
            if out:
                yield out
            elif not data:
                break  # all the input is in; nothing more comes out of it yet

    def finish(self) -> Iterator[bytes]:
        if self._inflater is not None and not self.eof and (out := self._inflater.flush()):
            yield out


class _AsciiHexDecoder(_Decoder):
    def __init__(self) -> None:
        self._odd = b""

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self.eof:
            return
        end = data.find(b">")
        if end >= 0:
            data, self.eof = data[:end], True
        digits = self._odd + data.translate(None, _PDF_WHITESPACE)
        if not _HEX_DIGITS.fullmatch(digits):
            raise ValueError("not a hexadecimal digit")
        if self.eof and len(digits) % 2:
            digits += b"0"  # a last odd digit is followed by a 0
        whole = len(digits) - len(digits) % 2
        self._odd = digits[whole:]
        if whole:
            yield bytes.fromhex(digits[:whole].decode("ascii"))

    def finish(self) -> Iterator[bytes]:
        if not self.eof and self._odd:
            yield bytes.fromhex((self._odd + b"0").decode("ascii"))


class _Ascii85Decoder(_Decoder):
    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self.eof:
            return
        end = data.find(b"~")  # "~>" ends the data
        if end >= 0:
            data, self.eof = data[:end], True
        text = self._partial + data.translate(None, _PDF_WHITESPACE)
        whole = _A85_GROUPS.match(text).end()
        self._partial = text[whole:]
        if not _A85_PARTIAL.fullmatch(self._partial):
            raise ValueError("not a base-85 digit")
        if whole:
            yield base64.a85decode(text[:whole])
        if self.eof:
            yield from self.finish()

    def finish(self) -> Iterator[bytes]:
        partial, self._partial = self._partial, b""
        if len(partial) == 1:
            raise ValueError("a lone base-85 digit")
        if partial:
            yield base64.a85decode(partial)  # a last group of 2 to 4 digits


_DECODERS: dict[str, Callable[[], _Decoder]] = {
    "FlateDecode": _FlateDecoder, "ASCIIHexDecode": _AsciiHexDecoder, "ASCII85Decode": _Ascii85Decoder}


class _DecodedNames:
    """The names in an object stream's decoded data, and a check that it holds no stream."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self._scanner = _NameScanner()
        self._carry = b""

    def take(self, data: bytes) -> None:
        self.names.update(name for _, name in self._scanner.feed(data))
        text = self._carry + data
        if _STREAM_IN_OBJECT_STREAM.search(text):
            raise _unreadable("a stream inside an object stream")
        self._carry = text[-_NAME_CARRY:]

    def finish(self) -> None:
        self.names.update(name for _, name in self._scanner.finish())
        if "ObjStm" in self.names:
            raise _unreadable("an object stream inside an object stream")


class _Decoded:
    """What the filters produced, for all of a file (MAX_DECODED_BYTES)."""

    def __init__(self) -> None:
        self.total = 0

    def count(self, piece: bytes) -> bytes:
        self.total += len(piece)
        if self.total > MAX_DECODED_BYTES:
            raise BadRequest("attachment.zip_bomb", reason="pdf_streams")
        return piece


def _decode_object_stream(f: BinaryIO, stream: _ObjectStream, decoded: _Decoded) -> set[str]:
    """The names in an object stream, its data run through its filters as it is read."""
    stages = [_DECODERS[name]() for name in stream.filters]
    sink = _DecodedNames()

    def push(stage: int, pieces: Iterator[bytes]) -> None:
        for piece in pieces:
            decoded.count(piece)
            if stage + 1 == len(stages):
                sink.take(piece)
            else:
                push(stage + 1, stages[stage + 1].feed(piece))

    f.seek(stream.data_start)
    try:
        while not stages[0].eof and (data := f.read(64 * 1024)):
            push(0, stages[0].feed(data))
        for stage, decoder in enumerate(stages):  # the data ended: what each filter still holds
            push(stage, decoder.finish())
    except (zlib.error, ValueError):
        raise _unreadable("damaged data (" + " ".join("/" + name for name in stream.filters) + ")") from None
    sink.finish()
    return sink.names


def pdf_names(path: Path) -> set[str]:
    """Every name (``/Something``) in a PDF, in the file and in its object streams.

    The file is read in chunks; the names ``/ObjStm`` and ``/First`` lead to the
    dictionaries that hold them, and the object streams among those are decoded
    (FlateDecode, raw deflate included, ASCIIHexDecode and ASCII85Decode, chained in
    any order, with their output bounded) and their names read too.  An object
    stream the hub cannot read — another filter, a predictor, an encrypted file, a
    damaged or ambiguous dictionary — is refused as ``attachment.type_not_allowed``.
    """
    found: set[str] = set()
    names_at: list[int] = []
    scanner = _NameScanner()
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        while True:
            chunk = f.read(CHUNK)
            for at, name in scanner.feed(chunk) if chunk else scanner.finish():
                found.add(name)
                if name in _OBJECT_STREAM_NAMES:
                    names_at.append(at)
            if len(names_at) > MAX_OBJECT_STREAM_NAMES:
                raise _unreadable("too many object streams to check")
            if not chunk:
                break
        if found & PDF_ACTIVE_NAMES or not names_at:
            return found  # refused for what it shows, or nothing is hidden
        steps = _Steps()
        streams = _object_streams(f, size, names_at, steps)
        if streams and "Encrypt" in found:
            raise _unreadable("encrypted")  # its object streams are ciphertext to the hub
        decoded = _Decoded()
        for stream in sorted(streams, key=lambda s: (s.data_start, s.filters)):
            if stream.filters:  # without a filter its names were read with the file's
                found |= _decode_object_stream(f, stream, decoded)
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
