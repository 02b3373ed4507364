"""Every name in a PDF, in the file and in its object streams (R7).

The file is read in chunks for its names; the names ``/ObjStm`` and ``/First``
lead to the dictionaries that hold them (:mod:`chat.media.pdf_syntax`), and the
object streams among those are decoded through their filters
(:mod:`chat.media.pdf_filters`) and their names read too.  An object stream the
hub cannot decode or whose dictionary it cannot delimit is refused as
``attachment.type_not_allowed``.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from chat.media.pdf_filters import DECODERS, DecodedBudget, filter_chain
from chat.media.pdf_syntax import (
    DICTIONARY_LIMIT,
    NAME_CARRY,
    OBJECT_REACH,
    STREAM_IN_OBJECT_STREAM,
    UNCLEAR,
    Broken,
    Dictionary,
    NameScanner,
    ParseSteps,
    PdfWindow,
    unreadable,
)
from chat.media.rewriting import CHUNK
from chat.policies.attachments import PDF_ACTIVE_NAMES

# What makes a stream an object stream to a reader: /Type /ObjStm for the specification, /First
# for pdf.js, which reads any stream with /First and /N as one, whatever its /Type says.
_OBJECT_STREAM_NAMES = frozenset({"ObjStm", "First"})
# Outline entries with children also have /First: a 20 MB PDF has a few thousand at most.
MAX_OBJECT_STREAM_NAMES = 50_000


@dataclass(frozen=True)
class _ObjectStream:
    data_start: int
    filters: tuple[str, ...]


def _object_streams(f: BinaryIO, size: int, names_at: list[int], steps: ParseSteps) -> set[_ObjectStream]:
    """The object streams whose dictionary holds one of the names at ``names_at``.

    For each name, the dictionaries after the "obj" keywords before it are read, the
    nearest first, up to the first whose dictionary holds the name.  An "obj" inside
    a string of that dictionary does not start a readable dictionary; one inside a
    comment might, so a comment before the "obj" on its line is refused, and so is a
    name no dictionary holds, or a dictionary that does not parse: either could hide
    an object stream's real dictionary.
    """
    window = PdfWindow(f, size)
    dictionaries: dict[int, Dictionary | None] = {}
    streams: set[_ObjectStream] = set()
    for at in names_at:
        window.cover(at - OBJECT_REACH - 1, at + DICTIONARY_LIMIT)
        for object_start in window.starts_before(at):
            steps.take()
            if object_start not in dictionaries:
                try:
                    dictionaries[object_start] = window.dictionary_at(object_start, steps)
                except Broken:
                    raise unreadable("a damaged dictionary") from None
            dictionary = dictionaries[object_start]
            if dictionary is None or not dictionary.start < at < dictionary.end:
                continue
            if window.commented(object_start):
                raise unreadable("an object start inside a comment")
            keys = dictionary.keys
            if ("First" in keys or keys.get("Type") == "ObjStm") and dictionary.data_start is not None:
                if dictionary.data_start == UNCLEAR or dictionary.repeated_keys:
                    raise unreadable("an ambiguous dictionary")
                streams.add(_ObjectStream(dictionary.data_start, filter_chain(keys)))
            break
        else:
            raise unreadable("/First or /ObjStm outside any object")
    return streams


class _DecodedNames:
    """The names in an object stream's decoded data, and a check that it holds no stream."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self._scanner = NameScanner()
        self._carry = b""

    def take(self, data: bytes) -> None:
        self.names.update(name for _, name in self._scanner.feed(data))
        text = self._carry + data
        if STREAM_IN_OBJECT_STREAM.search(text):
            raise unreadable("a stream inside an object stream")
        self._carry = text[-NAME_CARRY:]

    def finish(self) -> None:
        self.names.update(name for _, name in self._scanner.finish())
        if "ObjStm" in self.names:
            raise unreadable("an object stream inside an object stream")


def _decode_object_stream(f: BinaryIO, stream: _ObjectStream, decoded: DecodedBudget) -> set[str]:
    """The names in an object stream, its data run through its filters as it is read."""
    stages = [DECODERS[name]() for name in stream.filters]
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
        raise unreadable("damaged data (" + " ".join("/" + name for name in stream.filters) + ")") from None
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
    scanner = NameScanner()
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        while True:
            chunk = f.read(CHUNK)
            for at, name in scanner.feed(chunk) if chunk else scanner.finish():
                found.add(name)
                if name in _OBJECT_STREAM_NAMES:
                    names_at.append(at)
            if len(names_at) > MAX_OBJECT_STREAM_NAMES:
                raise unreadable("too many object streams to check")
            if not chunk:
                break
        if found & PDF_ACTIVE_NAMES or not names_at:
            return found  # refused for what it shows, or nothing is hidden
        steps = ParseSteps()
        streams = _object_streams(f, size, names_at, steps)
        if streams and "Encrypt" in found:
            raise unreadable("encrypted")  # its object streams are ciphertext to the hub
        decoded = DecodedBudget()
        for stream in sorted(streams, key=lambda s: (s.data_start, s.filters)):
            if stream.filters:  # without a filter its names were read with the file's
                found |= _decode_object_stream(f, stream, decoded)
    return found

