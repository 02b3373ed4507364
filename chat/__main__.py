"""Command line: ``python -m chat serve | demo | token EMAIL | directory load FILE | directory nip ORG FICHE | db upgrade``."""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import logging
import os
import socket
import sys
from pathlib import Path
from typing import NoReturn

from sqlalchemy import func, select

from chat import demo, directory, logsafety
from chat.accounts.children import NIP_DAYS
from chat.app import App
from chat.config import (MAX_WORKERS, Settings, describe, load_settings, parse_host, parse_port, parse_workers,
                         variable_of)
from chat.errors import ChatError, ConfigError
from chat.i18n import error_text
from chat.storage.db import create_engine, session_factory, upgrade
from chat.storage.models import Person

log = logging.getLogger("chat")


class JsonFormatter(logging.Formatter):
    """One JSON object per line (LOG_FORMAT=json), for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        import json

        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage(), "pid": record.process}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
    logsafety.install()
    if settings.log_level != "debug":
        # Alembic tells every step of every migration at INFO; `serve` says
        # "database ready" once instead.  Its warnings and errors still show.
        logging.getLogger("alembic").setLevel(logging.WARNING)


async def _prepare(settings: Settings):
    engine = create_engine(settings.database_url, settings.database_pool_size)
    await upgrade(engine)
    return engine


async def _people(engine, emails: list[str]) -> dict[str, Person]:
    """The directory people with these e-mails (any case), by lower-case e-mail."""
    async with session_factory(engine)() as session:
        people = (await session.execute(select(Person).where(Person.email.in_([e.lower() for e in emails])))).scalars().all()
    return {p.email: p for p in people}


async def _tokens(settings: Settings, engine, emails: list[str]) -> list[tuple[Person, str]]:
    """An access token each, in a session of its own ("cli") that the person sees
    and can end (R21); it lives TOKEN_TTL_SECONDS like any access token."""
    by_email = await _people(engine, emails)
    accounts = App(settings, engine).accounts
    result = []
    for email in emails:
        person = by_email.get(email.lower())
        if person is None:
            raise ChatError("person.not_found", person_id=email)
        result.append((person, (await accounts.open_session(person.id, "cli"))["access_token"]))
    return result


async def load_demo(settings: Settings, engine, with_tokens: bool = True) -> None:
    """Load the demo board if the directory is empty, and list the demo people:
    with a token each (``demo``), or with where to get one (``serve --demo``)."""
    async with session_factory(engine)() as session:
        count = (await session.execute(select(func.count()).select_from(Person))).scalar_one()
    if count == 0:
        counts = await directory.load(engine, directory.validate(demo.build()))
        print("demo board loaded: " + ", ".join(f"{v} {k[:-1] if v == 1 else k}" for k, v in counts.items()))
    if with_tokens:
        print("Demo people (tokens valid %d min):" % (settings.token_ttl_seconds // 60))
        for person, token in await _tokens(settings, engine, demo.DEMO_PEOPLE):
            print(f"  {person.role:<10} {person.name:<16} {person.email}\n    {token}")
        return
    found = await _people(engine, demo.DEMO_PEOPLE)
    print("Demo people (pick one in the web page, or print a token: python -m chat token EMAIL):")
    for person in (found[email] for email in demo.DEMO_PEOPLE if email in found):
        print(f"  {person.role:<10} {person.name:<16} {person.email}")
    if not found:
        print("  (none in this directory: the web page lists everyone in it)")


class CannotListen(Exception):
    """The address to serve cannot be bound; the text says why and what to change."""


def _bind(host: str, port: int) -> socket.socket:
    """:func:`_listening_socket`, or CannotListen in one line naming the address
    and the setting to change (checked before anything else is done)."""
    where = f"{host}:{port}"
    try:
        return _listening_socket(host, port)
    except socket.gaierror:
        raise CannotListen(f"cannot listen on {where}: unknown host name; choose another with --host "
                           f"(or HOST)") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            reason = (f"port {port} is already in use (another server?); choose another with --port N "
                      f"(or PORT=N), or --port 0 (PORT=0) to let the system pick a free one")
        elif exc.errno == errno.EACCES:
            reason = ("permission denied (ports below 1024 need privileges); choose another with --port N "
                      "(or PORT=N)")
        elif exc.errno == errno.EADDRNOTAVAIL:
            reason = "this machine has no such address; choose another with --host (or HOST)"
        else:
            reason = (exc.strerror or str(exc)).lower()
        raise CannotListen(f"cannot listen on {where}: {reason}") from None


def _browser_host(host: str) -> str:
    """Where a browser on this machine reaches a server bound to ``host``."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


