"""Instance-side settings the code location cannot declare itself."""

from __future__ import annotations

import dagster as dg

from platform_assets.config import ReplicationSpec
from platform_assets.replication.names import copy_pool


def pool_limits(spec: ReplicationSpec) -> dict[str, int]:
    """Concurrency pool of each destination cluster -> its ``max_concurrent_copies``."""
    targets = {t.cluster for ds in spec.datasets.values() for t in ds.targets}
    return {copy_pool(c): spec.clusters[c].max_concurrent_copies for c in sorted(targets)}


def apply_pool_limits(instance: dg.DagsterInstance, spec: ReplicationSpec) -> dict[str, int]:
    """Set each pool's limit on the instance (same as ``dagster instance concurrency set``)."""
    limits = pool_limits(spec)
    for pool, limit in limits.items():
        instance.event_log_storage.set_concurrency_slots(pool, limit)
    return limits
