"""Where a server's CPU goes: ``py-spy record`` on its process, summarised.

The raw (folded) stacks are kept next to the report's JSON under
``bench/profiles/`` for anyone who wants a flame graph; the report shows two
views: the functions with the most samples on top of the stack (self time),
and a split into categories, each sample counted once, in the first category
that matches when walking from the leaf towards the root — so a ``send()``
system call made while writing a frame counts as "socket write", not as
"per-connection writer".  Idle samples (a thread waiting) are left out
(py-spy's default).

Sampling is done in its own pass, never during a measured round: py-spy
stops the process briefly at every sample.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path

# (category, substrings of a frame, any of which matches), most specific first.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("socket write (send syscall, kernel loopback)", ("send (libc", "sock_send", "sock_sendmsg", "writev (libc")),
    ("socket read / epoll", ("recv (libc", "epoll_wait", "sock_recv", "read (libc")),
    ("SQLite engine (C)", ("libsqlite3", "sqlite3Vdbe")),
    ("SQL driver thread hop (aiosqlite queue, locks)", ("aiosqlite/", "sem_post", "pthread_cond", "_queue_SimpleQueue",
                                                       "PyThread_acquire_lock")),
    ("asyncpg driver", ("asyncpg/",)),
    ("SQLAlchemy ORM/Core (compile, bind, rows)", ("sqlalchemy/", "sqlmodel/", "greenlet")),
    ("JSON encode/decode", ("orjson", "json/")),
    ("WebSocket framing (websockets sans-I/O)", ("websockets/",)),
    ("uvicorn ASGI WebSocket adapter", ("uvicorn/protocols/websockets",)),
    ("Starlette WebSocket/ASGI layers", ("starlette/",)),
    ("hub fan-out (chat/hub.py)", ("chat/hub.py",)),
    ("redis client", ("redis/",)),
    ("hub service and rules (chat/*)", ("chat/",)),
    ("asyncio scheduling (tasks, futures, events)", ("asyncio/", "_asynciomodule", "task_step", "uvloop")),
    ("garbage collector", ("gc_collect",)),
    ("libc, unsymbolised (memcpy, futex, syscall stubs)", ("(libc.so",)),
]


# Hub code paths whose inclusive share (samples with the function anywhere on the stack) the
# report shows, so that "what limits it" names the hub's own functions.
HOT_PATHS = (
    "Announcements.post", "Announcements._persist", "Announcements._notify", "Notifier.add",
    "_literal_execute_expanding_parameter", "Sending._write", "Connection.push",
    "WebSocketsSansIOProtocol.send", "Hub._on_audience", "Hub._on_message", "Sending.send",
    "committed", "next_seq", "member_ids", "participant", "Schools.writable", "Membership.create",
    "People.authenticate", "Session.start", "Announcements.audience_channels", "Reading.list_conversations",
    "Reading.positions", "Reading.active_conversation_ids", "AsyncSession.commit", "gc_collect_main",
)

# A sample is a wait when one of its three top frames is one of these.
WAITS = ("epoll_wait", "EpollSelector.select", "select_epoll_poll", "_queue_SimpleQueue_get", "PyThread_acquire_lock",
         "pthread_cond_timedwait", "pthread_cond_wait", "take_gil", "sem_wait", "sem_timedwait", "futex")


def available() -> bool:
    return shutil.which("py-spy") is not None


class Recording:
    """``async with Recording(pid, path):`` samples ``pid`` (and its subprocesses) meanwhile."""

    def __init__(self, pid: int, path: Path, rate: int = 100, native: bool = True) -> None:
        self.pid, self.path, self.rate, self.native = pid, path, rate, native
        self.process: subprocess.Popen | None = None

    async def __aenter__(self) -> "Recording":
        argv = ["py-spy", "record", "-r", str(self.rate), "-f", "raw", "-o", str(self.path), "-p", str(self.pid),
                "--subprocesses"]
        if self.native:
            argv.append("--native")
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await asyncio.sleep(1.0)  # py-spy attaches
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                await asyncio.to_thread(self.process.wait, 30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def summarise(path: Path, top: int = 15, only: str | None = None) -> dict:
    """Self-time leaders and the category split of a raw py-spy file.

    ``only`` keeps the stacks that contain that substring (a code path of interest)."""
    self_time: Counter = Counter()
    categories: Counter = Counter()
    paths: Counter = Counter()
    total = 0
    waiting = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return {"samples": 0, "self": [], "categories": []}
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if only and not any(only in f for f in frames):
            continue
        if any(w in f for f in frames[-3:] for w in WAITS):
            waiting += n
            continue
        total += n
        self_time[_short(frames[-1])] += n
        for path in HOT_PATHS:
            if any(path in f for f in frames):
                paths[path] += n
        for frame in reversed(frames):
            category = next((name for name, keys in CATEGORIES if any(k in frame for k in keys)), None)
            if category is not None:
                categories[category] += n
                break
        else:
            categories["other (interpreter, C extensions)"] += n
    pct = (lambda n: round(100.0 * n / total, 1)) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "waiting_samples": waiting,
        "self": [[name, pct(n)] for name, n in self_time.most_common(top)],
        "categories": [[name, pct(n)] for name, n in categories.most_common()],
        "paths": [[name, pct(n)] for name, n in paths.most_common() if pct(n) >= 1.0],
    }


def _short(frame: str) -> str:
    name = frame.split(" (")[0]
    where = frame[frame.find("(") + 1: frame.rfind(")")] if "(" in frame else ""
    for prefix in ("site-packages/", "lib/python3"):
        if prefix in where:
            where = where.split(prefix)[-1]
    return f"{name} ({where})" if where else name
