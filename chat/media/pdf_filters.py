"""The stream filters the hub decodes to read an object stream's names (R7).

FlateDecode (zlib or raw deflate), ASCIIHexDecode and ASCII85Decode, chained in
any order, each fed its input in pieces, their total output bounded for a whole
file.  An object stream that asks for anything else (LZW, a predictor, Crypt,
data in another file) is refused: what the hub cannot read could hide anything.
"""

from __future__ import annotations

import base64
import re
import zlib
from typing import Any, Callable, Iterator

from chat.errors import BadRequest
from chat.media.pdf_syntax import PdfName, unreadable
from chat.media.rewriting import CHUNK

# Decoding object streams is bounded: a PDF's dictionaries are small.  The output of every
# filter of a chain counts, so that a chain of filters cannot multiply the work.
MAX_DECODED_BYTES = 32 * 1024 * 1024
# The filters the hub decodes, by their names and the abbreviations readers also accept.
# Anything else on an object stream (LZW, RunLength, Crypt, image codecs) is refused.
_PDF_FILTERS = {"FlateDecode": "FlateDecode", "Fl": "FlateDecode", "ASCIIHexDecode": "ASCIIHexDecode",
                "AHx": "ASCIIHexDecode", "ASCII85Decode": "ASCII85Decode", "A85": "ASCII85Decode"}
MAX_PDF_FILTERS = 4  # writers chain two at most (an ASCII armour over compression)
_PDF_WHITESPACE = b"\x00\t\n\x0c\r "
_HEX_DIGITS = re.compile(rb"[0-9A-Fa-f]*")
_A85_GROUPS = re.compile(rb"(?:z|[!-u]{5})*")
_A85_PARTIAL = re.compile(rb"[!-u]{0,4}")


def filter_chain(keys: dict[str, object]) -> tuple[str, ...]:
    """The decoders an object stream's dictionary asks for; what the hub does not
    decode (another filter, a predictor, data in another file) is refused."""
    def filter_names(value: object) -> list[object] | None:
        if value == b"null":
            return []
        if isinstance(value, PdfName):
            return [value]
        if isinstance(value, list) and all(isinstance(name, PdfName) for name in value):
            return value
        return None

    # /F is the filter's abbreviation to pdf.js, and a file specification (the data
    # in another file) to the specification: a name or names are read as filters.
    if "FFilter" in keys or "FDecodeParms" in keys or ("F" in keys and filter_names(keys["F"]) is None):
        raise unreadable("data in another file")
    given = [keys[key] for key in ("F", "Filter") if key in keys]
    if len(given) == 2 and given[0] != given[1]:
        raise unreadable("two filter entries")
    names = filter_names(given[0]) if given else []
    if names is None:
        raise unreadable("filter given by reference")
    if len(names) > MAX_PDF_FILTERS:
        raise unreadable(f"more than {MAX_PDF_FILTERS} filters")
    chain = []
    for name in names:
        if name not in _PDF_FILTERS:
            raise unreadable(f"/{name}")
        chain.append(_PDF_FILTERS[str(name)])
    for key in ("DP", "DecodeParms"):
        parameters = keys.get(key, b"null")
        for entry in parameters if isinstance(parameters, list) else [parameters]:
            if entry == b"null":
                continue
            if not isinstance(entry, dict):
                raise unreadable("decoding parameters given by reference")
            if entry.get("Predictor", b"1") != b"1":
                raise unreadable("/Predictor")
    return tuple(chain)


class Decoder:
    """One filter, fed its input in pieces; ``eof`` once its data has ended."""

    eof = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        raise NotImplementedError

    def finish(self) -> Iterator[bytes]:
        """What is left when the input ends before the filter's own end."""
        return iter(())


class FlateDecoder(Decoder):
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


class AsciiHexDecoder(Decoder):
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


class Ascii85Decoder(Decoder):
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


DECODERS: dict[str, Callable[[], Decoder]] = {
    "FlateDecode": FlateDecoder, "ASCIIHexDecode": AsciiHexDecoder, "ASCII85Decode": Ascii85Decoder}


class DecodedBudget:
    """What the filters produced, for all of a file (MAX_DECODED_BYTES)."""

    def __init__(self) -> None:
        self.total = 0

    def count(self, piece: bytes) -> bytes:
        self.total += len(piece)
        if self.total > MAX_DECODED_BYTES:
            raise BadRequest("attachment.zip_bomb", reason="pdf_streams")
        return piece

