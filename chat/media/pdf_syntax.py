"""Reading PDF syntax without trusting it: names, dictionaries, object starts (R7).

A reader runs what an object stream holds as if it stood in the file, so the
names of every object stream are read too.  Which streams those are, and how
their data is encoded, is read from their dictionaries; this module reads the
names of a byte stream (``#xx`` escapes decoded) and the dictionaries that
follow an "obj" keyword, within bounded windows and a bounded parse budget.
What cannot be read is refused through :func:`unreadable` rather than let
through unread (attachment.type_not_allowed, "PDF object stream: …").
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from chat.errors import BadRequest
from chat.media.rewriting import CHUNK

_DELIMITER = rb"\x00\t\n\x0c\r ()<>\[\]{}/%"
# A name ends at PDF white space (NUL included) or a delimiter; \x0b ends one here too, which
# can only find more names than a reader does.
_NAME = re.compile(rb"/([^\x0b" + _DELIMITER + rb"]{1,127})")
_HEX = re.compile(rb"#([0-9A-Fa-f]{2})")
NAME_CARRY = 256  # more than the longest name _NAME reads (127 characters and its slash)
# How far before a name /ObjStm or /First the "obj" of the object holding it may stand (an object
# stream's dictionary is a few dozen bytes; an outline entry's title a few hundred), and
# how long a dictionary is read from there.
OBJECT_REACH = 64 * 1024
DICTIONARY_LIMIT = 2 * OBJECT_REACH
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
STREAM_IN_OBJECT_STREAM = re.compile(rb">>(?:[\x00\t\n\x0c\r ]|%[^\r\n]*[\r\n])*stream(?![^" + _DELIMITER + rb"])")


def _name(raw: bytes) -> str:
    """A name as a PDF reader reads it: ``#xx`` escapes decoded (``/Obj#53tm`` is ``/ObjStm``)."""
    if b"#" not in raw:
        return raw.decode("latin-1")
    return _HEX.sub(lambda m: bytes([int(m.group(1), 16)]), raw).decode("latin-1")


def unreadable(what: str) -> BadRequest:
    """An object stream the hub cannot read: it could hide anything, so the PDF is refused."""
    return BadRequest("attachment.type_not_allowed", detected=f"PDF object stream: {what}")


class NameScanner:
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
        keep = min(len(text), NAME_CARRY)
        self._carry_at += len(text) - keep
        self._carry = text[len(text) - keep:]
        return names

    def finish(self) -> list[tuple[int, str]]:
        return self.feed(b"", final=True)


class ParseSteps:
    """The parse budget of one file (MAX_PDF_PARSE_STEPS)."""

    def __init__(self) -> None:
        self.left = MAX_PDF_PARSE_STEPS

    def take(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise unreadable("too many objects to check")


class Broken(Exception):
    """A dictionary that does not parse, or does not end within the limit."""


@dataclass(frozen=True)
class _Ref:
    number: bytes
    generation: bytes


class PdfName(str):
    pass


_STRING = object()  # the text of strings does not matter here
UNCLEAR = -1  # a "stream" keyword not followed by a line break


@dataclass(frozen=True)
class Dictionary:
    start: int  # offset of its "<<"
    end: int  # just after its ">>"
    keys: dict[str, object]
    repeated_keys: bool
    data_start: int | None  # where the stream's data starts, when a stream follows; UNCLEAR when unsure


def _skip_string(data: bytes, position: int, limit: int, steps: ParseSteps) -> int:
    """The end of a string with nested parentheses that starts before ``position``."""
    depth = 1
    while depth:
        steps.take()
        part = _STRING_PART.search(data, position, limit)
        if part is None:
            raise Broken()
        if data[part.start()] == 0x5C:  # a backslash escapes the next byte
            position = part.start() + 2
            continue
        depth += 1 if data[part.start()] == 0x28 else -1
        position = part.end()
    return position


def _read_dictionary(data: bytes, position: int, limit: int, at_eof: bool,
                     steps: ParseSteps) -> tuple[dict[str, object], bool, int]:
    """The dictionary whose "<<" ends at ``position``: its keys and values (``12 0 R``
    read as one reference), whether a key is repeated, and where it ends."""
    containers: list[list[object]] = [[]]
    closings = ["close"]
    repeated = False
    while True:
        steps.take()
        match = _TOKEN.match(data, position, limit)
        if match is None or (match.end() == limit and not at_eof):
            raise Broken()  # nothing readable, or a token that may go on past the limit
        position = match.end()
        kind = match.lastgroup
        value: object
        if kind == "open" or kind == "array":
            containers.append([])
            closings.append("close" if kind == "open" else "end_array")
            if len(containers) > _NESTING_LIMIT:
                raise Broken()
            continue
        if kind == "close" or kind == "end_array":
            if kind != closings.pop():
                raise Broken()
            items = containers.pop()
            if kind == "close":
                if len(items) % 2 or any(type(key) is not PdfName for key in items[::2]):
                    raise Broken()
                value = dict(zip(items[::2], items[1::2]))
                repeated = repeated or len(value) != len(items) // 2
                if not containers:
                    return value, repeated, position  # type: ignore[return-value]
            else:
                value = items
        elif kind == "name":
            value = PdfName(_name(match.group(kind)))
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


class PdfWindow:
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
        low = bisect.bisect_left(self.object_starts, at - OBJECT_REACH)
        for index in range(bisect.bisect_left(self.object_starts, at) - 1, low - 1, -1):
            yield self.object_starts[index]

    def dictionary_at(self, object_start: int, steps: ParseSteps) -> Dictionary | None:
        """The dictionary that follows the "obj" at ``object_start`` (None when
        something else follows); raises Broken when it cannot be read."""
        limit = min(object_start - self.base + DICTIONARY_LIMIT, len(self.data))
        at_eof = self.base + limit == self._size
        opening = _OPEN.match(self.data, object_start - self.base + 3, limit)
        if opening is None:
            return None
        keys, repeated, end = _read_dictionary(self.data, opening.end(), limit, at_eof, steps)
        data_start: int | None = None
        following = _TOKEN.match(self.data, end, limit)
        if following is None or (following.end() == limit and not at_eof):
            data_start = UNCLEAR
        elif following.group("word") == b"stream":
            line_break = _STREAM_DATA.match(self.data, following.end(), limit)
            data_start = self.base + line_break.end() if line_break else UNCLEAR
        return Dictionary(self.base + opening.end() - 2, self.base + end, keys, repeated, data_start)

    def commented(self, object_start: int) -> bool:
        """Whether a "%" stands before ``object_start`` on its line: the "obj" may be
        inside a comment, where another object's dictionary would go on."""
        position = object_start - self.base
        line = max(self.data.rfind(b"\n", 0, position), self.data.rfind(b"\r", 0, position))
        if line < 0 and self.base > 0:
            return True  # the line starts before the window: cannot tell
        return b"%" in self.data[line + 1:position]

