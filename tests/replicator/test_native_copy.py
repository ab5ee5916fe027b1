"""The small-file loop in C (native/fastcopy.c ``copy_small``) against the pure-Python one
(``REPLICATOR_NATIVE=0``): the same outcomes, staged files and destination over a bin with
every unusual case, each bad file failing alone; and a whole CLI copy both ways."""

from __future__ import annotations

import os
import random
import sqlite3
from pathlib import Path

import pytest

from replicator import native
from replicator.filesystems.local import LocalFileSystem, text_path
from replicator.transfer import (
    RENAME_THREADS,
    SMALL_FILE,
    StageContext,
    Task,
    rename_threads,
    stage_small_local,
)

pytestmark = pytest.mark.skipif(native.built("fastcopy") is None,
                                reason="replicator._fastcopy not built (no compiler)")

BYTE_NAME = os.fsdecode(b"caf\xe9-latin1.txt")  # not UTF-8


def _tree(root: Path) -> list[Task]:
    """A source tree and the tasks a listing of it made, some of which the tree then
    changed under (deterministically: the file is not what the listing saw)."""
    src, dst = root / "src", root / "dst"
    src.mkdir()
    dst.mkdir()
    rng = random.Random(7)  # the same bytes in both trees
    files = {"a.txt": rng.randbytes(5000), "empty": b"", BYTE_NAME: b"latin",
             "grown": b"g" * 10, "fifo": b"f", "stale": b"s" * 300, "target": b"t" * 7,
             "z.bin": rng.randbytes(SMALL_FILE)}
    tasks = []
    for seq, (name, data) in enumerate(files.items()):
        (src / name).write_bytes(data)
        st = (src / name).stat()
        tasks.append(Task(seq, text_path(name), "copy", st.st_size, st.st_mtime_ns))
    (src / "link").symlink_to(src / "target")  # listed as a link, copied through with -L
    st = (src / "target").stat()
    tasks.append(Task(len(tasks), "link", "copy", st.st_size, st.st_mtime_ns))
    (src / "grown").write_bytes(b"g" * (SMALL_FILE + 10))  # past the small-file bound
    (src / "fifo").unlink()
    os.mkfifo(src / "fifo")  # replaced by a FIFO since the listing
    return tasks


def _run(root: Path, *, use_native: bool, copy_links: bool, self_publish: bool,
         monkeypatch: pytest.MonkeyPatch) -> tuple[list[tuple], dict[str, bytes]]:
    tasks = _tree(root)
    fs = LocalFileSystem()
    ctx = StageContext(fs, str(root / "src"), fs, str(root / "dst"), "run1", retries=0,
                       copy_links=copy_links, preserve=frozenset({"times", "perms"}))
    for t in tasks:
        t.self_publish = self_publish
    stale = Path(ctx.staged_path("stale"))
    stale.write_bytes(b"an earlier attempt's leftovers, longer than the file")
    monkeypatch.setenv(native.ENV, "1" if use_native else "0")
    outs = sorted(stage_small_local(tasks, ctx), key=lambda o: o.seq)
    rows = [(o.seq, o.rel, o.ok, o.size, o.mtime_ns, o.checksum, o.crc,
             o.tmp and Path(o.tmp).name, o.error and o.error.replace(str(root), "ROOT"),
             o.side, o.bytes_moved) for o in outs]
    found = {}
    for p in sorted((root / "dst").iterdir()):
        st = p.lstat()
        found[p.name] = (p.read_bytes(), st.st_mtime_ns, st.st_mode)
    return rows, found


@pytest.mark.parametrize("copy_links", [False, True], ids=["no-L", "copy-links"])
@pytest.mark.parametrize("self_publish", [False, True], ids=["staged", "self-publish"])
def test_native_and_python_loops_give_the_same_outcomes_and_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copy_links: bool,
        self_publish: bool) -> None:
    (tmp_path / "py").mkdir()
    (tmp_path / "c").mkdir()
    py_rows, py_files = _run(tmp_path / "py", use_native=False, copy_links=copy_links,
                             self_publish=self_publish, monkeypatch=monkeypatch)
    c_rows, c_files = _run(tmp_path / "c", use_native=True, copy_links=copy_links,
                           self_publish=self_publish, monkeypatch=monkeypatch)
    # mtimes of the sources differ between the two trees: compare them to their own sources
    strip = [r[:4] + r[5:] for r in c_rows]
    assert strip == [r[:4] + r[5:] for r in py_rows]
    assert {k: (v[0], v[2]) for k, v in c_files.items()} == \
        {k: (v[0], v[2]) for k, v in py_files.items()}
    by_rel = {r[1]: r for r in c_rows}
    assert all(by_rel[n][2] for n in ("a.txt", "empty", text_path(BYTE_NAME), "stale", "z.bin"))
    assert not by_rel["fifo"][2] and "regular" in by_rel["fifo"][8]  # fails alone
    assert by_rel["link"][2] is copy_links  # without -L: refused, not followed
    src = tmp_path / "c" / "src"
    for rel, (data, mtime_ns, _) in c_files.items():
        name = rel.removeprefix(".rtmp-run1-")  # the general path leaves it staged
        assert data == (src / name).read_bytes()
        assert mtime_ns == (src / name).stat().st_mtime_ns
    assert c_files[".rtmp-run1-stale"][0] == b"s" * 300  # staged afresh by the general path


