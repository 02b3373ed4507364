"""Real files made by the tests: good ones the hub must accept, bad ones it must refuse."""

from __future__ import annotations

import io
import struct
import zipfile

from PIL import Image

GPS_IFD = 0x8825
ORIENTATION = 0x0112

CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/word/document.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
    "</Types>"
)
RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
    'Target="word/document.xml"/></Relationships>'
)
DOCUMENT = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
    "<w:body><w:p><w:r><w:t>Billet d'absence — Léa Tremblay</w:t></w:r></w:p></w:body></w:document>"
)


def jpeg_with_gps(orientation: int = 6, size: tuple[int, int] = (64, 48)) -> bytes:
    """A real JPEG photo whose EXIF holds GPS coordinates (Montréal) and an orientation."""
    image = Image.new("RGB", size, (200, 120, 40))
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[0x010F] = "PhoneMaker"  # Make
    exif[GPS_IFD] = {1: "N", 2: (45.0, 30.0, 17.0), 3: "W", 4: (73.0, 33.0, 25.0)}
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes(), comment=b"taken at home")
    return out.getvalue()


def png_with_text(size: tuple[int, int] = (40, 30)) -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Location", "45.5017 N, 73.5673 W")
    image = Image.new("RGBA", size, (10, 200, 90, 255))
    out = io.BytesIO()
    image.save(out, "PNG", pnginfo=info)
    return out.getvalue()


def docx(extra: dict[str, bytes] | None = None, content_types: str = CONTENT_TYPES) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", content_types)
        archive.writestr("_rels/.rels", RELS)
        archive.writestr("word/document.xml", DOCUMENT)
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return out.getvalue()


def docm() -> bytes:
    """A macro-enabled document (.docm content), to be renamed .docx."""
    content_types = CONTENT_TYPES.replace(
        "wordprocessingml.document.main+xml", "ms-word.document.macroEnabled.main+xml").replace(
        "</Types>", '<Override PartName="/word/vbaProject.bin" ContentType="application/vnd.ms-office.vbaProject"/></Types>')
    return docx({"word/vbaProject.bin": b"\xd0\xcf\x11\xe0" + b"macro" * 100}, content_types=content_types)


def docx_bomb() -> bytes:
    """A DOCX with one entry that inflates 150 MB of zeros from a few hundred KB."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", CONTENT_TYPES)
        archive.writestr("_rels/.rels", RELS)
        archive.writestr("word/document.xml", DOCUMENT)
        zeros = bytes(1024 * 1024)
        with archive.open("word/media/big.bin", "w", force_zip64=True) as entry:
            for _ in range(150):
                entry.write(zeros)
    return out.getvalue()


def docx_traversal() -> bytes:
    return docx({"../../evil.sh": b"#!/bin/sh\nrm -rf /\n"})


def _pdf(objects: list[bytes], root: int = 1) -> bytes:
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, root, xref))
    return out.getvalue()


def pdf() -> bytes:
    """A real one-page PDF with a line of text."""
    content = b"BT /F1 18 Tf 72 720 Td (Bulletin de Lea) Tj ET"
    return _pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ])


def pdf_with_javascript() -> bytes:
    """A PDF that runs JavaScript when opened (/OpenAction + /JS)."""
    return _pdf([
        b"<< /Type /Catalog /Pages 2 0 R /OpenAction 4 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
        b"<< /Type /Action /S /JavaScript /JS (app.alert('pwned');) >>",
    ])


def pdf_with_hidden_javascript() -> bytes:
    """The same trick hidden in a compressed object stream and with #xx-escaped names."""
    import zlib

    hidden = b"4 0 << /Type /Action /S /J#61vaScript /#4AS (app.alert(1)) >>"
    stream = zlib.compress(hidden)
    return _pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
        b"<< /Type /ObjStm /N 1 /First 4 /Filter /FlateDecode /Length %d >>\nstream\n" % len(stream)
        + stream + b"\nendstream",
    ])


