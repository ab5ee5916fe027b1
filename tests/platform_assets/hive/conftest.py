"""Two simulated clusters, ``a`` (on-prem, where imports run) and ``b`` (the second cluster),
each a local folder with its own embedded Derby metastore in its own worker process (one
SparkSession per metastore). The workers start once per test session, in parallel, and stop at
the end. Each test uses its own datasets/tables and its own Dagster instance."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from platform_assets.config import ReplicationSpec, load_spec
from platform_assets.definitions import build_definitions, build_resources
from resources.hive import HiveMetastoreResource
from tests.fixtures.platform import dagster_home, instance  # noqa: F401

SPEC = """\
version: 1
platform:
  state_path: state/replicator.db
  hive_home: hive
  marker: _SUCCESS.json
  notifier: {kind: jsonl, outbox: outbox/notifications.jsonl}
  retries: {max_retries: 6, delay_s: 0.5, backoff: exponential}
clusters:
  a: {uri: a, hive_metastore: embedded}
  b: {uri: b, hive_metastore: embedded}
datasets:
  sales:        # sync, incremental
    source: {cluster: a, path: warehouse/sales}
    partitions: "dt=*"
    targets: [{cluster: b, path: replica/sales}]
    mode: sync
    hive_table: {database: analytics, table: sales}
  clicks:       # sync: the copy_slave ETL on b
    source: {cluster: a, path: warehouse/clicks}
    partitions: "dt=*"
    targets: [{cluster: b, path: replica/clicks}]
    mode: sync
    hive_table: {database: analytics, table: clicks}
  orders:       # async, incremental: b down then back
    source: {cluster: a, path: warehouse/orders}
    partitions: "dt=*"
    targets: [{cluster: b, path: replica/orders}]
    mode: async
    hive_table: {database: analytics, table: orders}
  ledger:       # async, incremental: the next import waits for the previous copy
    source: {cluster: a, path: warehouse/ledger}
    partitions: "dt=*"
    targets: [{cluster: b, path: replica/ledger}]
    mode: async
    incremental: true
    hive_table: {database: analytics, table: ledger}
  dims:         # sync, unpartitioned, full load (overwrite; deletes mirrored)
    source: {cluster: a, path: warehouse/dims}
    partitions: none
    targets: [{cluster: b, path: replica/dims}]
    mode: sync
    incremental: false
    hive_table: {database: analytics, table: dims}
  snapshots:    # async, full load: never blocked
    source: {cluster: a, path: warehouse/snapshots}
    partitions: "dt=*"
    targets: [{cluster: b, path: replica/snapshots}]
    mode: async
    incremental: false
    hive_table: {database: analytics, table: snapshots}
"""


@dataclass
class HiveEnv:
    root: Path
    spec_path: Path
    spec: ReplicationSpec
    hive: HiveMetastoreResource
    defs: dg.Definitions

    @property
    def b_lock(self) -> Path:
        return Path(self.hive.home) / "b" / "worker.lock"


@pytest.fixture(scope="session")
def hive_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HiveEnv]:
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("no Java runtime for Spark")
    root = tmp_path_factory.mktemp("hive-clusters")
    spec_path = root / "replication.yaml"
    spec_path.write_text(SPEC)
    spec = load_spec(spec_path)
    hive = build_resources(spec)["hive"]
    assert isinstance(hive, HiveMetastoreResource)
    assert hive.home == str(root / "hive")
    with ThreadPoolExecutor(2) as pool:  # both JVMs start at once
        pids = list(pool.map(lambda c: hive.client(c).ping()["pid"], ["a", "b"]))
    assert pids[0] != pids[1]  # two metastores, two processes
    try:
        yield HiveEnv(root, spec_path, spec, hive, build_definitions(spec_path))
    finally:
        for c in ("a", "b"):
            hive.client(c).stop()
