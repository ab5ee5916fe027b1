"""A landing batch's places and records: the stores of a landing dataset's raw area and output
(built from its :class:`~platform_assets.landing.view.LandingView`), the batch id
of a run, the batch record (``<output>/_landing/batches/<batch>.json``), the files carried over
to the next batch, and step notifications."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import dagster as dg

from platform_assets.landing.names import TAG_BATCH
from platform_assets.landing.store import Store, StoreError
from replicator.progress import Progress
from replicator.secrets import redact
from resources.notify import NotifierResource

if TYPE_CHECKING:
    from platform_assets.landing.view import LandingView

META = "_landing"
_BATCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class LandingError(ValueError):
    """A landing batch that cannot be processed (the message says what and where)."""



@dataclass(frozen=True)
class LandingPaths:
    """Where one landing dataset's files live. ``raw`` and ``output`` are URIs (``hdfs://``,
    ``webhdfs://``, ...) or absolute local paths; their :class:`Store` reads and writes them.
    The metadata paths (``history``, ``pending``, batch records, report directories) are
    relative to the output."""

    source: str
    raw: str
    output: str
    name: str = ""

    history = f"{META}/history.jsonl"
    pending = f"{META}/pending.json"

    @cached_property
    def raw_store(self) -> Store:
        return _store(self.raw, f"landing.{self.name}.raw")

    @cached_property
    def out_store(self) -> Store:
        return _store(self.output, f"landing.{self.name}.output")

    @staticmethod
    def batch_record(batch: str) -> str:
        return f"{META}/batches/{batch}.json"

    @staticmethod
    def report_dir(batch: str) -> str:
        return f"{META}/reports/{batch}"

    def close(self) -> None:
        for name in ("raw_store", "out_store"):
            store = self.__dict__.get(name)
            if store is not None:
                store.close()


def _store(uri: str, where: str) -> Store:
    try:
        return Store(uri, where)
    except StoreError as exc:
        raise LandingError(str(exc)) from None


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
    data = paths.out_store.read_bytes(paths.batch_record(batch))
    return None if data is None else json.loads(data)


def save_record(paths: LandingPaths, record: dict[str, Any]) -> None:
    paths.out_store.write_bytes(paths.batch_record(record["batch"]),
                                json.dumps(record, indent=1, sort_keys=True).encode("utf-8"))


def load_pending(paths: LandingPaths) -> list[str]:
    """Files ingested but not converted yet, and not rejected: the valid files of a rejected
    batch, or the files a partly failed copy did copy. The next batch takes them along, so one
    bad or failed file does not strand the good ones of its batch."""
    data = paths.out_store.read_bytes(paths.pending)
    return [] if data is None else [str(x) for x in json.loads(data)]


def save_pending(paths: LandingPaths, files: list[str]) -> None:
    paths.out_store.write_bytes(paths.pending, json.dumps(sorted(set(files))).encode("utf-8"))


def require_record(paths: LandingPaths, batch: str) -> dict[str, Any]:
    record = load_record(paths, batch)
    if record is None:
        raise dg.Failure(description=f"batch {batch}: no batch record; run the ingest step first")
    return record


def notify_step(context: Any, notifier: NotifierResource, view: LandingView, step: str,
                **fields: Any) -> None:
    """Send one step notification (if ``step`` is one the dataset notifies); a notifier
    failure is logged, never fails the data step."""
    if not view.notifies(step):
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
