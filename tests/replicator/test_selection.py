"""What a run selects: regex filters, --max-age, --files-from (and durations)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from replicator import api
from replicator.errors import UsageError
from replicator.filters import Filter
from replicator.options import CopyOptions, parse_duration
from tests.replicator.conftest import tree, write

T0 = 1_700_000_000
DAY = 86400


def opts(tmp_path: Path, **kw) -> CopyOptions:
    return CopyOptions(state_path=str(tmp_path / "state.db"), **kw)


@pytest.mark.parametrize(("text", "seconds"), [
    ("0", 0), ("90", 90), ("1.5", 1.5), ("30s", 30), ("30m", 1800), ("2h", 7200), ("7d", 7 * DAY),
    ("1w", 7 * DAY), ("1h30m", 5400), (" 2H ", 7200), (12, 12), (0.25, 0.25),
])
def test_durations(text, seconds) -> None:
    assert parse_duration(text, "--max-age") == seconds


@pytest.mark.parametrize("text", ["nan", "inf", "-1", "-5m", "", "1y", "m", "1h-", "1e3", "5 m",
                                  float("nan"), float("inf"), -1.0, True])
def test_bad_durations_refused(text) -> None:
    with pytest.raises(UsageError, match="--max-age"):
        parse_duration(text, "--max-age")


@pytest.mark.parametrize("args", [
    ["--max-age", "nan"], ["--max-age", "inf"], ["--min-age", "nan"], ["--min-age", "-3"],
    ["--max-age", "0"], ["--max-age", "1h", "--min-age", "2h"], ["--include-regex", "("],
    ["--exclude-regex", ""],
])
def test_bad_selection_flags_exit_2(tmp_path: Path, run_cli, args) -> None:
    write(tmp_path / "src" / "a", "a")
    r = run_cli("copy", str(tmp_path / "src"), str(tmp_path / "dst"), *args, "--json")
    assert r.returncode == 2, (args, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and args[0] in r.stderr
    assert not (tmp_path / "dst").exists()


def test_regex_filters_search_the_relative_path() -> None:
    f = Filter(include_regex=(r"dt=2026-11-\d\d/",), exclude_regex=(r"\.tmp\.csv$", r"^skip/"))
    assert f.keep_file("dt=2026-11-20/part-0.csv")
    assert f.keep_file("tables/t1/dt=2026-11-21/x")  # searched, not anchored
    assert not f.keep_file("dt=2026-12-01/part-0.csv")
    assert not f.keep_file("dt=2026-11-20/part-0.tmp.csv")  # exclude wins
    assert not f.keep_file("skip/dt=2026-11-20/a")
    assert f.keep_dir("skip")  # regexes never prune directories...
    assert not f.keep_empty_dir("skip")  # ...but the excluded directory itself is not kept
    anchored = Filter(include_regex=(r"^a/[^/]+$",))
    assert anchored.keep_file("a/x") and not anchored.keep_file("b/a/x") and not anchored.keep_file("a/b/x")
    both = Filter(include=("*.csv",), include_regex=(r"\.json$",))  # includes: either kind
    assert both.keep_file("x.csv") and both.keep_file("d/y.json") and not both.keep_file("z.txt")


def test_regex_filters_end_to_end_with_delete(tmp_path: Path, run_cli) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "dt=2026-11-20" / "a.csv", "a", T0)
    write(src / "dt=2026-11-20" / "a.log", "log", T0)
    write(src / "other" / "b.csv", "b", T0)
    write(dst / "dt=2026-11-20" / "old.log", "keep me", T0)  # excluded: never deleted
    r = run_cli("copy", str(src), str(dst), "--include-regex", r"^dt=", "--exclude-regex", r"\.log$",
                "--delete", "--json")
    assert r.returncode == 0, r.stderr
    assert tree(dst) == {"dt=2026-11-20": None, "dt=2026-11-20/a.csv": b"a",
                         "dt=2026-11-20/old.log": b"keep me"}
    assert r.report["files_deleted"] == 0


def test_max_age_leaves_old_files_alone_and_never_deletes_them(tmp_path: Path, run_cli) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    now = time.time()
    write(src / "old.csv", "old", now - 10 * DAY)
    write(src / "new.csv", "new", now - 60)
    r = run_cli("copy", str(src), str(dst), "--max-age", "7d", "--json")
    assert r.returncode == 0, r.stderr
    assert r.report["files_copied"] == 1 and r.report["files_too_old"] == 1
    assert tree(dst) == {"new.csv": b"new"}
    shutil.copy2(src / "old.csv", dst / "old.csv")  # copied by an earlier run without --max-age
    r = run_cli("copy", str(src), str(dst), "--max-age", "7d", "--delete", "--json")
    assert r.returncode == 0 and r.report["files_deleted"] == 0 and (dst / "old.csv").exists()


def test_held_file_is_not_adopted_from_an_existing_destination(tmp_path: Path) -> None:
    """First run (no state) against a destination holding an older version of a file
    that is too new to copy: it must be copied once it is old enough, not recorded as
    copied and skipped forever (it was: the 'adopt' of unchanged files took it)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "f.csv", "new content")  # mtime now: held by --min-age
    write(dst / "f.csv", "old content", T0)
    rep = api.copy(str(src), str(dst), opts(tmp_path, min_age_s=3600))
    assert rep.files_held_back == 1 and rep.files_copied == 0
    rep = api.copy(str(src), str(dst), opts(tmp_path))
    assert rep.files_copied == 1
    assert (dst / "f.csv").read_bytes() == b"new content"


