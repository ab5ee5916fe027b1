"""The change sensor's O(changes) path: HDFS snapshot diffs instead of partition listings.

A ``mode: sync`` dataset with ``change_detection: snapshot`` whose source root is an HDFS
snapshottable directory (``webhdfs://``, or ``hdfs://`` with the NameNode's ``http_address``,
e.g. a named remote) is watched like this, each tick:

1. take one snapshot of the root, ``replication-sensor-<hash of the dataset>-o<owner>-<seq>-<ms>``
   (``owner``: an id kept in the sensor's state store, so two deployments watching one root
   delete only their own; never ``replicator-...``, the names ``replicator copy
   --snapshot-diff`` takes and deletes; a user's snapshots are never touched);
2. ask the NameNode for the diff between the cursor's base snapshot and the new one
   (GETSNAPSHOTDIFF) and map its entries to partitions (``replicator.snapdiff``): a file
   created, deleted, overwritten, appended or renamed in ``dt=1``, ``dt=1`` itself created,
   deleted or renamed; a directory above partition depth created or deleted is listed in the
   new or the old snapshot for the partitions under it;
3. add the partitions to look at again (files held back by ``min_age_s``, partitions the run
   cap or the budget left for later: the ``again`` rows of the state store) and failed copies
   due again;
4. fingerprint exactly those partitions in the new snapshot (a consistent image), read their
   recorded state by key, and request runs with the listing path's rules: the same
   ``PartitionState`` rows, run keys ``dataset|partition|fingerprint|lineage.seq``, pacing,
   failed-copy retries, observations and new dynamic partitions, so the two paths agree and a
   dataset can switch between them without losing or repeating anything;
5. write the rows, then delete the dataset's older sensor snapshots: the cursor's base is
   kept until the next tick (from the new cursor) starts, so a tick whose cursor never lands,
   or that dies after taking its snapshot, is followed by a tick that diffs from the last
   base whose state was recorded; leftovers of such ticks are deleted by the next one.

A tick's work is the diff's size: no listing of the root, no state read of unchanged
partitions. A tick from an empty cursor with an instance only seeds (as the listing path
does: from the replicas' materializations), so the snapshot path starts one tick later. The
first tick (no base: a new cursor, or the base snapshot is gone) bootstraps
from a snapshot it then keeps: it lists that image and fingerprints every partition, as many
per tick as the budget allows, resuming after the last one; once all are recorded that image
becomes the base. Where no snapshot can be taken (the root is not snapshottable, the back end
has none, ``hdfs://`` without ``http_address``) the dataset goes through the listing path for
that tick, with a warning naming the reason; the tick never fails for it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from platform_assets.config import UNPARTITIONED_KEY
from platform_assets.datasets import DatasetView, ResolvedSpec, join_partition
from platform_assets.replication.change_sensor import (
    ChangeEvaluation,
    ChangeState,
    evaluate_changes,
    partition_wanted,
    queued_copy_runs,
    settle_partition,
    sync_datasets,
    track_failed_copies,
)
from platform_assets.replication.sensor_state import (
    NAMESPACE,
    NO_MTIME,
    PartitionState,
    StateMirror,
    TickRows,
    fingerprint_scope,
    open_sensor_store,
)
from replicator import snapdiff
from replicator.errors import ReplicatorError, UsageError, describe
from replicator.filesystems.base import FileSystem
from replicator.filesystems.registry import resolve
from replicator.fingerprint import (
    ListingCache,
    TreeFingerprint,
    fingerprint_tree,
    list_partition_dirs,
    list_partition_dirs_with_mtimes,
)
from replicator.state import StateStore

SNAPSHOT_PREFIX = "replication-sensor-"
_CHUNK = 64
_log = logging.getLogger("platform_assets.change_sensor")


OWNER_SCOPE = f"{NAMESPACE}/snapshot-owner"


def _dataset_prefix(dataset: str) -> str:
    return f"{SNAPSHOT_PREFIX}{hashlib.sha256(dataset.encode('utf-8', 'surrogateescape')).hexdigest()[:10]}-"


def snapshot_prefix(dataset: str, owner: str) -> str:
    """``replication-sensor-<hash>-o<owner>-``: the names of one dataset's sensor snapshots
    taken by one sensor (``owner``: its state store's id, :func:`snapshot_owner`), so two
    datasets over one root, or two deployments (code locations, each with its own state
    store) watching one root, each delete only their own."""
    return f"{_dataset_prefix(dataset)}o{owner}-"


def _legacy(dataset: str) -> re.Pattern[str]:
    """The names of ``dataset``'s snapshots taken before they carried an owner (deleted by
    the sensor's clean-up, as they were then, once they are not its base)."""
    return re.compile(re.escape(_dataset_prefix(dataset)) + r"[0-9]+-[0-9]+")


def snapshot_owner(store: StateStore) -> str:
    """This state store's id for snapshot names: made once and kept in the store (it moves
    with the store, and two processes of one deployment get the same one)."""
    return store.sensor_setdefault(OWNER_SCOPE, "id", uuid.uuid4().hex[:8])


def again_scope(dataset: str) -> str:
    """State-store rows of the partitions the next tick must look at without a diff entry."""
    return f"{NAMESPACE}/again/{dataset}"


def snapshot_datasets(rs: ResolvedSpec) -> list[str]:
    return [d for d in sync_datasets(rs) if rs[d].change_detection == "snapshot"]


@dataclass
class _Root:
    """One dataset's source root on HDFS, and the snapshot image this tick reads."""

    view: DatasetView
    fs: FileSystem
    path: str  # native path of the root
    image: str  # the snapshot this tick reads (new, or the bootstrap's pending one)
    base: str | None  # the snapshot the diff starts from (None: bootstrap)
    after: str | None = None  # bootstrap: the last partition recorded from ``image``
    keep: set[str] = field(default_factory=set)  # sensor snapshots not to delete this tick
    fresh: bool = False  # ``image`` was taken by this tick
    owner: str = ""  # :func:`snapshot_owner`: only this sensor's snapshots are deleted

    def image_uri(self, partition: str | None = None) -> str:
        return join_partition(snapdiff.snapshot_uri(self.view.source_root, self.image), partition)


def _names(fs: FileSystem, root: str) -> list[str]:
    return list(fs.snapshot_names(root))  # type: ignore[attr-defined]


def _open(view: DatasetView, entry: dict, seq: int, clock_ms: int, owner: str) -> _Root | str:
    """The tick's snapshot image of ``view``'s root, or why there is none (listing path)."""
    try:
        fs, root = resolve(view.source_root)
    except (ReplicatorError, OSError) as exc:
        return describe(exc)
    if not snapdiff.supported(fs):
        return f"{fs.scheme}:// has no snapshots"
    prefix = snapshot_prefix(view.name, owner)
    try:
        existing = _names(fs, root)
        pending = entry.get("pending")
        if pending and pending in existing:  # a bootstrap in progress: go on reading its image
            return _Root(view, fs, root, pending, None, entry.get("after"), {pending}, owner=owner)
        name = f"{prefix}{seq}-{clock_ms}"
        fs.create_snapshot(root, name)  # type: ignore[attr-defined]
    except UsageError as exc:  # hdfs:// without http_address
        return describe(exc)
    except (ReplicatorError, OSError) as exc:
        return f"no snapshot of {fs.uri(root)} ({describe(exc)})"
    base = entry.get("base")
    if base and base not in existing:
        _log.warning("change sensor: %s: base snapshot %s is gone: the dataset is listed in full "
                     "from snapshot %s", view.name, base, name)
        base = None
    keep = {name} | ({base} if base else set())
    return _Root(view, fs, root, name, base, None, keep, fresh=True, owner=owner)


def _candidates(r: _Root) -> set[str]:
    """The partitions the diff base..image names (keys as the sensor records them)."""
    changes = r.fs.snapshot_diff(r.path, r.base, r.image)  # type: ignore[attr-defined]
    levels = r.view.layout_levels if r.view.partitioned else ()
    touched, old, new = snapdiff.partitions_in_diff(changes, levels)
    if not r.view.partitioned:
        return {UNPARTITIONED_KEY} if touched else set()
    for prefixes, snap in ((old, r.base), (new, r.image)):
        for prefix in prefixes:
            depth = len(prefix.split("/"))
            under = join_partition(snapdiff.snapshot_uri(r.view.source_root, snap), prefix)
            touched.update(f"{prefix}/{p}" for p in list_partition_dirs(under, levels[depth:]))
    return touched


@dataclass
class _Look:
    """What one partition looks like in the image."""

    dataset: str
    partition: str
    token: str | None  # the directory's mtime token; None: the partition is not there
    fp: TreeFingerprint | None


def _look(r: _Root, partition: str, token: str | None, now: float) -> _Look:
    d = r.view.name
    if token is None and r.view.partitioned:
        info = r.fs.stat(r.fs.join(snapdiff.snapshot_uri(r.path, r.image), partition))
        if info is None or info.kind != "d":
            return _Look(d, partition, None, None)
        token = str(info.mtime_ns) if info.mtime_ns else NO_MTIME
    token = token or NO_MTIME
    fp = fingerprint_tree(r.image_uri(partition), r.view.filter, min_age_s=r.view.min_age_s,
                          max_age_s=r.view.max_age_s, now=now, partition=partition)
    return _Look(d, partition, token, fp)


def evaluate_tick(
    rs: ResolvedSpec,
    state: ChangeState,
    *,
    instance: dg.DagsterInstance | None = None,
    store: StateStore | None = None,
    max_partitions: int | None = None,
    budget_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    log: Any = None,
    listing_cache: ListingCache | None = None,
    state_mirror: StateMirror | None = None,
) -> ChangeEvaluation:
    """One change-sensor tick: the snapshot path for the datasets that use it (and can take a
    snapshot now), the listing path (:func:`evaluate_changes`, with ``listing_cache`` and
    ``state_mirror``) for the rest."""
    log = log or _log
    snap = snapshot_datasets(rs)
    if not snap and not state.snapshots:
        return evaluate_changes(rs, state, instance=instance, store=store,
                                max_partitions=max_partitions, budget_s=budget_s, clock=clock,
                                wall_clock=wall_clock, listing_cache=listing_cache,
                                state_mirror=state_mirror)
    if store is None:
        own = open_sensor_store(rs.spec)
        try:
            return evaluate_tick(rs, state, instance=instance, store=own,
                                 max_partitions=max_partitions, budget_s=budget_s, clock=clock,
                                 wall_clock=wall_clock, log=log, listing_cache=listing_cache,
                                 state_mirror=state_mirror)
        finally:
            own.close()
    cfg = rs.platform.change_sensor
    start = clock()
    owner = snapshot_owner(store) if snap or state.snapshots else ""
    for d in sorted(set(state.snapshots) - set(snap)):  # switched back to listing: clean up
        _drop_all(rs, d, log, owner)
    entries = {d: e for d, e in state.snapshots.items() if d in snap}
    seq = state.seq + 1
    roots: dict[str, _Root] = {}
    for d in snap:
        got = _open(rs[d], entries.get(d, {}), seq, int(wall_clock() * 1000), owner)
        if isinstance(got, str):
            log.warning(f"change sensor: {d}: {got}; this tick lists the dataset's partitions "
                        "instead (change_detection: snapshot needs a snapshottable HDFS root "
                        "reached over WebHDFS)")
        else:
            roots[d] = got
    listing = [d for d in sync_datasets(rs) if d not in roots]
    ev = evaluate_changes(rs, ChangeState(**{**state.__dict__, "snapshots": {}}), instance=instance,
                          store=store, max_partitions=max_partitions, budget_s=budget_s,
                          clock=clock, wall_clock=wall_clock, only=listing, listing_cache=listing_cache,
                          state_mirror=state_mirror)
    seeded = instance is not None and (not state.lineage or state.seed is not None)
    # a tick that seeds (an empty cursor: the fingerprints the replicas recorded are staged
    # as this tick's rows) leaves the snapshot path to the next one, which reads them
    if seeded or ev.seeding or not roots:
        for r in roots.values():  # this tick's own snapshots are not needed
            _cleanup(r, keep=r.keep - {r.image} if r.fresh else r.keep, log=log)
        ev.state.snapshots = entries
        return ev
    t_snap = clock()
    lineage = ev.state.lineage
    rows = TickRows(store, lineage, state.seq)
    wall_now = wall_clock()
    # the cursor's failed copies of these datasets, with the runs that finished since
    mine = set(roots)
    fps = {d: _Recorded(rows, fingerprint_scope(d)) for d in mine}
    failed: dict[str, dict[str, list]] = {d: dict(f) for d, f in state.failed.items() if d in mine}
    watermark = ev.state.runs_checked_at
    if instance is not None:
        failed, mark = track_failed_copies(
            rs, instance, ChangeState(failed=failed, runs_checked_at=state.runs_checked_at),
            fps, wall_now)  # type: ignore[arg-type]
        watermark = mark if watermark is None else min(watermark, mark)
        allowed = max(0, min(cfg.max_runs_per_tick,
                             cfg.max_queued_runs - queued_copy_runs(instance, sync_datasets(rs)))
                      - len(ev.run_requests))
    else:
        allowed = max(0, cfg.max_runs_per_tick - len(ev.run_requests))
    due = {(d, p) for d, f in failed.items() for p, e in f.items() if e[2] is not None and e[2] <= wall_now}

    # what each dataset's tick looks at, in order: (dataset, partition, listed token or None)
    work: list[tuple[str, str, str | None]] = []
    bootstrap_ends: dict[str, str | None] = {}  # bootstrap: its image's last partition
    diff_sizes: dict[str, int] = {}
    again_rows: dict[str, dict[str, str]] = {}
    for d, r in sorted(roots.items()):
        again = rows.load(again_scope(d))
        again_rows[d] = again
        if r.base is not None:
            try:
                touched = _candidates(r)
            except (ReplicatorError, OSError) as exc:
                log.warning(f"change sensor: {d}: snapshot diff {r.base}..{r.image} failed "
                            f"({describe(exc)}): the dataset is listed in full from {r.image}")
                r.base, r.keep = None, {r.image}
            else:
                diff_sizes[d] = len(touched)
                keys = sorted(touched | set(again) | {p for dd, p in due if dd == d})
                rows.load_keys(fingerprint_scope(d), keys)
                work += [(d, p, None) for p in keys]
                continue
        # bootstrap: the whole image, in sorted order, after the last partition recorded
        if r.view.partitioned:
            listed = list_partition_dirs_with_mtimes(r.image_uri(), r.view.layout_levels)
        else:
            listed = [(UNPARTITIONED_KEY, None)]
        recorded = rows.load(fingerprint_scope(d))
        names = {p for p, _ in listed}
        for gone in sorted(set(recorded) - names):
            rows.stage(fingerprint_scope(d), gone, None)
        for gone in sorted(set(again) - names):
            rows.stage(again_scope(d), gone, None)
        todo = [(d, p, str(m) if m else NO_MTIME) for p, m in listed if r.after is None or p > r.after]
        bootstrap_ends[d] = listed[-1][0] if listed else None
        work += todo

    run_requests: list[dg.RunRequest] = []
    observations: list[dg.AssetObservation] = []
    new_partitions: dict[str, list[str]] = {}
    limit = max_partitions or cfg.max_partitions_per_tick
    deadline = start + (budget_s or cfg.tick_budget_s)
    done: dict[str, str] = {}  # bootstrap: dataset -> last partition recorded this tick
    left: list[tuple[str, str, str | None]] = []  # not looked at this tick
    scanned = 0
    capped = False
    now = wall_now  # held back or not, as of the tick's clock
    with ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="snapshot-sensor") as pool:
        i = 0
        while i < len(work):
            if capped or scanned >= limit or (scanned and clock() > deadline):
                break
            batch = work[i : i + min(_CHUNK, limit - scanned)]
            looks = list(pool.map(lambda w: _look(roots[w[0]], w[1], w[2], now), batch))
            for (d, p, _), look in zip(batch, looks, strict=True):
                scope = fingerprint_scope(d)
                if look.fp is None:  # not in the image: the partition is gone at the source
                    rows.stage(scope, p, None)
                    rows.stage(again_scope(d), p, None)
                    scanned += 1
                    i += 1
                    continue
                fp = look.fp
                want = partition_wanted(fp, d, fps[d], due, requested=len(run_requests),
                                        allowed=allowed)
                if want is None:
                    capped = True  # not recorded: looked at again next tick
                    break
                scanned += 1
                i += 1
                if want.previous is None:
                    new_partitions.setdefault(d, []).append(p)
                rows.stage(scope, p, PartitionState(fp.fingerprint, look.token, fp.held_back > 0).encode())
                rows.stage(again_scope(d), p, "held" if fp.held_back > 0 else None)
                if d in bootstrap_ends:
                    done[d] = p
                settle_partition(rs[d], fp, want, failed=failed,
                                 retry_at=wall_now + cfg.failed_retry_max_s, run_key_suffix=f"{lineage}.{seq}",
                                 run_requests=run_requests, observations=observations)
        left = work[i:]
    for d, p, _ in left:  # diff path: looked at by the next tick, whatever its diff says
        if d not in bootstrap_ends:
            rows.stage(again_scope(d), p, "later")
    rows.flush()

    # the cursor: a base for each dataset whose image is fully recorded, else the bootstrap
    new_entries: dict[str, dict] = {}
    complete = True
    for d, r in roots.items():
        if d in bootstrap_ends and any(w[0] == d for w in left):
            after = done.get(d, r.after)
            new_entries[d] = {"pending": r.image, **({"after": after} if after else {})}
            complete = False
        else:
            new_entries[d] = {"base": r.image}
            if any(w[0] == d for w in left):
                complete = False
    for d in set(entries) - set(roots):  # listed this tick (no snapshot): the base still holds
        new_entries[d] = entries[d]
    for r in roots.values():
        _cleanup(r, keep=r.keep, log=log)
    for d, r in sorted(roots.items()):
        how = (f"diff {r.base}..{r.image}: {diff_sizes.get(d, 0)} partition(s) named"
               if d not in bootstrap_ends else
               f"full pass over snapshot {r.image}" + ("" if new_entries[d].get("base") else
                                                       f", continuing after {done.get(d, r.after)!r} next tick"))
        log.info(f"change sensor: {d}: {how}; {len(again_rows[d])} held back or left over before")
    new_state = ev.state
    new_state.failed = {**ev.state.failed, **{d: f for d, f in failed.items() if f}}
    new_state.runs_checked_at = watermark
    new_state.snapshots = new_entries
    timings = dict(ev.timings)
    timings["snapshot_s"] = round(clock() - t_snap, 3)
    for d, f in ev.new_partitions.items():
        new_partitions.setdefault(d, []).extend(f)
    return ChangeEvaluation(
        run_requests=ev.run_requests + run_requests,
        observations=ev.observations + observations,
        new_partitions=new_partitions,
        state=new_state,
        scanned=ev.scanned + scanned,
        total=ev.total + scanned + len(left),
        elapsed_s=clock() - start,
        complete_cycle=ev.complete_cycle and complete,
        seeded_records=ev.seeded_records,
        capped=ev.capped or capped,
        hinted=ev.hinted,
        timings=timings,
    )


