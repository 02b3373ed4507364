"""Fuzzing the upload parsers (R7, issue 17) with mutated real files.

A JPEG, PNG, PDF or DOCX that has been bit-flipped, truncated, spliced, or
corrupted where its parser looks hardest (a JPEG's EXIF block and segment
lengths, a PNG's chunk headers, a PDF's compressed object stream, a DOCX's
central directory, entry names, methods, flags and declared sizes) is either
accepted or refused with a documented ``attachment.*`` code: never an
exception of another kind, which the upload route would answer with a 500.

Three layers, all deterministic (``derandomize=True``, no example database):

* the parsers of ``chat/media/`` called directly, with the R7 rules on what
  they find; an image they accept is stripped for good (stripping it again
  changes nothing, so no metadata was left behind);
* the whole check of ``chat/attachments.py`` (libmagic's type, then the parser
  it selects) through ``AttachmentStore.receive``;
* a handful of such files through ``POST /api/uploads`` on a real server.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import struct
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat import media
from chat.attachments import AttachmentStore, StoredFile
from chat.errors import ChatError
from chat.policies import attachments as rules
from tests import files
from tests.conftest import MARIE

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = 200  # per sample and layer: a few milliseconds each
# too_slow measures drawing time, which a busy machine stretches: not a failure of the parsers.
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def upload_refusals() -> dict[str, set[int]]:
    """The ``attachment.*`` codes of docs/protocol.md section 10, with their HTTP statuses."""
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    table = text.split("## 10. Error codes", 1)[1].split("\n## 11.", 1)[0]
    return {code: {int(s) for s in re.findall(r"\d{3}", status)}
            for code, status in re.findall(r"^\| `(attachment\.[a-z0-9_.]+)` \| ([^|]+) \|", table, flags=re.M)}


REFUSALS = upload_refusals()


# -- the samples: valid files as the other tests build them ---------------------------------------------
@dataclass(frozen=True)
class Sample:
    name: str
    kind: str  # which parser reads it: jpeg, png, pdf, docx
    data: bytes
    hot: tuple[tuple[int, int], ...]  # byte ranges where its parser looks hardest


def _jpeg_hot(data: bytes) -> tuple[tuple[int, int], ...]:
    """Every segment header, between scans too, the whole EXIF blocks, and the
    bytes where each scan's data ends."""
    ranges, position = [], 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xD9:
            ranges.append((position, len(data)))
            break
        (length,) = struct.unpack(">H", data[position + 2:position + 4])
        ranges.append((position, position + 4))
        if marker == 0xE1:
            ranges.append((position + 4, position + 2 + length))
        position += 2 + length
        if marker == 0xDA:
            scan_end = _scan_end(data, position)
            ranges.append((max(position, scan_end - 8), scan_end))
            position = scan_end
    return tuple(ranges)


def _scan_end(data: bytes, position: int) -> int:
    """Where the scan data that starts at ``position`` ends: at a 0xFF not followed by
    0x00, a restart marker or another 0xFF."""
    while (position := data.find(b"\xff", position)) >= 0 and position + 1 < len(data):
        following = data[position + 1]
        if not (following in (0x00, 0xFF) or 0xD0 <= following <= 0xD7):
            return position
        position += 1
    return len(data)


def _png_hot(data: bytes) -> tuple[tuple[int, int], ...]:
    """Every chunk's length and type, and the header chunk's data."""
    ranges, position = [], 8
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        ranges.append((position, position + 8 + (length if data[position + 4:position + 8] == b"IHDR" else 0)))
        position += 12 + length
    return tuple(ranges)


def _pdf_hot(data: bytes) -> tuple[tuple[int, int], ...]:
    """The object stream's dictionary and compressed bytes, and the trailer."""
    ranges = [(m.start(), data.index(b"endstream", m.start()) + 9) for m in re.finditer(rb"<< /Type /ObjStm", data)]
    ranges.append((data.rindex(b"trailer" if b"trailer" in data else b"startxref"), len(data)))
    return tuple(ranges)


