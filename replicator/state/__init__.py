"""The engine's state store (manifest, journal, runs, pair locks) and its per-run scratch.

``--state`` takes a path to an SQLite file (the default, ``~/.replicator/state.db``) or a
``postgresql://`` URL; anything else that looks like a URL is a usage error, never a file
name. :func:`open_store` is the one way in.
"""

from __future__ import annotations

import re

from replicator.errors import UsageError
from replicator.state.base import ManifestRow, StateDamaged, StateError, StateStore, pair_lock_key
from replicator.state.scratch import Scratch
from replicator.state.sqlite import SQLiteStateStore

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg2")


def state_scheme(spec: str) -> str:
    """``"sqlite"`` or ``"postgresql"`` for a ``--state`` value; UsageError for anything else."""
    m = _URL.match(spec)
    if m is None:
        return "sqlite"
    scheme = m.group(1).lower()
    if scheme in POSTGRES_SCHEMES:
        return "postgresql"
    if scheme in ("sqlite", "file"):
        return "sqlite"
    raise UsageError(f"--state: unknown scheme {scheme}:// (expected a file path, sqlite:///PATH "
                     "or postgresql://USER@HOST:PORT/DB)")


def sqlite_path(spec: str) -> str:
    """The file of an SQLite ``--state`` value (a path or ``sqlite:///PATH``)."""
    m = _URL.match(spec)
    if m is None:
        return spec
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(spec)
    if parts.netloc not in ("", "localhost") or not parts.path:
        raise UsageError("--state: expected sqlite:///ABSOLUTE/PATH or a file path")
    return unquote(parts.path)


def open_store(spec: str | None, *, read_only: bool = False) -> StateStore:
    """Open the state store ``spec`` names (None: a throwaway in-memory store).

    ``read_only``: nothing is created or written (``plan``, dry runs); a store that does not
    exist yet reads as empty.
    """
    if spec is None:
        return SQLiteStateStore(None)
    if not spec.strip():
        raise UsageError("--state: empty value")
    if state_scheme(spec) == "postgresql":
        from replicator.state.postgres import NoSchema, PostgresStateStore

        try:
            return PostgresStateStore(spec, read_only=read_only)
        except NoSchema:
            return SQLiteStateStore(None)
    import os

    path = os.path.expanduser(sqlite_path(spec))
    if read_only and not os.path.exists(path):
        return SQLiteStateStore(None)  # nothing recorded yet: an empty store, nothing created
    return SQLiteStateStore(path, read_only=read_only)


__all__ = [
    "ManifestRow",
    "SQLiteStateStore",
    "Scratch",
    "StateDamaged",
    "StateError",
    "StateStore",
    "open_store",
    "pair_lock_key",
    "state_scheme",
]
