"""A/B of two copies of the hub on the fan-out benchmark, side by side.

    python bench/ab_fanout.py --a /tmp/hub-before --b .            # N = 1,000 / 5,000 / 10,000
    python bench/ab_fanout.py --a /tmp/hub-before --b . --quick    # N = 100 / 250 / 500

``--a`` and ``--b`` are two source trees of the hub (a checkout or ``git
archive`` of each commit to compare).  Each runs as its own server (SQLite,
in-process broker, one worker, its own copy of one database) with its own N
connected families, and their announcement rounds alternate as in
``run.py``'s fan-out (``scenarios/fanout.run_side_by_side``: each leads in
turn), so that a change in the machine's speed during the run falls on both
alike.  Prints each tier's figures and the ratio B ÷ A; writes them as JSON
with ``--json``.  Nothing is installed; the load generators are run.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:7.1f}s] {message}", flush=True)


async def main(args: argparse.Namespace) -> int:
    from harness import bulkload, fixtures, servers, setup
    from loadgen.control import Workers
    from scenarios import fanout
    from scenarios.common import Context

    tiers = [100, 250, 500] if args.quick else [1000, 5000, 10000]
    rounds = dict(zip(tiers, [2, 2, 2] if args.quick else [8, 5, 4]))
    trees = {"A": Path(args.a).resolve(), "B": Path(args.b).resolve()}
    for name, tree in trees.items():
        if not (tree / "chat" / "__init__.py").exists():
            raise SystemExit(f"--{name.lower()} {tree}: no chat/ package there")
    setup.raise_nofile(4096 if args.quick else 16384)
    tmp = Path(tempfile.mkdtemp(prefix="chat-ab-"))
    secret = secrets.token_urlsafe(48)
    base_env = {**os.environ, "SECRET_KEY": secret, "LOG_LEVEL": "warning", "HOST": "127.0.0.1",
                "ATTACHMENTS_DIR": str(tmp / "attachments"), "CHAT_SECRET_FILE": str(tmp / "secret"),
                "PING_INTERVAL_SECONDS": "600"}  # as run.py: no burst of keepalive pings inside a round
    base_env.pop("REDIS_URL", None)
    base_env.pop("DATABASE_URL", None)
    directory = fixtures.build_directory(tiers, 0, 0)
    dir_path = tmp / "directory.json"
    fixtures.write_directory(dir_path, directory)
    loaded = tmp / "loaded.db"
    env_a = {**base_env, "PYTHONPATH": str(trees["A"])}
    log(f"loading {len(directory['guardians'])} families into SQLite ({tmp})")
    await bulkload.load(dir_path, directory, f"sqlite:///{loaded}", env_a, tmp)
    people = await fixtures.read_people(f"sqlite:///{loaded}")
    emails = list(people.person_by_email)
    tokens = await fixtures.mint_tokens(secret, f"sqlite:///{loaded}", people, emails)
    direction = people.id(fixtures.DIRECTION)
    fan_ids = [people.id(fixtures.fan_guardian(j)) for j in range(max(tiers))]
    schools = {n: people.school_by_code[fixtures.fan_school(n)] for n in tiers}
    hubs, targets = [], []
    workers = Workers(2 if args.quick else 4)
    try:
        for name, tree in trees.items():
            db = tmp / f"hub-{name}.db"
            shutil.copyfile(loaded, db)
            env = {**base_env, "PYTHONPATH": str(tree), "DATABASE_URL": f"sqlite:///{db}"}
            hub = servers.start_hub(f"hub-{name}", env, tmp)
            hubs.append(hub)
            log(f"hub {name}: {tree} on port {hub.port}")
            # Load-generator keys must differ between the two targets; the tokens say who connects.
            keys = [f"{name}:{pid}" for pid in fan_ids]
            target_tokens = {f"{name}:{pid}": tokens[pid] for pid in fan_ids}
            publisher = fanout.Publisher("hub", hub.port, f"{name}:publisher", tokens[direction])
            await publisher.open()
            targets.append(fanout.Target(name, "hub", hub, keys, tokens=target_tokens, publisher=publisher,
                                         school_for_tier=lambda n: schools[n]))
        ctx = Context(quick=args.quick, tmp=tmp, workers=workers, people=people, secret=secret, tokens=tokens,
                      log=log, profiles_dir=tmp, profile=False, results={"failures": []})
        results = await fanout.run_side_by_side(ctx, targets, tiers, {t.name: rounds for t in targets})
        for target in targets:
            await target.publisher.close()
    finally:
        try:
            await workers.all("close")
            await workers.shutdown()
        finally:
            for hub in hubs:
                hub.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    summary = {"trees": {k: str(v) for k, v in trees.items()}, "tiers": {}}
    for n in tiers:
        row = {}
        for name in trees:
            figure = results[name]["tiers"].get(str(n), {}).get("figure", {})
            row[name] = {k: figure.get(k) for k in ("cpu_us_per_frame", "deliveries_per_s", "p50_ms", "p99_ms",
                                                     "completion_ms", "missing", "rounds")}
        a, b = row["A"]["cpu_us_per_frame"], row["B"]["cpu_us_per_frame"]
        row["cpu_ratio_b_over_a"] = round(b / a, 3) if a and b else None
        summary["tiers"][str(n)] = row
        log(f"N={n}: CPU/frame A {a} µs, B {b} µs (B ÷ A {row['cpu_ratio_b_over_a']}); "
            f"p99 A {row['A']['p99_ms']} ms, B {row['B']['p99_ms']} ms; "
            f"missing A {row['A']['missing']}, B {row['B']['missing']}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return 1 if ctx.results["failures"] else 0


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", required=True, help="source tree of hub A (the baseline)")
    parser.add_argument("--b", required=True, help="source tree of hub B (the change)")
    parser.add_argument("--quick", action="store_true", help="N = 100 / 250 / 500, two rounds each")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    try:
        import uvloop

        return uvloop.run(main(args))
    except ImportError:
        return asyncio.run(main(args))


if __name__ == "__main__":
    sys.exit(cli())
