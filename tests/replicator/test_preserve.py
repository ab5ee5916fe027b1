"""--preserve owner,group on local trees (as root) and its validation."""

from __future__ import annotations

import os

import pytest

from tests.replicator.conftest import write


@pytest.mark.skipif(os.geteuid() != 0, reason="keeping owner/group needs root")
def test_preserve_owner_group_local(tmp_path, run_cli):
    src = tmp_path / "src"
    f = write(src / "d/f.txt", b"x")
    os.chown(f, 65534, 65534)  # nobody / nogroup
    kept = run_cli("copy", str(src), str(tmp_path / "kept"), "--preserve", "times,owner,group",
                   "--json")
    assert kept.returncode == 0, kept.stderr
    st = os.stat(tmp_path / "kept/d/f.txt")
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    plain = run_cli("copy", str(src), str(tmp_path / "plain"), "--json")
    assert plain.returncode == 0, plain.stderr
    assert os.stat(tmp_path / "plain/d/f.txt").st_uid == 0


def test_unknown_preserve_kind_is_bad_usage(tmp_path, run_cli):
    write(tmp_path / "src/f", b"x")
    result = run_cli("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--preserve", "acls")
    assert result.returncode == 2
    assert "acls" in result.stderr and "blocksize" in result.stderr
    assert not (tmp_path / "dst").exists()

