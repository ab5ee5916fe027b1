"""HDFS over the native RPC protocol (``hdfs://namenode:8020/abs/path`` or a nameservice).

Client: ``pyarrow.fs.HadoopFileSystem`` when libhdfs and a Hadoop install are present
(``client: pyarrow``, or ``auto`` with ``ARROW_LIBHDFS_DIR``/``HADOOP_HOME`` pointing at
``libhdfs.so``); otherwise ``hdfs-native``, a pure Rust client that needs no JVM.

hdfs-native's default failover retries wait minutes against a dead NameNode, so we set
``dfs.client.failover.max.attempts`` (and the sleep bounds) low unless the caller's config
says otherwise: a dead NameNode fails in well under a second with a RetryableError, and
the engine's own retry/backoff takes over.

Configuration: ``HADOOP_CONF_DIR`` (core-site.xml/hdfs-site.xml: nameservices, HA),
``HADOOP_USER_NAME``, Kerberos via the ticket cache; or the options ``config`` (a dict of
Hadoop keys), ``config_dir``, ``kerberos_principal``/``kerberos_keytab``.

Checksums: with ``http_address`` (the NameNode's WebHDFS address, or ``dfs.namenode.http-address``
in ``config``) a file's COMPOSITE-CRC32C is asked of its DataNodes (``_hdfs_checksum``): the
CRC32C of the whole file, comparable with GCS and our manifest, without reading the data.

User: hdfs-native takes the user from ``HADOOP_USER_NAME`` (or the login name) when it
connects; it has no per-client user, so the ``user`` option applies only to the pyarrow client
and to checksum requests.

Tested against a real NameNode (MiniDFSCluster, tests/fixtures/hadoop.py): the whole contract
suite, permissions, a NameNode or DataNode stopped mid-copy. NOT tried: HA failover, Kerberos,
the pyarrow path (libhdfs.so is not in the Maven artifacts: it ships only in Hadoop's binary
tarball).
"""

from __future__ import annotations

import contextlib
import glob
import os
import posixpath
import threading
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from replicator.errors import FatalError, ReplicatorError, RetryableError, UsageError
from replicator.filesystems._common import (
    ChunkReader,
    StreamChunks,
    StreamWriter,
    clean_options,
    env,
    refuse_uri_password,
    split_uri,
    uri_path,
    uri_user,
)
from replicator.filesystems._hdfs_attrs import acl_entries, acl_spec
from replicator.filesystems.base import DIR, FILE, Capabilities, FileInfo, FileSystem, Writer
from replicator.secrets import redact

FAST_FAIL = {
    "dfs.client.failover.max.attempts": "1",
    "dfs.client.failover.sleep.base.millis": "100",
    "dfs.client.failover.sleep.max.millis": "1000",
}


def libhdfs_available() -> bool:
    for var in ("ARROW_LIBHDFS_DIR", "HADOOP_HOME"):
        base = env(var)
        if base and glob.glob(os.path.join(base, "**", "libhdfs.so*"), recursive=True):
            return True
    return False


def _map_error(exc: BaseException, what: str) -> BaseException:
    if isinstance(exc, (ReplicatorError, FileNotFoundError, FileExistsError, IsADirectoryError,
                        NotADirectoryError)):
        return exc
    text = redact(f"{what}: {type(exc).__name__}: {exc}")
    msg = str(exc)
    if isinstance(exc, PermissionError) or "AccessControlException" in msg:
        return FatalError(text)
    if "FileNotFoundException" in msg or "not found" in msg.lower():
        return FileNotFoundError(text)
    if isinstance(exc, (OSError, ConnectionError, TimeoutError)) or "RPC" in msg:
        return RetryableError(text)
    return exc


class _HDFSWriter(StreamWriter):
    def __init__(self, fs: HDFSFileSystem, path: str, blocksize: int | None = None) -> None:
        super().__init__(fs, path, _map_error)
        self.f = fs._guard(self.what, fs._open_output, path, blocksize)

    def _send(self, data: bytes | memoryview) -> None:
        self.f.write(data)

    def _finish(self) -> None:
        self.f.close()

    _close_stream = _finish


