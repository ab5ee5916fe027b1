"""The audit-file sensor: the legacy producer flow, made lossless.

An on-prem job drops ``<prefix><timestamp>`` files into a directory or bucket prefix, one
``SOURCE_DIR DEST_DIR`` pair per line. Each tick:

1. new audit files are read and every line is validated against the spec: the source must be
   a partition directory (or the root, if unpartitioned) of a configured dataset, the
   destination the same partition under one of that dataset's targets. A line with ``..``,
   an unknown root or a malformed pair is refused and reported (log + notifier); the other
   lines proceed;
2. one copy run per (dataset, partition) is requested for the named targets, unless a run
   for the same source fingerprint already exists (the change sensor may have been first);
3. files whose runs have all succeeded are moved to the archive (with a ``.rejected.json``
   beside them when lines were refused). A file whose run failed stays where it is, reported
   once; it is archived as soon as a later run of that partition succeeds (a run retry or a
   re-execution from the UI).
"""


import json
import os
import posixpath
from dataclasses import asdict, dataclass, field
from typing import Any

import dagster as dg

from platform_assets.config import UNPARTITIONED_KEY
from platform_assets.datasets import ResolvedSpec
from platform_assets.replication.names import (
    AUDIT_SENSOR,
    TAG_AUDIT_FILE,
    TAG_DATASET,
    TAG_FINGERPRINT,
    TAG_PARTITION,
    replica_key,
)
from platform_assets.replication.requests import copy_run_request, missing_dynamic_partitions
from replicator.filesystems.base import FILE
from replicator.filesystems.registry import resolve, split_scheme
from replicator.fingerprint import EMPTY_FINGERPRINT
from resources.notify import NotifierResource

CURSOR_VERSION = 1
IN_FLIGHT = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.MANAGED,
}


@dataclass(frozen=True)
class AuditLine:
    line_no: int
    dataset: str
    partition: str
    target: str  # target cluster


@dataclass(frozen=True)
class Rejection:
    line_no: int
    line: str
    reason: str


def _canonical(location: str) -> str | None:
    """Absolute local path or ``scheme://...`` without a trailing slash; None if relative."""
    scheme, rest = split_scheme(location)
    if scheme == "file":
        path = rest if location.startswith("file://") else location
        if not path.startswith("/"):
            return None
        return posixpath.normpath(path)
    return f"{scheme}://{rest.rstrip('/')}"


def _has_dotdot(location: str) -> bool:
    return ".." in split_scheme(location)[1].split("/")


def _below(root: str, location: str) -> str | None:
    """``location`` relative to ``root`` ("" when equal), or None if it is not under it."""
    if location == root:
        return ""
    prefix = root if root.endswith("/") else root + "/"
    return location[len(prefix) :] if location.startswith(prefix) else None


def parse_audit_text(rs: ResolvedSpec, text: str) -> tuple[list[AuditLine], list[Rejection]]:
    """Validate every line of an audit file; blank lines and ``#`` comments are ignored."""
    accepted: list[AuditLine] = []
    rejected: list[Rejection] = []
    # longest source root first, so a dataset nested under another's root wins
    sources = sorted(
        ((v.name, _canonical(v.source_root) or "") for v in rs),
        key=lambda item: -len(item[1]),
    )
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue

        def refuse(reason: str, n: int = n, line: str = line) -> None:
            rejected.append(Rejection(n, line[:500], reason))

        fields = line.split()
        if len(fields) != 2:
            refuse(f"malformed pair: expected 'SOURCE_DIR DEST_DIR', got {len(fields)} field(s)")
            continue
        src_raw, dst_raw = fields
        if _has_dotdot(src_raw) or _has_dotdot(dst_raw):
            refuse("'..' is not allowed in audit paths")
            continue
        src, dst = _canonical(src_raw), _canonical(dst_raw)
        if src is None or dst is None:
            refuse("malformed pair: expected absolute paths or URIs")
            continue
        match = None
        for d, root in sources:
            rel = _below(root, src)
            if rel is not None:
                match = (d, rel)
                break
        if match is None:
            refuse(f"unknown source root: {src_raw} is not under any dataset's source")
            continue
        d, rel = match
        view = rs[d]
        ds = view.config
        if ds.partitioned:
            if not ds.matches_partition(rel):
                refuse(
                    f"source {src_raw} is not a partition directory of dataset {d!r} "
                    f"(layout {ds.partitions!r})"
                )
                continue
            partition = rel
        else:
            if rel:
                refuse(f"dataset {d!r} is unpartitioned: expected its root, got {src_raw}")
                continue
            partition = UNPARTITIONED_KEY
        target = None
        for t in view.targets:
            t_root = _canonical(t.root)
            if t_root is not None and _below(t_root, dst) is not None:
                target = t
                break
        if target is None:
            refuse(f"unknown destination root: {dst_raw} is not under a target of dataset {d!r}")
            continue
        expected = _canonical(target.uri(partition))
        if dst != expected:
            refuse(f"destination {dst_raw} does not match the source partition (expected {expected})")
            continue
        accepted.append(AuditLine(n, d, partition, target.cluster))
    return accepted, rejected


