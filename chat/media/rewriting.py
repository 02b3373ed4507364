"""What the readers share: the read size; for the image rewriters, the hashing writer and the result.

Every reader reads in pieces of :data:`CHUNK` bytes, so that a 20 MB upload
never sits in memory whole (R7).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import BinaryIO

from chat.errors import BadRequest

# One read: large enough that a 20 MB file takes a handful of reads, small
# enough that a few uploads at once stay far from the server's memory.
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Rewritten:
    """A file rewritten without its metadata: its hash and size as written, and
    the image's dimensions when it is one."""

    sha256: str
    size: int
    width: int | None
    height: int | None


class HashingWriter:
    """Writes through to ``out`` while hashing (SHA-256) and counting what it wrote."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.out.write(data)
        self.hash.update(data)
        self.size += len(data)


def bad_image() -> BadRequest:
    """The refusal of an image that cannot be read as what its bytes claim."""
    return BadRequest("attachment.bad_image")


def read_exact(src: BinaryIO, n: int) -> bytes:
    """Exactly ``n`` bytes from ``src``; a file that ends before is a bad image."""
    data = src.read(n)
    if len(data) != n:
        raise bad_image()
    return data
