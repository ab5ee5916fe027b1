"""The re-sync's first stage on two cores: the source listing merged with the manifest
(:func:`replicator.state.scratch.settle_merge`) by two processes at once, each over one part
of the tree, so that what the manifest settles never leaves the process that found it.

Listing a local tree is per-file Python (a ``stat`` and a tuple per file) under one
interpreter lock; threads only overlap its system calls. A forked child takes the second
half of the tree (a cut between two subdirectories of one directory, placed at the
manifest's middle path, :class:`replicator.listing.Split`), merges it with its own range of
the manifest and sends back only what the manifest does not settle, in parts, through a
pipe; the parent does the first half meanwhile. A child that fails in any way (killed,
an error, a pipe that breaks) costs only time: its part is listed again in the parent
(the scratch tables take a row twice as one).

Used only where it is safe and pays: a fork of a process with no other thread than the
CLI's progress line (the CLI, not a Dagster run's threads), two CPUs or more, a manifest large enough, no followed links
(their loop check needs every ancestor in one process).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import pickle
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from replicator.errors import ReplicatorError, describe
from replicator.filesystems.base import FileSystem
from replicator.filters import Filter
from replicator.listing import ListingStats, Split, walk
from replicator.state.base import StateStore
from replicator.state.scratch import Scratch, completed, settle_merge

log = logging.getLogger("replicator")
MIN_ROWS = 20_000  # below this a fork costs more than it saves
# threads a fork may leave behind: the CLI's progress line (it only waits and writes to the
# terminal, which the child never does); any other thread (a Dagster run's) keeps one process
FORK_SAFE_THREADS = frozenset({"progress"})


class ChildListingError(ReplicatorError):
    """A listing error the child process found, as the text the parent reports."""


def cut(store: StateStore, pair_id: int) -> Split | None:
    """Where to cut the tree in two: under the deepest directory holding both the first and
    the last recorded path, between its subdirectories at the manifest's middle path. None
    when the manifest is small."""
    found = store.manifest_split(pair_id)
    if found is None or found[0] < MIN_ROWS:
        return None
    _count, first, middle, last = found
    at = _common_dir(first, last)
    under = at + "/" if at else ""
    if not middle.startswith(under):
        return None
    # the child of ``at`` the middle path is in (or is): side 1 starts at that subdirectory
    slash = middle.find("/", len(under))
    sub = middle if slash < 0 else middle[:slash]
    return Split(at, sub + "/", 0)


def _common_dir(a: str, b: str) -> str:
    """The deepest directory both paths are under ("" for the root)."""
    pa, pb = a.split("/")[:-1], b.split("/")[:-1]
    common = []
    for x, y in zip(pa, pb, strict=False):
        if x != y:
            break
        common.append(x)
    return "/".join(common)


def usable(fs: FileSystem, *, copy_links: bool, state: str | None) -> bool:
    """Whether this process may fork a lister: a local source (where listing is CPU work),
    no followed links, a state store a second process can read, two CPUs, no other thread
    but the CLI's progress line."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return (cpus >= 2 and not copy_links and state is not None and fs.capabilities.host_paths
            and hasattr(os, "fork") and all(
                t is threading.main_thread() or t.name in FORK_SAFE_THREADS for t in threading.enumerate()))


def _side_one(conn: Any, state: str, pair_id: int, fs: FileSystem, root: str, flt: Filter,
              listing: dict[str, Any], split: Split) -> None:
    """The child: side 1's listing merged with side 1's manifest rows; sends ``("rows",
    src, man)`` parts, then ``("done", settled, stats, errors)`` or ``("failed", text)``."""
    from replicator.state import open_store

    try:
        store = open_store(state, read_only=True)
        try:
            stats, errors = ListingStats(), []
            kw = {**listing, "stats": stats,
                  "on_error": lambda rel, exc: errors.append((rel, describe(exc)))}
            settled: list[int] = []
            details = functools.partial(store.manifest_details, pair_id)
            with store.manifest_scan(pair_id, split.boundary, _end(split.at), brief=True) as rows, \
                    store.guard():
                batches = walk(fs, root, flt, ordered=True, rows=True, split=split, **kw)
                for src, man in completed(settle_merge(batches, rows, settled), details):
                    conn.send(("rows", src, man))
            conn.send(("done", settled[0], stats, errors))
        finally:
            store.close()
    except BaseException as exc:  # the parent lists this part itself
        try:
            conn.send(("failed", describe(exc)))
        except Exception:
            pass
    finally:
        conn.close()


def _end(at: str) -> str | None:
    """The first path after everything under ``at`` (None: the root, nothing after it)."""
    return at + "0" if at else None  # "0" follows "/" in code point order


