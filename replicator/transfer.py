"""Transfer: copy one file (or one range of a big file) to a staged location and
verify it. Runs in worker threads or Spark tasks, so it never touches the state
store: it returns an :class:`Outcome` and the driver publishes and records.

Staging: where the destination can rename atomically, bytes go to a temporary name
next to the target (``.rtmp-<run>-<name>``); the old copy stays in place until the
driver renames. Where it cannot (object stores), bytes go straight to the final key
and the object appears whole only when the upload completes.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import random
import stat as stat_mod
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from replicator import checksum as crc
from replicator import native
from replicator.errors import (
    DeadlineExceeded,
    PreconditionFailed,
    SourceChangedError,
    SourceReadError,
    UsageError,
    VerificationError,
    describe,
    is_retryable,
    on_side,
)
from replicator.filesystems.base import FILE, LINK, FileSystem, unsafe_rel
from replicator.filesystems.local import ESC, create_new, native_path, open_regular_stat
from replicator.filters import TEMP_PREFIX
from replicator.progress import NO_PROGRESS, Progress

NAME_MAX = 255
E = TypeVar("E", bound=BaseException)


def temp_name(final: str, run_id: str) -> str:
    """Deterministic staged name next to ``final`` (a retried task reuses it)."""
    head, sep, name = final.rpartition("/")
    candidate = f"{TEMP_PREFIX}{run_id}-{name}"
    if len(candidate) > NAME_MAX // 4 and len(candidate.encode()) > NAME_MAX:  # <= 4 B a char
        digest = hashlib.sha1(name.encode()).hexdigest()[:24]
        candidate = f"{TEMP_PREFIX}{run_id}-{digest}"
    return head + sep + candidate


class Throttle:
    """Token bucket shared by all workers of a process (``--bandwidth``, MiB/s)."""

    def __init__(self, mib_per_s: float | None) -> None:
        self.rate = mib_per_s * (1 << 20) if mib_per_s else None
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def consume(self, n: int) -> None:
        if not self.rate or n <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(self._next, now)
            self._next = start + n / self.rate
            wait = start - now
        if wait > 0:
            time.sleep(wait)


@dataclass(slots=True)
class Task:
    """One file, or one range of one file when ``part`` is set."""

    seq: int
    rel: str
    action: str
    size: int
    mtime_ns: int
    mode: int | None = None
    dst_version: str | None = None
    part: tuple[int, int, int] | None = None  # (index, offset, length)
    nparts: int = 1
    handle: dict | None = None  # parallel-write handle, for ranges
    # the plan saw the destination (listed); False: it trusted the manifest, so an object it
    # did not know of may exist (a must-not-exist write then adopts or overwrites it)
    dst_listed: bool = True
    paths: tuple[str, str, str | None] | None = None  # StageContext.paths, worked out once
    # the driver journalled this file's bin as one batch: a small local copy may be renamed
    # into place as soon as it is staged (see stage_small_local); the driver still records it
    self_publish: bool = False


@dataclass(slots=True)
class Outcome:
    seq: int
    rel: str
    ok: bool
    size: int = 0
    mtime_ns: int = 0
    checksum: str | None = None
    crc: int | None = None  # raw crc32c (ranges combine it)
    tmp: str | None = None  # staged name; None when written in place
    error: str | None = None
    retryable: bool = False
    side: str | None = None  # of the error: "source" or "destination"
    part: dict | None = None
    bytes_moved: int = 0
    attempts: int = 1
    gave_up: bool = False  # stopped by the run's deadline: not done (not a failure of its own)
    verified: bool = False  # the published bytes were checked by CRC32C (store's or re-read)


@dataclass(slots=True)
class SmallBatch:
    """The files of one bin journalled as a batch (``self_publish``) that the compiled loop
    staged and renamed into place, as one result instead of an :class:`Outcome` each (an
    object per file cost more than its copy): their ``seqs``, the manifest rows ``(rel,
    FILE, size, mtime_ns, checksum)`` in the same order, and their bytes. Every one is
    copied (a file that was not is an :class:`Outcome` of its own)."""

    seqs: list[int]
    rows: list[tuple[str, str, int, int, str]]
    nbytes: int


@dataclass
class StageContext:
    """Everything a worker needs; pickles to plain options for Spark tasks."""

    src_fs: FileSystem
    src_root: str
    dst_fs: FileSystem
    dst_root: str
    run_id: str
    checksum: bool = False
    verify_checksum: bool = False  # check every copy by CRC32C even when deciding by size+mtime
    preserve: frozenset[str] = frozenset({"times"})
    chunk_size: int = 8 << 20
    retries: int = 3
    retry_backoff_s: float = 0.5
    deadline: float | None = None  # wall-clock time (time.time()) the run gives up at
    progress: Progress = field(default=NO_PROGRESS, repr=False)
    throttle: Throttle | None = field(default=None, repr=False)
    staging: bool = True  # False: the executor writes (and publishes) each file itself
    copy_links: bool = False  # --copy-links: a source symlink is read through

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["progress"] = NO_PROGRESS
        state["throttle"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def src_path(self, rel: str) -> str:
        return self.src_fs.join(self.src_root, _confined(rel))

    def dst_path(self, rel: str) -> str:
        return self.dst_fs.join(self.dst_root, _confined(rel))

    def past_deadline(self, margin: float = 0.0) -> bool:
        return self.deadline is not None and time.time() + margin >= self.deadline

    def check_deadline(self) -> None:
        if self.past_deadline():
            raise DeadlineExceeded("the run's deadline passed")

    @property
    def verify(self) -> bool:
        """Every staged copy is checked by CRC32C (re-read where the store reports none)."""
        return self.checksum or self.verify_checksum

    def staged_path(self, rel: str) -> str | None:
        if not self.staging or not self.dst_fs.capabilities.atomic_rename:
            return None
        return temp_name(self.dst_path(rel), self.run_id)

    def paths(self, task: Task) -> tuple[str, str, str | None]:
        """``(source, final, staged or None)`` of a task, worked out once per task (the
        driver journals the staged name, the worker writes it)."""
        if task.paths is None:
            self.staged_names([task])
        return task.paths  # type: ignore[return-value]

    def staged_names(self, tasks: list[Task]) -> list[str | None]:
        """The staged names of a bin's tasks, their :meth:`paths` worked out for the whole
        bin in one loop (the one place they are made: a short final name gets the staged
        prefix, a long one goes through :func:`temp_name`); a name with an empty, ``.`` or
        ``..`` segment raises UsageError (:func:`_confined`)."""
        staging = self.staging and self.dst_fs.capabilities.atomic_rename
        src_join, dst_join = self.src_fs.join, self.dst_fs.join
        src_root, dst_root = self.src_root, self.dst_root
        prefix = f"{TEMP_PREFIX}{self.run_id}-"
        short = NAME_MAX // 4 - len(prefix)  # up to this many characters a name needs no digest
        run_id = self.run_id
        out: list[str | None] = []
        for task in tasks:
            found = task.paths
            if found is None:
                rel = task.rel
                if unsafe_rel(rel):
                    _confined(rel)  # raises
                final = dst_join(dst_root, rel)
                staged = None
                if staging:
                    head, sep, name = final.rpartition("/")
                    staged = (head + sep + prefix + name if len(name) <= short
                              else temp_name(final, run_id))
                found = task.paths = (src_join(src_root, rel), final, staged)
            out.append(found[2])
        return out

    @functools.cached_property
    def attr_kinds(self) -> frozenset[str]:
        """The ``--preserve`` attribute kinds (owner, group, ACL, ...) both ends have."""
        both = set(self.src_fs.capabilities.attributes) & set(self.dst_fs.capabilities.attributes)
        return frozenset(self.preserve & ATTRIBUTE_KINDS & both)


def _confined(rel: str) -> str:
    """``rel`` if it stays under the root it is joined to (listings refuse other names
    already; this keeps any other caller from writing outside the destination)."""
    if unsafe_rel(rel):
        raise UsageError(f"{rel!r}: path with an empty, '.' or '..' segment; refused")
    return rel


def local_pair(src_fs: FileSystem, dst_fs: FileSystem) -> bool:
    """Both sides are this host's files: the kernel copies between them (copy_file_range)."""
    return src_fs.capabilities.host_paths and dst_fs.capabilities.host_paths


