"""Remote Hive tables and multi-cluster sync, as Dagster assets (what DBImport's multi-cluster
imports do: import once on cluster A, copy to B, register on B, B runs its ETL on the copy).

For every dataset with a ``hive_table`` whose source cluster has a ``hive_metastore``:

``<A>/<dataset>/import``
    the import on the source cluster A: a pluggable importer writes one partition into A's
    table (the demo's and the tests' importer generates rows with Spark). Its blocking check
    ``previous_copies_finished`` refuses the import of an ``incremental`` dataset while an
    earlier import is not yet copied and registered on every remote cluster (B would miss an
    increment); a full-load dataset is never blocked. First-hop replicas depend on it.
``<B>/<dataset>`` (the replica, built by :mod:`platform_assets.replication.assets`)
    the copy of the partition directory to B.
``<B>/<dataset>/hive_table``
    per target cluster with a metastore (or only ``hive_table.cluster``): creates the table on
    B when missing (columns, partition columns and format from A's table, LOCATION rewritten
    to B's replica), adds or re-points the partition, stamps ``copy_finished`` (asset metadata
    and the TBLPROPERTIES ``copy_finished``, ``copy_finished_partition``, ``copy_slave=1``).
    Check ``row_counts_match`` compares the partition's rows on A and B.
``<B>/<dataset>/etl_summary``
    B's own work on the copy (copy_slave: B never imports the dataset); the
    ``hive_copy_slave_sensor`` starts it for a partition when that partition's ``copy_finished``
    on B is newer than the ETL's own last start.

Modes: ``sync``: job ``hive_<dataset>`` runs import -> replicas -> remote tables in one run.
``async``: job ``hive_import_<dataset>`` runs the import only; ``hive_async_copy_sensor``
requests ``hive_copy_<dataset>`` (replicas + remote tables, step retries with backoff) for every
import not yet registered remotely, and requests it again after a run that failed for good,
until it succeeds (e.g. while B is down).

Whole-table copy (history and custom tables): job ``hive_copy_table`` and
``python -m platform_assets.hive copy-table --from A --to B --database D --table T``
(:mod:`platform_assets.hive.copy_table`).
"""


import datetime as dt
import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import dagster as dg

from platform_assets.history import latest_copies
from platform_assets.hive.names import CHECK_PREVIOUS_COPIES, CHECK_ROW_COUNTS
from platform_assets.hive.spec import iso, partition_spec, table_properties
from platform_assets.hive.view import HiveView, RemoteTableView
from replicator.state import open_store
from resources.hive import HiveError, HiveMetastoreResource, HiveUnavailable
from resources.hive_worker import HiveInputError
from resources.replicator import ReplicatorResource


@dataclass(frozen=True)
class ImportBatch:
    """What an importer produced for one partition: the table's data columns and the rows."""

    columns: list[list[str]]  # [[name, hive type], ...]
    rows: list[list[Any]]


class ImportConfig(dg.Config):
    rows: int = 20  # rows the synthetic importer generates
    seed: int = 0


Importer = Callable[[str, str, ImportConfig], ImportBatch]  # (dataset, partition, config)


def synthetic_import(dataset: str, partition: str, config: ImportConfig) -> ImportBatch:
    """The demo's and the tests' source system: deterministic rows per partition and seed."""
    base = int(hashlib.sha256(f"{dataset}/{partition}/{config.seed}".encode()).hexdigest()[:6], 16)
    rows = [[i, f"item-{(base + i) % 97}", round(((base + i * 31) % 10_000) / 100, 2)]
            for i in range(config.rows)]
    return ImportBatch([["id", "bigint"], ["name", "string"], ["amount", "double"]], rows)


@dataclass(frozen=True)
class PendingCopy:
    cluster: str
    partition: str
    imported_at: float
    copied_at: float | None
    asset: str


def pending_copies(hv: HiveView, instance: dg.DagsterInstance) -> list[PendingCopy]:
    """Imports of the dataset not yet copied (and registered, where a remote table is) on every
    target: the partition's last import is newer than the target's last ``copy_finished``."""
    imports = latest_copies(instance, hv.import_key)  # no copy_finished on imports: the record time
    if not imports:
        return []
    out: list[PendingCopy] = []
    for t in hv.replicas:
        keys = [t.key]
        remote = hv.remote_table(t.cluster)
        if remote is not None:
            keys.append(remote.key)
        for key in keys:
            copies = latest_copies(instance, key, imports)
            for p, imp in sorted(imports.items()):
                c = copies.get(p)
                if c is None or c.copy_finished < imp.copy_finished:
                    out.append(PendingCopy(t.cluster, p, imp.copy_finished,
                                           c.copy_finished if c else None, key.to_user_string()))
    return out


