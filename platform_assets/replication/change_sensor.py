"""The change sensor: cheap, lossless change detection per tick.

Each tick lists the partition directories of every ``mode: sync`` dataset, fingerprints them
(see :mod:`replicator.fingerprint`) and compares with the fingerprints kept in the cursor.
New partitions are added to the dataset's dynamic partitions; every new or changed partition
gets one ``RunRequest`` (all the dataset's replicas). Because the comparison is against the
last fingerprints and not against "modified in the last N minutes", a missed tick loses
nothing: the next one finds every change.

Paging: a tick fingerprints at most ``max_partitions_per_tick`` partitions and stops early
when ``tick_budget_s`` is spent; the cursor remembers where it stopped and the next tick goes
on from there (new partitions always first), so a tick stays well inside Dagster's 60 s limit.

Idempotency: a ``run_key`` is ``dataset|partition|fingerprint|seq`` where ``seq`` is the
cursor's tick number: a tick re-evaluated from the same cursor yields the same keys (Dagster
drops the duplicates); a partition that returns to an earlier content later gets a new key.

First tick (empty cursor, e.g. a new deployment or a reset sensor): the fingerprints recorded
on the replicas' latest materializations seed the state, so partitions already copied are not
copied again.

Failed copies: the cursor records a fingerprint when its copy is *requested*, so a copy that
then fails for good (its step and run retries spent) would otherwise not be requested again
until the source changes. Each tick therefore reads the copy runs that finished since the
previous tick: a final failure of the content the cursor holds schedules a new request after
``failed_retry_s`` (doubling per further failure, up to ``failed_retry_max_s``); a success of
that content clears it. Nothing a failed run should have copied is forgotten.
"""


import base64
import bisect
import json
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg

from platform_assets.datasets import ResolvedSpec
from platform_assets.history import latest_copies
from platform_assets.replication.assets import source_observation
from platform_assets.replication.names import (
    CHANGE_SENSOR,
    TAG_DATASET,
    TAG_FINGERPRINT,
    TAG_PARTITION,
)
from platform_assets.replication.requests import copy_run_request, missing_dynamic_partitions
from replicator.fingerprint import EMPTY_FINGERPRINT

CURSOR_VERSION = 1
_COMPRESS_OVER = 4096
_RUNS_OVERLAP_S = 1.0  # re-read runs updated this close to the watermark (equal timestamps)
_RUNS_PER_TICK = 10_000
_WILL_RETRY_TAG = "dagster/will_retry"  # set by the instance on a failed run it will re-execute


@dataclass
class ChangeState:
    fingerprints: dict[str, dict[str, str]] = field(default_factory=dict)
    position: tuple[str, str] | None = None  # last (dataset, partition) fingerprinted
    seq: int = 0  # ticks evaluated from this lineage of cursors
    seeded: bool = False
    # dataset -> partition -> [fingerprint, failures, not_before, last failure's update time]
    failed: dict[str, dict[str, list]] = field(default_factory=dict)
    runs_checked_at: float | None = None  # watermark: latest update time of the runs read

    def encode(self) -> str:
        data = {
            "v": CURSOR_VERSION,
            "seq": self.seq,
            "pos": list(self.position) if self.position else None,
            "seeded": self.seeded,
            "fp": self.fingerprints,
        }
        if self.failed:
            data["failed"] = self.failed
        if self.runs_checked_at is not None:
            data["runs_at"] = self.runs_checked_at
        text = json.dumps(data, separators=(",", ":"), sort_keys=True)
        if len(text) <= _COMPRESS_OVER:
            return text
        return "z1:" + base64.b64encode(zlib.compress(text.encode(), 6)).decode("ascii")

    @classmethod
    def decode(cls, cursor: str | None) -> "ChangeState":
        if not cursor:
            return cls()
        try:
            if cursor.startswith("z1:"):
                cursor = zlib.decompress(base64.b64decode(cursor[3:])).decode()
            data = json.loads(cursor)
            if data.get("v") != CURSOR_VERSION:
                raise ValueError(f"cursor version {data.get('v')!r}")
        except (ValueError, zlib.error) as exc:
            raise ValueError(f"change sensor: unreadable cursor ({exc}); reset the sensor") from None
        pos = data.get("pos")
        return cls(
            fingerprints={d: dict(p) for d, p in (data.get("fp") or {}).items()},
            position=(pos[0], pos[1]) if pos else None,
            seq=int(data.get("seq", 0)),
            seeded=bool(data.get("seeded", False)),
            failed={d: {p: list(e) for p, e in f.items()} for d, f in (data.get("failed") or {}).items()},
            runs_checked_at=data.get("runs_at"),
        )


