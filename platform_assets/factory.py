"""Assets from the replication spec.

Per dataset:
- ``<source cluster>/<dataset>``: an observable source asset whose data version is a
  fingerprint of the source listing;
- ``<target cluster>/<dataset>`` per target: the replica, partitioned by a
  ``DynamicPartitionsDefinition`` (one copy partition per partition directory; a single
  ``all`` partition for an unpartitioned dataset). Materialising a partition runs the copy
  engine for that directory and records ``copy_finished`` and the run report as metadata,
  with two checks (copy verified, no temporary files left);
- a ``replication_lag`` check per replica: its last ``copy_finished`` for each partition is
  not older than the last change observed at the source.
"""


import posixpath
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from platform_assets.config import UNPARTITIONED_KEY, ReplicationSpec, Target
from platform_assets.listing import (
    EMPTY_FINGERPRINT,
    PartitionFingerprint,
    fingerprint_partition,
    list_partitions,
)
from replicator.errors import ReplicatorError, UsageError, is_retryable
from replicator.filesystems.base import FILE
from replicator.filesystems.registry import resolve
from replicator.filters import TEMP_PREFIX, Filter
from replicator.listing import walk
from replicator.report import RunReport
from replicator.secrets import redact
from resources.replicator import ReplicatorResource

CHECK_VERIFIED = "copy_verified"
CHECK_NO_TEMP = "no_temporary_files"
CHECK_LAG = "replication_lag"

TAG_DATASET = "replication/dataset"
TAG_PARTITION = "replication/partition"
TAG_FINGERPRINT = "replication/fingerprint"
TAG_TRIGGER = "replication/trigger"
TAG_AUDIT_FILE = "replication/audit_file"
TAG_COPY = "replication/copy"  # dataset/partition: dagster.yaml runs one copy of it at a time


def source_key(spec: ReplicationSpec, dataset: str) -> dg.AssetKey:
    return dg.AssetKey([spec.datasets[dataset].source.cluster, dataset])


def replica_key(dataset: str, cluster: str) -> dg.AssetKey:
    return dg.AssetKey([cluster, dataset])


def import_key(spec: ReplicationSpec, dataset: str) -> dg.AssetKey | None:
    """The import asset of a Hive dataset on its source cluster (``platform_assets.hive``):
    set when the dataset has a ``hive_table`` and its source cluster a metastore. First-hop
    replicas depend on it, so a run holding both copies only after the import."""
    ds = spec.datasets[dataset]
    if ds.hive_table is None or not spec.clusters[ds.source.cluster].hive_metastore:
        return None
    return dg.AssetKey([ds.source.cluster, dataset, "import"])


def replica_keys(spec: ReplicationSpec, dataset: str) -> list[dg.AssetKey]:
    return [replica_key(dataset, t.cluster) for t in spec.datasets[dataset].targets]


def partitions_def_name(dataset: str) -> str:
    return f"{dataset}_copies"


def copy_job_name(dataset: str) -> str:
    return f"copy_{dataset}"


def build_copy_jobs(spec: ReplicationSpec, pdefs: dict[str, dg.PartitionsDefinition]) -> list:
    """One partitioned asset job per dataset (its replicas): what sensors and backfills run."""
    return [
        dg.define_asset_job(
            copy_job_name(d),
            selection=dg.AssetSelection.assets(*replica_keys(spec, d)),
            partitions_def=pdefs[d],
            tags={TAG_DATASET: d},
            description=f"Copy partitions of dataset {d!r} to its replicas.",
        )
        for d in sorted(spec.datasets)
    ]


def copy_pool(cluster: str) -> str:
    """The concurrency pool of copies writing to ``cluster``."""
    return f"copy_to_{cluster}"


@dataclass(frozen=True)
class ReplicationAssets:
    spec: ReplicationSpec
    sources: list[dg.SourceAsset]
    replicas: list[dg.AssetsDefinition]
    checks: list[dg.AssetChecksDefinition]
    partitions_defs: dict[str, dg.PartitionsDefinition]
    copy_jobs: list

    def jobs_for(self, datasets: list[str]) -> list:
        names = {copy_job_name(d) for d in datasets}
        return [j for j in self.copy_jobs if j.name in names]

    @property
    def replica_keys(self) -> list[dg.AssetKey]:
        return [k for a in self.replicas for k in a.keys]

    @property
    def source_keys(self) -> list[dg.AssetKey]:
        return [s.key for s in self.sources]


