"""Conversation traffic and persistence: many small conversations, real ``message.send``.

Set-up: the CONV school's parents, teachers and staff connect and resume;
each parent opens one conversation about their child (``conversation.create``)
with the child's teacher and 0–3 staff members — 2, 3, 4 or 5 people, 3.5 on
average.  A database already holding them (a second server on the same
PostgreSQL database) is reused: the ``resume`` replies list them.

Traffic, open loop: the load generators send ``message.send`` at a fixed total
rate, round-robin over the conversations, each conversation's members taking
turns as the sender.  The text carries the send time; every member's
connection (the sender's too: the hub delivers the event to all members)
counts a delivery, and the others give send→receive latency; the sender's
``ok`` gives send→ack latency.  Only messages sent after a warm-up count, and
the server's CPU is read over the same window.

Persistence, closed loop: each of S parents keeps one message in flight and
sends the next when the ``ok`` comes (no sooner than 55 ms after the previous
one: the per-connection limit is 20/s); acknowledged messages per second is the
database-bound throughput — every ``ok`` means the message is committed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from harness import profile
from harness.fixtures import People, plan_conversations
from harness.procstat import Group, Sampler
from harness.servers import Server
from scenarios.common import Context, connect, figure, ms, percentile, split

PAD = "Bonjour, Léa a oublié son cahier de maths à l'école; pouvez-vous le lui remettre demain ?"
# A person's sends are paced to stay under the hub's per-connection bucket (20/s).
CLOSED_LOOP_INTERVAL_S = 0.055
# Sender rotation: each conversation's members take turns over this many rounds.
ROTATION = 12


class ConversationSet:
    """The CONV school's people on one server (or two workers), and their conversations."""

    def __init__(self, ctx: Context, server: Server, people: People, count: int) -> None:
        self.ctx, self.server, self.people = ctx, server, people
        self.plan = plan_conversations(people, count)
        self.conversations: dict[int, list[int]] = {}  # conversation id -> member ids
        self.worker_of: dict[int, int] = {}
        self.setup: dict[str, Any] = {}

    def persons(self) -> list[int]:
        ids: list[int] = []
        seen: set[int] = set()
        for parent, _child, invitees in self.plan:
            for pid in (parent, *invitees):
                if pid not in seen:
                    seen.add(pid)
                    ids.append(pid)
        return ids

    async def open(self, profile_name: str | None = None) -> dict[str, Any]:
        """Connect everyone (parents get their conversation lists), create what is missing.
        With ``profile_name``, the connections are made under py-spy (where connect + resume
        spends the server's CPU; these connections are not a measured figure)."""
        ctx = self.ctx
        group = self.server.group()
        persons = self.persons()
        ports = self.server.ports
        items = [(pid, ports[pid % len(ports)], ctx.tokens[pid]) for pid in persons]
        for i, (pid, _port, _token) in enumerate(items):
            self.worker_of[pid] = i % len(ctx.workers)
        ctx.log(f"  connecting {len(items)} people of the CONV school")
        if profile_name and ctx.profile and profile.available():
            # Only the first few hundred under py-spy (a multiple of the process count, so that
            # item i still goes to load generator i % W); the rest at full speed.
            head = max(len(ctx.workers), (300 // len(ctx.workers)) * len(ctx.workers))
            recording = profile.Recording(self.server.processes[0].pid, ctx.profiles_dir / f"{profile_name}.txt")
            async with recording:
                profiled = await connect(ctx, items[:head], "hub", group, want_conversations=True)
            result = await connect(ctx, items[head:], "hub", group, want_conversations=True)
            result["conversations"].update(profiled["conversations"])
            result["opened"] += profiled["opened"]
            result["failed"] += profiled["failed"]
            result["profile"] = {"file": recording.path.name, "connections": profiled["opened"],
                                 **profile.summarise(recording.path)}
        else:
            result = await connect(ctx, items, "hub", group, want_conversations=True)
        existing: dict[int, list[int]] = {}
        for pid, convs in result.pop("conversations").items():
            for cid, members in convs or []:
                existing[cid] = members
        by_parent = {}
        for cid, members in existing.items():
            for m in members:
                by_parent.setdefault(m, []).append(cid)
        missing = [item for item in self.plan if not by_parent.get(item[0])]
        created_seconds = 0.0
        if missing:
            ctx.log(f"  creating {len(missing)} conversations")
            started = time.monotonic()
            per_worker: list[list] = [[] for _ in range(len(ctx.workers))]
            for item in missing:
                per_worker[self.worker_of[item[0]]].append([item[0], item[1], item[2]])
            answers = await ctx.workers.all("create_conversations", per_worker=[{"items": p} for p in per_worker],
                                            concurrency=16, timeout=1800)
            created_seconds = time.monotonic() - started
            failures: dict[str, int] = {}
            for part, ids in zip(per_worker, answers):
                for (parent, _child, invitees), cid in zip(part, ids):
                    if isinstance(cid, int):
                        existing[cid] = [parent, *invitees]
                    else:
                        failures[str(cid)] = failures.get(str(cid), 0) + 1
            if failures:
                ctx.log(f"  conversation.create failures: {failures}")
            result["create_failures"] = failures
        self.conversations = existing
        result.pop("per_worker", None)
        sizes = [len(m) for m in existing.values()]
        warm = await self.warm_up()
        self.setup = {**result, "conversations": len(existing), "created": len(missing), "warm_up": warm,
                      "create_seconds": round(created_seconds, 1),
                      "creates_per_s": round(len(missing) / created_seconds, 1) if created_seconds else None,
                      "mean_size": round(sum(sizes) / len(sizes), 2) if sizes else None}
        return self.setup

    async def warm_up(self, count: int = 5) -> dict[str, Any]:
        """A few messages before anything is measured: the hub's first message loads
        what it loads lazily (the notification calendar's holiday tables); its time is
        reported as the cold start."""
        times = []
        for cid, members in sorted(self.conversations.items())[:count]:
            sender = members[0]
            started = time.monotonic()
            answer = await self.ctx.workers.call(self.worker_of[sender], "request", key=sender, frame={
                "type": "message.send", "conversation_id": cid, "client_id": f"warm-{cid}-{time.time_ns()}",
                "text": "warm-up"})
            times.append(round((time.monotonic() - started) * 1e3, 1))
            if answer.get("type") != "ok":
                self.ctx.log(f"  warm-up message refused: {answer}")
        self.ctx.log(f"  warm-up messages answered in {times} ms")
        return {"ack_ms": times}

    def mean_size(self) -> float:
        sizes = [len(m) for m in self.conversations.values()]
        return sum(sizes) / len(sizes)

    def open_loop_streams(self) -> list[list[list[int]]]:
        """Per load generator: the (sender, conversation) sequence it plays."""
        parts: list[list[list[int]]] = [[] for _ in range(len(self.ctx.workers))]
        items = sorted(self.conversations.items())
        for r in range(ROTATION):
            for cid, members in items:
                sender = members[r % len(members)]
                parts[self.worker_of[sender]].append([sender, cid])
        return parts

    def closed_loop_streams(self, senders: int) -> list[list[list[int]]]:
        """Per load generator: S parents, each with its one conversation."""
        parts: list[list[list[int]]] = [[] for _ in range(len(self.ctx.workers))]
        parents = {parent for parent, _child, _invitees in self.plan}
        parent_conv: dict[int, int] = {}
        for cid, members in sorted(self.conversations.items()):
            for m in members:
                if m in parents:
                    parent_conv.setdefault(m, cid)
        for parent, cid in list(parent_conv.items())[:senders]:
            parts[self.worker_of[parent]].append([parent, cid])
        return parts


async def traffic(ctx: Context, convs: ConversationSet, *, duration: float, warmup: float, drain: float,
                  deliveries_per_s: float | None = None, closed_loop_senders: int | None = None,
                  label: str = "", profile_name: str | None = None, profile_seconds: float = 6.0) -> dict[str, Any]:
    """One measured run; open loop at ``deliveries_per_s`` or closed loop with S senders."""
    group: Group = convs.server.group()
    args: dict[str, Any] = {"duration": duration, "warmup": warmup, "drain": drain, "pad": PAD}
    if deliveries_per_s is not None:
        streams = convs.open_loop_streams()
        total = sum(len(s) for s in streams)
        msg_rate = deliveries_per_s / convs.mean_size()
        per_worker = [{"streams": s, "rate": msg_rate * len(s) / total} for s in streams]
    else:
        streams = convs.closed_loop_streams(closed_loop_senders or 256)
        msg_rate = None
        per_worker = [{"streams": s, "closed_loop_interval": CLOSED_LOOP_INTERVAL_S} for s in streams]
    task = asyncio.ensure_future(ctx.workers.all("traffic", per_worker=per_worker, timeout=duration + drain + 120,
                                                 **args))
    await asyncio.sleep(warmup)
    sampler = Sampler(group).start()
    cpu0, t0 = group.cpu(), time.monotonic()
    await asyncio.sleep(max(0.1, duration - warmup))
    cpu1, t1 = group.cpu(), time.monotonic()
    answers = await task
    peak = await sampler.stop()
    recording = None
    if profile_name and ctx.profile and profile.available():
        # A separate, unmeasured pass: py-spy pauses the process at every sample.
        recording = profile.Recording(convs.server.processes[0].pid, ctx.profiles_dir / f"{profile_name}.txt")
        async with recording:
            await ctx.workers.all("traffic", per_worker=per_worker, timeout=profile_seconds + drain + 120,
                                  **{**args, "duration": profile_seconds, "warmup": 0.0})
    window = answers[0]["window_seconds"]
    deliveries = sum(a["deliveries_rx"] for a in answers)
    acks = sum(a["acks_rx"] for a in answers)
    latencies = sorted(x for a in answers for x in a["latencies"])
    ack_latencies = sorted(x for a in answers for x in a["ack_latencies"])
    errors: dict[str, int] = {}
    for a in answers:
        for k, v in a["errors"].items():
            errors[k] = errors.get(k, 0) + v
    cpu_rate = (cpu1 - cpu0) / (t1 - t0)
    out = figure(
        deliveries / window, cpu_rate * window / deliveries * 1e6 if deliveries else None,
        ms(percentile(latencies, 50)), ms(percentile(latencies, 99)), peak / 1024,
        label=label, mode="open loop" if msg_rate is not None else "closed loop",
        offered_deliveries_per_s=deliveries_per_s, offered_messages_per_s=round(msg_rate, 1) if msg_rate else None,
        senders=closed_loop_senders, sent=sum(a["sent"] for a in answers),
        sent_per_s=round(sum(a["sent_in_window"] for a in answers) / window, 1),
        acked_per_s=round(acks / window, 1),
        ack_p50_ms=ms(percentile(ack_latencies, 50)), ack_p99_ms=ms(percentile(ack_latencies, 99)),
        receive_p999_ms=ms(percentile(latencies, 99.9)), server_cpu_percent=round(cpu_rate * 100, 1),
        unanswered=sum(a["unanswered"] for a in answers), errors=errors, window_s=window,
        closes=_merge([a.get("closes", {}) for a in answers]))
    if recording is not None:
        out["profile"] = {"file": recording.path.name, **profile.summarise(recording.path)}
    ctx.log(f"  {label}: {out['deliveries_per_s']} deliveries/s ({out['acked_per_s']} acked msg/s), "
            f"p50 {out['p50_ms']} / p99 {out['p99_ms']} ms send→receive, ack p99 {out['ack_p99_ms']} ms, "
            f"{out['cpu_us_per_frame']} µs CPU/frame, server CPU {out['server_cpu_percent']}%"
            + (f", errors {errors}" if errors else "") + (f", unanswered {out['unanswered']}" if out['unanswered'] else ""))
    return out


def _merge(counters: list[dict]) -> dict:
    total: dict = {}
    for c in counters:
        for k, v in c.items():
            total[str(k)] = total.get(str(k), 0) + v
    return total


def saturated(step: dict[str, Any]) -> bool:
    """A step the server could not keep up with: deliveries well below the offer, or
    acknowledgements pending past the drain, or latency in seconds."""
    offered = step.get("offered_deliveries_per_s")
    return bool((offered and step["deliveries_per_s"] < 0.9 * offered) or step["unanswered"]
                or (step["p99_ms"] or 0) > 1000)