def test_a_whole_cli_copy_is_the_same_with_and_without_the_native_loop(
        tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(300):
        (src / "d" / f"f{i:03}").write_bytes(os.urandom(i * 13))
    (src / os.fsdecode(b"\xff-name")).write_bytes(b"x")
    (src / "empty").write_bytes(b"")
    results = {}
    for flag in ("0", "1"):
        monkeypatch.setenv(native.ENV, flag)
        dst, state = tmp_path / f"dst{flag}", tmp_path / f"state{flag}.db"
        res = run_cli("copy", str(src), str(dst), "--state", str(state), "--json")
        assert res.returncode == 0, res.stderr
        report = {k: v for k, v in res.report.items()
                  if not any(w in k for w in ("time", "duration", "throughput", "run", "_s",
                                               "started", "finished", "state", "dst",
                                               "destination"))}
        with sqlite3.connect(state) as db:
            tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
            table = next(t for t in tables if "manifest" in t or "files" in t)
            cols = [r[1] for r in db.execute(f"pragma table_info({table})")]
            keep = [c for c in cols if c in ("path", "rel", "size", "mtime_ns", "checksum")]
            rows = sorted(db.execute(f"select {', '.join(keep)} from {table}"))
        tree = {p.relative_to(dst): p.read_bytes() for p in dst.rglob("*") if p.is_file()}
        results[flag] = (report, rows, tree)
    assert results["0"][1] and results["0"][2]
    assert results["0"] == results["1"]


def _flat(root: Path, n: int) -> list[tuple[str, str, str | None]]:
    (root / "src").mkdir(parents=True)
    (root / "dst").mkdir()
    items = []
    for i in range(n):
        (root / "src" / f"f{i}").write_bytes(bytes([i % 256]) * i)
        items.append((str(root / "src" / f"f{i}"), str(root / "dst" / f".t{i}"),
                      str(root / "dst" / f"f{i}") if i % 2 else None))
    return items


def test_copy_small_in_threads_copies_as_one_thread_does(tmp_path: Path) -> None:
    fast = native.built("fastcopy")
    one = fast.copy_small(_flat(tmp_path / "one", 41), False, True, False, SMALL_FILE)
    two = fast.copy_small(_flat(tmp_path / "two", 41), False, True, False, SMALL_FILE,
                          None, 3)
    strip = [(r[0], r[2]) for r in one]  # (size, crc): the mtimes are each tree's own
    assert strip == [(r[0], r[2]) for r in two] and len(strip) == 41
    names = sorted(p.name for p in (tmp_path / "two" / "dst").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "one" / "dst").iterdir())
    assert len(names) == 41


@pytest.mark.parametrize("mtime_ns", [10_413_792_000_123_456_789,  # 2300-01-01: > 2**63 ns
                                      -1_500_000_000])  # 1969, with nanoseconds
def test_copy_small_gives_the_mtime_os_stat_gives_past_the_64_bit_nanoseconds(
        tmp_path: Path, mtime_ns: int) -> None:
    """A file dated after 2262: seconds * 10**9 no longer fits in 64 bits.
    Failed before the fix: the C loop computed it in int64_t (a signed overflow, UBSan's
    "signed integer overflow"), so the 2300 file came back dated 1715."""
    fast = native.built("fastcopy")
    items = _flat(tmp_path, 2)
    for src, _staged, _final in items:
        os.utime(src, ns=(mtime_ns, mtime_ns))
    expect = [os.stat(src).st_mtime_ns for src, _s, _f in items]
    assert expect == [mtime_ns] * 2  # the file system keeps such a date (ext4, tmpfs)
    out = fast.copy_small(items, False, True, False, SMALL_FILE)
    assert [r[1] for r in out] == expect
    assert [os.stat(final or staged).st_mtime_ns for _s, staged, final in items] == expect


def test_copy_small_starts_nothing_past_the_deadline(tmp_path: Path) -> None:
    fast = native.built("fastcopy")
    for threads in (1, 2):
        items = _flat(tmp_path / f"t{threads}", 5)
        assert fast.copy_small(items, False, True, False, SMALL_FILE, 1.0, threads) == [False] * 5
        assert list((tmp_path / f"t{threads}" / "dst").iterdir()) == []