_IN_FLIGHT = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED,
              dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def copies_in_flight(hv: HiveView, instance: dg.DagsterInstance, this_run: str,
                     partitions: Iterable[str]) -> list[str]:
    """Runs other than ``this_run`` that may still copy or register one of ``partitions`` of
    the dataset: not finished, of that partition (every run of these assets is of one
    partition: no backfill policy makes ranged runs), and selecting one of its replicas or
    remote tables (backfills, sensor runs) or running one of its Hive jobs."""
    keys, jobs = hv.copied_keys, hv.copy_jobs
    out = []
    for partition in sorted(set(partitions)):
        for run in instance.get_runs(dg.RunsFilter(statuses=_IN_FLIGHT,
                                                   tags={"dagster/partition": partition})):
            if run.run_id != this_run and (
                    run.job_name in jobs or (run.asset_selection and keys & set(run.asset_selection))):
                out.append(run.run_id)
    return out


def wait_for_previous_copies(
    hv: HiveView, context: dg.AssetExecutionContext, wait_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> list[PendingCopy]:
    """The earlier imports of the dataset still to copy, once none is in flight any more: while
    a copy of them is running or queued (a backfill of several partitions, a sensor run), wait
    for it (up to ``wait_s``) instead of refusing the import."""
    deadline = time.monotonic() + wait_s
    delay = 1.0
    said = None
    while True:
        pending = pending_copies(hv, context.instance)
        if not pending or time.monotonic() >= deadline:
            return pending
        flying = copies_in_flight(hv, context.instance, context.run.run_id,
                                  {p.partition for p in pending})
        if not flying:
            return pending  # nothing will copy them: refuse
        waiting = sorted({p.partition for p in pending})
        if (waiting, flying) != said:  # once per change, not once per poll
            said = (waiting, flying)
            context.log.info(f"import of {hv.name!r} waits for earlier imports to be copied: "
                             f"{', '.join(waiting[:10])} (runs {', '.join(flying[:5])})")
        sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 10.0)


def hive_failure(exc: Exception, what: str) -> dg.Failure:
    """A Hive error as a step failure: retried only while a metastore does not answer."""
    return dg.Failure(description=f"{what}: {exc}", allow_retries=isinstance(exc, HiveUnavailable))


