"""Remote Hive tables and multi-cluster sync, as Dagster assets (what DBImport's multi-cluster
imports do: import once on cluster A, copy to B, register on B, B runs its ETL on the copy).

For every dataset with a ``hive_table`` whose source cluster has a ``hive_metastore``:

``<A>/<dataset>/import``
    the import on the source cluster A: a pluggable importer writes one partition into A's
    table (the demo's and the tests' importer generates rows with Spark). Its blocking check
    ``previous_copies_finished`` refuses the import of an ``incremental`` dataset while an
    earlier import is not yet copied and registered on every remote cluster (B would miss an
    increment); a full-load dataset is never blocked. First-hop replicas depend on it.
``<B>/<dataset>`` (the replica, built by :mod:`platform_assets.factory`)
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
``python -m platform_assets.hive copy-table --from A --to B --database D --table T``.
"""


import argparse
import datetime as dt
import hashlib
import posixpath
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from platform_assets.config import (
    HIVE_IDENT_RE,
    UNPARTITIONED_KEY,
    ReplicationSpec,
    SpecError,
    Target,
)
from platform_assets.factory import (
    import_key,
    latest_copies,
    partitions_def_for,
    replica_key,
    retry_policy_for,
)
from replicator.errors import ReplicatorError
from replicator.secrets import redact
from resources.hive import (
    HiveError,
    HiveMetastoreResource,
    HiveUnavailable,
    check_metastore_setting,
)
from resources.hive_worker import PARTITION_VALUE_RE, HiveInputError
from resources.replicator import ReplicatorResource

CHECK_PREVIOUS_COPIES = "previous_copies_finished"
CHECK_ROW_COUNTS = "row_counts_match"
TAG_HIVE_DATASET = "hive/dataset"
TAG_HIVE_PARTITION = "hive/partition"
TAG_HIVE_IMPORTED = "hive/imported_at"
ASYNC_SENSOR = "hive_async_copy_sensor"
COPY_SLAVE_SENSOR = "hive_copy_slave_sensor"
COPY_TABLE_JOB = "hive_copy_table"
_LEVEL_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]{0,127})=(.+)$")
# properties of A's table that belong to A's metastore, not to the table's definition
_LOCAL_PROPERTIES = {"transient_lastDdlTime", "last_modified_by", "last_modified_time",
                     "numFiles", "totalSize", "numRows", "rawDataSize", "COLUMN_STATS_ACCURATE",
                     "copy_finished", "copy_finished_partition", "copy_slave", "copied_from",
                     "spark.sql.create.version"}


# --------------------------------------------------------------------------- keys and names
def hive_table_key(dataset: str, cluster: str) -> dg.AssetKey:
    return dg.AssetKey([cluster, dataset, "hive_table"])


def etl_key(dataset: str, cluster: str) -> dg.AssetKey:
    return dg.AssetKey([cluster, dataset, "etl_summary"])


def sync_job_name(dataset: str) -> str:
    return f"hive_{dataset}"


def import_job_name(dataset: str) -> str:
    return f"hive_import_{dataset}"


def async_copy_job_name(dataset: str) -> str:
    return f"hive_copy_{dataset}"


def etl_job_name(dataset: str, cluster: str) -> str:
    return f"etl_{cluster}_{dataset}"


def hive_datasets(spec: ReplicationSpec) -> list[str]:
    """Datasets with a Hive table imported on a source cluster that has a metastore."""
    return sorted(d for d in spec.datasets if import_key(spec, d) is not None)


def remote_clusters(spec: ReplicationSpec, dataset: str) -> list[str]:
    """Target clusters where the table is registered: every target with a metastore, or
    only ``hive_table.cluster``."""
    ds = spec.datasets[dataset]
    assert ds.hive_table is not None
    wanted = ds.hive_table.cluster
    return [t.cluster for t in ds.targets
            if spec.clusters[t.cluster].hive_metastore and (wanted is None or t.cluster == wanted)]


