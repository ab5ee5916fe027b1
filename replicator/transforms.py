"""Stream transforms on the copy path (Gobblin's converters): ``gunzip``, ``untar``,
``gpg-encrypt=RECIPIENT``, ``gpg-decrypt``, applied in the order given.

Names: each step applies to the names it knows and renames them; a file no step applies
to is copied unchanged by the ordinary path.

============================  =====================  ===================================
step                          applies to             writes
============================  =====================  ===================================
``gunzip``                    ``*.gz``, ``*.tgz``    ``x.csv`` for ``x.csv.gz``, ``x.tar`` for ``x.tgz``
``untar``                     ``*.tar``              the directory ``x/`` for ``x.tar`` (last step only)
``gpg-encrypt=RECIPIENT``     every file             ``x.gpg`` for ``x``
``gpg-decrypt``               ``*.gpg``, ``*.pgp``   ``x`` for ``x.gpg``
============================  =====================  ===================================

Bytes stream through the chain in ``chunk_size`` pieces: gunzip inflates at most a chunk
at a time (a gzip bomb costs no memory), GnuPG runs as a ``gpg --batch`` subprocess fed by
a thread through pipes (keys from ``$GNUPGHOME``; encryption trusts the recipient's key
because it is in that keyring: ``--trust-model always``), tar members are written as they
are read. Memory is bounded by a few chunks per worker, whatever the file size.

Staging and publishing: a file output is staged under a temporary name and renamed (or, on
object stores, written in place and visible only when complete), as any copy. An untar
output is a whole directory: members are expanded into a staged directory
``.rtmp-<run>-x/``; only when every member is written and the tar ended cleanly is it swapped
in (``x/`` -> ``.rtmp-<run>o-x/``, staged -> ``x/``, then the old one removed). A tar that
fails half-way leaves the previous ``x/`` untouched. Both steps go through the journal
(``dir-staging`` / ``dir-swap``) so a crash is finished or rolled back by the next run.
Untar needs a destination that renames (local, HDFS, SFTP).

Tar safety (tar-slip): a member with an absolute name, a ``..`` component, a symlink or
hard link pointing outside the archive, a device or FIFO fails the file. Symlinks inside
the archive fail it too (no back end here stores them); a hard link to an earlier member
is written as a copy of it.

Manifest: a transformed source is recorded with kind ``t`` (so the plain diff never takes
it for a plain copy) and the CRC32C of the source bytes; each output file is recorded under
its own name with the CRC32C of the written bytes (an untar directory under ``x`` with kind
``d`` and one row per member). A rerun skips a source whose size and mtime match its record
while its output is recorded (and, when the destination is listed, present). ``verify
--transform`` checks the source against the recorded source checksum and the destination
against the recorded written checksums.
"""

from __future__ import annotations

import logging
import posixpath
import random
import shutil
import subprocess
import tarfile
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from replicator import checksum as crc
from replicator.errors import ReplicatorError, SourceReadError, UsageError, describe, is_retryable
from replicator.filesystems.base import DIR, FILE, FileSystem
from replicator.filesystems.local import text_path
from replicator.progress import NO_PROGRESS, Progress
from replicator.transfer import (
    StageContext,
    Task,
    _check_unchanged,
    _chunks,
    _quiet_delete,
    _source_stat,
    temp_name,
)

if TYPE_CHECKING:
    from replicator.state import Scratch, StateStore

log = logging.getLogger("replicator")

GUNZIP, UNTAR, GPG_ENCRYPT, GPG_DECRYPT = "gunzip", "untar", "gpg-encrypt", "gpg-decrypt"
STEPS = (GUNZIP, UNTAR, GPG_ENCRYPT, GPG_DECRYPT)
TRANSFORMED = "t"  # manifest / listing kind of a source that goes through the chain
OWNED = "o"  # listing kind of a destination path that is a transform's output
DIR_STAGING, DIR_SWAP = "dir-staging", "dir-swap"  # journal states of an untar output


class TransformError(ReplicatorError):
    """The data did not survive a transform (corrupt gzip, bad tar, gpg refused). The file
    fails alone; retrying cannot help."""


