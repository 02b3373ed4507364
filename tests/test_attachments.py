"""Attachments (R7): streamed uploads checked by content, stripped of metadata,
attached to messages within the limits, downloaded only by those who may."""

from __future__ import annotations

import asyncio
import io
import tracemalloc

import httpx
import pytest
from PIL import Image
from sqlalchemy import func, select

from chat.errors import NotFound
from chat.policies.attachments import MAX_FILE_BYTES, require_upload_id
from chat.storage.models import Upload
from tests import files
from tests.conftest import JEAN, MARIE, NADIA, child_id, person_by_email


async def upload(server, email: str, data: bytes, name: str) -> httpx.Response:
    token = await server.token(email)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        return await http.post("/api/uploads", params={"name": name}, content=data,
                               headers={"Authorization": f"Bearer {token}"})


async def accepted(server, email: str, data: bytes, name: str) -> dict:
    response = await upload(server, email, data, name)
    assert response.status_code == 201, response.text
    return response.json()["upload"]


async def refused(server, data: bytes, name: str, email: str = MARIE) -> dict:
    response = await upload(server, email, data, name)
    assert response.status_code in (400, 413), response.text
    return response.json()["error"]


async def download(server, email: str, upload_id: str, headers: dict | None = None) -> httpx.Response:
    token = await server.token(email)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        return await http.get(f"/api/attachments/{upload_id}",
                              headers={"Authorization": f"Bearer {token}", **(headers or {})})


async def uploads_count(server) -> int:
    async with server.service.sessions() as session:
        return (await session.execute(select(func.count()).select_from(Upload))).scalar_one()


async def conversation(server, marie, *emails: str) -> int:
    people = [(await person_by_email(server.service, e)).id for e in emails or (NADIA,)]
    answer = await marie.request("conversation.create", child_id=await child_id(server.service, "Léa"),
                                 participants=people)
    return answer["conversation"]["id"]


# -- accepted, by content -----------------------------------------------------------------------------
async def test_a_jpeg_photo_is_accepted_without_its_gps_data_and_keeps_its_orientation(server):
    photo = files.jpeg_with_gps(orientation=6)
    assert Image.open(io.BytesIO(photo)).getexif().get(files.GPS_IFD)  # the original has GPS
    view = await accepted(server, MARIE, photo, "IMG_2041.jpg")
    assert (view["type"], view["name"], view["width"], view["height"]) == ("image/jpeg", "IMG_2041.jpg", 64, 48)
    stored = server.service.store.path_for((await stored_upload(server, view["id"])).sha256).read_bytes()
    exif = Image.open(io.BytesIO(stored)).getexif()
    assert files.GPS_IFD not in exif and 0x010F not in exif  # no GPS, no camera make
    assert exif.get(files.ORIENTATION) == 6  # the photo still shows the right way up
    assert b"taken at home" not in stored  # the JPEG comment is gone too
    assert Image.open(io.BytesIO(stored)).size == (64, 48)  # still a valid image, same pixels size


@pytest.mark.parametrize("progressive", [True, False], ids=["progressive", "baseline"])
async def test_metadata_after_the_first_scan_and_bytes_after_the_end_are_not_stored(server, progressive):
    """Issue #17: a comment and an EXIF block with a GPS position placed after the
    first scan (between scans of a progressive JPEG), and text after the end of the
    image, survived the stripping; the photo still decoded."""
    photo = files.jpeg_photo(progressive=progressive)
    hidden = files.jpeg_with_segments_after_first_scan(photo, files.jpeg_gps_segments()) + files.GPS_TEXT
    view = await accepted(server, MARIE, hidden, "sortie.jpg")
    assert (view["type"], view["width"], view["height"], view["size"]) == ("image/jpeg", 96, 64, len(photo))
    stored = server.service.store.path_for((await stored_upload(server, view["id"])).sha256).read_bytes()
    assert files.GPS_TEXT not in stored and b"Exif" not in stored
    with Image.open(io.BytesIO(stored)) as image, Image.open(io.BytesIO(photo)) as original:
        assert image.tobytes() == original.tobytes()  # the same photo, pixel for pixel


