"""Small units: filters, checksums, options, temp names, pickling."""

from __future__ import annotations

import os
import pickle
import random
import zlib

import google_crc32c
import pytest

from replicator import checksum
from replicator.errors import UsageError
from replicator.filesystems.local import LocalFileSystem
from replicator.filesystems.registry import resolve
from replicator.filters import Filter, is_temporary_name
from replicator.options import CopyOptions, parse_max_delete, parse_preserve
from replicator.plan import make_bins, split_ranges
from replicator.transfer import StageContext, Task, Throttle, temp_name


@pytest.mark.parametrize(("rel", "include", "exclude", "kept"), [
    ("a/b.csv", (), (), True),
    ("a/b.csv", ("*.csv",), (), True),
    ("a/b.txt", ("*.csv",), (), False),
    ("a/b.csv", (), ("*.csv",), False),
    ("dt=2026-11-20/part-0.csv", ("dt=*/**",), (), True),
    ("x/dt=2026-11-20/part-0.csv", ("dt=*/**",), (), False),
    ("a/b/c/d.csv", ("a/**/*.csv",), (), True),
    ("a/d.csv", ("a/**/*.csv",), (), True),
    ("a/b.csv", ("*.csv",), ("a/*",), False),
    ("data.csv._COPYING_", (), (), False),
    ("data.tmp", (), (), False),
    (".rtmp-abc-data.csv", (), (), False),
    ("ok [1].csv", ("ok [[]1].csv",), (), True),
])
def test_filter_keep_file(rel, include, exclude, kept) -> None:
    assert Filter(include, exclude).keep_file(rel) is kept


def test_filter_dirs() -> None:
    flt = Filter((), ("logs",))
    assert not flt.keep_dir("logs")
    assert not Filter().keep_dir("out/_temporary")
    assert Filter().keep_dir("out/dt=1")
    assert is_temporary_name(".rtmp-x-y")


def test_crc32c_combine_matches_whole() -> None:
    data = os.urandom(100_003)
    for cut in (0, 1, 4096, 65_537, 100_003):
        a, b = data[:cut], data[cut:]
        combined = checksum.combine(google_crc32c.value(a), google_crc32c.value(b), len(b))
        assert combined == google_crc32c.value(data)
    assert zlib.crc32(b"") == 0  # sanity of the empty case used by extend()
    assert checksum.format_crc32c(google_crc32c.value(b"hello")) == "crc32c:9a71bb4c"


def test_options_validation() -> None:
    with pytest.raises(UsageError, match="--workers"):
        CopyOptions(workers=0).validated()
    with pytest.raises(UsageError, match="--max-delete"):
        CopyOptions(max_delete="lots").validated()
    with pytest.raises(UsageError, match="--preserve"):
        parse_preserve("times,acls")
    with pytest.raises(UsageError, match="--marker"):
        CopyOptions(marker="../x").validated()
    assert parse_max_delete("25%") == (0.25, None)
    assert parse_max_delete("10") == (None, 10)


def test_temp_name_next_to_target_and_bounded() -> None:
    assert temp_name("/d/x/file.csv", "r1") == "/d/x/.rtmp-r1-file.csv"
    long = "n" * 250
    name = os.path.basename(temp_name(f"/d/{long}", "r1"))
    assert len(name.encode()) <= 255 and name.startswith(".rtmp-r1-")


def test_ranges_and_bins() -> None:
    assert split_ranges(10, 4) == [(0, 0, 4), (1, 4, 4), (2, 8, 2)]
    assert split_ranges(0, 4) == []
    tasks = [Task(i, f"f{i}", "copy", 100, 0) for i in range(10)]
    bins = list(make_bins(tasks, bin_bytes=250, bin_files=100))
    assert [len(b) for b in bins] == [2, 2, 2, 2, 2]
    assert sum(len(b) for b in make_bins(tasks, bin_bytes=10**9, bin_files=3)) == 10


