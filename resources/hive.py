"""Hive metastores as a Dagster resource: one worker process (one SparkSession) per metastore.

Two Hive metastores cannot share one SparkSession, so :class:`HiveMetastoreResource` gives
each cluster a :class:`HiveClient` driving a long-lived ``resources/hive_worker.py`` process
(JSON lines over stdin/stdout). Workers start lazily on first use, are reused by every later
call in the same Python process, and stop at exit (or with :meth:`HiveClient.stop`).

A cluster's metastore setting (``hive_metastore`` in ``replication.yaml``):

* ``embedded``: an embedded Derby metastore and a warehouse directory under
  ``<home>/<cluster>/`` (the demo and the tests: each simulated cluster has its own);
* ``thrift://host:port[,thrift://...]``: a real metastore (``hive.metastore.uris``).

Every request is a structured operation; identifiers, types, partition values, locations and
table properties are validated and quoted in the worker (see :mod:`resources.hive_worker`),
never pasted into SQL.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from resources.hive_worker import HIVE_IDENT_RE, THRIFT_RE, HiveInputError

WORKER_FILE = Path(__file__).resolve().with_name("hive_worker.py")
EMBEDDED = "embedded"


class HiveError(RuntimeError):
    """A metastore operation failed (the message is the worker's error)."""


class HiveUnavailable(HiveError):
    """The cluster's metastore cannot be reached now (worker cannot start, died, timed out):
    worth retrying later."""


def check_metastore_setting(value: str) -> str:
    """``embedded`` or ``thrift://host:port[,...]``; anything else is refused."""
    if value == EMBEDDED or THRIFT_RE.match(value):
        return value
    raise ValueError(f"expected 'embedded' or thrift://host:port[,thrift://host:port], got {value!r}")


class HiveClient:
    """Drives one worker process. Thread-safe (one request at a time)."""

    def __init__(self, cluster: str, home: str, metastore: str = EMBEDDED, *,
                 start_timeout_s: float = 300.0, request_timeout_s: float = 600.0) -> None:
        if not HIVE_IDENT_RE.match(cluster):
            raise ValueError(f"cluster name {cluster!r}: expected letters, digits and '_'")
        self.cluster = cluster
        self.home = os.path.abspath(home)
        self.metastore = check_metastore_setting(metastore)
        self.start_timeout_s = start_timeout_s
        self.request_timeout_s = request_timeout_s
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.RLock()
        self._next_id = 0

    # ------------------------------------------------------------------ process
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> str:
        return os.path.join(self.home, "worker.log")

    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            self._stop_proc()
            os.makedirs(self.home, exist_ok=True)
            cmd = [sys.executable, str(WORKER_FILE), "--home", self.home]
            if self.metastore != EMBEDDED:
                cmd += ["--metastore-uris", self.metastore]
            env = dict(os.environ)
            env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            env.setdefault("PYSPARK_PYTHON", sys.executable)
            with open(self.log_path, "ab") as log:
                proc = subprocess.Popen(
                    cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                    text=True, bufsize=1, env=env, cwd=self.home,
                )
            self._proc = proc
            self._lines = queue.Queue()
            threading.Thread(target=self._pump, args=(proc, self._lines), daemon=True,
                             name=f"hive-worker-{self.cluster}").start()
            ready = self._read(self.start_timeout_s, what="start")
            try:
                msg = json.loads(ready)
            except ValueError:
                msg = {"ready": False, "error": f"unexpected output {ready[:200]!r}"}
            if not msg.get("ready"):
                self._stop_proc()
                raise HiveUnavailable(
                    f"Hive metastore of cluster {self.cluster!r} unavailable: {msg.get('error')} "
                    f"(worker log: {self.log_path})"
                )

    @staticmethod
    def _pump(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def _read(self, timeout: float, *, what: str) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self._stop_proc()
            raise HiveUnavailable(
                f"Hive metastore of cluster {self.cluster!r}: no answer to {what} within "
                f"{timeout:.0f}s (worker log: {self.log_path})"
            ) from None
        if line is None:
            code = self._proc.wait(timeout=10) if self._proc else None
            self._proc = None
            raise HiveUnavailable(
                f"Hive metastore of cluster {self.cluster!r}: worker exited (code {code}) during "
                f"{what} (worker log: {self.log_path})"
            )
        return line

    def _stop_proc(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps({"id": -1, "op": "shutdown"}) + "\n")
                proc.stdin.flush()
                proc.stdin.close()
                proc.wait(timeout=30)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass

    def stop(self) -> None:
        with self._lock:
            self._stop_proc()

    # ------------------------------------------------------------------ requests
    def call(self, op: str, **args: Any) -> Any:
        with self._lock:
            self.start()
            assert self._proc is not None and self._proc.stdin is not None
            self._next_id += 1
            rid = self._next_id
            try:
                self._proc.stdin.write(json.dumps({"id": rid, "op": op, "args": args}) + "\n")
                self._proc.stdin.flush()
            except OSError as exc:
                self._stop_proc()
                raise HiveUnavailable(f"Hive metastore of cluster {self.cluster!r}: {exc}") from None
            while True:
                resp = json.loads(self._read(self.request_timeout_s, what=op))
                if resp.get("id") == rid:
                    break
            if resp.get("ok"):
                return resp.get("result")
            if resp.get("kind") == "input":
                raise HiveInputError(resp.get("error"))
            raise HiveError(f"Hive on cluster {self.cluster!r}: {op} failed: {resp.get('error')}")

    def ping(self) -> dict[str, Any]:
        return self.call("ping")

    def describe_table(self, database: str, table: str) -> dict[str, Any]:
        return self.call("describe_table", database=database, table=table)

    def create_table(self, database: str, table: str, columns: list[list[str]],
                     partition_columns: list[list[str]], location: str,
                     file_format: str = "parquet", properties: dict[str, str] | None = None) -> bool:
        return self.call("create_table", database=database, table=table, columns=columns,
                         partition_columns=partition_columns, location=location,
                         file_format=file_format, properties=properties or {})

    def list_partitions(self, database: str, table: str) -> list[dict[str, Any]]:
        return self.call("list_partitions", database=database, table=table)

    def add_partition(self, database: str, table: str, spec: dict[str, str], location: str) -> str:
        return self.call("add_partition", database=database, table=table, spec=spec, location=location)

    def set_properties(self, database: str, table: str, properties: dict[str, str]) -> None:
        self.call("set_properties", database=database, table=table, properties=properties)

    def count_rows(self, database: str, table: str, spec: dict[str, str] | None = None) -> int:
        return int(self.call("count_rows", database=database, table=table, spec=spec))

    def count_by_partition(self, database: str, table: str) -> dict[str, int]:
        return self.call("count_by_partition", database=database, table=table)

    def read_rows(self, database: str, table: str, limit: int = 100_000) -> list[list[Any]]:
        return self.call("read_rows", database=database, table=table, limit=limit)

    def write_partition(self, database: str, table: str, columns: list[list[str]],
                        partition: dict[str, str], rows: list[list[Any]], table_location: str,
                        partition_location: str, file_format: str = "parquet",
                        mode: str = "append") -> int:
        return int(self.call("write_partition", database=database, table=table, columns=columns,
                             partition=partition, rows=rows, table_location=table_location,
                             partition_location=partition_location, file_format=file_format,
                             mode=mode))

    def drop_table(self, database: str, table: str) -> None:
        self.call("drop_table", database=database, table=table)


_CLIENTS: dict[tuple[str, str], HiveClient] = {}
_CLIENTS_LOCK = threading.Lock()


def shared_client(cluster: str, home: str, metastore: str, **kw: Any) -> HiveClient:
    """The process-wide client of one metastore (one worker per metastore per process)."""
    key = (os.path.abspath(home), metastore)
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = _CLIENTS[key] = HiveClient(cluster, home, metastore, **kw)
        return client


def stop_all() -> None:
    """Stop every worker this process started."""
    with _CLIENTS_LOCK:
        clients = list(_CLIENTS.values())
    for c in clients:
        c.stop()


atexit.register(stop_all)


class HiveMetastoreResource(dg.ConfigurableResource):
    """The Hive metastores of the platform's clusters.

    ``metastores`` maps a cluster to ``embedded`` (Derby + warehouse under ``home/<cluster>``)
    or its ``thrift://`` URIs. ``home`` also holds each worker's log and lock.
    """

    home: str = Field(description="directory for embedded metastores, warehouses and worker logs")
    metastores: dict[str, str] = Field(default_factory=dict)
    start_timeout_s: float = Field(default=300.0, gt=0)
    request_timeout_s: float = Field(default=600.0, gt=0)

    def has(self, cluster: str) -> bool:
        return cluster in self.metastores

    def client(self, cluster: str) -> HiveClient:
        if cluster not in self.metastores:
            raise HiveError(f"cluster {cluster!r} has no Hive metastore configured")
        return shared_client(
            cluster, os.path.join(self.home, cluster), check_metastore_setting(self.metastores[cluster]),
            start_timeout_s=self.start_timeout_s, request_timeout_s=self.request_timeout_s,
        )

    def wait_available(self, cluster: str, timeout_s: float) -> bool:
        """Whether the cluster's metastore answers within ``timeout_s`` (polling starts)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.client(cluster).ping()
                return True
            except HiveUnavailable:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.5)