def _docx_hot(data: bytes) -> tuple[tuple[int, int], ...]:
    """The central directory, and the first entry's local header and data."""
    return ((data.index(b"PK\x01\x02"), len(data)), (0, 120))


def _sample(name: str, kind: str, data: bytes) -> Sample:
    hot = {"jpeg": _jpeg_hot, "png": _png_hot, "pdf": _pdf_hot, "docx": _docx_hot}[kind](data)
    return Sample(name, kind, data, hot)


SAMPLES = [
    _sample("jpeg-gps-rotated", "jpeg", files.jpeg_with_gps(orientation=6)),
    _sample("jpeg-gps-upright", "jpeg", files.jpeg_with_gps(orientation=1)),
    _sample("jpeg-progressive-gps-between-scans", "jpeg", files.jpeg_with_segments_after_first_scan(
        files.jpeg_photo(progressive=True, size=(32, 24)), files.jpeg_gps_segments()) + files.GPS_TEXT),
    _sample("png-text", "png", files.png_with_text()),
    _sample("pdf", "pdf", files.pdf()),
    _sample("pdf-object-stream", "pdf", files.pdf_with_hidden_javascript()),
    _sample("pdf-1.5-object-stream-ascii85-flate", "pdf",
            files.pdf_with_object_stream(("ASCII85Decode", "FlateDecode"), outline=True)),
    _sample("docx", "docx", files.docx()),
    _sample("docm", "docx", files.docm()),
]


# -- mutations -------------------------------------------------------------------------------------------
# Bytes that mean something to one of the parsers: lengths at their limits,
# markers, magic numbers, names.
INTERESTING = (
    b"\x00", b"\xff", b"\x00\x00", b"\xff\xff", b"\x00\x01", b"\x00\x02", b"\x7f\xff", b"\x80\x00",
    b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00", b"\x00\x00\x00\x08",
    b"\xff\xd8", b"\xff\xd9", b"\xff\xda", b"\xff\xe1", b"\xff\xfe", b"\xff\xc0", b"\xff\xff\xff",
    b"II*\x00", b"MM\x00*", b"Exif\x00\x00", b"\x01\x12\x00\x03",
    b"IHDR", b"IEND", b"IDAT", b"eXIf", b"tEXt",
    b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"PK\x06\x06", b"../", b"\\", b"C:",
    b"/Type /ObjStm", b"stream\n", b"endstream", b"/J#61vaScript", b"#ZZ", b"/Length 999999999", b"x\x9c",
)


@dataclass(frozen=True)
class Flip:
    position: int
    bit: int

    def __call__(self, data: bytes) -> bytes:
        if not data:
            return data
        at = self.position % len(data)
        return data[:at] + bytes([data[at] ^ (1 << self.bit)]) + data[at + 1:]


@dataclass(frozen=True)
class Truncate:
    length: int

    def __call__(self, data: bytes) -> bytes:
        return data[:self.length % (len(data) + 1)]


@dataclass(frozen=True)
class Insert:
    position: int
    chunk: bytes

    def __call__(self, data: bytes) -> bytes:
        at = self.position % (len(data) + 1)
        return data[:at] + self.chunk + data[at:]


@dataclass(frozen=True)
class Delete:
    position: int
    length: int

    def __call__(self, data: bytes) -> bytes:
        at = self.position % (len(data) + 1)
        return data[:at] + data[at + self.length:]


@dataclass(frozen=True)
class Duplicate:
    """Copy a range of the file elsewhere in it (a segment, a chunk, an entry twice)."""

    source: int
    length: int
    target: int

    def __call__(self, data: bytes) -> bytes:
        at = self.source % (len(data) + 1)
        return Insert(self.target, data[at:at + self.length])(data)


@dataclass(frozen=True)
class Overwrite:
    position: int
    chunk: bytes

    def __call__(self, data: bytes) -> bytes:
        at = self.position % (len(data) + 1)
        return data[:at] + self.chunk + data[at + len(self.chunk):]


