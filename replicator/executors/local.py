"""Local executor: a thread pool; bins are pulled lazily so memory stays bounded.

Small files are handed to the pool in small groups (one pool job stages several files
one after the other) and every outcome comes back through one queue as soon as it is
ready: per-file ``Future`` objects and ``wait()`` over all in-flight futures cost more
than copying a 4 KiB file.

Between two local paths, a bin of small files (up to ``SMALL_FILE`` bytes each) is staged
in the calling thread instead: each is a handful of system calls of a few microseconds,
and threads only take turns at the interpreter lock around them (measured on 2 cores: the
pool spent more CPU than the copies, in lock hand-offs, for no gain in wall time), by
:func:`replicator.transfer.stage_small_local`, one tight loop of system calls per file.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from replicator.errors import DeadlineExceeded
from replicator.executors.base import Executor
from replicator.plan import make_bins
from replicator.transfer import (
    Outcome,
    SmallBatch,
    StageContext,
    Task,
    local_pair,
    small_files,
    stage,
    stage_small_local,
)

GROUP_FILES = 16  # files per pool job at most
GROUP_BYTES = 4 << 20  # and bytes per pool job at most (a bigger task gets a job of its own)


def _groups(bins: Iterator[list[Task]], inline: bool) -> Iterator[tuple[bool, list[Task]]]:
    """``(in the calling thread, tasks)``: a bin of small local files whole, any other bin
    cut into pool jobs by the same rule that makes bins (files and bytes)."""
    for b in bins:
        if inline and (b[0].self_publish or small_files(b)):  # a batch-journalled bin is small
            yield True, b
        else:
            for group in make_bins(b, bin_bytes=GROUP_BYTES, bin_files=GROUP_FILES):
                yield False, group


class _Failed:
    """A pool job died outside :func:`stage` (which returns failures as outcomes)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_JOB_DONE = object()


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, workers: int = 8) -> None:
        self.workers = workers

    def run(self, bins: Iterator[list[Task]], ctx: StageContext) -> Iterator[Outcome | SmallBatch]:
        groups = _groups(bins, inline=local_pair(ctx.src_fs, ctx.dst_fs))
        results: queue.SimpleQueue = queue.SimpleQueue()
        limit = self.workers * 2  # pool jobs handed out and not finished: bounded look-ahead
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="copy")
        gave_up = False
        try:

            def job(tasks: list[Task]) -> None:
                try:
                    for task in tasks:
                        if ctx.past_deadline():
                            break  # not started: the report lists it as not done
                        results.put(stage(task, ctx))
                except BaseException as exc:  # handed to the driver thread
                    results.put(_Failed(exc))
                finally:
                    results.put(_JOB_DONE)

            jobs = 0
            exhausted = False
            while True:
                while not exhausted and jobs < limit:
                    found = next(groups, None)  # pulled from the calling thread: journals the bin
                    if found is None:
                        exhausted = True
                        break
                    here, group = found
                    if here:  # stops at the deadline: the report lists the rest as not done
                        yield from stage_small_local(group, ctx, batched=True)
                        continue
                    pool.submit(job, group)
                    jobs += 1
                if not jobs:
                    return
                try:
                    timeout = None if ctx.deadline is None else max(0.0, ctx.deadline - time.time())
                    out = results.get(timeout=timeout)
                except queue.Empty:
                    # workers stuck in calls to a server that stopped answering: stop waiting
                    # for them (they end at their request timeouts and start nothing new)
                    gave_up = True
                    raise DeadlineExceeded("the run's deadline passed") from None
                if out is _JOB_DONE:
                    jobs -= 1
                elif isinstance(out, _Failed):
                    raise out.exc
                else:
                    yield out
        finally:
            pool.shutdown(wait=not gave_up, cancel_futures=True)
