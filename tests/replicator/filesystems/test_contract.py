"""One contract suite, run against every back end on its real server (fsspec
``tests/abstract``, rclone ``fstests``)."""

from __future__ import annotations

import hashlib
import os
import pickle
import time

import google_crc32c
import pytest

from replicator.errors import FatalError, PreconditionFailed, RetryableError, is_retryable
from replicator.filesystems.base import DIR, FILE, FileSystem
from tests.replicator.filesystems.conftest import Backend

MiB = 1 << 20
NAMES = ["plain.txt", "with space.csv", "ünïcødé-日本.bin", "dt=2026-11-20/part 0001.parquet"]


def crc32c(data: bytes) -> str:
    return f"crc32c:{google_crc32c.value(data):08x}"


def put(b: Backend, rel: str, data: bytes, mtime_ns: int | None = None) -> str:
    """Publish a file the way the engine does for this back end's capabilities."""
    fs, final = b.fs, b.path(rel)
    if fs.capabilities.atomic_rename:
        tmp = final + ".rpl-tmp"
        fs.makedirs(os.path.dirname(final) if b.name == "local" else final.rsplit("/", 1)[0])
        with fs.open_write(tmp) as w:
            w.write(data)
        if mtime_ns is not None:
            fs.set_times(tmp, mtime_ns)
        fs.rename(tmp, final)
    else:
        with fs.open_write(final, mtime_ns=mtime_ns) as w:
            w.write(data)
    return final


def source_mtime(fs: FileSystem, path: str) -> int:
    """The mtime an object store kept for the source (S3: from metadata, one HEAD)."""
    if fs.capabilities.listing_mtime == "upload":
        fs = fs.__class__(**{**fs.options(), "mtime_from_metadata": True})
    return fs.stat(path).mtime_ns


def read_all(fs: FileSystem, path: str, **kw) -> bytes:
    return b"".join(fs.read_chunks(path, **kw))


def names(infos) -> dict[str, str]:
    return {i.name: i.kind for i in infos}


def test_write_list_stat_read(backend: Backend):
    fs = backend.fs
    payloads = {n: (n * 50).encode() for n in NAMES}
    for rel, data in payloads.items():
        put(backend, rel, data)
    top = fs.list_dir(backend.root)
    assert names(top) == {"plain.txt": FILE, "with space.csv": FILE, "ünïcødé-日本.bin": FILE,
                          "dt=2026-11-20": DIR}
    by_name = {i.name: i for i in top}
    assert by_name["with space.csv"].size == len(payloads["with space.csv"])
    assert by_name["with space.csv"].path == backend.path("with space.csv")
    sub = fs.list_dir(backend.path("dt=2026-11-20"))
    assert [(i.name, i.kind, i.size) for i in sub] == [
        ("part 0001.parquet", FILE, len(payloads["dt=2026-11-20/part 0001.parquet"]))]
    for rel, data in payloads.items():
        st = fs.stat(backend.path(rel))
        assert st is not None and st.kind == FILE and st.size == len(data)
        assert read_all(fs, backend.path(rel)) == data
        with fs.open_read(backend.path(rel), offset=3) as f:
            assert f.read(5) == data[3:8]
    assert fs.stat(backend.path("dt=2026-11-20")).kind == DIR
    assert fs.stat(backend.path("nope.txt")) is None
    with pytest.raises(FileNotFoundError):
        fs.list_dir(backend.path("no-such-dir"))


def test_empty_file(backend: Backend):
    path = put(backend, "empty", b"")
    st = backend.fs.stat(path)
    assert st is not None and st.kind == FILE and st.size == 0
    assert read_all(backend.fs, path) == b""
    assert [i.size for i in backend.fs.list_dir(backend.root)] == [0]


def test_publish_replaces_existing(backend: Backend):
    fs = backend.fs
    path = put(backend, "d/f.txt", b"old contents")
    put(backend, "d/f.txt", b"new")
    assert read_all(fs, path) == b"new"
    assert fs.stat(path).size == 3
    assert names(fs.list_dir(backend.path("d"))) == {"f.txt": FILE}  # no temporary left


def test_mtime_kept(backend: Backend):
    fs = backend.fs
    mtime = 1_700_000_000_123_456_789
    path = put(backend, "m.txt", b"x" * 10, mtime_ns=mtime)
    prec = fs.capabilities.mtime_precision_ns
    (listed,) = fs.list_dir(backend.root)
    st = fs.stat(path)
    assert listed.mtime_ns == st.mtime_ns  # listing and stat agree (the diff relies on it)
    if fs.capabilities.listing_mtime == "source":
        assert abs(st.mtime_ns - mtime) < prec
    else:  # S3: upload time in listings; the source mtime is in the metadata
        assert abs(st.mtime_ns - time.time_ns()) < 600 * 10**9
        exact = fs.__class__(**{**fs.options(), "mtime_from_metadata": True})
        assert exact.stat(path).mtime_ns == mtime
        assert [i.mtime_ns for i in exact.list_dir(backend.root)] == [mtime]


