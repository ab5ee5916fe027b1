"""Spark executor: the plan's bins become Spark partitions; each task runs the same
:func:`replicator.transfer.stage` as the local executor and returns plain outcomes.

The driver (``replicator.engine``) stays the only writer of the journal and the
manifest, so what Spark does to a task (retry it after a failure, run it on another
executor) cannot publish a file twice or lose one:

* staged names are deterministic per (run, path), so a retried attempt overwrites the
  staged file of the failed one; nothing is renamed into place inside a task;
* speculation is refused: two live attempts of one task would write the same staged
  file at the same time;
* outcomes come back to the driver, which renames and records them;
* where there is no staged name (object stores write the final key), a retried attempt
  finds the object the failed one wrote, checks its CRC32C against the source and adopts
  it instead of tripping the write precondition
  (:func:`replicator.transfer.adopt_previous_attempt`).

Work is submitted in *waves* of bins (``parallelize(wave, len(wave))``, one bin per
partition), at most two waves in flight, so the driver never holds the whole plan and
the cluster stays busy while the next wave is being journalled.

Settings, lowest precedence first: built-in defaults, ``REPLICATOR_SPARK_MASTER`` and
``REPLICATOR_SPARK_CONF`` (a JSON object of Spark properties) from the environment,
then the constructor arguments (``executor_options`` of :class:`CopyOptions`).

pyspark is imported only when a session is needed, so ``replicator`` imports without it.

Run as a script (``python spark.py copy SRC DST --executor spark ...``) this module is the
``replicator`` CLI: it is the main file of the Dataproc PySpark job
(:func:`replicator.executors.dataproc.pyspark_job`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Any

from replicator.errors import UsageError
from replicator.executors.base import Executor
from replicator.transfer import Outcome, StageContext, Task, Throttle, adopt_previous_attempt, stage

log = logging.getLogger("replicator")

ENV_MASTER = "REPLICATOR_SPARK_MASTER"
ENV_CONF = "REPLICATOR_SPARK_CONF"
DEFAULT_MASTER = "local[2]"
DEFAULT_CONF: dict[str, str] = {
    # two live attempts of one task would write the same staged file
    "spark.speculation": "false",
    # a failed task (executor lost, injected fault) is retried; the driver publishes once
    "spark.task.maxFailures": "4",
    "spark.python.worker.reuse": "true",
    "spark.ui.showConsoleProgress": "false",  # the CLI draws its own progress
}
_LOCAL = re.compile(r"^local\[(\d+|\*)\]$")

#: ``hook(task, outcome, attempt)``: called inside the Spark task after each file is staged.
#: Raising fails the Spark task, which Spark then retries (fault injection, instrumentation).
TaskHook = Callable[[Task, Outcome, int], None]


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def local_master_with_retries(master: str, max_failures: int) -> str:
    """``local[N]`` never retries a failed task; ``local[N,F]`` does (F attempts)."""
    m = _LOCAL.match(master.strip())
    if m and max_failures > 1:
        return f"local[{m.group(1)},{max_failures}]"
    return master


def _under_spark_submit() -> bool:
    """True inside a driver launched by spark-submit (a Dataproc PySpark job): the
    master and the settings are already in the launcher's configuration."""
    return bool(os.environ.get("PYSPARK_GATEWAY_PORT"))


def resolve_settings(master: str | None, conf: dict[str, Any] | None) -> tuple[str | None, dict[str, str]]:
    """Master URL and Spark properties from defaults, the environment and arguments.

    The master is None under spark-submit when none was given: spark-submit's stands."""
    merged: dict[str, str] = dict(DEFAULT_CONF)
    env_conf = os.environ.get(ENV_CONF)
    if env_conf:
        try:
            parsed = json.loads(env_conf)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{ENV_CONF}: expected a JSON object of Spark properties: {exc}") from exc
        if not isinstance(parsed, dict):
            raise UsageError(f"{ENV_CONF}: expected a JSON object of Spark properties")
        merged.update({str(k): str(v) for k, v in parsed.items()})
    merged.update({str(k): str(v) for k, v in (conf or {}).items()})
    if _truthy(merged.get("spark.speculation", "false")):
        raise UsageError("spark.speculation must be false for the spark executor: two attempts "
                         "of one task would write the same staged file")
    master = master or os.environ.get(ENV_MASTER) or (None if _under_spark_submit() else DEFAULT_MASTER)
    if master is None:
        return None, merged
    try:
        max_failures = int(merged.get("spark.task.maxFailures", "1"))
    except ValueError as exc:
        raise UsageError(f"spark.task.maxFailures: expected an integer: {exc}") from exc
    master = local_master_with_retries(master, max_failures)
    if master.startswith("local"):
        # the workers of a local master are children of this interpreter's environment
        merged.setdefault("spark.pyspark.python", sys.executable)
        merged.setdefault("spark.pyspark.driver.python", sys.executable)
        merged.setdefault("spark.driver.host", "127.0.0.1")
        merged.setdefault("spark.driver.bindAddress", "127.0.0.1")
    return master, merged


