"""SFTP drop zones (``sftp://user@host:port/abs/path``) over paramiko.

One SSH transport per file system, one SFTP channel per concurrent operation (pooled).
Reads are pipelined with ``readv`` one chunk at a time, so memory stays bounded by the
chunk size (paramiko's ``prefetch`` would buffer the whole rest of the file); writes are
pipelined. Publishing uses ``posix-rename@openssh.com`` (atomic replace). mtime has 1 s
resolution (SFTP v3).

Authentication: the options ``password`` or ``key_filename`` (also ``?key=`` in the URI is
not supported on purpose: keys live in config), else the SSH agent and ``~/.ssh/id_*``.
Host keys are checked against ``known_hosts`` (default ``~/.ssh/known_hosts``); set
``host_key_check: false`` only for throwaway test servers.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import os
import posixpath
import socket
import stat as stat_mod
import threading
from typing import Any, BinaryIO
from urllib.parse import unquote

from replicator.errors import FatalError, ReplicatorError, RetryableError, UsageError
from replicator.filesystems._common import (
    ChunkReader,
    StreamWriter,
    clean_options,
    make_parent,
    secret,
    split_uri,
    uri_path,
    uri_user,
)
from replicator.filesystems.base import DIR, FILE, LINK, Capabilities, FileInfo, FileSystem, Writer
from replicator.secrets import redact

_REQ = 32768  # paramiko's largest SFTP read request


def _map_error(exc: BaseException, what: str) -> BaseException:
    import paramiko

    if isinstance(exc, (ReplicatorError, FileNotFoundError)):
        return exc
    text = redact(f"{what}: {type(exc).__name__}: {exc}")
    if isinstance(exc, (paramiko.AuthenticationException, paramiko.BadHostKeyException)):
        return FatalError(text)
    if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
        return FatalError(text)
    if isinstance(exc, OSError) and exc.errno == errno.ENOENT:
        return FileNotFoundError(errno.ENOENT, text)
    if isinstance(exc, PermissionError) or (isinstance(exc, OSError) and exc.errno == errno.EACCES):
        return PermissionError(errno.EACCES, text)
    if isinstance(exc, (paramiko.SSHException, EOFError, socket.error, ConnectionError, TimeoutError)):
        return RetryableError(text)
    if isinstance(exc, OSError) and exc.errno is None:
        # paramiko raises IOError("Failure") / "Socket is closed" without an errno
        return RetryableError(text) if "closed" in str(exc).lower() else exc
    return exc


class _SFTPReader:
    """Pipelined reads: each ``read(n)`` issues all 32 KiB requests of the range at once."""

    def __init__(self, fs: SFTPFileSystem, chan, f, offset: int, size: int) -> None:
        self.fs, self.chan, self.f = fs, chan, f
        self.pos, self.size = offset, size

    def read(self, n: int) -> bytes:
        n = min(n, self.size - self.pos)
        if n <= 0:
            return b""
        ranges = [(o, min(_REQ, self.pos + n - o)) for o in range(self.pos, self.pos + n, _REQ)]
        data = b"".join(self.f.readv(ranges))
        self.pos += len(data)
        return data

    def close(self) -> None:
        try:
            self.f.close()
        finally:
            self.fs._release(self.chan)


class _SFTPWriter(StreamWriter):
    def __init__(self, fs: SFTPFileSystem, path: str) -> None:
        super().__init__(fs, path, _map_error)
        self.chan = fs._acquire()
        try:
            self.f = self.chan.open(path, "wb")
            self.f.set_pipelined(True)
        except BaseException as exc:
            fs._release(self.chan, broken=True)
            raise _map_error(exc, self.what) from None

    def _send(self, data: bytes | memoryview) -> None:
        self.f.write(bytes(data))

    def _finish(self) -> None:
        self.f.close()

    _close_stream = _finish

    def _succeeded(self) -> None:
        self.fs._release(self.chan)

    def _failed(self) -> None:
        self.fs._release(self.chan, broken=True)


class SFTPFileSystem(FileSystem):
    scheme = "sftp"
    capabilities = Capabilities(
        hash_kinds=(),
        mtime_precision_ns=1_000_000_000,
        atomic_rename=True,
        can_set_mtime=True,
        can_set_mode=True,
        directories=True,
        parallel_write=False,
    )

    def __init__(self, host: str, port: int = 22, username: str | None = None,
                 password: str | None = None, key_filename: str | None = None,
                 passphrase: str | None = None, known_hosts: str | None = None,
                 host_key_check: bool = True, timeout: float = 30.0,
                 allow_agent: bool = True, max_idle: int = 16) -> None:
        self._host = host
        self._port = int(port)
        self._username = username or getpass.getuser()
        self._password = secret(password)
        self._key_filename = key_filename
        self._passphrase = secret(passphrase)
        self._known_hosts = known_hosts
        self._host_key_check = bool(host_key_check)
        self._timeout = float(timeout)
        self._allow_agent = bool(allow_agent)
        self._max_idle = int(max_idle)
        self._lock = threading.Lock()
        self._client = None
        self._idle: list = []

    @classmethod
    def from_uri(cls, uri: str) -> tuple[FileSystem, str]:
        parts = split_uri(uri)
        if not parts.hostname:
            raise UsageError(f"sftp URI needs a host: {uri}")
        fs = cls(host=parts.hostname, port=parts.port or 22, username=uri_user(parts),
                 password=unquote(parts.password) if parts.password is not None else None)
        return fs, uri_path(parts)

    def options(self) -> dict[str, Any]:
        return clean_options({
            "host": self._host, "port": self._port, "username": self._username,
            "password": self._password, "key_filename": self._key_filename,
            "passphrase": self._passphrase, "known_hosts": self._known_hosts,
            "host_key_check": self._host_key_check, "timeout": self._timeout,
            "allow_agent": self._allow_agent, "max_idle": self._max_idle,
        })

    def uri(self, path: str) -> str:
        return f"sftp://{self._username}@{self._host}:{self._port}{path}"

    # ------------------------------------------------------------ connections
    def _ssh(self):
        import paramiko

        with self._lock:
            c = self._client
            if c is not None and c.get_transport() is not None and c.get_transport().is_active():
                return c
            self._idle = []
            c = paramiko.SSHClient()
            if self._host_key_check:
                known = self._known_hosts or os.path.expanduser("~/.ssh/known_hosts")
                if os.path.exists(known):
                    c.load_host_keys(known)
                c.set_missing_host_key_policy(paramiko.RejectPolicy())
            else:
                c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
            what = f"connect sftp://{self._username}@{self._host}:{self._port}"
            try:
                c.connect(self._host, port=self._port, username=self._username,
                          password=self._password, key_filename=self._key_filename,
                          passphrase=self._passphrase, timeout=self._timeout,
                          banner_timeout=self._timeout, auth_timeout=self._timeout,
                          allow_agent=self._allow_agent,
                          look_for_keys=self._key_filename is None and self._password is None)
            except Exception as exc:
                with contextlib.suppress(Exception):
                    c.close()
                raise _map_error(exc, what) from None
            t = c.get_transport()
            t.set_keepalive(30)
            self._client = c
            return c

    def _acquire(self):
        with self._lock:
            if self._idle:
                return self._idle.pop()
        c = self._ssh()
        try:
            chan = c.open_sftp()
        except Exception as exc:
            raise _map_error(exc, f"open sftp channel to {self._host}") from None
        chan.get_channel().settimeout(self._timeout)
        return chan

    def _release(self, chan, broken: bool = False) -> None:
        if not broken and chan.sock is not None and not chan.sock.closed:
            with self._lock:
                if len(self._idle) < self._max_idle:
                    self._idle.append(chan)
                    return
        with contextlib.suppress(Exception):
            chan.close()

    def _run(self, what: str, fn):
        chan = self._acquire()
        try:
            result = fn(chan)
        except Exception as exc:
            mapped = _map_error(exc, what)
            self._release(chan, broken=isinstance(mapped, RetryableError))
            raise mapped from None
        self._release(chan)
        return result

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            client, self._client = self._client, None
        for chan in idle:
            with contextlib.suppress(Exception):
                chan.close()
        if client is not None:
            client.close()

    # ------------------------------------------------------------ metadata
    def _info(self, chan, path: str, attr) -> FileInfo:
        mode = attr.st_mode or 0
        mtime_ns = int(attr.st_mtime or 0) * 1_000_000_000
        if stat_mod.S_ISDIR(mode):
            return FileInfo(path=path, kind=DIR, mtime_ns=mtime_ns, mode=stat_mod.S_IMODE(mode))
        if stat_mod.S_ISLNK(mode):
            try:
                target = chan.stat(path)
            except OSError:
                return FileInfo(path=path, kind=LINK, mtime_ns=mtime_ns, target_kind=None)
            t = self._info(chan, path, target)
            return FileInfo(path=path, kind=LINK, size=t.size, mtime_ns=t.mtime_ns, mode=t.mode,
                            target_kind=t.kind)
        return FileInfo(path=path, kind=FILE, size=int(attr.st_size or 0), mtime_ns=mtime_ns,
                        mode=stat_mod.S_IMODE(mode))

    def list_dir(self, path: str) -> list[FileInfo]:
        def op(chan):
            return [self._info(chan, posixpath.join(path, a.filename), a)
                    for a in chan.listdir_attr(path)]

        return self._run(f"list {self.uri(path)}", op)

    def stat(self, path: str) -> FileInfo | None:
        try:
            return self._run(f"stat {self.uri(path)}", lambda chan: self._info(chan, path, chan.lstat(path)))
        except FileNotFoundError:
            return None

    # ------------------------------------------------------------ data
    def open_read(self, path: str, offset: int = 0) -> BinaryIO:
        what = f"read {self.uri(path)}"
        chan = self._acquire()
        try:
            f = chan.open(path, "rb")
            size = f.stat().st_size
        except Exception as exc:
            mapped = _map_error(exc, what)
            self._release(chan, broken=isinstance(mapped, RetryableError))
            raise mapped from None
        reader = _SFTPReader(self, chan, f, offset, size)
        return ChunkReader(reader.read, reader.close,  # type: ignore[return-value]
                           lambda exc: _map_error(exc, what))

    def open_write(self, path: str, *, mtime_ns: int | None = None,
                   expect_version: str | None = None) -> Writer:
        make_parent(self, path)
        return _SFTPWriter(self, path)

    # ------------------------------------------------------------ namespace
    def makedirs(self, path: str) -> None:
        def op(chan):
            try:
                if stat_mod.S_ISDIR(chan.stat(path).st_mode):
                    return
            except OSError:
                pass
            cur = ""
            for part in [p for p in path.split("/") if p]:
                cur = f"{cur}/{part}" if (cur or path.startswith("/")) else part
                try:
                    chan.mkdir(cur)
                except OSError:
                    pass  # exists, or the write that follows says why not

        self._run(f"mkdir {self.uri(path)}", op)

    def rename(self, src: str, dst: str) -> None:
        self._run(f"rename {self.uri(src)} to {dst}", lambda chan: chan.posix_rename(src, dst))

    def delete_file(self, path: str) -> None:
        try:
            self._run(f"delete {self.uri(path)}", lambda chan: chan.remove(path))
        except FileNotFoundError:
            pass

    def delete_dir(self, path: str) -> None:
        try:
            self._run(f"rmdir {self.uri(path)}", lambda chan: chan.rmdir(path))
        except (OSError, ReplicatorError):
            pass

    def set_times(self, path: str, mtime_ns: int) -> None:
        secs = mtime_ns // 1_000_000_000
        self._run(f"set mtime of {self.uri(path)}", lambda chan: chan.utime(path, (secs, secs)))

    def set_mode(self, path: str, mode: int) -> None:
        self._run(f"chmod {self.uri(path)}", lambda chan: chan.chmod(path, mode))