def _updates(root: Path, n: int) -> list[tuple[str, str, str | None]]:
    """``_flat``'s items, each final name already holding an older copy (a re-sync's
    updates), in directories of their own (as a 1% re-sync's changed files mostly are)."""
    items = []
    for i in range(n):
        src, dst = root / "src" / f"d{i}", root / "dst" / f"d{i}"
        src.mkdir(parents=True)
        dst.mkdir(parents=True)
        (src / "f").write_bytes(bytes([i % 256]) * (i + 1))
        (dst / "f").write_bytes(b"old")
        items.append((str(src / "f"), str(dst / ".t"), str(dst / "f")))
    return items


@pytest.mark.parametrize("threads", [1, 2])
def test_renames_from_threads_publish_as_the_copy_loop_does(tmp_path: Path, threads: int) -> None:
    """rename_threads > 1 (the renames after the bin's copies, several at once) leaves the
    same files and returns the same results as renaming each right after its copy; a
    rename that fails (the final name is a non-empty directory) fails that file alone,
    with no staged copy left behind."""
    fast = native.built("fastcopy")
    assert fast.has_rename_threads
    got = {}
    for renames in (1, 4):
        root = tmp_path / f"r{renames}"
        items = _updates(root, 23)
        blocker = Path(items[5][2])
        blocker.unlink()
        blocker.mkdir()
        (blocker / "inside").write_bytes(b"x")
        out = fast.copy_small(items, False, True, False, SMALL_FILE, None, threads, renames)
        tree = {str(p.relative_to(root / "dst")): p.read_bytes()
                for p in sorted((root / "dst").rglob("*")) if p.is_file()}
        got[renames] = ([r if r is None else (r[0], r[2]) for r in out], tree)
    assert got[4] == got[1]
    results, tree = got[4]
    assert results[5] is None and all(r is not None for i, r in enumerate(results) if i != 5)
    assert tree["d5/f/inside"] == b"x" and not any(k.endswith("/.t") for k in tree)
    assert all(tree[f"d{i}/f"] == bytes([i % 256]) * (i + 1) for i in range(23) if i != 5)


def test_copy_small_refuses_a_rename_thread_count_out_of_range() -> None:
    fast = native.built("fastcopy")
    for bad in (0, 17):
        with pytest.raises(ValueError, match="rename_threads"):
            fast.copy_small([], False, True, False, SMALL_FILE, None, 1, bad)


def test_a_bin_of_updates_is_renamed_from_threads_and_new_files_are_not() -> None:
    def tasks(action: str, n: int, self_publish: bool = True) -> list[Task]:
        out = [Task(i, f"f{i}", action, 1, 1) for i in range(n)]
        for t in out:
            t.self_publish = self_publish
        return out

    assert rename_threads(tasks("copy", 50)) == 1  # a rename to a new name does not wait
    assert rename_threads(tasks("update", 1)) == 1
    assert rename_threads(tasks("update", 3)) == 3
    assert rename_threads(tasks("update", 50)) == RENAME_THREADS
    assert rename_threads(tasks("update", 50, self_publish=False)) == 1  # the driver renames