async def _when_answering(host: str, port: int, line: str, timeout: float = 120.0) -> None:
    """Print ``line`` once the server answers ``/healthz`` (after uvicorn's own
    start-up lines, whichever process serves): the last thing a new user reads."""
    connect_host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            reader, writer = await asyncio.open_connection(connect_host, port)
            try:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                status = await reader.readline()
            finally:
                writer.close()
            if status.split(b" ")[1:2] == [b"200"]:
                print(line, flush=True)
                return
        except OSError:
            pass
        await asyncio.sleep(0.2)


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets it knows are TCP,
    # and without it a reply written right after an event waits for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


# The cyclic garbage collector walks every tracked object; with thousands of
# connections (hundreds of objects each) a full pass costs tens of milliseconds
# and the default thresholds (700 allocations) start one very often — the
# benchmark profile showed a third of the CPU there.  The hub creates few
# reference cycles (reference counting frees almost everything), so full
# passes are rare (at most every 10,000 × 10 × 5,000 allocations, and only when
# a quarter of the old objects are new), and the objects that live as long as
# the process are kept out of it.  The younger generations are collected
# often, in short pauses: a pause walks what is alive and was allocated since
# the last one.  Measured under conversation traffic on the benchmark machine
# (a gc.callbacks timer, now the metric chat_gc_pause_seconds): the youngest
# every 100,000 allocations paused 46–92 ms, every 10,000 under 30 ms; the
# middle one every 50 of those paused up to 215 ms (10,000 idle connections
# open), every 10 up to 107 ms.
GC_THRESHOLDS = (10_000, 10, 5_000)


def _tune_gc() -> None:
    gc.collect()
    gc.freeze()  # start-up objects (modules, app, engine) are never collected anyway
    gc.set_threshold(*GC_THRESHOLDS)


async def _run_server(settings: Settings, sock: socket.socket) -> None:
    """One hub process serving ``sock`` until told to stop."""
    import uvicorn

    from chat.web import HubServer, create_app

    app = create_app(settings, migrate=False)
    config = uvicorn.Config(
        app,
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        ws_max_size=settings.hard_frame_bytes,
        ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_timeout,
        ws_per_message_deflate=False,  # compression would cost CPU once per recipient
        lifespan="on",
        proxy_headers=True,
    )
    server = HubServer(config)
    _tune_gc()
    await server.serve(sockets=[sock])


async def serve(settings: Settings, with_demo: bool, workers: int = 1) -> None:
    """Bind (a busy port stops here, before anything is written), migrate, then
    serve in this process — or in ``workers`` child processes that share the
    listening socket (the kernel spreads connections between them) and Redis for
    fan-out.  A worker that dies is started again."""
    sock = _bind(settings.host, settings.port)
    try:
        host, port = sock.getsockname()[:2]
        settings = settings.with_(port=port)  # --port 0: the allowed origins follow the port chosen
        engine = await _prepare(settings)
        print("database ready", flush=True)
        if with_demo:
            await load_demo(settings, engine, with_tokens=False)
        await engine.dispose()
    except BaseException:
        sock.close()
        raise
    print(f"listening on http://{host}:{port}", flush=True)
    ready = None
    if with_demo:
        ready = asyncio.ensure_future(_when_answering(
            host, port, f"open http://{_browser_host(host)}:{port}/ in a browser and pick a person"))
    try:
        if workers == 1:
            await _run_server(settings, sock)
        else:
            await _supervise(settings, sock, workers)
    finally:
        if ready is not None:
            ready.cancel()


