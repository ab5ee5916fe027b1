"""The partition listing the change sensor reads every tick, with and without the listing kept
between ticks (``ListingCache``): a kept listing must see every change a fresh one sees."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from replicator.fingerprint import (
    ListingCache,
    list_partition_dirs_with_mtimes,
    list_partitions,
)

OLD_NS = (time.time_ns() // 10**9 - 3600) * 10**9  # an hour ago: past any settle time


def age(*paths: Path, ns: int = OLD_NS) -> None:
    """Set the mtimes of ``paths`` to ``ns`` (a directory last changed long ago)."""
    for p in paths:
        os.utime(p, ns=(ns, ns), follow_symlinks=False)


def tree(root: Path) -> Path:
    """``root/table`` with dt=1..3 (dt=2 holding hour=0 and hour=1), a temporary name, a file
    and a name the layout does not take; every directory aged."""
    t = root / "table"
    for rel in ("dt=1/hour=0", "dt=2/hour=0", "dt=2/hour=1", "dt=3/hour=5", "dt=3/_COPYING_",
                "other/hour=0", "dt=9._COPYING_/hour=0"):
        (t / rel).mkdir(parents=True)
    (t / "dt=4").write_text("a file, not a partition")
    (t / "dt=1" / "hour=0" / "part-0.csv").write_text("x")
    dirs = [p for p in t.rglob("*") if p.is_dir()] + [t]
    age(*dirs)
    return t


def fresh(t: Path, levels: tuple[str, ...]):
    return list_partitions(str(t), levels)


def test_a_cached_listing_equals_a_fresh_one_and_is_used(tmp_path: Path) -> None:
    t = tree(tmp_path)
    cache = ListingCache()
    for levels in (("dt=*",), ("dt=*", "hour=*")):
        first = list_partitions(str(t), levels, cache)
        assert first == fresh(t, levels)
        hits = cache.hits
        assert list_partitions(str(t), levels, cache) == first
        assert cache.hits > hits  # answered from the cache: no directory read again
    assert fresh(t, ("dt=*", "hour=*"))[0] == ["dt=1/hour=0", "dt=2/hour=0", "dt=2/hour=1", "dt=3/hour=5"]
    assert fresh(t, ("dt=*",))[1] == [OLD_NS] * 3
    assert list_partition_dirs_with_mtimes(str(t), ("dt=*",), cache) == [
        ("dt=1", OLD_NS), ("dt=2", OLD_NS), ("dt=3", OLD_NS)]


@pytest.mark.parametrize("levels", [("dt=*",), ("dt=*", "hour=*")])
def test_a_cached_listing_sees_new_removed_and_changed_partitions(tmp_path: Path, levels) -> None:
    t = tree(tmp_path)
    cache = ListingCache()
    before = list_partitions(str(t), levels, cache)
    deep = len(levels) == 2
    # a new partition, a removed one, a file landing in a third
    (t / "dt=5" / "hour=0").mkdir(parents=True) if deep else (t / "dt=5").mkdir()
    if deep:
        (t / "dt=2" / "hour=1").rmdir()
        (t / "dt=3" / "hour=5" / "part-1.csv").write_text("new")
    else:
        for p in (t / "dt=2").rglob("*"):
            p.rmdir()
        (t / "dt=2").rmdir()
        (t / "dt=3" / "part-1.csv").write_text("new")
    after = list_partitions(str(t), levels, cache)
    assert after == fresh(t, levels)
    names = dict(zip(*after, strict=True))
    if deep:
        assert "dt=5/hour=0" in names and "dt=2/hour=1" not in names
        assert names["dt=3/hour=5"] != dict(zip(*before, strict=True))["dt=3/hour=5"]
    else:
        assert "dt=5" in names and "dt=2" not in names
        assert names["dt=3"] != OLD_NS  # the hint: its mtime moved


def test_a_listing_read_in_the_clock_step_of_a_change_is_not_kept(tmp_path: Path) -> None:
    """File systems stamp directory times from a coarse clock (some in whole seconds): a second
    change in the same step leaves the mtime as it was. A listing read that close to the
    directory's mtime is therefore read again next time, so the second change is seen."""
    t = tree(tmp_path)
    now_ns = time.time_ns()
    age(t, ns=now_ns)  # changed "just now"
    cache = ListingCache(settle_s=2.0)
    list_partitions(str(t), ("dt=*",), cache)
    (t / "dt=6").mkdir()
    age(t, ns=now_ns)  # the second change in the same clock step: the mtime did not move
    assert "dt=6" in list_partitions(str(t), ("dt=*",), cache)[0]


