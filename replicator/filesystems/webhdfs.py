"""WebHDFS REST client (``webhdfs://namenode:9870/abs/path``, ``swebhdfs://`` for HTTPS).

A small client of our own on ``requests``, following the WebHDFS REST API
(https://hadoop.apache.org/docs/stable/hadoop-project-dist/hadoop-hdfs/WebHDFS.html):
LISTSTATUS_BATCH (paged; LISTSTATUS where the server lacks it), GETFILESTATUS, OPEN (redirected to a DataNode), CREATE in two steps (the
NameNode answers 307 with a DataNode URL; the data goes there with chunked transfer
encoding, streamed from the writer), RENAME with ``renameoptions=OVERWRITE`` (rename2:
atomic replace), DELETE, MKDIRS, SETTIMES and GETFILECHECKSUM.

Auth: ``user.name`` (simple auth; ``HADOOP_USER_NAME`` or the login name) or a delegation
token (option ``token``). Kerberos/SPNEGO is not implemented.

Checksums: kind ``crc32c`` is the file's COMPOSITE-CRC32C, the CRC32C of its bytes, asked of
the DataNodes without reading the data (``_hdfs_checksum``: WebHDFS's own GETFILECHECKSUM
always answers ``MD5-of-xMD5-of-yCRC32C`` on Hadoop 3.5, whatever the combine mode; a server
that does answer ``COMPOSITE-CRC32C`` there is used as is). Kind ``hdfs-md5crc`` is that
MD5-of-MD5 value, comparable only between clusters with the same block and chunk sizes.
"""

from __future__ import annotations

import contextlib
import getpass
import posixpath
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any, BinaryIO
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter

from replicator.errors import FatalError, ReplicatorError, RetryableError, UsageError
from replicator.filesystems._common import (
    ChunkReader,
    StreamChunks,
    clean_options,
    env,
    network_error,
    refuse_uri_password,
    secret,
    split_uri,
    uri_path,
    uri_user,
)
from replicator.filesystems._hdfs_attrs import keep_xattr
from replicator.filesystems.base import DIR, FILE, LINK, Capabilities, FileInfo, FileSystem, Writer
from replicator.secrets import redact

_RETRYABLE_EXC = {"StandbyException", "RetriableException", "SafeModeException",
                  "ObserverRetryOnActiveException"}
_FATAL_EXC = {"AccessControlException", "SecurityException", "AuthorizationException",
              "InvalidToken"}


MAX_LIST_PAGES = 1_000_000  # 10^9 entries at the default dfs.ls.limit of 1000


def _unsupported_op(message: str) -> bool:
    """The answer of a server without an op: ``Invalid value for webhdfs parameter "op"``
    (Hadoop's WebHDFS) or an UnsupportedOperationException."""
    return ('parameter "op"' in message or "UnsupportedOperationException" in message
            or "bad op" in message)


def _remote_error(r: requests.Response, what: str) -> BaseException:
    exc_name, message = "", r.text[:300]
    with contextlib.suppress(Exception):
        remote = r.json()["RemoteException"]
        exc_name, message = remote.get("exception", ""), remote.get("message", "")
    text = redact(f"{what}: HTTP {r.status_code} {exc_name} {message}".strip())
    if exc_name in _RETRYABLE_EXC:
        return RetryableError(text)
    if exc_name == "FileNotFoundException" or r.status_code == 404:
        return FileNotFoundError(text)
    if exc_name == "FileAlreadyExistsException":
        return FileExistsError(text)
    if exc_name in _FATAL_EXC or r.status_code in (401, 403):
        return FatalError(text)
    if r.status_code in (408, 429) or r.status_code >= 500:
        return RetryableError(text)
    return FatalError(text)


def stored_crc32c(fs: WebHDFSFileSystem, path: str) -> str | None:
    """``crc32c:...`` of an HDFS file from its DataNodes' block CRCs, or None where the cluster
    cannot give one (file being written, CRC32 chunks, erasure coding)."""
    from replicator.filesystems._hdfs_checksum import ChecksumUnavailable, composite_crc32c

    what = f"checksum {fs.uri(path)}"
    try:
        located = fs.block_locations(path)
    except FatalError:  # not a Hadoop NameNode (no such op): its GETFILECHECKSUM may do
        r = fs._call("GET", path, "GETFILECHECKSUM", what=what)
        fc = r.json()["FileChecksum"]
        if fc.get("algorithm") == "COMPOSITE-CRC32C":
            return f"crc32c:{fc['bytes'][-8:].lower()}"
        return None
    try:
        return f"crc32c:{composite_crc32c(located, timeout=fs._timeout):08x}"
    except ChecksumUnavailable:
        return None
    except OSError as exc:
        raise network_error(exc, what) from None


