"""Engine bugs confirmed by the review of main at 4602174 (/work/wt/REVIEW.md, bugs 5-13),
each reproduced on local trees: symlinks at either end never lead a write or a read out of
its root, ``--delete`` converges, the marker and ``verified`` say what happened."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from replicator import api
from replicator.errors import UsageError
from replicator.options import CopyOptions
from replicator.progress import Progress
from tests.replicator.conftest import tree, write

T0 = 1_700_000_000


def opts(tmp_path: Path, **kw) -> CopyOptions:
    return CopyOptions(state_path=str(tmp_path / "state.db"), **kw)


# ---------------------------------------------------------------- 5: destination symlinks
def test_destination_symlink_to_a_directory_is_replaced_never_written_through(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    outside, outside2 = tmp_path / "outside", tmp_path / "outside2"
    write(src / "a" / "f", "hi\n", T0)
    outside.mkdir()
    write(outside2 / "precious", "keep\n", T0)
    dst.mkdir()
    (dst / "a").symlink_to("../outside")
    (dst / "b").symlink_to("../outside2")
    rep = api.copy(str(src), str(dst), opts(tmp_path, delete=True))
    assert rep.ok, rep.failures
    assert list(outside.iterdir()) == []  # nothing written through the link
    assert (outside2 / "precious").read_text() == "keep\n"  # the link went, not its target
    assert not (dst / "a").is_symlink() and (dst / "a" / "f").read_text() == "hi\n"
    assert not os.path.lexists(dst / "b")  # a destination-only link, --delete removes it
    assert tree(dst) == tree(src)


@pytest.mark.parametrize("native_flag", ["1", "0"])
def test_a_re_sync_never_writes_through_a_recorded_directory_now_a_symlink(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native_flag: str) -> None:
    """A re-sync that trusts the manifest (the sampled files are where it says, at their
    sizes: here the link's target holds look-alikes) does not list the destination, so a
    recorded directory swapped for a symlink had this run's updates written through it.
    Now every recorded directory of a local destination is lstat'ed first; one that is not a
    directory any more sends the run to list the destination, which removes the link."""
    monkeypatch.setenv("REPLICATOR_NATIVE", native_flag)
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    for name in ("a", "b"):
        write(src / name / "f", "old\n", T0)
    assert api.copy(str(src), str(dst), opts(tmp_path)).ok
    write(src / "a" / "f", "new\n", T0 + 10)
    write(src / "b" / "f", "new\n", T0 + 10)
    write(outside / "f", "zzz\n", T0)  # the recorded size: the sample sees nothing wrong
    for p in (dst / "a" / "f", dst / "a"):
        p.unlink() if p.is_file() else p.rmdir()
    (dst / "a").symlink_to("../outside")
    rep = api.copy(str(src), str(dst), opts(tmp_path))
    assert rep.ok, rep.failures
    assert (outside / "f").read_text() == "zzz\n"  # nothing written through the link
    assert not (dst / "a").is_symlink() and tree(dst) == tree(src)


def test_a_re_sync_never_writes_a_new_directory_through_a_symlink_in_its_place(tmp_path: Path) -> None:
    """A directory new in the source whose place on an unlisted destination is a symlink:
    the link is removed (not its target) and a real directory made, as a listed run does;
    before, makedirs followed the link and the new files went outside the destination."""
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    write(src / "a" / "f", "a\n", T0)
    assert api.copy(str(src), str(dst), opts(tmp_path)).ok
    write(src / "new" / "g", "g\n", T0)
    write(outside / "keep", "keep\n", T0)
    (dst / "new").symlink_to("../outside")
    rep = api.copy(str(src), str(dst), opts(tmp_path))
    assert rep.ok, rep.failures
    assert sorted(p.name for p in outside.iterdir()) == ["keep"]
    assert not (dst / "new").is_symlink() and tree(dst) == tree(src)


def test_destination_symlink_to_a_file_is_replaced_by_the_source_file(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "f", "new\n", T0)
    write(tmp_path / "victim", "victim\n", T0)
    dst.mkdir()
    (dst / "f").symlink_to("../victim")
    rep = api.copy(str(src), str(dst), opts(tmp_path))
    assert rep.ok, rep.failures
    assert (tmp_path / "victim").read_text() == "victim\n"
    assert not (dst / "f").is_symlink() and (dst / "f").read_text() == "new\n"


def test_files_from_destination_symlink_is_not_written_through(tmp_path: Path) -> None:
    src, dst, out = tmp_path / "src", tmp_path / "dst", tmp_path / "dstout"
    write(src / "b" / "other", "s\n", T0)
    write(out / "victim", "keep\n", T0)
    dst.mkdir()
    (dst / "b").symlink_to("../dstout")
    (tmp_path / "list").write_text("b\n")
    rep = api.copy(str(src), str(dst), opts(tmp_path, files_from=str(tmp_path / "list"),
                                            delete=True, max_delete="100%"))
    assert rep.ok, rep.failures
    assert sorted(p.name for p in out.iterdir()) == ["victim"]
    assert (out / "victim").read_text() == "keep\n"
    assert not (dst / "b").is_symlink() and (dst / "b" / "other").read_text() == "s\n"


# ---------------------------------------------------------------- 6: --files-from and source symlinks
def test_files_from_does_not_follow_a_source_symlink_in_the_path(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(tmp_path / "secret" / "f", "TOPSECRET\n", T0)
    write(src / "real" / "g", "g\n", T0)
    src.mkdir(exist_ok=True)
    (src / "a").symlink_to("../secret")
    (tmp_path / "list").write_text("a/f\nreal/g\n")
    rep = api.copy(str(src), str(dst), opts(tmp_path, files_from=str(tmp_path / "list")))
    assert not os.path.lexists(dst / "a")
    assert (dst / "real" / "g").read_text() == "g\n"
    assert rep.symlinks_skipped == 1 and rep.files_copied == 1
    # with --copy-links the link is followed, as walk does
    rep = api.copy(str(src), str(tmp_path / "dst2"),
                   opts(tmp_path, files_from=str(tmp_path / "list"), copy_links=True))
    assert (tmp_path / "dst2" / "a" / "f").read_text() == "TOPSECRET\n" and rep.ok


# ---------------------------------------------------------------- 7: source swapped for a link
class _SwapForLink(Progress):
    """Once the plan is made (after the listing, before any byte moves), replaces a source
    file by a symlink to a file outside the source."""

    def __init__(self, victim: Path, target: Path) -> None:
        self.victim, self.target = victim, target

    def on_plan(self, files: int, bytes_: int) -> None:
        self.victim.unlink()
        self.victim.symlink_to(self.target)


@pytest.mark.parametrize("checksum", [False, True])
def test_source_swapped_for_a_symlink_after_listing_is_not_followed(tmp_path: Path, checksum: bool) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(tmp_path / "secret", "SECRET-OUTSIDE-SOURCE\n", T0)
    write(src / "a", "a\n", T0)
    write(src / "z_small", "small\n", T0)
    rep = api.copy(str(src), str(dst), opts(tmp_path, checksum=checksum),
                   progress=_SwapForLink(src / "z_small", tmp_path / "secret"))
    assert not rep.ok and [f.path for f in rep.failures] == ["z_small"]
    assert not os.path.lexists(dst / "z_small")
    assert (dst / "a").read_text() == "a\n"


# ---------------------------------------------------------------- 9: --delete and directories
def test_delete_removes_destination_only_directories(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a" / "f", "hi\n", T0)
    write(src / "g", "x\n", T0)
    api.copy(str(src), str(dst), opts(tmp_path))
    (dst / "emptyextra" / "sub").mkdir(parents=True)
    rep = api.copy(str(src), str(dst), opts(tmp_path, delete=True))
    assert rep.ok and rep.files_deleted == 0
    assert tree(dst) == tree(src)


# ---------------------------------------------------------------- 10: the marker's summary
def test_marker_says_verified_and_duration_of_the_run(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a", "a" * 1000, T0)
    rep = api.copy(str(src), str(dst), opts(tmp_path, checksum=True, marker="_DONE"))
    assert rep.ok and rep.verified
    marker = json.loads((dst / "_DONE").read_text())
    assert marker["verified"] is True
    assert marker["duration_s"] > 0 and marker["finished_at"] is not None
    assert marker["started_at"] <= marker["finished_at"]


# ---------------------------------------------------------------- 11: verified on a no-op
def test_noop_over_a_never_verified_replica_is_not_verified(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a", "a\n", T0)
    write(src / "b", "b\n", T0)
    first = api.copy(str(src), str(dst), opts(tmp_path))  # the kernel copy: size-checked only
    assert first.ok and not first.verified
    again = api.copy(str(src), str(dst), opts(tmp_path))
    assert again.ok and again.files_copied == 0 and not again.verified
    # a run that verifies one new file still relies on the two unverified ones
    write(src / "c", "c\n", T0)
    third = api.copy(str(src), str(dst), opts(tmp_path, checksum=True))
    assert third.files_copied == 1 and third.files_verified == 1 and not third.verified


def test_noop_after_lost_state_is_not_verified(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a", "a\n", T0)
    assert api.copy(str(src), str(dst), opts(tmp_path, checksum=True)).verified
    os.unlink(tmp_path / "state.db")
    rep = api.copy(str(src), str(dst), opts(tmp_path, checksum=True))
    assert rep.files_copied == 0 and rep.ok and not rep.verified  # adopted, nobody verified it


# ---------------------------------------------------------------- 8: --preserve without times
def test_preserve_without_times_and_a_listed_destination_converges(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "f", "hi\n", 1_577_836_800)
    for _ in range(2):
        api.copy(str(src), str(dst), opts(tmp_path, preserve=frozenset({"perms"})))
    for _ in range(2):
        rep = api.copy(str(src), str(dst), opts(tmp_path, preserve=frozenset({"perms"}), delete=True))
        assert rep.ok and rep.files_copied == 0 and rep.files_updated == 0 and rep.files_skipped == 1
    # a real change is still seen
    write(src / "f", "changed\n", 1_577_836_900)
    rep = api.copy(str(src), str(dst), opts(tmp_path, preserve=frozenset({"perms"}), delete=True))
    assert rep.files_updated == 1 and (dst / "f").read_text() == "changed\n"


# ---------------------------------------------------------------- 12: bad executor set-up
def test_missing_distcp_classpath_is_refused_before_anything_is_written(tmp_path: Path, monkeypatch) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "d" / "x", "x\n", T0)
    monkeypatch.delenv("REPLICATOR_HADOOP_CLASSPATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "nobin"))
    with pytest.raises(UsageError, match="Hadoop jars"):
        api.copy(str(src), str(dst), opts(tmp_path, executor="distcp"))
    assert not dst.exists() or list(dst.iterdir()) == []


# ---------------------------------------------------------------- 13: file <-> directory
def _copied_then_kinds_swapped(tmp_path: Path) -> tuple[Path, Path]:
    """A tree copied once; then the source's file ``f`` becomes a directory and its
    directory ``d`` a file."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "f", "hi\n", T0)
    write(src / "d" / "x", "y\n", T0)
    assert api.copy(str(src), str(dst), opts(tmp_path)).ok
    (src / "f").unlink()
    write(src / "f" / "x", "z\n", T0)
    (src / "d" / "x").unlink()
    (src / "d").rmdir()
    write(src / "d", "dd\n", T0)
    return src, dst


def test_file_and_directory_swapping_kinds_converges_with_delete(tmp_path: Path) -> None:
    src, dst = _copied_then_kinds_swapped(tmp_path)
    rep = api.copy(str(src), str(dst), opts(tmp_path, delete=True, max_delete="100%"))
    assert rep.ok, rep.failures
    assert tree(dst) == tree(src)
    again = api.copy(str(src), str(dst), opts(tmp_path, delete=True))
    assert again.ok and again.files_copied == 0


def test_a_file_that_became_a_directory_is_replaced_without_delete(tmp_path: Path) -> None:
    """Without --delete the destination is not listed: the manifest's record of the file we
    wrote stands for it. That file is replaced by the directory (as rsync does); the reverse (a
    directory we wrote, now a file in the source) still needs --delete, and says so."""
    src, dst = _copied_then_kinds_swapped(tmp_path)
    rep = api.copy(str(src), str(dst), opts(tmp_path))
    assert (dst / "f" / "x").read_text() == "z\n"  # the file f was replaced by the directory
    assert [f.path for f in rep.failures] == ["d"]
    assert "--delete replaces it" in rep.failures[0].error
    assert (dst / "d" / "x").read_text() == "y\n"  # without --delete nothing of it is lost
    again = api.copy(str(src), str(dst), opts(tmp_path))
    assert [f.path for f in again.failures] == ["d"] and again.files_copied == 0
    assert api.copy(str(src), str(dst), opts(tmp_path, delete=True, max_delete="100%")).ok
    assert tree(dst) == tree(src)


def test_local_source_open_refuses_a_symlink_unless_following(tmp_path: Path) -> None:
    from replicator.errors import SourceChangedError
    from replicator.filesystems.local import open_regular

    write(tmp_path / "secret", "s", T0)
    (tmp_path / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(SourceChangedError, match="symlink"):
        open_regular(str(tmp_path / "link"), follow=False)
    os.close(open_regular(str(tmp_path / "link")))  # --copy-links: read through
