"""Helpers shared by the network back ends: error mapping, streams, checksums, env."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import posixpath
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO, ClassVar
from urllib.parse import SplitResult, unquote, urlsplit

from replicator.errors import (
    FatalError,
    PreconditionFailed,
    ReplicatorError,
    RetryableError,
    UsageError,
)
from replicator.filesystems.base import FileSystem, Writer
from replicator.secrets import redact, register_secret

MiB = 1 << 20
RETRYABLE_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})


def env(name: str, default: str | None = None) -> str | None:
    """Read an environment variable when a file system is built (never at import)."""
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def secret(value: str | None) -> str | None:
    register_secret(value)
    return value


def crc32c_hex_from_b64(value: str | None) -> str | None:
    """GCS reports crc32c as base64 of the big-endian uint32; we use ``crc32c:%08x``."""
    if not value:
        return None
    raw = base64.b64decode(value)
    return f"crc32c:{int.from_bytes(raw, 'big'):08x}"


def md5_hex_from_b64(value: str | None) -> str | None:
    if not value:
        return None
    return "md5:" + base64.b64decode(value).hex()


def parse_rfc3339_ns(text: str | None) -> int:
    if not text:
        return 0
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def http_error(status: int, what: str, body: str = "") -> ReplicatorError | FileNotFoundError:
    """Map an HTTP status to our error classes (the text is redacted)."""
    text = redact(f"{what}: HTTP {status} {body[:300]}".strip())
    if status == 404:
        return FileNotFoundError(text)
    if status == 412:
        return PreconditionFailed(text)
    if status in RETRYABLE_HTTP or status >= 500:
        return RetryableError(text)
    return FatalError(text)


def network_error(exc: BaseException, what: str) -> RetryableError:
    err = RetryableError(redact(f"{what}: {type(exc).__name__}: {exc}"))
    err.__cause__ = None
    return err


class ChunkReader(io.RawIOBase):
    """A read-only binary stream over a ``read(n)`` callable, with error mapping and a
    close hook. ``read(n)`` returns up to ``n`` bytes, ``b""`` at EOF."""

    def __init__(self, read: Callable[[int], bytes], close: Callable[[], None] | None = None,
                 map_error: Callable[[BaseException], BaseException] | None = None) -> None:
        self._read = read
        self._close = close
        self._map = map_error

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = []
            while True:
                data = self.read(8 * MiB)
                if not data:
                    return b"".join(parts)
                parts.append(data)
        try:
            return self._read(n)
        except (ReplicatorError, FileNotFoundError):
            raise
        except Exception as exc:
            if self._map is None:
                raise
            raise self._map(exc) from None

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed and self._close is not None:
            try:
                self._close()
            except Exception:
                pass
        super().close()


def read_exact(read: Callable[[int], bytes], n: int) -> bytes:
    """Call ``read`` until ``n`` bytes or EOF (socket-like readers return short reads)."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        data = read(n - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def chunked(stream_read: Callable[[int], bytes], chunk_size: int, length: int | None) -> Iterator[bytes]:
    remaining = length
    while remaining is None or remaining > 0:
        n = chunk_size if remaining is None else min(chunk_size, remaining)
        data = read_exact(stream_read, n)
        if not data:
            return
        if remaining is not None:
            remaining -= len(data)
        yield data


class StreamChunks:
    """``read_chunks`` for back ends whose streams return short reads (sockets, HTTP
    bodies): every chunk but the last is exactly ``chunk_size``. Mixed in before
    :class:`FileSystem`. With ``ranged_open`` the back end's ``open_read`` also takes
    ``length``, so the server sends only that range (and a zero-length read sends nothing)."""

    ranged_open: ClassVar[bool] = False

    def read_chunks(self, path: str, offset: int = 0, length: int | None = None,
                    chunk_size: int = 8 << 20) -> Iterator[bytes]:
        open_read: Callable[..., BinaryIO] = self.open_read  # type: ignore[attr-defined]
        if not self.ranged_open:
            stream = open_read(path, offset)
        elif length == 0:
            return
        else:
            stream = open_read(path, offset, length)
        with stream as f:
            yield from chunked(f.read, chunk_size, length)


class ObjectStore(StreamChunks):
    """What the object stores share (``bucket/key`` paths, no directories, no rename);
    mixed in before :class:`FileSystem`. Their ``open_read`` takes ``length``."""

    ranged_open = True
    scheme: ClassVar[str]

    @classmethod
    def from_uri(cls, uri: str) -> tuple[FileSystem, str]:
        parts = split_uri(uri)
        user, password = uri_credentials(parts)
        bucket = parts.netloc.rpartition("@")[2]  # credentials never become part of the path
        if not bucket:
            raise UsageError(redact(f"{cls.scheme} URI needs a bucket: {uri}"))
        fs = cls() if user is None and password is None else cls.from_uri_credentials(user, password)
        return fs, unquote((bucket + "/" + parts.path.lstrip("/")).rstrip("/"))  # type: ignore[return-value]

    @classmethod
    def from_uri_credentials(cls, user: str | None, password: str | None) -> FileSystem:
        """A file system for ``scheme://USER:PASSWORD@bucket``; refused unless the store has
        such credentials (S3: access key id and secret)."""
        raise UsageError(f"{cls.scheme}:// URIs take no user or password; give credentials the "
                         f"store's standard way or in a named remote")

    def makedirs(self, path: str) -> None:
        """Object stores have no directories: nothing to do."""

    def rename(self, src: str, dst: str) -> None:
        raise NotImplementedError(f"{self.scheme} has no atomic rename; write to the final name")

    def delete_dir(self, path: str) -> None:
        """Nothing: a prefix disappears with its last object."""


