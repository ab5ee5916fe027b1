"""``--executor distcp`` between two real HDFS clusters (MiniDFSCluster, scripts/hadoop.py):
real DistCp on the local MapReduce runner, our listing, diff, plan, checks and manifest."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

import pytest

from replicator import api
from replicator.filesystems.registry import resolve
from replicator.options import CopyOptions

REPO = Path(__file__).resolve().parents[3]
FILES = {
    "dt=2026-11-20/part-00000.parquet": os.urandom(200_000),
    "dt=2026-11-20/part-00001.parquet": os.urandom(3_000),
    "names/with space \u00e9\u00e8.csv": "caf\u00e9,1\n".encode(),
    "empty": b"",
    "deep/a/b/c/d/leaf.bin": os.urandom(70_000),
}


@pytest.fixture
def distcp_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from scripts.maven import classpath

    monkeypatch.setenv("REPLICATOR_HADOOP_CLASSPATH", classpath("hadoop"))
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)


def put_tree(tmp_path: Path, uri: str, files: dict[str, bytes]) -> None:
    local = tmp_path / "seed"
    for rel, data in files.items():
        (local / rel).parent.mkdir(parents=True, exist_ok=True)
        (local / rel).write_bytes(data)
    # preserve nothing: hdfs-native set_times(mtime, atime=-1) overflows (the hdfs back end's)
    seeded = api.copy(str(local), uri, CopyOptions(state_path=str(tmp_path / "seed.db"),
                                                   preserve=frozenset()))
    assert seeded.ok, seeded.failures


def opts(tmp_path: Path, **kw) -> CopyOptions:
    return CopyOptions(state_path=str(tmp_path / "state.db"), executor="distcp", workers=2,
                       **kw).validated()


def test_distcp_between_two_clusters(tmp_path: Path, hdfs_cluster, hdfs_cluster_b,
                                     distcp_env):
    src_dir, dst_dir = hdfs_cluster.fresh_dir("src"), hdfs_cluster_b.fresh_dir("dr")
    src, dst = hdfs_cluster.uri(src_dir), hdfs_cluster_b.uri(dst_dir)
    put_tree(tmp_path, src, FILES)

    report = api.copy(src, dst, opts(tmp_path, marker="_COPY_DONE"))
    assert report.ok, report.failures or report.error
    assert report.executor == "distcp" and report.files_copied == len(FILES)
    assert report.executor_details["counters"]["DistCp Counters"]["Files Copied"] == len(FILES)
    dst_fs, dst_root = resolve(dst)
    for rel, data in FILES.items():
        info = dst_fs.stat(dst_fs.join(dst_root, rel))
        assert info is not None and info.size == len(data), rel
        algo_a, sum_a = hdfs_cluster.checksum(posixpath.join(src_dir, rel))
        algo_b, sum_b = hdfs_cluster_b.checksum(posixpath.join(dst_dir, rel))
        assert (algo_a, sum_a) == (algo_b, sum_b), rel
        if data:  # an empty file's checksum is Hadoop's fixed MD5-of-0MD5-of-0CRC32
            assert algo_a == "COMPOSITE-CRC32C", rel
    assert dst_fs.stat(dst_fs.join(dst_root, "_COPY_DONE")) is not None

    again = api.copy(src, dst, opts(tmp_path))
    assert again.ok and again.files_copied == 0 and again.files_skipped == len(FILES)

    src_fs, src_root = resolve(src)
    with src_fs.open_write(src_fs.join(src_root, "dt=2026-11-20/part-00001.parquet")) as w:
        w.write(b"rewritten partition")
    changed = api.copy(src, dst, opts(tmp_path))
    assert changed.ok and changed.files_copied == 1 and changed.files_updated == 1
    assert hdfs_cluster.checksum(posixpath.join(src_dir, "dt=2026-11-20/part-00001.parquet")) \
        == hdfs_cluster_b.checksum(posixpath.join(dst_dir, "dt=2026-11-20/part-00001.parquet"))
    check = api.verify(src, dst, CopyOptions(marker="_COPY_DONE"))
    assert check.identical, (check.missing, check.extra, check.differing)


def test_unreadable_source_file_fails_alone(tmp_path: Path, hdfs_cluster, hdfs_cluster_b,
                                            distcp_env, monkeypatch: pytest.MonkeyPatch):
    src_dir, dst_dir = hdfs_cluster.fresh_dir("src"), hdfs_cluster_b.fresh_dir("dr")
    src, dst = hdfs_cluster.uri(src_dir), hdfs_cluster_b.uri(dst_dir)
    put_tree(tmp_path, src, {"ok/a": b"a", "ok/b": b"bb", "secret": b"no"})
    src_fs, src_root = resolve(src)
    src_fs.set_mode(src_fs.join(src_root, "secret"), 0o000)
    dst_fs, dst_root = resolve(dst)
    dst_fs.makedirs(dst_root)
    dst_fs.set_mode(dst_root, 0o777)
    monkeypatch.setenv("HADOOP_USER_NAME", "nobody")  # not the superuser: permissions apply

    report = api.copy(src, dst, opts(tmp_path))
    assert not report.ok and report.exit_code == 1
    errors = {f.path: f.error for f in report.failures}
    assert list(errors) == ["secret"], errors
    assert "ermission" in errors["secret"], errors
    assert report.files_copied == 2
    assert dst_fs.stat(dst_fs.join(dst_root, "secret")) is None
    names = [i.name for i in dst_fs.list_dir(dst_root)]
    assert not [n for n in names if n.startswith(".distcp.tmp")], names
