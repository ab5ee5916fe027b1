"""Assets of the replication kind, per dataset of the spec:

- ``<source cluster>/<dataset>``: an observable source asset whose data version per partition
  is a fingerprint of the source listing (:mod:`replicator.fingerprint`);
- ``<target cluster>/<dataset>`` per target: the replica, partitioned by a
  ``DynamicPartitionsDefinition`` (one copy partition per partition directory; a single
  ``all`` partition for an unpartitioned dataset). Materialising a partition runs the copy
  engine for that directory (:mod:`platform_assets.engine`) and records ``copy_finished`` and
  the run report as metadata, with two checks (copy verified, no temporary files left).
"""

import time
import warnings

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from platform_assets.config import UNPARTITIONED_KEY, ReplicationSpec
from platform_assets.datasets import DatasetView, TargetView
from platform_assets.engine import copy_or_fail, report_metadata, retry_policy
from platform_assets.replication.names import CHECK_NO_TEMP, CHECK_VERIFIED
from replicator.fingerprint import TreeFingerprint, leftover_temporaries
from replicator.secrets import redact
from resources.replicator import ReplicatorResource


def partitions_def_for(view: DatasetView) -> dg.PartitionsDefinition:
    if view.partitioned:
        return dg.DynamicPartitionsDefinition(name=view.partitions_def_name)
    return dg.StaticPartitionsDefinition([UNPARTITIONED_KEY])


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


def build_source(view: DatasetView, pdef: dg.PartitionsDefinition) -> dg.SourceAsset:
    """Partitioned like the replicas, so a change of one source partition marks only that
    partition of each replica as behind (not the whole dataset)."""

    def _observe(context: dg.OpExecutionContext) -> dg.DataVersionsByPartition:
        partitions = view.partitions()
        if view.partitioned:  # only partitions the instance knows (the sensors add them)
            known = set(context.instance.get_dynamic_partitions(view.partitions_def_name))
            partitions = [p for p in partitions if p in known]
        now = time.time()
        return dg.DataVersionsByPartition({
            p: dg.DataVersion(view.fingerprint(p, now=now).fingerprint) for p in partitions
        })

    with warnings.catch_warnings():  # observable source assets are "beta" in 1.13
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.observable_source_asset(
            key=view.source_key,
            group_name=view.name,
            description=(
                f"Source directory of dataset {view.name!r} on cluster {view.source_cluster!r}. "
                "Its partitions' data versions are fingerprints of their listings, recorded "
                "by the change sensor as it finds changes (or by Observe)."
            ),
            metadata={"uri": redact(view.source_root), "partitions": view.config.partitions or "none",
                      "mode": view.mode},
            tags={"replication/role": "source"},
            partitions_def=pdef,
        )(_observe)


def build_replica(
    spec: ReplicationSpec, view: DatasetView, target: TargetView, pdef: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    freshness = (
        dg.FreshnessPolicy.time_window(
            fail_window=view.freshness.fail_window, warn_window=view.freshness.warn_window
        )
        if view.freshness
        else None
    )
    metadata: dict[str, str] = {
        "uri": redact(target.root),
        "copies_from": redact(target.copy_from_root),
        "mode": view.mode,
        "incremental": str(view.incremental).lower(),
    }
    if view.hive_table:
        metadata["hive_table"] = f"{view.hive_table.database}.{view.hive_table.table}"
    cluster = spec.clusters[target.cluster]
    if cluster.dataproc_pool:
        metadata["dataproc_pool"] = ",".join(
            f"{k}={v}" for k, v in sorted(cluster.dataproc_pool.labels.items())
        )
    # first-hop replicas wait for the Hive import, so a run holding both copies only after it
    imported = view.import_key if target.via is None else None
    key = target.key

    @dg.asset(
        key=key,
        deps=[target.upstream_key] if imported is None else [target.upstream_key, imported],
        partitions_def=pdef,
        group_name=view.name,
        description=(
            f"Replica of dataset {view.name!r} on cluster {target.cluster!r}, "
            f"copied from {target.copy_from_cluster!r}."
        ),
        metadata=metadata,
        tags={"replication/role": "replica"},
        kinds={"replica"},
        freshness_policy=freshness,
        retry_policy=retry_policy(spec),
        pool=target.pool,
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
        src = target.copy_from_uri(partition)
        dst = target.uri(partition)
        fp = view.fingerprint(partition)
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
        context.log.info(f"copy {redact(src)} -> {redact(dst)} (partition {partition})")
        report = copy_or_fail(replicator, src, dst, options)
        leftovers = leftover_temporaries(dst)
        metadata_out = report_metadata(report)
        metadata_out["source_fingerprint"] = dg.MetadataValue.text(fp.fingerprint)
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