@dataclass
class PendingGroup:
    dataset: str
    partition: str
    targets: list[str]
    fingerprint: str
    lines: list[int]
    run_key: str | None = None


@dataclass
class PendingFile:
    path: str  # native path of the audit file
    groups: list[PendingGroup] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    failure_reported: bool = False


@dataclass
class AuditState:
    pending: dict[str, PendingFile] = field(default_factory=dict)  # file name -> state

    def encode(self) -> str:
        return json.dumps(
            {"v": CURSOR_VERSION, "pending": {k: asdict(v) for k, v in self.pending.items()}},
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def decode(cls, cursor: str | None) -> "AuditState":
        if not cursor:
            return cls()
        data = json.loads(cursor)
        if data.get("v") != CURSOR_VERSION:
            raise ValueError(f"audit sensor: unknown cursor version {data.get('v')!r}")
        pending = {}
        for name, f in data.get("pending", {}).items():
            groups = [PendingGroup(**g) for g in f.get("groups", [])]
            pending[name] = PendingFile(
                path=f["path"],
                groups=groups,
                rejected=f.get("rejected", []),
                failure_reported=f.get("failure_reported", False),
            )
        return cls(pending)


def _runs_for(instance: dg.DagsterInstance, g: PendingGroup) -> list[dg.DagsterRun]:
    return list(
        instance.get_runs(
            filters=dg.RunsFilter(
                tags={
                    TAG_DATASET: g.dataset,
                    TAG_PARTITION: g.partition,
                    TAG_FINGERPRINT: g.fingerprint,
                }
            ),
            limit=50,
        )
    )


def _covers(run: dg.DagsterRun, g: PendingGroup) -> bool:
    if not run.asset_selection:  # a whole-job run (or one whose selection was not recorded)
        return True
    return {replica_key(g.dataset, t) for t in g.targets} <= set(run.asset_selection)


def group_status(instance: dg.DagsterInstance, g: PendingGroup) -> str:
    """``success`` / ``in_flight`` / ``failed`` / ``none`` from the runs tagged for this group."""
    runs = [r for r in _runs_for(instance, g) if _covers(r, g)]
    if any(r.status == dg.DagsterRunStatus.SUCCESS for r in runs):
        return "success"
    if any(r.status in IN_FLIGHT for r in runs):
        return "in_flight"
    if runs:
        return "failed"
    return "none"


def _archive(path: str, archive_dir: str, rejected: list[dict[str, Any]]) -> str:
    fs, native = resolve(path)
    afs, adir = resolve(archive_dir)
    afs.makedirs(adir)
    name = posixpath.basename(native)
    dest = afs.join(adir, name)
    if rejected:
        with afs.open_write(afs.join(adir, name + ".rejected.json")) as w:
            w.write(json.dumps(rejected, indent=2).encode())
    fs.rename(native, dest)
    return dest


def list_audit_files(rs: ResolvedSpec) -> list[tuple[str, str]]:
    """(name, native path) of audit files waiting in the audit directory, oldest name first."""
    audit = rs.platform.audit
    assert audit is not None
    fs, root = resolve(rs.spec.resolve_location(audit.dir))
    try:
        entries = fs.list_dir(root)
    except FileNotFoundError:
        return []
    return sorted(
        (e.name, e.path)
        for e in entries
        if e.kind == FILE and e.name.startswith(audit.prefix) and not e.name.endswith(".rejected.json")
    )


def _read(path: str) -> str:
    fs, native = resolve(path)
    with fs.open_read(native) as f:
        return f.read().decode("utf-8", errors="replace")


@dataclass
class AuditEvaluation:
    run_requests: list[dg.RunRequest]
    dynamic_partitions_requests: list[dg.AddDynamicPartitionsRequest]
    state: AuditState
    archived: list[str]
    rejected: dict[str, list[Rejection]]
    failed: list[str]
    notifications: list[dict[str, Any]]


def evaluate_audit(
    rs: ResolvedSpec, state: AuditState, instance: dg.DagsterInstance
) -> AuditEvaluation:
    audit = rs.platform.audit
    assert audit is not None
    archive_dir = rs.spec.resolve_location(audit.archive_dir or os.path.join(audit.dir, "archive"))
    pending = dict(state.pending)
    run_requests: list[dg.RunRequest] = []
    rejected_by_file: dict[str, list[Rejection]] = {}
    notifications: list[dict[str, Any]] = []
    new_parts: dict[str, set[str]] = {}
    just_requested: set[str] = set()

    for name, path in list_audit_files(rs):
        if name in pending:
            continue
        accepted, rejected = parse_audit_text(rs, _read(path))
        # lines naming a partition whose source has nothing to copy are refused too
        groups: dict[tuple[str, str], PendingGroup] = {}
        for line in accepted:
            key = (line.dataset, line.partition)
            if key not in groups:
                fp = rs[line.dataset].fingerprint(line.partition)
                if fp.fingerprint == EMPTY_FINGERPRINT:
                    rejected.append(
                        Rejection(line.line_no, f"{line.dataset}:{line.partition}",
                                  "source directory is missing or has no file to copy")
                    )
                    continue
                groups[key] = PendingGroup(line.dataset, line.partition, [], fp.fingerprint, [])
            g = groups[key]
            if line.target not in g.targets:
                g.targets.append(line.target)
            g.lines.append(line.line_no)
        rejected.sort(key=lambda r: r.line_no)
        pf = PendingFile(path=path, rejected=[asdict(r) for r in rejected])
        for (d, p), g in sorted(groups.items()):
            status = group_status(instance, g)
            if status in ("none", "failed"):
                g.run_key = f"audit|{name}|{d}|{p}|{g.fingerprint}"
                run_requests.append(
                    copy_run_request(
                        rs[d], p, g.fingerprint, run_key=g.run_key, trigger="audit",
                        targets=g.targets, extra_tags={TAG_AUDIT_FILE: name[:200]},
                    )
                )
                new_parts.setdefault(d, set()).add(p)
                just_requested.add(name)
            pf.groups.append(g)
        pending[name] = pf
        if rejected:
            rejected_by_file[name] = rejected
            notifications.append(
                {
                    "event": "audit_lines_rejected",
                    "audit_file": name,
                    "rejected": [asdict(r) for r in rejected[:50]],
                    "accepted_lines": sum(len(g.lines) for g in groups.values()),
                }
            )

    archived: list[str] = []
    failed: list[str] = []
    for name in sorted(pending):
        pf = pending[name]
        if name in just_requested:
            continue
        statuses = [group_status(instance, g) for g in pf.groups]
        if all(s == "success" for s in statuses):
            try:
                _archive(pf.path, archive_dir, pf.rejected)
            except FileNotFoundError:
                pass  # someone removed it; nothing left to archive
            archived.append(name)
            del pending[name]
            notifications.append({"event": "audit_file_archived", "audit_file": name})
        elif any(s == "failed" for s in statuses) and not any(s == "in_flight" for s in statuses):
            failed.append(name)
            if not pf.failure_reported:
                pf.failure_reported = True
                bad = [
                    f"{g.dataset}:{g.partition}"
                    for g, s in zip(pf.groups, statuses, strict=True)
                    if s == "failed"
                ]
                notifications.append(
                    {"event": "audit_file_kept", "audit_file": name, "failed": bad,
                     "reason": "copy runs failed; the file stays until they succeed"}
                )

    dyn = missing_dynamic_partitions(rs, instance, {d: sorted(p) for d, p in new_parts.items()})
    return AuditEvaluation(run_requests, dyn, AuditState(pending), archived, rejected_by_file, failed, notifications)


def build_audit_sensor(rs: ResolvedSpec, jobs: list) -> dg.SensorDefinition:
    audit = rs.platform.audit
    assert audit is not None

    @dg.sensor(
        name=AUDIT_SENSOR,
        minimum_interval_seconds=audit.interval_s,
        jobs=jobs,
        default_status=rs.sensor_status,
        description=(
            f"Reads {audit.prefix}* audit files, validates each SOURCE_DIR DEST_DIR line, requests "
            "the copies and archives a file once all its copies succeeded."
        ),
    )
    def replication_audit_file_sensor(
        context: dg.SensorEvaluationContext, notifier: NotifierResource
    ) -> dg.SensorResult:
        ev = evaluate_audit(rs, AuditState.decode(context.cursor), context.instance)
        for name, rejections in ev.rejected.items():
            for r in rejections:
                context.log.warning(f"{name} line {r.line_no} refused: {r.reason}: {r.line!r}")
        for name in ev.archived:
            context.log.info(f"{name}: all copies succeeded, archived")
        for name in ev.failed:
            context.log.warning(f"{name}: copies failed; kept until they succeed")
        for event in ev.notifications:
            try:
                notifier.notify(event)
            except Exception as exc:  # a notifier outage must not block copies
                context.log.warning(f"notification {event['event']} not delivered: {exc}")
        return dg.SensorResult(
            run_requests=ev.run_requests,
            dynamic_partitions_requests=ev.dynamic_partitions_requests,
            cursor=ev.state.encode(),
        )

    return replication_audit_file_sensor