@dataclass(frozen=True)
class InjectFailure:
    """Task hook for fault-injection tests: fail the first ``attempts`` Spark attempts of
    the task that stages ``rel``, after the file was staged (so a retry overwrites a staged
    file), leaving a marker ``attempt-<n>-failed`` in ``marker_dir`` for each failure."""

    rel: str
    marker_dir: str
    attempts: int = 1

    def __call__(self, task: Task, outcome: Outcome, attempt: int) -> None:
        if task.rel != self.rel or attempt >= self.attempts:
            return
        os.makedirs(self.marker_dir, exist_ok=True)
        with open(os.path.join(self.marker_dir, f"attempt-{attempt}-failed"), "w") as f:
            f.write(task.rel)
        raise RuntimeError(f"injected failure in Spark attempt {attempt} after staging {task.rel}")


def _partition_runner(ctx: StageContext, threads: int, task_mib_s: float | None,
                      hook: TaskHook | None) -> Callable[[Iterable[list[Task]]], Iterator[Outcome]]:
    """The function Spark runs on each partition (one bin). It captures only picklable,
    plain things: the context rebuilds its file systems from options in the task."""

    def run(partition: Iterable[list[Task]]) -> Iterator[Outcome]:
        from pyspark import TaskContext

        tc = TaskContext.get()
        attempt = tc.attemptNumber() if tc is not None else 0
        if task_mib_s:
            ctx.throttle = Throttle(task_mib_s)  # shared by this task's threads
        tasks = [t for b in partition for t in b]

        def one(task: Task) -> Outcome:
            out = adopt_previous_attempt(task, ctx) if attempt > 0 else None
            if out is None:
                out = stage(task, ctx)
            if hook is not None:
                hook(task, out, attempt)
            return out

        if threads <= 1 or len(tasks) <= 1:
            outs = [one(t) for t in tasks]
        else:
            with ThreadPoolExecutor(max_workers=min(threads, len(tasks)),
                                    thread_name_prefix="spark-copy") as pool:
                outs = list(pool.map(one, tasks))  # raises the first failure: the task fails
        yield from outs

    return run


_PY_ERROR = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)): (.+)$")


