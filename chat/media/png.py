"""PNG rewritten without its metadata chunks (R7): EXIF, text, timestamps, signatures."""

from __future__ import annotations

import struct
from typing import BinaryIO

from chat.media.rewriting import CHUNK, HashingWriter, Rewritten, bad_image, read_exact

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Ancillary chunks that carry metadata: EXIF, free text, timestamps, signatures.
_PNG_DROP = {b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"tIME", b"dSIG"}


def strip_png(src: BinaryIO, dst: BinaryIO) -> Rewritten:
    """Copy a PNG chunk by chunk without the chunks in ``_PNG_DROP``; the file ends
    with its IEND chunk.  No IHDR with dimensions, a chunk cut short or no IEND is
    ``attachment.bad_image``."""
    out = HashingWriter(dst)
    if src.read(8) != PNG_SIGNATURE:
        raise bad_image()
    out.write(PNG_SIGNATURE)
    width = height = None
    while True:
        header = src.read(8)
        if len(header) != 8:
            raise bad_image()  # no IEND
        length, kind = struct.unpack(">I4s", header)
        if length > 0x7FFFFFFF:
            raise bad_image()
        if kind == b"IHDR":
            data = read_exact(src, length)
            if length < 8:
                raise bad_image()
            width, height = struct.unpack(">II", data[:8])
            out.write(header + data + read_exact(src, 4))
            continue
        if kind in _PNG_DROP:
            src.seek(length + 4, 1)
            continue
        out.write(header)
        remaining = length + 4  # data and CRC
        while remaining:
            chunk = read_exact(src, min(CHUNK, remaining))
            out.write(chunk)
            remaining -= len(chunk)
        if kind == b"IEND":
            break
    if not width or not height:
        raise bad_image()
    return Rewritten(out.hash.hexdigest(), out.size, width, height)
