"""Peer: a plain ``websockets`` server that fans out with ``broadcast()``.

Minimal broadcast protocol (shared by every peer in bench/peers/):

* a client connects to ``/``; ``{"type":"ping"}`` is answered ``{"type":"pong"}``
  (after which the client is known to be registered);
* ``{"type":"publish","id":K,"pad":"…"}`` makes the server encode
  ``{"type":"bcast","id":K,"pad":"…"}`` once and send it to every connected client.

No sign-in, no persistence, no per-client authorisation: the floor that the
hub's announcement fan-out is compared with.  Same event loop (uvloop) and the
same keepalive as the hub (a ping every ``PING_INTERVAL_SECONDS``, 20 s by default).  Prints ``listening on ws://HOST:PORT``.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal

from websockets.asyncio.server import broadcast, serve

CLIENTS: set = set()
PING_INTERVAL = float(os.environ.get("PING_INTERVAL_SECONDS", "20"))


async def handler(websocket) -> None:
    CLIENTS.add(websocket)
    try:
        async for message in websocket:
            if message.startswith('{"type":"ping"'):
                await websocket.send('{"type":"pong"}')
            elif message.startswith('{"type":"publish"'):
                data = json.loads(message)
                broadcast(CLIENTS, json.dumps({"type": "bcast", "id": data["id"], "pad": data["pad"]},
                                              separators=(",", ":")))
    finally:
        CLIENTS.discard(websocket)


async def main() -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    async with serve(handler, "127.0.0.1", 0, compression=None, ping_interval=PING_INTERVAL, ping_timeout=20,
                     backlog=2048) as server:
        host, port = next(iter(server.sockets)).getsockname()[:2]
        print(f"listening on ws://{host}:{port}", flush=True)
        await stop


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import uvloop

    uvloop.run(main())
