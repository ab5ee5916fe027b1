"""Copies between back ends through the engine (``replicator.api``), verified by content."""

from __future__ import annotations

import itertools
import os

import pytest

from replicator.api import copy, verify
from replicator.options import CopyOptions
from tests.replicator.filesystems.conftest import make_backend

MiB = 1 << 20


def tree(root):
    files = {
        "a.txt": b"alpha\n" * 100,
        "empty.dat": b"",
        "dir with space/ü-日本.csv": os.urandom(70_000),
        "dt=2026-11-20/part-00000.parquet": os.urandom(3 * MiB + 17),
        "dt=2026-11-20/nested/deep.json": b'{"k": 1}',
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    return files


# every back end is a source and a destination at least once; the chain passes the data
# through each of them: local -> gs -> s3 -> sftp -> ftp -> webhdfs -> local
CHAIN = ["gs", "s3", "sftp", "ftp", "webhdfs"]


def test_chain_of_copies_through_every_backend(request, tmp_path, remotes_file):
    src = tmp_path / "src"
    files = tree(src)
    backends = {name: make_backend(name, request, tmp_path / name) for name in CHAIN}
    # S3 in exact-mtime mode (one HEAD per object in listings) so mtimes survive the hop
    backends["s3"].remote["mtime_from_metadata"] = True
    remotes_file({name: b.remote for name, b in backends.items()})
    opts = CopyOptions(state_path=str(tmp_path / "state.db"), workers=4,
                       multipart_threshold=8 * MiB, part_size=5 * MiB)
    hops = [str(src), *[f"{name}:/" for name in CHAIN], str(tmp_path / "back")]
    for a, b in itertools.pairwise(hops):
        report = copy(a, b, opts)
        assert report.files_failed == 0, (a, b, report.failures)
        assert report.files_copied == len(files), (a, b)
        v = verify(a, b, opts)
        assert v.identical, (a, b, v.to_dict())
        again = copy(a, b, opts)  # incremental: nothing left to do
        assert again.files_copied == 0 and again.files_failed == 0, (a, b)
    for rel, data in files.items():
        assert (tmp_path / "back" / rel).read_bytes() == data
    # source mtimes survive the object stores (kept as metadata) and the file systems
    assert os.stat(tmp_path / "back" / "a.txt").st_mtime_ns // 10**9 == 1_700_000_000


@pytest.mark.parametrize("dst", ["gs", "s3"])
def test_big_file_to_object_store_in_ranges(dst, request, tmp_path, remotes_file):
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(12 * MiB + 5)
    (src / "big.bin").write_bytes(data)
    b = make_backend(dst, request, tmp_path / dst)
    remotes_file({"dst": b.remote})
    opts = CopyOptions(state_path=str(tmp_path / "state.db"), workers=3,
                       multipart_threshold=5 * MiB, part_size=5 * MiB)
    report = copy(str(src), "dst:/", opts)
    assert report.files_failed == 0, report.failures
    assert b"".join(b.fs.read_chunks(b.path("big.bin"))) == data
    assert verify(str(src), "dst:/", opts).identical
    exact = b.fs.__class__(**{**b.fs.options(), **({"mtime_from_metadata": True} if dst == "s3" else {})})
    st = exact.stat(b.path("big.bin"))
    assert st.size == len(data) and st.mtime_ns == os.stat(src / "big.bin").st_mtime_ns