async def stored_upload(server, upload_id: str) -> Upload:
    async with server.service.sessions() as session:
        return await session.get(Upload, upload_id)


async def test_a_png_is_accepted_without_its_text_metadata(server):
    view = await accepted(server, MARIE, files.png_with_text(), "dessin.png")
    assert (view["type"], view["width"], view["height"]) == ("image/png", 40, 30)
    stored = server.service.store.path_for((await stored_upload(server, view["id"])).sha256).read_bytes()
    assert b"Location" not in stored and b"45.5017" not in stored
    assert Image.open(io.BytesIO(stored)).size == (40, 30)


@pytest.mark.parametrize("maker, name, kind", [
    (files.docx, "formulaire signé.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    (files.pdf, "bulletin.pdf", "application/pdf"),
    (lambda: files.pdf_with_object_stream(javascript=False, outline=True), "bulletin 1.5.pdf", "application/pdf"),
    (lambda: files.pdf_with_object_stream(("ASCII85Decode", "FlateDecode"), javascript=False), "bulletin a85.pdf",
     "application/pdf"),
])
async def test_a_real_document_is_accepted(server, maker, name, kind):
    view = await accepted(server, MARIE, maker(), name)
    assert (view["type"], view["name"], view["size"]) == (kind, name, len(maker()))


async def test_the_name_extension_follows_the_content_not_the_name(server):
    view = await accepted(server, MARIE, files.pdf(), "photo.jpg")
    assert (view["type"], view["name"]) == ("application/pdf", "photo.pdf")


# -- refused, each with its own code --------------------------------------------------------------------
@pytest.mark.parametrize("maker, name, code", [
    (lambda: b"", "vide.pdf", "attachment.empty"),
    (files.pe_executable, "facture.pdf", "attachment.type_not_allowed"),
    (files.html_page, "photo.png", "attachment.type_not_allowed"),
    (files.svg_image, "photo.jpg", "attachment.type_not_allowed"),
    (files.docm, "devoir.docx", "attachment.macro"),
    (files.docx_bomb, "rapport.docx", "attachment.zip_bomb"),
    (files.docx_traversal, "lettre.docx", "attachment.unsafe_archive"),
    (files.docx_with_damaged_content_types, "lettre.docx", "attachment.type_not_allowed"),
    (files.docx_with_false_utf8_name, "lettre.docx", "attachment.type_not_allowed"),
    (files.pdf_with_javascript, "autorisation.pdf", "attachment.pdf_active_content"),
    (files.pdf_with_hidden_javascript, "autorisation.pdf", "attachment.pdf_active_content"),
    (files.pdf_with_disguised_object_stream, "autorisation.pdf", "attachment.pdf_active_content"),
    (lambda: files.pdf_with_disguised_object_stream(b"/Type % un commentaire\n/ObjStm"), "autorisation.pdf",
     "attachment.pdf_active_content"),
    (files.legacy_doc, "lettre.doc", "attachment.legacy_doc"),
    (lambda: files.pdf_with_object_stream(("ASCIIHexDecode", "FlateDecode")), "autorisation.pdf",
     "attachment.pdf_active_content"),
    (lambda: files.pdf_with_object_stream(("ASCII85Decode",)), "autorisation.pdf", "attachment.pdf_active_content"),
    (lambda: files.pdf_with_object_stream(raw_deflate=True), "autorisation.pdf", "attachment.pdf_active_content"),
    (lambda: files.pdf_with_object_stream(("LZWDecode",)), "autorisation.pdf", "attachment.type_not_allowed"),
    (lambda: files.pdf_with_object_stream(encrypted=True), "autorisation.pdf", "attachment.type_not_allowed"),
])
async def test_a_bad_file_is_refused_with_its_own_code_and_nothing_is_stored(server, maker, name, code):
    error = await refused(server, maker(), name)
    assert error["code"] == code
    assert error["message"]  # French by default (R22)
    assert await uploads_count(server) == 0
    assert list((server.settings.attachments_dir / "tmp").iterdir()) == []


async def test_an_object_stream_the_hub_cannot_read_is_refused_saying_why_in_both_languages(server):
    """Issue #17: JavaScript in an LZW object stream was accepted unread."""
    french = await refused(server, files.pdf_with_object_stream(("LZWDecode",)), "autorisation.pdf")
    english = await refused(server, files.pdf_with_object_stream(predictor=True), "autorisation.pdf", email=JEAN)
    assert french["fields"]["detected"] == "PDF object stream: /LZWDecode"
    assert french["message"].startswith("Type de fichier non accepté (PDF object stream: /LZWDecode)")
    assert english["message"].startswith("File type not accepted (PDF object stream: /Predictor)")


async def test_legacy_doc_refusal_suggests_docx_or_pdf_in_both_languages(server):
    french = await refused(server, files.legacy_doc(), "lettre.doc")
    english = await refused(server, files.legacy_doc(), "lettre.doc", email=JEAN)
    assert "DOCX" in french["message"] and "PDF" in french["message"]
    assert english["message"].startswith("Legacy Word documents")


async def raw_post(server, token: str, headers: dict[str, str], body=None) -> tuple[int, dict, int]:
    """POST /api/uploads over a bare socket, so that nothing (no HTTP client library)
    reads ahead or refuses the body: returns status, JSON body, bytes of body sent."""
    import json

    port = int(server.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": "x", "Authorization": f"Bearer {token}", **headers}.items())
    writer.write(f"POST /api/uploads?name=big.pdf HTTP/1.1\r\n{head}\r\n".encode())
    sent = 0

    async def send_body() -> None:
        nonlocal sent
        if body is None:
            return
        try:
            async for chunk in body:
                writer.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                await writer.drain()
                sent += len(chunk)
        except (ConnectionError, OSError):
            pass  # the server closed the connection: exactly what we want to see

    sending = asyncio.create_task(send_body())
    status_line = await asyncio.wait_for(reader.readline(), 60)
    response_headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        key, _, value = line.decode().partition(":")
        response_headers[key.strip().lower()] = value.strip()
    payload = await reader.readexactly(int(response_headers["content-length"]))
    sending.cancel()
    try:
        await sending
    except asyncio.CancelledError:
        pass
    writer.close()
    return int(status_line.split()[1]), json.loads(payload), sent


async def test_a_declared_size_above_20_mb_is_refused_before_reading(server):
    status, body, _ = await raw_post(server, await server.token(MARIE), {"Content-Length": str(MAX_FILE_BYTES + 1)})
    assert status == 413 and body["error"]["code"] == "attachment.too_large"
    assert "20" in body["error"]["message"]


async def test_a_streamed_upload_is_cut_off_after_20_mb_and_memory_stays_flat(server):
    """A chunked body with no declared size, meant to be 2 GB: the server counts
    while writing to disk and stops at 20 MB + 1 byte, holding one chunk at a time."""
    chunk = bytes(64 * 1024)

    async def two_gigabytes():
        for _ in range(2 * 1024 ** 3 // len(chunk)):
            yield chunk

    token = await server.token(MARIE)
    tracemalloc.start()
    try:
        status, body, sent = await raw_post(server, token, {"Transfer-Encoding": "chunked"}, two_gigabytes())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 413 and body["error"]["code"] == "attachment.too_large"
    assert sent < MAX_FILE_BYTES + 16 * 1024 * 1024  # refused near the limit, far before 2 GB
    assert peak < 8 * 1024 * 1024  # neither side ever held the body in memory
    assert await uploads_count(server) == 0
    assert list((server.settings.attachments_dir / "tmp").iterdir()) == []


# -- attaching to messages --------------------------------------------------------------------------------
async def test_members_see_name_size_type_and_dimensions_and_can_open_the_file(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        cid = await conversation(server, marie)
        photo = await accepted(server, MARIE, files.jpeg_with_gps(), "fievre.jpg")
        note = await accepted(server, MARIE, files.pdf(), "billet.pdf")
        await marie.request("message.send", conversation_id=cid, client_id="att", text="",
                            attachments=[photo["id"], note["id"]])
        event = await nadia.event("message.new")
        assert [(a["name"], a["type"]) for a in event["message"]["attachments"]] == [
            ("fievre.jpg", "image/jpeg"), ("billet.pdf", "application/pdf")]
        assert event["message"]["attachments"][0]["width"] == 64
        response = await download(server, NADIA, note["id"])
        assert response.status_code == 200 and response.content == files.pdf()
        assert response.headers["content-type"] == "application/pdf"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["content-disposition"].startswith("attachment;")
        image = await download(server, NADIA, photo["id"])
        assert image.headers["content-disposition"].startswith("inline;")


async def test_eleven_attachments_are_refused_and_nothing_is_sent(server):
    async with await server.connect(MARIE) as marie:
        cid = await conversation(server, marie)
        ids = [(await accepted(server, MARIE, files.png_with_text((10 + i, 10)), f"p{i}.png"))["id"] for i in range(11)]
        answer = await marie.refused("message.send", conversation_id=cid, client_id="eleven", text="", attachments=ids)
        assert answer["code"] == "attachment.too_many" and answer["fields"]["limit"] == 10
        ten = await marie.request("message.send", conversation_id=cid, client_id="ten", text="", attachments=ids[:10])
        assert ten["seq"] == 2


async def test_only_the_uploader_may_attach_an_upload_and_only_once(server):
    async with await server.connect(MARIE) as marie, await server.connect(NADIA) as nadia:
        cid = await conversation(server, marie)
        mine = await accepted(server, MARIE, files.pdf(), "a.pdf")
        answer = await nadia.refused("message.send", conversation_id=cid, client_id="steal", text="",
                                     attachments=[mine["id"]])
        assert answer["code"] == "attachment.not_found"
        await marie.request("message.send", conversation_id=cid, client_id="first", text="", attachments=[mine["id"]])
        again = await marie.refused("message.send", conversation_id=cid, client_id="again", text="",
                                    attachments=[mine["id"]])
        assert again["code"] == "attachment.already_used"


async def test_a_non_member_cannot_download(server):
    async with await server.connect(MARIE) as marie:
        cid = await conversation(server, marie)
        note = await accepted(server, MARIE, files.pdf(), "prive.pdf")
        await marie.request("message.send", conversation_id=cid, client_id="p", text="", attachments=[note["id"]])
    response = await download(server, JEAN, note["id"])
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "attachment.not_found"
    before_attach = await accepted(server, MARIE, files.pdf(), "brouillon.pdf")
    assert (await download(server, NADIA, before_attach["id"])).status_code == 404


async def test_a_removed_member_loses_access_to_files_posted_after_removal(server):
    jean_id = (await person_by_email(server.service, JEAN)).id
    async with await server.connect(MARIE) as marie:
        cid = await conversation(server, marie, NADIA, JEAN)
        await marie.request("conversation.remove", conversation_id=cid, person_id=jean_id)
        later = await accepted(server, MARIE, files.pdf(), "apres.pdf")
        await marie.request("message.send", conversation_id=cid, client_id="l", text="", attachments=[later["id"]])
    assert (await download(server, JEAN, later["id"])).status_code == 404
    assert (await download(server, NADIA, later["id"])).status_code == 200


async def test_a_retracted_messages_files_are_no_longer_served_to_members(server):
    async with await server.connect(MARIE) as marie:
        cid = await conversation(server, marie)
        note = await accepted(server, MARIE, files.pdf(), "erreur.pdf")
        sent = await marie.request("message.send", conversation_id=cid, client_id="r", text="", attachments=[note["id"]])
        await marie.request("message.retract", message_id=sent["message_id"])
    assert (await download(server, NADIA, note["id"])).status_code == 404


async def test_range_requests_return_the_asked_bytes(server):
    data = files.pdf()
    view = await accepted(server, MARIE, data, "bulletin.pdf")
    response = await download(server, MARIE, view["id"], headers={"Range": "bytes=10-19"})
    assert response.status_code == 206 and response.content == data[10:20]
    assert response.headers["content-range"] == f"bytes 10-19/{len(data)}"


@pytest.mark.parametrize("hostile, expected", [
    ("../../etc/passwd.pdf", "passwd.pdf"),
    ("C:\\Windows\\system32\\cmd.pdf", "cmd.pdf"),
    ("facture\u202efdp.exe", "facturefdp.pdf"),  # right-to-left override removed, real type wins
    ("CON.pdf", "_CON.pdf"),
    ("bulletin\x00\x07.pdf", "bulletin.pdf"),
    ("a" * 300 + ".pdf", "a" * 116 + ".pdf"),
    ('"quoted";.pdf', "_quoted_;.pdf"),
])
async def test_hostile_file_names_are_made_safe(server, hostile, expected):
    view = await accepted(server, MARIE, files.pdf(), hostile)
    assert view["name"] == expected
    response = await download(server, MARIE, view["id"])
    assert "/" not in response.headers["content-disposition"].split("filename*=")[0]


async def test_unattached_uploads_are_garbage_collected_after_a_day(server):
    import time

    from chat.conversations.uploads import UPLOAD_TTL_SECONDS

    kept = await accepted(server, MARIE, files.pdf(), "garde.pdf")
    async with await server.connect(MARIE) as marie:
        cid = await conversation(server, marie)
        await marie.request("message.send", conversation_id=cid, client_id="k", text="", attachments=[kept["id"]])
    stray = await accepted(server, MARIE, files.docx(), "oublie.docx")
    stray_path = server.service.store.path_for((await stored_upload(server, stray["id"])).sha256)
    assert await server.service.uploads.collect(time.time()) == 0  # too young
    assert await server.service.uploads.collect(time.time() + UPLOAD_TTL_SECONDS + 60) == 1
    assert await stored_upload(server, stray["id"]) is None and not stray_path.exists()
    assert (await download(server, NADIA, kept["id"])).status_code == 200


async def test_uploads_need_a_token_and_an_allowed_origin(server):
    async with httpx.AsyncClient(base_url=server.url) as http:
        anonymous = await http.post("/api/uploads", content=files.pdf())
        assert anonymous.status_code == 401
        token = await server.token(MARIE)
        cross_site = await http.post("/api/uploads", content=files.pdf(), headers={
            "Authorization": f"Bearer {token}", "Origin": "http://evil.test"})
        assert cross_site.status_code == 403
        assert cross_site.json()["error"]["code"] == "origin.forbidden"
    assert await uploads_count(server) == 0


@pytest.mark.parametrize("upload_id", ["\x00", "a" * 31, "A" * 32, "0" * 33, "9" * 5000, "../../etc/passwd", ""])
def test_text_without_the_shape_of_an_upload_id_names_no_upload(upload_id):
    """Issue #17: an upload id is 32 lower-case hex digits; any other text is
    attachment.not_found before any look-up (a NUL answered 500 on PostgreSQL)."""
    with pytest.raises(NotFound) as refused:
        require_upload_id(upload_id)
    assert refused.value.code == "attachment.not_found"
    assert len(refused.value.fields["upload_id"]) <= 32
    assert require_upload_id("0123456789abcdef" * 2) == "0123456789abcdef" * 2


@pytest.mark.parametrize("path", ["/api/attachments/%00", "/api/attachments/" + "9" * 5000])
async def test_a_download_path_that_names_no_upload_is_not_found(server, path):
    token = await server.token(MARIE)
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get(path, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "attachment.not_found"
