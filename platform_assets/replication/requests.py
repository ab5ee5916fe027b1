"""Copy runs of the replication kind: the partitioned copy job per dataset, the run request
for one partition (what the change and audit sensors and the trigger launch), and the dynamic
partitions a sensor must add first."""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from platform_assets.datasets import DatasetView, ResolvedSpec
from platform_assets.replication.names import (
    CHECK_NO_TEMP,
    CHECK_VERIFIED,
    TAG_COPY,
    TAG_DATASET,
    TAG_FINGERPRINT,
    TAG_PARTITION,
    TAG_TRIGGER,
)


def build_copy_job(view: DatasetView):
    """The asset job of a dataset's replicas (partitioned like them): what sensors and
    backfills run."""
    return dg.define_asset_job(
        view.copy_job_name,
        selection=dg.AssetSelection.assets(*view.replica_keys),
        tags={TAG_DATASET: view.name},
        description=f"Copy partitions of dataset {view.name!r} to its replicas.",
    )


def missing_dynamic_partitions(
    rs: ResolvedSpec, instance: dg.DagsterInstance, partitions: dict[str, Iterable[str]]
) -> list[dg.AddDynamicPartitionsRequest]:
    """Requests adding the partitions (dataset -> keys, in order) the instance does not know
    yet; unpartitioned datasets have nothing to add."""
    out = []
    for d in sorted(partitions):
        view = rs[d]
        if not view.partitioned:
            continue
        name = view.partitions_def_name
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
    view: DatasetView,
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
    if targets is None:
        chosen = list(view.targets)
    else:
        wanted = set(targets)
        for t in reversed(view.targets):  # `via` names an earlier target: one backward pass
            if t.cluster in wanted and t.via:
                wanted.add(t.via)
        chosen = [t for t in view.targets if t.cluster in wanted]
    keys = [t.key for t in chosen]
    checks = [
        dg.AssetCheckKey(k, name) for k in keys for name in (CHECK_VERIFIED, CHECK_NO_TEMP)
    ]
    tags = copy_run_tags(view.name, partition, fingerprint, trigger)
    tags.update(extra_tags or {})
    return dg.RunRequest(
        run_key=run_key,
        job_name=view.copy_job_name,
        asset_selection=keys,
        asset_check_keys=checks,
        partition_key=partition,
        tags=tags,
    )