def mutations(sample: Sample) -> st.SearchStrategy[list[Callable[[bytes], bytes]]]:
    """One to four mutations; half of the writes land where the parser looks hardest."""
    size = len(sample.data)
    anywhere = st.integers(0, size)
    hot = st.one_of(*[st.integers(start, max(start, end - 1)) for start, end in sample.hot])
    chunks = st.one_of(st.sampled_from(INTERESTING), st.binary(min_size=1, max_size=16))
    one = st.one_of(
        st.builds(Overwrite, hot, chunks),
        st.builds(Flip, hot, st.integers(0, 7)),
        st.builds(Flip, anywhere, st.integers(0, 7)),
        st.builds(Truncate, anywhere),
        st.builds(Insert, anywhere, chunks),
        st.builds(Delete, anywhere, st.integers(1, 64)),
        st.builds(Duplicate, anywhere, st.integers(1, 256), anywhere),
        st.builds(Overwrite, anywhere, chunks),
    )
    return st.lists(one, min_size=1, max_size=4)


def mutate(data: bytes, steps: list[Callable[[bytes], bytes]]) -> bytes:
    for step in steps:
        data = step(data)
    return data


# -- DOCX archives built entry by entry, then patched in their central directory ------------------------
PART_NAMES = ("[Content_Types].xml", "_rels/.rels", "word/document.xml")
HOSTILE_NAMES = ("../../evil.sh", "/etc/passwd", "C:\\x.xml", "..\\..\\x", "word/../../x", "", "é/ü.xml",
                 "word/vbaProject.bin", "word/" + "a" * 300, "[Content_Types].xml", "word/document.xml")
CONTENT_TYPES_VARIANTS = (files.CONTENT_TYPES, files.CONTENT_TYPES.replace("document.main", "macroEnabled.main"),
                          "", "<Types/>", "\x00" * 64, files.CONTENT_TYPES * 50)
METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
# Central directory fields (offset, size): flags, method, CRC, compressed and
# uncompressed sizes, name, extra and comment lengths, local header offset.
CENTRAL_FIELDS = ((8, 2), (10, 2), (16, 4), (20, 4), (24, 4), (28, 2), (30, 2), (32, 2), (42, 4))
FIELD_VALUES = (0, 1, 0x800, 0x41, 14, 99, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 200 * 1024 * 1024)


@dataclass(frozen=True)
class Entry:
    name: str
    data: bytes
    method: int


@dataclass(frozen=True)
class CentralPatch:
    """Write ``value`` into one field of the n-th central directory record."""

    entry: int
    offset: int
    size: int
    value: int

    def __call__(self, data: bytes) -> bytes:
        records = [m.start() for m in re.finditer(rb"PK\x01\x02", data)]
        if not records:
            return data
        at = records[self.entry % len(records)] + self.offset
        return data[:at] + (self.value % (1 << (8 * self.size))).to_bytes(self.size, "little") + data[at + self.size:]


@dataclass(frozen=True)
class RawName:
    """Rename the n-th entry at the byte level: one byte of its name replaced, the
    name flagged as UTF-8 (bit 11) or not, as a zip tool with its own ideas may write it."""

    entry: int
    byte: int
    utf8: bool

    def __call__(self, data: bytes) -> bytes:
        records = [m.start() for m in re.finditer(rb"PK\x01\x02", data)]
        if not records:
            return data
        at = records[self.entry % len(records)]
        (flags,) = struct.unpack("<H", data[at + 8:at + 10])
        flags = flags | 0x800 if self.utf8 else flags & ~0x800
        data = data[:at + 8] + struct.pack("<H", flags) + data[at + 10:]
        return data[:at + 46] + bytes([self.byte]) + data[at + 47:]


def build_zip(entries: list[Entry]) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": duplicates are the point
        with zipfile.ZipFile(out, "w") as archive:
            for entry in entries:
                archive.writestr(zipfile.ZipInfo(entry.name or "x"), entry.data, compress_type=entry.method)
    return out.getvalue()


