"""Transforms to real remote back ends: a file output is staged and renamed (SFTP, WebHDFS)
or written in place (GCS, S3); an untar directory is swapped in where the store renames and
refused, per file, where it cannot."""

from __future__ import annotations

import gzip
import io
import os
import tarfile

import pytest

from replicator.api import copy
from replicator.options import CopyOptions
from tests.replicator.filesystems.conftest import make_backend

T0 = 1_700_000_000


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), T0
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _write(path, data: bytes, mtime: int = T0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def _read(b, rel: str) -> bytes:
    return b"".join(b.fs.read_chunks(b.path(rel)))


@pytest.mark.parametrize("dst", ["s3", "gs", "sftp", "webhdfs"])
def test_gunzip_and_untar_to_remote(dst, request, tmp_path, remotes_file) -> None:
    src = tmp_path / "src"
    body = os.urandom(200_000)
    _write(src / "d" / "x.csv.gz", gzip.compress(body))
    _write(src / "t.tar", _tar({"a.csv": b"a", "sub/b.csv": b"b"}))
    b = make_backend(dst, request, tmp_path / dst)
    remotes_file({"dst": b.remote})
    opts = CopyOptions(state_path=str(tmp_path / "state.db"), workers=2, transforms=("gunzip", "untar"))
    report = copy(str(src), "dst:/", opts)
    assert _read(b, "d/x.csv") == body
    renames = b.fs.capabilities.atomic_rename
    if renames:
        assert report.ok, report.failures
        assert _read(b, "t/a.csv") == b"a" and _read(b, "t/sub/b.csv") == b"b"
        _write(src / "t.tar", _tar({"a.csv": b"A2"}), T0 + 60)  # the directory is replaced
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