def partitions_def_for(spec: ReplicationSpec, dataset: str) -> dg.PartitionsDefinition:
    if spec.datasets[dataset].partitioned:
        return dg.DynamicPartitionsDefinition(name=partitions_def_name(dataset))
    return dg.StaticPartitionsDefinition([UNPARTITIONED_KEY])


def retry_policy_for(spec: ReplicationSpec) -> dg.RetryPolicy:
    r = spec.platform.retries
    if not r.delay_s:
        return dg.RetryPolicy(max_retries=r.max_retries)
    return dg.RetryPolicy(
        max_retries=r.max_retries,
        delay=r.delay_s,
        backoff=dg.Backoff.EXPONENTIAL if r.backoff == "exponential" else dg.Backoff.LINEAR,
        jitter=dg.Jitter.PLUS_MINUS,
    )


def report_metadata(report: RunReport) -> dict[str, dg.MetadataValue]:
    """The run report as asset metadata (the names DESIGN.md promises)."""
    finished = report.finished_at if report.finished_at is not None else time.time()
    return {
        "copy_finished": dg.MetadataValue.timestamp(finished),
        "files_copied": dg.MetadataValue.int(report.files_copied),
        "bytes_copied": dg.MetadataValue.int(report.bytes_copied),
        "files_skipped": dg.MetadataValue.int(report.files_skipped),
        "files_deleted": dg.MetadataValue.int(report.files_deleted),
        "duration_s": dg.MetadataValue.float(round(float(report.duration_s), 3)),
        "throughput_mb_s": dg.MetadataValue.float(float(report.throughput_mb_s)),
        "verified": dg.MetadataValue.bool(bool(report.verified)),
    }


def failure_summary(report: RunReport, limit: int = 20) -> str:
    lines = [f"copy {redact(report.source)} -> {redact(report.destination)} failed:"]
    if report.error:
        lines.append(f"  run error: {redact(report.error)}")
    if report.delete_refused:
        lines.append(f"  delete refused: {redact(report.delete_refused)}")
    for f in report.failures[:limit]:
        lines.append(f"  {redact(f.path)}: {redact(f.error)}")
    if report.files_failed > limit:
        lines.append(f"  ... {report.files_failed - limit} more failed files")
    return "\n".join(lines)


def _raise(rel: str, exc: BaseException) -> None:
    raise exc


def leftover_temporaries(uri: str, limit: int = 20) -> list[str]:
    """Our staged files (``.rtmp-*``) and ``*._COPYING_`` names left under ``uri``."""
    fs, root = resolve(uri)
    found: list[str] = []
    try:
        for batch in walk(fs, root, Filter(skip_temporary=False), workers=1, on_error=_raise):
            found += [
                e.rel for e in batch
                if e.kind == FILE and (
                    posixpath.basename(e.rel).startswith(TEMP_PREFIX) or e.rel.endswith("._COPYING_")
                )
            ]
            if len(found) >= limit:
                break
    except UsageError:  # nothing at ``uri``: nothing left behind
        return []
    return found[:limit]


def source_observation(
    spec: ReplicationSpec, dataset: str, fp: PartitionFingerprint
) -> dg.AssetObservation:
    """What the change sensor records when it finds a partition new or changed: the source
    partition's data version (its fingerprint, the one its replicas record as
    ``source_fingerprint``), so the UI marks exactly the replica partitions behind it."""
    metadata: dict[str, dg.MetadataValue] = {
        "files": dg.MetadataValue.int(fp.files),
        "bytes": dg.MetadataValue.int(fp.bytes),
        "files_held_back": dg.MetadataValue.int(fp.held_back),
    }
    if fp.newest_mtime_ns:
        metadata["last_change"] = dg.MetadataValue.timestamp(fp.newest_mtime_ns / 1e9)
    return dg.AssetObservation(
        asset_key=source_key(spec, dataset),
        partition=fp.partition,
        tags={DATA_VERSION_TAG: fp.fingerprint},
        metadata=metadata,
    )