# ------------------------------------------------------------------------ --files-from
def test_files_from_copies_listed_paths(tmp_path: Path, run_cli) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    for rel in ("a.csv", "b.csv", "dir/c.csv", "dir/sub/d.csv", "other/e.csv", "x y/ü.csv"):
        write(src / rel, rel, T0)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# wanted today\n\n  a.csv  \n; also a comment\ndir\n{src}/x y/ü.csv\n"
                       "./dir/sub/d.csv\na.csv\n")
    r = run_cli("copy", str(src), str(dst), "--files-from", str(listing), "--json")
    assert r.returncode == 0, r.stderr
    assert {k for k, v in tree(dst).items() if v is not None} == {
        "a.csv", "dir/c.csv", "dir/sub/d.csv", "x y/ü.csv"}
    again = run_cli("copy", str(src), str(dst), "--files-from", str(listing), "--json").report
    assert again["files_copied"] == 0 and again["files_skipped"] == 4
    v = run_cli("verify", str(src), str(dst), "--files-from", str(listing), "--json")
    assert v.returncode == 0 and v.report["files_compared"] == 4, v.stdout


@pytest.mark.parametrize(("line", "why"), [
    ("../outside.csv", "escapes the source root"),
    ("dir/../../etc/passwd", "escapes the source root"),
    ("/etc/passwd", "outside the source root"),
    (".", "names the source root itself"),
])
def test_files_from_refuses_escapes_with_file_and_line(tmp_path: Path, run_cli, line, why) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a.csv", "a", T0)
    write(tmp_path / "outside.csv", "secret", T0)
    listing = tmp_path / "list.txt"
    listing.write_text(f"a.csv\n# c\n{line}\n")
    r = run_cli("copy", str(src), str(dst), "--files-from", str(listing), "--json")
    assert r.returncode == 2, r.stdout
    assert f"{listing}:3" in r.stderr and why in r.stderr and "Traceback" not in r.stderr
    assert not dst.exists()


def test_files_from_missing_entry_fails_alone_and_blocks_deletes(tmp_path: Path, run_cli) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a.csv", "a", T0)
    write(dst / "gone.csv", "was listed before", T0)
    listing = tmp_path / "list.txt"
    listing.write_text("a.csv\nnot-there.csv\ngone.csv\n")
    r = run_cli("copy", str(src), str(dst), "--files-from", str(listing), "--delete",
                "--max-delete", "100%", "--json")
    assert r.returncode == 1
    failed = {f["path"]: f["error"] for f in r.report["failures"]}
    assert set(failed) == {"not-there.csv", "gone.csv"}
    assert f"listed in {listing}:2, not found in the source" in failed["not-there.csv"]
    assert (dst / "a.csv").read_bytes() == b"a" and (dst / "gone.csv").exists()