def test_checksums_reported(backend: Backend):
    fs = backend.fs
    data = os.urandom(300_000)
    path = put(backend, "c.bin", data)
    expected = {"crc32c": crc32c(data), "md5": "md5:" + hashlib.md5(data).hexdigest()}
    if not fs.capabilities.hash_kinds:
        assert fs.checksum(path, "crc32c") is None
        return
    for kind in fs.capabilities.hash_kinds:
        assert fs.checksum(path, kind) == expected[kind]
    if fs.capabilities.checksum_in_stat:
        st = fs.stat(path)
        assert st.checksum in expected.values()
        (listed,) = fs.list_dir(backend.root)
        assert listed.checksum == st.checksum and listed.version == st.version


def test_large_file_streamed_in_chunks(backend: Backend):
    fs = backend.fs
    block = os.urandom(MiB)
    total = 20
    path = backend.path("big/large.bin")
    digest = hashlib.sha256()
    if fs.capabilities.atomic_rename:
        fs.makedirs(backend.path("big"))
    with fs.open_write(path, mtime_ns=1) as w:
        for i in range(total):
            chunk = bytes([i]) + block[1:]
            digest.update(chunk)
            w.write(chunk)
    assert fs.stat(path).size == total * MiB
    sizes, got = [], hashlib.sha256()
    for chunk in fs.read_chunks(path, chunk_size=8 * MiB):
        sizes.append(len(chunk))
        got.update(chunk)
    assert got.hexdigest() == digest.hexdigest()
    assert sizes == [8 * MiB, 8 * MiB, 4 * MiB]  # bounded chunks, not the whole file
    tail = list(fs.read_chunks(path, offset=19 * MiB + 5, length=100, chunk_size=64))
    assert [len(c) for c in tail] == [64, 36]
    assert b"".join(tail) == block[5:105]


def test_abort_leaves_nothing(backend: Backend):
    fs = backend.new_fs()
    if backend.name == "gs":
        fs._chunk_size = 256 * 1024  # force a resumable session
    path = backend.path("aborted.bin")
    if fs.capabilities.atomic_rename:
        fs.makedirs(backend.root)
    w = fs.open_write(path, mtime_ns=1)
    for _ in range(6):
        w.write(os.urandom(MiB))
    if not fs.capabilities.atomic_rename:
        assert fs.stat(path) is None  # nothing visible before close on object stores
    w.abort()
    assert fs.stat(path) is None
    if fs.capabilities.directories:
        assert fs.list_dir(backend.root) == []
    else:
        with pytest.raises(FileNotFoundError):  # no object at all under the prefix
            fs.list_dir(backend.root)
    if backend.name == "s3":
        from replicator.filesystems._common import split_bucket

        bucket, _ = split_bucket(backend.root)
        assert not fs._client().list_multipart_uploads(Bucket=bucket).get("Uploads")
    fs.close()


def test_write_error_in_context_aborts(backend: Backend):
    fs = backend.fs
    path = backend.path("ctx.bin")
    if fs.capabilities.atomic_rename:
        fs.makedirs(backend.root)
    with pytest.raises(RuntimeError), fs.open_write(path) as w:
        w.write(b"partial")
        raise RuntimeError("source failed")
    assert fs.stat(path) is None


def test_preconditions(backend: Backend):
    fs = backend.fs
    if fs.capabilities.atomic_rename:
        pytest.skip("preconditions are for stores written in place (no rename)")
    path = backend.path("p.txt")
    with fs.open_write(path, expect_version="0") as w:
        w.write(b"one")
    first = fs.stat(path)
    assert first.version
    with pytest.raises(PreconditionFailed), fs.open_write(path, expect_version="0") as w:
        w.write(b"two")  # must-not-exist, but it does
    with fs.open_write(path, expect_version=first.version) as w:  # the version we saw
        w.write(b"three")
    assert read_all(fs, path) == b"three"
    with pytest.raises(PreconditionFailed), fs.open_write(path, expect_version=first.version) as w:
        w.write(b"four")  # someone else wrote since: refused
    assert read_all(fs, path) == b"three"


