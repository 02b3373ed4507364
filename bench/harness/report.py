"""bench/report.json (every figure) and bench/REPORT.md (the same, for people).

Ratios are written "peer ÷ hub" for every figure, pair by pair, so that a ratio
above 1 means the peer's number is larger (more deliveries/s is better; more
CPU, latency or memory is worse).  The targets of issue #6 are checked here,
each with the figure, the goal and by how much it is met or missed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PEERS = ["websockets", "node-ws", "socketio-redis"]
METRICS = [("deliveries_per_s", "deliveries/s"), ("cpu_us_per_frame", "CPU µs/frame"), ("p50_ms", "p50 ms"),
           ("p99_ms", "p99 ms"), ("peak_rss_mib", "peak RSS MiB")]


def _get(d: Any, *path: Any) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:,.{digits}f}" if abs(value) >= 1 else f"{value:.{max(digits, 2)}f}"
    return str(value)


def _ratio(a: Any, b: Any) -> float | None:
    if a is None or b in (None, 0):
        return None
    return round(a / b, 2)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue #6's targets, each: name, measured, goal, met, margin (how far from the goal)."""
    out: list[dict[str, Any]] = []
    fan = _get(results, "scenarios", "fanout") or {}
    tiers = sorted(int(t) for t in (_get(fan, "hub", "tiers") or {}))

    def add(name: str, measured: float | None, goal: float, lower_is_better: bool, unit: str, note: str = "") -> None:
        if measured is None:
            out.append({"target": name, "measured": None, "goal": goal, "unit": unit, "met": None,
                        "direction": "≤" if lower_is_better else "≥", "margin": "not measured", "note": note})
            return
        met = measured <= goal if lower_is_better else measured >= goal
        factor = measured / goal if goal else None
        if met:
            margin = f"met ({factor:.2f}× the limit)" if lower_is_better else f"met ({factor:.2f}× the goal)"
        else:
            margin = (f"missed by {factor:.2f}× (needs {measured / goal:.1f}× less)" if lower_is_better
                      else f"missed: {factor:.2f}× the goal (needs {goal / measured:.1f}× more)" if measured else "missed")
        out.append({"target": name, "measured": round(measured, 3), "goal": goal, "unit": unit, "met": met,
                    "direction": "≤" if lower_is_better else "≥", "margin": margin, "note": note})

    for n in tiers:
        hub = _get(fan, "hub", "tiers", str(n), "figure", "cpu_us_per_frame")
        ws = _get(fan, "websockets", "tiers", str(n), "figure", "cpu_us_per_frame")
        node = _get(fan, "node-ws", "tiers", str(n), "figure", "cpu_us_per_frame")
        sio = _get(fan, "socketio-redis", "tiers", str(n), "figure", "cpu_us_per_frame")
        add(f"fan-out N={n}: hub CPU/frame ÷ websockets broadcast()", _ratio(hub, ws), 1.5, True, "×",
            f"hub {_fmt(hub)} µs, websockets {_fmt(ws)} µs")
        add(f"fan-out N={n} (stretch): hub CPU/frame ÷ Node ws", _ratio(hub, node), 1.0, True, "×",
            f"hub {_fmt(hub)} µs, node {_fmt(node)} µs")
        add(f"fan-out N={n}: socketio+Redis CPU/frame ÷ hub", _ratio(sio, hub), 5.0, False, "×",
            f"socketio {_fmt(sio)} µs, hub {_fmt(hub)} µs")
    conv = _get(results, "scenarios", "conversations") or {}
    steps = conv.get("steps") or []
    at_target = [s for s in steps if s.get("offered_deliveries_per_s") and
                 s["offered_deliveries_per_s"] >= (results.get("plan", {}).get("target_deliveries_per_s") or 40000)]
    goal_rate = results.get("plan", {}).get("target_deliveries_per_s") or 40000
    if at_target:
        s = at_target[0]
        add("conversations at 40,000 deliveries/s (1 worker): p99 send→receive", s.get("p99_ms"), 25.0, True, "ms",
            f"offered {_fmt(s['offered_deliveries_per_s'])}/s, achieved {_fmt(s['deliveries_per_s'])}/s")
    add("conversations: deliveries/s sustained on 1 worker (the 40,000/s the p99 target assumes)",
        conv.get("capacity_deliveries_per_s"), goal_rate, False, "deliveries/s",
        "closed-loop capacity on SQLite (the persistence run)")
    ladders = [("SQLite", steps), ("PostgreSQL", (_get(results, "scenarios", "conversations_postgresql") or {})
                                        .get("steps") or [])]
    for db, rungs in ladders:
        ok_steps = [s for s in rungs if (s.get("p99_ms") or 1e9) <= 25.0 and not s.get("unanswered")]
        if rungs:
            best = max(ok_steps, key=lambda s: s["deliveries_per_s"] or 0) if ok_steps else None
            add(f"conversations ({db}): highest measured rate with p99 ≤ 25 ms",
                best["deliveries_per_s"] if best else 0.0, goal_rate, False, "deliveries/s")
    idle = _get(fan, "hub", "idle") or {}
    top = tiers[-1] if tiers else None
    add(f"idle: server memory per connected, signed-in, subscribed client ({idle.get('clients', '?')} clients, 1 worker)",
        idle.get("kib_per_client"), 30.0, True, "KiB",
        "goal stated at 10,000 clients" + ("" if top == 10000 else f"; this run's top tier is {top}"))
    add("persistence: acked messages/s on SQLite (1 worker)",
        _get(results, "scenarios", "persistence", "sqlite", "acked_per_s"), 2000.0, False, "msg/s")
    add("persistence: acked messages/s on PostgreSQL (1 worker)",
        _get(results, "scenarios", "persistence", "postgresql", "acked_per_s"), 3000.0, False, "msg/s")
    one = _get(results, "scenarios", "workers", "1-worker", "conversations", "deliveries_per_s")
    two = _get(results, "scenarios", "workers", "2-worker", "conversations", "deliveries_per_s")
    add("two workers: conversation deliveries/s, 2 workers ÷ 1", _ratio(two, one), 1.6, False, "×",
        f"1 worker {_fmt(one)}/s, 2 workers {_fmt(two)}/s (PostgreSQL + Redis)")
    wt = str(_get(results, "plan", "workers", "fanout_tier"))
    one_f = _get(results, "scenarios", "workers", "1-worker", "fanout", "tiers", wt, "figure", "deliveries_per_s")
    two_f = _get(results, "scenarios", "workers", "2-worker", "fanout", "tiers", wt, "figure", "deliveries_per_s")
    add(f"two workers: announcement fan-out deliveries/s (N={wt}), 2 workers ÷ 1", _ratio(two_f, one_f), 1.6, False,
        "×", f"1 worker {_fmt(one_f)}/s, 2 workers {_fmt(two_f)}/s")
    return out