def test_files_from_delete_only_under_listed_paths(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "dir" / "keep.csv", "k", T0)
    write(dst / "dir" / "stale.csv", "s", T0)  # under a listed directory: deleted
    write(dst / "unlisted.csv", "u", T0)  # not listed: not ours to delete
    listing = tmp_path / "list.txt"
    listing.write_text("dir\n")
    rep = api.copy(str(src), str(dst), opts(tmp_path, files_from=str(listing), delete=True,
                                            max_delete="100%"))
    assert rep.ok and rep.files_deleted == 1
    assert tree(dst) == {"dir": None, "dir/keep.csv": b"k", "unlisted.csv": b"u"}


def test_files_from_applies_filters_and_ages(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a.csv", "a", T0)
    write(src / "b.log", "b", T0)
    write(src / "fresh.csv", "f")
    write(src / "skip" / "c.csv", "c", T0)
    listing = tmp_path / "list.txt"
    listing.write_text("a.csv\nb.log\nfresh.csv\nskip/c.csv\n")
    rep = api.copy(str(src), str(dst), opts(tmp_path, files_from=str(listing), exclude=("*.log", "skip"),
                                            min_age_s=3600))
    assert rep.ok and rep.files_held_back == 1
    assert tree(dst) == {"a.csv": b"a"}


def test_files_from_unreadable_list_exits_2(tmp_path: Path, run_cli) -> None:
    write(tmp_path / "src" / "a", "a")
    r = run_cli("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--files-from",
                str(tmp_path / "nope.txt"))
    assert r.returncode == 2 and "nope.txt" in r.stderr and "Traceback" not in r.stderr


def test_files_from_non_utf8_name(tmp_path: Path) -> None:
    import os

    src, dst = tmp_path / "src", tmp_path / "dst"
    name = b"caf\xe9.csv"  # latin-1, not UTF-8
    src.mkdir()
    with open(os.path.join(os.fsencode(src), name), "wb") as f:
        f.write(b"x")
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"# latin-1 below\n" + name + b"\n")
    rep = api.copy(str(src), str(dst), opts(tmp_path, files_from=str(listing)))
    assert rep.ok and rep.files_copied == 1, rep.failures
    with open(os.path.join(os.fsencode(dst), name), "rb") as f:
        assert f.read() == b"x"


def test_files_from_delete_run_keeps_the_manifest_of_unlisted_paths(tmp_path: Path) -> None:
    """A --files-from run lists (both sides) only the listed paths: the manifest rows of the
    others are not stale and must survive it, or the next plain run copies them all again
    (and a --snapshot-diff run, which lists from the manifest, deletes them)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    for name in ("a", "b", "dir/c"):
        write(src / name, name, T0)
    assert api.copy(str(src), str(dst), opts(tmp_path)).files_copied == 3
    listing = tmp_path / "list.txt"
    listing.write_text("a\n")
    rep = api.copy(str(src), str(dst), opts(tmp_path, files_from=str(listing), delete=True))
    assert rep.ok and rep.files_skipped == 1 and rep.files_deleted == 0, rep.failures
    again = api.copy(str(src), str(dst), opts(tmp_path))
    assert again.ok and again.files_copied == 0 and again.files_skipped == 3
    # a row under a listed directory that is gone from both sides is still forgotten
    write(src / "dir" / "d", "d", T0)
    assert api.copy(str(src), str(dst), opts(tmp_path)).files_copied == 1
    (src / "dir" / "d").unlink()
    (dst / "dir" / "d").unlink()
    listing.write_text("dir\n")
    rep = api.copy(str(src), str(dst), opts(tmp_path, files_from=str(listing), delete=True))
    assert rep.ok and rep.files_copied == 0, rep.failures
    from replicator.state import open_store
    store = open_store(str(tmp_path / "state.db"))
    try:
        assert sorted(r[0] for r in store.manifest_rows(1) if r[1] == "f") == ["a", "b", "dir/c"]
    finally:
        store.close()