def test_delete(backend: Backend):
    fs = backend.fs
    path = put(backend, "sub/gone.txt", b"bye")
    fs.delete_file(path)
    fs.delete_file(path)  # missing: not an error
    assert fs.stat(path) is None
    fs.delete_dir(backend.path("sub"))
    assert fs.stat(backend.path("sub")) is None


def test_pickle_round_trip(backend: Backend):
    put(backend, "k.txt", b"pickled")
    clone = pickle.loads(pickle.dumps(backend.fs))
    assert type(clone) is type(backend.fs)
    assert clone.options() == backend.fs.options()
    assert read_all(clone, backend.path("k.txt")) == b"pickled"
    clone.close()


def test_parallel_write(backend: Backend):
    fs = backend.fs
    if not fs.capabilities.parallel_write:
        pytest.skip("no ranged writes on this back end")
    part = 5 * MiB
    data = os.urandom(2 * part + 1234)
    path = backend.path("ranged.bin")
    h = fs.begin_parallel_write(path, len(data), mtime_ns=42_000_000_000)
    ranges = [(i, o, data[o:o + part]) for i, o in enumerate(range(0, len(data), part))]
    infos = [fs.write_part(h, i, o, [chunk[:1000], chunk[1000:]]) for i, o, chunk in reversed(ranges)]
    if not fs.capabilities.atomic_rename:
        assert fs.stat(path) is None
    fs.complete_parallel_write(h, infos)
    assert read_all(fs, path) == data
    if not fs.capabilities.atomic_rename:
        assert source_mtime(fs, path) == 42_000_000_000
    if "crc32c" in fs.capabilities.hash_kinds:
        assert fs.checksum(path, "crc32c") == crc32c(data)
    # an aborted ranged write leaves nothing
    h2 = fs.begin_parallel_write(backend.path("ranged2.bin"), 10)
    fs.write_part(h2, 0, 0, [b"0123456789"])
    fs.abort_parallel_write(h2)
    assert fs.stat(backend.path("ranged2.bin")) is None
    assert {i.name for i in fs.list_dir(backend.root)} == {"ranged.bin"}


def _parallel_leftovers(fs: FileSystem, handle: dict) -> list[str]:
    """What a ranged write left behind besides its target: GCS part objects under the
    staging prefix, S3 multipart uploads still open for the key."""
    if "staging" in handle:  # gs
        bucket, prefix = handle["staging"].split("/", 1)
        return [i["name"] for page in fs._list(bucket, prefix + "/", delimiter=None)
                for i in page.get("items", [])]
    if "upload_id" in handle:  # s3
        bucket, key = handle["path"].split("/", 1)
        ups = fs._client().list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", [])
        return [u["UploadId"] for u in ups if u["UploadId"] == handle["upload_id"]]
    return []


def test_failed_parallel_write_leaves_nothing(backend: Backend):
    """A completion that finds missing bytes fails and cleans up its parts (no leak)."""
    fs = backend.fs
    if not fs.capabilities.parallel_write:
        pytest.skip("no ranged writes on this back end")
    part = 5 * MiB
    path = backend.path("short.bin")
    h = fs.begin_parallel_write(path, 3 * part, mtime_ns=1)
    infos = [fs.write_part(h, i, i * part, [os.urandom(part)]) for i in range(2)]  # one missing
    if fs.scheme in ("gs", "s3"):
        assert _parallel_leftovers(fs, h)  # the parts exist until the completion
    with pytest.raises(Exception, match="wrote 10485760 of 15728640 bytes"):
        fs.complete_parallel_write(h, infos)
    assert _parallel_leftovers(fs, h) == []
    assert fs.stat(path) is None
    try:
        assert [i.name for i in fs.list_dir(backend.root)] == []
    except FileNotFoundError:
        pass  # an object store's empty prefix