def adopt_previous_attempt(task: Task, ctx: StageContext) -> Outcome | None:
    """A retried attempt (a retry in :func:`stage`, or a retried Spark task) of a file written
    in place (object stores: no staged name) may find that the failed attempt completed after
    all (the upload finished but its response was lost): the object is at its final name and
    writing it again would trip the must-not-exist / generation precondition. If the
    destination holds exactly the source's bytes (size, then the store's CRC32C or MD5, else
    a CRC32C of the re-read object, against the source's), take it as this attempt's outcome."""
    if task.part is not None or ctx.staged_path(task.rel) is not None:
        return None
    info = ctx.dst_fs.stat(ctx.dst_path(task.rel))
    if info is None or info.kind != FILE or info.size != task.size:
        return None
    if task.action == "update" and info.version is not None and info.version == task.dst_version:
        return None  # still the object the plan saw: not written by an earlier attempt
    src = ctx.src_fs.stat(ctx.src_path(task.rel))
    if src is None or src.size != task.size or src.mtime_ns != task.mtime_ns:
        return None  # the source changed since the plan: copy it again
    md5 = hashlib.md5() if info.checksum and info.checksum.startswith("md5:") else None
    value = 0
    for data in ctx.src_fs.read_chunks(ctx.src_path(task.rel), 0, None, ctx.chunk_size):
        value = crc.extend(value, data)
        if md5 is not None:
            md5.update(data)
    want = crc.format_crc32c(value)
    if info.checksum and info.checksum.startswith("crc32c:"):
        if info.checksum != want:
            return None
    elif md5 is not None:
        if info.checksum != "md5:" + md5.hexdigest():
            return None
    else:
        got = 0
        for data in ctx.dst_fs.read_chunks(ctx.dst_path(task.rel), 0, None, ctx.chunk_size):
            got = crc.extend(got, data)
        if got != value:
            return None
    return Outcome(task.seq, task.rel, ok=True, size=task.size, mtime_ns=task.mtime_ns,
                   checksum=want, crc=value, tmp=None, bytes_moved=0, verified=True)


