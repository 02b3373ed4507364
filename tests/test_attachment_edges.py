"""Attachment behaviours at the edges that docs/protocol.md states (R7): many
byte ranges, and the bytes that follow an image's data."""

from __future__ import annotations

from tests import files
from tests.conftest import MARIE
from tests.test_attachments import accepted, download

TRAILER = b"appended after the image"


async def test_more_than_100_byte_ranges_answer_200_with_the_whole_file(server):
    data = files.jpeg_with_gps()
    assert len(data) > 2 * 101
    view = await accepted(server, MARIE, data, "photo.jpg")
    stored = (await download(server, MARIE, view["id"])).content

    hundred = ",".join(f"{2 * i}-{2 * i}" for i in range(100))  # disjoint, not touching: 100 parts
    response = await download(server, MARIE, view["id"], headers={"Range": f"bytes={hundred}"})
    assert response.status_code == 206
    assert response.headers["content-type"].startswith("multipart/byteranges")

    more = ",".join(f"{2 * i}-{2 * i}" for i in range(101))
    response = await download(server, MARIE, view["id"], headers={"Range": f"bytes={more}"})
    assert response.status_code == 200 and response.content == stored


async def test_bytes_after_a_jpegs_end_are_dropped(server):
    view = await accepted(server, MARIE, files.jpeg_with_gps() + TRAILER, "photo.jpg")
    stored = (await download(server, MARIE, view["id"])).content
    assert stored.endswith(b"\xff\xd9")  # nothing after the end-of-image marker (R7)
    assert TRAILER not in stored
    assert b"PhoneMaker" not in stored  # nor the metadata before the image data


async def test_bytes_after_a_pngs_end_are_dropped(server):
    view = await accepted(server, MARIE, files.png_with_text() + TRAILER, "image.png")
    stored = (await download(server, MARIE, view["id"])).content
    assert stored.endswith(b"IEND\xaeB`\x82")
