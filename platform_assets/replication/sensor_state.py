"""Where the change sensor keeps what it knows per partition: the engine's state store
(``platform.state``: SQLite or PostgreSQL), not the cursor.

Dagster writes a sensor's cursor into every tick row, so a cursor holding 100,000 fingerprints
(megabytes) would be written every tick and kept for ever. The cursor is a small position
instead: the lineage (an id a cursor started from empty gets), the tick number ``seq``, where
the last tick stopped, and the seeding progress. The rows live in the state store's
``sensor_state`` table, one per partition, as ``(key, lineage, seq, value, prev)``.

Lossless across a tick that is evaluated but never committed (the daemon dies after the
evaluation, before it stores the cursor): a tick ``seq = S + 1`` writes its rows with that
``seq`` and ``prev`` = the value as of cursor ``S``. Read from cursor ``S``, a row written by a
later (uncommitted) tick reads as its ``prev``, and is put back to ``prev`` by the next tick
that commits, so an evaluation whose cursor never landed leaves no trace. A row of another
lineage (a reset cursor) reads as absent.

A cursor reset starts a new lineage, unless the last lineage started from an empty cursor was
never confirmed by a later tick: a re-evaluated first tick then keeps its lineage, so its
run keys are the same and Dagster drops the duplicates.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from replicator.state import StateStore, open_store

NAMESPACE = "replication_change_sensor"
META = f"{NAMESPACE}/meta"
MARKS = f"{NAMESPACE}/marks"  # scope -> token of the last flush that wrote it (StateMirror)
UNKNOWN_MTIME = "?"  # seeded from the instance: the directory's time is not known yet
NO_MTIME = "n"  # the listing gives none (object stores, symlinks): no hint


def state_location(spec) -> str:  # spec: ReplicationSpec
    """The state store the spec names (``env:NAME`` read now, at tick time)."""
    value = spec.platform.state_path
    if value.startswith("env:"):
        name = value[len("env:"):]
        found = os.environ.get(name, "").strip()
        if not found:
            raise ValueError(f"platform.state: environment variable {name} is not set "
                             "(the change sensor keeps its per-partition state there)")
        return found
    return spec.state_path


def open_sensor_store(spec) -> StateStore:
    return open_store(state_location(spec))


def fingerprint_scope(dataset: str) -> str:
    return f"{NAMESPACE}/fp/{dataset}"


def seed_scope(dataset: str, target: int) -> str:
    return f"{NAMESPACE}/seed/{dataset}/{target}"


@dataclass(frozen=True)
class PartitionState:
    """What the sensor last recorded for one partition."""

    fingerprint: str
    dir_mtime: str  # the directory's mtime (ns) as listed, NO_MTIME or UNKNOWN_MTIME
    held: bool  # files were held back (younger than min_age_s): look again every tick

    def encode(self) -> str:
        return f"{self.fingerprint} {self.dir_mtime} {int(self.held)}"

    @classmethod
    def decode(cls, text: str) -> PartitionState:
        fp, mtime, held = text.split(" ")
        return cls(fp, mtime, held == "1")


def mtime_token(mtime_ns: int | None) -> str:
    return NO_MTIME if mtime_ns is None else str(mtime_ns)


def start_lineage(store: StateStore) -> str:
    """The lineage of a tick from an empty cursor (see the module doc)."""
    rows = {k: v for k, _, _, v, _ in store.sensor_rows(META)}
    current = (rows.get("lineage") or "").split(" ")
    if len(current) == 2 and current[1] == "pending":
        return current[0]
    lineage = uuid.uuid4().hex[:12]
    store.sensor_write(META, [("lineage", lineage, 0, f"{lineage} pending", None)])
    return lineage


def confirm_lineage(store: StateStore, lineage: str) -> None:
    """A tick from a non-empty cursor of ``lineage``: that lineage's first tick landed."""
    rows = {k: v for k, _, _, v, _ in store.sensor_rows(META)}
    if rows.get("lineage") == f"{lineage} pending":
        store.sensor_write(META, [("lineage", lineage, 0, f"{lineage} confirmed", None)])


