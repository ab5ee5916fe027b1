"""The landing sensor: one per landing dataset; new or changed landing files start a run.

Each tick asks the engine for the plan of ``source -> raw`` (``replicator.api.plan``: the
listing diffed against the manifest, with the dataset's include globs and ``min_age_s``, so
files still being written are held back until they are old enough). When the plan copies or
updates files, the tick requests one run of ``landing_NAME`` for them.

Idempotency: the batch fingerprint is a hash of the planned files' paths, sizes and mtimes.
The cursor remembers the last fingerprint requested and a sequence number; the run key and the
batch id (``b<seq>-<fingerprint>``) are derived from both, so a tick re-evaluated from the same
cursor requests the same run (Dagster drops the duplicate), a batch already requested is not
requested twice, and a file changed again later gets a new batch. While a landing run of the
dataset is in flight no new batch starts (one engine copy per source/raw pair at a time). A
batch whose run failed before its files were copied (the plan still lists them) is requested
again, at most ``MAX_ATTEMPTS`` times; a rejected batch is not (its files were copied: the
user drops a corrected file), but its valid files, left pending, are: when the plan is empty
the tick starts a batch of the pending files still in the raw area (same attempt bound), so one
bad file does not hold the good ones of its batch back until the next drop. Lossless: the plan compares with the manifest, not with
"modified in the last N minutes".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import dagster as dg

from platform_assets.landing.batches import load_pending, notify_step
from platform_assets.landing.names import TAG_BATCH, TAG_LANDING
from platform_assets.landing.view import LandingView
from replicator.filesystems.base import FILE
from replicator.filesystems.registry import resolve
from replicator.options import CopyOptions
from resources.notify import NotifierResource
from resources.replicator import ReplicatorResource

MAX_ATTEMPTS = 3  # runs requested for the same files before the sensor waits for a change
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
             dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


@dataclass(frozen=True)
class LandingState:
    fingerprint: str | None = None
    seq: int = 0
    attempts: int = 0  # runs requested for this fingerprint
    run_key: str | None = None  # the last one

    def encode(self) -> str:
        return json.dumps({"v": 1, "fp": self.fingerprint, "seq": self.seq,
                           "attempts": self.attempts, "run_key": self.run_key}, sort_keys=True)

    @classmethod
    def decode(cls, cursor: str | None) -> LandingState:
        if not cursor:
            return cls()
        try:
            data = json.loads(cursor)
            return cls(fingerprint=data.get("fp"), seq=int(data.get("seq", 0)),
                       attempts=int(data.get("attempts", 1 if data.get("fp") else 0)),
                       run_key=data.get("run_key"))
        except (ValueError, TypeError, AttributeError):
            raise ValueError("landing sensor: unreadable cursor; reset the sensor") from None


@dataclass
class LandingEvaluation:
    files: list[tuple[str, int, int]]  # (path, size, mtime_ns) planned for copy
    held_back: int
    run_request: dg.RunRequest | None
    state: LandingState
    skip_reason: str | None = None
    carried: bool = False  # a batch of files an earlier batch left pending (nothing new planned)


def planned_files(view: LandingView, options: CopyOptions) -> tuple[list[tuple[str, int, int]], int]:
    """New or changed landing files (path, size, mtime_ns) by the engine's plan, and how many
    files were held back as too new. (The engine lists at most 10,000 planned actions: a larger
    drop is fingerprinted by its first 10,000 files; the ingest copies all of them.)"""
    from replicator import api

    src = view.source
    report = api.plan(src, view.raw, options)
    if report.error:
        raise ValueError(f"landing sensor {view.name}: {report.error}")
    fs, root = resolve(src)
    files = []
    for a in report.actions:
        if a["kind"] != FILE or a["action"] not in ("copy", "update"):
            continue
        info = fs.stat(fs.join(root, a["path"]))
        files.append((a["path"], int(a["size"]), info.mtime_ns if info else 0))
    return sorted(files), report.files_held_back


def pending_files(view: LandingView) -> list[tuple[str, int, int]]:
    """The valid files an earlier batch ingested but did not convert (a rejected batch's good
    files, or what a partly failed copy did copy) that are still in the raw area, as
    (path, size, mtime_ns)."""
    paths = view.paths()
    try:
        pending = load_pending(paths)
        if not pending:
            return []
        raw = paths.raw_store
        out = []
        for f in pending:
            info = raw.fs.stat(raw.path(f))
            if info is not None and info.kind == FILE:
                out.append((f, info.size, info.mtime_ns))
        return sorted(out)
    finally:
        paths.close()


def _runs(instance: dg.DagsterInstance, tags: dict[str, str],
          statuses: list[dg.DagsterRunStatus] | None = None) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags=tags, statuses=statuses), limit=5))


def evaluate_landing(view: LandingView, state: LandingState, options: CopyOptions,
                     instance: dg.DagsterInstance | None = None) -> LandingEvaluation:
    """One tick. With ``instance``: no new batch while a landing run of this dataset is in
    flight (the engine allows one copy per source/raw pair), and a batch whose run failed
    (e.g. the copy failed: its files are still to copy) is requested again, up to
    ``MAX_ATTEMPTS`` times, until its files change."""
    name = view.name
    if instance is not None and _runs(instance, {TAG_LANDING: name}, IN_FLIGHT):
        return LandingEvaluation([], 0, None, state, f"a landing run of {name!r} is in flight")
    files, held = planned_files(view, options)
    carried = False
    if not files:
        # nothing new: the valid files a rejected (or partly failed) batch left pending go
        # through on their own, rather than waiting for someone to drop another file
        files, carried = pending_files(view), True
    if not files:
        why = "no new or changed landing files" + (f" ({held} still too new)" if held else "")
        return LandingEvaluation(files, held, None, state, why)
    fp = hashlib.sha256(json.dumps(["pending", files] if carried else files).encode()).hexdigest()[:16]
    attempts = 1
    if fp == state.fingerprint:
        last = _runs(instance, {"dagster/run_key": state.run_key}) if instance and state.run_key else []
        failed = bool(last) and last[0].status in (dg.DagsterRunStatus.FAILURE,
                                                   dg.DagsterRunStatus.CANCELED)
        if not failed:
            return LandingEvaluation(files, held, None, state,
                                     f"batch of {len(files)} files already requested", carried)
        if state.attempts >= MAX_ATTEMPTS:
            return LandingEvaluation(files, held, None, state,
                                     f"batch of {len(files)} files failed {state.attempts} times; "
                                     "waiting for the files to change (or `replicator trigger`)",
                                     carried)
        attempts = state.attempts + 1
    seq = state.seq + 1
    batch = f"b{seq:05d}-{fp[:10]}"
    run_key = f"landing|{name}|{seq}|{fp}"
    request = dg.RunRequest(
        run_key=run_key,
        job_name=view.job_name,
        tags={TAG_BATCH: batch, TAG_LANDING: name, "replication/trigger": "landing_sensor"},
    )
    return LandingEvaluation(files, held, request, LandingState(fp, seq, attempts, run_key),
                             carried=carried)


def build_landing_sensor(view: LandingView, job,
                         status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING) -> dg.SensorDefinition:
    name = view.name

    @dg.sensor(
        name=view.sensor_name,
        job=job,
        minimum_interval_seconds=view.interval_s,
        default_status=status,
        description=(f"Starts a landing run of {name!r} when new or changed files (older than "
                     f"{view.min_age_s:g}s) are in its watched directory."),
    )
    def _sensor(context: dg.SensorEvaluationContext, replicator: ReplicatorResource,
                notifier: NotifierResource) -> dg.SensorResult | dg.SkipReason:
        state = LandingState.decode(context.cursor)
        # the ingest's own copy options: the plan decides exactly as the copy will
        ev = evaluate_landing(view, state, view.ingest_options(replicator), context.instance)
        if ev.run_request is None:
            return dg.SkipReason(ev.skip_reason or "nothing to do")
        batch = ev.run_request.tags[TAG_BATCH]
        what = "files left pending by an earlier batch" if ev.carried else "new/changed files"
        context.log.info(f"{len(ev.files)} {what} -> batch {batch}")
        # the first step's message: the files were seen (a tick evaluated again from the same
        # cursor may send it twice; consumers drop repeats of a batch's "detected")
        notify_step(context, notifier, view, "detected", dataset=name, batch=batch,
                    files=[f[0] for f in ev.files[:50]], files_total=len(ev.files),
                    bytes=sum(f[1] for f in ev.files),
                    attempt=ev.state.attempts, carried=ev.carried or None)
        return dg.SensorResult(run_requests=[ev.run_request], cursor=ev.state.encode())

    return _sensor
