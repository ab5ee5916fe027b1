"""Assets of the replication kind, per dataset of the spec:

- ``<source cluster>/<dataset>``: an external asset (the source directory: Dagster does not
  produce it) whose data version per partition is a fingerprint of the source listing
  (:mod:`replicator.fingerprint`), reported by the change sensor as observations;
- ``<target cluster>/<dataset>`` per target: the replica, partitioned by a
  ``DynamicPartitionsDefinition`` (one copy partition per partition directory; a single
  ``all`` partition for an unpartitioned dataset). Materialising a partition runs the copy
  engine for that directory (:mod:`platform_assets.engine`) and records ``copy_finished`` and
  the run report as metadata, with two checks (copy verified, no temporary files left).
"""

import time

import dagster as dg

from platform_assets.config import ReplicationSpec
from platform_assets.datasets import DatasetView, TargetView, freshness_policy
from platform_assets.engine import (
    PartitionCopy,
    copy_partition,
    executor_metadata,
    report_metadata,
    retry_policy,
)
from platform_assets.history import latest_copies
from platform_assets.replication.names import CHECK_NO_TEMP, CHECK_VERIFIED, DATA_VERSION_TAG
from replicator.fingerprint import TreeFingerprint, leftover_temporaries
from replicator.secrets import redact
from resources.dataproc import DataprocResource
from resources.replicator import ReplicatorResource


def source_observation(view: DatasetView, fp: TreeFingerprint) -> dg.AssetObservation:
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
        asset_key=view.source_key,
        partition=fp.partition,
        tags={DATA_VERSION_TAG: fp.fingerprint},
        metadata=metadata,
    )


def build_source(view: DatasetView, pdef: dg.PartitionsDefinition) -> dg.AssetSpec:
    """Partitioned like the replicas, so a change of one source partition marks only that
    partition of each replica as behind (not the whole dataset)."""
    return dg.AssetSpec(
        key=view.source_key,
        group_name=view.name,
        description=view.describe(
            f"Source directory of dataset {view.name!r} on cluster {view.source_cluster!r}. "
            "Its partitions' data versions are fingerprints of their listings, recorded by the "
            "change sensor as it finds changes."
        ),
        metadata={"dagster/uri": redact(view.source_root), "uri": redact(view.source_root),
                  "partitions": view.config.partitions or "none", "mode": view.mode},
        tags={"replication/role": "source"},
        kinds={view.source_kind},
        owners=view.owners,
        partitions_def=pdef,
    )


def build_replica(
    spec: ReplicationSpec, view: DatasetView, target: TargetView, pdef: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    metadata: dict[str, str] = {
        "dagster/uri": redact(target.root),
        "uri": redact(target.root),
        "copies_from": redact(target.copy_from_root),
        "mode": view.mode,
        "incremental": str(view.incremental).lower(),
    }
    if view.hive_table:
        metadata["hive_table"] = f"{view.hive_table.database}.{view.hive_table.table}"
    metadata["executor"] = target.executor.kind
    metadata["executor_runs_on"] = redact(target.executor.runs_on())
    # first-hop replicas wait for the Hive import, so a run holding both copies only after it
    imported = view.import_key if target.via is None else None
    key = target.key

    asset = dg.asset(
        key=key,
        deps=[target.upstream_key] if imported is None else [target.upstream_key, imported],
        partitions_def=pdef,
        group_name=view.name,
        description=view.describe(
            f"Replica of dataset {view.name!r} on cluster {target.cluster!r}, "
            f"copied from {target.copy_from_cluster!r}."
        ),
        metadata=metadata,
        tags={"replication/role": "replica"},
        kinds={target.kind},
        owners=view.owners,
        freshness_policy=freshness_policy(view),
        retry_policy=retry_policy(spec),
        pool=target.pool,
        check_specs=[
            # blocking: a hop whose copy is not verified is not copied on (``via`` replicas)
            dg.AssetCheckSpec(CHECK_VERIFIED, asset=key, blocking=True,
                              description="every copied file verified; blocks the next hop"),
            dg.AssetCheckSpec(
                CHECK_NO_TEMP, asset=key, description="no staged or _COPYING_ file left behind"
            ),
        ],
    )

    def _body(context: dg.AssetExecutionContext, replicator: ReplicatorResource) -> dg.MaterializeResult:
        partition = context.partition_key
        src = target.copy_from_uri(partition)
        dst = target.uri(partition)
        if target.via is None:
            fp = view.fingerprint(partition)
            version, changed_at = fp.fingerprint, fp.newest_mtime_ns / 1e9 or None
        else:
            # a hop copies what the upstream replica holds: record the version that replica
            # recorded, not a fresh listing of the source (a stale hop must look stale)
            hop = latest_copies(context.instance, target.upstream_key, [partition]).get(partition)
            if hop is None or hop.fingerprint is None:
                raise dg.Failure(
                    description=f"partition {partition!r} has no copy on {target.via!r} yet: "
                                f"{target.cluster!r} copies from it",
                    allow_retries=False,
                )
            version, changed_at = hop.fingerprint, hop.source_changed_at
        # a replica's own marker is never copied on (a `via` hop reads another replica)
        exclude = view.filter.exclude
        if replicator.marker:
            exclude = (*exclude, replicator.marker)
        options = replicator.options(
            include=view.filter.include,
            exclude=exclude,
            include_regex=view.filter.include_regex,
            exclude_regex=view.filter.exclude_regex,
            min_age_s=view.min_age_s,
            max_age_s=view.max_age_s,
            transforms=view.transforms,
            preserve=view.preserve,
            delete=view.delete,
            checksum=view.checksum,
        )
        report = copy_partition(context, replicator, PartitionCopy(
            dataset=view.name, cluster=target.cluster, partition=partition, source=src,
            destination=dst, options=options, source_fingerprint=version,
            executor=target.executor))
        leftovers = leftover_temporaries(dst)
        metadata_out = report_metadata(report)
        metadata_out.update(executor_metadata(target.executor, report))
        metadata_out["source_fingerprint"] = dg.MetadataValue.text(version)
        metadata_out["destination"] = dg.MetadataValue.text(redact(dst))
        if changed_at:
            # how long the newest source change took to land here: the per-partition figure
            # the UI plots (and the lag check's ERROR threshold is the freshness window)
            metadata_out["source_changed_at"] = dg.MetadataValue.timestamp(changed_at)
            finished = report.finished_at or time.time()
            metadata_out["replication_lag_s"] = dg.MetadataValue.float(
                round(max(0.0, finished - changed_at), 3))
        return dg.MaterializeResult(
            metadata=metadata_out,
            data_version=dg.DataVersion(version),
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

    if target.executor.kind == "dataproc":  # submits through the dataproc resource (platform.dataproc)
        def _copy_on_dataproc(
            context: dg.AssetExecutionContext, replicator: ReplicatorResource,
            dataproc: DataprocResource,
        ) -> dg.MaterializeResult:
            return _body(context, replicator)

        return asset(_copy_on_dataproc)

    def _copy(context: dg.AssetExecutionContext, replicator: ReplicatorResource) -> dg.MaterializeResult:
        return _body(context, replicator)

    return asset(_copy)
