"""Errors carry their side: a destination that cannot be written is reported as a
destination error naming the destination path, never as "cannot read <source>"; a source
replaced by a FIFO after the listing fails that file alone instead of blocking the run."""

from __future__ import annotations

import os
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from replicator import api
from replicator.options import CopyOptions
from tests.replicator.conftest import write

T0 = 1_700_000_000


@contextmanager
def unwritable(directory: Path):
    """A directory nobody (root included) can create files in: immutable for root, 0555 otherwise."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(directory)], check=True)
    else:
        directory.chmod(0o555)
    try:
        yield
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
        else:
            directory.chmod(0o755)


@pytest.mark.parametrize("extra", [[], ["--checksum"]], ids=["kernel-copy", "streamed"])
def test_unwritable_destination_is_a_destination_error(tmp_path: Path, run_cli, extra) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "d" / "a.csv", "one", T0)
    write(src / "b.csv", "b", T0)
    args = ("copy", str(src), str(dst), "--state", str(tmp_path / "s.db"), "--json", *extra)
    assert run_cli(*args).returncode == 0
    write(src / "d" / "a.csv", "two!", T0 + 10)  # an update, into a directory we cannot write
    write(src / "c.csv", "c", T0)
    with unwritable(dst / "d"):
        r = run_cli(*args)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    rep = r.report
    assert rep["files_failed"] == 1 and rep["files_copied"] == 1  # c.csv went through
    (failure,) = rep["failures"]
    assert failure["path"] == "d/a.csv" and failure["side"] == "destination", failure
    assert "cannot write" in failure["error"] and str(dst / "d" / "a.csv") in failure["error"]
    assert "cannot read" not in failure["error"] and str(src) not in failure["error"]
    assert (dst / "d" / "a.csv").read_text() == "one"  # the previous good copy stays


@pytest.mark.parametrize("checksum", [False, True], ids=["kernel-copy", "streamed"])
def test_source_replaced_by_fifo_after_listing_fails_alone(tmp_path: Path, checksum: bool) -> None:
    """The FIFO takes the place of a listed file between the listing and the copy (the
    progress callback's on_plan runs in the driver after the plan, before any transfer)."""
    from replicator.progress import Progress

    src, dst = tmp_path / "src", tmp_path / "dst"
    for name in ("a.csv", "b.csv", "c.csv"):
        write(src / name, name * 100, T0)

    class SwapToFifo(Progress):
        def on_plan(self, files: int, nbytes: int) -> None:
            (src / "b.csv").unlink()
            os.mkfifo(src / "b.csv")

    result: list = []
    opts = CopyOptions(state_path=str(tmp_path / "s.db"), checksum=checksum)
    t = threading.Thread(target=lambda: result.append(
        api.copy(str(src), str(dst), opts, progress=SwapToFifo())), daemon=True)
    t.start()
    t.join(timeout=120)
    if t.is_alive():  # a writer unblocks the reader so the run can end; then fail
        with open(src / "b.csv", "wb"):
            pass
        t.join(timeout=30)
        pytest.fail("the copy blocked opening a FIFO")
    (rep,) = result
    assert rep.files_copied == 2 and rep.files_failed == 1, rep.failures
    (failure,) = rep.failures
    assert failure.path == "b.csv" and failure.side == "source"
    assert "regular file" in failure.error
    assert sorted(p.name for p in dst.iterdir()) == ["a.csv", "c.csv"]
