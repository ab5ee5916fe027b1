"""FTP / FTPS drop zones (``ftp://user@host:port/path``, ``ftps://...``) over ``ftplib``.

Why not fsspec's FTPFileSystem: its file objects read by re-issuing ``RETR`` with ``REST``
for every buffered block and upload block by block with ``REST``+``STOR``; we need one
streaming data connection per file in each direction, which ``ftplib.transfercmd`` gives
directly. Control connections are pooled (one per concurrent operation).

Listing uses ``MLSD``/``MLST`` (RFC 3659; mtime with 1 s resolution, no hash command);
mtimes are set with ``MFMT``; rename is ``RNFR``/``RNTO`` (atomic replace on POSIX servers
such as pyftpdlib, vsftpd, proftpd; where the server refuses to replace, the old file is
removed first and the rename repeated: a short window with no file, never a partial one).

Credentials: the URI's user and password, the options ``user``/``password``, or ``~/.netrc``.
"""

from __future__ import annotations

import contextlib
import ftplib
import posixpath
import socket
import ssl
import threading
from datetime import UTC, datetime
from typing import Any, BinaryIO
from urllib.parse import unquote

from replicator.errors import FatalError, ReplicatorError, RetryableError, UsageError
from replicator.filesystems._common import (
    ChunkReader,
    StreamChunks,
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


def _parse_modify(value: str | None) -> int:
    if not value:
        return 0
    main, _, frac = value.partition(".")
    dt = datetime.strptime(main[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    ns = int(dt.timestamp()) * 1_000_000_000
    if frac:
        ns += int(frac.ljust(9, "0")[:9])
    return ns


def _map_error(exc: BaseException, what: str) -> BaseException:
    if isinstance(exc, (ReplicatorError, FileNotFoundError)):
        return exc
    text = redact(f"{what}: {exc}")
    if isinstance(exc, ftplib.error_perm):
        return FileNotFoundError(text) if str(exc).startswith("550") else FatalError(text)
    if isinstance(exc, (ftplib.error_temp, OSError, EOFError, ftplib.error_reply,
                        ftplib.error_proto)):
        return RetryableError(text)
    return exc


class _FTPReader:
    def __init__(self, fs: FTPFileSystem, ftp: ftplib.FTP, sock: socket.socket) -> None:
        self.fs, self.ftp, self.sock = fs, ftp, sock
        self.eof = False

    def read(self, n: int) -> bytes:
        if self.eof:
            return b""
        data = self.sock.recv(min(n, 4 << 20))
        if not data:
            self.eof = True
        return data

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is None:
            return
        sock.close()
        if self.eof:
            try:
                self.ftp.voidresp()
                self.fs._release(self.ftp)
                return
            except Exception:
                pass
        self.fs._discard(self.ftp)  # aborted mid-transfer: drop the control connection


class _FTPWriter(StreamWriter):
    def __init__(self, fs: FTPFileSystem, path: str) -> None:
        super().__init__(fs, path, _map_error)
        self.ftp = fs._acquire()
        try:
            self.ftp.voidcmd("TYPE I")
            self.sock = self.ftp.transfercmd(f"STOR {path}")
        except BaseException as exc:
            fs._discard(self.ftp)
            raise _map_error(exc, self.what) from None

    def _send(self, data: bytes | memoryview) -> None:
        self.sock.sendall(data)

    def _finish(self) -> None:
        if isinstance(self.sock, ssl.SSLSocket):
            self.sock.unwrap()
        self.sock.close()
        self.ftp.voidresp()

    def _close_stream(self) -> None:
        self.sock.close()

    def _succeeded(self) -> None:
        self.fs._release(self.ftp)

    def _failed(self) -> None:
        self.fs._discard(self.ftp)


class FTPFileSystem(StreamChunks, FileSystem):
    scheme = "ftp"
    capabilities = Capabilities(
        hash_kinds=(),
        mtime_precision_ns=1_000_000_000,
        atomic_rename=True,
        can_set_mtime=True,  # MFMT
        can_set_mode=False,
        directories=True,
        parallel_write=False,
    )

    def __init__(self, host: str, port: int = 21, user: str | None = None,
                 password: str | None = None, tls: bool = False, passive: bool = True,
                 timeout: float = 30.0, encoding: str = "utf-8", max_idle: int = 16) -> None:
        self._host = host
        self._port = int(port)
        if user is None or password is None:
            with contextlib.suppress(Exception):
                import netrc

                auth = netrc.netrc().authenticators(host)
                if auth:
                    user = user or auth[0]
                    password = password if password is not None else auth[2]
        self._user = user or "anonymous"
        self._password = secret(password) or ""
        self._tls = bool(tls)
        self._passive = bool(passive)
        self._timeout = float(timeout)
        self._encoding = encoding
        self._max_idle = int(max_idle)
        self._idle: list[ftplib.FTP] = []
        self._lock = threading.Lock()

    @classmethod
    def from_uri(cls, uri: str) -> tuple[FileSystem, str]:
        parts = split_uri(uri)
        if not parts.hostname:
            raise UsageError(f"ftp URI needs a host: {uri}")
        password = unquote(parts.password) if parts.password is not None else None
        fs = cls(host=parts.hostname, port=parts.port or 21, user=uri_user(parts),
                 password=password, tls=parts.scheme.lower() == "ftps")
        return fs, uri_path(parts)

    def options(self) -> dict[str, Any]:
        return clean_options({
            "host": self._host, "port": self._port, "user": self._user,
            "password": self._password or None, "tls": self._tls, "passive": self._passive,
            "timeout": self._timeout, "encoding": self._encoding, "max_idle": self._max_idle,
        })

    def uri(self, path: str) -> str:
        scheme = "ftps" if self._tls else "ftp"
        return f"{scheme}://{self._user}@{self._host}:{self._port}{path}"

    # ------------------------------------------------------------ connections
    def _connect(self) -> ftplib.FTP:
        what = f"connect ftp://{self._host}:{self._port}"
        ftp: ftplib.FTP = ftplib.FTP_TLS(encoding=self._encoding) if self._tls else ftplib.FTP(
            encoding=self._encoding)
        try:
            ftp.connect(self._host, self._port, timeout=self._timeout)
            ftp.login(self._user, self._password)
            if self._tls:
                ftp.prot_p()  # type: ignore[attr-defined]
            ftp.set_pasv(self._passive)
            with contextlib.suppress(ftplib.Error):
                ftp.sendcmd("OPTS UTF8 ON")
        except ftplib.error_perm as exc:
            with contextlib.suppress(Exception):
                ftp.close()
            raise FatalError(redact(f"{what}: login refused: {exc}")) from None
        except Exception as exc:
            with contextlib.suppress(Exception):
                ftp.close()
            raise _map_error(exc, what) from None
        return ftp

    def _acquire(self) -> ftplib.FTP:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _release(self, ftp: ftplib.FTP) -> None:
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(ftp)
                return
        self._discard(ftp)

    @staticmethod
    def _discard(ftp: ftplib.FTP) -> None:
        with contextlib.suppress(Exception):
            ftp.close()

    def _run(self, what: str, fn):
        """Run ``fn(ftp)`` on a pooled connection; a stale pooled one is replaced once."""
        for attempt in (0, 1):
            ftp = self._acquire()
            try:
                result = fn(ftp)
            except (OSError, EOFError, ftplib.error_temp) as exc:
                self._discard(ftp)
                if attempt == 0 and isinstance(exc, (EOFError, ConnectionError, BrokenPipeError)):
                    continue
                raise _map_error(exc, what) from None
            except Exception as exc:
                self._release(ftp)
                raise _map_error(exc, what) from None
            self._release(ftp)
            return result
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for ftp in idle:
            with contextlib.suppress(Exception):
                ftp.quit()
            self._discard(ftp)

    # ------------------------------------------------------------ metadata
    @staticmethod
    def _entry(path: str, facts: dict[str, str]) -> FileInfo | None:
        kind_fact = facts.get("type", "").lower()
        if kind_fact in ("cdir", "pdir"):
            return None
        if kind_fact == "dir":
            kind = DIR
        elif kind_fact.startswith("os.unix=symlink") or kind_fact.startswith("os.unix=slink"):
            kind = LINK
        else:
            kind = FILE
        size = int(facts.get("size", 0) or 0) if kind == FILE else 0
        mode = int(facts["unix.mode"], 8) if "unix.mode" in facts else None
        return FileInfo(path=path, kind=kind, size=size,
                        mtime_ns=_parse_modify(facts.get("modify")), mode=mode)

    def list_dir(self, path: str) -> list[FileInfo]:
        def op(ftp: ftplib.FTP):
            return list(ftp.mlsd(path, facts=["type", "size", "modify", "unix.mode"]))

        what = f"list {self.uri(path)}"
        try:
            entries = self._run(what, op)
        except FatalError as exc:
            # servers answer 501/550 for a missing directory: tell it from other refusals
            if "login refused" in str(exc) or self.stat(path) is not None:
                raise
            raise FileNotFoundError(str(exc)) from None
        out = []
        for name, facts in entries:
            info = self._entry(posixpath.join(path, name), facts)
            if info is not None:
                out.append(info)
        return out

    def stat(self, path: str) -> FileInfo | None:
        def op(ftp: ftplib.FTP):
            return ftp.sendcmd(f"MLST {path}")

        try:
            resp = self._run(f"stat {self.uri(path)}", op)
        except FileNotFoundError:
            return None
        for line in resp.splitlines()[1:]:
            if line.startswith(" "):
                facts_text = line.strip().split(" ", 1)[0] if "; " not in line else \
                    line.strip().split("; ", 1)[0] + ";"
                facts = {}
                for fact in facts_text.rstrip(";").split(";"):
                    k, _, v = fact.partition("=")
                    if k:
                        facts[k.lower()] = v
                if facts.get("type", "").lower() in ("cdir", "pdir"):
                    facts["type"] = "dir"
                return self._entry(path, facts)
        return None

    # ------------------------------------------------------------ data
    def open_read(self, path: str, offset: int = 0) -> BinaryIO:
        what = f"read {self.uri(path)}"
        ftp = self._acquire()
        try:
            ftp.voidcmd("TYPE I")
            sock = ftp.transfercmd(f"RETR {path}", rest=offset or None)
        except BaseException as exc:
            if isinstance(exc, ftplib.error_perm):
                self._release(ftp)
            else:
                self._discard(ftp)
            raise _map_error(exc, what) from None
        reader = _FTPReader(self, ftp, sock)
        return ChunkReader(reader.read, reader.close,  # type: ignore[return-value]
                           lambda exc: _map_error(exc, what))

    def open_write(self, path: str, *, mtime_ns: int | None = None,
                   expect_version: str | None = None) -> Writer:
        make_parent(self, path)
        return _FTPWriter(self, path)

    # ------------------------------------------------------------ namespace
    def makedirs(self, path: str) -> None:
        def op(ftp: ftplib.FTP):
            parts = [p for p in path.split("/") if p]
            cur = "/" if path.startswith("/") else ""
            for part in parts:
                cur = posixpath.join(cur, part) if cur else part
                try:
                    ftp.mkd(cur)
                except ftplib.error_perm:
                    pass  # exists (or not allowed: the write that follows will say so)

        self._run(f"mkdir {self.uri(path)}", op)

    def rename(self, src: str, dst: str) -> None:
        def op(ftp: ftplib.FTP):
            try:
                ftp.rename(src, dst)
            except ftplib.error_perm:
                # Servers that refuse to replace: remove the old, complete copy, then rename.
                # Only when the new file is really there: never delete dst for nothing.
                try:
                    ftp.sendcmd(f"MLST {src}")
                except ftplib.error_perm:
                    raise FileNotFoundError(f"rename: {self.uri(src)} does not exist") from None
                ftp.delete(dst)
                ftp.rename(src, dst)

        self._run(f"rename {self.uri(src)} to {dst}", op)

    def delete_file(self, path: str) -> None:
        try:
            self._run(f"delete {self.uri(path)}", lambda ftp: ftp.delete(path))
        except FileNotFoundError:
            pass

    def delete_dir(self, path: str) -> None:
        try:
            self._run(f"rmdir {self.uri(path)}", lambda ftp: ftp.rmd(path))
        except (FileNotFoundError, FatalError):
            pass

    def set_times(self, path: str, mtime_ns: int) -> None:
        stamp = datetime.fromtimestamp(mtime_ns // 1_000_000_000, tz=UTC)
        self._run(f"set mtime of {self.uri(path)}",
                  lambda ftp: ftp.sendcmd(f"MFMT {stamp:%Y%m%d%H%M%S} {path}"))
