"""One resolved view per dataset, computed once from the spec and handed to every builder and
sensor: where the source and each replica live (URIs), where each replica copies from, the
engine's filter and copy policy, and the asset keys. Nothing here is re-derived per call.

``resolve(spec)`` contacts nothing (it only joins strings); listing goes through the engine.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import dagster as dg

from platform_assets.config import (
    UNPARTITIONED_KEY,
    DataprocExecutorSpec,
    Dataset,
    DistCpExecutorSpec,
    ExecutorConfig,
    Freshness,
    HiveTable,
    ReplicationSpec,
    SparkExecutorSpec,
    Target,
    join_place,
)
from platform_assets.hive.names import import_key
from platform_assets.replication.names import (
    copy_job_name,
    copy_pool,
    partitions_def_name,
    replica_key,
    source_key,
)
from replicator.filesystems.registry import split_scheme
from replicator.filters import Filter
from replicator.fingerprint import (
    ListingCache,
    TreeFingerprint,
    fingerprint_tree,
    list_partition_dirs,
    list_partition_dirs_with_mtimes,
    list_partitions,
)

# URI scheme -> the asset kind the Dagster UI shows (and draws an icon for where it has one)
_KINDS = {"hdfs": "hdfs", "webhdfs": "hdfs", "swebhdfs": "hdfs", "gs": "gcs", "gcs": "gcs",
          "s3": "s3", "s3a": "s3", "file": "local", "ftp": "ftp", "ftps": "ftp", "sftp": "sftp"}


def storage_kind(uri: str) -> str:
    """Where a URI lives, as an asset kind: ``hdfs``, ``gcs``, ``s3``, ``local``, ``sftp``...
    (a named remote ``name:path`` is ``remote``: its back end is only known at run time)."""
    scheme, _ = split_scheme(uri)
    if scheme == "file" and ":" in uri.split("/", 1)[0] and not uri.startswith("/"):
        return "remote"
    return _KINDS.get(scheme, scheme)


def join_partition(root: str, partition: str | None) -> str:
    """``root`` or the directory of ``partition`` below it (``all``: the root itself)."""
    if not partition or partition == UNPARTITIONED_KEY:
        return root
    return join_place(root, partition)


@dataclass(frozen=True)
class ExecutorView:
    """Where one target's copies run, resolved from the spec (``datasets.<d>.executor``, else
    ``clusters.<target>.executor``, else local). ``declared_at`` is the key it came from."""

    kind: Literal["local", "spark", "distcp", "dataproc"]
    declared_at: str  # datasets.<d>.executor | clusters.<c>.executor | "default"
    config: ExecutorConfig
    hadoop_conf_dir: str | None = None  # distcp: resolved against the spec's directory
    spark_conf: Mapping[str, str] = field(default_factory=dict)

    @property
    def master(self) -> str | None:
        return self.config.master if isinstance(self.config, SparkExecutorSpec) else None

    @property
    def maps(self) -> int | None:
        return self.config.maps if isinstance(self.config, DistCpExecutorSpec) else None

    @property
    def dataproc(self) -> DataprocExecutorSpec | None:
        return self.config if isinstance(self.config, DataprocExecutorSpec) else None

    def engine_options(self) -> dict[str, Any]:
        """``CopyOptions.executor_options`` for the engine's own executors (local, spark, distcp)."""
        if self.kind == "spark":
            return {"master": self.master, "conf": dict(self.spark_conf)}
        if self.kind == "distcp" and self.hadoop_conf_dir:
            return {"hadoop_conf_dir": self.hadoop_conf_dir}
        return {}

    def runs_on(self) -> str:
        """Where the copy's work runs, in words for the asset metadata and the log."""
        if self.kind == "local":
            return "threads in the Dagster run process"
        if self.kind == "spark":
            return f"Spark {self.master}"
        if self.kind == "distcp":
            return (f"Hadoop configured by {self.hadoop_conf_dir}" if self.hadoop_conf_dir
                    else "the local MapReduce runner")
        dp = self.dataproc
        assert dp is not None
        labels = ",".join(f"{k}={v}" for k, v in sorted(dp.cluster_labels.items()))
        return f"Dataproc {dp.project}/{dp.region} cluster labelled {labels}"