def _build_source(
    spec: ReplicationSpec, dataset: str, pdef: dg.PartitionsDefinition
) -> dg.SourceAsset:
    """Partitioned like the replicas, so a change of one source partition marks only that
    partition of each replica as behind (not the whole dataset)."""
    ds = spec.datasets[dataset]
    uri = spec.endpoint_uri(ds.source)

    def _observe(context: dg.OpExecutionContext) -> dg.DataVersionsByPartition:
        partitions = list_partitions(spec, dataset)
        if ds.partitioned:  # only partitions the instance knows (the sensors add them)
            known = set(context.instance.get_dynamic_partitions(partitions_def_name(dataset)))
            partitions = [p for p in partitions if p in known]
        now = time.time()
        return dg.DataVersionsByPartition({
            p: dg.DataVersion(fingerprint_partition(spec, dataset, p, now=now).fingerprint)
            for p in partitions
        })

    with warnings.catch_warnings():  # observable source assets are "beta" in 1.13
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.observable_source_asset(
            key=source_key(spec, dataset),
            group_name=dataset,
            description=(
                f"Source directory of dataset {dataset!r} on cluster {ds.source.cluster!r}. "
                "Its partitions' data versions are fingerprints of their listings, recorded "
                "by the change sensor as it finds changes (or by Observe)."
            ),
            metadata={"uri": redact(uri), "partitions": ds.partitions or "none", "mode": ds.mode},
            tags={"replication/role": "source"},
            partitions_def=pdef,
        )(_observe)


