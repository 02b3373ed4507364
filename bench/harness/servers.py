"""Starting and stopping the servers under test, each a subprocess on an ephemeral port.

Every server prints one ``listening on …://HOST:PORT`` line once it accepts
connections (the hub's ``python -m chat serve --port 0`` does; the peers in
bench/peers/ do the same), which is how the port is learnt.  Servers are
stopped by their own process id: SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.procstat import Group, children

LISTENING = re.compile(r"listening on \w+://([^:\s]+):(\d+)")
BENCH = Path(__file__).resolve().parent.parent
REPO = BENCH.parent


@dataclass
class Server:
    name: str
    processes: list[subprocess.Popen]
    ports: list[int]
    logs: list[Path] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.ports[0]

    def group(self) -> Group:
        group = Group([p.pid for p in self.processes])
        group.refresh()
        return group

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.processes)

    def stop(self, grace: float = 10.0) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.processes:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)

    def log_tail(self, chars: int = 3000) -> str:
        out = []
        for log in self.logs:
            try:
                out.append(log.read_text(errors="replace")[-chars:])
            except FileNotFoundError:
                pass
        return "\n".join(out)


def _spawn(name: str, argv: list[str], env: dict[str, str], cwd: Path, log: Path, timeout: float = 120.0) -> tuple[subprocess.Popen, int]:
    """Start one process and wait for its ``listening on`` line (stdout)."""
    errors = log.open("wb")
    process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL)
    errors.close()
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buffered = b""
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}: {log.read_text(errors='replace')[-3000:]}")
            if not selector.select(timeout=0.5):
                continue
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                continue
            buffered += chunk
            match = LISTENING.search(buffered.decode(errors="replace"))
            if match:
                return process, int(match.group(2))
        raise RuntimeError(f"{name} did not print 'listening on' within {timeout:.0f}s")
    except BaseException:
        if process.poll() is None:
            process.kill()
        raise
    finally:
        selector.close()


def _drain_stdout(process: subprocess.Popen) -> None:
    """Keep reading a server's stdout in the background so it never blocks on a full pipe."""
    import threading

    def run() -> None:
        try:
            while process.stdout.read(65536):
                pass
        except (ValueError, OSError):
            pass

    threading.Thread(target=run, daemon=True).start()


def supports_workers_option(env: dict[str, str], workdir: Path) -> bool:
    """Whether this hub's ``serve`` has ``--workers N`` (processes sharing one port)."""
    result = subprocess.run([sys.executable, "-m", "chat", "serve", "--help"], env=env, cwd=workdir,
                            capture_output=True, text=True, timeout=60)
    return "--workers" in result.stdout


def start_hub(name: str, env: dict[str, str], workdir: Path, workers: int = 1) -> Server:
    """``python -m chat serve --port 0``; with ``workers`` > 1, ``serve --workers N`` (one port,
    worker processes under a supervisor) where the hub has it, else N separate processes
    on their own ports sharing Redis and the database."""
    if workers > 1 and supports_workers_option(env, workdir):
        log = workdir / f"{name}.log"
        process, port = _spawn(name, [sys.executable, "-m", "chat", "serve", "--port", "0", "--workers", str(workers)],
                               env, workdir, log)
        _drain_stdout(process)
        server = Server(name, [process], [port], [log])
        deadline = time.monotonic() + 60
        while len(children(process.pid)) < workers and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3.0)  # the workers start their applications (migrations are done by the supervisor)
        return server
    processes, ports, logs = [], [], []
    try:
        for i in range(workers):
            log = workdir / f"{name}-w{i}.log"
            process, port = _spawn(f"{name} worker {i}", [sys.executable, "-m", "chat", "serve", "--port", "0"],
                                   env, workdir, log)
            _drain_stdout(process)
            processes.append(process)
            ports.append(port)
            logs.append(log)
    except BaseException:
        Server(name, processes, ports, logs).stop()
        raise
    return Server(name, processes, ports, logs)


def start_peer(name: str, argv: list[str], env: dict[str, str], workdir: Path) -> Server:
    log = workdir / f"{name}.log"
    process, port = _spawn(name, argv, env, workdir, log)
    _drain_stdout(process)
    return Server(name, [process], [port], [log])


# -- PostgreSQL: a dedicated database per run --------------------------------------------------
def psql(sql: str, database: str = "postgres") -> str:
    result = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1",
                             "-tAc", sql], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"psql failed: {result.stderr.strip()}")
    return result.stdout.strip()


def create_database(name: str) -> str:
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    psql(f'CREATE DATABASE "{name}"')
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def drop_database(name: str) -> None:
    try:
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception:  # noqa: BLE001 - best effort at the end of a run
        pass
