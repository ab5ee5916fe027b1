"""One resolved view per Hive dataset, computed once from the spec in the Hive kind's
``build_defs`` and handed to its assets, sensors and the whole-table copy: the source cluster
and its table location, the remote clusters where the table is registered (each over its
replica), the table, its partition columns, the incremental and freshness settings, and every
Dagster name. Nothing here is re-derived per call.

``resolve_hive(rs)`` checks the Hive parts of the spec (metastore settings, Hive-style layouts)
and contacts nothing: it only joins strings already resolved in :mod:`platform_assets.datasets`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import dagster as dg

from platform_assets.datasets import DatasetView, ResolvedSpec, TargetView, freshness_policy
from platform_assets.engine import retry_policy
from platform_assets.hive.names import (
    async_copy_job_name,
    etl_job_name,
    etl_key,
    hive_table_key,
    import_job_name,
    sync_job_name,
)
from platform_assets.hive.spec import partition_columns, validate_hive_spec
from replicator.secrets import redact


@dataclass(frozen=True)
class RemoteTableView:
    """The table registered on one target cluster over that cluster's replica (copy_slave)."""

    cluster: str
    replica: TargetView  # the copy the table's LOCATION points at
    key: dg.AssetKey  # <cluster>/<dataset>/hive_table
    etl_key: dg.AssetKey  # <cluster>/<dataset>/etl_summary
    etl_job_name: str

    @property
    def root(self) -> str:
        return self.replica.root

    @property
    def shown_root(self) -> str:
        """The table's location as users may see it (passwords and tokens redacted)."""
        return redact(self.replica.root)

    def uri(self, partition: str | None = None) -> str:
        return self.replica.uri(partition)


@dataclass(frozen=True)
class HiveView:
    """One Hive dataset (a dataset with a ``hive_table`` imported on a source cluster that has
    a metastore), resolved."""

    name: str
    dataset: DatasetView  # its replication view: replicas, copy policy, partitions
    database: str
    table: str
    source_cluster: str  # where the table is imported (cluster A)
    source_root: str  # the table's location on A
    partition_columns: tuple[str, ...]  # from the layout: ``dt=*/hour=*`` -> (dt, hour)
    mode: Literal["sync", "async"]
    incremental: bool  # appended partition by partition: imports wait for earlier copies
    freshness: dg.FreshnessPolicy | None  # the remote tables' (the dataset's freshness)
    owners: tuple[str, ...]
    group: str
    # Dagster names
    import_key: dg.AssetKey
    remote: tuple[RemoteTableView, ...]  # every target with a metastore, or hive_table.cluster
    sync_job_name: str  # sync: import -> replicas -> remote tables, one run
    import_job_name: str  # async: the import alone
    async_copy_job_name: str  # replicas + remote tables (the async sensor's, and the repair)
    copy_job_name: str  # the replication kind's copy job of the replicas

    @property
    def qualified_table(self) -> str:
        return f"{self.database}.{self.table}"

    @property
    def shown_source_root(self) -> str:
        """The source location as users may see it (passwords and tokens redacted)."""
        return redact(self.source_root)

    @property
    def replicas(self) -> tuple[TargetView, ...]:
        return self.dataset.targets

    @property
    def remote_keys(self) -> list[dg.AssetKey]:
        return [r.key for r in self.remote]

    @property
    def copied_keys(self) -> frozenset[dg.AssetKey]:
        """The assets that copy or register a partition remotely: replicas and remote tables."""
        return frozenset([*self.dataset.replica_keys, *self.remote_keys])

    @property
    def copy_jobs(self) -> frozenset[str]:
        """The jobs whose runs copy or register a partition remotely."""
        return frozenset({self.sync_job_name, self.async_copy_job_name, self.copy_job_name})

    def remote_table(self, cluster: str) -> RemoteTableView | None:
        """The table registered on ``cluster``, if the table is registered there."""
        return next((r for r in self.remote if r.cluster == cluster), None)

    def source_uri(self, partition: str | None = None) -> str:
        return self.dataset.source_uri(partition)


@dataclass(frozen=True)
class HiveSpec:
    """Every Hive dataset of the spec, resolved (``resolve_hive(rs)``), and what the
    whole-table copy needs of the clusters."""

    datasets: Mapping[str, HiveView]
    cluster_roots: Mapping[str, str]  # every cluster's root URI
    metastores: frozenset[str]  # clusters that have a Hive metastore
    source_file: str  # the spec file, for errors naming it
    retry_policy: dg.RetryPolicy  # step retries of imports and registrations
    sensor_status: dg.DefaultSensorStatus

    def __getitem__(self, dataset: str) -> HiveView:
        return self.datasets[dataset]

    def __iter__(self) -> Iterator[HiveView]:
        return iter(self.datasets[d] for d in sorted(self.datasets))

    def __bool__(self) -> bool:
        return bool(self.datasets)

    def names(self, mode: str | None = None) -> list[str]:
        return sorted(d for d, v in self.datasets.items() if mode is None or v.mode == mode)


def _hive_view(rs: ResolvedSpec, view: DatasetView) -> HiveView:
    ht = view.hive_table
    ikey = view.import_key
    assert ht is not None and ikey is not None
    spec, d = rs.spec, view.name
    remote = tuple(
        RemoteTableView(cluster=t.cluster, replica=t, key=hive_table_key(d, t.cluster),
                        etl_key=etl_key(d, t.cluster), etl_job_name=etl_job_name(d, t.cluster))
        for t in view.targets
        if spec.clusters[t.cluster].hive_metastore and (ht.cluster is None or t.cluster == ht.cluster)
    )
    return HiveView(
        name=d,
        dataset=view,
        database=ht.database,
        table=ht.table,
        source_cluster=view.source_cluster,
        source_root=view.source_root,
        partition_columns=tuple(partition_columns(view)),
        mode=view.config.mode,
        incremental=view.incremental,
        freshness=freshness_policy(view),
        owners=tuple(view.owners),
        group=d,
        import_key=ikey,
        remote=remote,
        sync_job_name=sync_job_name(d),
        import_job_name=import_job_name(d),
        async_copy_job_name=async_copy_job_name(d),
        copy_job_name=view.copy_job_name,
    )


def resolve_hive(rs: ResolvedSpec) -> HiveSpec:
    """Check the Hive parts of the spec (raises :class:`SpecError` naming file and key) and
    resolve every Hive dataset once."""
    validate_hive_spec(rs)
    spec = rs.spec
    return HiveSpec(
        datasets={v.name: _hive_view(rs, v) for v in rs if v.import_key is not None},
        cluster_roots={name: spec.cluster_root(name) for name in spec.clusters},
        metastores=frozenset(name for name, c in spec.clusters.items() if c.hive_metastore),
        source_file=str(spec.source_file),
        retry_policy=retry_policy(spec),
        sensor_status=rs.sensor_status,
    )