@dataclass(frozen=True, slots=True)
class Step:
    kind: str
    arg: str | None = None

    def __str__(self) -> str:
        return f"{self.kind}={self.arg}" if self.arg else self.kind

    def rename(self, name: str) -> str | None:
        """The name this step writes for ``name``, or None when it does not apply."""
        low = name.lower()
        if self.kind == GUNZIP:
            if low.endswith(".tgz") and len(name) > 4:
                return name[:-4] + ".tar"
            return name[:-3] if low.endswith(".gz") and len(name) > 3 else None
        if self.kind == UNTAR:
            return name[:-4] if low.endswith(".tar") and len(name) > 4 else None
        if self.kind == GPG_DECRYPT:
            return name[:-4] if low.endswith((".gpg", ".pgp")) and len(name) > 4 else None
        return name + ".gpg"  # encrypt: every file


def parse_chain(specs: Iterable[str]) -> tuple[Step, ...]:
    """``("gunzip", "gpg-encrypt=ops@example.com")`` -> steps; refuses what cannot run."""
    steps: list[Step] = []
    for spec in specs:
        kind, eq, arg = str(spec).strip().partition("=")
        kind = kind.strip().lower()
        if kind not in STEPS:
            raise UsageError(f"--transform: unknown {spec!r}; expected one of gunzip, untar, "
                             "gpg-encrypt=RECIPIENT, gpg-decrypt")
        if kind == GPG_ENCRYPT:
            arg = arg.strip()
            if not arg or arg.startswith("-") or any(c.isspace() or c == "\x00" for c in arg):
                raise UsageError(f"--transform {spec!r}: expected gpg-encrypt=RECIPIENT (a key id, "
                                 "fingerprint or e-mail address of a key in $GNUPGHOME)")
        elif eq:
            raise UsageError(f"--transform {spec!r}: {kind} takes no argument")
        if steps and steps[-1].kind == UNTAR:
            raise UsageError("--transform untar must be the last step (it writes a directory)")
        steps.append(Step(kind, arg if kind == GPG_ENCRYPT else None))
    if any(s.kind in (GPG_ENCRYPT, GPG_DECRYPT) for s in steps) and shutil.which("gpg") is None:
        raise UsageError("--transform gpg-*: the gpg program (GnuPG) is not installed")
    return tuple(steps)


def plan_output(rel: str, chain: tuple[Step, ...]) -> tuple[str, bool, tuple[Step, ...]] | None:
    """``(output rel, output is a directory, steps that apply)``, or None when no step
    applies to ``rel`` (it is copied unchanged)."""
    head, name = posixpath.split(rel)
    applied: list[Step] = []
    for step in chain:
        new = step.rename(name)
        if new is not None:
            name = new
            applied.append(step)
    if not applied:
        return None
    return posixpath.join(head, name) if head else name, applied[-1].kind == UNTAR, tuple(applied)


# --------------------------------------------------------------------------- streams
def _gunzip(chunks: Iterator[bytes], rel: str, limit: int) -> Iterator[bytes]:
    """Inflate gzip (every member of a multi-member file), at most ``limit`` bytes a step.
    NUL padding after the last member is ignored (as gzip(1) does); other trailing bytes
    must be another gzip member."""
    d = zlib.decompressobj(wbits=31)
    fed = seen = False
    try:
        for data in chunks:
            while data:
                if not fed and not data.strip(b"\0") and seen:
                    break  # padding after a complete member
                fed = seen = True
                out = d.decompress(data, limit)
                if out:
                    yield out
                while d.unconsumed_tail:
                    out = d.decompress(d.unconsumed_tail, limit)
                    if out:
                        yield out
                if d.eof:
                    data = d.unused_data
                    d = zlib.decompressobj(wbits=31)  # another member may follow
                    fed = False
                else:
                    data = b""
    except zlib.error as exc:
        raise TransformError(f"gunzip {rel}: not valid gzip data ({exc})") from None
    if not seen:
        raise TransformError(f"gunzip {rel}: empty file, not gzip data")
    if fed:
        raise TransformError(f"gunzip {rel}: truncated gzip data (unexpected end of file)")


