"""A load-generator process: a :class:`Pool` of connections driven over a pipe.

The coordinator (bench/run.py) starts several of these with multiprocessing
(spawn), so that receiving 10,000 connections' frames is spread over
processes and the client side is not what limits a figure.  Each command is
a dict ``{"id", "cmd", …}``; the answer is ``{"id", "result"}`` or
``{"id", "error"}``.  Commands run as tasks: a long one (``traffic``) does not
stop the pipe from answering others.

Every loop is bounded in count and time: traffic runs for its ``duration``,
waits end at their ``timeout``, connection attempts stop at their deadline.
"""

from __future__ import annotations

import asyncio
import gc
import random
import resource
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from loadgen.pool import Pool, now_ns

# Pacing tick of the open-loop sender: 1 ms is the event loop's timer resolution.
TICK_S = 0.001
# At most this many sends in one tick, so a stalled loop does not release a burst
# that the hub's per-connection rate limit (20/s, bursts of 40) would refuse.
MAX_SENDS_PER_TICK = 200


def collect_garbage() -> None:
    """The load generator collects its cyclic garbage only here, before a
    measurement: the collector pauses the whole process (tens of milliseconds
    with a few thousand connections), and a pause while frames arrive would be
    counted as the server's latency.  Automatic collection is off (:func:`main`)."""
    gc.collect()


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Worker:
    def __init__(self, pipe: Connection, index: int) -> None:
        self.pipe = pipe
        self.index = index
        self.pool = Pool()
        self.loop = asyncio.get_running_loop()
        self.stop = self.loop.create_future()

    def read_commands(self) -> None:
        """Reader thread: the pipe stays blocking (an event loop's add_reader would make
        it non-blocking, and a large command would then fail half-read)."""
        while True:
            try:
                message = self.pipe.recv()
            except (EOFError, OSError):
                self.loop.call_soon_threadsafe(lambda: self.stop.done() or self.stop.set_result(None))
                return
            self.loop.call_soon_threadsafe(lambda m=message: asyncio.ensure_future(self.dispatch(m)))
            if message.get("cmd") == "quit":
                return

    async def dispatch(self, message: dict[str, Any]) -> None:
        try:
            result = await getattr(self, "cmd_" + message["cmd"])(**message.get("args", {}))
            self.pipe.send({"id": message["id"], "result": result})
        except Exception:  # reported to the coordinator, which fails the run
            self.pipe.send({"id": message["id"], "error": traceback.format_exc()})

    # -- commands -------------------------------------------------------------------------------
    async def cmd_quit(self) -> None:
        await self.pool.close_all()
        self.stop.set_result(None)

    async def cmd_connect(self, items: list, dialect: str, concurrency: int = 50,
                          want_conversations: bool = False, deadline_s: float = 600.0) -> dict[str, Any]:
        return await self.pool.open_many([tuple(i) for i in items], dialect, concurrency, want_conversations,
                                         deadline_s)

    async def cmd_close(self, keys: list | None = None) -> int:
        return await self.pool.close_all(keys)

    async def cmd_count(self) -> dict[str, Any]:
        return {"open": sum(1 for c in self.pool.clients.values() if not c.closed),
                "closes": dict(self.pool.closes)}

    async def cmd_arm(self, mode: str) -> None:
        collect_garbage()
        self.pool.reset(mode)

    async def cmd_wait_arrivals(self, expected: int, wait_s: float) -> dict[str, Any]:
        """Wait until ``expected`` broadcasts (or message.new events) arrived, then hand them over."""
        deadline = time.monotonic() + wait_s
        while len(self.pool.arrivals) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        arrivals = self.pool.arrivals
        self.pool.arrivals = []
        return {"arrivals": arrivals, "other": self.pool.other, "errors": dict(self.pool.errors)}

    async def cmd_create_conversations(self, items: list, concurrency: int = 20) -> list[Any]:
        """``[person, child_id, participants]`` → conversation id (or the error code)."""
        sem = asyncio.Semaphore(concurrency)

        async def one(person: int, child_id: int, participants: list[int]) -> Any:
            async with sem:
                for _ in range(20):  # rate_limited is retried after the server's retry_after
                    answer = await self.pool.request(person, {"type": "conversation.create", "child_id": child_id,
                                                              "participants": participants})
                    if answer["type"] == "ok":
                        return answer["conversation"]["id"]
                    if answer.get("code") != "rate_limited":
                        return answer.get("code")
                    await asyncio.sleep(float(answer.get("retry_after", 0.5)))
                return "rate_limited"

        return list(await asyncio.gather(*(one(*item) for item in items)))

    async def cmd_request(self, key: Any, frame: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        return await self.pool.request(key, frame, timeout)

    async def cmd_traffic(self, streams: list, duration: float, warmup: float, drain: float, pad: str,
                          rate: float | None = None, closed_loop_interval: float | None = None) -> dict[str, Any]:
        """Send ``message.send`` on ``streams`` ([person, conversation]) for ``duration`` s.

        Open loop (``rate`` messages/s for this process, paced every millisecond) or
        closed loop (``closed_loop_interval``: each person keeps one message in flight
        and sends the next on its ack, no sooner than the interval after the last).
        Only messages sent after ``warmup`` count; after the end, wait up to ``drain``
        seconds for what is still in flight.
        """
        collect_garbage()
        pool = self.pool
        loop = asyncio.get_running_loop()
        start = now_ns()
        pool.reset("traffic", window_start=start + int(warmup * 1e9))
        end = start + int(duration * 1e9)
        pool.window_end = end
        sent = 0
        sent_in_window = 0
        if rate is not None:
            i = 0
            n = len(streams)
            while True:
                t = now_ns()
                if t >= end:
                    break
                due = min(int((t - start) * rate / 1e9) - sent, MAX_SENDS_PER_TICK)
                for _ in range(due):
                    key, conversation_id = streams[i % n]
                    i += 1
                    pool.send_message(key, conversation_id, pad)
                    sent += 1
                    if t >= pool.window_start:
                        sent_in_window += 1
                await asyncio.sleep(TICK_S)
        else:
            by_person: dict[Any, list[int]] = {}
            for key, conversation_id in streams:
                by_person.setdefault(key, []).append(conversation_id)
            turn = {key: 0 for key in by_person}
            last = {key: 0 for key in by_person}
            interval_ns = int((closed_loop_interval or 0) * 1e9)
            counts = {"sent": 0, "window": 0}
            finished = loop.create_future()

            def send(key: Any) -> None:
                t = now_ns()
                if t >= end:
                    return
                conversations = by_person[key]
                conversation_id = conversations[turn[key] % len(conversations)]
                turn[key] += 1
                last[key] = t
                pool.send_message(key, conversation_id, pad)
                counts["sent"] += 1
                if t >= pool.window_start:
                    counts["window"] += 1

            def on_ack(key: Any) -> None:
                wait_ns = last[key] + interval_ns - now_ns()
                if wait_ns > 0:
                    loop.call_later(wait_ns / 1e9, send, key)
                else:
                    send(key)

            pool.on_ack = on_ack
            keys = list(by_person)
            random.shuffle(keys)
            for j, key in enumerate(keys):  # spread the first sends over one interval
                loop.call_later((closed_loop_interval or 0.01) * j / len(keys), send, key)
            loop.call_later(duration, lambda: finished.done() or finished.set_result(None))
            await finished
            pool.on_ack = None
            sent, sent_in_window = counts["sent"], counts["window"]
        # Drain: until nothing is pending, or the drain time is up.
        drain_deadline = time.monotonic() + drain
        while pool.pending and time.monotonic() < drain_deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        snap = pool.snapshot()
        unanswered = len(pool.pending)
        pool.reset("idle")
        snap.update(sent=sent, sent_in_window=sent_in_window, unanswered=unanswered,
                    window_seconds=duration - warmup)
        del snap["arrivals"]
        return snap


async def _serve(pipe: Connection, index: int) -> None:
    worker = Worker(pipe, index)
    threading.Thread(target=worker.read_commands, daemon=True, name="commands").start()
    await worker.stop


def main(pipe: Connection, index: int) -> None:
    """Process entry point (multiprocessing target)."""
    raise_nofile()
    gc.disable()  # see collect_garbage
    try:
        import uvloop

        uvloop.run(_serve(pipe, index))
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        asyncio.run(_serve(pipe, index))
