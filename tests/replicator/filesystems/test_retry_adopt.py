"""A retry after an in-place upload that completed on the server but whose response was
lost: the retry must adopt the object (same bytes) instead of failing on its own
must-not-exist precondition, and must not adopt an object holding other bytes."""

from __future__ import annotations

import os

import pytest

from replicator.errors import RetryableError
from replicator.filesystems.local import LocalFileSystem
from replicator.transfer import StageContext, Task, stage
from tests.replicator.filesystems.conftest import make_backend


def _lossy(fs):
    """The same back end (same server), whose first upload completes on the server and then
    reports a lost connection, as a reset after the final request would."""

    class LostResponse(type(fs)):
        lost = 0

        def open_write(self, path, **kw):
            writer = super().open_write(path, **kw)
            real_close = writer.close

            def close():
                real_close()
                if LostResponse.lost == 0:
                    LostResponse.lost += 1
                    raise RetryableError(f"upload {path}: connection reset by peer")

            writer.close = close
            return writer

    return LostResponse(**fs.options())


@pytest.mark.parametrize("dst", ["gs", "s3"])
def test_retry_adopts_completed_upload(dst, request, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(300_000)
    (src / "f.bin").write_bytes(data)
    st = os.stat(src / "f.bin")
    b = make_backend(dst, request, tmp_path / dst)
    ctx = StageContext(LocalFileSystem(), str(src), _lossy(b.fs), b.root, "run1",
                       retries=2, retry_backoff_s=0.01)
    out = stage(Task(1, "f.bin", "copy", st.st_size, st.st_mtime_ns), ctx)
    assert out.ok, out.error
    assert out.attempts == 2 and type(ctx.dst_fs).lost == 1
    assert out.checksum and out.size == len(data) and out.tmp is None
    assert b"".join(b.fs.read_chunks(b.path("f.bin"))) == data


@pytest.mark.parametrize("dst", ["gs", "s3"])
def test_retry_does_not_adopt_other_bytes(dst, request, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.bin").write_bytes(b"ours" * 1000)
    st = os.stat(src / "f.bin")
    b = make_backend(dst, request, tmp_path / dst)
    with b.fs.open_write(b.path("f.bin")) as w:  # someone else's object, same size
        w.write(b"them" * 1000)
    ctx = StageContext(LocalFileSystem(), str(src), b.fs, b.root, "run1",
                       retries=2, retry_backoff_s=0.01)
    # the first attempt fails retryably before writing; the retry finds a foreign object
    calls = {"n": 0}
    real = ctx.src_fs.read_chunks

    def flaky(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RetryableError("source read: connection reset")
        return real(*a, **kw)

    ctx.src_fs.read_chunks = flaky
    out = stage(Task(1, "f.bin", "copy", st.st_size, st.st_mtime_ns), ctx)
    assert not out.ok and out.attempts == 2
    assert "precondition" in (out.error or "").lower(), out.error
    assert b"".join(b.fs.read_chunks(b.path("f.bin"))) == b"them" * 1000
