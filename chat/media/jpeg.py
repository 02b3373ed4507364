"""JPEG rewritten without its metadata, losslessly, in one pass (R7).

Segments are dropped, pixels are not re-encoded.  A JPEG's scan data is walked
to the marker that ends it, so that metadata between the scans of a progressive
JPEG goes too, and nothing after its end-of-image marker is kept.  The visible
orientation is kept by writing back a minimal EXIF block that holds only the
Orientation tag when the photo had one other than "upright".
"""

from __future__ import annotations

import re
import struct
from typing import BinaryIO

from chat.media.rewriting import CHUNK, HashingWriter, Rewritten, bad_image

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
            raise bad_image()
        self._position += 1
        while True:
            if not self._ensure(1):
                raise bad_image()
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
            raise bad_image()
        (length,) = struct.unpack_from(">H", self._buffer, self._position)
        if length < 2 or not self._ensure(length):
            raise bad_image()
        segment = self._buffer[self._position:self._position + length]
        self._position += length
        return segment

    def copy_scan_data(self, out: HashingWriter) -> int | None:
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
    out = HashingWriter(dst)
    if not source.start_of_image():
        raise bad_image()
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
                    raise bad_image()
                break  # a file cut after a scan: what was there is kept
        if marker == _EOI:
            if not scanning:
                raise bad_image()  # no image data
            out.write(b"\xff\xd9")
            break  # anything after the end of the image is dropped
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # RSTn, TEM: no length
            out.write(bytes((0xFF, marker)))
            marker = None
            continue
        if marker == _SOI and scanning:
            raise bad_image()  # a second image inside the first: decoders refuse it
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
        raise bad_image()
    return Rewritten(out.hash.hexdigest(), out.size, width, height)