def _build_replica(
    spec: ReplicationSpec, dataset: str, target: Target, pdef: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    ds = spec.datasets[dataset]
    key = replica_key(dataset, target.cluster)
    upstream = (
        replica_key(dataset, target.via) if target.via is not None else source_key(spec, dataset)
    )
    copy_from = spec.copy_source(dataset, target)
    freshness = (
        dg.FreshnessPolicy.time_window(
            fail_window=ds.freshness.fail_window, warn_window=ds.freshness.warn_window
        )
        if ds.freshness
        else None
    )
    metadata: dict[str, str] = {
        "uri": redact(spec.endpoint_uri(target)),
        "copies_from": redact(spec.endpoint_uri(copy_from)),
        "mode": ds.mode,
        "incremental": str(ds.incremental).lower(),
    }
    if ds.hive_table:
        metadata["hive_table"] = f"{ds.hive_table.database}.{ds.hive_table.table}"
    cluster = spec.clusters[target.cluster]
    if cluster.dataproc_pool:
        metadata["dataproc_pool"] = ",".join(
            f"{k}={v}" for k, v in sorted(cluster.dataproc_pool.labels.items())
        )

    imported = import_key(spec, dataset) if target.via is None else None

    @dg.asset(
        key=key,
        deps=[upstream] if imported is None else [upstream, imported],
        partitions_def=pdef,
        group_name=dataset,
        description=(
            f"Replica of dataset {dataset!r} on cluster {target.cluster!r}, "
            f"copied from {copy_from.cluster!r}."
        ),
        metadata=metadata,
        tags={"replication/role": "replica"},
        kinds={"replica"},
        freshness_policy=freshness,
        retry_policy=retry_policy_for(spec),
        pool=copy_pool(target.cluster),
        check_specs=[
            dg.AssetCheckSpec(CHECK_VERIFIED, asset=key, description="every copied file verified"),
            dg.AssetCheckSpec(
                CHECK_NO_TEMP, asset=key, description="no staged or _COPYING_ file left behind"
            ),
        ],
    )
    def _copy(
        context: dg.AssetExecutionContext, replicator: ReplicatorResource
    ) -> dg.MaterializeResult:
        partition = context.partition_key
        src = spec.endpoint_uri(copy_from, partition)
        dst = spec.endpoint_uri(target, partition)
        fp = fingerprint_partition(spec, dataset, partition)
        # a replica's own marker is never copied on (a `via` hop reads another replica)
        exclude = (*ds.exclude, replicator.marker) if replicator.marker else ds.exclude
        options = replicator.options(
            include=ds.include,
            exclude=exclude,
            include_regex=ds.include_regex,
            exclude_regex=ds.exclude_regex,
            min_age_s=ds.min_age_s,
            max_age_s=ds.max_age,
            transforms=ds.transforms,
            preserve=ds.preserve,
            delete=ds.delete or not ds.incremental,
            checksum=not ds.incremental,
        )
        context.log.info(f"copy {redact(src)} -> {redact(dst)} (partition {partition})")
        try:
            report = replicator.copy(src, dst, options)
        except ReplicatorError as exc:
            raise dg.Failure(
                description=f"copy {redact(src)} -> {redact(dst)}: {redact(str(exc))}",
                allow_retries=is_retryable(exc),
            ) from None
        if not report.ok:
            retryable = bool(report.failures) and all(f.retryable for f in report.failures)
            raise dg.Failure(
                description=failure_summary(report),
                metadata={
                    "files_failed": report.files_failed,
                    "files_copied": report.files_copied,
                    "failures": [
                        {"path": redact(f.path), "error": redact(f.error)}
                        for f in report.failures[:20]
                    ],
                },
                allow_retries=retryable,
            )
        leftovers = leftover_temporaries(dst)
        metadata_out = report_metadata(report)
        metadata_out["source_fingerprint"] = dg.MetadataValue.text(fp.fingerprint)
        metadata_out["files_held_back"] = dg.MetadataValue.int(report.files_held_back)
        metadata_out["destination"] = dg.MetadataValue.text(redact(dst))
        return dg.MaterializeResult(
            metadata=metadata_out,
            data_version=dg.DataVersion(fp.fingerprint),
            check_results=[
                dg.AssetCheckResult(
                    check_name=CHECK_VERIFIED,
                    passed=bool(report.verified),
                    metadata={"files_copied": report.files_copied},
                ),
                dg.AssetCheckResult(
                    check_name=CHECK_NO_TEMP,
                    passed=not leftovers,
                    metadata={"leftovers": ", ".join(leftovers) or "none"},
                ),
            ],
        )

    return _copy


@dataclass(frozen=True)
class LastCopy:
    copy_finished: float
    fingerprint: str | None


def latest_copies(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitions: Iterable[str] | None = None,
    page: int = 1000, max_records: int = 200_000,
) -> dict[str, LastCopy]:
    """The latest ``copy_finished`` and ``source_fingerprint`` of each materialized partition."""
    wanted = set(partitions) if partitions is not None else None
    out: dict[str, LastCopy] = {}
    cursor = None
    seen = 0
    while seen < max_records:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key), limit=page, cursor=cursor
        )
        for record in result.records:
            seen += 1
            pkey = record.partition_key or UNPARTITIONED_KEY
            if pkey in out or (wanted is not None and pkey not in wanted):
                continue
            mat = record.asset_materialization
            md = mat.metadata if mat else {}
            finished = md.get("copy_finished")
            fpv = md.get("source_fingerprint")
            out[pkey] = LastCopy(
                copy_finished=float(finished.value) if finished is not None else record.timestamp,
                fingerprint=str(fpv.value) if fpv is not None else None,
            )
        if not result.has_more or (wanted is not None and wanted <= out.keys()):
            break
        cursor = result.cursor
    return out