def resummarise(results: dict[str, Any], profiles_dir: Path) -> None:
    """Summarise again every profile whose raw file is there (after a change to the categories)."""
    from harness import profile

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            prof = node.get("profile")
            if isinstance(prof, dict) and prof.get("file") and (profiles_dir / prof["file"]).exists():
                node["profile"] = {"file": prof["file"], **profile.summarise(profiles_dir / prof["file"])}
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(results)


def write_report(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    results["targets"] = targets(results)
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(results, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    md_path = out_dir / "REPORT.md"
    md_path.write_text(markdown(results), encoding="utf-8")
    return json_path, md_path


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in row) + " |")
    return lines


_STEP_HEADER = ["offered deliveries/s", "deliveries/s", "acked msg/s", "p50 ms", "p99 ms", "ack p50 ms",
                "ack p99 ms", "CPU µs/frame", "server CPU %", "peak RSS MiB", "errors"]


def _step_row(s: dict[str, Any]) -> list[Any]:
    """A row of a conversation ladder's table (:data:`_STEP_HEADER`)."""
    return [_fmt(s["offered_deliveries_per_s"]), s["deliveries_per_s"], s["acked_per_s"], s["p50_ms"], s["p99_ms"],
            s["ack_p50_ms"], s["ack_p99_ms"], s["cpu_us_per_frame"], s["server_cpu_percent"], s["peak_rss_mib"],
            ", ".join(f"{k}: {v}" for k, v in (s.get("errors") or {}).items())
            + (f" unanswered {s['unanswered']}" if s.get("unanswered") else "")]


