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
3. files whose runs have all succeeded are deleted (the legacy flow's behaviour, the default)
   or, with ``platform.audit.archive_dir``, moved to the archive. Refused lines are kept in
   ``<name>.rejected.json`` (beside the file in the archive, or in the audit directory when
   the file is deleted), so deleting loses nothing. A file whose run failed stays where it
   is, reported once; it is finished as soon as a later run of that partition succeeds (a
   run retry or a re-execution from the UI).

The audit directory and the archive may be on any back end the engine reaches (a local
folder, ``gs://bucket/prefix``, ``s3://bucket/prefix``, ``sftp://...``, ``hdfs://...``):
everything goes through the engine's file systems (:class:`AuditStore`). Archiving is a
rename where the store has one and the archive is on the same file system, else a copy,
checked by size, then a delete of the original (object stores).
"""


import json
import posixpath
from dataclasses import asdict, dataclass, field
from typing import Any

import dagster as dg

from platform_assets.config import UNPARTITIONED_KEY, file_uri_path
from platform_assets.datasets import ResolvedSpec, join_partition
from platform_assets.replication.names import (
    AUDIT_SENSOR,
    TAG_AUDIT_FILE,
    TAG_DATASET,
    TAG_FINGERPRINT,
    TAG_PARTITION,
    replica_key,
)
from platform_assets.replication.requests import copy_run_request, missing_dynamic_partitions
from replicator.errors import ReplicatorError
from replicator.filesystems.base import FILE, FileSystem
from replicator.filesystems.registry import resolve, split_scheme
from replicator.fingerprint import EMPTY_FINGERPRINT
from replicator.secrets import redact
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
        if location.startswith("file://"):  # decoded as the engine and the spec decode it
            try:
                path = file_uri_path(location)
            except ValueError:
                return None
        else:
            path = location
        if not path.startswith("/"):
            return None
        return posixpath.normpath(path)
    return f"{scheme}://{rest.rstrip('/')}"


_ENCODED_DOT_OR_SLASH = ("%2e", "%2f", "%5c")


def _has_dotdot(location: str) -> bool:
    """``..`` in the path, also percent-encoded (an object store's URI decoding would make
    ``%2e%2e`` a parent reference, and ``%2f`` a separator the prefix check never saw)."""
    rest = split_scheme(location)[1]
    return ".." in rest.split("/") or any(e in rest.lower() for e in _ENCODED_DOT_OR_SLASH)


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
            # the line and the reason (which quotes its paths) go to the log, the notifier and
            # <file>.rejected.json: credentials in a URI are masked first
            rejected.append(Rejection(n, redact(line)[:500], redact(reason)))

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


class AuditStore:
    """The audit directory and, optionally, the archive, on whatever back end their URIs name."""

    def __init__(self, dir_uri: str, prefix: str, archive_uri: str | None = None) -> None:
        self.dir_uri = dir_uri
        self.prefix = prefix
        self.archive_uri = archive_uri
        self.fs, self.root = resolve(dir_uri)
        self._archive: tuple[FileSystem, str] | None = None

    @classmethod
    def from_spec(cls, rs: ResolvedSpec) -> "AuditStore":
        audit = rs.platform.audit
        assert audit is not None
        archive = rs.spec.resolve_location(audit.archive_dir) if audit.archive_dir else None
        return cls(rs.spec.resolve_location(audit.dir), audit.prefix, archive)

    def uri(self, name: str) -> str:
        """The audit file's URI, for messages (credentials redacted)."""
        return redact(join_partition(self.dir_uri, name))

    def path(self, name: str) -> str:
        return self.fs.join(self.root, name)

    def names(self) -> list[str]:
        """Names of the audit files waiting, oldest name first (files still being written,
        e.g. under an HDFS lease, wait for a later tick)."""
        try:
            entries = self.fs.list_dir(self.root)
        except FileNotFoundError:
            return []
        return sorted(
            e.name for e in entries
            if e.kind == FILE and e.name.startswith(self.prefix)
            and not e.name.endswith(".rejected.json") and not self.fs.being_written(e.path)
        )

    def read(self, name: str) -> str:
        with self.fs.open_read(self.path(name)) as f:
            return f.read().decode("utf-8", errors="replace")

    def _write(self, fs: FileSystem, path: str, data: bytes) -> None:
        with fs.open_write(path) as w:
            w.write(data)

    def finish(self, name: str, rejected: list[dict[str, Any]]) -> str:
        """Delete the audit file (default) or archive it; returns what was done, in words.
        Refused lines are written to ``<name>.rejected.json`` first, so nothing is lost."""
        report = json.dumps(rejected, indent=2).encode() if rejected else None
        src = self.path(name)
        if self.archive_uri is None:
            if report is not None:
                self._write(self.fs, self.path(name + ".rejected.json"), report)
            self.fs.delete_file(src)
            return "deleted"
        if self._archive is None:
            self._archive = resolve(self.archive_uri)
        afs, adir = self._archive
        afs.makedirs(adir)
        dest = afs.join(adir, name)
        if report is not None:
            self._write(afs, afs.join(adir, name + ".rejected.json"), report)
        done = f"archived to {redact(join_partition(self.archive_uri, name))}"
        same_fs = type(afs) is type(self.fs) and afs.options() == self.fs.options()
        if same_fs and self.fs.capabilities.atomic_rename:
            try:
                self.fs.rename(src, dest)
                return done
            except FileNotFoundError:
                raise
            except OSError:  # e.g. another device under one local tree: copy instead
                pass
        # object stores (no rename) or another file system: copy, check the size, delete
        info = self.fs.stat(src)
        if info is None:
            raise FileNotFoundError(src)
        with self.fs.open_read(src) as f:
            data = f.read()
        self._write(afs, dest, data)
        copied = afs.stat(dest)
        if copied is None or copied.size != len(data) or len(data) != info.size:
            raise OSError(f"archived copy of {self.uri(name)} is incomplete; original kept")
        self.fs.delete_file(src)
        return done


@dataclass
class AuditEvaluation:
    run_requests: list[dg.RunRequest]
    dynamic_partitions_requests: list[dg.AddDynamicPartitionsRequest]
    state: AuditState
    archived: list[str]  # files finished (deleted or archived), see ``done``
    rejected: dict[str, list[Rejection]]
    failed: list[str]
    notifications: list[dict[str, Any]]
    done: dict[str, str] = field(default_factory=dict)  # file -> "deleted" / "archived to ..."
    uris: dict[str, str] = field(default_factory=dict)  # file -> its URI (redacted)
    errors: list[str] = field(default_factory=list)  # files that could not be read or finished


def evaluate_audit(
    rs: ResolvedSpec, state: AuditState, instance: dg.DagsterInstance
) -> AuditEvaluation:
    store = AuditStore.from_spec(rs)
    pending = dict(state.pending)
    # one request per (dataset, partition, fingerprint) this tick, whichever files name it
    # (the targets of all of them): two files naming one partition are one copy, not two
    requested: dict[tuple[str, str, str], tuple[str, list[str], str]] = {}
    rejected_by_file: dict[str, list[Rejection]] = {}
    notifications: list[dict[str, Any]] = []
    new_parts: dict[str, set[str]] = {}
    just_requested: set[str] = set()
    uris: dict[str, str] = {}
    errors: list[str] = []

    for name in store.names():
        uris[name] = store.uri(name)
        if name in pending:
            continue
        try:
            text = store.read(name)
        except FileNotFoundError:
            continue  # removed since it was listed
        except (OSError, ReplicatorError) as exc:  # read again next tick; the others go on
            errors.append(f"{uris[name]}: cannot read: {redact(str(exc))}")
            continue
        accepted, rejected = parse_audit_text(rs, text)
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
        pf = PendingFile(path=uris[name], rejected=[asdict(r) for r in rejected])
        for (d, p), g in sorted(groups.items()):
            status = group_status(instance, g)
            if status in ("none", "failed"):
                run_key, targets, first = requested.get(
                    (d, p, g.fingerprint), (f"audit|{name}|{d}|{p}|{g.fingerprint}", [], name))
                targets.extend(t for t in g.targets if t not in targets)
                requested[(d, p, g.fingerprint)] = (run_key, targets, first)
                g.run_key = run_key
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
                    "audit_uri": uris[name],
                    "rejected": [asdict(r) for r in rejected[:50]],
                    "accepted_lines": sum(len(g.lines) for g in groups.values()),
                }
            )

    run_requests = [
        copy_run_request(rs[d], p, fp, run_key=run_key, trigger="audit", targets=targets,
                         extra_tags={TAG_AUDIT_FILE: first[:200]})
        for (d, p, fp), (run_key, targets, first) in requested.items()
    ]
    archived: list[str] = []
    done: dict[str, str] = {}
    failed: list[str] = []
    for name in sorted(pending):
        pf = pending[name]
        if name in just_requested:
            continue
        statuses = [group_status(instance, g) for g in pf.groups]
        if all(s == "success" for s in statuses):
            try:
                done[name] = store.finish(name, pf.rejected)
            except FileNotFoundError:
                done[name] = "already gone"  # someone removed it; nothing left to do
            except (OSError, ReplicatorError) as exc:  # kept pending: finished on a later tick
                errors.append(f"{pf.path}: copies done but not {'archived' if store.archive_uri else 'deleted'}: "
                              f"{redact(str(exc))}")
                continue
            archived.append(name)
            del pending[name]
            event = "audit_file_deleted" if done[name] == "deleted" else "audit_file_archived"
            notifications.append({"event": event, "audit_file": name, "audit_uri": pf.path,
                                  "done": done[name]})
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
    return AuditEvaluation(run_requests, dyn, AuditState(pending), archived, rejected_by_file,
                           failed, notifications, done, uris, errors)


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
            "the copies and deletes (or archives) a file once all its copies succeeded."
        ),
    )
    def replication_audit_file_sensor(
        context: dg.SensorEvaluationContext, notifier: NotifierResource
    ) -> dg.SensorResult | dg.SkipReason:
        state = AuditState.decode(context.cursor)
        try:
            ev = evaluate_audit(rs, state, context.instance)
        except (OSError, ReplicatorError) as exc:  # the audit directory's store is unreachable
            audit = rs.platform.audit
            assert audit is not None
            return dg.SkipReason(f"audit directory {redact(audit.dir)} not readable this tick: "
                                 f"{redact(str(exc))}")
        for msg in ev.errors:
            context.log.warning(msg)
        for name, rejections in ev.rejected.items():
            for r in rejections:
                context.log.warning(
                    f"{ev.uris.get(name, name)} line {r.line_no} refused: {r.reason}: {r.line!r}")
        for name in ev.archived:
            context.log.info(f"{name}: all copies succeeded, audit file {ev.done.get(name, 'finished')}")
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
