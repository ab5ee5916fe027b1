"""The one interface every back end implements.

A back end is a class with a ``scheme``, declared :class:`Capabilities`, and a small
set of operations on fs-native path strings (``/abs/dir/file`` locally,
``bucket/key`` on object stores). Paths inside a tree are always POSIX relative
paths; :meth:`FileSystem.join` builds native paths from them.

File systems are rebuilt from plain options on the far side of a process boundary
(Spark executors): ``pickle`` goes through :meth:`FileSystem.__reduce__`, which only
carries :meth:`options`.
"""

from __future__ import annotations

import posixpath
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar, Literal

FILE = "f"
DIR = "d"
LINK = "l"
OTHER = "o"  # FIFO, socket, device


def unsafe_rel(rel: str) -> bool:
    """A relative path that would not stay under its root when joined: absolute, or with an
    empty, ``.`` or ``..`` segment (object keys like ``a/../../x`` or ``a//b``)."""
    if not rel or rel[0] == "/" or rel[-1] == "/" or "//" in rel:
        return True
    if rel[0] != "." and "/." not in rel:  # a "." or ".." segment starts the path or follows a "/"
        return False
    return any(seg in (".", "..") for seg in rel.split("/"))


@dataclass(frozen=True, slots=True)
class FileInfo:
    """One entry as a back end reports it."""

    path: str
    kind: str  # FILE, DIR, LINK or OTHER
    size: int = 0
    mtime_ns: int = 0
    mode: int | None = None
    checksum: str | None = None  # the store's own, e.g. "crc32c:1a2b3c4d" or "md5:..."
    version: str | None = None  # generation / etag, for write preconditions
    target_kind: str | None = None  # for LINK: kind of what it points to, None if dangling
    inode: tuple[int, int] | None = None  # (dev, ino) where known: symlink loop detection

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/"))


@dataclass(frozen=True)
class Capabilities:
    """What a back end can do; the engine adapts to these, never to the class or its scheme
    (rclone ``fs.Features``). Every field is read by the engine or the contract tests."""

    hash_kinds: tuple[str, ...] = ()  # checksums the store computes itself (checksum())
    checksum_in_stat: bool = True  # stat() and listings carry that checksum (False: HDFS,
    # where it is one more call, checksum(), made only to verify a copy)
    mtime_precision_ns: int = 1
    listing_mtime: Literal["source", "upload"] = "source"  # "upload": listings report the
    # upload time (S3); the source mtime is kept in metadata (source_mtime())
    atomic_rename: bool = True  # stage under a temporary name, then rename into place
    can_set_mtime: bool = True  # else the source mtime is kept as object metadata
    can_set_mode: bool = False
    attributes: tuple[str, ...] = ()  # --preserve attributes beyond times/perms (by name)
    directories: bool = True  # real directories exist (empty ones can be created)
    parallel_write: bool = False  # begin/write_part/complete for ranges of one file
    part_in_memory: bool = False  # write_part sends each part as one request body (S3)
    min_part_size: int = 0  # smallest part a parallel write takes (but the last)
    max_parts: int = 10_000  # most parts one parallel write takes
    byte_names: bool = False  # names are any bytes (text paths escape non-UTF-8, local.ESC)
    host_paths: bool = False  # native paths are this host's files: os calls (realpath,
    # copy_file_range between two such stores) work on them