def executor_view(spec: ReplicationSpec, dataset: str, cluster: str) -> ExecutorView:
    """The executor of ``dataset``'s copy to its target on ``cluster``."""
    ds = spec.datasets[dataset]
    if ds.executor is not None:
        declared_at = f"datasets.{dataset}.executor"
    elif "executor" in spec.clusters[cluster].model_fields_set:
        declared_at = f"clusters.{cluster}.executor"
    else:
        declared_at = "default"
    cfg = spec.executor_for(dataset, cluster)
    assert cfg is not None
    conf_dir = None
    spark_conf: dict[str, str] = {}
    if isinstance(cfg, DistCpExecutorSpec) and cfg.hadoop_conf_dir:
        conf_dir = spec.resolve_location(cfg.hadoop_conf_dir)
    if isinstance(cfg, SparkExecutorSpec):
        spark_conf = dict(cfg.conf)
    return ExecutorView(kind=cfg.kind, declared_at=declared_at, config=cfg,
                        hadoop_conf_dir=conf_dir, spark_conf=spark_conf)


@dataclass(frozen=True)
class TargetView:
    """One replica of a dataset, resolved."""

    dataset: str
    cluster: str
    via: str | None  # the target this one copies from (None: the source)
    root: str  # the replica's root URI
    copy_from_cluster: str
    copy_from_root: str
    key: dg.AssetKey
    upstream_key: dg.AssetKey  # the asset it copies from: the source or the `via` replica
    pool: str  # concurrency pool of copies writing to its cluster
    kind: str  # where it lives: hdfs, gcs, s3, local, ...
    config: Target
    executor: ExecutorView  # where its copies run

    def uri(self, partition: str | None = None) -> str:
        return join_partition(self.root, partition)

    def copy_from_uri(self, partition: str | None = None) -> str:
        return join_partition(self.copy_from_root, partition)


@dataclass(frozen=True)
class DatasetView:
    """One replicated dataset, resolved: source, targets, filter, copy policy, keys."""

    name: str
    config: Dataset
    source_cluster: str
    source_root: str
    source_key: dg.AssetKey
    import_key: dg.AssetKey | None  # the Hive import on the source cluster, if any
    targets: tuple[TargetView, ...]
    filter: Filter  # the engine's include/exclude globs and regexes (temporary names skipped)
    min_age_s: float
    max_age_s: float | None  # files older than this are left alone
    transforms: tuple[str, ...]  # applied by the copy (gunzip, untar, gpg-...)
    preserve: tuple[str, ...]  # attributes kept on the replicas (times, perms, ...)
    delete: bool  # copy policy: propagate deletes (always for a full load)
    checksum: bool  # copy policy: compare checksums (a full load re-verifies everything)
    partitions_def_name: str
    copy_job_name: str
    source_kind: str  # where the source lives: hdfs, gcs, s3, local, ...

    @property
    def owners(self) -> list[str]:
        return list(self.config.owners)

    def describe(self, what: str) -> str:
        """``what`` followed by the dataset's own description from the spec, if any."""
        return f"{what}\n\n{self.config.description}" if self.config.description else what

    @property
    def partitioned(self) -> bool:
        return self.config.partitioned

    @property
    def layout_levels(self) -> tuple[str, ...]:
        return self.config.layout_levels

    @property
    def mode(self) -> str:
        return self.config.mode

    @property
    def change_detection(self) -> str:
        return self.config.change_detection

    @property
    def incremental(self) -> bool:
        return self.config.incremental

    @property
    def freshness(self) -> Freshness | None:
        return self.config.freshness

    @property
    def fail_window(self) -> timedelta | None:
        return self.config.freshness.fail_window if self.config.freshness else None

    @property
    def hive_table(self) -> HiveTable | None:
        return self.config.hive_table

    @property
    def replica_keys(self) -> list[dg.AssetKey]:
        return [t.key for t in self.targets]

    def source_uri(self, partition: str | None = None) -> str:
        return join_partition(self.source_root, partition)

    def target(self, cluster: str) -> TargetView:
        for t in self.targets:
            if t.cluster == cluster:
                return t
        raise KeyError(f"dataset {self.name!r} has no target on cluster {cluster!r}")

    def partitions(self) -> list[str]:
        """Partition keys at the source, sorted (``["all"]`` when unpartitioned)."""
        if not self.partitioned:
            return [UNPARTITIONED_KEY]
        return list_partition_dirs(self.source_root, self.layout_levels)

    def partitions_with_mtimes(self, cache: ListingCache | None = None) -> list[tuple[str, int | None]]:
        """:meth:`partitions` with each partition directory's modification time where the
        listing gives one (the change sensor's hint; ``None`` for an unpartitioned dataset).
        ``cache``: listings kept from the last call (local sources; see ListingCache)."""
        if not self.partitioned:
            return [(UNPARTITIONED_KEY, None)]
        return list_partition_dirs_with_mtimes(self.source_root, self.layout_levels, cache)

    def partition_listing(self, cache: ListingCache | None = None) -> tuple[list[str], list[int | None]]:
        """:meth:`partitions_with_mtimes` as two parallel lists (names, mtimes): the change
        sensor's form."""
        if not self.partitioned:
            return [UNPARTITIONED_KEY], [None]
        return list_partitions(self.source_root, self.layout_levels, cache)

    def fingerprint(self, partition: str, *, now: float | None = None) -> TreeFingerprint:
        """The source partition's fingerprint over the files the copy would take."""
        return fingerprint_tree(self.source_uri(partition), self.filter, min_age_s=self.min_age_s,
                                max_age_s=self.max_age_s, now=now, partition=partition)