def pe_executable() -> bytes:
    """A minimal Windows PE header (what a renamed .exe starts with)."""
    header = bytearray(b"MZ" + bytes(0x3A) + struct.pack("<I", 0x80))
    header += bytes(0x80 - len(header))
    header += b"PE\x00\x00" + struct.pack("<HHIIIHH", 0x14C, 1, 0, 0, 0, 0xE0, 0x102)
    header += bytes(0xE0)
    return bytes(header) + bytes(512)


def html_page() -> bytes:
    return b"<!DOCTYPE html><html><head><script>alert(document.cookie)</script></head><body>x</body></html>"


def svg_image() -> bytes:
    return b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect/></svg>'


def legacy_doc() -> bytes:
    """The start of an OLE2 compound file, as a Word 97–2003 .doc is."""
    return bytes.fromhex("D0CF11E0A1B11AE1") + bytes(16) + b"\x3e\x00\x03\x00\xfe\xff\x09\x00" + bytes(2048)


def docx_with_damaged_content_types() -> bytes:
    """A DOCX whose [Content_Types].xml (the first entry) does not inflate: its
    deflate stream starts with an invalid block type."""
    data = bytearray(docx())
    header = data.index(b"PK\x03\x04")
    name_length, extra_length = struct.unpack("<HH", data[header + 26:header + 30])
    start = header + 30 + name_length + extra_length
    data[start:start + 4] = b"\xff\xff\xff\xff"
    return bytes(data)


def docx_with_false_utf8_name() -> bytes:
    """A DOCX whose central directory marks an entry's name as UTF-8 (flag bit 11)
    though the name's bytes are not UTF-8."""
    name = b"word/media/image.bin"
    data = bytearray(docx({name.decode(): b"x"}))
    entry = data.index(b"PK\x01\x02")
    while data[entry + 46:entry + 46 + len(name)] != name:
        entry = data.index(b"PK\x01\x02", entry + 4)
    (flags,) = struct.unpack("<H", data[entry + 8:entry + 10])
    data[entry + 8:entry + 10] = struct.pack("<H", flags | 0x800)
    data[entry + 46 + name.index(b"image")] = 0xFF
    return bytes(data)


def pdf_with_disguised_object_stream(type_entry: bytes = b"/Type /Obj#53tm") -> bytes:
    """The hidden JavaScript of :func:`pdf_with_hidden_javascript`, in an object
    stream whose type is disguised: an escaped name (``/Obj#53tm`` reads
    ``/ObjStm``) or a comment between the key and its value."""
    import zlib

    hidden = b"4 0 << /Type /Action /S /JavaScript /JS (app.alert(1)) >>"
    stream = zlib.compress(hidden)
    return _pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
        b"<< " + type_entry + b" /N 1 /First 4 /Filter /FlateDecode /Length %d >>\nstream\n" % len(stream)
        + stream + b"\nendstream",
    ])


# -- JPEGs with metadata where a reader of the headers alone would not look ---------------------------
GPS_TEXT = b"GPS 45.5017 N, 73.5673 W - maison de Lea"