def _build_lag_check(spec: ReplicationSpec, dataset: str, target: Target) -> dg.AssetChecksDefinition:
    key = replica_key(dataset, target.cluster)

    @dg.asset_check(
        asset=key,
        name=CHECK_LAG,
        description=(
            "Each partition's last copy_finished is not older than the last change observed at "
            "the source (and the copied fingerprint is the source's current one)."
        ),
        blocking=False,
    )
    def _lag(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        return evaluate_lag(spec, dataset, target, context.instance)

    return _lag


def evaluate_lag(
    spec: ReplicationSpec, dataset: str, target: Target, instance: dg.DagsterInstance
) -> dg.AssetCheckResult:
    key = replica_key(dataset, target.cluster)
    partitions = list_partitions(spec, dataset)
    last = latest_copies(instance, key, partitions)
    now = time.time()
    lagging: list[str] = []
    max_lag = 0.0
    for p in partitions:
        fp = fingerprint_partition(spec, dataset, p, now=now)
        if fp.fingerprint == EMPTY_FINGERPRINT:
            continue
        copy = last.get(p)
        changed_at = fp.newest_mtime_ns / 1e9
        if copy is None:
            lagging.append(p)
            max_lag = max(max_lag, now - changed_at)
        elif copy.copy_finished < changed_at or (
            copy.fingerprint is not None and copy.fingerprint != fp.fingerprint
        ):
            lagging.append(p)
            max_lag = max(max_lag, now - copy.copy_finished)
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=CHECK_LAG,
        passed=not lagging,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "partitions_checked": len(partitions),
            "partitions_lagging": len(lagging),
            "lagging": ", ".join(lagging[:20]) or "none",
            "max_lag_s": round(max_lag, 1),
        },
    )


def build_replication_assets(spec: ReplicationSpec) -> ReplicationAssets:
    sources: list[dg.SourceAsset] = []
    replicas: list[dg.AssetsDefinition] = []
    checks: list[dg.AssetChecksDefinition] = []
    pdefs: dict[str, dg.PartitionsDefinition] = {}
    for dataset in sorted(spec.datasets):
        pdef = partitions_def_for(spec, dataset)
        pdefs[dataset] = pdef
        sources.append(_build_source(spec, dataset, pdef))
        for target in spec.datasets[dataset].targets:
            replicas.append(_build_replica(spec, dataset, target, pdef))
            checks.append(_build_lag_check(spec, dataset, target))
    return ReplicationAssets(spec, sources, replicas, checks, pdefs, build_copy_jobs(spec, pdefs))


def missing_dynamic_partitions(
    spec: ReplicationSpec, instance: dg.DagsterInstance, partitions: dict[str, Iterable[str]]
) -> list[dg.AddDynamicPartitionsRequest]:
    """Requests adding the partitions (dataset -> keys, in order) the instance does not know
    yet; unpartitioned datasets have nothing to add."""
    out = []
    for d in sorted(partitions):
        if not spec.datasets[d].partitioned:
            continue
        name = partitions_def_name(d)
        existing = set(instance.get_dynamic_partitions(name))
        missing = [p for p in partitions[d] if p not in existing]
        if missing:
            out.append(dg.AddDynamicPartitionsRequest(partitions_def_name=name, partition_keys=missing))
    return out


def copy_run_tags(dataset: str, partition: str, fingerprint: str, trigger: str) -> dict[str, str]:
    return {
        TAG_DATASET: dataset,
        TAG_PARTITION: partition,
        TAG_FINGERPRINT: fingerprint,
        TAG_TRIGGER: trigger,
        TAG_COPY: f"{dataset}/{partition}",
    }


def copy_run_request(
    spec: ReplicationSpec,
    dataset: str,
    partition: str,
    fingerprint: str,
    *,
    run_key: str,
    trigger: str,
    targets: Iterable[str] | None = None,
    extra_tags: dict[str, str] | None = None,
) -> dg.RunRequest:
    """One copy run for one partition: every target of the dataset, or the named ones (plus
    the targets they copy ``via``, so a chained replica is never copied from a stale hop)."""
    ds = spec.datasets[dataset]
    if targets is None:
        clusters = [t.cluster for t in ds.targets]
    else:
        wanted = set(targets)
        for t in reversed(ds.targets):  # `via` names an earlier target: one backward pass
            if t.cluster in wanted and t.via:
                wanted.add(t.via)
        clusters = [t.cluster for t in ds.targets if t.cluster in wanted]
    keys = [replica_key(dataset, c) for c in clusters]
    checks = [
        dg.AssetCheckKey(k, name) for k in keys for name in (CHECK_VERIFIED, CHECK_NO_TEMP)
    ]
    tags = copy_run_tags(dataset, partition, fingerprint, trigger)
    tags.update(extra_tags or {})
    return dg.RunRequest(
        run_key=run_key,
        job_name=copy_job_name(dataset),
        asset_selection=keys,
        asset_check_keys=checks,
        partition_key=partition,
        tags=tags,
    )