def stage(task: Task, ctx: StageContext) -> Outcome:
    """Stage and verify one task, retrying retryable errors with backoff (a retry first
    checks whether the failed attempt's in-place write completed after all).

    In-place writes (object stores) also recover from two refusals of their own making: a
    copy the store reports damaged (its checksum of what it received differs from ours) is
    replaced by the retry under that object's generation / ETag, and removed if every attempt
    fails; a must-not-exist write planned from the manifest alone that finds an object
    there (412) adopts it when it holds the source's bytes, else overwrites it under the
    version it has (someone writing it meanwhile still makes the write fail)."""
    attempt = 0
    overwrite_tried = False
    while True:
        attempt += 1
        try:
            out = adopt_previous_attempt(task, ctx) if attempt > 1 else None
            if out is None:
                out = _stage_range(task, ctx) if task.part else _stage_file(task, ctx)
            out.attempts = attempt
            return out
        except DeadlineExceeded as exc:
            return Outcome(task.seq, task.rel, ok=False, error=describe(exc), retryable=True,
                           attempts=attempt, gave_up=True)
        except Exception as exc:
            in_place = task.part is None and ctx.staged_path(task.rel) is None
            bad_copy = _cause(exc, VerificationError)
            damaged = bad_copy.version if in_place and bad_copy is not None else None
            if damaged:
                task = replace(task, action="update", dst_version=damaged)
            if (in_place and _cause(exc, PreconditionFailed) is not None and task.action == "copy"
                    and not task.dst_listed and not overwrite_tried):
                overwrite_tried = True
                found = _existing_version(task, ctx)
                if found is not None:
                    adopted = adopt_previous_attempt(task, ctx)
                    if adopted is not None:
                        adopted.attempts = attempt
                        return adopted
                    task = replace(task, action="update", dst_version=found)
                    continue
            retryable = is_retryable(exc)
            pause = ctx.retry_backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random())
            # no retry that would start after the run's deadline: it could not finish in time
            if retryable and attempt <= ctx.retries and not ctx.past_deadline(pause):
                time.sleep(pause)
                continue
            if damaged:
                with contextlib.suppress(Exception):  # nothing damaged stays under the final name
                    ctx.dst_fs.delete_version(ctx.dst_path(task.rel), damaged)
            return Outcome(task.seq, task.rel, ok=False, error=describe(exc),
                           retryable=retryable, side=getattr(exc, "side", None), attempts=attempt)


@contextmanager
def _on(side: str, fs: FileSystem, path: str) -> Iterator[None]:
    """Errors inside carry their side and name ``path`` (as a URI), keeping their class:
    a destination that cannot be written is never reported as a source that cannot be read."""
    try:
        yield
    except Exception as exc:
        err = on_side(side, fs.uri(path), exc)
        if err is exc:
            raise
        raise err from exc


def _cause(exc: BaseException | None, cls: type[E]) -> E | None:
    """``exc`` or the error it wraps (an error given its side keeps the original as its
    cause) if it is a ``cls``."""
    while exc is not None:
        if isinstance(exc, cls):
            return exc
        exc = exc.__cause__
    return None


def _existing_version(task: Task, ctx: StageContext) -> str | None:
    """The version of the object at the task's final name, if one is there."""
    info = ctx.dst_fs.stat(ctx.dst_path(task.rel))
    return info.version if info is not None and info.kind == FILE and info.version else None


def _source_stat(ctx: StageContext, task: Task) -> tuple[int, int, int | None]:
    path = ctx.src_path(task.rel)
    with _on("source", ctx.src_fs, path):
        info = ctx.src_fs.stat(path)
    if info is None:
        raise SourceReadError(f"source vanished: {task.rel}")
    if info.kind == LINK and not ctx.copy_links:  # swapped for a link since the listing
        raise SourceChangedError(f"source was replaced by a symlink since it was listed, not "
                                 f"followed (without --copy-links): {task.rel}")
    kind = info.target_kind if info.kind == LINK else info.kind  # --copy-links: the target
    if kind != FILE:  # replaced by a FIFO, socket, device or directory since the listing
        raise SourceReadError(f"source is no longer a regular file: {task.rel} ({kind})")
    return info.size, info.mtime_ns, info.mode


def _check_not_being_written(ctx: StageContext, task: Task) -> None:
    """An HDFS file another client still writes lists only its completed blocks: refuse it
    (the next run copies it once the writer closed it)."""
    if ctx.src_fs.being_written(ctx.src_path(task.rel)):
        raise SourceChangedError(f"source is being written (open lease), not copied: {task.rel}")


def _check_unchanged(ctx: StageContext, task: Task, moved: int, size0: int, mtime0: int) -> None:
    """A source that grew, shrank or was rewritten while being read must not be published."""
    size1, mtime1, _ = _source_stat(ctx, task)
    if moved != size0 or size1 != size0 or mtime1 != mtime0:
        raise SourceChangedError(f"source changed during copy: {task.rel}")
    _check_not_being_written(ctx, task)


ATTRIBUTE_KINDS = frozenset({"owner", "group", "replication", "blocksize", "acl", "xattr"})
# kept only where both ends have them, else the run is refused (DistCp -pa/-px refuse too);
# the others are left to the destination's defaults where one end lacks them
STRICT_KINDS = frozenset({"acl", "xattr"})


def check_preserve(src_fs: FileSystem, dst_fs: FileSystem, preserve: frozenset[str]) -> None:
    """Refuse ``--preserve acl``/``xattr`` up front (exit 2) where an end cannot keep them,
    rather than copy without them."""
    kinds = frozenset(preserve & STRICT_KINDS)
    if not kinds:
        return
    for side, fs in (("source", src_fs), ("destination", dst_fs)):
        reason = fs.attribute_support(kinds)
        if reason:
            raise UsageError(f"--preserve {','.join(sorted(kinds))}: the {side} cannot keep "
                             f"them: {reason}")