def jpeg_photo(progressive: bool = False, size: tuple[int, int] = (96, 64), **options) -> bytes:
    """A real JPEG with detail in it, so that the encoder writes its own Huffman tables
    and, when progressive, several scans with tables between them."""
    width, height = size
    pixels = bytes((i * 37 + (i // 7) * 11 + (i // (width * 3)) * 5) % 256 for i in range(width * height * 3))
    out = io.BytesIO()
    Image.frombytes("RGB", size, pixels).save(out, "JPEG", progressive=progressive, quality=90, **options)
    return out.getvalue()


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def jpeg_gps_segments() -> bytes:
    """A comment and an APP1 EXIF block that tell where the photo was taken."""
    exif = Image.Exif()
    exif[GPS_IFD] = {1: "N", 2: (45.0, 30.0, 6.0), 3: "W", 4: (73.0, 34.0, 2.0)}
    exif[0x010E] = GPS_TEXT.decode()  # ImageDescription
    return jpeg_segment(0xFE, GPS_TEXT) + jpeg_segment(0xE1, b"Exif\x00\x00" + exif.tobytes())


def end_of_first_scan(jpeg: bytes) -> int:
    """Where the first scan's entropy-coded data ends: the offset of the marker after it."""
    sos = jpeg.index(b"\xff\xda")
    position = sos + 2 + struct.unpack(">H", jpeg[sos + 2:sos + 4])[0]
    while True:
        position = jpeg.index(b"\xff", position)
        following = jpeg[position + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            position += 1
            continue
        return position


def jpeg_with_segments_after_first_scan(jpeg: bytes, segments: bytes) -> bytes:
    """``segments`` spliced in right after the first scan's data: between two scans
    of a progressive JPEG, before the end of a baseline one."""
    at = end_of_first_scan(jpeg)
    return jpeg[:at] + segments + jpeg[at:]


# -- PDFs whose objects are in an object stream (PDF 1.5), encoded in every way readers accept -----------
def _lzw(data: bytes) -> bytes:
    """LZWDecode data (9-bit codes, which the short texts here never outgrow)."""
    table = {bytes([i]): i for i in range(256)}
    codes, word = [256], b""  # clear-table first
    for byte in data:
        longer = word + bytes([byte])
        if longer in table:
            word = longer
            continue
        codes.append(table[word])
        table[longer] = len(table) + 2  # 256 and 257 are clear-table and end-of-data
        word = bytes([byte])
    codes += [table[word], 257]
    assert len(table) + 2 < 511, "longer data needs 10-bit codes"
    bits = "".join(format(code, "09b") for code in codes)
    bits += "0" * (-len(bits) % 8)
    return bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))


def _rc4(key: bytes, data: bytes) -> bytes:
    state, j = list(range(256)), 0
    for i in range(256):
        j = (j + state[i] + key[i % len(key)]) % 256
        state[i], state[j] = state[j], state[i]
    out, i, j = bytearray(), 0, 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + state[i]) % 256
        state[i], state[j] = state[j], state[i]
        out.append(byte ^ state[(state[i] + state[j]) % 256])
    return bytes(out)


def _raw_deflate(data: bytes) -> bytes:
    import zlib

    compressor = zlib.compressobj(wbits=-15)
    return compressor.compress(data) + compressor.flush()


def _png_rows(data: bytes, columns: int = 5) -> bytes:
    """Rows of ``columns`` bytes, each behind the PNG "None" filter byte (/Predictor 12)."""
    data += bytes(-len(data) % columns)
    return b"".join(b"\x00" + data[i:i + columns] for i in range(0, len(data), columns))


def _encoder(name: str):
    import base64
    import zlib

    hexadecimal = lambda d: d.hex().encode() + b">"  # noqa: E731
    base85 = lambda d: base64.a85encode(d, wrapcol=64) + b"~>"  # noqa: E731
    return {"FlateDecode": zlib.compress, "Fl": zlib.compress, "ASCIIHexDecode": hexadecimal, "AHx": hexadecimal,
            "ASCII85Decode": base85, "A85": base85, "LZWDecode": _lzw}[name]


def pdf_with_object_stream(filters: tuple[str, ...] = ("FlateDecode",), *, javascript: bool = True,
                           raw_deflate: bool = False, predictor: bool = False, type_entry: bytes = b"/Type /ObjStm ",
                           encrypted: bool = False, damaged: bool = False, offset: int | None = None,
                           outline: bool = False) -> bytes:
    """A PDF 1.5 whose catalog, pages and page are in an object stream, found
    through a cross-reference stream, as Word and most writers save them.

    With ``javascript`` the catalog has an /OpenAction running JavaScript, which
    is in the object stream too, so that only its decoded data shows it.  The
    object stream's data is encoded by ``filters`` (in the order a reader decodes
    them); ``raw_deflate`` writes FlateDecode data without the zlib header,
    ``predictor`` through PNG predictor rows, ``encrypted`` RC4-encrypts it (the
    trailer then names an /Encrypt dictionary), ``damaged`` spoils the end of the
    compressed data after the script.  ``offset`` pads the file so that the object
    stream's dictionary starts there; ``outline`` adds bookmarks (/First, in plain
    objects).
    """
    import zlib

    catalog = b"<< /Type /Catalog /Pages 2 0 R" + (b" /OpenAction 4 0 R" if javascript else b"") + b" >>"
    objects = [catalog, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"]
    if javascript:
        objects.append(b"<< /Type /Action /S /JavaScript /JS (app.alert\\('Lea'\\);) >>")
    numbers = range(1, len(objects) + 1)
    offsets, body = [], b""
    for obj in objects:
        offsets.append(len(body))
        body += obj + b"\n"
    header = b" ".join(b"%d %d" % pair for pair in zip(numbers, offsets)) + b"\n"
    content = header + body
    data = _png_rows(content) if predictor else content
    for name in reversed(filters):
        data = _raw_deflate(data) if name == "FlateDecode" and raw_deflate else _encoder(name)(data)
    if damaged:
        data = data[:-4] + b"\xff\xff\xff\xff"  # the end of the deflate data and its checksum
    if encrypted:
        data = _rc4(b"cle du fichier", data)
    filter_entry = (b"/Filter /%s" % filters[0].encode() if len(filters) == 1
                    else b"/Filter [" + b" ".join(b"/" + f.encode() for f in filters) + b"]")
    parms = b" /DecodeParms << /Predictor 12 /Columns 5 >>" if predictor else b""
    next_number = len(objects) + 1
    stream_number, plain = next_number, []
    out = io.BytesIO()
    out.write(b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n")
    if outline:
        plain = [b"<< /Type /Outlines /First %d 0 R /Last %d 0 R /Count 1 >>" % (next_number + 1, next_number + 1),
                 b"<< /Title (Bulletin de Lea) /Parent %d 0 R /First %d 0 R /Last %d 0 R /Count 1 >>"
                 % (next_number, next_number + 2, next_number + 2),
                 b"<< /Title (Mathematiques) /Parent %d 0 R >>" % (next_number + 1)]
        stream_number = next_number + len(plain)
    if offset is not None:
        out.write(b"%" + b"0" * (offset - out.tell() - len(b"%d 0 obj\n" % stream_number) - 1) + b"\n")
    locations: dict[int, int] = {}
    locations[stream_number] = out.tell()
    out.write(b"%d 0 obj\n<< %s/N %d /First %d %s%s /Length %d >>\nstream\n"
              % (stream_number, type_entry, len(objects), len(header), filter_entry, parms, len(data)))
    out.write(data + b"\nendstream\nendobj\n")
    for number, obj in enumerate(plain, start=next_number):
        locations[number] = out.tell()
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, obj))
    extra = b""
    if encrypted:
        encrypt_number = stream_number + 1
        locations[encrypt_number] = out.tell()
        out.write(b"%d 0 obj\n<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P -4 >>\nendobj\n"
                  % (encrypt_number, b"11" * 32, b"22" * 32))
        extra = b" /Encrypt %d 0 R /ID [<%s> <%s>]" % (encrypt_number, b"ab" * 16, b"ab" * 16)
    xref_number = max(locations) + 1
    locations[xref_number] = out.tell()
    rows = [b"\x00\x00\x00\x00\x00\xff\xff"]
    for number in range(1, xref_number + 1):
        if number in locations:
            rows.append(b"\x01" + struct.pack(">IH", locations[number], 0))
        else:  # in the object stream, at its index
            rows.append(b"\x02" + struct.pack(">IH", stream_number, number - 1))
    table = zlib.compress(b"".join(rows))
    out.write(b"%d 0 obj\n<< /Type /XRef /Size %d /W [1 4 2] /Root 1 0 R%s /Filter /FlateDecode /Length %d >>\nstream\n"
              % (xref_number, xref_number + 1, extra, len(table)))
    out.write(table + b"\nendstream\nendobj\nstartxref\n%d\n%%%%EOF\n" % locations[xref_number])
    return out.getvalue()
