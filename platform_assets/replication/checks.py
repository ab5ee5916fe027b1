"""Checks of the replication kind: ``replication_lag`` per replica, run by a schedule.

Each partition's last ``copy_finished`` is not older than the last change observed at the
source, and the fingerprint the replica recorded is the source's current one.
"""

import time
from concurrent.futures import ThreadPoolExecutor

import dagster as dg

from platform_assets.datasets import DatasetView, TargetView
from platform_assets.history import latest_copies
from platform_assets.replication.names import CHECK_LAG
from replicator.fingerprint import EMPTY_FINGERPRINT

LAG_WORKERS = 8  # partitions fingerprinted at once


def evaluate_lag(
    view: DatasetView, target: TargetView, instance: dg.DagsterInstance,
    *, now: float | None = None, workers: int = LAG_WORKERS,
) -> dg.AssetCheckResult:
    """Per partition: is the replica's last copy older than the newest change at the source,
    or of another content? A partition behind is *lagging* (the check fails at WARN); one
    behind by more than the dataset's freshness ``fail_window`` fails it at ERROR. The
    metadata lists the most lagging partitions with their lag in seconds."""
    partitions = view.partitions()
    last = latest_copies(instance, target.key, partitions)
    now = time.time() if now is None else now
    window = view.fail_window.total_seconds() if view.fail_window else None
    lags: dict[str, float] = {}
    # the partitions' listings are I/O (a NameNode or an object store answering): in parallel
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lag-check") as pool:
        fingerprints = list(pool.map(lambda p: view.fingerprint(p, now=now), partitions))
    for p, fp in zip(partitions, fingerprints, strict=True):
        if fp.fingerprint == EMPTY_FINGERPRINT:
            continue
        copy = last.get(p)
        changed_at = fp.newest_mtime_ns / 1e9
        if copy is None or copy.copy_finished < changed_at or (
            copy.fingerprint is not None and copy.fingerprint != fp.fingerprint
        ):
            # behind since the source changed after what the copy carried (a stale `via` hop
            # carries an older change than its copy time); otherwise (a deletion: no newer
            # mtime) since the copy
            carried = None if copy is None else (copy.source_changed_at or copy.copy_finished)
            since = changed_at if carried is None or carried < changed_at else copy.copy_finished
            lags[p] = max(0.0, now - since)
    overdue = sorted(p for p, lag in lags.items() if window is not None and lag > window)
    worst = sorted(lags.items(), key=lambda item: -item[1])[:20]
    return dg.AssetCheckResult(
        asset_key=target.key,
        check_name=CHECK_LAG,
        passed=not lags,
        severity=dg.AssetCheckSeverity.ERROR if overdue else dg.AssetCheckSeverity.WARN,
        description=(
            f"{len(overdue)} partition(s) behind by more than the freshness window"
            if overdue else f"{len(lags)} partition(s) behind" if lags else "every partition in sync"
        ),
        metadata={
            "partitions_checked": len(partitions),
            "partitions_lagging": len(lags),
            "partitions_overdue": len(overdue),
            "lagging": ", ".join(p for p, _ in worst) or "none",
            "lag_s_by_partition": dg.MetadataValue.json({p: round(lag, 1) for p, lag in worst}),
            "max_lag_s": round(max(lags.values(), default=0.0), 1),
            "fail_window_s": window if window is not None else "none",
        },
    )


def build_lag_check(view: DatasetView, target: TargetView) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=target.key,
        name=CHECK_LAG,
        description=(
            "Each partition's last copy_finished is not older than the last change observed at "
            "the source (and the copied fingerprint is the source's current one); ERROR when "
            "a partition is behind by more than the freshness window."
        ),
        blocking=False,
    )
    def _lag(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        return evaluate_lag(view, target, context.instance)

    return _lag