@dataclass
class ChangeEvaluation:
    run_requests: list[dg.RunRequest]
    observations: list[dg.AssetObservation]  # the source partitions found new or changed
    new_partitions: dict[str, list[str]]  # dataset -> partitions not seen before
    state: ChangeState
    scanned: int
    total: int
    elapsed_s: float
    complete_cycle: bool  # every partition was fingerprinted at least once in this tick


def sync_datasets(rs: ResolvedSpec) -> list[str]:
    """The datasets this sensor watches (``mode: async`` ones are the audit sensor's)."""
    return rs.names(mode="sync")


def _rotate_after(items: list[tuple[str, str]], position: tuple[str, str] | None) -> list[tuple[str, str]]:
    if position is None or not items:
        return items
    # items are sorted; start at the first item after `position`
    i = bisect.bisect_right(items, position)
    return items[i:] + items[:i]


def seed_from_instance(
    rs: ResolvedSpec, instance: dg.DagsterInstance, datasets: list[str]
) -> dict[str, dict[str, str]]:
    """Fingerprints recorded by the replicas' latest materializations, per partition, where
    every target of the dataset recorded the same one."""
    seeded: dict[str, dict[str, str]] = {}
    for d in datasets:
        per_target = [latest_copies(instance, key) for key in rs[d].replica_keys]
        common: dict[str, str] = {}
        for p, copy in per_target[0].items():
            if copy.fingerprint and all(
                p in other and other[p].fingerprint == copy.fingerprint for other in per_target[1:]
            ):
                common[p] = copy.fingerprint
        if common:
            seeded[d] = common
    return seeded


def finished_copy_runs(
    instance: dg.DagsterInstance, datasets: Iterable[str], since: float
) -> list[dg.RunRecord]:
    """Copy runs of ``datasets`` that succeeded or failed, updated after ``since`` (epoch
    seconds, the storage's clock), oldest first."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE],
            tags={TAG_DATASET: sorted(datasets)},
            updated_after=datetime.fromtimestamp(since, tz=UTC),
        ),
        limit=_RUNS_PER_TICK,
    )
    return list(reversed(records))


def track_failed_copies(
    rs: ResolvedSpec,
    instance: dg.DagsterInstance,
    state: ChangeState,
    fingerprints: dict[str, dict[str, str]],
    now: float,
) -> tuple[dict[str, dict[str, list]], float]:
    """The cursor's failed-copy entries, updated with the copy runs finished since the last
    tick (see the module doc), and the new watermark. Entries whose content is no longer the
    cursor's are dropped: the change itself gets a request."""
    cfg = rs.platform.change_sensor
    failed = {
        d: {p: list(e) for p, e in state.failed.get(d, {}).items() if fingerprints[d].get(p) == e[0]}
        for d in fingerprints
    }
    if state.runs_checked_at is None:  # a new cursor: runs before it are the seed's business
        return failed, now
    watermark = state.runs_checked_at
    for record in finished_copy_runs(instance, fingerprints, watermark - _RUNS_OVERLAP_S):
        updated = record.update_timestamp.timestamp()
        watermark = max(watermark, updated)
        run = record.dagster_run
        tags = run.tags or {}
        d, p, fp = tags.get(TAG_DATASET), tags.get(TAG_PARTITION), tags.get(TAG_FINGERPRINT)
        if d not in fingerprints or p is None or fp is None or fingerprints[d].get(p) != fp:
            continue
        entry = failed[d].get(p)
        if run.status == dg.DagsterRunStatus.SUCCESS:
            whole = not run.asset_selection or set(rs[d].replica_keys) <= set(run.asset_selection)
            if entry is not None and whole:
                del failed[d][p]
        elif tags.get(_WILL_RETRY_TAG) != "true" and (entry is None or updated > entry[3]):
            failures = (entry[1] if entry else 0) + 1
            delay = min(cfg.failed_retry_s * 2 ** (failures - 1), cfg.failed_retry_max_s)
            failed[d][p] = [fp, failures, now + delay, updated]
    return {d: f for d, f in failed.items() if f}, watermark


