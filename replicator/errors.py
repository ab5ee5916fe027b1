"""Error classes. Every error the engine raises says what kind it is, so callers
retry only what can succeed on a retry (rclone ``fs/fserrors``)."""

from __future__ import annotations

import errno
import socket


class ReplicatorError(Exception):
    """Base class for every error the engine raises on purpose. ``side`` says where it
    happened ("source" or "destination", None when neither), ``retryable`` its class."""

    retryable: bool = False
    exit_code: int = 1
    side: str | None = None


class UsageError(ReplicatorError):
    """Bad usage or bad input: a malformed option, config or path. Exit code 2."""

    exit_code = 2


class FatalError(ReplicatorError):
    """An error a retry cannot fix: auth refused, bucket missing, permission denied."""


class RetryableError(ReplicatorError):
    """A transient error: connection reset, timeout, throttling, server 5xx."""

    retryable = True


class SideError(ReplicatorError):
    """An error on one side of a copy; keeps the class (retryable or not) of its cause."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class SourceReadError(SideError):
    """The source file could not be read (permissions, vanished). The file fails, the run goes on."""

    side = "source"


class DestinationWriteError(SideError):
    """The destination could not be written (permissions, not a directory, full disk, a
    store refusing the write). The file fails, the run goes on."""

    side = "destination"


class SourceChangedError(RetryableError):
    """The source file changed while it was being copied; the copy is discarded."""

    side = "source"


class VerificationError(RetryableError):
    """The staged copy did not match what was read (size or checksum). ``version``: where
    the mismatching copy was written in place (object stores), the generation / ETag of
    that object, so a retry replaces exactly it and a final failure removes it."""

    version: str | None = None


class PreconditionFailed(FatalError):
    """Someone else wrote the destination object between our check and our write."""


class DeadlineExceeded(ReplicatorError):
    """The run's overall deadline (``--deadline``) passed: a server that stopped answering,
    or more work than the time allowed. What was not done is in the report. Exit code 3."""

    exit_code = 3


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


_SIDE_VERBS = {"source": ("cannot read", SourceReadError),
               "destination": ("cannot write", DestinationWriteError)}


def on_side(side: str, path: str, exc: BaseException) -> ReplicatorError:
    """``exc`` as an error of ``side`` ("source" or "destination") naming ``path``: an error
    that already carries a side is returned as it is; others keep their retryable class."""
    if isinstance(exc, ReplicatorError) and exc.side is not None:
        return exc
    verb, cls = _SIDE_VERBS[side]
    if isinstance(exc, OSError) and not isinstance(exc, ReplicatorError) and exc.strerror:
        reason = exc.strerror.lower()
    else:
        reason = describe(exc)
    from replicator.secrets import redact

    err = cls(redact(f"{verb} {path}: {reason}"), retryable=is_retryable(exc))
    err.__cause__ = exc
    return err
