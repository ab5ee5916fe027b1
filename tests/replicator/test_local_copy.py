"""The local -> local staging path (transfer._copy_local): one read and one write for small
files, the kernel copy for big ones; what it must refuse either way."""

from __future__ import annotations

import os
from pathlib import Path

import google_crc32c
import pytest

from replicator import native, transfer
from replicator.filesystems.local import LocalFileSystem
from replicator.transfer import SMALL_FILE, StageContext, Task, stage, stage_small_local

SIZES = [0, 5000, SMALL_FILE + 4096]  # empty, read-write path, kernel-copy path


def _stage_fast(task: Task, ctx: StageContext):
    """The executor's in-thread path for a bin of small local files (one task here)."""
    outs = list(stage_small_local([task], ctx))
    assert len(outs) == 1
    return outs[0]


STAGERS = pytest.mark.parametrize("stager", [stage, _stage_fast], ids=["stage", "small_local"])


def _ctx(tmp_path: Path, **kw) -> StageContext:
    fs = LocalFileSystem()
    return StageContext(fs, str(tmp_path / "src"), fs, str(tmp_path / "dst"), "run1", **kw)


def _source(tmp_path: Path, n: int) -> Task:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "dst").mkdir(exist_ok=True)
    data = os.urandom(n)
    (tmp_path / "src" / "f.bin").write_bytes(data)
    st = (tmp_path / "src" / "f.bin").stat()
    return Task(0, "f.bin", "copy", st.st_size, st.st_mtime_ns)


@STAGERS
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("verify", [False, True])
def test_staged_copy_has_the_bytes_times_and_crc32c(tmp_path: Path, n: int, verify: bool, stager) -> None:
    task = _source(tmp_path, n)
    out = stager(task, _ctx(tmp_path, verify_checksum=verify))
    assert out.ok, out.error
    staged = Path(out.tmp)
    assert staged.name.startswith(".rtmp-run1-") and staged.parent == tmp_path / "dst"
    data = (tmp_path / "src" / "f.bin").read_bytes()
    assert staged.read_bytes() == data
    assert staged.stat().st_mtime_ns == task.mtime_ns
    assert out.verified is verify
    if n <= SMALL_FILE or verify:  # small files: CRC32C of the bytes in hand, recorded
        assert out.checksum == f"crc32c:{google_crc32c.value(data):08x}"
    else:
        assert out.checksum is None
    assert not (tmp_path / "dst" / "f.bin").exists()  # published by the driver, not here