def source_attrs(ctx: StageContext, rel: str) -> dict[str, Any]:
    """The source's ``--preserve`` attributes of ``rel`` that both ends have (DistCp
    ``-pugrbax``)."""
    kinds = ctx.attr_kinds
    if not kinds:
        return {}
    attrs = ctx.src_fs.attributes(ctx.src_path(rel), kinds)
    return {k: v for k, v in attrs.items() if k in kinds and v is not None}


def _source_attrs(ctx: StageContext, task: Task) -> dict[str, Any]:
    return source_attrs(ctx, task.rel)


def _apply_attrs(ctx: StageContext, staged: str, mtime_ns: int, mode: int | None,
                 attrs: dict[str, Any] | None = None) -> None:
    """Set the kept attributes on a staged file (before it is renamed into place)."""
    rest = {k: v for k, v in (attrs or {}).items() if k != "blocksize"}
    if rest:
        ctx.dst_fs.set_attributes(staged, rest)
    caps = ctx.dst_fs.capabilities
    if "times" in ctx.preserve and caps.can_set_mtime:
        ctx.dst_fs.set_times(staged, mtime_ns)
    if "perms" in ctx.preserve and mode is not None and caps.can_set_mode:
        ctx.dst_fs.set_mode(staged, mode)


def _chunks(ctx: StageContext, path: str, offset: int, length: int | None) -> Iterator[bytes]:
    """The source's bytes; a read error is a source error naming ``path``."""
    it = iter(ctx.src_fs.read_chunks(path, offset, length, ctx.chunk_size))
    while True:
        with _on("source", ctx.src_fs, path):
            try:
                data = next(it)
            except StopIteration:
                return
        if ctx.throttle:
            ctx.throttle.consume(len(data))
        ctx.progress.on_bytes(len(data))
        ctx.check_deadline()
        yield data


SMALL_FILE = 1 << 20  # a local file up to this size moves by one read and one write


def small_files(tasks: list[Task]) -> bool:
    """Every task is a whole file (no range) of at most SMALL_FILE bytes: a bin the driver
    journals as one batch and, between local paths, stages in its own thread."""
    return all(t.part is None and t.nparts <= 1 and t.size <= SMALL_FILE for t in tasks)
_DST_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM}


def _open_staged(ctx: StageContext, dst: str, final: str, *, readable: bool) -> int:
    """Create the staged file ``dst`` afresh (a link planted at its name is not written
    through), and its directory if missing (the engine made every directory up front, so
    that is rare)."""
    try:
        return create_new(dst, readable=readable)
    except OSError:
        pass  # again, errors named and given their side
    with _on("destination", ctx.dst_fs, final):
        try:
            return create_new(dst, readable=readable)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(native_path(dst)), exist_ok=True)
        return create_new(dst, readable=readable)


def _io_error(exc: OSError, src: str, final: str) -> BaseException:
    side = "destination" if exc.errno in _DST_ERRNOS else "source"
    return on_side(side, final if side == "destination" else src, exc)


