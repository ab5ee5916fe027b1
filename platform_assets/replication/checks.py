"""Checks of the replication kind: ``replication_lag`` per replica, run by a schedule.

Each partition's last ``copy_finished`` is not older than the last change observed at the
source, and the fingerprint the replica recorded is the source's current one.
"""

import time

import dagster as dg

from platform_assets.datasets import DatasetView, TargetView
from platform_assets.history import latest_copies
from platform_assets.replication.names import CHECK_LAG
from replicator.fingerprint import EMPTY_FINGERPRINT


def evaluate_lag(
    view: DatasetView, target: TargetView, instance: dg.DagsterInstance
) -> dg.AssetCheckResult:
    partitions = view.partitions()
    last = latest_copies(instance, target.key, partitions)
    now = time.time()
    lagging: list[str] = []
    max_lag = 0.0
    for p in partitions:
        fp = view.fingerprint(p, now=now)
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
        asset_key=target.key,
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


def build_lag_check(view: DatasetView, target: TargetView) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=target.key,
        name=CHECK_LAG,
        description=(
            "Each partition's last copy_finished is not older than the last change observed at "
            "the source (and the copied fingerprint is the source's current one)."
        ),
        blocking=False,
    )
    def _lag(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        return evaluate_lag(view, target, context.instance)

    return _lag