def partition_columns(spec: ReplicationSpec, dataset: str) -> list[str]:
    """``dt=*/hour=*`` -> ``["dt", "hour"]``."""
    return [_LEVEL_RE.match(level).group(1) for level in spec.datasets[dataset].layout_levels]  # type: ignore[union-attr]


def partition_spec(partition: str) -> dict[str, str]:
    """``dt=2026-11-20/hour=03`` -> ``{"dt": "2026-11-20", "hour": "03"}``; ``all`` -> ``{}``."""
    if partition == UNPARTITIONED_KEY:
        return {}
    out: dict[str, str] = {}
    for level in partition.split("/"):
        m = _LEVEL_RE.match(level)
        if not m or not PARTITION_VALUE_RE.match(m.group(2)):
            raise HiveInputError(
                f"partition {partition!r}: expected name=value levels with values matching "
                f"{PARTITION_VALUE_RE.pattern}"
            )
        out[m.group(1)] = m.group(2)
    return out


def validate_hive_spec(spec: ReplicationSpec) -> None:
    """The Hive parts of the spec: metastore settings, and Hive-style layouts (``name=*``)
    for datasets with a table. Raises :class:`SpecError` naming file and key."""
    errors = []
    for name, cluster in spec.clusters.items():
        if cluster.hive_metastore:
            try:
                check_metastore_setting(cluster.hive_metastore)
            except ValueError as exc:
                errors.append(f"{spec.source_file}: clusters.{name}.hive_metastore: {exc}")
    for d in hive_datasets(spec):
        for level in spec.datasets[d].layout_levels:
            if not _LEVEL_RE.match(level):
                errors.append(
                    f"{spec.source_file}: datasets.{d}.partitions: a dataset with a hive_table "
                    f"needs Hive-style levels such as 'dt=*', got {level!r}"
                )
    if errors:
        raise SpecError("\n".join(errors))


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="microseconds")


def _local_path(location: str) -> str:
    return location[len("file:"):] if location.startswith("file:") else location


# --------------------------------------------------------------------------- import
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


def pending_copies(spec: ReplicationSpec, dataset: str, instance: dg.DagsterInstance) -> list[PendingCopy]:
    """Imports of ``dataset`` not yet copied (and registered, where a remote table is) on every
    target: the partition's last import is newer than the target's last ``copy_finished``."""
    ikey = import_key(spec, dataset)
    assert ikey is not None
    imports = latest_copies(instance, ikey)  # no copy_finished on imports: the record time
    if not imports:
        return []
    tables = set(remote_clusters(spec, dataset))
    out: list[PendingCopy] = []
    for t in spec.datasets[dataset].targets:
        keys = [replica_key(dataset, t.cluster)]
        if t.cluster in tables:
            keys.append(hive_table_key(dataset, t.cluster))
        for key in keys:
            copies = latest_copies(instance, key, imports)
            for p, imp in sorted(imports.items()):
                c = copies.get(p)
                if c is None or c.copy_finished < imp.copy_finished:
                    out.append(PendingCopy(t.cluster, p, imp.copy_finished,
                                           c.copy_finished if c else None, key.to_user_string()))
    return out


def _hive_failure(exc: Exception, what: str) -> dg.Failure:
    return dg.Failure(description=f"{what}: {exc}", allow_retries=isinstance(exc, HiveUnavailable))