def evaluate_changes(
    rs: ResolvedSpec,
    state: ChangeState,
    *,
    max_partitions: int | None = None,
    budget_s: float | None = None,
    workers: int | None = None,
    instance: dg.DagsterInstance | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> ChangeEvaluation:
    """One tick's work, without the sensor machinery (tests and the benchmark call it)."""
    cfg = rs.platform.change_sensor
    max_partitions = max_partitions or cfg.max_partitions_per_tick
    budget_s = budget_s or cfg.tick_budget_s
    workers = workers or cfg.workers
    start = clock()
    datasets = sync_datasets(rs)
    seq = state.seq + 1
    fingerprints = {d: dict(state.fingerprints.get(d, {})) for d in datasets}
    if not state.seeded and not any(fingerprints.values()) and instance is not None:
        for d, fps in seed_from_instance(rs, instance, datasets).items():
            fingerprints[d].update(fps)
    wall_now = wall_clock()
    if instance is not None:
        failed, runs_checked_at = track_failed_copies(rs, instance, state, fingerprints, wall_now)
    else:
        failed = {d: f for d, f in state.failed.items() if d in fingerprints}
        runs_checked_at = state.runs_checked_at
    # failed copies whose delay is over are requested again, first, like new partitions
    due = {
        (d, p) for d, f in failed.items() for p, e in f.items() if e[2] is not None and e[2] <= wall_now
    }

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="change-sensor") as pool:
        discovered = dict(zip(datasets, pool.map(lambda d: rs[d].partitions(), datasets), strict=True))
        new_items: list[tuple[str, str]] = []
        known_items: list[tuple[str, str]] = []
        for d in datasets:
            present = set(discovered[d])
            # partitions that disappeared at the source are forgotten (their replicas stay)
            for gone in set(fingerprints[d]) - present:
                del fingerprints[d][gone]
            for p in discovered[d]:
                first = p not in fingerprints[d] or (d, p) in due
                (new_items if first else known_items).append((d, p))
        total = len(new_items) + len(known_items)
        order = new_items + _rotate_after(known_items, state.position)
        order = order[:max_partitions]

        run_requests: list[dg.RunRequest] = []
        observations: list[dg.AssetObservation] = []
        new_partitions: dict[str, list[str]] = {}
        last_done: tuple[str, str] | None = state.position
        scanned = 0
        chunk = max(workers * 8, 64)
        now = time.time()
        for i in range(0, len(order), chunk):
            if scanned and clock() - start > budget_s:
                break
            batch = order[i : i + chunk]
            results = list(
                pool.map(lambda item: rs[item[0]].fingerprint(item[1], now=now), batch)
            )
            for (d, p), fp in zip(batch, results, strict=True):
                scanned += 1
                previous = fingerprints[d].get(p)
                retry = (d, p) in due
                if previous is None:
                    new_partitions.setdefault(d, []).append(p)
                elif not retry:
                    last_done = (d, p)
                fingerprints[d][p] = fp.fingerprint
                if fp.fingerprint != previous:
                    observations.append(source_observation(rs[d], fp))
                if retry and fp.fingerprint == previous:
                    # requested again; should this run be lost too, ask again after the longest delay
                    failed[d][p][2] = wall_now + cfg.failed_retry_max_s
                elif retry:
                    del failed[d][p]  # new content: an ordinary change request below
                if fp.fingerprint != EMPTY_FINGERPRINT and (fp.fingerprint != previous or retry):
                    run_requests.append(
                        copy_run_request(
                            rs[d], p, fp.fingerprint,
                            run_key=f"{d}|{p}|{fp.fingerprint}|{seq}",
                            trigger="retry" if retry and fp.fingerprint == previous else "change",
                        )
                    )
    complete = scanned >= total
    if complete:
        last_done = None
    new_state = ChangeState(
        fingerprints=fingerprints, position=last_done, seq=seq, seeded=True,
        failed={d: f for d, f in failed.items() if f},
        runs_checked_at=runs_checked_at,
    )
    return ChangeEvaluation(
        run_requests=run_requests,
        observations=observations,
        new_partitions=new_partitions,
        state=new_state,
        scanned=scanned,
        total=total,
        elapsed_s=clock() - start,
        complete_cycle=complete,
    )


def build_change_sensor(rs: ResolvedSpec, copy_jobs: list) -> dg.SensorDefinition:
    cfg = rs.platform.change_sensor
    names = {rs[d].copy_job_name for d in sync_datasets(rs)}

    @dg.sensor(
        name=CHANGE_SENSOR,
        minimum_interval_seconds=cfg.interval_s,
        jobs=[j for j in copy_jobs if j.name in names] or copy_jobs,
        default_status=rs.sensor_status,
        description=(
            "Fingerprints the partition directories of every sync dataset and requests one copy "
            "run per new or changed partition."
        ),
    )
    def replication_change_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        state = ChangeState.decode(context.cursor)
        ev = evaluate_changes(rs, state, instance=context.instance)
        dyn = missing_dynamic_partitions(rs, context.instance, ev.new_partitions)
        context.log.info(
            f"scanned {ev.scanned}/{ev.total} partitions in {ev.elapsed_s:.2f}s, "
            f"{len(ev.run_requests)} changed, "
            f"{sum(len(v) for v in ev.new_partitions.values())} new"
            + ("" if ev.complete_cycle else f"; continuing after {ev.state.position} next tick")
        )
        return dg.SensorResult(
            run_requests=ev.run_requests,
            asset_events=ev.observations,
            dynamic_partitions_requests=dyn,
            cursor=ev.state.encode(),
        )

    return replication_change_sensor