# ---------------------------------------------------------------- error classes
@pytest.mark.parametrize("scheme", ["gs", "s3", "ftp", "sftp", "webhdfs", "hdfs"])
def test_server_down_is_retryable(scheme, tmp_path):
    from replicator.filesystems.registry import filesystem_from_options
    from tests.replicator.filesystems.servers import free_port

    port = free_port()  # nothing listens there
    opts = {
        "gs": {"endpoint": f"http://127.0.0.1:{port}", "anonymous": True, "timeout": 5},
        "s3": {"endpoint_url": f"http://127.0.0.1:{port}", "access_key_id": "a",
               "secret_access_key": "b-secret", "connect_timeout": 2},
        "ftp": {"host": "127.0.0.1", "port": port, "timeout": 5},
        "sftp": {"host": "127.0.0.1", "port": port, "timeout": 5, "host_key_check": False},
        "webhdfs": {"host": "127.0.0.1", "port": port, "timeout": 5},
        "hdfs": {"url": f"hdfs://127.0.0.1:{port}", "client": "native"},
    }[scheme]
    fs = filesystem_from_options(scheme, opts)
    root = "bucket/x" if scheme in ("gs", "s3") else "/x"
    start = time.monotonic()
    with pytest.raises(RetryableError) as info:
        fs.list_dir(root)
    assert is_retryable(info.value)
    # a client left to its defaults retries for minutes (hdfs-native: ~15 failovers x 10
    # connects); the bound is loose so a loaded machine does not trip it
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("name", ["gs", "s3"])
def test_missing_bucket_is_fatal(name, request, tmp_path):
    from tests.replicator.filesystems.conftest import make_backend

    b = make_backend(name, request, tmp_path)
    with pytest.raises(FatalError) as info:
        b.fs.list_dir("no-such-bucket-here/x")
    assert not is_retryable(info.value)
    with pytest.raises(FatalError), b.fs.open_write("no-such-bucket-here/x", mtime_ns=1) as w:
        w.write(b"x")


def test_ftp_bad_password_is_fatal(ftp_server):
    from replicator.filesystems.ftp import FTPFileSystem

    fs = FTPFileSystem(host="127.0.0.1", port=ftp_server.port, user=ftp_server.user,
                       password="wrong-password-123")
    with pytest.raises(FatalError) as info:
        fs.list_dir("/")
    assert "wrong-password-123" not in str(info.value)


def test_sftp_bad_key_and_unknown_host_are_fatal(sftp_server, tmp_path):
    import subprocess

    from replicator.filesystems.sftp import SFTPFileSystem

    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    opts = {**sftp_server.fs_options(), "key_filename": str(other)}
    with pytest.raises(FatalError):
        SFTPFileSystem(**opts).list_dir("/")
    empty_known = tmp_path / "known_hosts"
    empty_known.write_text("")
    opts = {**sftp_server.fs_options(), "known_hosts": str(empty_known)}
    with pytest.raises(FatalError):
        SFTPFileSystem(**opts).list_dir("/")


@pytest.mark.parametrize("name", ["webhdfs", "hdfs"])
def test_hdfs_access_denied_is_fatal(name, request, tmp_path, monkeypatch):
    """The real NameNode enforces permissions: another user cannot list or write a 0700
    directory of the superuser, and that is fatal (not retried)."""
    from replicator.filesystems.registry import filesystem_from_options
    from tests.replicator.filesystems.conftest import make_backend

    b = make_backend(name, request, tmp_path)
    put(b, "private/f.txt", b"secret")
    b.fs.set_mode(b.path("private"), 0o700)
    monkeypatch.setenv("HADOOP_USER_NAME", "mallory")  # hdfs-native's user (no per-client one)
    other = filesystem_from_options(b.fs.scheme, {**b.fs.options(), "user": "mallory"})
    assert other.stat(b.path("private")).kind == DIR  # the parent is readable
    with pytest.raises(FatalError, match=r"mallory|Permission denied") as info:
        other.list_dir(b.path("private"))
    assert not is_retryable(info.value)
    with pytest.raises(FatalError), other.open_write(b.path("private/new.txt")) as w:
        w.write(b"x")
    assert names(b.fs.list_dir(b.path("private"))) == {"f.txt": FILE}


def test_webhdfs_create_goes_through_a_datanode_redirect(webhdfs_server, tmp_path):
    from replicator.filesystems.webhdfs import WebHDFSFileSystem

    fs = WebHDFSFileSystem(host="127.0.0.1", port=webhdfs_server.port, user="hdfs")
    (webhdfs_server.root / tmp_path.name).mkdir()
    b = Backend("webhdfs-stub", fs, f"/{tmp_path.name}", {})
    webhdfs_server.server.ops.clear()
    put(b, "r.txt", b"redirected")
    ops = webhdfs_server.server.ops
    assert ops.count("CREATE") == 2  # NameNode (307) then DataNode
    assert "RENAME" in ops and "SETTIMES" not in ops
    webhdfs_server.server.ops.clear()
    assert read_all(b.fs, b.path("r.txt")) == b"redirected"
    assert ops.count("OPEN") == 2


def test_failed_rename_keeps_destination(backend: Backend):
    fs = backend.fs
    if not fs.capabilities.atomic_rename:
        pytest.skip("no rename on this back end")
    final = put(backend, "keep.txt", b"precious")
    with pytest.raises((FileNotFoundError, OSError)):
        fs.rename(backend.path("missing.tmp"), final)
    assert read_all(fs, final) == b"precious"