def _build_import(spec: ReplicationSpec, dataset: str, pdef: dg.PartitionsDefinition,
                  importer: Importer) -> dg.AssetsDefinition:
    ds = spec.datasets[dataset]
    assert ds.hive_table is not None
    key = import_key(spec, dataset)
    assert key is not None
    a = ds.source.cluster
    db, table = ds.hive_table.database, ds.hive_table.table
    pcols = partition_columns(spec, dataset)

    @dg.asset(
        key=key,
        partitions_def=pdef,
        group_name=dataset,
        description=(
            f"Import of dataset {dataset!r} into {db}.{table} on cluster {a!r} (the only "
            f"import: remote clusters get copies). Mode {ds.mode}, "
            f"{'incremental' if ds.incremental else 'full load'}."
        ),
        metadata={"hive_table": f"{db}.{table}", "mode": ds.mode,
                  "incremental": str(ds.incremental).lower()},
        kinds={"hive"},
        tags={"replication/role": "import"},
        retry_policy=retry_policy_for(spec),  # only while A's metastore does not answer
        check_specs=[dg.AssetCheckSpec(
            CHECK_PREVIOUS_COPIES, asset=key, blocking=True,
            description="incremental datasets: every earlier import has been copied and "
                        "registered on every remote cluster before the next import",
        )],
    )
    def _import(context: dg.AssetExecutionContext, config: ImportConfig,
                hive: HiveMetastoreResource) -> Iterable[Any]:
        partition = context.partition_key
        spec_values = partition_spec(partition)
        if set(spec_values) != set(pcols):
            raise dg.Failure(f"partition {partition!r}: expected the levels {pcols}")
        if ds.incremental:
            pending = pending_copies(spec, dataset, context.instance)
            if pending:
                desc = "; ".join(
                    f"{p.partition} imported {_iso(p.imported_at)} not yet on {p.cluster} ({p.asset})"
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
        batch = importer(dataset, partition, config)
        table_loc = spec.endpoint_uri(ds.source)
        try:
            current = hive.client(a).describe_table(db, table)
            if current.get("exists") and current["properties"].get("copy_slave") == "1":
                raise dg.Failure(
                    description=(
                        f"{db}.{table} on cluster {a!r} is a copy (copy_slave=1, copied from "
                        f"{current['properties'].get('copied_from', '?')}): it is not imported "
                        "here; its data comes from the source cluster's copies"
                    ),
                    allow_retries=False,
                )
            n = hive.client(a).write_partition(
                db, table, batch.columns, spec_values, batch.rows, table_loc,
                spec.endpoint_uri(ds.source, partition),
                mode="append" if ds.incremental else "overwrite",
            )
        except HiveInputError as exc:
            raise dg.Failure(description=f"import into {db}.{table} on {a}: {exc}") from None
        except HiveError as exc:
            raise _hive_failure(exc, f"import into {db}.{table} on {a}") from None
        yield dg.AssetCheckResult(
            check_name=CHECK_PREVIOUS_COPIES, passed=True,
            metadata={"incremental": ds.incremental, "pending_count": 0},
        )
        yield dg.MaterializeResult(metadata={
            "imported_at": dg.MetadataValue.timestamp(dt.datetime.now(dt.UTC).timestamp()),
            "rows": dg.MetadataValue.int(n),
            "hive_table": dg.MetadataValue.text(f"{db}.{table}"),
            "cluster": dg.MetadataValue.text(a),
        })

    return _import


# --------------------------------------------------------------------------- remote table
def register_partition(spec: ReplicationSpec, dataset: str, target: Target, partition: str,
                       hive: HiveMetastoreResource) -> dict[str, Any]:
    """Create B's table if missing (schema from A, location rewritten to B's replica), add or
    re-point the partition, stamp ``copy_finished``; return what was done and both row counts."""
    ds = spec.datasets[dataset]
    assert ds.hive_table is not None
    db, table = ds.hive_table.database, ds.hive_table.table
    a, b = ds.source.cluster, target.cluster
    src = hive.client(a).describe_table(db, table)
    if not src.get("exists"):
        raise HiveError(f"table {db}.{table} does not exist on source cluster {a!r}")
    remote = hive.client(b)
    props = {k: v for k, v in src.get("properties", {}).items()
             if k not in _LOCAL_PROPERTIES and not k.startswith(("spark.", "option."))}
    props.update({"copy_slave": "1", "copied_from": f"{a}.{db}.{table}"})
    created = remote.create_table(db, table, src["columns"], src["partition_columns"],
                                  spec.endpoint_uri(target), src.get("format", "parquet"), props)
    pspec = partition_spec(partition)
    outcome = "unpartitioned"
    if pspec:
        outcome = remote.add_partition(db, table, pspec, spec.endpoint_uri(target, partition))
    finished = dt.datetime.now(dt.UTC).timestamp()
    remote.set_properties(db, table, {
        "copy_finished": _iso(finished), "copy_finished_partition": partition, "copy_slave": "1",
    })
    rows_a = hive.client(a).count_rows(db, table, pspec or None)
    rows_b = remote.count_rows(db, table, pspec or None)
    return {"created": created, "partition": outcome, "copy_finished": finished,
            "rows_source": rows_a, "rows_remote": rows_b}


def _build_remote_table(spec: ReplicationSpec, dataset: str, target: Target,
                        pdef: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    ds = spec.datasets[dataset]
    assert ds.hive_table is not None
    db, table = ds.hive_table.database, ds.hive_table.table
    key = hive_table_key(dataset, target.cluster)
    rkey = replica_key(dataset, target.cluster)

    @dg.asset(
        key=key,
        deps=[rkey],
        partitions_def=pdef,
        group_name=dataset,
        description=(
            f"Hive table {db}.{table} on cluster {target.cluster!r} over the replica (copy_slave: "
            f"not imported there), registered from {ds.source.cluster!r}'s table."
        ),
        metadata={"hive_table": f"{db}.{table}", "location": redact(spec.endpoint_uri(target)),
                  "copy_slave": "true", "mode": ds.mode},
        kinds={"hive"},
        tags={"replication/role": "remote_table"},
        retry_policy=retry_policy_for(spec),
        check_specs=[dg.AssetCheckSpec(
            CHECK_ROW_COUNTS, asset=key, blocking=True,
            description=f"the partition has as many rows on {target.cluster!r} as on "
                        f"{ds.source.cluster!r}",
        )],
    )
    def _register(context: dg.AssetExecutionContext, hive: HiveMetastoreResource) -> dg.MaterializeResult:
        partition = context.partition_key
        copied = latest_copies(context.instance, rkey, [partition]).get(partition)
        if copied is None:
            raise dg.Failure(f"partition {partition!r} has no copy on {target.cluster!r} yet",
                             allow_retries=False)
        try:
            r = register_partition(spec, dataset, target, partition, hive)
        except HiveInputError as exc:
            raise dg.Failure(description=f"register {db}.{table} on {target.cluster}: {exc}") from None
        except HiveError as exc:
            raise _hive_failure(exc, f"register {db}.{table} on {target.cluster}") from None
        context.log.info(
            f"{db}.{table} on {target.cluster}: partition {partition} {r['partition']}, "
            f"copy_finished {_iso(r['copy_finished'])}"
        )
        return dg.MaterializeResult(
            metadata={
                "copy_finished": dg.MetadataValue.timestamp(r["copy_finished"]),
                "data_copied": dg.MetadataValue.timestamp(copied.copy_finished),
                "hive_table": dg.MetadataValue.text(f"{db}.{table}"),
                "partition_registration": dg.MetadataValue.text(r["partition"]),
                "table_created": dg.MetadataValue.bool(r["created"]),
                "rows": dg.MetadataValue.int(r["rows_remote"]),
                "copy_slave": dg.MetadataValue.bool(True),
            },
            check_results=[dg.AssetCheckResult(
                check_name=CHECK_ROW_COUNTS,
                passed=r["rows_source"] == r["rows_remote"],
                metadata={"rows_source": r["rows_source"], "rows_remote": r["rows_remote"]},
            )],
        )

    return _register


def _build_etl(spec: ReplicationSpec, dataset: str, cluster: str,
               pdef: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    ds = spec.datasets[dataset]
    assert ds.hive_table is not None
    db, table = ds.hive_table.database, ds.hive_table.table
    upstream = hive_table_key(dataset, cluster)

    @dg.asset(
        key=etl_key(dataset, cluster),
        deps=[upstream],
        partitions_def=pdef,
        group_name=dataset,
        description=f"Cluster {cluster!r}'s ETL on the copied {db}.{table} (here: a row summary).",
        kinds={"hive"},
        tags={"replication/role": "copy_slave_etl"},
    )
    def _etl(context: dg.AssetExecutionContext, hive: HiveMetastoreResource) -> dg.MaterializeResult:
        started = dt.datetime.now(dt.UTC).timestamp()
        partition = context.partition_key
        upstream_copy = latest_copies(context.instance, upstream, [partition]).get(partition)
        try:
            rows = hive.client(cluster).count_rows(db, table, partition_spec(partition) or None)
        except HiveError as exc:
            raise _hive_failure(exc, f"ETL on {db}.{table} on {cluster}") from None
        md: dict[str, Any] = {"started_at": dg.MetadataValue.timestamp(started),
                              "rows": dg.MetadataValue.int(rows)}
        if upstream_copy is not None:
            md["source_copy_finished"] = dg.MetadataValue.timestamp(upstream_copy.copy_finished)
        return dg.MaterializeResult(metadata=md)

    return _etl


# --------------------------------------------------------------------------- sensors
def _latest_metadata_value(instance: dg.DagsterInstance, key: dg.AssetKey, partitions: Iterable[str],
                           name: str) -> dict[str, float]:
    """The latest materialization's ``name`` timestamp per partition (record time if absent)."""
    wanted = set(partitions)
    out: dict[str, float] = {}
    cursor = None
    while True:
        res = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1000,
                                              cursor=cursor)
        for rec in res.records:
            p = rec.partition_key or UNPARTITIONED_KEY
            if p in out or p not in wanted:
                continue
            md = rec.asset_materialization.metadata if rec.asset_materialization else {}
            v = md.get(name)
            out[p] = float(v.value) if v is not None else rec.timestamp
        if not res.has_more or wanted <= out.keys():
            return out
        cursor = res.cursor


def copy_slave_requests(spec: ReplicationSpec, instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    """ETL runs on each remote cluster for the partitions whose ``copy_finished`` there is newer
    than the ETL's own last start (or that never ran)."""
    out = []
    for d in hive_datasets(spec):
        for b in remote_clusters(spec, d):
            copies = latest_copies(instance, hive_table_key(d, b))
            started = _latest_metadata_value(instance, etl_key(d, b), copies, "started_at")
            for p, c in sorted(copies.items()):
                if p in started and started[p] >= c.copy_finished:
                    continue
                out.append(dg.RunRequest(
                    run_key=f"{d}|{b}|{p}|{c.copy_finished:.6f}",
                    job_name=etl_job_name(d, b),
                    partition_key=p,
                    tags={TAG_HIVE_DATASET: d, TAG_HIVE_PARTITION: p},
                ))
    return out


def async_copy_requests(spec: ReplicationSpec, instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    """For each ``async`` dataset, one copy run per partition whose import is not copied and
    registered everywhere yet, unless such a run is queued or in progress. A run that failed
    for good (step retries spent) is requested again (new run key) on a later tick."""
    out = []
    for d in hive_datasets(spec):
        if spec.datasets[d].mode != "async":
            continue
        pending: dict[str, float] = {}
        for p in pending_copies(spec, d, instance):
            pending[p.partition] = p.imported_at
        for p, imported_at in sorted(pending.items()):
            tags = {TAG_HIVE_DATASET: d, TAG_HIVE_PARTITION: p, TAG_HIVE_IMPORTED: f"{imported_at:.6f}"}
            runs = instance.get_runs(filters=dg.RunsFilter(job_name=async_copy_job_name(d), tags=tags))
            if any(not r.is_finished for r in runs):
                continue
            failed = sum(1 for r in runs if r.status == dg.DagsterRunStatus.FAILURE)
            out.append(dg.RunRequest(
                run_key=f"{d}|{p}|{imported_at:.6f}|{failed}",
                job_name=async_copy_job_name(d),
                partition_key=p,
                tags=tags,
            ))
    return out


# --------------------------------------------------------------------------- whole table
@dataclass
class TableCopyResult:
    source: str
    target: str
    location: str
    partitions: int
    rows_source: dict[str, int]
    rows_target: dict[str, int]
    files_copied: int = 0
    bytes_copied: int = 0
    created: bool = False
    reports: list[dict[str, Any]] = field(default_factory=list)

    @property
    def identical_counts(self) -> bool:
        return self.rows_source == self.rows_target


def _under(root: str, location: str) -> str | None:
    """``location`` relative to ``root`` (``""`` for the root itself), or None when outside."""
    root = root.rstrip("/")
    loc = _local_path(location).rstrip("/")
    if loc == root:
        return ""
    if loc.startswith(root + "/"):
        rel = loc[len(root) + 1:]
        if all(part not in ("", ".", "..") for part in rel.split("/")):
            return rel
    return None


def copy_table(spec: ReplicationSpec, hive: HiveMetastoreResource, replicator: ReplicatorResource,
               source_cluster: str, target_cluster: str, database: str, table: str, *,
               target_path: str | None = None, target_database: str | None = None) -> TableCopyResult:
    """Copy one Hive table from cluster A to B: export A's DDL and partitions, copy the data
    with the engine (verified, incremental on reruns), create the table on B with the same
    schema at the rewritten location and add every partition there."""
    for c in (source_cluster, target_cluster):
        if c not in spec.clusters:
            raise SpecError(f"{spec.source_file}: clusters: no cluster named {c!r}")
        if not hive.has(c):
            raise SpecError(f"{spec.source_file}: clusters.{c}.hive_metastore: expected a metastore")
    if source_cluster == target_cluster:
        raise SpecError("expected two different clusters")
    for name in (database, table, target_database or database):
        if not HIVE_IDENT_RE.match(name):
            raise HiveInputError(f"expected a Hive identifier (letters, digits, '_'), got {name!r}")
    a, b = hive.client(source_cluster), hive.client(target_cluster)
    info = a.describe_table(database, table)
    if not info.get("exists"):
        raise HiveError(f"table {database}.{table} does not exist on cluster {source_cluster!r}")
    a_root, b_root = spec.cluster_root(source_cluster), spec.cluster_root(target_cluster)
    rel = _under(a_root, info["location"])
    if target_path is not None:
        target_path = target_path.strip("/")
        if not target_path or any(p in ("", ".", "..") for p in target_path.split("/")):
            raise HiveInputError(f"target path {target_path!r}: expected a relative path without '..'")
        rel = target_path
    if rel is None:
        raise HiveInputError(
            f"table location {info['location']!r} is outside cluster {source_cluster!r}'s root "
            f"{a_root!r}: pass a target path"
        )
    dst_loc = posixpath.join(b_root, rel) if rel else b_root
    if _under(b_root, dst_loc) is None:
        raise HiveInputError(f"target location {dst_loc!r} escapes cluster {target_cluster!r}")
    partitions = a.list_partitions(database, table) if info["partition_columns"] else []
    # data: the table directory, then partitions stored outside it
    copies: list[tuple[str, str]] = [(_local_path(info["location"]), dst_loc)]
    part_locs: list[tuple[dict[str, str], str]] = []
    for p in partitions:
        inner = _under(_local_path(info["location"]), p["location"])
        if inner is not None:
            part_locs.append((p["spec"], posixpath.join(dst_loc, inner) if inner else dst_loc))
            continue
        outer = _under(a_root, p["location"])
        if outer is None:
            raise HiveInputError(f"partition location {p['location']!r} is outside cluster "
                                 f"{source_cluster!r}'s root")
        copies.append((_local_path(p["location"]), posixpath.join(b_root, outer)))
        part_locs.append((p["spec"], posixpath.join(b_root, outer)))
    result = TableCopyResult(f"{source_cluster}.{database}.{table}",
                             f"{target_cluster}.{target_database or database}.{table}",
                             dst_loc, len(partitions), {}, {})
    opts = replicator.options(checksum=True)
    for src, dst in copies:
        try:
            report = replicator.copy(src, dst, opts)
        except ReplicatorError as exc:
            raise HiveError(f"copy {redact(src)} -> {redact(dst)}: {redact(str(exc))}") from None
        if not report.ok:
            raise HiveError(f"copy {redact(src)} -> {redact(dst)} failed: {report.files_failed} files")
        result.files_copied += report.files_copied
        result.bytes_copied += report.bytes_copied
        result.reports.append({"source": redact(src), "destination": redact(dst),
                               "files_copied": report.files_copied, "verified": report.verified})
    tdb = target_database or database
    props = {k: v for k, v in info.get("properties", {}).items()
             if k not in _LOCAL_PROPERTIES and not k.startswith(("spark.", "option."))}
    props["copied_from"] = f"{source_cluster}.{database}.{table}"
    result.created = b.create_table(tdb, table, info["columns"], info["partition_columns"], dst_loc,
                                    info.get("format", "parquet"), props)
    for pspec, loc in part_locs:
        b.add_partition(tdb, table, pspec, loc)
    b.set_properties(tdb, table, {"copy_finished": _iso(dt.datetime.now(dt.UTC).timestamp())})
    result.rows_source = a.count_by_partition(database, table)
    result.rows_target = b.count_by_partition(tdb, table)
    return result


class CopyTableConfig(dg.Config):
    source_cluster: str
    target_cluster: str
    database: str
    table: str
    target_path: str | None = None
    target_database: str | None = None


def _build_copy_table_job(spec: ReplicationSpec) -> dg.JobDefinition:
    @dg.op(name="copy_hive_table", description="Copy a whole Hive table (data, DDL, partitions).")
    def _copy_op(context: dg.OpExecutionContext, config: CopyTableConfig,
                 hive: HiveMetastoreResource, replicator: ReplicatorResource) -> None:
        try:
            r = copy_table(spec, hive, replicator, config.source_cluster, config.target_cluster,
                           config.database, config.table, target_path=config.target_path,
                           target_database=config.target_database)
        except (HiveError, HiveInputError, SpecError) as exc:
            raise dg.Failure(description=str(exc),
                             allow_retries=isinstance(exc, HiveUnavailable)) from None
        context.log.info(f"{r.source} -> {r.target}: {r.partitions} partitions, "
                         f"{r.files_copied} files copied, rows {r.rows_target}")
        if not r.identical_counts:
            raise dg.Failure(description=f"row counts differ: {r.rows_source} vs {r.rows_target}")

    @dg.job(name=COPY_TABLE_JOB, description="Copy one Hive table from a cluster to another, on demand.")
    def _job() -> None:
        _copy_op()

    return _job


# --------------------------------------------------------------------------- bundle
@dataclass(frozen=True)
class HiveBundle:
    assets: list[dg.AssetsDefinition]
    jobs: list[Any]
    sensors: list[dg.SensorDefinition]

    @property
    def empty(self) -> bool:
        return not self.assets


def build_hive_resource(spec: ReplicationSpec, home: str) -> HiveMetastoreResource:
    return HiveMetastoreResource(
        home=home,
        metastores={n: c.hive_metastore for n, c in spec.clusters.items() if c.hive_metastore},
    )


def build_hive_bundle(spec: ReplicationSpec, importer: Importer = synthetic_import) -> HiveBundle:
    """The Hive assets, jobs and sensors of ``spec`` (empty when no dataset has a Hive table on
    a cluster with a metastore)."""
    validate_hive_spec(spec)
    assets: list[dg.AssetsDefinition] = []
    jobs: list[Any] = []
    etl_jobs: list[Any] = []
    async_jobs: list[Any] = []
    for d in hive_datasets(spec):
        ds = spec.datasets[d]
        pdef = partitions_def_for(spec, d)
        ikey = import_key(spec, d)
        assert ikey is not None
        assets.append(_build_import(spec, d, pdef, importer))
        remote_keys = [replica_key(d, t.cluster) for t in ds.targets]
        tables = remote_clusters(spec, d)
        for t in ds.targets:
            if t.cluster in tables:
                assets.append(_build_remote_table(spec, d, t, pdef))
                assets.append(_build_etl(spec, d, t.cluster, pdef))
                remote_keys.append(hive_table_key(d, t.cluster))
                etl_jobs.append(dg.define_asset_job(
                    etl_job_name(d, t.cluster), selection=[etl_key(d, t.cluster)],
                    partitions_def=pdef, tags={TAG_HIVE_DATASET: d},
                    description=f"{t.cluster}'s ETL on the copied {d} (started by {COPY_SLAVE_SENSOR}).",
                ))
        copy_sel = dg.AssetSelection.assets(*remote_keys)
        # copy + registration alone: what the async sensor runs, and how an operator finishes
        # a sync run whose registration failed for good (the next incremental import waits)
        async_jobs.append(dg.define_asset_job(
            async_copy_job_name(d), selection=copy_sel, partitions_def=pdef,
            tags={TAG_HIVE_DATASET: d},
            description=f"copy {d} to its targets and register the remote tables "
                        "(retried with backoff until the remote cluster answers).",
        ))
        if ds.mode == "sync":
            jobs.append(dg.define_asset_job(
                sync_job_name(d), selection=dg.AssetSelection.assets(ikey) | copy_sel,
                partitions_def=pdef, tags={TAG_HIVE_DATASET: d},
                description=f"sync: import {d} on {ds.source.cluster}, copy it and register it "
                            "remotely, in one run.",
            ))
        else:
            jobs.append(dg.define_asset_job(
                import_job_name(d), selection=dg.AssetSelection.assets(ikey), partitions_def=pdef,
                tags={TAG_HIVE_DATASET: d},
                description=f"async: import {d} on {ds.source.cluster} only; {ASYNC_SENSOR} copies it.",
            ))
    sensors: list[dg.SensorDefinition] = []
    async_names = {async_copy_job_name(d) for d in hive_datasets(spec) if spec.datasets[d].mode == "async"}
    if async_names:
        @dg.sensor(name=ASYNC_SENSOR, jobs=[j for j in async_jobs if j.name in async_names],
                   minimum_interval_seconds=30,
                   default_status=dg.DefaultSensorStatus.RUNNING,
                   description="Requests the copy of every async import not yet on its remote "
                               "clusters, and again after a copy run that failed for good.")
        def _async_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
            return dg.SensorResult(run_requests=async_copy_requests(spec, context.instance))

        sensors.append(_async_sensor)
    if etl_jobs:
        @dg.sensor(name=COPY_SLAVE_SENSOR, jobs=etl_jobs, minimum_interval_seconds=30,
                   default_status=dg.DefaultSensorStatus.RUNNING,
                   description="Starts each remote cluster's ETL on a partition when its "
                               "copy_finished is newer than the ETL's own last start.")
        def _slave_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
            return dg.SensorResult(run_requests=copy_slave_requests(spec, context.instance))

        sensors.append(_slave_sensor)
    if hive_datasets(spec):
        jobs.append(_build_copy_table_job(spec))
    return HiveBundle(assets, [*jobs, *async_jobs, *etl_jobs], sensors)


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    """``python -m platform_assets.hive copy-table --from A --to B --database D --table T``."""
    from platform_assets.config import load_spec
    from platform_assets.definitions import SPEC_PATH, build_resources

    ap = argparse.ArgumentParser(prog="python -m platform_assets.hive")
    sub = ap.add_subparsers(dest="command", required=True)
    ct = sub.add_parser("copy-table", help="copy a whole Hive table from one cluster to another")
    ct.add_argument("--spec", default=str(SPEC_PATH))
    ct.add_argument("--from", dest="source", required=True)
    ct.add_argument("--to", dest="target", required=True)
    ct.add_argument("--database", required=True)
    ct.add_argument("--table", required=True)
    ct.add_argument("--target-path", default=None, help="below the target cluster's root")
    ct.add_argument("--target-database", default=None)
    args = ap.parse_args(argv)
    try:
        spec = load_spec(args.spec)
        res = build_resources(spec)
        r = copy_table(spec, res["hive"], res["replicator"], args.source, args.target,
                       args.database, args.table, target_path=args.target_path,
                       target_database=args.target_database)
    except (SpecError, HiveInputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except HiveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{r.source} -> {r.target} at {r.location}: {r.partitions} partitions, "
          f"{r.files_copied} files ({r.bytes_copied} bytes) copied; rows {r.rows_target}")
    return 0 if r.identical_counts else 1


if __name__ == "__main__":
    raise SystemExit(main())