def _read_upto(fd: int, n: int) -> bytes:
    """Up to ``n`` bytes from the start of ``fd``; fewer only at the end of the file."""
    data = os.read(fd, n)
    if 0 < len(data) < n:  # a short read (network file systems): read on to ``n`` or EOF
        parts = [data]
        got = len(data)
        while got < n:
            more = os.read(fd, n - got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        data = b"".join(parts)
    return data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _copy_local(ctx: StageContext, task: Task, src: str, dst: str, *, final: str,
                set_mtime: bool, set_mode: bool) -> tuple[int, int, int, int | None, bool]:
    """Local -> local copy of one file to its staged name ``dst``, on raw descriptors.

    A file up to SMALL_FILE bytes is read once (asking one byte more than it had, to see it
    grow), its CRC32C computed from the bytes in hand, and written once; with ``ctx.verify``
    the staged copy is read back and its CRC32C compared (raises VerificationError). A
    bigger one is copied by the kernel (copy_file_range, else sendfile), with no checksum
    unless ``ctx.verify`` (then see :func:`_kernel_copy_verified`).

    The source's size, mtime and mode come from ``fstat`` of the open source (opened with
    O_NOFOLLOW unless ``--copy-links``), checked again once the bytes moved: a source
    written meanwhile (grown, shrunk or rewritten) raises SourceChangedError, so what is
    published is the consistent version of the file it describes. Sets the mtime / mode
    (when asked) on the descriptor and checks with ``fstat`` that the staged file holds
    every byte written. Returns ``(size, mtime_ns, bytes moved, crc32c or None, verified)``.
    """
    infd, st = open_regular_stat(src, follow=ctx.copy_links)
    try:
        size, mtime_ns = st.st_size, st.st_mtime_ns
        small = size <= SMALL_FILE
        readback = small and ctx.verify
        outfd = _open_staged(ctx, dst, final, readable=ctx.verify)
        crc_value: int | None = None
        verified = False
        try:
            try:
                if small:
                    data = _read_upto(infd, size + 1)
                    done = len(data)
                    if done == size:  # else the source changed: refused below
                        _write_all(outfd, data)
                    crc_value = crc.extend(0, data)
                    if ctx.throttle:
                        ctx.throttle.consume(done)
                    ctx.progress.on_bytes(done)
                elif ctx.verify:
                    done, crc_value = _kernel_copy_verified(ctx, infd, outfd, size, task.rel)
                    verified = True
                else:
                    done = _kernel_copy(ctx, infd, outfd, size)
            except OSError as exc:
                raise _io_error(exc, src, final) from exc
            after = os.fstat(infd)
            if done != size or after.st_size != size or after.st_mtime_ns != mtime_ns:
                raise SourceChangedError(f"source changed during copy: {task.rel}")
            if readback:
                again = _read_back(outfd, size + 1)
                if len(again) != size or crc.extend(0, again) != crc_value:
                    raise VerificationError(f"staged copy of {task.rel}: checksum mismatch on "
                                            f"re-read")
                verified = True
            elif os.fstat(outfd).st_size != done:
                raise VerificationError(f"staged copy {dst}: wrote {done} bytes, found "
                                        f"{os.fstat(outfd).st_size}")
            if set_mtime:
                os.utime(outfd, ns=(mtime_ns, mtime_ns))
            if set_mode:
                os.fchmod(outfd, st.st_mode & 0o7777)
        finally:
            os.close(outfd)
    finally:
        os.close(infd)
    return size, mtime_ns, done, crc_value, verified


_SMALL_READ = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY  # as open_regular_stat
_SMALL_WRITE = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_WRONLY  # as create_new


class _Unusual(Exception):
    """The fast path met something other than the plain case: the general path redoes it."""


def stage_small_local(tasks: list[Task], ctx: StageContext, *,
                      batched: bool = False) -> Iterator[Outcome | SmallBatch]:
    """Stage a bin of small local files (each up to SMALL_FILE bytes, local -> local), in the
    calling thread, yielding their outcomes; stops before a file the run's deadline passed.

    The plain case in one tight loop of system calls: open the source (O_NOFOLLOW unless
    ``--copy-links``), ``fstat``, one read of one byte more than its size, create the staged
    name afresh (O_EXCL|O_NOFOLLOW: nothing at that name is written through), one write,
    ``fstat`` of both (the source unchanged, every byte in the copy), mtime / mode on the
    descriptor, CRC32C of the bytes in hand; and, for a task whose bin the driver journalled
    as one batch (``self_publish``), the rename into place (the driver records it; a run
    killed before that copies it again). Anything else (an error of any kind, a short
    read, a source that changed, a stale staged name, ``--verify-checksum``, kept
    attributes, ``--bandwidth``) goes to :func:`stage` from the start, which owns every
    error's class, side and retry: this path never reports an error of its own.

    ``batched``: where every task of the bin is ``self_publish``, the compiled loop's
    copies come back as one :class:`SmallBatch` (first), the other files as outcomes."""
    caps = ctx.dst_fs.capabilities
    if (ctx.verify or ctx.attr_kinds or _throttled(ctx) or not ctx.staging
            or not caps.atomic_rename or not local_pair(ctx.src_fs, ctx.dst_fs)):
        for task in tasks:
            if ctx.past_deadline():
                return
            yield stage(task, ctx)
        return
    set_mtime = "times" in ctx.preserve and caps.can_set_mtime
    set_mode = "perms" in ctx.preserve and caps.can_set_mode
    fast = native.fastcopy()
    if fast is not None:
        yield from _stage_small_native(fast, tasks, ctx, set_mtime, set_mode, batched)
        return
    rflags = _SMALL_READ if ctx.copy_links else _SMALL_READ | os.O_NOFOLLOW
    on_bytes = ctx.progress.on_bytes
    extend = crc.extend
    paths = ctx.paths
    deadline = ctx.deadline
    for task in tasks:
        if deadline is not None and time.time() >= deadline:
            return
        try:
            src, final, tmp = paths(task)
            staged = native_path(tmp)  # type: ignore[arg-type]
        except Exception:  # a refused name: the general path reports it
            yield stage(task, ctx)
            continue
        infd = outfd = -1
        try:
            infd = os.open(native_path(src), rflags)
            st = os.fstat(infd)
            size = st.st_size
            if not stat_mod.S_ISREG(st.st_mode) or size > SMALL_FILE:
                raise _Unusual
            os.set_blocking(infd, True)
            outfd = os.open(staged, _SMALL_WRITE, 0o666)
            data = os.read(infd, size + 1)
            if len(data) != size or os.write(outfd, data) != size:
                raise _Unusual
            after = os.fstat(infd)
            if (after.st_size != size or after.st_mtime_ns != st.st_mtime_ns
                    or os.fstat(outfd).st_size != size):
                raise _Unusual
            if set_mtime:
                os.utime(outfd, ns=(st.st_mtime_ns, st.st_mtime_ns))
            if set_mode:
                os.fchmod(outfd, st.st_mode & 0o7777)
            fd, outfd = outfd, -1  # closed even when close reports an error (Linux)
            os.close(fd)
            if task.self_publish:
                os.replace(staged, native_path(final))
        except (OSError, _Unusual):
            # a descriptor is closed once: a second close of its number could close another
            # thread's newly opened file
            for fd in (outfd, infd):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(staged)
            yield stage(task, ctx)
            continue
        os.close(infd)
        value = extend(0, data)
        on_bytes(size)
        yield Outcome(task.seq, task.rel, True, size, st.st_mtime_ns, crc.format_crc32c(value), value,
                      None if task.self_publish else tmp, bytes_moved=size)


RENAME_THREADS = 4  # at most, for a bin's renames over existing files (see rename_threads)


def rename_threads(tasks: list[Task]) -> int:
    """How many threads rename a bin's staged copies into place: one per file this bin
    renames over an existing file (an update it publishes itself), up to
    :data:`RENAME_THREADS`. On ext4 such a rename waits for the start of the new file's
    write-back (``auto_da_alloc``: ~0.2-2 ms, almost no CPU), so a re-sync's updates renamed
    one after another waited for each in turn; a rename to a new name does not wait (a bin of
    new files keeps renaming each right after its copy)."""
    n = sum(1 for t in tasks if t.self_publish and t.action == "update")
    return max(1, min(RENAME_THREADS, n))


def _stage_small_native(fast: Any, tasks: list[Task], ctx: StageContext, set_mtime: bool,
                        set_mode: bool, batched: bool = False) -> Iterator[Outcome | SmallBatch]:
    """:func:`stage_small_local`'s loop in C (native/fastcopy.c ``copy_small``: the same
    system calls, the interpreter lock released for the whole bin). A file it could not copy
    in the plain case (it left nothing at the staged name) goes to :func:`stage`, after the
    bin, unless the run's deadline passed meanwhile (then it is not done, as the rest of a
    bin the deadline stops)."""
    refused: list[Task] = []
    try:
        ctx.staged_names(tasks)  # the bin's paths in one loop (the driver did it when it journalled)
        todo = tasks
    except Exception:  # a refused name: the general path reports it (that file alone)
        todo = []
        for task in tasks:
            try:
                ctx.paths(task)
                todo.append(task)
            except Exception:
                refused.append(task)
    if (ESC in ctx.src_root or ESC in ctx.dst_root
            or ESC in "".join([t.rel for t in todo])):  # names to turn back into bytes
        items = [(native_path(src), native_path(tmp), native_path(final) if t.self_publish else None)  # type: ignore[arg-type]
                 for t in todo for src, final, tmp in (t.paths,)]  # type: ignore[misc]
    else:
        items = [(src, tmp, final if t.self_publish else None)
                 for t in todo for src, final, tmp in (t.paths,)]  # type: ignore[misc]
    renames = rename_threads(todo) if getattr(fast, "has_rename_threads", 0) else 1
    extra = {"rename_threads": renames} if renames > 1 else {}
    results = fast.copy_small(items, ctx.copy_links, set_mtime, set_mode, SMALL_FILE,
                              ctx.deadline, **extra) if items else []  # one copying thread: see copy_small
    on_bytes = ctx.progress.on_bytes
    fmt = crc.format_crc32c
    if batched and all(t.self_publish for t in todo):
        seqs: list[int] = []
        rows: list[tuple[str, str, int, int, str]] = []
        nbytes = 0
        for task, got in zip(todo, results, strict=True):
            if got is None:
                refused.append(task)
            elif got is not False:  # False: not started, the deadline passed (not done)
                size, mtime_ns, value = got
                seqs.append(task.seq)
                rows.append((task.rel, FILE, size, mtime_ns, fmt(value)))
                nbytes += size
        if seqs:
            if ctx.progress is not NO_PROGRESS:  # per file, as the outcomes' were
                for row in rows:
                    on_bytes(row[2])
            yield SmallBatch(seqs, rows, nbytes)
    else:
        for task, got in zip(todo, results, strict=True):
            if got is None:
                refused.append(task)
                continue
            if got is False:  # not started: the deadline passed (the report lists it as not done)
                continue
            size, mtime_ns, value = got
            on_bytes(size)
            yield Outcome(task.seq, task.rel, True, size, mtime_ns, fmt(value), value,
                          None if task.self_publish else task.paths[2], bytes_moved=size)  # type: ignore[index]
    for task in refused:
        if ctx.past_deadline():
            return
        yield stage(task, ctx)


def _read_back(fd: int, n: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    return _read_upto(fd, n)


VERIFY_CHUNK = 8 << 20  # bigger pieces cost more in fresh buffers than they save (measured: 32 MiB 2x CPU)
# each piece is read back in reads of this size: the bytes are still in the core's L2 cache
# (2 MiB a core here) when their CRC32C runs, where an 8 MiB read has left them for memory
# (read + CRC32C of 2 GiB, one side: 0.42-0.47 s CPU, 8 MiB reads 0.51-0.66). Not below
# 1 MiB: google-crc32c releases the interpreter lock only for bytes of at least 1 MiB.
VERIFY_READ = 1 << 20
# the compiled check (native/fastcopy.c verify_range) reads both sides in reads of this size
# into one reused buffer (2 x this) per file, compares them and hashes the source's bytes
VERIFY_NATIVE_READ = 256 << 10


def _kernel_copy_verified(ctx: StageContext, infd: int, outfd: int, size: int,
                          rel: str) -> tuple[int, int]:
    """Kernel copy in VERIFY_CHUNK pieces at explicit offsets, each piece checked while the
    kernel copies the next: a helper thread reads the piece back from both the source and
    the staged copy (both in the page cache by then) and compares them, so the check costs
    no read after the copy (the overlap the issue asked for; measured against a copy
    followed by a re-read). With the compiled part the check is one GIL-free call a piece
    (:func:`_check_piece_native`: reused buffers, a byte comparison, the CRC32C of the
    source's bytes), else VERIFY_READ reads hashed by google-crc32c on both sides
    (:func:`_check_piece_python`). Returns ``(bytes moved, CRC32C of the source)``; raises
    VerificationError naming the bytes of a piece that differs (a source rewritten
    meanwhile, or a bad write)."""
    from concurrent.futures import ThreadPoolExecutor

    fast = native.fastcopy()
    # a build of native/fastcopy.c older than verify_range (not rebuilt since): the Python check
    verify_range = getattr(fast, "verify_range", None)
    if verify_range is not None:
        check = functools.partial(_check_piece_native, verify_range,
                                  bytearray(2 * VERIFY_NATIVE_READ + 4096))
    else:
        check = _check_piece_python
    sums = [0, 0]  # running CRC32C of the source (and of the staged copy): the helper's alone

    done = 0
    piece = min(VERIFY_CHUNK, ctx.chunk_size) if _throttled(ctx) else VERIFY_CHUNK
    pending = None  # the piece being checked (one at a time, in order)
    with ThreadPoolExecutor(1, thread_name_prefix="crc") as helper:
        while done < size:
            n = _copy_at(infd, outfd, done, min(piece, size - done))
            if pending is not None:
                pending.result()
            pending = None
            if n == 0:
                break  # the source shrank: refused by the caller
            pending = helper.submit(check, sums, infd, outfd, done, n, rel)
            done += n
            if ctx.throttle:
                ctx.throttle.consume(n)
            ctx.progress.on_bytes(n)
            ctx.check_deadline()
        if pending is not None:
            pending.result()
    return done, sums[0]


def _check_piece_python(sums: list[int], infd: int, outfd: int, offset: int, n: int,
                        rel: str) -> None:
    """Bytes ``offset .. offset + n`` of both files in VERIFY_READ reads, each side's running
    CRC32C in ``sums``; a read whose CRCs part is named in the VerificationError."""
    end = offset + n
    while offset < end:
        k = min(VERIFY_READ, end - offset)
        sums[0] = crc.extend(sums[0], os.pread(infd, k, offset))
        sums[1] = crc.extend(sums[1], os.pread(outfd, k, offset))
        if sums[0] != sums[1]:  # equal up to the last read: this read differs
            raise VerificationError(f"staged copy of {rel}: checksum mismatch on re-read "
                                    f"(bytes {offset}-{offset + k})")
        offset += k


def _check_piece_native(verify_range: Any, scratch: bytearray, sums: list[int], infd: int,
                        outfd: int, offset: int, n: int, rel: str) -> None:
    """:func:`_check_piece_python` in one call of native/fastcopy.c ``verify_range`` (the
    interpreter lock released): the staged bytes compared with the source's, which extend
    the source's CRC32C in ``sums[0]``; the first byte that differs is named."""
    sums[0], bad = verify_range(infd, outfd, offset, n, sums[0], scratch)
    if bad >= 0:
        raise VerificationError(f"staged copy of {rel}: checksum mismatch on re-read "
                                f"(bytes {bad}-{bad + 1}, the first that differs)")


def _throttled(ctx: StageContext) -> bool:
    """``--bandwidth`` is set: bytes move in chunk-sized steps, each charged as it moves."""
    return ctx.throttle is not None and ctx.throttle.rate is not None


def _copy_at(infd: int, outfd: int, offset: int, n: int) -> int:
    """Up to ``n`` bytes from ``offset`` of ``infd`` to the same offset of ``outfd``."""
    moved = 0
    while moved < n:
        try:
            k = os.copy_file_range(infd, outfd, n - moved, offset + moved, offset + moved)
        except OSError:
            data = os.pread(infd, n - moved, offset + moved)  # no copy_file_range here
            k = os.pwrite(outfd, data, offset + moved) if data else 0
        if k == 0:
            break
        moved += k
    return moved


def _kernel_copy(ctx: StageContext, infd: int, outfd: int, size: int) -> int:
    """Copy ``infd`` to ``outfd`` in the kernel; returns the bytes moved."""
    done = 0
    step = ctx.chunk_size if _throttled(ctx) else max(ctx.chunk_size, 64 << 20)
    while done < size or size == 0:
        try:
            n = os.copy_file_range(infd, outfd, step)
        except OSError:
            n = os.sendfile(outfd, infd, None, step)
        if n == 0:
            break
        done += n
        if ctx.throttle:
            ctx.throttle.consume(n)  # charge what moved, after the fact
        ctx.progress.on_bytes(n)
    return done


def _stage_file(task: Task, ctx: StageContext) -> Outcome:
    src, final, tmp = ctx.paths(task)
    dst_fs = ctx.dst_fs
    crc_value: int | None = None
    if tmp is not None and local_pair(ctx.src_fs, dst_fs):
        # the source's stat, and the times and mode set on the staged copy, all through the
        # open descriptors; verified by CRC32C where asked
        caps = dst_fs.capabilities
        try:
            size0, mtime0, written, crc_value, verified = _copy_local(
                ctx, task, src, tmp, final=final,
                set_mtime="times" in ctx.preserve and caps.can_set_mtime,
                set_mode="perms" in ctx.preserve and caps.can_set_mode)
            if ctx.attr_kinds:
                attrs = _source_attrs(ctx, task)
                if attrs:
                    dst_fs.set_attributes(tmp, attrs)
        except BaseException:
            _quiet_delete(dst_fs, tmp)
            raise
        return Outcome(task.seq, task.rel, ok=True, size=size0, mtime_ns=mtime0,
                       checksum=crc.format_crc32c(crc_value) if crc_value is not None else None,
                       crc=crc_value, tmp=tmp, bytes_moved=written, verified=verified)
    size0, mtime0, mode0 = _source_stat(ctx, task)
    mode = mode0 if mode0 is not None else task.mode
    try:
        expect = task.dst_version if task.action == "update" else "0"
        attrs = _source_attrs(ctx, task)
        kw = {"blocksize": attrs["blocksize"]} if "blocksize" in attrs else {}
        with _on("destination", dst_fs, final):
            writer = dst_fs.open_write(tmp or final, mtime_ns=mtime0, expect_version=expect, **kw)
        crc_value, written = 0, 0
        try:
            for data in _chunks(ctx, src, 0, None):
                crc_value = crc.extend(crc_value, data)
                written += len(data)
                with _on("destination", dst_fs, final):
                    writer.write(data)
            # checked before close(): on object stores close() is what publishes
            _check_unchanged(ctx, task, written, size0, mtime0)
        except BaseException:
            writer.abort()
            raise
        with _on("destination", dst_fs, final):
            writer.close()
            verified = _verify_staged(ctx, tmp or final, size0, crc_value, task.rel)
            if tmp is not None:
                _apply_attrs(ctx, tmp, mtime0, mode, attrs)
    except BaseException:
        if tmp is not None:
            _quiet_delete(dst_fs, tmp)
        raise
    return Outcome(task.seq, task.rel, ok=True, size=size0, mtime_ns=mtime0,
                   checksum=crc.format_crc32c(crc_value) if crc_value is not None else None,
                   crc=crc_value, tmp=tmp, bytes_moved=written, verified=verified)


def _verify_staged(ctx: StageContext, staged: str, size: int, crc_value: int | None, rel: str) -> bool:
    """Raise VerificationError unless the staged copy has ``size`` bytes and, where known,
    the CRC32C of what was read. Returns True when the content was compared by checksum
    (the store's own CRC32C, or a re-read when ``ctx.verify``), False for size only."""
    info = ctx.dst_fs.stat(staged)

    def mismatch(text: str) -> VerificationError:
        err = VerificationError(f"staged copy of {rel}: {text}")
        if info is not None and not ctx.dst_fs.capabilities.atomic_rename:
            err.version = info.version  # written in place: the retry replaces this object
        return err

    if info is None or info.size != size:
        got = "nothing" if info is None else f"{info.size} bytes"
        raise mismatch(f"expected {size} bytes, found {got}")
    if crc_value is None:
        return False
    stored = info.checksum if info.checksum and info.checksum.startswith("crc32c:") else None
    caps = ctx.dst_fs.capabilities
    if stored is None and "crc32c" in caps.hash_kinds and not caps.checksum_in_stat:
        stored = ctx.dst_fs.checksum(staged, "crc32c")  # HDFS: COMPOSITE-CRC32C, one call
    if stored:
        if stored != crc.format_crc32c(crc_value):
            raise mismatch(f"store checksum {stored} != {crc.format_crc32c(crc_value)}")
        if not ctx.checksum:
            return True
    if not ctx.verify:
        return False
    again = crc.file_crc32c(ctx.dst_fs, staged, ctx.chunk_size)
    if again != crc_value:
        raise mismatch("checksum mismatch on re-read")
    return True


def _quiet_delete(fs: FileSystem, path: str) -> None:
    try:
        fs.delete_file(path)
    except Exception:
        pass


def _stage_range(task: Task, ctx: StageContext) -> Outcome:
    index, offset, length = task.part  # type: ignore[misc]
    src = ctx.src_path(task.rel)
    crc_value = 0
    moved = 0

    def counted() -> Iterator[bytes]:
        nonlocal crc_value, moved
        for data in _chunks(ctx, src, offset, length):
            crc_value = crc.extend(crc_value, data)
            moved += len(data)
            yield data

    with _on("destination", ctx.dst_fs, ctx.dst_path(task.rel)):
        part = ctx.dst_fs.write_part(task.handle or {}, index, offset, counted())
    if moved != length:
        raise SourceChangedError(f"source changed during copy: {task.rel} (range {index} short)")
    part = dict(part)
    part.update({"index": index, "offset": offset, "length": length, "crc": crc_value})
    return Outcome(task.seq, task.rel, ok=True, size=task.size, mtime_ns=task.mtime_ns,
                   crc=crc_value, part=part, bytes_moved=moved)


def finish_ranges(task: Task, parts: list[dict], ctx: StageContext) -> Outcome:
    """Driver side, after every range of a file landed: check the source, assemble, verify.

    The source is re-checked *before* the parts are assembled: on object stores completing
    (compose, CompleteMultipartUpload) is what publishes, so ranges read from a source that
    changed meanwhile are discarded unseen instead of leaving a torn object in place."""
    tmp = ctx.staged_path(task.rel)
    parts = sorted(parts, key=lambda p: p["index"])
    try:
        value = parts[0]["crc"]
        for p in parts[1:]:
            value = crc.combine(value, p["crc"], p["length"])
        size1, mtime1, mode = _source_stat(ctx, task)
        if size1 != task.size or mtime1 != task.mtime_ns:
            raise SourceChangedError(f"source changed during copy: {task.rel}")
        _check_not_being_written(ctx, task)
        with _on("destination", ctx.dst_fs, ctx.dst_path(task.rel)):
            ctx.dst_fs.complete_parallel_write(task.handle or {}, parts)
            verified = _verify_staged(ctx, tmp or ctx.dst_path(task.rel), task.size, value, task.rel)
            if tmp is not None:
                _apply_attrs(ctx, tmp, task.mtime_ns, mode)
    except Exception as exc:
        try:
            ctx.dst_fs.abort_parallel_write(task.handle or {})
        except Exception:
            pass
        return Outcome(task.seq, task.rel, ok=False, error=describe(exc), retryable=is_retryable(exc),
                       side=getattr(exc, "side", None))
    return Outcome(task.seq, task.rel, ok=True, size=task.size, mtime_ns=task.mtime_ns,
                   checksum=crc.format_crc32c(value), crc=value, tmp=tmp, verified=verified)
