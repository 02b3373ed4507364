"""The periodic-task helper and the manual clock (issue 18: one helper, one injectable clock)."""

import asyncio
import logging

from chat.clock import ManualClock
from chat.tasks import cancel_and_wait, every


async def test_every_runs_a_step_per_interval_on_the_clock_it_is_given():
    clock = ManualClock()
    runs: list[float] = []

    async def step():
        runs.append(clock.time())

    task = every(10, step, name="tick", clock=clock)
    await clock.advance(0)
    assert runs == [clock.time()]
    start = runs[0]
    await clock.advance(9)
    assert len(runs) == 1
    await clock.advance(1)
    await clock.advance(10)
    assert runs == [start, start + 10, start + 20]
    await cancel_and_wait(task)
    assert task.cancelled()


async def test_every_waits_first_when_asked():
    clock = ManualClock()
    runs = []

    async def step():
        runs.append(clock.time())

    task = every(5, step, name="later", clock=clock, wait_first=True)
    await clock.advance(0)
    assert runs == []
    await clock.advance(5)
    assert len(runs) == 1
    await cancel_and_wait(task)


async def test_a_failing_step_is_logged_once_per_failure_and_the_next_step_runs(caplog):
    clock = ManualClock()
    calls = []

    async def step():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        if len(calls) == 2:
            raise ConnectionError("known outage")

    caplog.set_level(logging.ERROR, logger="chat.tasks")
    task = every(1, step, name="flaky", clock=clock, reported=lambda exc: isinstance(exc, ConnectionError))
    await clock.advance(0)
    await clock.advance(1)
    await clock.advance(1)
    assert len(calls) == 3
    failures = [r for r in caplog.records if r.name == "chat.tasks"]
    assert len(failures) == 1 and "flaky failed" in failures[0].getMessage()
    assert failures[0].exc_info[0] is RuntimeError
    assert not task.done()
    await cancel_and_wait(task)


async def test_manual_clock_wakes_sleepers_in_deadline_order():
    clock = ManualClock()
    woke = []

    async def sleeper(seconds, tag):
        await clock.sleep(seconds)
        woke.append(tag)

    tasks = [asyncio.create_task(sleeper(3, "c")), asyncio.create_task(sleeper(1, "a")),
             asyncio.create_task(sleeper(2, "b"))]
    await asyncio.sleep(0)
    assert clock.sleepers == 3
    await clock.advance(2)
    assert woke == ["a", "b"]
    await clock.advance(1)
    assert woke == ["a", "b", "c"]
    await asyncio.gather(*tasks)
    assert clock.utcnow().timestamp() == clock.time()