def _profile_lines(title: str, prof: dict[str, Any] | None) -> list[str]:
    if not prof or not prof.get("samples"):
        return []
    waiting = prof.get("waiting_samples")
    lines = [f"**{title}** ({prof['samples']} CPU samples"
             + (f", plus {waiting} samples of threads waiting, left out" if waiting else "")
             + f"; raw stacks in `bench/profiles/{prof.get('file', '')}`, local to the run)", ""]
    lines += _table(["where the CPU goes", "% of samples"], [[c, f"{p}%"] for c, p in prof["categories"][:10]])
    lines += ["", "Top functions by self time: " + "; ".join(f"`{n}` {p}%" for n, p in prof["self"][:8]) + "."]
    if prof.get("paths"):
        lines += ["", "Hub code paths (share of CPU samples with the function on the stack): "
                  + "; ".join(f"`{n}` {p}%" for n, p in prof["paths"]) + "."]
    return lines + [""]


def _limits(r: dict[str, Any]) -> list[str]:
    """For each group of missed targets, the profile that says what limits it."""
    fan = _get(r, "scenarios", "fanout") or {}
    per = _get(r, "scenarios", "persistence") or {}
    out = ["## What limits the missed targets", "",
           "Read from the py-spy profiles of the hub taken in this run (separate passes, after the measured "
           "rounds); the shares are of the server's CPU samples (threads waiting left out).", ""]

    def top(prof: dict[str, Any] | None, n: int = 4) -> str:
        if not prof or not prof.get("samples"):
            return "no profile in this run"
        cats = "; ".join(f"{c} {p}%" for c, p in prof["categories"][:n])
        paths = "; ".join(f"`{c}` {p}%" for c, p in (prof.get("paths") or [])[:6])
        return cats + (f" — hub paths: {paths}" if paths else "")

    fp = _get(fan, "hub", "profile")
    out += [f"- **Fan-out CPU per frame** (hub vs peers): {top(fp)}."]
    out += [f"- **Acked messages/s and conversation capacity, SQLite**: {top(_get(per, 'sqlite', 'profile'))}."]
    out += [f"- **Acked messages/s, PostgreSQL**: {top(_get(per, 'postgresql', 'profile'))}."]
    cp = _get(r, "scenarios", "conversation_setup_sqlite", "profile")
    out += [f"- **Connection set-up** (every reconnect pays it): {top(cp)}."]
    out += ["- **Conversation traffic at 40,000 deliveries/s**: one worker's capacity is the closed-loop "
            "figure of the persistence table (every message is a committed transaction share, its "
            "notifications and its fan-out; the CPU per message is the persistence profile above). The "
            "open-loop steps show the p99 below and near that capacity; past it, sends queue and the p99 "
            "grows with the queue.", ""]
    return out


