"""Announcement fan-out: one broadcast to N connected clients, N by tiers.

The hub: N families connected, signed in (bearer token on the handshake) and
``resume``d — so they listen on their school's channel — and the direction
posts ``announcement.post`` with audience ``{"school": id}``.  A peer: N clients
connected to its minimal broadcast protocol and one publisher frame.  Either
way the receivers (in the load-generator processes) timestamp each arrival;
the publisher timestamps the send, on the same monotonic clock.

Per round: completion time (send → last arrival), deliveries/s (N / completion),
p50/p99 of send → arrival, and server CPU per delivered frame: the server's CPU
over the round minus its idle rate over the same time (keepalive pings of N
connections), divided by N.  For the hub that CPU includes everything the post
costs — the checks, persisting the announcement and its N recipient rows, the
notifications the hub records — since that is what delivering it costs.
Several rounds per tier, after one unmeasured round (the first broadcast to new
connections, and for the hub to a new school, costs more on every server); the
report gives the medians and the pooled percentiles.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import orjson

from harness import profile
from harness.procstat import Group, Sampler
from harness.servers import Server
from loadgen.pool import Pool, now_ns
from scenarios.common import Context, connect, figure, idle_cpu_rate, median, ms, percentile

ANNOUNCEMENT_TEXT = ("Fermeture de l'école demain en raison de la tempête : les cours reprendront jeudi. "
                     "School is closed tomorrow because of the storm; classes resume on Thursday.")


def hub_frame_length() -> int:
    """The length of the hub's announcement frame for ANNOUNCEMENT_TEXT (as chat.announcements builds it),
    so that the peers broadcast frames of the same size."""
    frame = {"type": "announcement", "announcement": {
        "id": 1000, "kind": "announcement", "megaphone": True, "author": {"id": 1, "name": "Direction Banc"},
        "source": None, "school_id": 3, "audience": {"school": 3}, "text": ANNOUNCEMENT_TEXT, "urgent": False,
        "created_at": "2026-11-26T12:07:48.548Z"}}
    return len(orjson.dumps(frame))


def peer_pad(k: int) -> str:
    base = len(orjson.dumps({"type": "bcast", "id": k, "pad": ""}))
    return "x" * max(0, hub_frame_length() - base)


class Publisher:
    """Sends one broadcast and, for the hub, waits for the post's ``ok``."""

    def __init__(self, dialect: str, port: int, key: Any = "publisher", token: str | None = None,
                 school_id: int | None = None) -> None:
        self.dialect, self.port, self.key, self.token, self.school_id = dialect, port, key, token, school_id
        self.pool = Pool()

    async def open(self) -> None:
        await self.pool.open(self.key, self.port, self.dialect, self.token)

    def send(self, k: int) -> asyncio.Future | None:
        client = self.pool.clients[self.key]
        if self.dialect == "hub":
            return asyncio.ensure_future(self.pool.request(self.key, {
                "type": "announcement.post", "audience": {"school": self.school_id}, "text": ANNOUNCEMENT_TEXT}))
        body = {"id": k, "pad": peer_pad(k)}
        if self.dialect == "socketio":
            client.send_text(b'42["publish",' + orjson.dumps(body) + b"]")
        else:
            client.send_text(orjson.dumps({"type": "publish", **body}))
        return None

    async def close(self) -> None:
        await self.pool.close_all()