def test_an_entry_no_longer_what_was_listed_makes_the_directory_read_again(tmp_path: Path) -> None:
    """Belt and braces, should a directory's mtime be put back by hand: a partition that became
    a file, or vanished, is found by the stat of the cached name, and the level is read again."""
    t = tree(tmp_path)
    cache = ListingCache()
    list_partitions(str(t), ("dt=*",), cache)
    for p in sorted((t / "dt=2").rglob("*"), reverse=True):
        p.rmdir()
    (t / "dt=2").rmdir()
    (t / "dt=2").write_text("now a file")
    (t / "dt=3" / "hour=5").rmdir()
    (t / "dt=3" / "_COPYING_").rmdir()
    (t / "dt=3").rmdir()
    age(t)
    assert list_partitions(str(t), ("dt=*",), cache) == fresh(t, ("dt=*",)) == (["dt=1"], [OLD_NS])


def test_links_to_directories_are_partitions_and_followed_each_time(tmp_path: Path) -> None:
    t = tree(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (t / "dt=7").symlink_to(elsewhere, target_is_directory=True)
    age(t)
    cache = ListingCache()
    assert list_partitions(str(t), ("dt=*",), cache) == (["dt=1", "dt=2", "dt=3", "dt=7"],
                                                         [OLD_NS, OLD_NS, OLD_NS, None])
    elsewhere.rmdir()  # the link's target goes: the directory holding the link did not change
    assert list_partitions(str(t), ("dt=*",), cache) == fresh(t, ("dt=*",))
    assert "dt=7" not in list_partitions(str(t), ("dt=*",), cache)[0]


def test_names_that_are_not_utf8_are_listed_the_same_from_the_cache(tmp_path: Path) -> None:
    t = tree(tmp_path)
    os.mkdir(os.fsencode(t) + b"/dt=\xff")
    age(t)
    cache = ListingCache()
    first = list_partitions(str(t), ("dt=*",), cache)
    assert len(first[0]) == 4 and first == list_partitions(str(t), ("dt=*",), cache) == fresh(t, ("dt=*",))
    assert cache.hits >= 1


def test_sweep_forgets_directories_not_listed_since_the_last_sweep(tmp_path: Path) -> None:
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    cache = ListingCache()
    list_partitions(str(a), ("dt=*",), cache)
    list_partitions(str(b), ("dt=*",), cache)
    cache.sweep()
    assert len(cache) == 2
    list_partitions(str(a), ("dt=*",), cache)
    cache.sweep()
    assert len(cache) == 1
    hits = cache.hits
    list_partitions(str(a), ("dt=*",), cache)
    assert cache.hits == hits + 1


def test_a_root_replaced_by_another_directory_is_read_again_even_with_the_same_mtime(tmp_path: Path) -> None:
    """A dataset root swapped for a new directory (``mv table table.old; mv new table``) is
    another inode: its kept listing is not used, whatever its mtime says."""
    t = tree(tmp_path)
    cache = ListingCache()
    assert list_partitions(str(t), ("dt=*",), cache)[0] == ["dt=1", "dt=2", "dt=3"]
    new = tmp_path / "new"
    for p in ("dt=1", "dt=2", "dt=3", "dt=8"):  # the old names, and one more
        (new / p).mkdir(parents=True)
        age(new / p)
    t.rename(tmp_path / "table.old")
    new.rename(t)
    age(t)  # the same mtime as the old root's
    assert list_partitions(str(t), ("dt=*",), cache) == (["dt=1", "dt=2", "dt=3", "dt=8"], [OLD_NS] * 4)
