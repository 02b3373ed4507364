"""A collective send (issue #4, R14): one message to 1,000 families, each in its own conversation.

The direction sends ``collective.send`` with the 1,000 students of the
``FAN-1000`` school; the hub records the job, answers, and works through the
families in the background — for each, find or create the private
conversation (direction + the child's guardian) and post the message in it.
The families are connected and resumed; each one's ``message.new`` arrival is
timestamped.  Reported: time to the ``ok``, time until the last family has the
message, families per second, and the server CPU for the whole job.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from harness.procstat import Sampler
from harness.servers import Server
from loadgen.pool import now_ns
from scenarios.common import Context, figure, ms, percentile
from scenarios.fanout import Publisher

TEXT = "Rappel : la sortie au musée a lieu vendredi; merci de signer l'autorisation. Reminder: museum trip Friday."


async def run(ctx: Context, server: Server, publisher: Publisher, students: list[int],
              worker_of: dict[Any, int], families: list[int], wait_s: float = 600.0) -> dict[str, Any]:
    group = server.group()
    expected = [0] * len(ctx.workers)
    for family in families:
        expected[worker_of[family]] += 1
    await ctx.workers.all("arm", mode="events")
    sampler = Sampler(group).start()
    cpu0 = group.cpu()
    t0 = now_ns()
    answer = await publisher.pool.request(publisher.key, {
        "type": "collective.send", "client_id": f"bench-{uuid.uuid4().hex[:12]}", "text": TEXT,
        "students": students}, timeout=120)
    accepted_ns = now_ns() - t0
    if answer.get("type") != "ok":
        await sampler.stop()
        ctx.log(f"  collective.send refused: {answer}")
        return {"error": answer.get("code"), "detail": answer}
    answers = await ctx.workers.all("wait_arrivals", per_worker=[{"expected": e, "wait_s": wait_s} for e in expected],
                                    timeout=wait_s + 30)
    t_end = now_ns()
    cpu = group.cpu() - cpu0
    peak = await sampler.stop()
    arrivals = sorted(a for x in answers for a in x["arrivals"])
    latencies = [a - t0 for a in arrivals]
    completion_s = (arrivals[-1] - t0) / 1e9 if arrivals else None
    out = figure(
        len(arrivals) / completion_s if completion_s else None, cpu / len(arrivals) * 1e6 if arrivals else None,
        ms(percentile(latencies, 50)), ms(percentile(latencies, 99)), peak / 1024,
        families=len(families), delivered=len(arrivals), missing=len(families) - len(arrivals),
        accepted_ms=ms(accepted_ns), completion_s=round(completion_s, 2) if completion_s else None,
        server_cpu_s=round(cpu, 3), cpu_ms_per_family=round(cpu / max(len(arrivals), 1) * 1e3, 3),
        window_s=round((t_end - t0) / 1e9, 2))
    ctx.log(f"  collective.send to {len(families)} families: ok in {out['accepted_ms']} ms, all delivered in "
            f"{out['completion_s']} s ({out['deliveries_per_s']} families/s), server CPU {out['server_cpu_s']} s "
            f"({out['cpu_ms_per_family']} ms per family), missing {out['missing']}")
    return out
