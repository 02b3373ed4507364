"""Peer: python-socketio (``AsyncServer``) with its Redis manager, emitting to a room.

Every client joins the room ``all`` when it connects; a ``publish`` event makes
the server ``emit("announcement", …, room="all")``.  With
``AsyncRedisManager`` an emit is published to Redis and delivered to the room's
clients by the listener of every server process (here one): the same path a
multi-process Socket.IO deployment takes, as the hub's Redis broker does.
Served by uvicorn (uvloop, the same WebSocket stack as the hub).  Prints
``listening on http://HOST:PORT``.

Environment: ``REDIS_URL`` (default redis://127.0.0.1:6379/0), ``SIO_CHANNEL``
(the manager's pub/sub channel; unique per run), ``PING_INTERVAL_SECONDS``
(Engine.IO's ping interval; 25 s by default).
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket

import socketio
import uvicorn

manager = socketio.AsyncRedisManager(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
                                     channel=os.environ.get("SIO_CHANNEL", "bench-socketio"))
sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager, cors_allowed_origins=[],
                           ping_interval=float(os.environ.get("PING_INTERVAL_SECONDS", "25")), ping_timeout=20)
app = socketio.ASGIApp(sio)


@sio.event
async def connect(sid, environ, auth=None):
    await sio.enter_room(sid, "all")


@sio.on("publish")
async def publish(sid, data):
    await sio.emit("announcement", {"id": data["id"], "pad": data["pad"]}, room="all")


async def main() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, log_level="warning", access_log=False, ws_per_message_deflate=False,
                            ws_ping_interval=None, lifespan="off")
    server = uvicorn.Server(config)
    print(f"listening on http://{host}:{port}", flush=True)
    await server.serve(sockets=[sock])


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import uvloop

    uvloop.run(main())
