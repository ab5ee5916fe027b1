"""A landing batch's places and records: where a landing dataset's files live, the batch id
of a run, the batch record (``<output>/_landing/batches/<batch>.json``), the files carried over
to the next batch, and step notifications."""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass
from typing import Any

import dagster as dg

from platform_assets.config import LandingDataset, ReplicationSpec
from platform_assets.landing.names import TAG_BATCH
from platform_assets.landing.validation import Rules
from replicator.progress import Progress
from replicator.secrets import redact
from resources.notify import NotifierResource

_BATCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class LandingError(ValueError):
    """A landing batch that cannot be processed (the message says what and where)."""



@dataclass(frozen=True)
class LandingPaths:
    """Where one landing dataset's files live (raw and output are local paths here)."""

    source: str
    raw: str
    output: str

    @property
    def meta(self) -> str:
        return os.path.join(self.output, "_landing")

    @property
    def history(self) -> str:
        return os.path.join(self.meta, "history.jsonl")

    @property
    def pending(self) -> str:
        return os.path.join(self.meta, "pending.json")

    def batch_record(self, batch: str) -> str:
        return os.path.join(self.meta, "batches", f"{batch}.json")

    def report_dir(self, batch: str) -> str:
        return os.path.join(self.meta, "reports", batch)


def _local(uri: str, where: str) -> str:
    if "://" in uri and not uri.startswith("file://"):
        raise LandingError(
            f"{where}: expected a local path (the landing pipeline reads the raw area and writes "
            f"Parquet locally in this version), got {redact(uri)}"
        )
    return os.path.abspath(uri.removeprefix("file://"))


def landing_paths(spec: ReplicationSpec, name: str) -> LandingPaths:
    ld = spec.landing[name]
    return LandingPaths(
        source=spec.endpoint_uri(ld.source),
        raw=_local(spec.endpoint_uri(ld.raw), f"landing.{name}.raw"),
        output=_local(spec.endpoint_uri(ld.output), f"landing.{name}.output"),
    )


def rules_for(ld: LandingDataset) -> Rules:
    return Rules(columns=dict(ld.columns), min_rows=ld.rows.min, max_rows=ld.rows.max,
                 not_null=ld.not_null, unique=ld.unique, format=ld.format)


def batch_id(context: dg.AssetExecutionContext) -> str:
    tags = context.run.tags
    batch = tags.get(TAG_BATCH) or tags.get("dagster/root_run_id") or context.run.run_id
    if not _BATCH_RE.match(batch):
        raise LandingError(
            f"run tag {TAG_BATCH}: expected letters, digits, '.', '_' or '-' (at most 100), "
            f"got {batch[:120]!r}"
        )
    return batch


def load_record(paths: LandingPaths, batch: str) -> dict[str, Any] | None:
    try:
        with open(paths.batch_record(batch), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def save_record(paths: LandingPaths, record: dict[str, Any]) -> None:
    path = paths.batch_record(record["batch"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def load_pending(paths: LandingPaths) -> list[str]:
    """Files ingested but not converted yet, and not rejected: the valid files of a rejected
    batch, or the files a partly failed copy did copy. The next batch takes them along, so one
    bad or failed file does not strand the good ones of its batch."""
    try:
        with open(paths.pending, encoding="utf-8") as f:
            return [str(x) for x in json.load(f)]
    except FileNotFoundError:
        return []


def save_pending(paths: LandingPaths, files: list[str]) -> None:
    os.makedirs(paths.meta, exist_ok=True)
    tmp = f"{paths.pending}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(sorted(set(files)), f)
    os.replace(tmp, paths.pending)


def require_record(paths: LandingPaths, batch: str) -> dict[str, Any]:
    record = load_record(paths, batch)
    if record is None:
        raise dg.Failure(description=f"batch {batch}: no batch record; run the ingest step first")
    return record


def notify_step(context: Any, notifier: NotifierResource, ld: LandingDataset, step: str,
                **fields: Any) -> None:
    """Send one step notification; a notifier failure is logged, never fails the data step."""
    if step not in ld.notify:
        return
    event = {"event": step, "pipeline": "landing", **{k: v for k, v in fields.items() if v is not None}}
    try:
        notifier.notify(event)
    except Exception as exc:
        context.log.warning(f"notification {step} not delivered: {redact(str(exc))[:300]}")


class CopiedFiles(Progress):
    def __init__(self) -> None:
        self.ok: list[str] = []
        self.failed: list[str] = []

    def on_file(self, path: str, ok: bool) -> None:
        (self.ok if ok else self.failed).append(path)
