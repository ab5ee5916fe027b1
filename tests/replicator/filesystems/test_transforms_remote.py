"""Transforms to real remote back ends: a file output is staged and renamed (SFTP, WebHDFS)
or written in place (GCS, S3); an untar directory is swapped in where the store renames and
refused, per file, where it cannot."""

from __future__ import annotations

import gzip
import os

import pytest

from replicator.api import copy
from replicator.options import CopyOptions
from tests.replicator.filesystems.conftest import make_backend
from tests.replicator.filesystems.transform_helpers import T0, tar_bytes, write_file


def _read(b, rel: str) -> bytes:
    return b"".join(b.fs.read_chunks(b.path(rel)))


@pytest.mark.parametrize("dst", ["s3", "gs", "sftp", "webhdfs"])
def test_gunzip_and_untar_to_remote(dst, request, tmp_path, remotes_file) -> None:
    src = tmp_path / "src"
    body = os.urandom(200_000)
    write_file(src / "d" / "x.csv.gz", gzip.compress(body))
    write_file(src / "t.tar", tar_bytes({"a.csv": b"a", "sub/b.csv": b"b"}))
    b = make_backend(dst, request, tmp_path / dst)
    remotes_file({"dst": b.remote})
    opts = CopyOptions(state_path=str(tmp_path / "state.db"), workers=2, transforms=("gunzip", "untar"))
    report = copy(str(src), "dst:/", opts)
    assert _read(b, "d/x.csv") == body
    renames = b.fs.capabilities.atomic_rename
    if renames:
        assert report.ok, report.failures
        assert _read(b, "t/a.csv") == b"a" and _read(b, "t/sub/b.csv") == b"b"
        write_file(src / "t.tar", tar_bytes({"a.csv": b"A2"}), T0 + 60)  # the directory is replaced
        again = copy(str(src), "dst:/", opts)
        assert again.ok and again.files_copied == 1, again.failures
        assert _read(b, "t/a.csv") == b"A2" and b.fs.stat(b.path("t/sub/b.csv")) is None
        names = [i.name for i in b.fs.list_dir(b.root)]
        assert not [n for n in names if n.startswith(".rtmp-")], names
    else:
        assert [f.path for f in report.failures] == ["t.tar"]
        assert "cannot rename" in report.failures[0].error
        assert b.fs.stat(b.path("t/a.csv")) is None
    rerun = copy(str(src), "dst:/", opts)
    assert rerun.files_copied == 0 and rerun.files_skipped >= 1
