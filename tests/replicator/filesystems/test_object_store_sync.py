"""Re-syncs to object stores compare *source* mtimes, never upload times: a store whose
listing reports upload times (S3) must not re-copy an unchanged tree when the destination
is listed (``--delete``, or the state was lost), and must copy a touched file."""

from __future__ import annotations

import os
import time

import pytest

from replicator.api import copy
from replicator.options import CopyOptions
from tests.replicator.filesystems.conftest import make_backend

T0 = 1_700_000_000_000_000_000


@pytest.mark.parametrize("dst", ["s3", "gs"])
def test_resync_compares_source_mtimes(dst, request, tmp_path, remotes_file):
    src = tmp_path / "src"
    for i in range(6):
        p = src / f"d{i % 2}" / f"f{i}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * (100 + i))
        os.utime(p, ns=(T0, T0))
    b = make_backend(dst, request, tmp_path / dst)
    remotes_file({"dst": b.remote})
    state = str(tmp_path / "state.db")
    opts = CopyOptions(state_path=state, workers=4)
    assert copy(str(src), "dst:/", opts).files_copied == 6
    time.sleep(1.1)  # upload times now differ from the source mtimes by > 1 s precision

    for again in (opts, opts.with_(delete=True), opts.with_(state_path=str(tmp_path / "lost.db"))):
        report = copy(str(src), "dst:/", again)
        assert report.files_failed == 0, report.failures
        assert report.files_copied == 0, (again, report.to_dict())

    touched = src / "d1" / "f3.txt"
    os.utime(touched, ns=(T0 + 5 * 10**9, T0 + 5 * 10**9))  # same size, newer mtime
    report = copy(str(src), "dst:/", opts.with_(delete=True))
    assert report.files_failed == 0 and report.files_copied == 1 and report.files_deleted == 0
    # the state-lost path sees the new source mtime through the object's metadata too
    os.utime(src / "d0" / "f0.txt", ns=(T0 + 7 * 10**9, T0 + 7 * 10**9))
    report = copy(str(src), "dst:/", opts.with_(state_path=str(tmp_path / "lost2.db")))
    assert report.files_failed == 0 and report.files_copied == 1, report.to_dict()
    # the first state store did not see that copy: its record of f0 is older than the
    # object, so the object's own metadata decides (equal to the source: adopted, no copy)
    assert copy(str(src), "dst:/", opts.with_(delete=True)).files_copied == 0
    assert copy(str(src), "dst:/", opts).files_copied == 0
    os.utime(src / "d0" / "f0.txt", ns=(T0, T0))  # back to the old mtime: copied again
    assert copy(str(src), "dst:/", opts).files_copied == 1