class HDFSFileSystem(StreamChunks, FileSystem):
    scheme = "hdfs"
    capabilities = Capabilities(
        hash_kinds=("crc32c",),  # COMPOSITE-CRC32C from the DataNodes, with http_address
        mtime_precision_ns=1_000_000,
        atomic_rename=True,  # rename with overwrite (rename2)
        can_set_mtime=True,
        can_set_mode=True,
        directories=True,
        parallel_write=False,
        checksum_in_stat=False,
        attributes=("owner", "group", "replication", "blocksize", "acl", "xattr"),
    )

    def __init__(self, url: str, client: str = "auto", config: dict[str, str] | None = None,
                 config_dir: str | None = None, kerberos_principal: str | None = None,
                 kerberos_keytab: str | None = None, user: str | None = None,
                 http_address: str | None = None, blocksize: int | None = None,
                 replication: int | None = None) -> None:
        if client not in ("auto", "native", "pyarrow"):
            raise UsageError(f"hdfs client: expected auto, native or pyarrow, got {client!r}")
        self._url = url
        self._client_kind = client
        self._config = dict(config or {})
        self._config_dir = config_dir
        self._principal = kerberos_principal
        self._keytab = kerberos_keytab
        self._user = user
        self._http_address = http_address
        self._blocksize = int(blocksize) if blocksize else None
        self._replication = int(replication) if replication else None
        self._lock = threading.Lock()
        self._client = None
        self._kind: str | None = None

    @classmethod
    def from_uri(cls, uri: str) -> tuple[FileSystem, str]:
        parts = split_uri(uri)
        refuse_uri_password(parts, "hdfs", "HDFS authenticates with Kerberos or a user name")
        host = parts.netloc.rpartition("@")[2]
        if not host:
            raise UsageError(redact(f"hdfs URI needs a NameNode or nameservice: {uri}"))
        return cls(url=f"hdfs://{host}", user=uri_user(parts)), uri_path(parts)

    def options(self) -> dict[str, Any]:
        return clean_options({
            "url": self._url, "client": self._client_kind, "config": self._config or None,
            "config_dir": self._config_dir, "kerberos_principal": self._principal,
            "kerberos_keytab": self._keytab, "user": self._user,
            "http_address": self._http_address, "blocksize": self._blocksize,
            "replication": self._replication,
        })

    def uri(self, path: str) -> str:
        return f"{self._url}{path}"

    def effective_config(self) -> dict[str, str]:
        return {**FAST_FAIL, **self._config}

    def client_kind(self) -> str:
        if self._client_kind != "auto":
            return self._client_kind
        return "pyarrow" if libhdfs_available() else "native"

    def _get(self):
        if self._client is not None:  # set once, after _kind
            return self._client
        with self._lock:
            if self._client is None:
                self._kind = self.client_kind()
                what = f"connect {self._url}"
                try:
                    if self._kind == "pyarrow":
                        from pyarrow import fs as pafs

                        parts = urlsplit(self._url)
                        self._client = pafs.HadoopFileSystem(
                            parts.hostname or "default", parts.port or 8020,
                            user=self._user or env("HADOOP_USER_NAME"),
                            extra_conf=self.effective_config())
                    else:
                        import hdfs_native

                        kw: dict[str, Any] = {}
                        if self._principal:
                            kw["kerberos_principal"] = self._principal
                        if self._keytab:
                            kw["kerberos_keytab"] = self._keytab
                        self._client = hdfs_native.Client(
                            self._url, config=self.effective_config(),
                            config_dir=self._config_dir, **kw)
                except Exception as exc:
                    raise _map_error(exc, what) from None
            return self._client

    def _guard(self, what: str, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:
            raise _map_error(exc, what) from None

    # ------------------------------------------------------------ metadata
    def _native_info(self, path: str, st) -> FileInfo:
        kind = DIR if st.isdir else FILE
        return FileInfo(path=path, kind=kind, size=int(st.length) if kind == FILE else 0,
                        mtime_ns=int(st.modification_time) * 1_000_000, mode=st.permission)

    @staticmethod
    def _arrow_info(st) -> FileInfo:
        from pyarrow import fs as pafs

        kind = DIR if st.type == pafs.FileType.Directory else FILE
        return FileInfo(path=st.path, kind=kind, size=int(st.size or 0) if kind == FILE else 0,
                        mtime_ns=int(st.mtime_ns or 0))

    def list_dir(self, path: str) -> list[FileInfo]:
        c = self._get()
        what = f"list {self.uri(path)}"
        if self._kind == "pyarrow":
            from pyarrow import fs as pafs

            infos = self._guard(what, c.get_file_info, pafs.FileSelector(path))
            return [self._arrow_info(i) for i in infos]
        return [self._native_info(posixpath.join(path, posixpath.basename(s.path)), s)
                for s in self._guard(what, lambda: list(c.list_status(path)))]

    def stat(self, path: str) -> FileInfo | None:
        c = self._get()
        what = f"stat {self.uri(path)}"
        try:
            if self._kind == "pyarrow":
                from pyarrow import fs as pafs

                info = self._guard(what, c.get_file_info, path)
                return None if info.type == pafs.FileType.NotFound else self._arrow_info(info)
            return self._native_info(path, self._guard(what, c.get_file_info, path))
        except FileNotFoundError:
            return None

    def http_address(self) -> str | None:
        """The NameNode's HTTP address (option ``http_address`` or the Hadoop key
        ``dfs.namenode.http-address``): where block locations for checksums are asked."""
        addr = self._http_address or self._config.get("dfs.namenode.http-address")
        if not addr:
            return None
        return addr if "://" in addr else f"http://{addr}"

    def _web(self):
        from replicator.filesystems.webhdfs import WebHDFSFileSystem

        parts = urlsplit(self.http_address() or "")
        return WebHDFSFileSystem(host=parts.hostname or "", port=parts.port or 9870,
                                 https=parts.scheme == "https",
                                 user=self._user or env("HADOOP_USER_NAME"))

    def being_written(self, path: str) -> bool:
        """An open lease, seen in the block locations (needs ``http_address``: hdfs-native's
        file status does not say)."""
        if not self.http_address():
            return False
        web = self._web()
        try:
            return web.being_written(path)
        finally:
            web.close()

    def checksum(self, path: str, kind: str) -> str | None:
        """COMPOSITE-CRC32C (``crc32c:``) from the DataNodes' block CRCs, no data read; None
        without an HTTP address or where the cluster cannot give it (see _hdfs_checksum)."""
        addr = self.http_address()
        if kind != "crc32c" or not addr:
            return None
        from replicator.filesystems.webhdfs import stored_crc32c

        web = self._web()
        try:
            return stored_crc32c(web, path)
        finally:
            web.close()

    # ------------------------------------------------------------ data
    def open_read(self, path: str, offset: int = 0) -> BinaryIO:
        c = self._get()
        what = f"read {self.uri(path)}"
        if self._kind == "pyarrow":
            f = self._guard(what, c.open_input_file, path)
        else:
            f = self._guard(what, c.read, path)
        if offset:
            f.seek(offset)
        return ChunkReader(f.read, f.close, lambda exc: _map_error(exc, what))  # type: ignore[return-value]

    def attributes(self, path: str, kinds: frozenset[str] | None = None) -> dict[str, Any]:
        c = self._get()
        if self._kind != "native":
            return {}
        what = f"stat {self.uri(path)}"
        st = self._guard(what, c.get_file_info, path)
        out: dict[str, Any] = {"owner": st.owner, "group": st.group,
                               "replication": int(st.replication), "blocksize": int(st.blocksize)}
        if kinds is None or "acl" in kinds:
            status = self._guard(f"ACL of {self.uri(path)}", c.get_acl_status, path)
            out["acl"] = [acl_spec(e) for e in status.entries]
        if (kinds is None and self.http_address()) or (kinds and "xattr" in kinds):
            out["xattr"] = self._with_web("xattrs", path)
        return out

    def set_attributes(self, path: str, attrs: dict[str, Any]) -> None:
        c = self._get()
        what = f"set attributes of {self.uri(path)}"
        if self._kind != "native":
            raise FatalError(f"{what}: not supported by the pyarrow client")
        if attrs.get("owner") or attrs.get("group"):
            self._guard(what, lambda: c.set_owner(path, attrs.get("owner"), attrs.get("group")))
        if attrs.get("replication"):
            self._guard(what, lambda: c.set_replication(path, int(attrs["replication"])))
        if attrs.get("acl"):  # added to the new file's (empty) ACL; the mask is recomputed
            self._guard(f"set ACL of {self.uri(path)}",
                        lambda: c.modify_acl_entries(path, acl_entries(attrs["acl"])))
        for name, value in sorted((attrs.get("xattr") or {}).items()):
            self._with_web("set_xattr", path, name, value)

    def attribute_support(self, kinds: frozenset[str]) -> str | None:
        """hdfs-native has ACL calls but none for extended attributes: those go through the
        NameNode's WebHDFS (``http_address``). The pyarrow client keeps no attributes."""
        if self.client_kind() == "pyarrow" and kinds & {"acl", "xattr"}:
            return f"{self._url}: the pyarrow HDFS client cannot read or set ACLs or xattrs"
        if "xattr" in kinds and not self.http_address():
            return (f"{self._url}: hdfs-native has no extended-attribute calls; give the "
                    f"NameNode's HTTP address (option http_address, or dfs.namenode.http-address "
                    f"in config) so xattrs go through WebHDFS, or use a webhdfs:// URI")
        return super().attribute_support(kinds)

    # ------------------------------------------------------------ snapshots (--snapshot-diff)
    # hdfs-native has no snapshot calls: they go to the NameNode's WebHDFS (http_address);
    # the data is still read over RPC, from root/.snapshot/<name>/.
    def create_snapshot(self, path: str, name: str) -> str:
        return self._with_web("create_snapshot", path, name, what="--snapshot-diff")

    def delete_snapshot(self, path: str, name: str) -> None:
        self._with_web("delete_snapshot", path, name, what="--snapshot-diff")

    def snapshot_names(self, path: str) -> list[str]:
        return self._with_web("snapshot_names", path, what="--snapshot-diff")

    def snapshot_diff(self, path: str, old: str, new: str) -> list[tuple[str, str, str | None]]:
        return self._with_web("snapshot_diff", path, old, new, what="--snapshot-diff")

    def _with_web(self, method: str, *args: Any, what: str = "--preserve xattr") -> Any:
        """``method`` of the NameNode's WebHDFS, for what hdfs-native cannot do (xattrs,
        snapshots); without ``http_address`` a usage error (exit 2) naming the option."""
        if not self.http_address():
            raise UsageError(
                f"{what} over {self._url}: hdfs-native has no "
                f"{'snapshot' if 'snapshot' in what else 'extended-attribute'} calls; give the "
                f"NameNode's HTTP address (option http_address, or dfs.namenode.http-address in "
                f"config) so they go through WebHDFS, or use a webhdfs:// URI")
        web = self._web()
        try:
            return getattr(web, method)(*args)
        finally:
            web.close()

    def _open_output(self, path: str, blocksize: int | None = None):
        c = self._get()
        if self._kind == "pyarrow":
            c.create_dir(posixpath.dirname(path), recursive=True)
            return c.open_output_stream(path)
        import hdfs_native

        opts = hdfs_native.WriteOptions(overwrite=True, create_parent=True)
        if blocksize or self._blocksize:  # the block size and replication of new files
            opts.block_size = int(blocksize or self._blocksize)  # (else the cluster's)
        if self._replication:
            opts.replication = self._replication
        return c.create(path, opts)

    def open_write(self, path: str, *, mtime_ns: int | None = None,
                   expect_version: str | None = None, blocksize: int | None = None) -> Writer:
        return _HDFSWriter(self, path, blocksize)

    # ------------------------------------------------------------ namespace
    def makedirs(self, path: str) -> None:
        c = self._get()
        what = f"mkdir {self.uri(path)}"
        if self._kind == "pyarrow":
            self._guard(what, c.create_dir, path, True)
        else:
            self._guard(what, lambda: c.mkdirs(path, create_parent=True))

    def rename(self, src: str, dst: str) -> None:
        c = self._get()
        what = f"rename {self.uri(src)} to {dst}"
        if self._kind == "pyarrow":
            # libhdfs's rename does not overwrite: remove the old, complete copy first
            with contextlib.suppress(Exception):
                c.delete_file(dst)
            self._guard(what, c.move, src, dst)
        else:
            self._guard(what, lambda: c.rename(src, dst, overwrite=True))

    def delete_file(self, path: str) -> None:
        c = self._get()
        try:
            if self._kind == "pyarrow":
                self._guard(f"delete {self.uri(path)}", c.delete_file, path)
            else:
                self._guard(f"delete {self.uri(path)}", c.delete, path, False)
        except FileNotFoundError:
            pass

    def delete_dir(self, path: str) -> None:
        c = self._get()
        with contextlib.suppress(Exception):
            if self._kind == "native":
                c.delete(path, False)
                return
            from pyarrow import fs as pafs

            if not c.get_file_info(pafs.FileSelector(path)):  # empty
                c.delete_dir(path)

    def set_times(self, path: str, mtime_ns: int) -> None:
        c = self._get()
        if self._kind == "pyarrow":
            raise NotImplementedError("pyarrow's HadoopFileSystem cannot set times")
        ms = mtime_ns // 1_000_000
        # hdfs-native takes unsigned times (Java's -1 "leave atime" overflows): atime = mtime
        self._guard(f"set mtime of {self.uri(path)}", lambda: c.set_times(path, ms, ms))

    def set_mode(self, path: str, mode: int) -> None:
        c = self._get()
        if self._kind == "native":
            self._guard(f"chmod {self.uri(path)}", lambda: c.set_permission(path, mode & 0o7777))
