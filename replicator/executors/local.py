"""Local executor: a thread pool; bins are pulled lazily so memory stays bounded."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from replicator.executors.base import Executor
from replicator.transfer import Outcome, StageContext, Task, stage


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, workers: int = 8) -> None:
        self.workers = workers

    def run(self, bins: Iterator[list[Task]], ctx: StageContext) -> Iterator[Outcome]:
        tasks = (task for b in bins for task in b)
        limit = self.workers * 4
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="copy") as pool:
            inflight: set[Future] = set()
            exhausted = False
            while True:
                while not exhausted and len(inflight) < limit:
                    task = next(tasks, None)
                    if task is None:
                        exhausted = True
                        break
                    inflight.add(pool.submit(stage, task, ctx))
                if not inflight:
                    return
                done, inflight = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