def build_import(hv: HiveView, pdef: dg.PartitionsDefinition, importer: Importer,
                 retry: dg.RetryPolicy) -> dg.AssetsDefinition:
    dataset, a, qualified = hv.name, hv.source_cluster, hv.qualified_table
    db, table = hv.database, hv.table
    pcols = list(hv.partition_columns)

    @dg.asset(
        key=hv.import_key,
        partitions_def=pdef,
        group_name=hv.group,
        description=(
            f"Import of dataset {dataset!r} into {qualified} on cluster {a!r} (the only "
            f"import: remote clusters get copies). Mode {hv.mode}, "
            f"{'incremental' if hv.incremental else 'full load'}."
        ),
        metadata={"hive_table": qualified, "dagster/table_name": qualified,
                  "dagster/uri": hv.shown_source_root, "mode": hv.mode,
                  "incremental": str(hv.incremental).lower()},
        kinds={"hive", hv.dataset.source_kind},
        owners=list(hv.owners),
        tags={"replication/role": "import"},
        retry_policy=retry,  # only while A's metastore does not answer
        check_specs=[dg.AssetCheckSpec(
            CHECK_PREVIOUS_COPIES, asset=hv.import_key, blocking=True,
            description="incremental datasets: every earlier import has been copied and "
                        "registered on every remote cluster before the next import",
        )],
    )
    def _import(context: dg.AssetExecutionContext, config: ImportConfig,
                hive: HiveMetastoreResource, replicator: ReplicatorResource) -> Iterable[Any]:
        partition = context.partition_key
        spec_values = partition_spec(partition)
        if set(spec_values) != set(pcols):
            raise dg.Failure(f"partition {partition!r}: expected the levels {pcols}")
        if not hv.incremental:
            yield from _write(context, config, hive)
            return
        # incremental: one import of the dataset at a time, each after the earlier ones are
        # copied. Wait for copies in flight first (no lock held meanwhile), then check again
        # under the dataset's import lock, held until the import is recorded.
        deadline = time.monotonic() + replicator.lock_wait_s
        while True:
            wait_for_previous_copies(hv, context, max(0.0, deadline - time.monotonic()))
            lock = open_store(replicator.state_path)
            try:
                lock.lock_pair_waiting(f"hive-import:{dataset}", a,
                                       max(0.0, deadline - time.monotonic()))
                pending = pending_copies(hv, context.instance)
                if pending and time.monotonic() < deadline and copies_in_flight(
                        hv, context.instance, context.run.run_id,
                        {p.partition for p in pending}):
                    continue  # another import got in first: wait for its copies
                if pending:
                    desc = "; ".join(
                        f"{p.partition} imported {iso(p.imported_at)} not yet on {p.cluster} ({p.asset})"
                        for p in pending[:10]
                    )
                    yield dg.AssetCheckResult(
                        check_name=CHECK_PREVIOUS_COPIES, passed=False,
                        metadata={"pending": desc, "pending_count": len(pending)},
                    )
                    raise dg.Failure(
                        description=(
                            f"import of incremental dataset {dataset!r} refused: a previous copy is "
                            f"unfinished ({desc}); the remote cluster would miss an increment"
                        ),
                        allow_retries=False,
                    )
                yield from _write(context, config, hive)
                return
            finally:
                lock.close()

    def _write(context: dg.AssetExecutionContext, config: ImportConfig,
               hive: HiveMetastoreResource) -> Iterable[Any]:
        partition = context.partition_key
        spec_values = partition_spec(partition)
        batch = importer(dataset, partition, config)
        try:
            current = hive.client(a).describe_table(db, table)
            if current.get("exists") and current["properties"].get("copy_slave") == "1":
                raise dg.Failure(
                    description=(
                        f"{qualified} on cluster {a!r} is a copy (copy_slave=1, copied from "
                        f"{current['properties'].get('copied_from', '?')}): it is not imported "
                        "here; its data comes from the source cluster's copies"
                    ),
                    allow_retries=False,
                )
            n = hive.client(a).write_partition(
                db, table, batch.columns, spec_values, batch.rows, hv.source_root,
                hv.source_uri(partition),
                mode="append" if hv.incremental else "overwrite",
            )
        except HiveInputError as exc:
            raise dg.Failure(description=f"import into {qualified} on {a}: {exc}") from None
        except HiveError as exc:
            raise hive_failure(exc, f"import into {qualified} on {a}") from None
        yield dg.AssetCheckResult(
            check_name=CHECK_PREVIOUS_COPIES, passed=True,
            metadata={"incremental": hv.incremental, "pending_count": 0},
        )
        yield dg.MaterializeResult(metadata={
            "imported_at": dg.MetadataValue.timestamp(dt.datetime.now(dt.UTC).timestamp()),
            "rows": dg.MetadataValue.int(n),
            "dagster/column_schema": table_schema([*batch.columns, *([c, "string"] for c in pcols)], pcols),
            "hive_table": dg.MetadataValue.text(qualified),
            "cluster": dg.MetadataValue.text(a),
        })

    return _import


def register_partition(hv: HiveView, remote: RemoteTableView, partition: str,
                       hive: HiveMetastoreResource) -> dict[str, Any]:
    """Create B's table if missing (schema from A, location rewritten to B's replica), add or
    re-point the partition, stamp ``copy_finished``; return what was done and both row counts."""
    db, table = hv.database, hv.table
    a, b = hv.source_cluster, remote.cluster
    src = hive.client(a).describe_table(db, table)
    if not src.get("exists"):
        raise HiveError(f"table {db}.{table} does not exist on source cluster {a!r}")
    client_b = hive.client(b)
    props = table_properties(src)
    props.update({"copy_slave": "1", "copied_from": f"{a}.{db}.{table}"})
    created = client_b.create_table(db, table, src["columns"], src["partition_columns"],
                                    remote.root, src.get("format", "parquet"), props)
    pspec = partition_spec(partition)
    outcome = "unpartitioned"
    if pspec:
        outcome = client_b.add_partition(db, table, pspec, remote.uri(partition))
    finished = dt.datetime.now(dt.UTC).timestamp()
    client_b.set_properties(db, table, {
        "copy_finished": iso(finished), "copy_finished_partition": partition, "copy_slave": "1",
    })
    rows_a = hive.client(a).count_rows(db, table, pspec or None)
    rows_b = client_b.count_rows(db, table, pspec or None)
    return {"created": created, "partition": outcome, "copy_finished": finished,
            "rows_source": rows_a, "rows_remote": rows_b,
            "columns": [*src["columns"], *src["partition_columns"]]}


def table_schema(columns: list[list[str]], partition_columns: Iterable[str] = ()) -> dg.TableSchema:
    """Hive columns (``[[name, type], ...]``) as the ``dagster/column_schema`` the UI shows."""
    parts = set(partition_columns)
    return dg.TableSchema(columns=[
        dg.TableColumn(name=n, type=t, description="partition column" if n in parts else None)
        for n, t in columns
    ])