def docx_archives() -> st.SearchStrategy[bytes]:
    """Word's three parts (renamed, duplicated, dropped, any method, any content
    types) plus hostile extra entries, then central directory fields patched."""
    parts = {"[Content_Types].xml": st.sampled_from(CONTENT_TYPES_VARIANTS).map(str.encode),
             "_rels/.rels": st.just(files.RELS.encode()), "word/document.xml": st.just(files.DOCUMENT.encode())}
    entry = st.one_of(*[st.builds(Entry, st.one_of(st.just(name), st.sampled_from(HOSTILE_NAMES)), data,
                                  st.sampled_from(METHODS)) for name, data in parts.items()],
                      st.builds(Entry, st.sampled_from(HOSTILE_NAMES), st.binary(max_size=64),
                                st.sampled_from(METHODS)))
    patch = st.sampled_from(CENTRAL_FIELDS).flatmap(
        lambda field: st.builds(CentralPatch, st.integers(0, 8), st.just(field[0]), st.just(field[1]),
                                st.sampled_from(FIELD_VALUES)))
    rename = st.builds(RawName, st.integers(0, 8), st.integers(0, 255), st.booleans())
    return st.builds(lambda entries, patches: mutate(build_zip(entries), patches),
                     st.lists(entry, min_size=1, max_size=6), st.lists(st.one_of(patch, rename), max_size=3))


# -- the contract --------------------------------------------------------------------------------------
def assert_documented_refusal(exc: ChatError) -> None:
    assert exc.code in REFUSALS, f"{exc.code} is not a documented upload refusal"


def parse(kind: str, source: Path, target: Path) -> bytes | None:
    """What the hub does with a file of that kind: the stripped image, or None
    when a document passes its checks; a ChatError when it is refused."""
    if kind == "docx":
        rules.check_docx(*media.docx_parts(source))
        return None
    if kind == "pdf":
        rules.check_pdf_names(media.pdf_names(source))
        return None
    media.strip_image("image/jpeg" if kind == "jpeg" else "image/png", source, target)
    return target.read_bytes()


def check_parser(kind: str, data: bytes, directory: Path) -> None:
    """The parser accepts or refuses with a documented code; an accepted image
    is stripped for good: stripping it again changes nothing."""
    source, stripped, again = directory / "source", directory / "stripped", directory / "again"
    source.write_bytes(data)
    try:
        output = parse(kind, source, stripped)
    except ChatError as exc:
        assert_documented_refusal(exc)
        return
    if output is not None:
        assert parse(kind, stripped, again) == output


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-uploads")


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.name)
def test_a_parser_accepts_or_refuses_a_mutated_file_with_a_documented_code(sample, workdir):
    @FUZZ
    @given(mutations(sample))
    def case(steps):
        check_parser(sample.kind, mutate(sample.data, steps), workdir)

    case()


def test_the_docx_checks_accept_or_refuse_any_archive_with_a_documented_code(workdir):
    @FUZZ
    @given(docx_archives())
    def case(data):
        check_parser("docx", data, workdir)

    case()


def test_exif_orientation_reads_any_payload():
    """The orientation of a (damaged) EXIF block is 1 to 8, whatever its bytes."""

    @FUZZ
    @given(st.one_of(st.binary(max_size=64).map(lambda b: b"Exif\x00\x00" + b),
                     st.builds(lambda order, rest: b"Exif\x00\x00" + order + rest,
                               st.sampled_from([b"II*\x00", b"MM\x00*"]), st.binary(max_size=80))))
    def case(payload):
        assert 1 <= media.exif_orientation(payload) <= 8

    case()


# -- the whole check: libmagic's type, then the parser it selects ---------------------------------------------
async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 64 * 1024):
        yield data[start:start + 64 * 1024]


