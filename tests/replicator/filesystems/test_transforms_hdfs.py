"""Transforms to a real HDFS (MiniDFSCluster), over hdfs:// and webhdfs://: gunzip outputs
are staged and renamed; an untar directory is expanded beside the previous one and swapped
in, and a tar that fails half-way leaves the previous directory whole."""

from __future__ import annotations

import gzip
import os

import pytest

from replicator.api import copy
from replicator.filesystems.registry import resolve
from replicator.options import CopyOptions
from tests.replicator.filesystems.transform_helpers import T0, tar_bytes, write_file


def _tree(uri: str) -> dict[str, bytes]:
    fs, root = resolve(uri)
    out: dict[str, bytes] = {}
    todo = [root]
    while todo:
        for info in fs.list_dir(todo.pop()):
            if info.kind == "d":
                todo.append(info.path)
            else:
                out[info.path[len(root):].lstrip("/")] = b"".join(fs.read_chunks(info.path))
    return out


@pytest.mark.parametrize("scheme", ["hdfs", "webhdfs"])
def test_transforms_to_real_hdfs(hdfs_cluster, tmp_path, scheme) -> None:
    src = tmp_path / "src"
    body = os.urandom(300_000)
    write_file(src / "x.csv.gz", gzip.compress(body))
    write_file(src / "t.tar", tar_bytes({"a.csv": b"a1", "sub/b.csv": b"b1"}))
    path = hdfs_cluster.fresh_dir()
    dst = hdfs_cluster.uri(path) if scheme == "hdfs" else hdfs_cluster.webhdfs_uri(path)
    opts = CopyOptions(state_path=str(tmp_path / "state.db"), workers=2, transforms=("gunzip", "untar"))
    report = copy(str(src), dst, opts)
    assert report.ok, report.failures
    assert _tree(dst) == {"x.csv": body, "t/a.csv": b"a1", "t/sub/b.csv": b"b1"}
    assert copy(str(src), dst, opts).files_copied == 0
    # a new tar that is cut half-way: fails alone, the previous directory stays whole
    whole = tar_bytes({"a.csv": b"a2", "big.bin": os.urandom(100_000)})
    write_file(src / "t.tar", whole[:60_000], T0 + 60)
    bad = copy(str(src), dst, opts)
    assert [f.path for f in bad.failures] == ["t.tar"] and "untar t.tar" in bad.failures[0].error
    assert _tree(dst) == {"x.csv": body, "t/a.csv": b"a1", "t/sub/b.csv": b"b1"}
    # the whole tar: swapped in, members dropped from the tar are gone
    write_file(src / "t.tar", tar_bytes({"a.csv": b"a2"}), T0 + 120)
    good = copy(str(src), dst, opts)
    assert good.ok and good.files_copied == 1, good.failures
    assert _tree(dst) == {"x.csv": body, "t/a.csv": b"a2"}


def test_plain_copy_to_real_hdfs_sets_source_mtime(hdfs_cluster, tmp_path) -> None:
    """Every copy to hdfs:// failed setting the mtime (hdfs-native takes no -1 atime)."""
    write_file(tmp_path / "src" / "f.txt", b"data")
    dst = hdfs_cluster.uri(hdfs_cluster.fresh_dir())
    report = copy(str(tmp_path / "src"), dst, CopyOptions(state_path=str(tmp_path / "state.db")))
    assert report.ok, report.failures
    fs, root = resolve(dst)
    assert fs.stat(fs.join(root, "f.txt")).mtime_ns == T0 * 10**9