@dataclass
class Target:
    """A server under the fan-out workload."""

    name: str
    dialect: str
    server: Server
    recipients: list[Any]  # keys in connection order (hub: guardian person ids)
    tokens: dict[Any, str] | None = None
    publisher: Publisher | None = None
    # For the hub, one publisher per tier (the audience changes); None for peers.
    school_for_tier: Callable[[int], int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def port_for(self, index: int) -> int:
        return self.server.ports[index % len(self.server.ports)]


async def run(ctx: Context, target: Target, tiers: list[int], rounds: dict[int, int],
              profile_tier: int | None = None, wait_s: float = 90.0) -> dict[str, Any]:
    """One target alone: :func:`run_side_by_side` with a single target."""
    results = await run_side_by_side(ctx, [target], tiers, {target.name: rounds},
                                     {target.name: profile_tier}, wait_s)
    return results[target.name]


@dataclass
class _Progress:
    """What :func:`run_side_by_side` keeps per target between tiers."""

    target: Target
    group: Group
    result: dict[str, Any]
    base_rss_kib: int
    expected: list[int]
    connected: int = 0
    idle: float = 0.0
    failed: bool = False


async def run_side_by_side(ctx: Context, targets: list[Target], tiers: list[int], rounds: dict[str, dict[int, int]],
                           profile_tiers: dict[str, int | None] | None = None,
                           wait_s: float = 90.0) -> dict[str, dict[str, Any]]:
    """Connect every target's clients tier by tier, then measure their broadcasts in
    alternating rounds (hub, peer, peer, …, then the next round in a rotated order).

    The servers run at the same time, each on its own clients, so that a change in
    the machine's speed during the run (seen here: ±40 % within minutes) falls on
    every target of a tier alike rather than on whichever ran in that minute: the
    ratios between them are what the targets are about.  While one target's
    round runs, the others are idle (keepalive pings, outside its CPU figure).
    Returns each target's figures by name; a target that fails is reported with
    its error and left out of the later rounds."""
    profile_tiers = profile_tiers or {}
    await asyncio.sleep(0.5)
    states = []
    for target in targets:
        group = target.server.group()
        base = group.rss_kib()
        states.append(_Progress(target, group, {"target": target.name, "tiers": {},
                                                "rss_before_clients_mib": round(base / 1024, 1)},
                                base, [0] * len(ctx.workers)))
    for n in tiers:
        live = [st for st in states if not st.failed]
        for st in live:
            await _guarded(ctx, st, _connect_tier(ctx, st, n))
        live = [st for st in live if not st.failed]
        await asyncio.sleep(1.0)
        for st in live:
            target = st.target
            if target.school_for_tier is not None:
                target.publisher.school_id = target.school_for_tier(n)
            st.idle = await idle_cpu_rate(st.group, 1.5 if ctx.quick else 2.0)
            rss_kib = st.group.rss_kib()
            st.result["tiers"][str(n)] = {
                "connect": st.result.pop("_setup"), "connected": sum(st.expected),
                "idle_cpu_percent": round(st.idle * 100, 2), "rss_connected_mib": round(rss_kib / 1024, 1),
                "rss_per_client_kib": round((rss_kib - st.base_rss_kib) / max(sum(st.expected), 1), 2)}
        # One unmeasured round per target and tier: the first broadcast to a tier's new
        # connections (and, for the hub, to its new school, whose rows are not yet in
        # SQLite's cache; at the first tier, what the server loads lazily) cost up to
        # a quarter more than the next ones, on every server.
        for st in live:
            started = time.monotonic()
            await _guarded(ctx, st, _round(ctx, st.target, st.group, st.target.publisher, st.expected, st.idle,
                                           -1, wait_s, []))
            st.result.setdefault("cold_round_ms", {})[str(n)] = round((time.monotonic() - started) * 1e3, 1)
            await asyncio.sleep(0.3)
        live = [st for st in live if not st.failed]
        samplers = {st.target.name: Sampler(st.group).start() for st in live}
        measured: dict[str, list[dict[str, Any]]] = {st.target.name: [] for st in live}
        pooled: dict[str, list[int]] = {st.target.name: [] for st in live}
        most = max((rounds[st.target.name][n] for st in live), default=0)
        for k in range(most):
            order = live[k % len(live):] + live[:k % len(live)]  # each target leads in turn
            for st in order:
                name = st.target.name
                if st.failed or k >= rounds[name][n]:
                    continue
                out = await _guarded(ctx, st, _round(ctx, st.target, st.group, st.target.publisher, st.expected,
                                                     st.idle, k, wait_s, pooled[name]))
                if out is not None:
                    measured[name].append(out)
                await asyncio.sleep(0.3)
        for st in live:
            name = st.target.name
            peak = await samplers[name].stop()
            if st.failed:
                continue
            _tier_figure(ctx, st, n, measured[name], sorted(pooled[name]), peak)
            if profile_tiers.get(name) == n and ctx.profile and profile.available():
                await _guarded(ctx, st, _profile(ctx, st, n, wait_s))
    await asyncio.sleep(1.0)
    for st in states:
        if st.failed:
            continue
        idle_rss = st.group.rss_kib()
        st.result["idle"] = {"clients": sum(st.expected), "rss_mib": round(idle_rss / 1024, 1),
                             "kib_per_client": round((idle_rss - st.base_rss_kib) / max(sum(st.expected), 1), 2)}
        st.result["connected"] = sum(st.expected)
    return {st.target.name: st.result for st in states}


async def _guarded(ctx: Context, st: _Progress, step: Awaitable[Any]) -> Any:
    """Run one step of one target; a failure marks that target failed (with its
    error in the result and the run's failures) and lets the others go on."""
    try:
        return await step
    except Exception as exc:  # a peer that cannot hold the load is reported, not hidden
        st.failed = True
        st.result["error"] = failed(ctx, st.target.name, exc, st.target.server)
        return None


def failed(ctx: Context, name: str, exc: Exception, server: Server | None) -> str:
    """Log a target's failure and add it to the run's failures (with its server's
    log); returns the short form its result keeps."""
    ctx.log(f"  {name} failed: {exc!r}")
    ctx.results["failures"].append({"scenario": f"fanout/{name}", "error": repr(exc)[:2000],
                                    "server_log": server.log_tail() if server else ""})
    return repr(exc)[:500]


async def _connect_tier(ctx: Context, st: _Progress, n: int) -> None:
    target = st.target
    items = [(key, target.port_for(i), (target.tokens or {}).get(key))
             for i, key in enumerate(target.recipients[st.connected:n], start=st.connected)]
    worker_of = target.extra.setdefault("worker_of", {})
    for idx, item in enumerate(items):  # common.connect sends item i to load generator i % W
        worker_of[item[0]] = idx % len(ctx.workers)
    ctx.log(f"  {target.name}: connecting {len(items)} clients (to {n})")
    setup = await connect(ctx, items, target.dialect, st.group)
    st.expected = [a + b for a, b in zip(st.expected, setup["per_worker"])]
    st.connected = n
    setup.pop("conversations", None)
    setup.pop("per_worker", None)
    ctx.log(f"  {target.name}: {setup['opened']} opened, {setup['failed']} failed in {setup['seconds']}s"
            + (f" ({setup['server_cpu_ms_per_connection']} ms server CPU each)" if setup.get(
                "server_cpu_ms_per_connection") else ""))
    st.result["_setup"] = setup


def _tier_figure(ctx: Context, st: _Progress, n: int, rounds_out: list[dict[str, Any]], pooled: list[int],
                 peak: float) -> None:
    tier = st.result["tiers"][str(n)]
    total_frames = sum(r["received"] for r in rounds_out)
    total_cpu = sum(r["cpu_net_s"] for r in rounds_out)
    tier["rounds"] = rounds_out
    tier["figure"] = figure(
        median([r["deliveries_per_s"] for r in rounds_out]),
        total_cpu / total_frames * 1e6 if total_frames else None,
        ms(percentile(pooled, 50)), ms(percentile(pooled, 99)), peak / 1024,
        completion_ms=median([r["completion_ms"] for r in rounds_out]),
        cpu_ms_per_broadcast=round(total_cpu / len(rounds_out) * 1e3, 2) if rounds_out else None,
        missing=sum(r["missing"] for r in rounds_out), rounds=len(rounds_out))
    f = tier["figure"]
    ctx.log(f"  {st.target.name} N={n}: {f['deliveries_per_s']} deliveries/s, {f['cpu_us_per_frame']} µs CPU/frame, "
            f"p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms, completion {f['completion_ms']} ms, "
            f"peak RSS {f['peak_rss_mib']} MiB, missing {f['missing']}")


async def _profile(ctx: Context, st: _Progress, n: int, wait_s: float) -> None:
    target = st.target
    path = ctx.profiles_dir / f"fanout-{target.name}-{n}.txt"
    async with profile.Recording(target.server.processes[0].pid, path):
        for k in range(3):
            await _round(ctx, target, st.group, target.publisher, st.expected, st.idle, 100 + k, wait_s, [])
            await asyncio.sleep(0.2)
    st.result["profile"] = {"file": path.name, **profile.summarise(path)}


async def _round(ctx: Context, target: Target, group: Group, publisher: Publisher, expected: list[int],
                 idle: float, k: int, wait_s: float, pooled: list[int]) -> dict[str, Any]:
    await ctx.workers.all("arm", mode="fanout")
    cpu0 = group.cpu()
    t0 = now_ns()
    reply = publisher.send(k)
    answers = await ctx.workers.all("wait_arrivals", per_worker=[{"expected": e, "wait_s": wait_s} for e in expected],
                                    timeout=wait_s + 30)
    ok = None
    if reply is not None:
        ok = await asyncio.wait_for(reply, wait_s)
    t_end = now_ns()
    cpu1 = group.cpu()
    arrivals = sorted(a for answer in answers for a in answer["arrivals"])
    latencies = [a - t0 for a in arrivals]
    pooled.extend(latencies)
    window_s = (t_end - t0) / 1e9
    cpu_net = max(0.0, (cpu1 - cpu0) - idle * window_s)
    completion_ns = (arrivals[-1] - t0) if arrivals else None
    received = len(arrivals)
    out = {
        "received": received, "missing": sum(expected) - received,
        "completion_ms": ms(completion_ns),
        "deliveries_per_s": round(received / (completion_ns / 1e9), 1) if completion_ns else None,
        "p50_ms": ms(percentile(latencies, 50)), "p99_ms": ms(percentile(latencies, 99)),
        "cpu_gross_s": round(cpu1 - cpu0, 5), "cpu_net_s": round(cpu_net, 5),
        "cpu_us_per_frame": round(cpu_net / received * 1e6, 2) if received else None,
    }
    if ok is not None and ok.get("type") != "ok":
        out["error"] = ok.get("code")
    return out