class _Pipe:
    """Feeds ``chunks`` to a subprocess's stdin from a thread and yields its stdout."""

    def __init__(self, argv: list[str], chunks: Iterator[bytes], label: str, read_size: int) -> None:
        self.argv, self.chunks, self.label, self.read_size = argv, chunks, label, read_size
        self.feed_error: BaseException | None = None
        self.stderr = b""

    def __iter__(self) -> Iterator[bytes]:
        proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

        def feed() -> None:
            try:
                for data in self.chunks:
                    proc.stdin.write(data)  # type: ignore[union-attr]
            except BrokenPipeError:
                pass  # gpg stopped reading: its exit status says why
            except BaseException as exc:
                self.feed_error = exc
            finally:
                try:
                    proc.stdin.close()  # type: ignore[union-attr]
                except OSError:
                    pass

        def drain_err() -> None:
            tail = b""
            for line in proc.stderr:  # type: ignore[union-attr]
                tail = (tail + line)[-4000:]
            self.stderr = tail

        threads = [threading.Thread(target=feed, daemon=True, name="transform-feed"),
                   threading.Thread(target=drain_err, daemon=True, name="transform-stderr")]
        for t in threads:
            t.start()
        finished = False
        try:
            while True:
                data = proc.stdout.read1(self.read_size)  # type: ignore[union-attr]
                if not data:
                    break
                yield data
            finished = True
        finally:
            if not finished:
                proc.kill()
            proc.stdout.close()  # type: ignore[union-attr]
            rc = proc.wait()
            for t in threads:
                t.join()
        if self.feed_error is not None:
            raise self.feed_error
        if rc != 0:
            msg = self.stderr.decode("utf-8", "replace").strip().splitlines()
            detail = "; ".join(line.removeprefix("gpg: ") for line in msg[-3:]) or f"exit status {rc}"
            raise TransformError(f"{self.label}: gpg failed: {detail}")


def _gpg(step: Step, chunks: Iterator[bytes], rel: str, read_size: int) -> Iterator[bytes]:
    # never ask for a passphrase (no one is there to type it): a protected key fails the file
    argv = ["gpg", "--batch", "--no-tty", "--quiet", "--yes", "--pinentry-mode", "error", "--output", "-"]
    if step.kind == GPG_ENCRYPT:
        argv += ["--trust-model", "always", "--encrypt", "--recipient", step.arg or ""]
    else:
        argv += ["--decrypt"]
    return iter(_Pipe(argv, chunks, f"{step} {rel}", read_size))


def apply_steps(steps: tuple[Step, ...], chunks: Iterator[bytes], rel: str,
                chunk_size: int) -> Iterator[bytes]:
    """The chain as nested generators (untar excluded: it is a sink)."""
    for step in steps:
        if step.kind == GUNZIP:
            chunks = _gunzip(chunks, rel, chunk_size)
        elif step.kind in (GPG_ENCRYPT, GPG_DECRYPT):
            chunks = _gpg(step, chunks, rel, chunk_size)
    return chunks


class _IterReader:
    """A read-only file object over an iterator of chunks (what ``tarfile``'s stream mode
    needs). Each read copies only the bytes it returns."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._it = chunks
        self._buf = b""
        self._pos = 0
        self._eof = False

    def read(self, n: int = -1) -> bytes:
        parts: list[bytes] = []
        while n != 0:
            if self._pos >= len(self._buf):
                if self._eof:
                    break
                try:
                    self._buf, self._pos = next(self._it), 0
                except StopIteration:
                    self._eof = True
                continue
            end = len(self._buf) if n < 0 else min(len(self._buf), self._pos + n)
            parts.append(self._buf[self._pos:end])
            if n > 0:
                n -= end - self._pos
            self._pos = end
        return b"".join(parts)

    def drain(self) -> None:
        """Read to the end (so the source is read whole and its size and checksum checked)."""
        self._buf, self._pos = b"", 0
        for _ in self._it:
            pass
        self._eof = True


def safe_member_name(name: str, rel: str) -> str:
    """A tar member's name as a relative path, or TransformError (tar-slip)."""
    if name.startswith("/") or "\x00" in name:
        raise TransformError(f"untar {rel}: member {name!r} has an absolute path; refused")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise TransformError(f"untar {rel}: member {text_path(name)!r} escapes the directory ('..'); refused")
    return text_path("/".join(parts))  # a name that is not UTF-8: as the engine spells one