class _WebHDFSWriter(Writer):
    """CREATE: ask the NameNode, then stream to the DataNode from a bounded queue on a
    helper thread (memory: at most two chunks in flight)."""

    _END = object()

    def __init__(self, fs: WebHDFSFileSystem, path: str, blocksize: int | None = None) -> None:
        self.fs, self.path = fs, path
        self.what = f"write {fs.uri(path)}"
        params = {"overwrite": "true"}
        if blocksize or fs._blocksize:
            params["blocksize"] = str(blocksize or fs._blocksize)
        if fs._replication:
            params["replication"] = str(fs._replication)
        r = fs._call("PUT", path, "CREATE", params, allow_redirects=False,
                     ok=(307, 201, 200), what=self.what)
        if r.status_code == 307:
            self.location = r.headers["Location"]
        else:  # a NameNode that accepts the data itself (noredirect / HttpFS-like)
            self.location = r.url
        self.q: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.response: requests.Response | None = None
        self.aborted = False
        self.done = False
        self.thread = threading.Thread(target=self._send, daemon=True, name="webhdfs-create")
        self.thread.start()

    def _body(self) -> Iterator[bytes]:
        while True:
            item = self.q.get()
            if item is self._END:
                return
            if item is None:  # abort
                raise ConnectionAbortedError("write aborted")
            yield item

    def _send(self) -> None:
        try:
            self.response = self.fs._session().put(
                self.location, data=self._body(), timeout=self.fs._timeout,
                headers={"Content-Type": "application/octet-stream"})
        except BaseException as exc:
            self.error = exc
            # drain so a blocked writer wakes up
            with contextlib.suppress(queue.Empty):
                while True:
                    self.q.get_nowait()

    def _put(self, item) -> None:
        while True:
            if self.error is not None or not self.thread.is_alive():
                raise network_error(self.error or ConnectionError("upload ended"), self.what)
            try:
                self.q.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def write(self, data: bytes | memoryview) -> None:
        if data:
            self._put(bytes(data))

    def close(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            self._put(self._END)
            self.thread.join()
            if self.error is not None:
                raise network_error(self.error, self.what)
            r = self.response
            if r is None or r.status_code not in (200, 201):
                raise _remote_error(r, self.what) if r is not None else RetryableError(self.what)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.delete_file(self.path)
            raise

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        with contextlib.suppress(Exception):
            self.q.put(None, timeout=1)
        self.thread.join(timeout=self.fs._timeout)
        # The DataNode may still be writing what it received when the connection dropped:
        # delete, then make sure the partial file did not reappear behind our back.
        for delay in (0.0, 0.05, 0.1, 0.2, 0.4):
            time.sleep(delay)
            with contextlib.suppress(Exception):
                self.fs.delete_file(self.path)
                if delay and self.fs.stat(self.path) is None:
                    return


class WebHDFSFileSystem(StreamChunks, FileSystem):
    ranged_open = True
    scheme = "webhdfs"
    capabilities = Capabilities(
        hash_kinds=("crc32c",),  # COMPOSITE-CRC32C from the DataNodes (see above)
        mtime_precision_ns=1_000_000,
        atomic_rename=True,
        can_set_mtime=True,
        can_set_mode=True,
        directories=True,
        parallel_write=False,
        checksum_in_stat=False,
        attributes=("owner", "group", "replication", "blocksize", "acl", "xattr"),
    )

    def __init__(self, host: str, port: int = 9870, https: bool = False, user: str | None = None,
                 token: str | None = None, timeout: float = 60.0, verify: bool | str = True,
                 replication: int | None = None, blocksize: int | None = None) -> None:
        self._host = host
        self._port = int(port)
        self._https = bool(https)
        self._user = user or env("HADOOP_USER_NAME") or getpass.getuser()
        self._token = secret(token)
        self._timeout = float(timeout)
        self._verify = verify
        self._replication = replication
        self._blocksize = blocksize
        self._local = threading.local()
        self._batch_listing = True

    @classmethod
    def from_uri(cls, uri: str) -> tuple[FileSystem, str]:
        parts = split_uri(uri)
        refuse_uri_password(parts, parts.scheme.lower(), "WebHDFS takes a user name, a delegation "
                            "token or Kerberos")
        if not parts.hostname:
            raise UsageError(redact(f"webhdfs URI needs a NameNode host: {uri}"))
        https = parts.scheme.lower() == "swebhdfs"
        fs = cls(host=parts.hostname, port=parts.port or (9871 if https else 9870), https=https,
                 user=uri_user(parts))
        return fs, uri_path(parts)

    def options(self) -> dict[str, Any]:
        return clean_options({
            "host": self._host, "port": self._port, "https": self._https, "user": self._user,
            "token": self._token, "timeout": self._timeout, "verify": self._verify,
            "replication": self._replication, "blocksize": self._blocksize,
        })

    def uri(self, path: str) -> str:
        scheme = "swebhdfs" if self._https else "webhdfs"
        return f"{scheme}://{self._host}:{self._port}{path}"

    # ------------------------------------------------------------ HTTP
    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            s.verify = self._verify
            s.trust_env = False  # no proxies for cluster-internal endpoints
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            self._local.session = s
        return s

    def _url(self, path: str) -> str:
        proto = "https" if self._https else "http"
        return f"{proto}://{self._host}:{self._port}/webhdfs/v1{quote(path, safe='/')}"

    def _call(self, method: str, path: str, op: str, params: dict | None = None, *,
              ok: tuple[int, ...] = (200,), what: str, **kw: Any) -> requests.Response:
        p: dict[str, Any] = {"op": op}
        if self._token:
            p["delegation"] = self._token
        else:
            p["user.name"] = self._user
        p.update(params or {})
        try:
            r = self._session().request(method, self._url(path), params=p, timeout=self._timeout, **kw)
        except requests.RequestException as exc:
            raise network_error(exc, what) from None
        if r.status_code not in ok:
            err = _remote_error(r, what)
            r.close()
            raise err
        return r

    @staticmethod
    def _info(path: str, st: dict) -> FileInfo:
        t = st.get("type")
        kind = DIR if t == "DIRECTORY" else LINK if t == "SYMLINK" else FILE
        perm = st.get("permission")
        return FileInfo(path=path, kind=kind, size=int(st.get("length", 0)) if kind == FILE else 0,
                        mtime_ns=int(st.get("modificationTime", 0)) * 1_000_000,
                        mode=int(perm, 8) if perm else None)

    # ------------------------------------------------------------ metadata
    def list_dir(self, path: str) -> list[FileInfo]:
        """The entries under ``path``, read in pages of the NameNode's ``dfs.ls.limit`` with
        LISTSTATUS_BATCH (``startAfter`` = the last name of the previous page), so a huge
        directory never has to fit one response; servers without it get LISTSTATUS."""
        what = f"list {self.uri(path)}"
        statuses = self._list_batched(path, what) if self._batch_listing else None
        if statuses is None:
            r = self._call("GET", path, "LISTSTATUS", what=what)
            statuses = r.json()["FileStatuses"]["FileStatus"]
        if len(statuses) == 1 and statuses[0].get("pathSuffix") == "" and \
                statuses[0].get("type") == "FILE":
            raise NotADirectoryError(what)
        return [self._info(posixpath.join(path, s["pathSuffix"]), s) for s in statuses]

    def _list_batched(self, path: str, what: str) -> list[dict] | None:
        """All pages of LISTSTATUS_BATCH, or None where the server has no such op.

        The parameter is ``startafter``: Hadoop 3.5's NameNode ignores the documented spelling
        ``startAfter`` and answers the first page again (a client that sends it loops for
        ever). Names come in the NameNode's order (signed-byte, so ``日本`` before ``a``), so
        progress is checked by names already seen: a page that repeats one is an error,
        never an endless loop."""
        out: list[dict] = []
        seen: set[str] = set()
        after: str | None = None
        for _ in range(MAX_LIST_PAGES):
            params = {"startafter": after} if after is not None else None
            try:
                r = self._call("GET", path, "LISTSTATUS_BATCH", params, what=what)
            except FatalError as exc:
                if after is None and _unsupported_op(str(exc)):
                    self._batch_listing = False  # an older NameNode or a gateway: LISTSTATUS
                    return None
                raise
            listing = r.json()["DirectoryListing"]
            page = listing["partialListing"]["FileStatuses"]["FileStatus"]
            names = [st.get("pathSuffix", "") for st in page]
            if after is not None and (not page or seen.intersection(names)):
                raise RetryableError(f"{what}: LISTSTATUS_BATCH did not move past {after!r}")
            seen.update(names)
            out += page
            if int(listing.get("remainingEntries") or 0) <= 0:
                return out
            after = names[-1] if page else None
            if not after:
                raise RetryableError(f"{what}: LISTSTATUS_BATCH page without names")
        raise FatalError(f"{what}: more than {MAX_LIST_PAGES} listing pages")

    def stat(self, path: str) -> FileInfo | None:
        try:
            r = self._call("GET", path, "GETFILESTATUS", what=f"stat {self.uri(path)}")
        except FileNotFoundError:
            return None
        return self._info(path, r.json()["FileStatus"])

    def checksum(self, path: str, kind: str) -> str | None:
        if kind == "crc32c":
            return stored_crc32c(self, path)
        r = self._call("GET", path, "GETFILECHECKSUM", what=f"checksum {self.uri(path)}")
        fc = r.json()["FileChecksum"]
        value = f"hdfs-md5crc:{fc.get('algorithm', '')}:{fc['bytes'].lower()}"
        return value if value.startswith(kind + ":") else None

    def being_written(self, path: str) -> bool:
        try:
            return bool(self.block_locations(path).get("isUnderConstruction"))
        except FatalError:  # not a Hadoop NameNode (no such op): cannot tell
            return False

    def block_locations(self, path: str) -> dict:
        """The NameNode's ``LocatedBlocks`` of a file (WebHDFS ``GET_BLOCK_LOCATIONS``)."""
        r = self._call("GET", path, "GET_BLOCK_LOCATIONS", {"offset": "0", "length": str(1 << 62)},
                       what=f"block locations of {self.uri(path)}")
        return r.json()["LocatedBlocks"]

    # ------------------------------------------------------------ data
    def open_read(self, path: str, offset: int = 0, length: int | None = None) -> BinaryIO:
        what = f"read {self.uri(path)}"
        params = {"offset": str(offset)} if offset else {}
        if length is not None:
            params["length"] = str(length)
        r = self._call("GET", path, "OPEN", params, what=what, stream=True)
        return ChunkReader(r.raw.read, r.close,  # type: ignore[return-value]
                           lambda exc: network_error(exc, what))

    def open_write(self, path: str, *, mtime_ns: int | None = None,
                   expect_version: str | None = None, blocksize: int | None = None) -> Writer:
        return _WebHDFSWriter(self, path, blocksize)  # CREATE makes the parents

    def attributes(self, path: str, kinds: frozenset[str] | None = None) -> dict[str, Any]:
        what = f"stat {self.uri(path)}"
        st = self._call("GET", path, "GETFILESTATUS", what=what).json()["FileStatus"]
        out: dict[str, Any] = {"owner": st.get("owner"), "group": st.get("group"),
                               "replication": int(st.get("replication") or 0) or None,
                               "blocksize": int(st.get("blockSize") or 0) or None}
        if kinds is None or "acl" in kinds:
            out["acl"] = self.acl(path)
        if kinds is None or "xattr" in kinds:
            out["xattr"] = self.xattrs(path)
        return out

    def acl(self, path: str) -> list[str]:
        """The extended ACL entries (GETACLSTATUS), as spec strings (``user:bob:rwx``)."""
        r = self._call("GET", path, "GETACLSTATUS", what=f"ACL of {self.uri(path)}")
        return list(r.json()["AclStatus"].get("entries") or [])

    def xattrs(self, path: str) -> dict[str, str]:
        """Extended attributes (GETXATTRS, hex-encoded values), the ``raw.`` ones left out."""
        r = self._call("GET", path, "GETXATTRS", {"encoding": "hex"},
                       what=f"xattrs of {self.uri(path)}")
        return {x["name"]: x.get("value") or "0x" for x in r.json().get("XAttrs") or []
                if keep_xattr(x["name"])}

    def set_attributes(self, path: str, attrs: dict[str, Any]) -> None:
        what = f"set attributes of {self.uri(path)}"
        owner = {k: attrs[k] for k in ("owner", "group") if attrs.get(k)}
        if owner:
            self._call("PUT", path, "SETOWNER", owner, what=what)
        if attrs.get("replication"):
            self._call("PUT", path, "SETREPLICATION", {"replication": str(attrs["replication"])},
                       what=what)
        if attrs.get("acl"):  # added to the new file's (empty) ACL; the mask is recomputed
            self._call("PUT", path, "MODIFYACLENTRIES", {"aclspec": ",".join(attrs["acl"])},
                       what=f"set ACL of {self.uri(path)}")
        for name, value in sorted((attrs.get("xattr") or {}).items()):
            self.set_xattr(path, name, value)

    def set_xattr(self, path: str, name: str, value: str) -> None:
        """SETXATTR (``value``: ``0x`` hex), replacing a value the file already has."""
        what = f"set xattr {name} of {self.uri(path)}"
        params = {"xattr.name": name, "xattr.value": value or "0x"}
        try:
            self._call("PUT", path, "SETXATTR", {**params, "flag": "CREATE"}, what=what)
        except ReplicatorError as exc:
            if "already exists" not in str(exc) and "XAttr" not in str(exc):
                raise
            self._call("PUT", path, "SETXATTR", {**params, "flag": "REPLACE"}, what=what)

    # ------------------------------------------------------------ namespace
    def makedirs(self, path: str) -> None:
        self._call("PUT", path, "MKDIRS", what=f"mkdir {self.uri(path)}")

    def rename(self, src: str, dst: str) -> None:
        what = f"rename {self.uri(src)} to {dst}"
        r = self._call("PUT", src, "RENAME", {"destination": dst, "renameoptions": "OVERWRITE"},
                       what=what)
        with contextlib.suppress(ValueError):
            if r.content and r.json().get("boolean") is False:
                raise RetryableError(f"{what}: refused by the NameNode")

    # ------------------------------------------------------------ snapshots (HDFS)
    def create_snapshot(self, path: str, name: str) -> str:
        """CREATESNAPSHOT; returns the snapshot's path (``path/.snapshot/name``). Raises
        ReplicatorError (SnapshotException) where ``path`` is not snapshottable."""
        r = self._call("PUT", path, "CREATESNAPSHOT", {"snapshotname": name},
                       what=f"snapshot {self.uri(path)}")
        return r.json().get("Path") or posixpath.join(path, ".snapshot", name)

    def delete_snapshot(self, path: str, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._call("DELETE", path, "DELETESNAPSHOT", {"snapshotname": name},
                       what=f"delete snapshot {name} of {self.uri(path)}")

    def snapshot_names(self, path: str) -> list[str]:
        try:
            return [i.name for i in self.list_dir(posixpath.join(path, ".snapshot"))]
        except FileNotFoundError:
            return []

    def snapshot_diff(self, path: str, old: str, new: str) -> list[tuple[str, str, str | None]]:
        """GETSNAPSHOTDIFF (what DistCp -diff uses): ``(type, rel, target rel)`` with type
        CREATE, MODIFY, DELETE or RENAME, paths relative to ``path``."""
        r = self._call("GET", path, "GETSNAPSHOTDIFF",
                       {"oldsnapshotname": old, "snapshotname": new},
                       what=f"snapshot diff {old}..{new} of {self.uri(path)}")
        out = []
        for d in r.json()["SnapshotDiffReport"]["diffList"]:
            target = d.get("targetPath")
            out.append((d["type"], d.get("sourcePath", ""), target))
        return out

    def delete_file(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._call("DELETE", path, "DELETE", {"recursive": "false"},
                       what=f"delete {self.uri(path)}")

    def delete_dir(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError, ReplicatorError):
            self._call("DELETE", path, "DELETE", {"recursive": "false"},
                       what=f"rmdir {self.uri(path)}")

    def set_times(self, path: str, mtime_ns: int) -> None:
        self._call("PUT", path, "SETTIMES",
                   {"modificationtime": str(mtime_ns // 1_000_000), "accesstime": "-1"},
                   what=f"set mtime of {self.uri(path)}")

    def set_mode(self, path: str, mode: int) -> None:
        self._call("PUT", path, "SETPERMISSION", {"permission": f"{mode & 0o7777:o}"},
                   what=f"chmod {self.uri(path)}")