def markdown(r: dict[str, Any]) -> str:
    m, v = r.get("machine", {}), r.get("versions", {})
    pk = v.get("packages", {})
    L: list[str] = []
    L += ["# Benchmark report", "",
          f"Generated by `python bench/run.py{' --quick' if r.get('mode') == 'quick' else ''}` on {r.get('date')} "
          f"({r.get('mode')} run, {_fmt(r.get('duration_s'))} s). Every figure is also in `bench/report.json`.", "",
          "## Machine and versions", "",
          f"- {m.get('nproc')} CPUs ({m.get('cpu_model')}), {m.get('memory_gib')} GiB, Linux {m.get('kernel')}; "
          f"open files {m.get('nofile_limit')}, somaxconn {m.get('somaxconn')}.",
          f"- Python {v.get('python')}, Node {v.get('node')}, ws {v.get('ws')}, Redis {v.get('redis')}, "
          f"PostgreSQL {v.get('postgres')}, SQLite {v.get('sqlite')}; hub commit {v.get('hub_commit')}.",
          "- " + ", ".join(f"{k} {val}" for k, val in pk.items() if val), "",
          "Everything runs on this one machine: servers, load generators "
          f"({_get(r, 'loadgen', 'processes')} processes), PostgreSQL and Redis share its CPUs. "
          "Server CPU is read from `/proc/PID/task/*/schedstat` of the server processes only.", ""]

    # targets
    L += ["## Targets (issue #6)", ""]
    rows = []
    for t in r.get("targets", []):
        mark = {True: "✅ met", False: "❌ missed", None: "—"}[t["met"]]
        rows.append([t["target"], f"{_fmt(t['measured'], 2)} {t['unit']}" if t["measured"] is not None else "—",
                     f"{t['direction']} {_fmt(t['goal'])} {t['unit']}",
                     mark, t["margin"], t.get("note", "")])
    L += _table(["target", "measured", "goal", "", "by how much", "detail"], rows)
    L += [""]

    # fan-out
    fan = _get(r, "scenarios", "fanout") or {}
    hub_tiers = _get(fan, "hub", "tiers") or {}
    L += ["## Announcement fan-out", "",
          "One broadcast to N connected clients. Hub: N families connected with a bearer token, `resume`d, and the "
          "direction posts `announcement.post` to `{\"school\": id}` (checked, persisted with N recipient rows, "
          "then fanned out). Peers: the same N clients and one publish, each with its own minimal protocol "
          "(bench/peers/). The hub and the peers run at the same time, each with its own N clients, and their "
          "rounds alternate (hub, peers, then again in a rotated order), so that the machine's drift in speed "
          "falls on every server of a tier alike. Frames are the same size "
          "(the hub's announcement frame). Deliveries/s = N ÷ (send → last arrival); CPU per frame = server CPU "
          "over the round, less its idle rate, ÷ N; latencies send → arrival, pooled over the rounds "
          f"(rounds per tier: {r.get('plan', {}).get('rounds')}, after one unmeasured round per tier and server: "
          "the first broadcast to new connections, and for the hub to a new school, costs more on every server).", ""]
    for n in sorted(hub_tiers, key=int):
        rows = []
        for name in ["hub", *PEERS]:
            f = _get(fan, name, "tiers", n, "figure")
            if f is None:
                err = _get(fan, name, "error")
                rows.append([name] + ["—"] * 6 + [f"not measured{': ' + err if err else ''}"])
                continue
            rows.append([name, f["deliveries_per_s"], f["cpu_us_per_frame"], f["p50_ms"], f["p99_ms"],
                         f.get("completion_ms"), f["peak_rss_mib"],
                         f"{f.get('missing', 0)} missing" if f.get("missing") else ""])
        L += [f"### N = {int(n):,}", ""]
        L += _table(["server", "deliveries/s", "CPU µs/frame", "p50 ms", "p99 ms", "completion ms", "peak RSS MiB",
                     ""], rows)
        L += ["", "Each figure as peer ÷ hub:", ""]
        hub_f = _get(fan, "hub", "tiers", n, "figure") or {}
        rows = []
        for name in PEERS:
            f = _get(fan, name, "tiers", n, "figure")
            rows.append([name] + [_fmt(_ratio((f or {}).get(k), hub_f.get(k)), 2) + ("×" if f else "")
                                  for k, _ in METRICS])
        L += _table(["peer ÷ hub", *[label for _, label in METRICS]], rows)
        L += [""]
    conn = [(n, _get(fan, "hub", "tiers", n, "connect")) for n in sorted(hub_tiers, key=int)]
    conn = [(n, c) for n, c in conn if c]
    if conn:
        L += ["Connection set-up on the hub (handshake, token check, `hello`, `resume`), per tier: "
              + "; ".join(f"{c['opened']} clients in {c['seconds']} s ({_fmt(c['per_second'])}/s, "
                          f"{c['server_cpu_ms_per_connection']} ms server CPU each)" for _, c in conn) + ".", ""]
    L += _profile_lines(f"Hub fan-out profile (N = {max((int(n) for n in hub_tiers), default=0):,})",
                        _get(fan, "hub", "profile"))
    L += _profile_lines("Hub connection set-up profile (connect, token check, hello, resume; CONV people, SQLite)",
                        _get(r, "scenarios", "conversation_setup_sqlite", "profile"))

    L += _limits(r)

    # idle memory
    L += ["## Idle connections", "",
          "Server RSS with every client connected and idle, minus the RSS before the first of them connected, "
          "per client (the hub's clients are signed in and resumed: subscribed to their school channels).", ""]
    rows = []
    for name in ["hub", *PEERS]:
        idle = _get(fan, name, "idle")
        if idle:
            rows.append([name, idle["clients"], idle["kib_per_client"], idle["rss_mib"]])
    L += _table(["server", "clients", "KiB per client", "RSS MiB"], rows) + [""]

    # issue 4
    L += ["## Issue #4: one announcement to 5,000 families, a collective send to 1,000", ""]
    f5 = _get(fan, "hub", "tiers", "5000", "figure")
    if f5:
        L += [f"- Announcement to 5,000 connected families: {_fmt(f5['completion_ms'])} ms from the post to the "
              f"last family (median of {f5['rounds']}), {_fmt(f5['cpu_ms_per_broadcast'])} ms of server CPU per "
              f"announcement ({_fmt(f5['cpu_us_per_frame'])} µs per family)."]
    else:
        L += ["- Announcement to 5,000 families: not in this run (quick mode tops out at "
              f"{max((int(n) for n in hub_tiers), default=0)})."]
    col = _get(r, "scenarios", "collective")
    if col and "error" not in col:
        L += [f"- Collective send (`collective.send`) to {col['families']} families: accepted in "
              f"{_fmt(col['accepted_ms'])} ms; the last family had its message after {_fmt(col['completion_s'])} s "
              f"({_fmt(col['deliveries_per_s'])} families/s); server CPU {_fmt(col['server_cpu_s'])} s "
              f"({_fmt(col['cpu_ms_per_family'])} ms per family: a conversation created and a message sent for each); "
              f"missing {col['missing']}."]
    elif col:
        L += [f"- Collective send: refused ({col.get('error')})."]
    L += [""]

    # conversations
    conv = _get(r, "scenarios", "conversations")
    setup_sql = _get(r, "scenarios", "conversation_setup_sqlite")
    L += ["## Conversation traffic (1 worker, SQLite, in-process broker)", "",
          "Conversations of 2–5 people (mean "
          f"{_fmt(_get(conv, 'mean_conversation_size'), 2)}), one per parent, created with `conversation.create`"
          + (f" ({setup_sql['conversations']} conversations; {setup_sql['created']} created at "
             f"{_fmt(setup_sql['creates_per_s'])}/s)" if setup_sql else "")
          + ". Open loop at a fixed rate of `message.send`, members taking turns; a delivery is one `message.new` "
            "frame received by one member (the sender's own copy included). Steps are fractions of the closed-loop "
            "capacity (the persistence run), then the issue's 40,000 deliveries/s.", ""]
    if conv:
        L += _table(_STEP_HEADER, [_step_row(s) for s in conv["steps"]]) + [""]
        pg = _get(r, "scenarios", "conversations_postgresql")
        if pg:
            L += ["The same ladder on PostgreSQL (in-process broker, one worker), at fractions of its own closed-loop "
                  f"capacity ({_fmt(pg['capacity_deliveries_per_s'])} deliveries/s):", ""]
            L += _table(_STEP_HEADER, [_step_row(s) for s in pg["steps"]]) + [""]
        for s in conv["steps"]:
            L += _profile_lines(f"Profile at {s.get('fraction_of_capacity', 0):.0%} of capacity ({s['label']}, "
                                "a separate pass after the measured one)", s.get("profile"))

    # persistence
    per = _get(r, "scenarios", "persistence") or {}
    L += ["## Persistence (1 worker, in-process broker)", "",
          "Closed loop: S parents each keep one `message.send` in flight (next one on the `ok`, at most 18/s each); "
          "every `ok` is a committed message.", ""]
    rows = []
    for db in ("sqlite", "postgresql"):
        s = per.get(db)
        if s:
            rows.append([db, s["senders"], s["acked_per_s"], s["ack_p50_ms"], s["ack_p99_ms"], s["deliveries_per_s"],
                         s["p50_ms"], s["p99_ms"], s["cpu_us_per_frame"], s["server_cpu_percent"], s["peak_rss_mib"]])
    L += _table(["database", "senders", "acked msg/s", "ack p50 ms", "ack p99 ms", "deliveries/s", "p50 ms",
                 "p99 ms", "CPU µs/frame", "server CPU %", "peak RSS MiB"], rows) + [""]
    for db in ("sqlite", "postgresql"):
        L += _profile_lines(f"Persistence profile, {db}", _get(per, db, "profile"))

    # workers
    wk = _get(r, "scenarios", "workers") or {}
    L += ["## One worker and two (PostgreSQL + Redis)", "",
          "The same closed-loop conversation traffic, and the same announcement fan-out, on one hub process and on "
          "two (clients split between them; each event crosses Redis). Server figures are both workers together.",
          ""]
    rows = []
    for name in ("1-worker", "2-worker"):
        c = _get(wk, name, "conversations")
        if c:
            rows.append([name, "conversations", c["deliveries_per_s"], c["acked_per_s"], c["cpu_us_per_frame"],
                         c["p50_ms"], c["p99_ms"], c["peak_rss_mib"], c["server_cpu_percent"]])
        tiers = _get(wk, name, "fanout", "tiers") or {}
        for n, t in tiers.items():
            f = t["figure"]
            rows.append([name, f"fan-out N={n}", f["deliveries_per_s"], "—", f["cpu_us_per_frame"], f["p50_ms"],
                         f["p99_ms"], f["peak_rss_mib"], "—"])
    L += _table(["hub", "traffic", "deliveries/s", "acked msg/s", "CPU µs/frame", "p50 ms", "p99 ms", "peak RSS MiB",
                 "server CPU %"], rows) + [""]

    # uploads
    up = _get(r, "scenarios", "uploads")
    L += ["## Issue #3: uploads", ""]
    if up:
        L += [f"`POST /api/uploads?name=x.pdf`, raw body, a valid PDF of {up['file_bytes']:,} bytes: "
              f"{_fmt(up['single_mb_per_s'])} MB/s for one upload at a time; {up['parallel']} in parallel: "
              f"{_fmt(up['parallel_aggregate_mb_per_s'])} MB/s in aggregate ({_fmt(up['parallel_each_mb_per_s'])} MB/s "
              f"each, {_fmt(up['parallel_wall_s'])} s). Server peak RSS during the parallel uploads "
              f"{_fmt(up['peak_rss_mib'])} MiB ({_fmt(up['peak_rss_growth_mib'])} MiB above the RSS before them). "
              f"Statuses: {up['statuses']}.", ""]

    # directory
    d = r.get("directory") or {}
    if d:
        ls = d.get("loader_speed") or {}
        L += ["## Set-up notes", "",
              f"- Directory: the school skeleton (schools, groups, staff) is loaded with `python -m chat directory load` "
              f"({_fmt(_get(d, 'sqlite', 'skeleton_cli_seconds'))} s on SQLite); the "
              f"{_get(d, 'sqlite', 'families')} families are inserted in bulk through the hub's models "
              f"({_fmt(_get(d, 'sqlite', 'families_bulk_seconds'))} s), because the loader itself does "
              f"{_fmt(ls.get('families', 0) / ls['seconds'] if ls.get('seconds') else None)} families/s "
              f"({ls.get('families')} families in {_fmt(ls.get('seconds'))} s, measured in this run).",
              "- Tokens are minted in-process with `chat.auth.mint` and the `SECRET_KEY` given to the servers: "
              "the hub's real token format (HS256 JWT, audience `chat-hub`), each in a session row as a sign-in writes it.",
              "- Peers have no sign-in, no persistence and no per-recipient authorisation: they are the floor.", ""]
    if r.get("failures"):
        L += ["## Failures", ""]
        for f in r["failures"]:
            L += [f"- {f['scenario']}: `{f['error'][-300:]}`"]
        L += [""]
    return "\n".join(L) + "\n"