def test_whole_file_bins_are_make_bins_with_the_small_files_flag() -> None:
    """The driver's one-pass bins: the same bins as make_bins, each flagged as small_files."""
    from replicator.plan import whole_file_bins
    from replicator.transfer import SMALL_FILE, small_files

    rng = random.Random(3)
    sizes = [rng.choice([0, 10, 4096, SMALL_FILE, SMALL_FILE + 1, 300 << 20]) for _ in range(3000)]
    tasks = [Task(i, f"f{i}", "copy", size, 0) for i, size in enumerate(sizes)]
    tasks[7].nparts = 3
    for kw in ({}, {"bin_bytes": 5 << 20, "bin_files": 7}):
        got = list(whole_file_bins(tasks, **kw))
        assert [b for b, _ in got] == list(make_bins(tasks, **kw))
        assert [flag for _, flag in got] == [small_files(b) for b, _ in got]
        assert any(flag for _, flag in got) and not all(flag for _, flag in got)


def test_filesystem_and_context_pickle_to_plain_options(tmp_path) -> None:
    fs, root = resolve(str(tmp_path))
    assert isinstance(fs, LocalFileSystem) and root == str(tmp_path)
    ctx = StageContext(fs, root, fs, root, "run", throttle=Throttle(1.0))
    back = pickle.loads(pickle.dumps(ctx))
    assert isinstance(back.src_fs, LocalFileSystem) and back.throttle is None and back.dst_root == root


def test_unknown_scheme_is_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown scheme"):
        resolve("nosuch://x/y")


def test_throttle_limits_rate() -> None:
    import time

    t = Throttle(4.0)  # 4 MiB/s
    start = time.monotonic()
    for _ in range(4):
        t.consume(1 << 20)  # 4 MiB in all: the first is free, three wait 0.25 s each
    assert time.monotonic() - start >= 0.7


def test_fast_copy_charges_the_throttle_for_bytes_moved_only(tmp_path) -> None:
    # regression: the kernel-copy path charged a whole 64 MiB step per file up front,
    # so --bandwidth made thousands of small files crawl
    from replicator.transfer import SMALL_FILE, Task, _copy_local

    class Counting(Throttle):
        def __init__(self) -> None:
            super().__init__(None)
            self.charged = 0

        def consume(self, n: int) -> None:
            self.charged += n

    fs = LocalFileSystem()
    src = tmp_path / "a"
    for n in (1000, SMALL_FILE + 1000):  # read-write path, kernel-copy path
        src.write_bytes(b"x" * n)
        ctx = StageContext(fs, str(tmp_path), fs, str(tmp_path), "r", throttle=Counting())
        task = Task(0, "a", "copy", n, 0, None, None)
        size, _mtime, moved, _crc, _ok = _copy_local(ctx, task, str(src), str(tmp_path / f"b{n}"),
                                                     final=str(tmp_path / f"b{n}"),
                                                     set_mtime=False, set_mode=False)
        assert size == moved == n
        assert ctx.throttle.charged == n


@pytest.mark.parametrize("skip_temporary", [True, False])
def test_listing_name_test_agrees_with_the_filter(skip_temporary: bool) -> None:
    """The listing's per-name fast test of the default filter says what Filter.keep_file says."""
    from replicator.listing import _name_keeper

    flt = Filter(skip_temporary=skip_temporary)
    keep = _name_keeper(flt)
    assert keep is not None and _name_keeper(Filter(exclude=("*.x",))) is None
    names = ["a.csv", "x.tmp", ".tmp", "a.crc.tmp", "a.tmp.b", "part._COPYING_", "_COPYING_",
             "x.inprogress", ".rtmp-1-a", "a.rtmp-", ".distcp.tmp.attempt_1", ".distcp.tmpx",
             "data.TMP", "tmp", ".inprogress.x", "ünï.tmp", "ünï"]
    for name in names:
        assert keep(name) == flt.keep_file(f"d/{name}") == flt.keep_file(name), name


@pytest.mark.parametrize("workers", [0, 3])
def test_ordered_walk_lists_in_path_order(tmp_path, workers) -> None:
    """``walk(..., ordered=True)`` yields every entry the plain walk does, in the code
    point order of the relative paths (the manifest's B-tree order), where a directory's
    descendants sort as ``name + "/"`` among names like ``a-b``, ``a.txt`` and ``a0``."""
    from replicator.filesystems.local import LocalFileSystem
    from replicator.filters import Filter
    from replicator.listing import walk

    for rel in ["a/x", "a/y/z", "a/y-1", "a-b", "a.txt", "a0", "b/c/d/e", "b/c-d", "b.d/f",
                "é/1", "e", "Z", "x._COPYING_"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"1")
    (tmp_path / "empty").mkdir()
    fs = LocalFileSystem()
    got = [e.rel for b in walk(fs, str(tmp_path), Filter(), workers=workers, ordered=True) for e in b]
    plain = [e.rel for b in walk(fs, str(tmp_path), Filter(), workers=workers) for e in b]
    assert got == sorted(plain) and len(got) == len(set(got))
    assert "x._COPYING_" not in got and "empty" in got and "a/y/z" in got
    rows = [r[0] for b in walk(fs, str(tmp_path), Filter(), workers=workers, ordered=True, rows=True)
            for r in b]
    assert rows == got