def build_remote_table(hv: HiveView, remote: RemoteTableView, pdef: dg.PartitionsDefinition,
                       retry: dg.RetryPolicy) -> dg.AssetsDefinition:
    qualified, b = hv.qualified_table, remote.cluster
    rkey = remote.replica.key

    @dg.asset(
        key=remote.key,
        deps=[rkey],
        partitions_def=pdef,
        group_name=hv.group,
        description=(
            f"Hive table {qualified} on cluster {b!r} over the replica (copy_slave: "
            f"not imported there), registered from {hv.source_cluster!r}'s table."
        ),
        metadata={"hive_table": qualified, "dagster/table_name": qualified,
                  "dagster/uri": remote.shown_root, "location": remote.shown_root,
                  "copy_slave": "true", "mode": hv.mode},
        kinds={"hive", remote.replica.kind},
        owners=list(hv.owners),
        freshness_policy=hv.freshness,
        tags={"replication/role": "remote_table"},
        retry_policy=retry,
        check_specs=[dg.AssetCheckSpec(
            CHECK_ROW_COUNTS, asset=remote.key, blocking=True,
            description=f"the partition has as many rows on {b!r} as on {hv.source_cluster!r}",
        )],
    )
    def _register(context: dg.AssetExecutionContext, hive: HiveMetastoreResource) -> dg.MaterializeResult:
        partition = context.partition_key
        copied = latest_copies(context.instance, rkey, [partition]).get(partition)
        if copied is None:
            raise dg.Failure(f"partition {partition!r} has no copy on {b!r} yet",
                             allow_retries=False)
        try:
            r = register_partition(hv, remote, partition, hive)
        except HiveInputError as exc:
            raise dg.Failure(description=f"register {qualified} on {b}: {exc}") from None
        except HiveError as exc:
            raise hive_failure(exc, f"register {qualified} on {b}") from None
        context.log.info(
            f"{qualified} on {b}: partition {partition} {r['partition']}, "
            f"copy_finished {iso(r['copy_finished'])}"
        )
        return dg.MaterializeResult(
            metadata={
                "copy_finished": dg.MetadataValue.timestamp(r["copy_finished"]),
                "data_copied": dg.MetadataValue.timestamp(copied.copy_finished),
                "hive_table": dg.MetadataValue.text(qualified),
                "partition_registration": dg.MetadataValue.text(r["partition"]),
                "table_created": dg.MetadataValue.bool(r["created"]),
                "rows": dg.MetadataValue.int(r["rows_remote"]),
                "dagster/row_count": dg.MetadataValue.int(r["rows_remote"]),
                "dagster/column_schema": table_schema(r["columns"], hv.partition_columns),
                "copy_slave": dg.MetadataValue.bool(True),
            },
            check_results=[dg.AssetCheckResult(
                check_name=CHECK_ROW_COUNTS,
                passed=r["rows_source"] == r["rows_remote"],
                metadata={"rows_source": r["rows_source"], "rows_remote": r["rows_remote"]},
            )],
        )

    return _register


def build_etl(hv: HiveView, remote: RemoteTableView, pdef: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    db, table, cluster = hv.database, hv.table, remote.cluster

    @dg.asset(
        key=remote.etl_key,
        deps=[remote.key],
        partitions_def=pdef,
        group_name=hv.group,
        description=f"Cluster {cluster!r}'s ETL on the copied {hv.qualified_table} (here: a row summary).",
        kinds={"hive"},
        owners=list(hv.owners),
        tags={"replication/role": "copy_slave_etl"},
    )
    def _etl(context: dg.AssetExecutionContext, hive: HiveMetastoreResource) -> dg.MaterializeResult:
        started = dt.datetime.now(dt.UTC).timestamp()
        partition = context.partition_key
        upstream_copy = latest_copies(context.instance, remote.key, [partition]).get(partition)
        try:
            rows = hive.client(cluster).count_rows(db, table, partition_spec(partition) or None)
        except HiveError as exc:
            raise hive_failure(exc, f"ETL on {db}.{table} on {cluster}") from None
        md: dict[str, Any] = {"started_at": dg.MetadataValue.timestamp(started),
                              "rows": dg.MetadataValue.int(rows)}
        if upstream_copy is not None:
            md["source_copy_finished"] = dg.MetadataValue.timestamp(upstream_copy.copy_finished)
        return dg.MaterializeResult(metadata=md)

    return _etl
