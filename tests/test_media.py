"""Where uploads hide things from a reader of their headers alone (R7, issue 17).

The readers of ``chat/media.py`` called directly on real files: JPEGs built by
Pillow with metadata spliced between their scans or after their end.  The
upload route runs the same code (tests/test_attachments.py shows the client's
side on both backends).
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from chat import media
from chat.errors import BadRequest
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
    monkeypatch.setattr(media, "CHUNK", chunk)
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
