"""Error classes. Every error the engine raises says what kind it is, so callers
retry only what can succeed on a retry (rclone ``fs/fserrors``)."""

from __future__ import annotations

import errno
import socket


class ReplicatorError(Exception):
    """Base class for every error the engine raises on purpose."""

    retryable: bool = False
    exit_code: int = 1


class UsageError(ReplicatorError):
    """Bad usage or bad input: a malformed option, config or path. Exit code 2."""

    exit_code = 2


class FatalError(ReplicatorError):
    """An error a retry cannot fix: auth refused, bucket missing, permission denied."""


class RetryableError(ReplicatorError):
    """A transient error: connection reset, timeout, throttling, server 5xx."""

    retryable = True


class SourceReadError(ReplicatorError):
    """The source file could not be read (permissions, vanished). The file fails, the run goes on."""


class SourceChangedError(RetryableError):
    """The source file changed while it was being copied; the copy is discarded."""


class VerificationError(RetryableError):
    """The staged copy did not match what was read (size or checksum)."""


class PreconditionFailed(FatalError):
    """Someone else wrote the destination object between our check and our write."""


class LockedError(ReplicatorError):
    """Another run holds the lock on this (source, destination) pair."""


_RETRYABLE_ERRNOS = {
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.ECONNABORTED,
    errno.ETIMEDOUT,
    errno.EPIPE,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EAGAIN,
    errno.EBUSY,
}


def is_retryable(exc: BaseException) -> bool:
    """Classify any exception: ours carry their class; OS and network errors by errno."""
    if isinstance(exc, ReplicatorError):
        return exc.retryable
    if isinstance(exc, (TimeoutError, socket.timeout, ConnectionError)):
        return True
    return bool(isinstance(exc, OSError) and exc.errno in _RETRYABLE_ERRNOS)


def describe(exc: BaseException) -> str:
    """A one-line description suitable for reports (no tracebacks, no secrets)."""
    from replicator.secrets import redact

    name = type(exc).__name__
    text = str(exc) or name
    return redact(f"{name}: {text}" if not isinstance(exc, ReplicatorError) else text)
