"""The hub's benchmark suite: one command runs every scenario and writes the report.

    python bench/run.py            # full run (~20 minutes on 2 cores): N = 1,000 / 5,000 / 10,000
    python bench/run.py --quick    # every scenario at small N (~3 minutes), for development

Writes ``bench/REPORT.md`` and ``bench/report.json`` (``--out DIR`` elsewhere),
and the raw profiles under ``bench/profiles/``.  Needs PostgreSQL on
127.0.0.1:5432 (user postgres, trust auth), Redis on 127.0.0.1:6379, Node 18+;
installs the Python and npm packages it needs (bench/harness/setup.py).

Servers run as subprocesses on ephemeral ports, each with its own temporary
SQLite file or a dedicated PostgreSQL database (created and dropped here) and
its own Redis channel prefix.  Clients run in separate load-generator
processes (bench/loadgen/).  What each scenario measures is in its module's
docstring (bench/scenarios/); the report repeats it in short.
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
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
# The keepalive interval of every server under test (see base_env).
PING_INTERVAL_SECONDS = 600
sys.path.insert(0, str(BENCH))

from harness import setup  # noqa: E402  (installs before the rest is imported)

FULL = {
    "tiers": [1000, 5000, 10000],
    "rounds": {1000: 8, 5000: 5, 10000: 4},
    "peer_rounds": {1000: 8, 5000: 5, 10000: 4},
    "conv_families": 1000, "conv_staff": 150,
    "loadgen_processes": 4,
    "persistence": {"duration": 15.0, "warmup": 4.0, "drain": 10.0, "senders": 400, "profile_s": 8.0},
    "ladder": {"fractions": [0.1, 0.25, 0.35, 0.5, 0.8], "duration": 12.0, "warmup": 3.0, "drain": 8.0,
               "profile_fraction": 0.25, "profile_s": 8.0},
    "target_deliveries_per_s": 40000.0,
    "overload_step": {"duration": 6.0, "warmup": 2.0, "drain": 10.0},
    "workers": {"duration": 15.0, "warmup": 3.0, "drain": 10.0, "fanout_tier": 5000, "fanout_rounds": 4},
    "uploads": {"sequential": 3, "parallel": 10},
}
QUICK = {
    "tiers": [100, 250, 500],
    "rounds": {100: 2, 250: 2, 500: 2},
    "peer_rounds": {100: 2, 250: 2, 500: 2},
    "conv_families": 100, "conv_staff": 20,
    "loadgen_processes": 2,
    "persistence": {"duration": 4.0, "warmup": 1.0, "drain": 5.0, "senders": 100, "profile_s": 3.0},
    "ladder": {"fractions": [0.5], "duration": 4.0, "warmup": 1.0, "drain": 4.0, "profile_fraction": 0.5,
               "profile_s": 3.0},
    "target_deliveries_per_s": 40000.0,
    "overload_step": None,
    "workers": {"duration": 4.0, "warmup": 1.0, "drain": 5.0, "fanout_tier": 250, "fanout_rounds": 2},
    "uploads": {"sequential": 1, "parallel": 3},
}

STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:7.1f}s] {message}", flush=True)


async def main(args: argparse.Namespace) -> int:
    from harness import bulkload, fixtures, servers
    from harness.report import write_report
    from loadgen.control import Workers
    from scenarios import collective, conversations, fanout, uploads
    from scenarios.common import Context

    plan = QUICK if args.quick else FULL
    tiers = plan["tiers"]
    out_dir = Path(args.out).resolve()
    profiles_dir = out_dir / "profiles"
    profiles_dir.mkdir(parents=True, exist_ok=True)
    for old in profiles_dir.glob("*.txt"):
        old.unlink()
    tmp = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    run_id = f"{os.getpid()}{secrets.token_hex(2)}"
    secret = secrets.token_urlsafe(48)
    pg_name = f"chat_bench_{run_id}"
    results: dict = {"mode": "quick" if args.quick else "full", "plan": {k: v for k, v in plan.items()},
                     **setup.describe_machine(), "scenarios": {}, "failures": []}
    results["plan"]["rounds"] = {str(k): v for k, v in plan["rounds"].items()}
    results["plan"]["peer_rounds"] = {str(k): v for k, v in plan["peer_rounds"].items()}
    base_env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                "SECRET_KEY": secret, "LOG_LEVEL": os.environ.get("BENCH_HUB_LOG_LEVEL", "warning"), "HOST": "127.0.0.1",
                "ATTACHMENTS_DIR": str(tmp / "attachments"), "CHAT_SECRET_FILE": str(tmp / "secret"),
                "REDIS_PREFIX": f"bench{run_id}",
                # Keepalive pings every 10 minutes, in the hub and in the peers: N connections opened
                # together ping together, and a burst of 10,000 pings falling into a round (or into
                # the idle measurement subtracted from it) skewed one server's figure, not the others'.
                "PING_INTERVAL_SECONDS": str(PING_INTERVAL_SECONDS)}
    base_env.pop("REDIS_URL", None)
    base_env.pop("DATABASE_URL", None)
    log(f"mode {results['mode']}; scratch directory {tmp}")

    # -- the directory -------------------------------------------------------------------------------
    directory = fixtures.build_directory(tiers, plan["conv_families"], plan["conv_staff"])
    dir_path = tmp / "directory.json"
    fixtures.write_directory(dir_path, directory)
    log(f"directory: {len(directory['guardians'])} guardians, {len(directory['students'])} students, "
        f"{len(directory['staff'])} staff -> {dir_path}")
    sqlite_url = f"sqlite:///{tmp / 'hub.db'}"
    loads = {"sqlite": await bulkload.load(dir_path, directory, sqlite_url, base_env, tmp)}
    log(f"loaded into SQLite: {loads['sqlite']}")
    pg_url = servers.create_database(pg_name)
    workers: Workers | None = None
    try:
        loads["postgresql"] = await bulkload.load(dir_path, directory, pg_url, base_env, tmp)
        log(f"loaded into PostgreSQL {pg_name}: {loads['postgresql']}")
        small = fixtures.build_directory([], 200, 5)
        loads["loader_speed"] = bulkload.loader_speed(small, base_env, tmp)
        log(f"`python -m chat directory load` speed: {loads['loader_speed']}")
        results["directory"] = loads

        people = await fixtures.read_people(sqlite_url)
        people_pg = await fixtures.read_people(pg_url)
        assert set(people.person_by_email) == set(people_pg.person_by_email)
        fan_keys = [people.id(fixtures.fan_guardian(j)) for j in range(max(tiers))]
        emails = list(people.person_by_email)
        tokens = await fixtures.mint_tokens(secret, sqlite_url, people, emails)
        tokens_pg = await fixtures.mint_tokens(secret, pg_url, people_pg, emails)
        direction = people.id(fixtures.DIRECTION)
        workers = Workers(plan["loadgen_processes"])
        results["loadgen"] = {"processes": len(workers)}
        ctx = Context(quick=args.quick, tmp=tmp, workers=workers, people=people, secret=secret, tokens=tokens,
                      log=log, profiles_dir=profiles_dir, profile=not args.no_profile, results=results)
        scenarios = results["scenarios"]
        only = set(args.only.split(",")) if args.only else None

        def wanted(name: str) -> bool:
            return only is None or name in only

        # -- peers: the same fan-out with their own minimal protocol ------------------------------------
        peers = [
            ("websockets", "plain", [sys.executable, str(BENCH / "peers" / "websockets_broadcast.py")], {}),
            ("node-ws", "plain", ["node", str(BENCH / "peers" / "node_ws_broadcast.js")],
             {"NODE_PATH": str(BENCH / "node" / "node_modules")}),
            ("socketio-redis", "socketio", [sys.executable, str(BENCH / "peers" / "socketio_redis.py")],
             {"REDIS_URL": "redis://127.0.0.1:6379/0", "SIO_CHANNEL": f"bench{run_id}-sio"}),
        ]
        peer_servers: list = []

        async def start_peers() -> list:
            """The peers' servers and fan-out targets (clients keyed ``name:j``, apart from the hub's person ids)."""
            targets = []
            for name, dialect, argv, extra_env in peers:
                log(f"peer {name}: starting")
                server = None
                try:
                    server = servers.start_peer(name, argv, {**base_env, **extra_env}, tmp)
                    peer_servers.append(server)
                    publisher = fanout.Publisher(dialect, server.port, key=f"{name}:publisher")
                    await publisher.open()
                    targets.append(fanout.Target(name, dialect, server, [f"{name}:{j}" for j in range(max(tiers))],
                                                 publisher=publisher))
                except Exception as exc:  # a peer that cannot start is reported, not hidden
                    scenarios.setdefault("fanout", {}).setdefault(name, {})["error"] = fanout.failed(
                        ctx, name, exc, server)
            return targets

        async def stop_peers(targets: list) -> None:
            try:
                for target in targets:
                    await target.publisher.close()
                await workers.all("close", per_worker=[{"keys": [k for t in targets for k, w in t.extra.get(
                    "worker_of", {}).items() if w == i]} for i in range(len(workers))])
            finally:
                for server in peer_servers:
                    server.stop()
                peer_servers.clear()

        # -- peers alone, when the hub's fan-out is not run (otherwise they run beside it, below) ---------
        if wanted("peers") and not wanted("fanout"):
            peer_targets = await start_peers()
            try:
                scenarios.setdefault("fanout", {}).update(await fanout.run_side_by_side(
                    ctx, peer_targets, tiers, {t.name: plan["peer_rounds"] for t in peer_targets}))
            finally:
                await stop_peers(peer_targets)

        # -- hub A: SQLite + in-process broker, one worker -----------------------------------------------
        env_a = {**base_env, "DATABASE_URL": sqlite_url}
        if any(wanted(s) for s in ("fanout", "collective", "conversations", "persistence", "uploads")):
            log("hub A (SQLite, in-process broker, 1 worker)")
            hub = servers.start_hub("hub-sqlite", env_a, tmp)
            try:
                publisher = fanout.Publisher("hub", hub.port, direction, tokens[direction])
                await publisher.open()
                convs = conversations.ConversationSet(ctx, hub, people, plan["conv_families"])
                # Warm-up and the conversation people first: the per-client memory is then the families'.
                if wanted("conversations") or wanted("persistence"):
                    scenarios["conversation_setup_sqlite"] = await convs.open(profile_name="connect-resume-sqlite")
                if wanted("fanout") or wanted("collective"):
                    schools = {n: people.school_by_code[fixtures.fan_school(n)] for n in tiers}
                    target = fanout.Target("hub", "hub", hub, fan_keys, tokens=tokens, publisher=publisher,
                                           school_for_tier=lambda n: schools[n])
                    # The peers run beside the hub, round for round (fanout.run_side_by_side).
                    peer_targets = await start_peers() if wanted("peers") else []
                    try:
                        scenarios.setdefault("fanout", {}).update(await fanout.run_side_by_side(
                            ctx, [target, *peer_targets], tiers,
                            {"hub": plan["rounds"]} | {t.name: plan["peer_rounds"] for t in peer_targets},
                            {"hub": tiers[-1]}))
                    finally:
                        await stop_peers(peer_targets)
                    if wanted("collective"):
                        n = tiers[0]
                        students = [s for _g, s in people.families(fixtures.fan_school(n))]
                        scenarios["collective"] = await collective.run(
                            ctx, hub, publisher, students, target.extra["worker_of"], fan_keys[:n])
                    await workers.all("close", per_worker=[{"keys": [k for k, w in target.extra["worker_of"].items()
                                                                     if w == i]} for i in range(len(workers))])
                if wanted("persistence") or wanted("conversations"):
                    p = plan["persistence"]
                    log("persistence on SQLite (closed loop)")
                    scenarios.setdefault("persistence", {})["sqlite"] = await conversations.traffic(
                        ctx, convs, duration=p["duration"], warmup=p["warmup"], drain=p["drain"],
                        closed_loop_senders=p["senders"], label="persistence SQLite",
                        profile_name="persistence-sqlite", profile_seconds=p["profile_s"])
                if wanted("conversations"):
                    scenarios["conversations"] = await ladder(
                        ctx, plan, convs, scenarios["persistence"]["sqlite"]["deliveries_per_s"], "conversations-light",
                        scenarios)
                if wanted("uploads"):
                    log("uploads (20 MB PDF)")
                    up = plan["uploads"]
                    uploaders = [tokens[people.id(fixtures.fan_guardian(j))] for j in range(up["parallel"] + 1)]
                    scenarios["uploads"] = await uploads.run(ctx, hub, uploaders, up["sequential"], up["parallel"])
                await publisher.close()
            except Exception as exc:
                log(f"hub A failed: {exc!r}")
                results["failures"].append({"scenario": "hub-sqlite", "error": traceback.format_exc()[-3000:],
                                            "server_log": hub.log_tail()})
            finally:
                try:
                    await workers.all("close")
                finally:
                    hub.stop()

        # -- hub B: PostgreSQL + in-process broker, one worker: persistence --------------------------------
        ctx.tokens = tokens_pg
        ctx.people = people_pg
        env_pg = {**base_env, "DATABASE_URL": pg_url}
        if wanted("persistence") or wanted("conversations"):
            log("hub B (PostgreSQL, in-process broker, 1 worker)")
            hub = servers.start_hub("hub-pg", env_pg, tmp)
            try:
                convs = conversations.ConversationSet(ctx, hub, people_pg, plan["conv_families"])
                scenarios["conversation_setup_postgresql"] = await convs.open()
                p = plan["persistence"]
                scenarios.setdefault("persistence", {})["postgresql"] = await conversations.traffic(
                    ctx, convs, duration=p["duration"], warmup=p["warmup"], drain=p["drain"],
                    closed_loop_senders=p["senders"], label="persistence PostgreSQL",
                    profile_name="persistence-postgresql", profile_seconds=p["profile_s"])
                if wanted("conversations"):
                    # The same ladder on PostgreSQL: no WAL to start over, so no pause of SQLite's syncs.
                    scenarios["conversations_postgresql"] = await ladder(
                        ctx, plan, convs, scenarios["persistence"]["postgresql"]["deliveries_per_s"], None, None)
            except Exception as exc:
                log(f"hub B failed: {exc!r}")
                results["failures"].append({"scenario": "hub-pg", "error": traceback.format_exc()[-3000:],
                                            "server_log": hub.log_tail()})
            finally:
                try:
                    await workers.all("close")
                finally:
                    hub.stop()

        # -- hub C: PostgreSQL + Redis, one worker then two: the same traffic --------------------------------
        if wanted("workers"):
            w = plan["workers"]
            fan_n = w["fanout_tier"]
            fan_school_id = people_pg.school_by_code[fixtures.fan_school(fan_n)]
            fan_keys_pg = [people_pg.id(fixtures.fan_guardian(j)) for j in range(fan_n)]
            for count in (1, 2):
                name = f"{count}-worker"
                log(f"hub C, {name} (PostgreSQL + Redis)")
                env_c = {**env_pg, "REDIS_URL": "redis://127.0.0.1:6379/0"}
                hub = servers.start_hub(f"hub-pg-redis-{count}w", env_c, tmp, workers=count)
                entry = scenarios.setdefault("workers", {}).setdefault(name, {})
                try:
                    convs = conversations.ConversationSet(ctx, hub, people_pg, plan["conv_families"])
                    entry["setup"] = await convs.open()
                    entry["conversations"] = await conversations.traffic(
                        ctx, convs, duration=w["duration"], warmup=w["warmup"], drain=w["drain"],
                        closed_loop_senders=plan["persistence"]["senders"], label=f"conversations, {name}")
                    await workers.all("close")
                    publisher = fanout.Publisher("hub", hub.ports[0], people_pg.id(fixtures.DIRECTION),
                                                 tokens_pg[people_pg.id(fixtures.DIRECTION)], fan_school_id)
                    await publisher.open()
                    target = fanout.Target(f"hub-{name}", "hub", hub, fan_keys_pg, tokens=tokens_pg,
                                           publisher=publisher)
                    entry["fanout"] = await fanout.run(ctx, target, [fan_n], {fan_n: w["fanout_rounds"]})
                    await publisher.close()
                except Exception as exc:
                    log(f"hub C {name} failed: {exc!r}")
                    results["failures"].append({"scenario": f"workers/{name}", "error": traceback.format_exc()[-3000:],
                                                "server_log": hub.log_tail()})
                finally:
                    try:
                        await workers.all("close")
                    finally:
                        hub.stop()
    finally:
        if workers is not None:
            await workers.shutdown()
        servers.drop_database(pg_name)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    results["duration_s"] = round(time.monotonic() - STARTED, 1)
    json_path, md_path = write_report(results, out_dir)
    log(f"wrote {md_path} and {json_path} in {results['duration_s']} s")
    return 1 if results["failures"] else 0


async def ladder(ctx, plan: dict, convs, capacity: float | None, profile_name: str | None,
                 scenarios: dict | None) -> dict:
    """Open-loop steps at fractions of the closed-loop ``capacity`` (deliveries/s),
    until one saturates; then, with ``scenarios`` to note a skip in, the issue's
    target rate when the capacity is at least half of it."""
    from scenarios import conversations  # (imported once setup has installed what it needs, as main does)

    capacity = capacity or 1000.0
    steps = []
    rungs = plan["ladder"]
    for fraction in rungs["fractions"]:
        rate = round(capacity * fraction, -1)
        step = await conversations.traffic(
            ctx, convs, duration=rungs["duration"], warmup=rungs["warmup"], drain=rungs["drain"],
            deliveries_per_s=rate, label=f"open loop {rate:.0f} deliveries/s ({fraction:.0%} of capacity)",
            # Where the CPU goes below capacity, where batches are small (the latency target's regime).
            profile_name=profile_name if fraction == rungs["profile_fraction"] else None,
            profile_seconds=rungs["profile_s"])
        step["fraction_of_capacity"] = fraction
        steps.append(step)
        if conversations.saturated(step):
            break
    over = plan["overload_step"] if scenarios is not None else None
    target_rate = plan["target_deliveries_per_s"]
    if over is not None and capacity < 0.5 * target_rate:
        ctx.log(f"  the {target_rate:.0f} deliveries/s step is not run: capacity is {capacity:.0f}/s, "
                f"it would queue {target_rate * over['duration'] / convs.mean_size():.0f} messages")
        scenarios["conversations_target_step_skipped"] = {
            "reason": "capacity below half the target", "capacity_deliveries_per_s": capacity}
    elif over is not None:
        step = await conversations.traffic(
            ctx, convs, duration=over["duration"], warmup=over["warmup"], drain=over["drain"],
            deliveries_per_s=target_rate, label=f"open loop {target_rate:.0f} deliveries/s (target)")
        step["fraction_of_capacity"] = round(target_rate / capacity, 2)
        steps.append(step)
    return {"capacity_deliveries_per_s": capacity, "steps": steps, "mean_conversation_size": round(convs.mean_size(), 2)}


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="every scenario at small N (about 3 minutes)")
    parser.add_argument("--out", default=str(BENCH), help="where REPORT.md, report.json and profiles/ go")
    parser.add_argument("--only", help="comma-separated subset: peers,fanout,collective,conversations,persistence,"
                                       "uploads,workers")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy passes")
    parser.add_argument("--no-install", action="store_true", help="do not pip/npm install anything")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (databases, server logs)")
    parser.add_argument("--rebuild-report", action="store_true",
                        help="only rewrite REPORT.md from report.json (and the raw profiles) in --out")
    args = parser.parse_args()
    if args.rebuild_report:
        from harness.report import resummarise, write_report

        out = Path(args.out).resolve()
        results = json.loads((out / "report.json").read_text(encoding="utf-8"))
        resummarise(results, out / "profiles")
        write_report(results, out)
        return 0
    if not args.no_install:
        setup.install(log)
    setup.raise_nofile(4096 if args.quick else 16384)
    try:
        import uvloop

        return uvloop.run(main(args))
    except ImportError:
        return asyncio.run(main(args))


if __name__ == "__main__":
    sys.exit(cli())