class StreamWriter(Writer):
    """A writer streaming straight to ``path``: a failed write or close, or an abort,
    deletes the partial file. Subclasses open the stream in ``__init__`` (after calling
    this one) and fill in the hooks; ``map_error(exc, what)`` maps client errors."""

    def __init__(self, fs: FileSystem, path: str,
                 map_error: Callable[[BaseException, str], BaseException]) -> None:
        self.fs, self.path = fs, path
        self.what = f"write {fs.uri(path)}"
        self._map = map_error
        self.done = False

    def _send(self, data: bytes | memoryview) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        """Complete the transfer; raises if the store did not take the whole file."""
        raise NotImplementedError

    def _close_stream(self) -> None:
        """Drop the stream without completing it (errors are ignored)."""

    def _succeeded(self) -> None:
        """After ``_finish``: hand the connection back."""

    def _failed(self) -> None:
        """After a failure or abort: drop the connection."""

    def _delete_partial(self) -> None:
        with contextlib.suppress(Exception):
            self.fs.delete_file(self.path)

    def write(self, data: bytes | memoryview) -> None:
        try:
            self._send(data)
        except Exception as exc:
            self.abort()
            raise self._map(exc, self.what) from None

    def close(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            self._finish()
        except Exception as exc:
            self._failed()
            self._delete_partial()
            raise self._map(exc, self.what) from None
        self._succeeded()

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        with contextlib.suppress(Exception):
            self._close_stream()
        self._failed()
        self._delete_partial()


def make_parent(fs: FileSystem, path: str) -> None:
    """Create the parent directory of ``path`` (not the root)."""
    parent = posixpath.dirname(path)
    if parent and parent != "/":
        fs.makedirs(parent)


def split_uri(uri: str) -> SplitResult:
    """``urlsplit(uri)``, refusing a query (``?``) or a fragment (``#``): they name no path, and
    dropping them copied ``gs://b/run#1`` into ``gs://b/run`` (``--delete`` then deleted there).
    A name holding them is written percent-encoded (``%23``, ``%3F``)."""
    parts = urlsplit(uri)
    if parts.query or parts.fragment or uri.endswith(("?", "#")):
        where = "" if "@" in uri else f" {redact(uri)}"  # a password may hold them: not echoed
        raise UsageError(f"URI{where}: '?' and '#' start a URI's query and fragment, which name "
                         "no path; write them as %3F and %23 in a URI (a plain local path takes "
                         "them as they are)")
    return parts


def uri_path(parts: SplitResult) -> str:
    """The absolute native path of a ``scheme://host/path`` URI."""
    return posixpath.normpath(unquote(parts.path) or "/")


def uri_user(parts: SplitResult) -> str | None:
    return unquote(parts.username) if parts.username else None


def uri_credentials(parts: SplitResult) -> tuple[str | None, str | None]:
    """``(user, password)`` of a URI, the password registered as a secret at once so no
    message that quotes it (ours or a client library's) ever shows it."""
    password = unquote(parts.password) if parts.password is not None else None
    register_secret(password)
    return uri_user(parts), password


def refuse_uri_password(parts: SplitResult, scheme: str, how: str) -> None:
    """Schemes that authenticate otherwise (Kerberos, tokens) refuse a password in the URI
    rather than store or send it."""
    _, password = uri_credentials(parts)
    if password is not None:
        raise UsageError(f"{scheme}:// URIs take no password ({how}); remove it from the URI")


def split_bucket(path: str) -> tuple[str, str]:
    path = path.lstrip("/")
    bucket, _, key = path.partition("/")
    return bucket, key


def object_path(path: str, scheme: str) -> tuple[str, str]:
    """``(bucket, key)`` of a path that must name an object."""
    bucket, key = split_bucket(path)
    if not bucket or not key:
        raise UsageError(f"{scheme}: not an object path: {path!r}")
    return bucket, key


def mtime_metadata(key: str, mtime_ns: int | None) -> dict[str, str]:
    """The source mtime as object metadata (``key`` is the store's name for it)."""
    return {key: str(int(mtime_ns))} if mtime_ns is not None else {}


class ObjectWriter(Writer):
    """What every object-store writer holds: the object (``bucket``, ``key``), the source
    mtime as metadata, the version precondition and the upload buffer."""

    def __init__(self, fs: FileSystem, path: str, scheme: str, meta_key: str,
                 mtime_ns: int | None, expect_version: str | None) -> None:
        self.fs = fs
        self.bucket, self.key = object_path(path, scheme)
        self.path = path
        self.meta = mtime_metadata(meta_key, mtime_ns)
        self.expect = expect_version
        self.buf = bytearray()


def bucket_missing(scheme: str, bucket: str, exc: BaseException) -> FatalError:
    return FatalError(f"{scheme}://{bucket}: bucket not found ({exc})")


def http_range(offset: int, length: int | None) -> str | None:
    """The ``Range`` header value for ``length`` bytes (to the end if None) from ``offset``;
    None for the whole object."""
    if length is not None and length > 0:
        return f"bytes={offset}-{offset + length - 1}"
    if offset:
        return f"bytes={offset}-"
    return None


def clean_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}
