"""A landing batch's places and records: the stores of a landing dataset's raw area and output
(built from its :class:`~platform_assets.landing.view.LandingView`), the batch id
of a run, the batch record (``<output>/_landing/batches/<batch>.json``), the files carried over
to the next batch, and step notifications."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import dagster as dg

from platform_assets.landing.names import TAG_BATCH
from platform_assets.landing.report import append_history
from platform_assets.landing.store import Store, StoreError
from replicator.errors import ReplicatorError
from replicator.progress import Progress
from replicator.secrets import redact
from replicator.state import open_store
from resources.notify import NotifierResource

if TYPE_CHECKING:
    from platform_assets.landing.view import LandingView

META = "_landing"
PENDING_LOCK_WAIT_S = 120.0  # the pending/claims updates of other runs are short (a few reads)
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
    claims = f"{META}/claims.json"

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


@contextlib.contextmanager
def pending_lock(paths: LandingPaths, state_path: str) -> Iterator[None]:
    """Hold the dataset's metadata lock (in the engine's state store: a lock file beside
    SQLite, an advisory lock on PostgreSQL) while reading and rewriting ``pending.json``,
    ``claims.json`` or (on a remote store) ``history.jsonl``, so that two landing runs of one
    dataset (a trigger run and a sensor run) never interleave their read-modify-writes."""
    try:
        store = open_store(state_path)
    except ReplicatorError as exc:
        raise LandingError(f"landing {paths.name}: state store: {redact(str(exc))}") from None
    try:
        try:
            store.lock_pair_waiting("landing-pending", paths.out_store.uri(), PENDING_LOCK_WAIT_S)
        except ReplicatorError as exc:
            raise LandingError(f"landing {paths.name}: pending files: {redact(str(exc))}") from None
        yield
    finally:
        store.close()


def load_claims(paths: LandingPaths) -> dict[str, str]:
    """Which run took each pending file into its batch (file -> Dagster run id)."""
    data = paths.out_store.read_bytes(paths.claims)
    return {} if data is None else {str(k): str(v) for k, v in json.loads(data).items()}


def save_claims(paths: LandingPaths, claims: dict[str, str]) -> None:
    paths.out_store.write_bytes(paths.claims, json.dumps(claims, sort_keys=True).encode("utf-8"))


def take_files(paths: LandingPaths, state_path: str, run_id: str, copied: Iterable[str],
               is_live: Callable[[str], bool]) -> list[str]:
    """The pending files this run takes along into its batch, besides ``copied`` (the files its
    own copy just wrote, which are its own): each pending file belongs to one batch. Under
    :func:`pending_lock`, a pending file is taken when no run claims it or its claimer is over
    (``is_live(run_id)`` false: finished, failed, gone); the claims of ``copied`` and the taken
    files are then this run's, so a concurrent run leaves them alone. A claim lasts while its
    run is in flight: a rejected or crashed batch's files go to a later one."""
    copied = set(copied)
    with pending_lock(paths, state_path):
        claims = load_claims(paths)
        live: dict[str, bool] = {}

        def held(owner: str) -> bool:
            if owner == run_id:
                return False
            if owner not in live:
                live[owner] = is_live(owner)
            return live[owner]

        claims = {f: owner for f, owner in claims.items() if held(owner)}
        taken = [f for f in load_pending(paths)
                 if f not in copied and f not in claims and paths.raw_store.is_file(f)]
        for f in [*copied, *taken]:
            claims[f] = run_id
        save_claims(paths, claims)
    return sorted(set(taken))


def update_pending(paths: LandingPaths, state_path: str, *, remove: Iterable[str] = (),
                   add: Iterable[str] = (), release: Iterable[str] = (),
                   owners: Iterable[str] = ()) -> None:
    """Under :func:`pending_lock`: drop ``remove`` from the pending files, add ``add``, and
    drop the claims on ``release`` held by one of ``owners`` (the batch's runs)."""
    remove, release, owners = set(remove), set(release), set(owners)
    with pending_lock(paths, state_path):
        save_pending(paths, [*(f for f in load_pending(paths) if f not in remove), *add])
        if release:
            claims = load_claims(paths)
            kept = {f: o for f, o in claims.items() if not (f in release and o in owners)}
            if kept != claims:
                save_claims(paths, kept)


def record_history(paths: LandingPaths, state_path: str, entry: dict[str, Any]) -> None:
    """Append one batch's entry to ``history.jsonl`` under :func:`pending_lock`. On a remote
    store an append is a rewrite of the whole file (read it, add the line, write it back), so
    two runs appending at once would each write back the file they read and one entry would
    be lost; a local append is one ``O_APPEND`` write, but takes the lock all the same."""
    with pending_lock(paths, state_path):
        append_history(paths.out_store, paths.history, entry)


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