class Writer(ABC):
    """A file being written. ``close`` makes it complete; ``abort`` discards it."""

    @abstractmethod
    def write(self, data: bytes | memoryview) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def abort(self) -> None: ...

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class FileSystem(ABC):
    """Base class of every back end."""

    scheme: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()

    # ----------------------------------------------------------------- identity
    @classmethod
    @abstractmethod
    def from_uri(cls, uri: str) -> tuple[FileSystem, str]:
        """Build a file system for ``uri``; return it and the native root path."""

    @abstractmethod
    def options(self) -> dict[str, Any]:
        """Plain, picklable options that rebuild an equivalent instance (no live clients)."""

    def __reduce__(self):
        from replicator.filesystems.registry import filesystem_from_options

        return (filesystem_from_options, (self.scheme, self.options()))

    def uri(self, path: str) -> str:
        """The URI of a native path (for reports; carries no secrets)."""
        return f"{self.scheme}://{path.lstrip('/')}" if self.scheme != "file" else path

    def join(self, root: str, rel: str) -> str:
        if not rel:
            return root
        return posixpath.join(root, rel) if root else rel

    def real_path(self, path: str) -> str:
        """``path`` with symlinks resolved, for the overlap guards (the same path where the
        file system has no links to resolve)."""
        return path.rstrip("/") or "/"

    # ----------------------------------------------------------------- metadata
    @abstractmethod
    def list_dir(self, path: str) -> list[FileInfo]:
        """Entries directly under ``path``. Raises FileNotFoundError if it is missing."""

    @abstractmethod
    def stat(self, path: str) -> FileInfo | None:
        """The entry at ``path`` (not following a final symlink), or None if missing."""

    def checksum(self, path: str, kind: str) -> str | None:
        """The store's own checksum of kind ``kind`` without reading the data, if it has one."""
        info = self.stat(path)
        if info and info.checksum and info.checksum.startswith(kind + ":"):
            return info.checksum
        return None

    def being_written(self, path: str) -> bool:
        """True while another client holds the file open for writing (an HDFS lease): its
        listed length is not final (HDFS shows only completed blocks), so it must not be
        copied yet. False where the store cannot tell or has no such state."""
        return False

    def source_mtime(self, path: str) -> int | None:
        """The source mtime kept as object metadata at ``path``, for stores whose listings
        report upload times (``capabilities.listing_mtime == "upload"``); None if
        the object carries none (or the store keeps real mtimes)."""
        return None

    # ----------------------------------------------------------------- data
    @abstractmethod
    def open_read(self, path: str, offset: int = 0) -> BinaryIO:
        """A stream of the file's bytes from ``offset``."""

    @abstractmethod
    def open_write(
        self, path: str, *, mtime_ns: int | None = None, expect_version: str | None = None
    ) -> Writer:
        """Write a whole file at ``path`` (parents created). On stores without rename this is
        the final name and the object appears only when the writer closes; ``mtime_ns`` is kept
        as metadata there. ``expect_version`` ("0" for must-not-exist) guards the write where
        the store has preconditions."""

    def read_chunks(self, path: str, offset: int = 0, length: int | None = None,
                    chunk_size: int = 8 << 20) -> Iterator[bytes]:
        """Stream ``length`` bytes (to EOF if None) from ``offset`` in chunks."""
        with self.open_read(path, offset) as f:
            remaining = length
            while remaining is None or remaining > 0:
                n = chunk_size if remaining is None else min(chunk_size, remaining)
                data = f.read(n)
                if not data:
                    return
                if remaining is not None:
                    remaining -= len(data)
                yield data

    # ----------------------------------------------------------------- namespace
    @abstractmethod
    def makedirs(self, path: str) -> None: ...

    @abstractmethod
    def rename(self, src: str, dst: str) -> None:
        """Atomically replace ``dst`` with ``src`` (only where capabilities.atomic_rename)."""

    @abstractmethod
    def delete_file(self, path: str) -> None:
        """Remove a file; a missing file is not an error."""

    def delete_version(self, path: str, version: str) -> None:
        """Remove the file at ``path`` only while it is still ``version`` (the generation or
        ETag a write returned), where the store has conditional deletes."""
        self.delete_file(path)

    def delete_dir(self, path: str) -> None:
        """Remove an empty directory; a missing or non-empty one is left alone."""

    def set_times(self, path: str, mtime_ns: int) -> None:
        """Set the modification time (only where capabilities.can_set_mtime)."""
        raise NotImplementedError

    def set_mode(self, path: str, mode: int) -> None:
        raise NotImplementedError

    def discard_staged(self, path: str) -> None:
        """Remove whatever an interrupted write of ``path`` may have left staged out of sight
        (object stores: part objects, unfinished multipart uploads). Recovery calls it for
        every file an interrupted run was writing; the default has nothing to remove."""

    # ----------------------------------------------------------------- attributes (--preserve)
    def attributes(self, path: str, kinds: frozenset[str] | None = None) -> dict[str, Any]:
        """The file's (or directory's) attributes among ``capabilities.attributes``
        (``owner``, ``group``, ``replication``, ``blocksize`` as names and numbers; ``acl``: a
        list of ACL spec strings; ``xattr``: a dict of names to ``0x`` hex values), limited to
        ``kinds`` when given (those that cost a call of their own are only fetched then)."""
        return {}

    def set_attributes(self, path: str, attrs: dict[str, Any]) -> None:
        """Apply ``owner``/``group``/``replication``/``acl``/``xattr`` (``blocksize`` is given
        to :meth:`open_write` instead: a block size is fixed when a file is created)."""
        if attrs:
            raise NotImplementedError

    def attribute_support(self, kinds: frozenset[str]) -> str | None:
        """Why this instance cannot read or write some of ``kinds`` (None when it can): the
        declared ``capabilities.attributes``, or what its configuration lacks."""
        missing = set(kinds) - set(self.capabilities.attributes)
        if missing:
            return f"{self.scheme}:// has no {', '.join(sorted(missing))}"
        return None

    # ----------------------------------------------------------------- ranges of one file
    def begin_parallel_write(self, path: str, size: int, mtime_ns: int | None = None) -> dict:
        """Start a file written in ranges by several workers; returns a plain handle."""
        raise NotImplementedError

    def write_part(self, handle: dict, index: int, offset: int, chunks: Iterable[bytes]) -> dict:
        """Write one range; returns plain part info for :meth:`complete_parallel_write`."""
        raise NotImplementedError

    def complete_parallel_write(self, handle: dict, parts: list[dict]) -> None:
        raise NotImplementedError

    def abort_parallel_write(self, handle: dict) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release clients and connections."""