def test_a_re_sync_of_updates_leaves_the_same_tree_and_manifest_both_ways(
        tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-sync whose bins are updates (renamed from threads by the C loop) against the
    Python loop: the same report, manifest and tree."""
    src = tmp_path / "src"
    for d in range(30):
        (src / f"d{d:02}").mkdir(parents=True)
        for i in range(4):
            (src / f"d{d:02}" / f"f{i}").write_bytes(os.urandom(100 + i))
    results = {}
    for flag in ("0", "1"):
        monkeypatch.setenv(native.ENV, flag)
        dst, state = tmp_path / f"dst{flag}", tmp_path / f"state{flag}.db"
        assert run_cli("copy", str(src), str(dst), "--state", str(state)).returncode == 0
        results[flag] = dst, state
    for d in range(0, 30, 2):  # change every other directory's first file
        p = src / f"d{d:02}" / "f0"
        p.write_bytes(os.urandom(150))
        os.utime(p, ns=(10**18, 10**18 + d))
    seen = {}
    for flag, (dst, state) in results.items():
        monkeypatch.setenv(native.ENV, flag)
        res = run_cli("copy", str(src), str(dst), "--state", str(state), "--json")
        assert res.returncode == 0, res.stderr
        assert res.report["files_copied"] == 15 and res.report["files_updated"] == 15
        with sqlite3.connect(state) as db:
            rows = sorted(db.execute("select path, size, mtime_ns, checksum from files"))
        tree = {str(p.relative_to(dst)): p.read_bytes() for p in dst.rglob("*") if p.is_file()}
        seen[flag] = rows, tree
    assert seen["0"] == seen["1"]
    assert seen["1"][1] == {str(p.relative_to(src)): p.read_bytes() for p in src.rglob("*") if p.is_file()}


def test_stage_small_local_renames_a_bin_of_updates_from_threads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's path: a self-published bin of updates reaches copy_small with
    rename_threads, and leaves what the Python loop leaves."""
    fast = native.built("fastcopy")
    calls = []
    real = fast.copy_small

    def spy(*args, **kwargs):
        calls.append(kwargs.get("rename_threads", 1))
        return real(*args, **kwargs)

    monkeypatch.setattr(fast, "copy_small", spy)
    seen = {}
    for flag in ("0", "1"):
        monkeypatch.setenv(native.ENV, flag)
        root = tmp_path / flag
        items = _updates(root, 9)
        fs = LocalFileSystem()
        ctx = StageContext(fs, str(root / "src"), fs, str(root / "dst"), "run1", retries=0)
        tasks = []
        for seq, (s, _staged, _final) in enumerate(items):
            st = Path(s).stat()
            t = Task(seq, f"d{seq}/f", "update", st.st_size, st.st_mtime_ns)
            t.self_publish = True
            tasks.append(t)
        outs = sorted(stage_small_local(tasks, ctx), key=lambda o: o.seq)
        tree = {str(p.relative_to(root / "dst")): p.read_bytes()
                for p in sorted((root / "dst").rglob("*")) if p.is_file()}
        seen[flag] = [(o.rel, o.ok, o.size, o.checksum, o.tmp) for o in outs], tree
    assert calls == [RENAME_THREADS]
    assert seen["0"] == seen["1"]
    assert all(ok and tmp is None for _rel, ok, _size, _crc, tmp in seen["1"][0])
    assert seen["1"][1] == {f"d{i}/f": bytes([i % 256]) * (i + 1) for i in range(9)}


def test_a_batched_bin_gives_the_outcomes_of_the_unbatched_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``batched=True`` (the local executor's call): the files the compiled loop copied come
    back as one SmallBatch whose rows are the unbatched outcomes' (rel, size, mtime,
    checksum), in order; every other file is the same outcome as unbatched."""
    from replicator.transfer import SmallBatch

    monkeypatch.setenv(native.ENV, "1")
    fs = LocalFileSystem()
    got = {}
    for batched in (False, True):
        root = tmp_path / str(batched)
        root.mkdir()
        tasks = _tree(root)
        for t in tasks:
            t.self_publish = True
        ctx = StageContext(fs, str(root / "src"), fs, str(root / "dst"), "run1", retries=0)
        outs = list(stage_small_local(tasks, ctx, batched=batched))
        rows, others = [], []
        for o in outs:
            if isinstance(o, SmallBatch):
                assert o.nbytes == sum(r[2] for r in o.rows) and len(o.seqs) == len(o.rows)
                rows += [(seq, r[0], r[2], r[3], r[4]) for seq, r in zip(o.seqs, o.rows, strict=True)]
            elif o.ok:
                rows.append((o.seq, o.rel, o.size, o.mtime_ns, o.checksum))
            else:
                others.append((o.seq, o.rel, o.error and o.error.replace(str(root), "ROOT")))
        assert isinstance(outs[0], SmallBatch) is batched
        got[batched] = ([(s, rel, size, chk) for s, rel, size, _m, chk in sorted(rows)], others)
    assert got[True] == got[False]
    assert len(got[True][0]) >= 5 and got[True][1]  # copied files and failures, alone


@pytest.mark.parametrize("name", ["a", "x" * 40, "y" * 51, "y" * 52, "z" * 200, "é" * 60, "é" * 130,
                                  BYTE_NAME, "d/sub/" + "w" * 100])
def test_staged_names_of_a_bin_are_the_names_of_one_task(tmp_path: Path, name: str) -> None:
    fs = LocalFileSystem()
    ctx = StageContext(fs, str(tmp_path / "s"), fs, str(tmp_path / "d"), "0123456789ab")
    one = Task(0, text_path(name), "copy", 1, 1)
    bulk = Task(0, text_path(name), "copy", 1, 1)
    assert ctx.staged_names([bulk]) == [ctx.paths(one)[2]]
    assert bulk.paths == one.paths


def test_unsafe_rel_refuses_dot_segments_wherever_they_are() -> None:
    from replicator.filesystems.base import unsafe_rel

    for rel in (".", "..", "./a", "../a", "a/.", "a/..", "a/./b", "a/../b", "", "/a", "a/", "a//b"):
        assert unsafe_rel(rel), rel
    for rel in ("a", ".a", "a.", "a/.b", "a/b.", "..a", "a/..b", "a.b/c..d", ".x/y"):
        assert not unsafe_rel(rel), rel