def check_store(store: AttachmentStore, data: bytes) -> None:
    try:
        stored = asyncio.run(store.receive(_chunks(data), len(data), "fichier"))
    except ChatError as exc:
        assert_documented_refusal(exc)
    else:
        assert isinstance(stored, StoredFile) and stored.content_type in rules.ALLOWED
        assert store.path_for(stored.sha256).stat().st_size == stored.size
    assert list(store.tmp.iterdir()) == []  # nothing half-written is left behind


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.name)
def test_the_store_accepts_or_refuses_a_mutated_file_with_a_documented_code(sample, workdir):
    store = AttachmentStore(workdir / f"store-{sample.name}")

    @settings(FUZZ, max_examples=EXAMPLES // 2)
    @given(mutations(sample))
    def case(steps):
        check_store(store, mutate(sample.data, steps))

    case()


# -- a handful through the real route -----------------------------------------------------------------------
def _patched(data: bytes, *patches: Callable[[bytes], bytes]) -> bytes:
    return mutate(data, list(patches))


def _offset(data: bytes, marker: bytes, plus: int = 0) -> int:
    return data.index(marker) + plus


JPEG, PNG, PDF, DOCX = files.jpeg_with_gps(), files.png_with_text(), files.pdf_with_hidden_javascript(), files.docx()
ROUTE_CASES = {
    "jpeg-half": JPEG[:len(JPEG) // 2],
    "jpeg-exif-ifd-offset-past-the-end": _patched(JPEG, Overwrite(_offset(JPEG, b"Exif\x00\x00", 10),
                                                                  b"\xff\xff\xff\xff")),
    "jpeg-exif-segment-length-1": _patched(JPEG, Overwrite(_offset(JPEG, b"\xff\xe1", 2), b"\x00\x01")),
    "jpeg-no-scan": JPEG[:JPEG.index(b"\xff\xda")] + b"\xff\xd9",
    "png-ihdr-length-2-gib": _patched(PNG, Overwrite(8, b"\x7f\xff\xff\xff")),
    "png-no-iend": PNG[:PNG.rindex(b"IEND") - 4],
    "pdf-object-stream-damaged": _patched(PDF, Overwrite(_offset(PDF, b"stream\n", 7), b"\xff\xff\xff\xff")),
    "pdf-cut-in-its-object-stream": PDF[:_offset(PDF, b"stream\n", 12)],
    "docx-content-types-damaged": files.docx_with_damaged_content_types(),
    "docx-false-utf8-name": files.docx_with_false_utf8_name(),
    "docx-declared-4-gib": _patched(DOCX, CentralPatch(0, 24, 4, 0xFFFFFFFF)),
    "docx-lzma-method": _patched(DOCX, CentralPatch(0, 10, 2, zipfile.ZIP_LZMA)),
    "docx-entries-twice": build_zip([Entry(n, d, zipfile.ZIP_DEFLATED) for n, d in (
        ("[Content_Types].xml", files.CONTENT_TYPES.encode()), ("word/document.xml", files.DOCUMENT.encode()),
        ("word/document.xml", b"<x/>"), ("_rels/.rels", files.RELS.encode()))]),
}


@pytest.fixture
def server_log(server, caplog):
    """WARNING and above from the server, uvicorn's records included (its loggers
    do not propagate); requested after ``server``, which configures them."""
    caplog.set_level(logging.WARNING)
    uvicorn = logging.getLogger("uvicorn")
    uvicorn.addHandler(caplog.handler)
    yield caplog
    uvicorn.removeHandler(caplog.handler)


async def test_mutated_files_through_the_upload_route_are_accepted_or_refused_as_documented(server, server_log):
    token = await server.token(MARIE)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for name, data in ROUTE_CASES.items():
            response = await http.post("/api/uploads", params={"name": f"{name}.bin"}, content=data,
                                       headers={"Authorization": f"Bearer {token}"})
            if response.status_code != 201:
                code = response.json()["error"]["code"]
                assert response.status_code in REFUSALS.get(code, ()), f"{name}: {response.status_code} {code}"
            assert list((server.settings.attachments_dir / "tmp").iterdir()) == [], name
    logged = [f"{r.name} {r.levelname}: {r.getMessage()}" for r in server_log.records
              if r.levelno >= logging.ERROR or r.exc_info]
    assert logged == []
