"""Bench set-up: install what the peers and the profiler need, and describe the machine.

Installs only what is missing, through the ordinary clients: ``pip`` for
python-socketio (the Socket.IO peer; its Redis manager uses the ``redis``
package the hub already depends on), websockets (the plain peer) and py-spy
(profiles); ``npm ci`` in bench/node/ for the Node.js peer's ``ws`` (pinned by
the committed package-lock.json; node_modules is git-ignored); and the hub
itself (``pip install -e .``) when ``import chat`` fails.
"""

from __future__ import annotations

import datetime
import importlib
import importlib.metadata
import os
import platform
import resource
import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
REPO = BENCH.parent
NODE_DIR = BENCH / "node"

PIP_NEEDS = {  # module to import → requirement to install
    "socketio": "python-socketio[asyncio_client]>=5.11",
    "websockets": "websockets>=13",
    "uvloop": "uvloop>=0.19",
}


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args], check=True,
                   timeout=900)


def install(log) -> None:
    try:
        importlib.import_module("chat")
    except ImportError:
        log("installing the hub (pip install -e .)")
        _pip("-e", str(REPO))
    missing = []
    for module, requirement in PIP_NEEDS.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(requirement)
    if shutil.which("py-spy") is None:
        missing.append("py-spy")
    if missing:
        log(f"pip install {' '.join(missing)}")
        _pip(*missing)
    if shutil.which("node") is None:
        raise SystemExit("node is not installed: the Node.js ws peer needs Node 18 or newer")
    if not (NODE_DIR / "node_modules" / "ws").exists():
        log("npm ci (bench/node: ws)")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=NODE_DIR, check=True, timeout=600)


def raise_nofile(needed: int) -> int:
    """Raise this process's open-file limit (inherited by servers and load generators)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < needed:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} < {needed}: raise it (ulimit -Hn) to run the full benchmark")
    return hard


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_machine() -> dict:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    ws_version = ""
    try:
        import json

        ws_version = json.loads((NODE_DIR / "node_modules" / "ws" / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        pass
    redis_version = ""
    info = _run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "INFO", "server"])
    for line in info.splitlines():
        if line.startswith("redis_version:"):
            redis_version = line.split(":", 1)[1].strip()
    postgres = _run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", "SHOW server_version"])
    packages = {name: _version(name) for name in (
        "school-chat-hub", "starlette", "uvicorn", "websockets", "uvloop", "httptools", "sqlalchemy", "sqlmodel",
        "aiosqlite", "asyncpg", "redis", "hiredis", "orjson", "pyjwt", "python-socketio", "python-engineio", "py-spy")}
    git = _run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = bool(_run(["git", "-C", str(REPO), "status", "--porcelain", "--", "chat"]))
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "nproc": os.cpu_count(), "cpu_model": cpu_model, "memory_gib": round(mem_kib / 1024 / 1024, 1),
            "kernel": platform.release(), "os": platform.platform(),
            "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
            "somaxconn": _read("/proc/sys/net/core/somaxconn"),
            "ip_local_port_range": _read("/proc/sys/net/ipv4/ip_local_port_range"),
        },
        "versions": {
            "python": platform.python_version(), "node": _run(["node", "--version"]), "ws": ws_version,
            "redis": redis_version, "postgres": postgres, "sqlite": _sqlite_version(),
            "hub_commit": git + (" (chat/ has uncommitted changes)" if dirty else ""),
            "packages": packages,
        },
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip().replace("\t", " ")
    except OSError:
        return ""


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version
