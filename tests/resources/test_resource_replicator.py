"""The engine resource builds validated options from config and runs real copies."""

from __future__ import annotations

import pytest

from replicator.errors import UsageError
from resources.replicator import ReplicatorResource


def test_options_carry_the_explicit_state_path_and_settings(tmp_path) -> None:
    r = ReplicatorResource(state_path=str(tmp_path / "s.db"), workers=3, marker="_SUCCESS.json")
    opts = r.options(include=["*.csv"], exclude=["*.tmp"], min_age_s=5, delete=True, checksum=True)
    assert opts.state_path == str(tmp_path / "s.db")
    assert (opts.workers, opts.marker, opts.include, opts.exclude) == (3, "_SUCCESS.json", ("*.csv",), ("*.tmp",))
    assert opts.delete and opts.checksum and opts.min_age_s == 5


def test_invalid_settings_are_refused_up_front(tmp_path) -> None:
    with pytest.raises(UsageError):
        ReplicatorResource(state_path=str(tmp_path / "s.db"), executor="nope").options()


def test_copy_and_verify_for_real(tmp_path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f.txt").write_text("hello")
    r = ReplicatorResource(state_path=str(tmp_path / "s.db"), marker="_SUCCESS.json")
    report = r.copy(str(src), str(dst), r.options())
    assert report.ok and report.files_copied == 1 and report.bytes_copied == 5
    assert (dst / "d" / "f.txt").read_text() == "hello" and (dst / "_SUCCESS.json").exists()
    again = r.copy(str(src), str(dst), r.options())
    assert again.ok and again.files_copied == 0 and again.files_skipped == 1
    assert (tmp_path / "s.db").exists()
