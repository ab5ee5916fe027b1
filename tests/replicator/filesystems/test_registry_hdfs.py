"""Scheme registry, named remotes, and HDFS (no NameNode runs here: construction, options,
pickling, and a dead NameNode failing fast)."""

from __future__ import annotations

import pickle
import subprocess
import sys
import time

import pytest

from replicator.errors import RetryableError, UsageError, is_retryable
from replicator.filesystems.registry import known_schemes, resolve


def test_every_scheme_registered_and_lazy():
    assert {"file", "gs", "s3", "ftp", "sftp", "hdfs", "webhdfs"} <= set(known_schemes())
    code = ("import sys, replicator.filesystems.registry as r\n"
            "r.resolve('/tmp')\n"
            "bad = [m for m in ('boto3', 'paramiko', 'hdfs_native', 'requests', 'google.auth')"
            " if m in sys.modules]\n"
            "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # client libraries load on first use of their scheme


@pytest.mark.parametrize("uri,root", [
    ("gs://bucket/a/b", "bucket/a/b"), ("s3://bucket", "bucket"),
    ("ftp://u@host:2121/in%20box", "/in box"), ("sftp://u@host/data/x", "/data/x"),
    ("webhdfs://nn:9870/warehouse/t", "/warehouse/t"), ("hdfs://nameservice1/warehouse", "/warehouse"),
])
def test_resolve_uris_without_network(uri, root):
    fs, native = resolve(uri)
    assert native == root
    clone = pickle.loads(pickle.dumps(fs))
    assert clone.options() == fs.options()


def test_named_remotes(remotes_file, monkeypatch):
    monkeypatch.setenv("LAKE_TOKEN", "tok-123456")
    remotes_file({
        "lake": {"type": "gs", "root": "bkt/warehouse", "endpoint": "http://127.0.0.1:1",
                 "token": "${LAKE_TOKEN}"},
        "drop": {"type": "sftp", "root": "/srv/in", "host": "h", "username": "etl"},
    })
    fs, root = resolve("lake:/db/t/dt=1")
    assert fs.scheme == "gs" and root == "bkt/warehouse/db/t/dt=1"
    assert fs.options()["token"] == "tok-123456"
    fs, root = resolve("drop:")
    assert fs.scheme == "sftp" and root == "/srv/in"
    _, root = resolve("drop:/a b/c")
    assert root == "/srv/in/a b/c"
    fs, _ = resolve("notaremote:/x")  # unknown names stay local paths
    assert fs.scheme == "file"


def test_bad_remote_config_names_the_file(remotes_file):
    path = remotes_file({"x": {"root": "/y"}})
    with pytest.raises(UsageError, match=r"remotes\.x"):
        resolve("x:/a")
    assert path.exists()
    remotes_file({"x": {"type": "sftp", "bogus_option": 1, "host": "h"}})
    with pytest.raises(UsageError, match="bad options"):
        resolve("x:/a")


def test_hdfs_options_and_client_choice(monkeypatch):
    from replicator.filesystems.hdfs import FAST_FAIL, HDFSFileSystem

    monkeypatch.delenv("HADOOP_HOME", raising=False)
    monkeypatch.delenv("ARROW_LIBHDFS_DIR", raising=False)
    fs, root = resolve("hdfs://nn.example:8020/warehouse/db")
    assert isinstance(fs, HDFSFileSystem) and root == "/warehouse/db"
    assert fs.client_kind() == "native"  # no libhdfs here
    assert fs.effective_config()["dfs.client.failover.max.attempts"] == FAST_FAIL[
        "dfs.client.failover.max.attempts"]
    custom = HDFSFileSystem(url="hdfs://ns1", config={"dfs.client.failover.max.attempts": "5"})
    assert custom.effective_config()["dfs.client.failover.max.attempts"] == "5"
    assert pickle.loads(pickle.dumps(custom)).options() == custom.options()
    with pytest.raises(UsageError):
        HDFSFileSystem(url="hdfs://x", client="jni")


def test_dead_namenode_fails_fast():
    from replicator.filesystems.hdfs import HDFSFileSystem
    from tests.replicator.filesystems.servers import free_port

    fs = HDFSFileSystem(url=f"hdfs://127.0.0.1:{free_port()}")
    start = time.monotonic()
    with pytest.raises(RetryableError) as info:
        fs.list_dir("/")
    assert is_retryable(info.value)
    assert time.monotonic() - start < 60  # hdfs-native's defaults retry for minutes


def test_scheme_without_slashes_is_refused_not_copied_locally(tmp_path, run_cli):
    """``hdfs:data/x`` once became a local directory named ``hdfs:data`` in the working dir."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"x")
    for uri in ("hdfs:relative/dir", "gs:bucket/x", "webhdfs:nn/x"):
        result = run_cli("copy", str(tmp_path / "src"), uri)
        assert result.returncode == 2, result.stdout
        assert "needs '//' and an absolute path" in result.stderr
        assert not (tmp_path / uri.split("/")[0]).exists()