class _AppendAfterRead:
    """``os`` as the transfer module sees it, with a writer appending to ``path`` right after
    each read of it (between our read and our second fstat)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._ino = path.stat().st_ino

    def __getattr__(self, name: str):
        return getattr(os, name)

    def read(self, fd: int, n: int) -> bytes:
        data = os.read(fd, n)
        if os.fstat(fd).st_ino == self._ino:
            with open(self._path, "ab") as f:
                f.write(b"more")
        return data


@STAGERS
def test_a_source_appended_to_between_read_and_check_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stager) -> None:
    task = _source(tmp_path, 5000)
    monkeypatch.setenv("REPLICATOR_NATIVE", "0")  # the Python loop's reads (native: test_native_copy)
    monkeypatch.setattr(transfer, "os", _AppendAfterRead(tmp_path / "src" / "f.bin"))
    out = stager(task, _ctx(tmp_path, retries=0))
    assert not out.ok and "changed during copy" in (out.error or ""), out.error
    assert out.side == "source"
    assert list((tmp_path / "dst").iterdir()) == []


def test_a_batch_journalled_small_copy_is_renamed_into_place_at_once(tmp_path: Path) -> None:
    """``self_publish`` (the driver journalled the bin as one batch): the staged copy is
    renamed into place by the stager, the outcome carries no staged name to rename."""
    task = _source(tmp_path, 5000)
    task.self_publish = True
    out = _stage_fast(task, _ctx(tmp_path))
    assert out.ok and out.tmp is None
    assert (tmp_path / "dst" / "f.bin").read_bytes() == (tmp_path / "src" / "f.bin").read_bytes()
    assert (tmp_path / "dst" / "f.bin").stat().st_mtime_ns == task.mtime_ns
    assert [p.name for p in (tmp_path / "dst").iterdir()] == ["f.bin"]


def test_a_small_copy_whose_rename_fails_leaves_its_staged_copy_for_the_driver(tmp_path: Path) -> None:
    """A final name the stager cannot rename onto (a directory there): the general path
    stages again and hands the staged name to the driver, whose rename reports the error."""
    task = _source(tmp_path, 5000)
    task.self_publish = True
    (tmp_path / "dst" / "f.bin").mkdir()
    (tmp_path / "dst" / "f.bin" / "keep").write_bytes(b"k")
    out = _stage_fast(task, _ctx(tmp_path))
    assert out.ok and out.tmp is not None and Path(out.tmp).name.startswith(".rtmp-run1-")
    assert (tmp_path / "dst" / "f.bin" / "keep").read_bytes() == b"k"


@pytest.mark.parametrize("n", SIZES[1:])
def test_a_source_written_during_the_copy_is_refused_and_nothing_staged_stays(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    task = _source(tmp_path, n)
    real = transfer.open_regular_stat

    def open_then_append(path: str, *, follow: bool = True):
        fd, st = real(path, follow=follow)
        with open(path, "ab") as f:  # another writer, between our fstat and our read
            f.write(b"more")
        return fd, st

    monkeypatch.setattr(transfer, "open_regular_stat", open_then_append)
    out = stage(task, _ctx(tmp_path, retries=0))
    assert not out.ok and "changed during copy" in (out.error or ""), out.error
    assert out.side == "source"
    assert list((tmp_path / "dst").iterdir()) == []


@STAGERS
def test_a_link_planted_at_the_staged_name_is_not_written_through(tmp_path: Path, stager) -> None:
    task = _source(tmp_path, 100)
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    ctx = _ctx(tmp_path)
    staged = Path(ctx.staged_path(task.rel))
    staged.symlink_to(victim)  # an earlier attempt's name, or someone's trap
    out = stager(task, ctx)
    assert out.ok, out.error
    assert victim.read_bytes() == b"keep me"
    assert not staged.is_symlink() and staged.read_bytes() == (tmp_path / "src" / "f.bin").read_bytes()


@STAGERS
def test_a_source_replaced_by_a_symlink_is_not_followed(tmp_path: Path, stager) -> None:
    task = _source(tmp_path, 100)
    secret = tmp_path / "secret"
    secret.write_bytes(b"s")
    (tmp_path / "src" / "f.bin").unlink()
    (tmp_path / "src" / "f.bin").symlink_to(secret)
    out = stager(task, _ctx(tmp_path, retries=0))
    assert not out.ok and "symlink" in (out.error or "")
    assert list((tmp_path / "dst").iterdir()) == []


@pytest.mark.parametrize("n", [5000, 3 * transfer.VERIFY_CHUNK + 4096])
def test_verify_catches_a_staged_copy_that_differs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   n: int) -> None:
    # a write that lands wrong (here: one byte flipped in the staged copy as it is written)
    task = _source(tmp_path, n)
    real_write, real_copy = transfer._write_all, transfer._copy_at

    def flip(fd: int, offset: int) -> None:
        byte = os.pread(fd, 1, offset)
        os.pwrite(fd, bytes([byte[0] ^ 1]), offset)

    def bad_write(fd: int, data: bytes) -> None:
        real_write(fd, data)
        flip(fd, len(data) // 2)

    def bad_copy(infd: int, outfd: int, offset: int, k: int) -> int:
        moved = real_copy(infd, outfd, offset, k)
        if offset == transfer.VERIFY_CHUNK:  # the second piece
            flip(outfd, offset + 10)
        return moved

    monkeypatch.setattr(transfer, "_write_all", bad_write)
    monkeypatch.setattr(transfer, "_copy_at", bad_copy)
    out = stage(task, _ctx(tmp_path, verify_checksum=True, retries=0))
    assert not out.ok and "checksum mismatch" in (out.error or ""), out.error
    assert list((tmp_path / "dst").iterdir()) == []
    monkeypatch.undo()
    again = stage(task, _ctx(tmp_path, verify_checksum=True, retries=0))
    assert again.ok and again.verified


C, R, NR = transfer.VERIFY_CHUNK, transfer.VERIFY_READ, transfer.VERIFY_NATIVE_READ


@pytest.fixture(params=["python", "native"])
def check_path(request, monkeypatch: pytest.MonkeyPatch) -> str:
    """The big-file check as the Python path does it (REPLICATOR_NATIVE=0) and as the
    compiled part does it (native/fastcopy.c verify_range; skipped where it is not built)."""
    if request.param == "python":
        monkeypatch.setenv("REPLICATOR_NATIVE", "0")
    else:
        monkeypatch.delenv("REPLICATOR_NATIVE", raising=False)
        fast = native.fastcopy()
        if fast is None:
            pytest.skip("replicator._fastcopy is not built: only the Python check runs here")
        if not hasattr(fast, "verify_range"):
            pytest.fail(f"{fast.__file__} was built before native/fastcopy.c had verify_range: "
                        "rebuild it (`make venv`, or `python setup.py build_ext --inplace`)")
    return request.param


@pytest.mark.parametrize("where", [C + 10, 2 * C - 5, 3 * C + 4000, 0, NR - 1, NR, 2 * C + 3 * NR - 1,
                                   3 * C + 4095])
def test_verify_reads_each_piece_back_in_short_reads_and_catches_a_flip_in_any(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: int, check_path: str) -> None:
    # the big-file check reads each piece back in short reads (the bytes still in the cache
    # when compared): a byte flipped in the staged copy at the start of the file or of a
    # piece, at the edges of a read, in the last read of a piece or in the short tail piece
    # is refused, and the error names the read (Python: the CRC32Cs of a VERIFY_READ read
    # part) or the byte itself (the compiled check compares the bytes)
    n = 3 * C + 4096
    task = _source(tmp_path, n)
    real_copy = transfer._copy_at

    def bad_copy(infd: int, outfd: int, offset: int, k: int) -> int:
        moved = real_copy(infd, outfd, offset, k)
        if offset <= where < offset + moved:
            byte = os.pread(outfd, 1, where)
            os.pwrite(outfd, bytes([byte[0] ^ 0x80]), where)
        return moved

    monkeypatch.setattr(transfer, "_copy_at", bad_copy)
    out = stage(task, _ctx(tmp_path, verify_checksum=True, retries=0))
    if check_path == "python":
        start = where // R * R
        end = min(start + R, n)
        named = f"checksum mismatch on re-read (bytes {start}-{end})"
    else:
        named = f"checksum mismatch on re-read (bytes {where}-{where + 1}, the first that differs)"
    assert not out.ok and named in (out.error or ""), out.error
    assert list((tmp_path / "dst").iterdir()) == []
    monkeypatch.undo()  # the same file copied right is verified, with the source's CRC32C
    if check_path == "python":
        monkeypatch.setenv("REPLICATOR_NATIVE", "0")
    again = stage(task, _ctx(tmp_path, verify_checksum=True, retries=0))
    assert again.ok and again.verified, again.error
    data = (tmp_path / "src" / "f.bin").read_bytes()
    assert again.checksum == f"crc32c:{google_crc32c.value(data):08x}"
    assert Path(again.tmp).read_bytes() == data


@pytest.mark.parametrize("change", ["grow", "shrink", "rewrite"])
def test_verified_big_copy_refuses_a_source_changed_under_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str, check_path: str) -> None:
    # another writer changes the source right after its second piece was copied: grown or
    # shrunk, the file is refused by its size; rewritten in place with its mtime put back
    # (which no stat can see), the check finds the piece's bytes differ from the source's
    n = 3 * C + 4096
    task = _source(tmp_path, n)
    src = tmp_path / "src" / "f.bin"
    real_copy = transfer._copy_at

    def changing_copy(infd: int, outfd: int, offset: int, k: int) -> int:
        moved = real_copy(infd, outfd, offset, k)
        if offset == C:
            if change == "grow":
                with open(src, "ab") as f:
                    f.write(b"more")
            elif change == "shrink":
                os.truncate(src, 2 * C + 100)
            else:
                fd = os.open(src, os.O_WRONLY)
                os.pwrite(fd, b"\xff\x00", C + 5)
                os.close(fd)
                os.utime(src, ns=(task.mtime_ns, task.mtime_ns))
        return moved

    monkeypatch.setattr(transfer, "_copy_at", changing_copy)
    out = stage(task, _ctx(tmp_path, verify_checksum=True, retries=0))
    assert not out.ok
    if change == "rewrite":
        assert "checksum mismatch on re-read (bytes " in (out.error or ""), out.error
        if check_path == "native":
            assert f"(bytes {C + 5}-{C + 6}," in (out.error or ""), out.error
    else:
        assert "source changed during copy" in (out.error or ""), out.error
    assert list((tmp_path / "dst").iterdir()) == []


def test_verified_big_copy_charges_the_throttle_and_reports_every_byte(
        tmp_path: Path, check_path: str) -> None:
    n = 2 * C + 12345

    class Counting(transfer.Throttle):
        def __init__(self) -> None:
            super().__init__(None)
            self.charged = 0

        def consume(self, k: int) -> None:
            self.charged += k

    class Bytes(transfer.Progress):
        def __init__(self) -> None:
            self.seen = 0

        def on_bytes(self, k: int) -> None:
            self.seen += k

    task = _source(tmp_path, n)
    ctx = _ctx(tmp_path, verify_checksum=True, throttle=Counting(), progress=Bytes())
    out = stage(task, ctx)
    assert out.ok and out.verified, out.error
    assert ctx.throttle.charged == ctx.progress.seen == n


def test_local_writers_do_not_write_through_a_link_at_their_name(tmp_path: Path) -> None:
    # remote -> local copies stage through open_write / begin_parallel_write
    fs = LocalFileSystem()
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    (tmp_path / "staged").symlink_to(victim)
    with fs.open_write(str(tmp_path / "staged")) as w:
        w.write(b"new bytes")
    assert victim.read_bytes() == b"keep me"
    assert (tmp_path / "staged").read_bytes() == b"new bytes"
    (tmp_path / "ranged").symlink_to(victim)
    handle = fs.begin_parallel_write(str(tmp_path / "ranged"), 4)
    fs.write_part(handle, 0, 0, [b"abcd"])
    assert victim.read_bytes() == b"keep me"
    assert (tmp_path / "ranged").read_bytes() == b"abcd" and not (tmp_path / "ranged").is_symlink()


class _CloseFailsOnStaged:
    """``os`` as the transfer module sees it, where closing the first staged copy reports EIO
    after the kernel has closed it (as close(2) does on Linux: the descriptor is gone either
    way). ``twice`` records a close of that descriptor number before anything opened it
    again (``open`` is this object's, installed as ``os.open`` too by the test)."""

    def __init__(self) -> None:
        self.real_open = os.open
        self.staged: int | None = None
        self.gone: int | None = None
        self.twice = 0

    def __getattr__(self, name: str):
        return getattr(os, name)

    def open(self, path, flags, mode=0o777, **kw):
        fd = self.real_open(path, flags, mode, **kw)
        if fd == self.gone:
            self.gone = None  # the number is another file's now
        if self.staged is None and ".rtmp-" in os.fsdecode(path):
            self.staged = fd
        return fd

    def close(self, fd: int) -> None:
        if fd == self.gone:
            self.twice += 1
        os.close(fd)
        if fd == self.staged and self.gone is None and not self.twice:
            self.gone, self.staged = fd, -1
            raise OSError(5, "Input/output error")


def test_a_staged_copy_whose_close_fails_is_closed_once_and_copied_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A close(2) error on the staged copy: its descriptor is already gone, so the Python
    loop must not close it again (another thread may have that number by then); the file is
    staged again by the general path. Before the fix the second close raised EBADF out of
    the loop and the source descriptor leaked."""
    task = _source(tmp_path, 5000)
    monkeypatch.setenv("REPLICATOR_NATIVE", "0")
    fake = _CloseFailsOnStaged()
    monkeypatch.setattr(transfer, "os", fake)
    monkeypatch.setattr(os, "open", fake.open)
    out = _stage_fast(task, _ctx(tmp_path))
    assert fake.staged == -1 and fake.twice == 0  # the close failed once, nothing closed twice
    assert out.ok, out.error
    assert Path(out.tmp).read_bytes() == (tmp_path / "src" / "f.bin").read_bytes()
    assert [p.name for p in (tmp_path / "dst").iterdir()] == [Path(out.tmp).name]


def test_a_build_older_than_verify_range_takes_the_python_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a replicator._fastcopy built before verify_range existed (the .so not rebuilt since the
    # C file changed): the verified big copy runs the Python check instead of failing with
    # AttributeError (it did, on main's stale build)
    class OldBuild:
        def __getattr__(self, name: str):
            if name == "verify_range":
                raise AttributeError(name)
            raise AssertionError(f"unexpected native call {name}")

    monkeypatch.setattr(native, "fastcopy", lambda: OldBuild())
    n = 2 * C + 999
    task = _source(tmp_path, n)
    real_copy = transfer._copy_at

    def bad_copy(infd: int, outfd: int, offset: int, k: int) -> int:
        moved = real_copy(infd, outfd, offset, k)
        if offset == C:
            os.pwrite(outfd, b"\x00\xff", C + R + 7)
        return moved

    ok = stage(task, _ctx(tmp_path, verify_checksum=True, retries=0))
    assert ok.ok and ok.verified, ok.error
    monkeypatch.setattr(transfer, "_copy_at", bad_copy)
    Path(ok.tmp).unlink()
    bad = stage(task, _ctx(tmp_path, verify_checksum=True, retries=0))
    assert not bad.ok and f"(bytes {C + R}-{C + 2 * R})" in (bad.error or ""), bad.error