async def _supervise(settings: Settings, sock: socket.socket, workers: int) -> None:
    import signal
    import subprocess

    # The workers read the settings this process decided (--demo, --host, the port chosen, the secret).
    env = {**os.environ, variable_of("demo").name: "1" if settings.demo else "0",
           variable_of("secret_key").name: settings.secret_key, variable_of("host").name: settings.host,
           variable_of("port").name: str(sock.getsockname()[1])}
    command = [sys.executable, "-m", "chat", WORKER, "--fd", str(sock.fileno())]
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)

    def start() -> subprocess.Popen:
        return subprocess.Popen(command, pass_fds=[sock.fileno()], env=env)

    children = [start() for _ in range(workers)]
    log.info("started %d workers: %s", workers, [c.pid for c in children])
    while not stopping.is_set():
        try:
            await asyncio.wait_for(stopping.wait(), 1.0)
        except asyncio.TimeoutError:
            pass
        for i, child in enumerate(children):
            if child.poll() is not None and not stopping.is_set():
                log.warning("worker %d exited with %s; starting a new one", child.pid, child.returncode)
                children[i] = start()
    for child in children:
        child.terminate()
    for child in children:
        try:
            await asyncio.to_thread(child.wait, 15)
        except subprocess.TimeoutExpired:
            child.kill()


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (exit status 2): what was wrong, and where the help is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _argument(parse):
    """An argparse type from a configuration parser: the same rule in the same words."""

    def convert(raw: str):
        try:
            return parse(raw)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc}, got {raw!r}") from None

    return convert


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m chat", description="The school–family messaging hub")
    # The metavar lists the commands for people; `worker` (below) is not one of them.
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    p_serve = sub.add_parser("serve", help="run the server (configuration from the environment)")
    p_serve.add_argument("--demo", action="store_true",
                         help="load the demo school if the directory is empty and turn on its person picker")
    p_serve.add_argument("--port", type=_argument(parse_port), help="overrides PORT (0 picks a free port)")
    p_serve.add_argument("--host", type=_argument(parse_host), help="overrides HOST")
    p_serve.add_argument("--workers", type=_argument(parse_workers),
                         help=f"worker processes sharing the port, 1 to {MAX_WORKERS} (overrides WEB_CONCURRENCY; "
                              "needs REDIS_URL when above 1)")
    sub.add_parser("demo", help="load the demo school (if the directory is empty) and print tokens")
    p_token = sub.add_parser("token", help="mint an access token for a directory person")
    p_token.add_argument("email")
    p_dir = sub.add_parser("directory", help="directory commands")
    p_dir_sub = p_dir.add_subparsers(dest="action", required=True)
    p_load = p_dir_sub.add_parser("load", help="check and load a directory JSON file (all or nothing)")
    p_load.add_argument("file", type=Path)
    p_nip = p_dir_sub.add_parser("nip", help="issue a NIP for a student (R20), printed once")
    p_nip.add_argument("organisation", help="the organisation's code")
    p_nip.add_argument("fiche", help="the student's fiche number (7 digits)")
    p_nip.add_argument("--days", type=float, default=NIP_DAYS, help=f"validity in days (default {NIP_DAYS})")
    p_int = sub.add_parser("integration", help="school-system keys for the publishing API (R12)")
    p_int_sub = p_int.add_subparsers(dest="action", required=True)
    p_int_create = p_int_sub.add_parser("create", help="create a key (printed once)")
    p_int_create.add_argument("school", help="school code, e.g. ERABLES")
    p_int_create.add_argument("name", help="who uses it, e.g. 'Autobus Laval'")
    p_int_create.add_argument("--kinds", required=True, help="comma-separated: transport,observation,absence")
    p_int_revoke = p_int_sub.add_parser("revoke", help="revoke a key by id")
    p_int_revoke.add_argument("id", type=int)
    p_int_sub.add_parser("list", help="list keys (never the keys themselves)")
    p_db = sub.add_parser("db", help="database commands")
    p_db.add_argument("action", choices=["upgrade"])
    return parser


