"""Upload throughput (issue #3): 20 MB PDFs, one at a time and ten in parallel.

``POST /api/uploads?name=x.pdf`` with the raw file as the body and
``Authorization: Bearer``, as the widget does (R7).  The file is a valid
one-page PDF padded to 20,000,000 bytes (under the 20 MiB limit), a little
different each time so that no two uploads share a content hash.  The client
is a plain HTTP/1.1 writer on an asyncio stream (one connection per upload);
it sends in 256 KiB chunks as fast as the server reads.

Reported: MB/s (10^6 bytes) per upload and in aggregate, and the server's peak
RSS while the ten parallel uploads run (sampled every 20 ms).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from harness.fixtures import padded_pdf
from harness.procstat import Sampler
from harness.servers import Server
from scenarios.common import Context, median

SIZE = 20_000_000
CHUNK = 256 * 1024


def _file(tag: int) -> bytes:
    body = bytearray(padded_pdf(SIZE))
    marker = b"%% bench upload %08d\n" % tag
    # Overwrite padding spaces inside the content stream (well past the header) with a PDF comment.
    at = body.index(b"BT ET\n") + 6
    body[at:at + len(marker)] = marker
    return bytes(body)


async def upload(port: int, token: str, data: bytes, name: str = "x.pdf") -> tuple[float, int, dict[str, Any]]:
    """One upload; returns (seconds, HTTP status, JSON body)."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = (f"POST /api/uploads?name={name} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: application/pdf\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
        writer.write(head)
        view = memoryview(data)
        for offset in range(0, len(data), CHUNK):
            writer.write(view[offset:offset + CHUNK])
            await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 120)
        status = int(status_line.split()[1])
        length = None
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name_, _, value = line.decode("latin-1").partition(":")
            if name_.strip().lower() == "content-length":
                length = int(value.strip())
        body = await (reader.readexactly(length) if length is not None else reader.read())
    finally:
        writer.close()
    seconds = time.monotonic() - started
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = {"raw": body[:200].decode(errors="replace")}
    return seconds, status, parsed


async def run(ctx: Context, server: Server, tokens: list[str], sequential: int, parallel: int) -> dict[str, Any]:
    group = server.group()
    port = server.port
    files = [_file(i) for i in range(sequential + parallel)]
    single = []
    statuses: dict[int, int] = {}
    for i in range(sequential):
        seconds, status, body = await upload(port, tokens[0], files[i])
        statuses[status] = statuses.get(status, 0) + 1
        if status != 201:
            ctx.log(f"  upload refused: {status} {body}")
        single.append(SIZE / seconds / 1e6)
    sampler = Sampler(group, interval=0.02).start()
    rss_before = group.rss_kib()
    started = time.monotonic()
    results = await asyncio.gather(*(upload(port, tokens[(i + 1) % len(tokens)], files[sequential + i])
                                     for i in range(parallel)))
    wall = time.monotonic() - started
    peak = await sampler.stop()
    for _seconds, status, body in results:
        statuses[status] = statuses.get(status, 0) + 1
        if status != 201:
            ctx.log(f"  upload refused: {status} {body}")
    out = {
        "file_bytes": SIZE,
        "single_mb_per_s": median(single),
        "parallel": parallel,
        "parallel_aggregate_mb_per_s": round(parallel * SIZE / wall / 1e6, 1),
        "parallel_each_mb_per_s": median([SIZE / s / 1e6 for s, _, _ in results]),
        "parallel_wall_s": round(wall, 2),
        "rss_before_mib": round(rss_before / 1024, 1),
        "peak_rss_mib": round(peak / 1024, 1),
        "peak_rss_growth_mib": round((peak - rss_before) / 1024, 1),
        "statuses": statuses,
    }
    ctx.log(f"  uploads: {out['single_mb_per_s']} MB/s single, {out['parallel_aggregate_mb_per_s']} MB/s "
            f"aggregate over {parallel} in parallel, peak RSS {out['peak_rss_mib']} MiB "
            f"(+{out['peak_rss_growth_mib']} MiB), statuses {statuses}")
    return out
