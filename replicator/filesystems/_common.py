"""Helpers shared by the network back ends: error mapping, streams, checksums, env."""

from __future__ import annotations

import base64
import io
import os
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from replicator.errors import FatalError, PreconditionFailed, ReplicatorError, RetryableError
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


def is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, (ConnectionError, TimeoutError, socket.timeout, EOFError, BrokenPipeError))


def split_bucket(path: str) -> tuple[str, str]:
    path = path.lstrip("/")
    bucket, _, key = path.partition("/")
    return bucket, key


def clean_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}