# `serve --workers N` starts each worker process as `python -m chat worker --fd N`
# (the listening socket it inherits).  Not a command for people: kept out of the
# parser, so that --help and its errors never list it.
WORKER = "worker"


def _worker_arguments(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog=f"python -m chat {WORKER}")
    parser.add_argument("--fd", type=int, required=True)
    return parser.parse_args(argv, namespace=argparse.Namespace(command=WORKER))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _worker_arguments(argv[1:]) if argv[:1] == [WORKER] else _parser().parse_args(argv)

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(describe(exc), file=sys.stderr)
        return 2
    if args.command == "serve":
        changes = {k: v for k, v in (("port", args.port), ("host", args.host)) if v is not None}
        if args.demo:
            changes["demo"] = True
        settings = settings.with_(**changes)
        workers = args.workers if args.workers is not None else settings.workers
        if workers > 1 and not settings.redis_url:
            print(f"configuration error: {workers} worker processes (--workers or WEB_CONCURRENCY) need REDIS_URL "
                  "to share messages: set REDIS_URL=redis://HOST:6379/0, or run one worker", file=sys.stderr)
            return 2
    _configure_logging(settings)

    async def run() -> int:
        if args.command == "serve":
            await serve(settings, args.demo, workers)
            return 0
        if args.command == WORKER:
            await _run_server(settings, socket.socket(fileno=args.fd))
            return 0
        engine = await _prepare(settings)
        try:
            if args.command == "demo":
                await load_demo(settings, engine)
            elif args.command == "token":
                for _, token in await _tokens(settings, engine, [args.email]):
                    print(token)
            elif args.command == "directory" and args.action == "nip":
                nip = await App(settings, engine).children.issue_nip(args.organisation, args.fiche, args.days)
                print(f"NIP for {nip['student']} (shown once; single use, valid until {nip['expires']}):\n"
                      f"{nip['nip']}")
            elif args.command == "directory":
                counts = await directory.load(engine, directory.read_file(args.file))
                print("loaded: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
            elif args.command == "integration":
                announcements = App(settings, engine).announcements
                if args.action == "create":
                    key_id, key = await announcements.create_key(
                        args.school, args.name, [k.strip() for k in args.kinds.split(",") if k.strip()])
                    print(f"integration key {key_id} (shown once, keep it secret):\n{key}")
                elif args.action == "revoke":
                    if not await announcements.revoke_key(args.id):
                        print(f"error: no active integration key {args.id}", file=sys.stderr)
                        return 1
                    print(f"integration key {args.id} revoked")
                else:
                    for key in await announcements.list_keys():
                        state = "revoked" if key["revoked"] else "active"
                        print(f"{key['id']:>4}  {key['school']:<12} {state:<8} {','.join(key['kinds']):<30} {key['name']}")
            elif args.command == "db":
                print("database schema is up to date")
        finally:
            await engine.dispose()
        return 0

    if args.command in ("serve", WORKER):
        try:
            import uvloop  # comes with uvicorn[standard]: a faster event loop for the server

            uvloop.install()
        except ImportError:  # pragma: no cover - plain asyncio works too
            pass
    try:
        return asyncio.run(run())
    except ChatError as exc:
        print(f"error: {exc.code}: {error_text(exc.code, 'en', exc.fields)}", file=sys.stderr)
        return 1
    except CannotListen as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
