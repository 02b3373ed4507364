"""The coordinator's handle on the load-generator processes."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import threading
from typing import Any

from loadgen import worker


class WorkerError(RuntimeError):
    """A command failed inside a load-generator process (its traceback is the message)."""


class Workers:
    """``count`` load-generator processes; ``call`` one, or ``all`` with per-process arguments."""

    def __init__(self, count: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes = []
        self.processes = []
        for index in range(count):
            parent, child = ctx.Pipe(duplex=True)
            process = ctx.Process(target=worker.main, args=(child, index), name=f"loadgen-{index}", daemon=True)
            process.start()
            child.close()
            self.pipes.append(parent)
            self.processes.append(process)
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future] = {}
        self.loop = asyncio.get_running_loop()
        # One reader thread per pipe: the pipes stay blocking, so a large answer
        # (hundreds of thousands of latencies) is read whole.
        for pipe in self.pipes:
            threading.Thread(target=self._read_answers, args=(pipe,), daemon=True).start()

    def __len__(self) -> int:
        return len(self.pipes)

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def _read_answers(self, pipe) -> None:
        while True:
            try:
                message = pipe.recv()
            except (EOFError, OSError):
                self.loop.call_soon_threadsafe(self._lost)
                return
            self.loop.call_soon_threadsafe(self._answer, message)

    def _lost(self) -> None:
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(WorkerError("a load-generator process exited"))

    def _answer(self, message: dict) -> None:
        future = self.waiting.pop(message["id"], None)
        if future is None or future.done():
            return
        if "error" in message:
            future.set_exception(WorkerError(message["error"]))
        else:
            future.set_result(message["result"])

    async def call(self, index: int, cmd: str, timeout: float = 900.0, **args: Any) -> Any:
        rid = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.waiting[rid] = future
        self.pipes[index].send({"id": rid, "cmd": cmd, "args": args})
        return await asyncio.wait_for(future, timeout)

    async def all(self, cmd: str, per_worker: list[dict[str, Any]] | None = None, timeout: float = 900.0,
                  **args: Any) -> list[Any]:
        """The same command on every process (``per_worker[i]`` adds process i's own arguments)."""
        return list(await asyncio.gather(*(
            self.call(i, cmd, timeout, **{**args, **(per_worker[i] if per_worker else {})})
            for i in range(len(self)))))

    async def shutdown(self) -> None:
        try:
            await asyncio.wait_for(self.all("quit"), 10)
        except Exception:  # noqa: BLE001 - best effort; processes are daemons
            pass
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
