"""Session-scoped real servers and one ``backend`` fixture parametrized over every back end."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from replicator.filesystems.base import FileSystem
from tests.fixtures.gcs import BUCKET
from tests.replicator.filesystems.servers import FTPServer, Moto, WebHDFS


def _server(tmp_path_factory, cls):
    srv = cls(tmp_path_factory.mktemp(cls.name))
    srv.start()
    return srv


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[Moto]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    srv = _server(tmp_path_factory, Moto)
    srv.create_bucket(BUCKET)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def ftp_server(tmp_path_factory) -> Iterator[FTPServer]:
    srv = _server(tmp_path_factory, FTPServer)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def webhdfs_server(tmp_path_factory) -> Iterator[WebHDFS]:
    """Our stub WebHDFS server: only for faults the real NameNode cannot be made to show
    (a DataNode that drops mid-stream, recorded request sequences); the contract suite runs
    against the real cluster (``hdfs_cluster``)."""
    srv = WebHDFS(tmp_path_factory.mktemp("webhdfs"))
    srv.start()
    yield srv
    srv.stop()


@dataclass
class Backend:
    """A back end under test: a fresh empty ``root`` (native path) and how to rebuild it."""

    name: str
    fs: FileSystem
    root: str
    remote: dict  # a named-remote spec (type + options) reaching the same server
    secrets: list[str] = field(default_factory=list)

    def path(self, rel: str) -> str:
        return self.fs.join(self.root, rel)

    def new_fs(self) -> FileSystem:
        from replicator.filesystems.registry import filesystem_from_options

        return filesystem_from_options(self.fs.scheme, self.fs.options())


def make_backend(name: str, request, tmp_path: Path) -> Backend:
    unique = f"t-{uuid.uuid4().hex[:10]}"
    if name == "local":
        from replicator.filesystems.local import LocalFileSystem

        root = tmp_path / "local-root"
        root.mkdir()
        return Backend(name, LocalFileSystem(), str(root), {"type": "file"})
    if name == "gs":
        from replicator.filesystems.gcs import GCSFileSystem

        srv = request.getfixturevalue("gcs_server")
        opts = {"endpoint": srv.url, "anonymous": True}
        return Backend(name, GCSFileSystem(**opts), f"{BUCKET}/{unique}",
                       {"type": "gs", "root": f"{BUCKET}/{unique}", **opts})
    if name == "s3":
        from replicator.filesystems.s3 import S3FileSystem

        srv = request.getfixturevalue("s3_server")
        opts = {"endpoint_url": srv.url, "access_key_id": srv.access_key,
                "secret_access_key": srv.secret_key, "region": "us-east-1"}
        return Backend(name, S3FileSystem(**opts), f"{BUCKET}/{unique}",
                       {"type": "s3", "root": f"{BUCKET}/{unique}", **opts}, [srv.secret_key])
    if name == "ftp":
        from replicator.filesystems.ftp import FTPFileSystem

        srv = request.getfixturevalue("ftp_server")
        (srv.root / unique).mkdir()
        opts = {"host": "127.0.0.1", "port": srv.port, "user": srv.user, "password": srv.password}
        return Backend(name, FTPFileSystem(**opts), f"/{unique}",
                       {"type": "ftp", "root": f"/{unique}", **opts}, [srv.password])
    if name == "sftp":
        from replicator.filesystems.sftp import SFTPFileSystem

        srv = request.getfixturevalue("sftp_server")
        root = srv.root / unique
        root.mkdir()
        opts = srv.fs_options()
        return Backend(name, SFTPFileSystem(**opts), str(root),
                       {"type": "sftp", "root": str(root), **opts})
    if name == "webhdfs":  # the real NameNode's WebHDFS (MiniDFSCluster)
        from replicator.filesystems.webhdfs import WebHDFSFileSystem

        cluster = request.getfixturevalue("hdfs_cluster")
        host, port = cluster.webhdfs.removeprefix("http://").split(":")
        opts = {"host": host, "port": int(port), "user": cluster.superuser}
        fs = WebHDFSFileSystem(**opts)
        fs.makedirs(f"/{unique}")
        return Backend(name, fs, f"/{unique}", {"type": "webhdfs", "root": f"/{unique}", **opts})
    if name == "hdfs":  # hdfs-native over RPC to the real NameNode
        from replicator.filesystems.hdfs import HDFSFileSystem

        cluster = request.getfixturevalue("hdfs_cluster")
        opts = {"url": cluster.hdfs, "client": "native", "http_address": cluster.webhdfs}
        fs = HDFSFileSystem(**opts)
        fs.makedirs(f"/{unique}")
        return Backend(name, fs, f"/{unique}", {"type": "hdfs", "root": f"/{unique}", **opts})
    raise AssertionError(name)


BACKENDS = ["local", "gs", "s3", "ftp", "sftp", "webhdfs", "hdfs"]


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path) -> Iterator[Backend]:
    b = make_backend(request.param, request, tmp_path)
    yield b
    b.fs.close()


@pytest.fixture
def remotes_file(tmp_path, monkeypatch):
    """Write named remotes to a YAML file and point REPLICATOR_REMOTES at it."""

    def write(remotes: dict[str, dict]) -> Path:
        path = tmp_path / "remotes.yaml"
        path.write_text(yaml.safe_dump({"remotes": remotes}))
        monkeypatch.setenv("REPLICATOR_REMOTES", str(path))
        return path

    return write