class TickRows:
    """One tick's view of the rows of a lineage as of cursor ``seq`` and its staged writes
    (as tick ``seq + 1``). ``flush()`` writes them, with every row a later uncommitted tick
    left put back."""

    def __init__(self, store: StateStore, lineage: str, seq: int,
                 mirror: StateMirror | None = None) -> None:
        self.store, self.lineage, self.seq = store, lineage, seq
        self._loaded: dict[str, dict[str, str | None]] = {}  # scope -> key -> committed value
        self._writes: dict[str, dict[str, tuple[str, str, int, str | None, str | None]]] = {}
        self._partial: set[str] = set()  # scopes read only for some keys (load_keys)
        self.mirror = mirror
        # the scopes' marks as read now, and those kept in memory by the last tick that are
        # still the rows as of ``seq`` (StateMirror)
        self._marks: dict[str, str] = {}
        self._mirrored: dict[str, dict[str, str]] = {}
        if mirror is not None:
            self._marks = {k: v for k, _, _, v, _ in store.sensor_rows(MARKS) if v is not None}
            self._mirrored = mirror.take(lineage, seq, self._marks)
        self.from_mirror = 0  # scopes read from the mirror, not the store

    def load(self, scope: str) -> dict[str, str]:
        """``key -> value`` as of the cursor (absent keys: nothing recorded)."""
        if scope not in self._loaded or scope in self._partial:
            self.load_many([scope])
        return {k: v for k, v in self._loaded[scope].items() if v is not None}

    def load_many(self, scopes: Iterable[str]) -> None:
        """Read the rows of every scope not loaded yet, in one query (a tick reads every
        dataset's rows: one query per tick, not one per dataset)."""
        todo = [s for s in dict.fromkeys(scopes) if s not in self._loaded or s in self._partial]
        for scope in [s for s in todo if s in self._mirrored and s not in self._loaded]:
            self._loaded[scope] = self._mirrored.pop(scope)  # type: ignore[assignment]
            self._writes[scope] = {}
            self.from_mirror += 1
        todo = [s for s in todo if s not in self._loaded or s in self._partial]
        if not todo:
            return
        values, later = self.store.sensor_values(todo, self.lineage, self.seq)
        for scope in todo:
            committed: dict[str, str | None] = values[scope]  # type: ignore[assignment]
            # rows written by a tick whose cursor never landed read as their prev, and go back
            # (writes staged after a partial read of the scope stay)
            writes = self._writes.setdefault(scope, {})
            for key, prev in later[scope].items():
                writes.setdefault(key, (key, self.lineage, self.seq, prev, prev))
                committed[key] = prev
            self._loaded[scope] = committed
            self._partial.discard(scope)

    def load_keys(self, scope: str, keys: Iterable[str]) -> dict[str, str]:
        """``key -> value`` as of the cursor for ``keys`` only (a partial view of ``scope``:
        :meth:`stage` may then write those keys; other keys of the scope stay unread). Rows of
        those keys a later uncommitted tick wrote read as their prev and are put back."""
        if scope not in self._loaded:
            self._partial.add(scope)
        loaded = self._loaded.setdefault(scope, {})
        writes = self._writes.setdefault(scope, {})
        todo = [k for k in dict.fromkeys(keys) if k not in loaded] if scope in self._partial else []
        if todo:
            values, later = self.store.sensor_values_of(scope, todo, self.lineage, self.seq)
            for key in todo:
                loaded[key] = values.get(key)
            for key, prev in later.items():
                writes.setdefault(key, (key, self.lineage, self.seq, prev, prev))
        return {k: loaded[k] for k in dict.fromkeys(keys) if loaded.get(k) is not None}

    def current(self, scope: str) -> dict[str, str]:
        """:meth:`load` with this tick's staged writes applied."""
        out = self.load(scope)
        for key, (_, _, seq, value, _) in self._writes[scope].items():
            if seq == self.seq + 1:
                if value is None:
                    out.pop(key, None)
                else:
                    out[key] = value
        return out

    def stage(self, scope: str, key: str, value: str | None) -> None:
        """Record ``value`` (None: forget) for ``key`` as of this tick."""
        if scope not in self._loaded:
            self.load(scope)
        elif scope in self._partial and key not in self._loaded[scope]:
            self.load_keys(scope, [key])
        before = self._loaded[scope].get(key)
        writes = self._writes[scope]
        if value == before and key not in writes:
            return
        writes[key] = (key, self.lineage, self.seq + 1, value, before)

    def stage_many(self, scope: str, items: Iterable[tuple[str, str | None]]) -> None:
        for key, value in items:
            self.stage(scope, key, value)

    def flush(self) -> int:
        """Write every staged row, of every scope, in one transaction, with a new mark for
        each scope written (see :class:`StateMirror`); a tick that keeps a mirror then holds
        the scopes it read whole as of this tick."""
        rows = [(scope, *row) for scope, writes in self._writes.items() for row in writes.values()]
        token = uuid.uuid4().hex[:12]
        written = {r[0] for r in rows}
        marks = [(MARKS, scope, self.lineage, self.seq + 1, token, None) for scope in sorted(written)]
        self.store.sensor_write_many([*rows, *marks])
        if self.mirror is not None:
            scopes: dict[str, tuple[dict[str, str], str | None]] = {}
            for scope in self._loaded:
                if scope in self._partial:
                    continue  # only some keys read: the next tick reads it
                loaded = self._loaded[scope]
                # unchanged (the usual scope of a steady tick): kept as it is, not copied
                now = (loaded if not self._writes[scope] and None not in loaded.values()
                       else self.current(scope))
                scopes[scope] = (now, token if scope in written else self._marks.get(scope))  # type: ignore[assignment]
            self.mirror.keep(self.lineage, self.seq + 1, scopes)
        return len(rows)


class StateMirror:
    """The rows the sensor's last tick in this process left, kept in memory for the next
    tick, so that tick reads no rows from the store (at 100,000 partitions a read costs
    0.1-0.2 s CPU; at 1,000,000 more than a second).

    A kept scope is used only by a tick from the cursor the keeping tick produced (same
    lineage, its ``seq``) and only while nobody wrote the scope since: every flush writes, in
    the transaction of its rows, a mark per scope it wrote (a random token), and a scope is
    used only while its mark is the one the mirror expects. So a tick whose cursor never
    landed, a reset cursor, another code server's tick (landed or not), a restart: the scope
    is read from the store. Only scopes read whole are kept."""

    def __init__(self) -> None:
        self._at: tuple[str, int] | None = None  # (lineage, seq) the kept scopes are as of
        self._scopes: dict[str, tuple[dict[str, str], str | None]] = {}  # scope -> rows, mark

    def keep(self, lineage: str, seq: int, scopes: dict[str, tuple[dict[str, str], str | None]]) -> None:
        self._at, self._scopes = (lineage, seq), scopes

    def take(self, lineage: str, seq: int, marks: dict[str, str]) -> dict[str, dict[str, str]]:
        """The kept scopes that are the rows of ``lineage`` as of ``seq`` (``marks``: the
        store's marks now). The mirror is handed over: empty until the next keep()."""
        at, scopes = self._at, self._scopes
        self._at, self._scopes = None, {}
        if at != (lineage, seq):
            return {}
        return {scope: rows for scope, (rows, mark) in scopes.items() if marks.get(scope) == mark}
