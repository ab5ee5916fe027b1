"""Where a landing dataset's raw area and output live: a local folder or any engine file system
with directories and atomic rename (HDFS over RPC or WebHDFS, SFTP), behind one small API.

The landing steps read raw files, write Parquet, batch records, the history and the report
through a :class:`Store`, so the same code runs on a local folder and on a real HDFS:

- small files (batch records, ``pending.json``, the report) are written under a temporary
  name and renamed over the final one, so a reader never sees half a file;
- a raw file is read from a local copy (downloaded to a temporary directory when the store
  is remote), because the validation and pyarrow's CSV reader want a seekable local file;
- a Parquet file is uploaded to the batch's staging directory on the store, its CRC32C
  compared with the store's own (HDFS COMPOSITE-CRC32C) or re-read, and only then renamed to
  its final name (``publish``).

Object stores (``gs://``, ``s3://``) have no rename: they are refused with a clear error.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Iterator

from replicator.checksum import crc32c_of, extend, format_crc32c
from replicator.filesystems.base import DIR, FILE, FileSystem, unsafe_rel
from replicator.filesystems.registry import resolve
from replicator.secrets import redact

CHUNK = 8 << 20


class StoreError(ValueError):
    """A raw area or output that the landing pipeline cannot use (the message says why)."""


class Store:
    """One landing directory (raw area or output) on its file system."""

    def __init__(self, uri: str, where: str) -> None:
        self.uri_root = uri
        self.where = where
        try:
            fs, root = resolve(uri)
        except Exception as exc:  # UsageError: unknown scheme, password in the URI, ...
            raise StoreError(f"{where}: {redact(str(exc))}") from None
        caps = fs.capabilities
        if not (caps.atomic_rename and caps.directories):
            fs.close()
            raise StoreError(
                f"{where}: {redact(uri)}: the landing pipeline needs a file system with "
                f"directories and atomic rename (a local folder, hdfs://, webhdfs://, sftp://) "
                f"so that nothing half-written appears under a final name; {fs.scheme}:// has none"
            )
        self.fs: FileSystem = fs
        self.root = root
        self.local = fs.scheme == "file"

    # ---------------------------------------------------------------- names
    def path(self, rel: str) -> str:
        """The file system path of ``rel``; a ``rel`` that would leave the store's root
        (absolute, ``..``, empty segments: a tampered batch record or ``pending.json``) is
        refused, never joined."""
        if not rel:
            return self.root
        if unsafe_rel(rel):
            raise StoreError(f"{self.where}: {rel[:200]!r} is not a path under {redact(self.uri_root)}")
        return self.fs.join(self.root, rel)

    def uri(self, rel: str = "") -> str:
        """The URI of ``rel`` (a plain absolute path for a local store), for users and events."""
        return self.fs.uri(self.path(rel))

    def link(self, rel: str) -> str:
        """A URL that opens ``rel`` in a browser where there is one: ``file://`` locally, the
        WebHDFS ``OPEN`` URL on ``webhdfs://``; otherwise the URI."""
        if self.local:
            return "file://" + self.path(rel)
        uri = self.uri(rel)
        for scheme, http in (("webhdfs://", "http://"), ("swebhdfs://", "https://")):
            if uri.startswith(scheme):
                host, _, path = uri.removeprefix(scheme).partition("/")
                return f"{http}{host}/webhdfs/v1/{path}?op=OPEN"
        return uri

    # ---------------------------------------------------------------- reading
    def is_file(self, rel: str) -> bool:
        info = self.fs.stat(self.path(rel))
        return info is not None and info.kind == FILE

    def size(self, rel: str) -> int:
        info = self.fs.stat(self.path(rel))
        if info is None or info.kind != FILE:
            raise FileNotFoundError(f"{self.uri(rel)}: no such file")
        return info.size

    def read_bytes(self, rel: str) -> bytes | None:
        """The file's bytes, or None if it does not exist."""
        if self.fs.stat(self.path(rel)) is None:
            return None
        try:
            with self.fs.open_read(self.path(rel)) as f:
                return f.read()
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def local_file(self, rel: str) -> Iterator[str]:
        """A local path with the bytes of ``rel``: the file itself on a local store, else a
        copy in a temporary directory removed afterwards."""
        if self.local:
            yield self.path(rel)
            return
        tmp = tempfile.mkdtemp(prefix="landing-")
        try:
            local = os.path.join(tmp, posixpath.basename(rel) or "file")
            with open(local, "wb") as out:
                for data in self.fs.read_chunks(self.path(rel), 0, None, CHUNK):
                    out.write(data)
            yield local
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def walk(self, rel: str = "", *, skip_hidden: bool = True) -> Iterator[tuple[str, str]]:
        """``(path, kind)`` of everything under ``rel`` (relative to the store), parents before
        their children; with ``skip_hidden`` ``.``/``_`` directories are not entered."""
        stack = [rel]
        while stack:
            d = stack.pop()
            try:
                entries = self.fs.list_dir(self.path(d))
            except FileNotFoundError:
                continue
            for e in sorted(entries, key=lambda e: e.name):
                child = posixpath.join(d, e.name) if d else e.name
                if e.kind == DIR and skip_hidden and e.name.startswith((".", "_")):
                    continue
                yield child, e.kind
                if e.kind == DIR:
                    stack.append(child)

    def walk_files(self, rel: str = "") -> Iterator[str]:
        """Files under ``rel``, not entering ``.``/``_`` directories."""
        return (p for p, kind in self.walk(rel) if kind == FILE)

    # ---------------------------------------------------------------- writing
    def makedirs(self, rel: str) -> None:
        self.fs.makedirs(self.path(rel))

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write ``rel`` whole: to a temporary name beside it, then renamed over it."""
        final = self.path(rel)
        tmp = f"{final}.{uuid.uuid4().hex[:8]}.tmp"
        self.fs.makedirs(posixpath.dirname(final))
        try:
            with self.fs.open_write(tmp) as w:
                w.write(data)
            self.fs.rename(tmp, final)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.delete_file(tmp)
            raise

    def append_line(self, rel: str, line: str) -> None:
        """Append one line (``line`` without its newline). Locally an fsync'd append; on a
        remote store the file is rewritten whole under a temporary name (HDFS appends are
        not atomic for a reader, and these files are small)."""
        data = (line + "\n").encode("utf-8")
        if self.local:
            path = self.path(rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return
        old = self.read_bytes(rel) or b""
        if old and not old.endswith(b"\n"):
            old += b"\n"  # a torn last line stays a line of its own (readers skip it)
        self.write_bytes(rel, old + data)

    def upload(self, local_path: str, rel: str) -> str:
        """Copy a local file to ``rel`` (its staging name: the caller renames it into place)
        and check it: the store's own CRC32C (HDFS) or the bytes read back must match.
        Returns how it was verified (``stored`` or ``computed``)."""
        dst = self.path(rel)
        crc = 0
        with open(local_path, "rb") as src, self.fs.open_write(dst) as w:
            while data := src.read(CHUNK):
                crc = extend(crc, data)
                w.write(data)
        want = format_crc32c(crc)
        got, how = crc32c_of(self.fs, dst, CHUNK)
        if got != want:
            with contextlib.suppress(Exception):
                self.fs.delete_file(dst)
            raise OSError(f"{redact(self.uri(rel))}: written file has {got}, expected {want}")
        return how

    def rename(self, src_rel: str, dst_rel: str) -> None:
        dst = self.path(dst_rel)
        self.fs.makedirs(posixpath.dirname(dst))
        self.fs.rename(self.path(src_rel), dst)

    def delete_file(self, rel: str) -> None:
        self.fs.delete_file(self.path(rel))

    def delete_tree(self, rel: str) -> None:
        """Remove ``rel`` and everything under it (best effort; a missing tree is fine)."""
        if self.local:
            shutil.rmtree(self.path(rel), ignore_errors=True)
            return
        dirs = [rel]
        for child, kind in list(self.walk(rel, skip_hidden=False)):
            if kind == DIR:
                dirs.append(child)
            else:
                with contextlib.suppress(Exception):
                    self.fs.delete_file(self.path(child))
        for d in reversed(dirs):
            with contextlib.suppress(Exception):
                self.fs.delete_dir(self.path(d))

    def close(self) -> None:
        self.fs.close()