@dataclass(frozen=True)
class ResolvedSpec:
    """The spec with every dataset resolved (``resolve(spec)``)."""

    spec: ReplicationSpec
    datasets: Mapping[str, DatasetView]

    def __getitem__(self, dataset: str) -> DatasetView:
        return self.datasets[dataset]

    def __iter__(self) -> Iterator[DatasetView]:
        return iter(self.datasets[d] for d in sorted(self.datasets))

    @property
    def platform(self):  # -> PlatformSpec
        return self.spec.platform

    @property
    def sensor_status(self) -> dg.DefaultSensorStatus:
        """``platform.default_status`` for every sensor of the code location."""
        return (dg.DefaultSensorStatus.RUNNING if self.platform.default_status == "running"
                else dg.DefaultSensorStatus.STOPPED)

    @property
    def schedule_status(self) -> dg.DefaultScheduleStatus:
        return (dg.DefaultScheduleStatus.RUNNING if self.platform.default_status == "running"
                else dg.DefaultScheduleStatus.STOPPED)

    def names(self, mode: str | None = None) -> list[str]:
        return sorted(d for d, v in self.datasets.items() if mode is None or v.mode == mode)


def freshness_policy(view: DatasetView) -> dg.FreshnessPolicy | None:
    """The dataset's ``freshness`` as a time-window policy (replicas and remote Hive tables)."""
    f = view.freshness
    if f is None:
        return None
    return dg.FreshnessPolicy.time_window(fail_window=f.fail_window, warn_window=f.warn_window)


def partitions_def_for(view: DatasetView) -> dg.PartitionsDefinition:
    """The copy partitions of a dataset: one per partition directory (dynamic, added by the
    sensors), or the single ``all`` partition of an unpartitioned dataset. Every kind's
    assets of the dataset share it."""
    if view.partitioned:
        return dg.DynamicPartitionsDefinition(name=view.partitions_def_name)
    return dg.StaticPartitionsDefinition([UNPARTITIONED_KEY])


def _view(spec: ReplicationSpec, name: str) -> DatasetView:
    ds = spec.datasets[name]
    src = ds.source.cluster
    has_import = ds.hive_table is not None and bool(spec.clusters[src].hive_metastore)
    targets = []
    for t in ds.targets:
        copy_from = spec.copy_source(name, t)
        targets.append(TargetView(
            dataset=name,
            cluster=t.cluster,
            via=t.via,
            root=spec.endpoint_uri(t),
            copy_from_cluster=copy_from.cluster,
            copy_from_root=spec.endpoint_uri(copy_from),
            key=replica_key(name, t.cluster),
            upstream_key=replica_key(name, t.via) if t.via else source_key(src, name),
            pool=copy_pool(t.cluster),
            kind=storage_kind(spec.cluster_root(t.cluster)),
            config=t,
            executor=executor_view(spec, name, t.cluster),
        ))
    return DatasetView(
        name=name,
        config=ds,
        source_cluster=src,
        source_root=spec.endpoint_uri(ds.source),
        source_key=source_key(src, name),
        import_key=import_key(name, src) if has_import else None,
        targets=tuple(targets),
        filter=Filter(include=ds.include, exclude=ds.exclude, include_regex=ds.include_regex,
                      exclude_regex=ds.exclude_regex),
        min_age_s=ds.min_age_s,
        max_age_s=ds.max_age,
        transforms=tuple(ds.transforms),
        preserve=tuple(ds.preserve),
        delete=ds.delete or not ds.incremental,
        checksum=not ds.incremental,
        partitions_def_name=partitions_def_name(name),
        copy_job_name=copy_job_name(name),
        source_kind=storage_kind(spec.cluster_root(src)),
    )


def resolve(spec: ReplicationSpec) -> ResolvedSpec:
    """Resolve every dataset of ``spec`` once."""
    return ResolvedSpec(spec, {name: _view(spec, name) for name in sorted(spec.datasets)})
