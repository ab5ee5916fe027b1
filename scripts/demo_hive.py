"""`make demo`, Hive part: one Hive table imported on the on-prem cluster and replicated to the
second cluster (dr), each cluster with its own embedded Derby metastore in its own Spark process.

Dataset ``sales`` of ``replication.yaml`` (mode sync, incremental): job ``hive_sales`` imports a
partition into ``analytics.sales`` on onprem, copies it to dr and registers it in dr's metastore
(table created from onprem's schema, location rewritten, ``copy_finished`` stamped), in one run.
Then dr's copy_slave ETL starts because ``copy_finished`` moved. Runs are recorded in the demo's
Dagster home (``make ui``).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASET = "sales"
PARTITIONS = (("dt=2026-11-20", 120), ("dt=2026-11-21", 80))


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def clean() -> None:
    """Remove what this demo owns (its metastores, the sales source and replica), so a rerun of
    `make demo` starts from scratch (the platform demo would otherwise copy last run's sales)."""
    from platform_assets.config import load_spec

    spec = load_spec(REPO / "replication.yaml")
    ds = spec.datasets[DATASET]
    for path in (Path(spec.resolve_location(spec.platform.hive_home)), Path(spec.endpoint_uri(ds.source)),
                 *(Path(spec.endpoint_uri(t)) for t in ds.targets)):
        shutil.rmtree(path, ignore_errors=True)


def main() -> int:
    warnings.filterwarnings("ignore")
    from scripts.demo_platform import prepare_home

    os.environ["DAGSTER_HOME"] = str(prepare_home())
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    import dagster as dg

    from platform_assets.config import load_spec
    from platform_assets.datasets import resolve
    from platform_assets.definitions import build_definitions, build_resources
    from platform_assets.hive.sensors import copy_slave_requests
    from platform_assets.hive.view import resolve_hive
    from platform_assets.runner import QUIET, execute_run_request

    spec = load_spec(REPO / "replication.yaml")
    hs = resolve_hive(resolve(spec))
    hv = hs[DATASET]
    db, table = hv.database, hv.table
    [remote_table] = hv.remote
    source, remote = hv.source_cluster, remote_table.cluster
    hive = build_resources(spec)["hive"]
    clean()  # start from scratch: only what this demo owns
    with ThreadPoolExecutor(2) as pool:  # both Spark processes start at once
        list(pool.map(lambda c: hive.client(c).ping(), (source, remote)))
    defs = build_definitions(REPO / "replication.yaml")
    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions(f"{DATASET}_copies", [p for p, _ in PARTITIONS])

    print(f"== {db}.{table}: import on {source!r}, replicate to {remote!r} "
          f"(mode {hv.mode}, {'incremental' if hv.incremental else 'full load'}; "
          "two metastores, two Spark processes)")
    job = defs.resolve_job_def(hv.sync_job_name)
    ok = True
    for partition, rows in PARTITIONS:
        cfg = {**QUIET, "ops": {f"{source}__{DATASET}__import": {"config": {"rows": rows}}}}
        res = job.execute_in_process(instance=instance, partition_key=partition, run_config=cfg,
                                     raise_on_error=False)
        steps = [e.asset_key.to_user_string() for e in res.get_asset_materialization_events()]
        ok &= res.success
        print(f"  run {res.run_id[:8]} {partition}: {'ok' if res.success else 'FAILED'} "
              f"({' -> '.join(steps)})")

    etl = copy_slave_requests(hs, instance)
    for req in etl:
        res = execute_run_request(defs, instance, req, quiet=True)
        ok &= res.success
        print(f"  copy_slave sensor: {remote} ETL {req.partition_key} started after copy_finished "
              f"moved: {'ok' if res.success else 'FAILED'}")

    a, b = hive.client(source), hive.client(remote)
    info = b.describe_table(db, table)
    counts_a, counts_b = a.count_by_partition(db, table), b.count_by_partition(db, table)
    print()
    print(f"{db}.{table} on {remote} (copy_slave={info['properties'].get('copy_slave')}), "
          f"location {info['location']}")
    print(f"  {'partition':<14} {'rows ' + source:>12} {'rows ' + remote:>9}  copy_finished (UTC)")
    key = remote_table.key
    latest: dict[str, float] = {}
    for rec in instance.fetch_materializations(key, limit=100).records:
        md = rec.asset_materialization.metadata if rec.asset_materialization else {}
        latest.setdefault(rec.partition_key or "all", float(md["copy_finished"].value))
    for partition, _ in PARTITIONS:
        print(f"  {partition:<14} {counts_a.get(partition, 0):>12} {counts_b.get(partition, 0):>9}  "
              f"{_when(latest[partition]) if partition in latest else '-'}")
    print(f"  TBLPROPERTIES copy_finished = {info['properties'].get('copy_finished')} "
          f"(partition {info['properties'].get('copy_finished_partition')})")
    ok &= counts_a == counts_b and len(etl) == len(PARTITIONS)
    print(f"\nHive table replicated {source} -> {remote}, row counts equal: "
          f"{'OK' if ok else 'UNEXPECTED'}")
    for c in (source, remote):
        hive.client(c).stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