def _spark_error(exc: BaseException) -> str:
    """The Python error a failed Spark task raised (the last one of the worker traceback),
    or the first line of the JVM error."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for line in reversed(lines):
        if _PY_ERROR.match(line) and not line.startswith(("py4j.", "org.apache.")):
            return line[:500]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:500]


class SparkExecutor(Executor):
    """Run bins as Spark tasks on any master (``local[N]``, YARN, Kubernetes, Dataproc).

    ``workers`` is the total number of concurrent transfers wanted: each Spark task runs
    ``ceil(workers / defaultParallelism)`` transfers at once unless ``task_threads`` is set.
    ``wave_bins`` bounds how many bins (partitions) one Spark job carries (default: four
    per core). ``session``: an existing SparkSession to use (never stopped by us).
    """

    name = "spark"

    def __init__(
        self,
        workers: int = 8,
        master: str | None = None,
        conf: dict[str, Any] | None = None,
        app_name: str = "replicator",
        task_threads: int | None = None,
        wave_bins: int | None = None,
        task_hook: TaskHook | None = None,
        session: Any = None,
    ) -> None:
        self.workers = max(1, int(workers))
        self.master, self.conf = resolve_settings(master, conf)
        self.app_name = app_name
        self.task_threads = task_threads
        self.wave_bins = wave_bins
        self.task_hook = task_hook
        self._session = session
        self._owns_session = False
        self._lock = threading.Lock()
        self.jobs_run = 0
        self.waves_failed = 0

    # ------------------------------------------------------------------ session
    def session(self) -> Any:
        """The SparkSession: the one given, the active one, or a new one (then ours to stop)."""
        with self._lock:
            if self._session is not None:
                return self._session
            from pyspark import SparkContext
            from pyspark.sql import SparkSession

            existing = SparkContext._active_spark_context is not None
            if existing:
                spark = SparkSession.builder.getOrCreate()
            else:
                if self.master and self.master.startswith("local"):
                    # pyspark starts local workers with $PYSPARK_PYTHON (default: python3 on
                    # PATH, which may not be this interpreter or see its packages)
                    os.environ.setdefault("PYSPARK_PYTHON", self.conf["spark.pyspark.python"])
                builder = SparkSession.builder.appName(self.app_name)
                if self.master:
                    builder = builder.master(self.master)
                for key, value in self.conf.items():
                    builder = builder.config(key, value)
                spark = builder.getOrCreate()
                self._owns_session = True
                log.info("started Spark session on %s", spark.sparkContext.master)
            sc_conf = spark.sparkContext.getConf()
            if _truthy(sc_conf.get("spark.speculation", "false")):
                raise UsageError("the Spark session has spark.speculation=true; the spark executor "
                                 "needs it off (two attempts would write the same staged file)")
            self._session = spark
            return spark

    def close(self) -> None:
        with self._lock:
            if self._session is not None and self._owns_session:
                self._session.stop()
            self._session = None
            self._owns_session = False

    # ------------------------------------------------------------------ run
    def run(self, bins: Iterator[list[Task]], ctx: StageContext) -> Iterator[Outcome]:
        spark = self.session()
        sc = spark.sparkContext
        parallelism = max(1, int(sc.defaultParallelism))
        threads = self.task_threads or max(1, math.ceil(self.workers / parallelism))
        wave = self.wave_bins or max(4, 4 * parallelism)
        rate = ctx.throttle.rate if ctx.throttle is not None else None  # bytes/s, whole run
        task_mib_s = rate / (1 << 20) / parallelism if rate else None
        runner = _partition_runner(ctx, threads, task_mib_s, self.task_hook)
        group = f"replicator-{ctx.run_id}-{id(self):x}"
        pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="spark-job")
        pending: deque[tuple[list[list[Task]], Future]] = deque()
        bin_iter = iter(bins)

        def job(chunk: list[list[Task]]) -> list[Outcome]:
            # job groups are thread-local properties (pinned threads): set in the job's thread
            sc.setJobGroup(group, f"replicator copy {ctx.run_id}", interruptOnCancel=True)
            return sc.parallelize(chunk, len(chunk)).mapPartitions(runner).collect()

        finished = False
        try:
            exhausted = False
            while True:
                while not exhausted and len(pending) < 2:
                    chunk = list(islice(bin_iter, wave))  # pulled here: pulling journals a bin
                    if not chunk:
                        exhausted = True
                        break
                    pending.append((chunk, pool.submit(job, chunk)))
                    self.jobs_run += 1
                if not pending:
                    finished = True
                    return
                chunk, fut = pending.popleft()
                try:
                    outs = fut.result()
                except Exception as exc:
                    outs = self._failed_wave(chunk, ctx, exc)
                for out in outs:
                    if ctx.progress is not None and out.bytes_moved:
                        ctx.progress.on_bytes(out.bytes_moved)
                    yield out
        finally:
            if not finished and pending:
                try:
                    sc.cancelJobGroup(group)
                except Exception:  # pragma: no cover - best effort on the way out
                    pass
            pool.shutdown(wait=True, cancel_futures=True)

    def _failed_wave(self, chunk: list[list[Task]], ctx: StageContext,
                     exc: BaseException) -> list[Outcome]:
        """A Spark job failed (a task used up its attempts): every task of the wave fails,
        retryable, and staged leftovers are removed (nothing of the wave was published)."""
        self.waves_failed += 1
        error = f"Spark job failed: {_spark_error(exc)}"
        log.error("%s", error)
        outs: list[Outcome] = []
        seen: set[str] = set()
        for b in chunk:
            for task in b:
                tmp = ctx.staged_path(task.rel)
                if tmp is not None and task.part is None and task.rel not in seen:
                    try:
                        ctx.dst_fs.delete_file(tmp)
                    except Exception:
                        pass
                seen.add(task.rel)
                outs.append(Outcome(task.seq, task.rel, ok=False, error=error, retryable=True))
        return outs


if __name__ == "__main__":  # the main file of the Dataproc PySpark job: the replicator CLI
    from replicator.cli import main as _cli_main

    _cli_main()
