"""Where uploads hide things from a reader of their headers alone (R7, issue 17).

The readers of ``chat/media/`` called directly on real files: JPEGs built by
Pillow with metadata spliced between their scans or after their end, and PDFs
whose objects sit in object streams encoded in every way readers accept.  The
upload route runs the same code (tests/test_attachments.py shows the client's
side on both backends).
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import pytest
from PIL import Image

from chat import media
from chat.errors import BadRequest, ChatError
from chat.policies import attachments as rules
from tests import files


def pixels(jpeg: bytes) -> bytes:
    with Image.open(io.BytesIO(jpeg)) as image:
        image.load()
        return image.tobytes()


def strip(jpeg: bytes) -> bytes:
    out = io.BytesIO()
    media.strip_jpeg(io.BytesIO(jpeg), out)
    return out.getvalue()


KINDS = {"baseline": False, "progressive": True}
COMMENT = files.jpeg_segment(0xFE, files.GPS_TEXT)


# -- JPEG: metadata after the first scan, bytes after the end -----------------------------------------
def test_the_progressive_sample_has_tables_between_its_scans():
    """What the tests below rely on: Pillow writes several scans with Huffman tables between them."""
    photo = files.jpeg_photo(progressive=True)
    assert photo.count(b"\xff\xda") > 2
    assert b"\xff\xc4" in photo[files.end_of_first_scan(photo):]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("segment", [COMMENT, files.jpeg_gps_segments()], ids=["comment", "comment-and-app1-exif-gps"])
def test_metadata_after_the_first_scan_is_dropped_and_the_pixels_are_kept(kind, segment):
    """A COM or an APP1 EXIF block with a GPS position placed after the first scan
    (between two scans of a progressive JPEG) does not survive the stripping."""
    photo = files.jpeg_photo(progressive=KINDS[kind])
    hidden = files.jpeg_with_segments_after_first_scan(photo, segment)
    assert pixels(hidden) == pixels(photo)  # a reader shows the same photo, and would keep the metadata
    stripped = strip(hidden)
    assert files.GPS_TEXT not in stripped and b"Exif" not in stripped
    assert stripped == photo  # only what was spliced in went
    assert pixels(stripped) == pixels(photo)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("trailer", [b"GPS " + files.GPS_TEXT, files.docx(), files.jpeg_photo()],
                         ids=["text", "zip", "second-jpeg"])
def test_bytes_after_the_end_of_the_image_are_dropped(kind, trailer):
    photo = files.jpeg_photo(progressive=KINDS[kind])
    stripped = strip(photo + trailer)
    assert stripped == photo
    assert pixels(stripped) == pixels(photo)


@pytest.mark.parametrize("options", [{}, {"progressive": True}, {"restart_marker_blocks": 1},
                                     {"progressive": True, "restart_marker_rows": 1}],
                         ids=["baseline", "progressive", "restart-markers", "progressive-restart-markers"])
def test_a_jpeg_without_metadata_comes_out_byte_for_byte(options):
    """Scan data (stuffed 0xFF bytes, restart markers) and the tables between scans are kept as they are."""
    photo = files.jpeg_photo(**options)
    assert strip(photo) == photo


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64])
def test_reading_in_small_chunks_gives_the_same_file(monkeypatch, chunk):
    """The file is read a chunk at a time: a marker, a stuffed byte or a segment
    cut between two chunks is read as if it were whole."""
    photo = files.jpeg_photo(progressive=True, restart_marker_rows=1)
    hidden = files.jpeg_with_segments_after_first_scan(photo, files.jpeg_gps_segments() + b"\xff\xff") + b"\xff\x00tail"
    monkeypatch.setattr(media.jpeg, "CHUNK", chunk)
    assert strip(hidden) == photo


def test_a_photo_with_gps_and_orientation_still_keeps_only_its_orientation():
    """Before the first scan nothing changed: GPS gone, orientation written back."""
    stripped = strip(files.jpeg_with_gps(orientation=6))
    exif = Image.open(io.BytesIO(stripped)).getexif()
    assert files.GPS_IFD not in exif and exif.get(files.ORIENTATION) == 6


def test_a_second_start_of_image_after_a_scan_is_a_bad_image():
    photo = files.jpeg_photo()
    at = files.end_of_first_scan(photo)
    with pytest.raises(BadRequest) as refused:
        strip(photo[:at] + b"\xff\xd8" + photo[at:])
    assert refused.value.code == "attachment.bad_image"


# -- PDF: object streams ---------------------------------------------------------------------------------
def check_pdf(data: bytes, tmp_path: Path) -> None:
    """What the upload check does with a PDF: raises the refusal, or returns."""
    path = tmp_path / "document.pdf"
    path.write_bytes(data)
    rules.check_pdf_names(media.pdf_names(path))


def refusal(data: bytes, tmp_path: Path) -> ChatError:
    with pytest.raises(ChatError) as refused:
        check_pdf(data, tmp_path)
    return refused.value


HIDDEN_JAVASCRIPT = {
    "ascii-hex": lambda: files.pdf_with_object_stream(("ASCIIHexDecode",)),
    "ascii-85": lambda: files.pdf_with_object_stream(("ASCII85Decode",)),
    "ascii-hex-then-flate": lambda: files.pdf_with_object_stream(("ASCIIHexDecode", "FlateDecode")),
    "ascii-85-then-flate": lambda: files.pdf_with_object_stream(("ASCII85Decode", "FlateDecode")),
    "abbreviated-names": lambda: files.pdf_with_object_stream(("AHx", "Fl")),
    "raw-deflate": lambda: files.pdf_with_object_stream(raw_deflate=True),
    "ascii-85-then-raw-deflate": lambda: files.pdf_with_object_stream(("ASCII85Decode", "FlateDecode"),
                                                                      raw_deflate=True),
    "no-type-entry": lambda: files.pdf_with_object_stream(type_entry=b""),
    "dictionary-across-the-read-chunk": lambda: files.pdf_with_object_stream(
        type_entry=b"/Type /ObjStm" + b" " * 600 + b"\n", offset=media.CHUNK - 400),
}


@pytest.mark.parametrize("maker", HIDDEN_JAVASCRIPT.values(), ids=HIDDEN_JAVASCRIPT.keys())
def test_javascript_in_an_object_stream_is_refused_whatever_its_encoding(maker, tmp_path):
    """The catalog's /OpenAction and its /JavaScript action sit in an object stream
    whose data only shows them once decoded: the stream is decoded and they are found."""
    data = maker()
    assert b"JavaScript" not in data and b"OpenAction" not in data
    error = refusal(data, tmp_path)
    assert error.code == "attachment.pdf_active_content"
    assert error.fields["names"] == "/JS, /JavaScript, /OpenAction"


UNREADABLE = {
    "lzw": (lambda: files.pdf_with_object_stream(("LZWDecode",)), "/LZWDecode"),
    "lzw-under-ascii-85": (lambda: files.pdf_with_object_stream(("ASCII85Decode", "LZWDecode")), "/LZWDecode"),
    "png-predictor": (lambda: files.pdf_with_object_stream(predictor=True), "/Predictor"),
    "crypt-filter": (lambda: files.pdf_with_object_stream().replace(
        b" /Filter /FlateDecode /Length", b" /Filter [/Crypt /FlateDecode] /Length", 1), "/Crypt"),
    "encrypted-file": (lambda: files.pdf_with_object_stream(encrypted=True), "encrypted"),
    "damaged-deflate-data": (lambda: files.pdf_with_object_stream(damaged=True), "damaged data (/FlateDecode)"),
    "data-in-another-file": (lambda: files.pdf_with_object_stream(type_entry=b"/Type /ObjStm /F (donnees.bin) "),
                             "data in another file"),
    "filter-by-reference": (lambda: files.pdf_with_object_stream().replace(
        b"/Filter /FlateDecode /Length", b"/Filter 9 0 R /Length", 1), "filter given by reference"),
}


@pytest.mark.parametrize("maker, detail", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_an_object_stream_the_hub_cannot_decode_is_refused(maker, detail, tmp_path):
    """Its data could hold anything: the PDF is refused, saying why."""
    error = refusal(maker(), tmp_path)
    assert error.code == "attachment.type_not_allowed"
    assert error.fields["detected"] == f"PDF object stream: {detail}"


def test_an_obj_keyword_inside_a_comment_of_the_object_stream_dictionary_is_refused(tmp_path):
    """A comment in the real dictionary starts a second, plausible one that has no
    /Filter: read from there, the stream would seem plain text.  Refused."""
    data = files.pdf_with_object_stream(("ASCIIHexDecode",)).replace(
        b"<< /Type /ObjStm /N", b"<< /Type /ObjStm % 9 0 obj << /Z (\n% )\n/N", 1)
    error = refusal(data, tmp_path)
    assert error.fields["detected"] == "PDF object stream: an object start inside a comment"


def test_a_name_ended_by_a_nul_byte_is_read_as_a_reader_reads_it(tmp_path):
    """NUL is white space in PDF: ``/JavaScript\\x00`` is ``/JavaScript``."""
    path = tmp_path / "document.pdf"
    path.write_bytes(files.pdf_with_javascript().replace(b"/S /JavaScript /JS", b"/S /JavaScript\x00/JS\x00"))
    assert {"JavaScript", "JS"} <= media.pdf_names(path)


def test_decoding_object_streams_stops_at_32_mb_counting_every_filter(tmp_path):
    """A deflate bomb under ASCII armour: 40 MB of spaces from a few KB."""
    bomb = zlib.compress(b"1 0\n" + b" " * (40 * 1024 * 1024))
    data = files.pdf_with_object_stream(javascript=False).replace(
        b"/Filter /FlateDecode /Length", b"/Filter [/AHx /Fl] /Length", 1)
    start = data.index(b"stream\n") + 7
    end = data.index(b"\nendstream", start)
    data = data[:start] + bomb.hex().encode() + b">" + data[end:]
    error = refusal(data, tmp_path)
    assert (error.code, error.fields["reason"]) == ("attachment.zip_bomb", "pdf_streams")


ORDINARY = {
    "flate": lambda: files.pdf_with_object_stream(javascript=False),
    "ascii-85-then-flate": lambda: files.pdf_with_object_stream(("ASCII85Decode", "FlateDecode"), javascript=False),
    "with-bookmarks": lambda: files.pdf_with_object_stream(javascript=False, outline=True),
    "pdf-1.4-without-object-streams": files.pdf,
}


@pytest.mark.parametrize("maker", ORDINARY.values(), ids=ORDINARY.keys())
def test_an_ordinary_pdf_with_object_streams_is_accepted(maker, tmp_path):
    check_pdf(maker(), tmp_path)