class _Recorded:
    """Recorded fingerprints of one dataset, read by key on first use (the failed-copy check
    asks about the partitions of finished runs only)."""

    def __init__(self, rows: TickRows, scope: str) -> None:
        self.rows, self.scope = rows, scope

    def get(self, partition: str) -> str | None:
        value = self.rows.load_keys(self.scope, [partition]).get(partition)
        return None if value is None else value.split(" ", 1)[0]


def _cleanup(r: _Root, *, keep: set[str], log: Any) -> None:
    """Delete this sensor's snapshots of the dataset on its root but ``keep`` (another
    deployment's, with another owner in their names, are left alone)."""
    prefix, legacy = snapshot_prefix(r.view.name, r.owner), _legacy(r.view.name)
    try:
        for name in _names(r.fs, r.path):
            if (name.startswith(prefix) or legacy.fullmatch(name)) and name not in keep:
                r.fs.delete_snapshot(r.path, name)  # type: ignore[attr-defined]
    except (ReplicatorError, OSError) as exc:
        log.warning(f"change sensor: {r.view.name}: snapshot clean-up of {r.fs.uri(r.path)}: "
                    f"{describe(exc)} (the next tick tries again)")


def _drop_all(rs: ResolvedSpec, dataset: str, log: Any, owner: str) -> None:
    """A dataset no longer on the snapshot path (or gone from the spec): its sensor snapshots."""
    if dataset not in rs.datasets:
        return
    try:
        fs, root = resolve(rs[dataset].source_root)
        if snapdiff.supported(fs):
            _cleanup(_Root(rs[dataset], fs, root, "", None, owner=owner), keep=set(), log=log)
    except (ReplicatorError, OSError) as exc:
        log.warning(f"change sensor: {dataset}: snapshot clean-up: {describe(exc)}")