@contextlib.contextmanager
def _outside(store: StateStore, pair_id: int, split: Split) -> Iterator[Iterable[tuple]]:
    """Side 0's manifest rows, brief: all but side 1's range, in path order (the two ranges'
    cursors chained: no Python layer per row)."""
    with contextlib.ExitStack() as stack:
        parts = [stack.enter_context(store.manifest_scan(pair_id, None, split.boundary, brief=True))]
        end = _end(split.at)
        if end is not None:
            parts.append(stack.enter_context(store.manifest_scan(pair_id, end, None, brief=True)))
        yield itertools.chain(*parts)


def settle_in_two(store: StateStore, state: str, pair_id: int, scratch: Scratch, fs: FileSystem,
                  root: str, flt: Filter, listing: dict[str, Any], split: Split,
                  on_error: Callable[[str, BaseException], None] | None) -> int:
    """:meth:`Scratch.load_settling` of the whole tree, side 1 in a forked child. Returns
    the files settled; counts into ``listing["stats"]`` and reports through ``on_error`` as
    one process listing it would."""
    stats: ListingStats = listing["stats"]
    child_kw = {k: v for k, v in listing.items() if k not in ("stats", "on_error")}
    rfd, wfd = os.pipe()
    try:
        pid = os.fork()
    except BaseException:
        os.close(rfd)
        os.close(wfd)
        raise
    if pid == 0:  # the child: side 1, then out without running the parent's exit handlers
        code = 1
        try:
            os.close(rfd)
            _side_one(Pipe(wfd), state, pair_id, fs, root, flt, child_kw,
                      Split(split.at, split.boundary, 1))
            code = 0
        finally:
            os._exit(code)  # nothing of the parent's (buffered output, atexit) runs twice
    os.close(wfd)
    receive = Pipe(rfd)
    try:
        own = {**listing, "on_error": on_error}
        details = functools.partial(store.manifest_details, pair_id)
        with _outside(store, pair_id, split) as recorded, store.guard():
            settled = scratch.load_settling(
                walk(fs, root, flt, ordered=True, rows=True, split=split, **own), recorded,
                details=details)
        theirs = _receive(receive, scratch)
        if theirs is None:  # the child did not finish: its part, listed here
            log.info("the second listing process did not finish; listing its part here")
            side1 = Split(split.at, split.boundary, 1)
            with store.manifest_scan(pair_id, split.boundary, _end(split.at), brief=True) as rows, \
                    store.guard():
                settled += scratch.load_settling(
                    walk(fs, root, flt, ordered=True, rows=True, split=side1, **own), rows,
                    fresh=False, details=details)
            return settled
        n, child_stats, errors = theirs
        for name in ("files", "bytes", "dirs", "held_back", "too_old", "symlinks_skipped", "errors"):
            setattr(stats, name, getattr(stats, name) + getattr(child_stats, name))
        if on_error is not None:
            for rel, text in errors:
                on_error(rel, ChildListingError(text))
        return settled + n
    finally:
        receive.close()
        _reap(pid)


def _reap(pid: int) -> None:
    """The child gone and waited for: killed if it is still running (the parent is done
    with it, or is raising)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == 0:
            import signal  # only here: a finished child needs no signal

            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    except ChildProcessError:
        pass


class Pipe:
    """One end of a pipe carrying pickled messages, each after its length (8 bytes): what
    the child sends and the parent receives. A plain fork and pipe rather than
    ``multiprocessing``, whose modules cost ~10-13 ms of imports on every re-sync before the
    child could start (about 4% of a 50 k-file no-op)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, message: object) -> None:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        view = memoryview(len(data).to_bytes(8, "big") + data)
        while view:
            view = view[os.write(self.fd, view):]

    def recv(self) -> Any:
        """The next message; EOFError when the other end closed (or died) before one."""
        size = int.from_bytes(self._exactly(8), "big")
        return pickle.loads(self._exactly(size))

    def _exactly(self, n: int) -> bytes:
        parts, left = [], n
        while left:
            part = os.read(self.fd, min(left, 1 << 20))
            if not part:
                raise EOFError("the other end of the pipe closed")
            parts.append(part)
            left -= len(part)
        return b"".join(parts)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def _receive(receive: Any, scratch: Scratch) -> tuple[int, ListingStats, list] | None:
    """The child's rows into ``scratch``; its ``(settled, stats, errors)``, or None when it
    failed or died."""
    while True:
        try:
            message = receive.recv()
        except (EOFError, OSError):
            return None
        if message[0] == "rows":
            scratch.add_unsettled(message[1], message[2])
        elif message[0] == "done":
            return message[1], message[2], message[3]
        else:
            log.debug("listing process failed: %s", message[1])
            return None

