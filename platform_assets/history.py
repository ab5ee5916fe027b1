"""What the instance recorded: the latest materialization of each partition of an asset.

One pager over ``fetch_materializations`` (newest first) for every kind: replicas' last
``copy_finished`` and ``source_fingerprint``, imports' record times, ETL start times.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import dagster as dg

from platform_assets.config import UNPARTITIONED_KEY


@dataclass(frozen=True)
class LastCopy:
    copy_finished: float
    fingerprint: str | None
    source_changed_at: float | None = None  # newest source change the copy carried


def latest_per_partition(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitions: Iterable[str] | None = None,
    page: int = 1000, max_records: int = 200_000,
) -> Iterator[tuple[str, dg.EventLogRecord]]:
    """``(partition, record)`` of the latest materialization of each partition of ``key``
    (only ``partitions`` when given), reading at most ``max_records`` records."""
    wanted = set(partitions) if partitions is not None else None
    done: set[str] = set()
    cursor = None
    seen = 0
    while seen < max_records:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key), limit=page, cursor=cursor
        )
        for record in result.records:
            seen += 1
            pkey = record.partition_key or UNPARTITIONED_KEY
            if pkey in done or (wanted is not None and pkey not in wanted):
                continue
            done.add(pkey)
            yield pkey, record
        if not result.has_more or (wanted is not None and wanted <= done):
            return
        cursor = result.cursor


def _metadata(record: dg.EventLogRecord) -> dict:
    mat = record.asset_materialization
    return dict(mat.metadata) if mat else {}


def latest_copies(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitions: Iterable[str] | None = None,
    page: int = 1000, max_records: int = 200_000,
) -> dict[str, LastCopy]:
    """The latest ``copy_finished`` (the record time if absent) and ``source_fingerprint`` of
    each materialized partition."""
    out: dict[str, LastCopy] = {}
    for pkey, record in latest_per_partition(instance, key, partitions, page, max_records):
        md = _metadata(record)
        finished = md.get("copy_finished")
        fpv = md.get("source_fingerprint")
        changed = md.get("source_changed_at")
        out[pkey] = LastCopy(
            copy_finished=float(finished.value) if finished is not None else record.timestamp,
            fingerprint=str(fpv.value) if fpv is not None else None,
            source_changed_at=float(changed.value) if changed is not None else None,
        )
    return out


def latest_timestamps(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitions: Iterable[str], name: str
) -> dict[str, float]:
    """The latest materialization's ``name`` timestamp per partition (record time if absent)."""
    out: dict[str, float] = {}
    for pkey, record in latest_per_partition(instance, key, partitions):
        v = _metadata(record).get(name)
        out[pkey] = float(v.value) if v is not None else record.timestamp
    return out