@pytest.mark.parametrize("workers", [0, 3])
@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize("ages", [(0.0, None), (3600.0, None), (0.0, 3600.0)])
def test_walk_rows_are_the_entries_rows(tmp_path, workers, ordered, ages) -> None:
    """``walk(..., rows=True)`` (plain tuples built in the local back end's scan, filtered
    and counted in bulk) yields exactly the ``Entry.row()`` of each entry the plain walk
    yields, with the same counts: temporary names and the marker left out, files too new
    (--min-age) or too old (--max-age) held, links skipped or followed, a name that is not
    UTF-8, a FIFO, directories among files."""
    import os

    from replicator.filesystems.local import LocalFileSystem
    from replicator.filters import Filter
    from replicator.listing import ListingStats, walk

    for rel in ["a/x", "a/y/z", "a/.rtmp-run-x", "a/b.tmp", "a/c.inprogress", ".distcp.tmp.1",
                "MARK", "sub/MARK", "old/f", "n/x._COPYING_", "a-b", "e"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"12")
    os.utime(tmp_path / "old" / "f", ns=(10**18, 10**18))  # 2001: older than an hour
    (tmp_path / "empty").mkdir()
    os.symlink(tmp_path / "a", tmp_path / "link-dir")
    os.symlink(tmp_path / "e", tmp_path / "link-file")
    os.mkfifo(tmp_path / "fifo")
    with open(os.path.join(os.fsencode(tmp_path), b"bad-\xff"), "wb") as f:
        f.write(b"x")
    fs = LocalFileSystem()
    min_age, max_age = ages
    for links in (False, True):
        kw = dict(workers=workers, ordered=ordered, min_age_s=min_age, max_age_s=max_age,
                  copy_links=links, exclude_root_names=frozenset({"MARK"}))
        s_entries, s_rows = ListingStats(), ListingStats()
        entries = sorted(e.row() for b in walk(fs, str(tmp_path), Filter(), stats=s_entries, **kw)
                         for e in b)
        rows = sorted(r for b in walk(fs, str(tmp_path), Filter(), stats=s_rows, rows=True, **kw)
                      for r in b)
        assert rows == entries and s_rows == s_entries
        assert all(type(r) is tuple and len(r) == 8 for r in rows)
        names = [r[0] for r in rows]
        assert "sub/MARK" in names and "MARK" not in names and "a/b.tmp" not in names
        assert ".distcp.tmp.1" not in names and "a/.rtmp-run-x" not in names
        assert any(n.startswith("bad-") for n in names) and "fifo" not in names
        held = {r[0] for r in rows if r[7]}
        if min_age:
            assert "a/x" in held and "old/f" not in held and s_rows.held_back > 0
        elif max_age:
            assert held == {"old/f"} and s_rows.too_old == 1
        else:
            assert not held


def test_listing_rows_without_checksum_or_version_go_in_as_the_same_rows() -> None:
    """Scratch.add_listing puts a batch with no checksum and no version in by the shorter
    statement (NULLs in the SQL, not bound): the table holds the rows as given; a batch with
    either set goes in whole, in order (a path given twice: the last stays)."""
    from replicator.state.scratch import Scratch

    plain = [(f"d/{i}", "f", i, 10 * i, 0o644, None, None, i % 2) for i in range(50)]
    mixed = [("a", "f", 1, 2, None, "crc32c:00000001", None, 0), ("b", "f", 3, 4, 0o600, None, "v7", 1),
             ("a", "f", 5, 6, 0o644, None, None, 0)]
    for rows, want in ((plain, plain), (mixed, mixed[1:])):
        s = Scratch()
        s.new_listing("src")
        s.add_listing("src", rows)
        got = s.db.execute("SELECT * FROM src ORDER BY path").fetchall()
        s.close()
        assert got == sorted(want)