# --------------------------------------------------------------------------- one file
@dataclass(slots=True)
class Job:
    seq: int
    rel: str  # source path
    out: str  # output path (a directory for untar)
    is_dir: bool
    steps: tuple[Step, ...]
    size: int
    mtime_ns: int
    mode: int | None
    action: str = "copy"
    tmp: str | None = None  # staged file or directory


@dataclass(slots=True)
class Result:
    job: Job
    ok: bool
    error: str | None = None
    retryable: bool = False
    src_checksum: str | None = None
    # (rel, size, mtime, crc, whether its CRC32C was checked after writing)
    outputs: list[tuple[str, int, int, str, bool]] = field(default_factory=list)
    bytes_read: int = 0


def run_job(job: Job, ctx: StageContext) -> Result:
    """Transform one source file into its staged output, with retries for retryable errors.
    On failure, whatever was staged is removed."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return _run_job(job, ctx)
        except Exception as exc:
            if job.tmp is not None and job.is_dir:
                remove_tree(ctx.dst_fs, job.tmp)
            elif job.tmp is not None:
                _quiet_delete(ctx.dst_fs, job.tmp)
            retryable = is_retryable(exc) and not isinstance(exc, TransformError)
            if retryable and attempt <= ctx.retries:
                time.sleep(ctx.retry_backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random()))
                continue
            if isinstance(exc, PermissionError):
                exc = SourceReadError(f"cannot read {job.rel}: permission denied")
            return Result(job, ok=False, error=describe(exc), retryable=retryable)


def _run_job(job: Job, ctx: StageContext) -> Result:
    task = Task(job.seq, job.rel, job.action, job.size, job.mtime_ns, job.mode)
    size0, mtime0, _ = _source_stat(ctx, task)
    src_crc = 0
    read = 0

    def source() -> Iterator[bytes]:
        nonlocal src_crc, read
        for data in _chunks(ctx, ctx.src_path(job.rel), 0, None):
            src_crc = crc.extend(src_crc, data)
            read += len(data)
            yield data

    stream = apply_steps(job.steps, source(), job.rel, ctx.chunk_size)
    times = "times" in ctx.preserve and ctx.dst_fs.capabilities.can_set_mtime
    if job.is_dir:
        outputs = _expand_tar(job, ctx, _IterReader(stream), times)
    else:
        outputs = [_write_file(job, ctx, stream, mtime0, times)]
    _check_unchanged(ctx, task, read, size0, mtime0)
    return Result(job, ok=True, src_checksum=crc.format_crc32c(src_crc), outputs=outputs, bytes_read=read)


def _write_out(ctx: StageContext, path: str, rel: str, chunks: Iterable[bytes], mtime_ns: int,
               set_times: bool) -> tuple[str, int, int, str, bool]:
    """Write one output from ``chunks`` (aborted on any error), verify it, set its mtime:
    ``(rel, size, mtime_ns, crc32c, whether the CRC32C was checked)``."""
    writer = ctx.dst_fs.open_write(path, mtime_ns=mtime_ns)
    value, size = 0, 0
    try:
        for data in chunks:
            value = crc.extend(value, data)
            size += len(data)
            writer.write(data)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    checked = _verify_written(ctx, path, size, value, rel)
    if set_times:
        ctx.dst_fs.set_times(path, mtime_ns)
    return rel, size, mtime_ns, crc.format_crc32c(value), checked


def _write_file(job: Job, ctx: StageContext, stream: Iterator[bytes], mtime_ns: int,
                times: bool) -> tuple[str, int, int, str, bool]:
    return _write_out(ctx, job.tmp or ctx.dst_path(job.out), job.out, stream, mtime_ns,
                      times and job.tmp is not None)


def _verify_written(ctx: StageContext, path: str, size: int, value: int, rel: str) -> bool:
    """Check a written output's size, and its CRC32C where the store reports one or the run
    re-reads (``--checksum`` / ``--verify-checksum``). Returns whether a CRC32C was checked."""
    from replicator.errors import VerificationError

    info = ctx.dst_fs.stat(path)
    if info is None or info.size != size:
        got = "nothing" if info is None else f"{info.size} bytes"
        raise VerificationError(f"staged output {rel}: expected {size} bytes, found {got}")
    store_crc = bool(info.checksum and info.checksum.startswith("crc32c:"))
    if store_crc and info.checksum != crc.format_crc32c(value):
        raise VerificationError(f"staged output {rel}: store checksum {info.checksum} != "
                                f"{crc.format_crc32c(value)}")
    if ctx.verify and not store_crc:
        if crc.file_crc32c(ctx.dst_fs, path, ctx.chunk_size) != value:
            raise VerificationError(f"staged output {rel}: checksum mismatch on re-read")
        return True
    return store_crc


def _expand_tar(job: Job, ctx: StageContext, reader: _IterReader,
                times: bool) -> list[tuple[str, int, int, str, bool]]:
    fs, staged = ctx.dst_fs, job.tmp or ""
    fs.makedirs(staged)
    written: dict[str, tuple[str, int, int, str, bool]] = {}
    try:
        archive = tarfile.open(fileobj=reader, mode="r|")  # type: ignore[arg-type]  # noqa: SIM115
    except tarfile.TarError as exc:
        raise TransformError(f"untar {job.rel}: not a tar archive ({exc})") from None
    try:
        for member in archive:
            name = safe_member_name(member.name, job.rel)
            if not name:
                continue  # "./" itself
            path = fs.join(staged, name)
            if member.isdir():
                fs.makedirs(path)
                continue
            if member.issym():
                target = member.linkname
                inside = not target.startswith("/") and not posixpath.normpath(
                    posixpath.join(posixpath.dirname(name), target)).startswith("..")
                what = "a symlink" + ("" if inside else " pointing outside the archive")
                raise TransformError(f"untar {job.rel}: member {name!r} is {what} ({target!r}); "
                                     "links are not expanded; refused")
            if member.islnk():
                target = safe_member_name(member.linkname, job.rel)
                if target not in written:
                    raise TransformError(f"untar {job.rel}: member {name!r} is a hard link to "
                                         f"{member.linkname!r}, not an earlier file of the archive; refused")
                chunks: Iterator[bytes] = fs.read_chunks(fs.join(staged, target), 0, None, ctx.chunk_size)
            elif member.isreg():
                f = archive.extractfile(member)
                assert f is not None
                chunks = iter(lambda f=f: f.read(ctx.chunk_size), b"")
            else:
                raise TransformError(f"untar {job.rel}: member {name!r} is a device or FIFO; refused")
            written[name] = _write_out(ctx, path, f"{job.out}/{name}", chunks,
                                       int(member.mtime) * 1_000_000_000, times)
        reader.drain()
    except tarfile.TarError as exc:
        raise TransformError(f"untar {job.rel}: corrupt or truncated tar ({exc})") from None
    finally:
        archive.close()
    return list(written.values())


def remove_tree(fs: FileSystem, path: str) -> None:
    """Remove a directory and everything under it (a missing one is fine)."""
    info = fs.stat(path)
    if info is None:
        return
    if info.kind != DIR:
        fs.delete_file(path)
        return
    for child in fs.list_dir(path):
        if child.kind == DIR:
            remove_tree(fs, child.path)
        else:
            fs.delete_file(child.path)
    fs.delete_dir(path)


def aside_name(final: str, run_id: str) -> str:
    """Where the previous copy of an untar directory waits while the new one is swapped in."""
    return temp_name(final, f"{run_id}o")


def swap_dir(fs: FileSystem, staged: str, final: str, run_id: str) -> None:
    """Put the staged directory at ``final``; the previous one is removed only after.
    Idempotent, so recovery can call it again after a crash at any point."""
    old = aside_name(final, run_id)
    if fs.stat(staged) is not None:
        if fs.stat(final) is not None:
            if fs.stat(old) is not None:
                remove_tree(fs, old)
            fs.rename(final, old)
        fs.rename(staged, final)
    remove_tree(fs, old)


def recover_dir(fs: FileSystem, final: str, tmp: str | None, state: str, run_id: str) -> None:
    """Journal recovery of an untar output: a staging directory is removed (the previous
    copy never moved); a swap is finished. The caller forgets the record, so the next run
    expands the archive again."""
    if not tmp:
        return
    if state == DIR_STAGING:
        remove_tree(fs, tmp)
        old = aside_name(final, run_id)
        if fs.stat(old) is not None and fs.stat(final) is None:
            fs.rename(old, final)
    else:
        swap_dir(fs, tmp, final, run_id)


# --------------------------------------------------------------------------- the run
class TransformPass:
    """The engine's hook: picks the transformed files out of the source listing, guards
    their outputs from the plain diff and the deletes, then copies them through the chain.

    The driver calls :meth:`divert` after both listings and the manifest snapshot (before
    the diff) and :meth:`run` after the plain transfers (before deletes). Its tables live
    in the run's private scratch database; the durable store is written through its
    methods only, by the driver."""

    def __init__(self, chain: tuple[Step, ...], store: StateStore, scratch: Scratch, pair_id: int,
                 ctx: StageContext, *, dst_listed: bool, precision_ns: int, workers: int) -> None:
        self.chain, self.store, self.scratch, self.pair_id, self.ctx = chain, store, scratch, pair_id, ctx
        self.dst_listed, self.precision_ns, self.workers = dst_listed, precision_ns, workers
        self.failures: list[tuple[str, str]] = []

    # ---------------------------------------------------------------- divert
    def divert(self) -> None:
        scratch = self.scratch
        scratch.plan_transformed(lambda path: plan_output(path, self.chain))
        if not self.ctx.dst_fs.capabilities.atomic_rename:
            for path in scratch.transformed_dirs():
                self._refuse(path, f"untar {path}: the destination cannot rename; untar needs a "
                                   "local, HDFS or SFTP destination")
        # an output name that is also a source path (or two sources with one output) fails
        for path, out in scratch.transform_clashes():
            self._refuse(path, f"{path}: its transformed name {out} is also another source path; "
                               "neither is written")
        # the plain diff skips transformed sources (held) and never adopts them; outputs
        # (and everything under an untar directory) are ours: not compared, not deleted
        scratch.divert_transformed(TRANSFORMED, OWNED, self.dst_listed)

    def plan_deletes(self, actions: list | None = None, cap: int = 10_000) -> int:
        """With ``--delete``: a destination file at a transformed source's own name (a plain
        copy made before the chain was set) is no output of anything: delete it. Adds the
        rows to the run's work list (after :meth:`divert` and the plain diff); returns how many."""
        rows = self.scratch.transformed_source_deletes()
        if rows:
            self.scratch.add_work(rows)
        if actions is not None:  # a dry run lists them with the other work
            actions.extend({"action": "delete", "path": r[1], "kind": r[2], "size": r[3]}
                           for r in rows[:max(0, cap - len(actions))])
        return len(rows)

    def _refuse(self, path: str, error: str) -> None:
        self.failures.append((path, error))
        self.scratch.drop_transform_output(path)  # still diverted (never copied plainly)

    # ---------------------------------------------------------------- decide
    def decisions(self) -> Iterator[Job]:
        """Jobs for the transformed sources that changed or whose output is missing."""
        cur = self.scratch.transform_rows(self.dst_listed)
        by_name = {str(s): s for s in self.chain}
        seq = 0
        for (path, out, is_dir, steps, held, size, mtime, mode, f_kind, f_size, f_mtime, f_sum,
             out_kind, dst_kind) in cur:
            if held:
                continue  # --min-age / --max-age: left alone
            want_kind = DIR if is_dir else FILE
            recorded = (f_kind == TRANSFORMED and f_size == size
                        and abs(f_mtime - mtime) < max(self.precision_ns, 1)
                        and out_kind == want_kind)
            present = not self.dst_listed or dst_kind == want_kind
            if recorded and present and self.ctx.checksum:
                recorded = f_sum == crc.format_crc32c(
                    crc.file_crc32c(self.ctx.src_fs, self.ctx.src_path(path), self.ctx.chunk_size))
            if recorded and present:
                yield Job(-1, path, out, bool(is_dir), (), size, mtime, mode, action="skip")
                continue
            seq += 1
            action = "update" if (f_kind is not None or dst_kind is not None) else "copy"
            yield Job(seq, path, out, bool(is_dir), tuple(by_name[s] for s in steps.split(",")),
                      size, mtime, mode, action=action)

    def _recorded_under(self, out: str) -> list[str]:
        return self.scratch.recorded_under(out)

    # ---------------------------------------------------------------- execute
    def run(self, report, progress: Progress = NO_PROGRESS, *, dry_run: bool = False,
            listed_cap: int = 10_000) -> None:
        for path, error in self.failures:
            report.add_failure(path, error)
        ctx = self.ctx
        in_flight: set[Future] = set()
        jobs = list(self.decisions())  # the scratch cursor is done before the store is written
        if not dry_run:
            todo = [j for j in jobs if j.action != "skip"]
            progress.on_plan(len(todo), sum(j.size for j in todo))  # totals add up
        with ThreadPoolExecutor(self.workers, thread_name_prefix="transform") as pool:
            for job in jobs:
                if job.action == "skip":
                    report.files_skipped += 1
                    continue
                if dry_run:
                    report.files_copied += 1
                    report.files_updated += job.action == "update"
                    report.bytes_copied += job.size
                    if len(report.actions) < listed_cap:
                        report.actions.append({"action": job.action, "path": job.rel, "kind": FILE,
                                               "size": job.size, "to": job.out + ("/" if job.is_dir else "")})
                    continue
                job.tmp = (temp_name(ctx.dst_path(job.out), ctx.run_id)
                           if ctx.dst_fs.capabilities.atomic_rename else None)
                self.store.journal_mark(self.pair_id, ctx.run_id, job.out,
                                        DIR_STAGING if job.is_dir else "staging", job.tmp)
                in_flight.add(pool.submit(run_job, job, ctx))
                if len(in_flight) >= 2 * self.workers:
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    for fut in done:
                        self._publish(fut.result(), report, progress)
            for fut in in_flight:
                self._publish(fut.result(), report, progress)

    def _publish(self, res: Result, report, progress) -> None:
        job, store, fs = res.job, self.store, self.ctx.dst_fs
        final = self.ctx.dst_path(job.out)
        if res.ok:
            try:
                if job.is_dir:
                    store.journal_mark(self.pair_id, self.ctx.run_id, job.out, DIR_SWAP, job.tmp)
                    swap_dir(fs, job.tmp or "", final, self.ctx.run_id)
                else:
                    _, size, mtime, value, _checked = res.outputs[0]
                    store.journal_staged(self.pair_id, [(job.out, size, mtime, value)])
                    if job.tmp is not None:
                        fs.rename(job.tmp, final)
            except Exception as exc:
                res = Result(job, ok=False, error=describe(exc))
                if job.tmp is not None and not job.is_dir:
                    _quiet_delete(fs, job.tmp)
        if res.ok:
            rows = [(job.rel, TRANSFORMED, job.size, job.mtime_ns, res.src_checksum)]
            stale: list[str] = []
            if job.is_dir:
                rows.append((job.out, DIR, 0, job.mtime_ns, None))
                keep = {o[0] for o in res.outputs}
                stale = [p for p in self._recorded_under(job.out) if p not in keep]
            rows += [(o[0], FILE, o[1], o[2], o[3]) for o in res.outputs]
            store.commit(self.pair_id, record=rows, forget=stale, clear=[job.out])
            report.files_copied += 1
            report.files_verified += all(o[4] for o in res.outputs)
            report.files_updated += job.action == "update"
            report.bytes_copied += res.bytes_read
        else:
            store.commit(self.pair_id, clear=[job.out])
            report.add_failure(job.rel, res.error or "failed", res.retryable)
        progress.on_file(job.rel, res.ok)
