"""``copy --snapshot-diff`` against a real HDFS (MiniDFSCluster) over WebHDFS: a snapshot per
run, the listing by GETSNAPSHOTDIFF against the last recorded one, the copy read from it."""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import pytest
import yaml

from replicator import api
from replicator.filesystems.registry import resolve
from replicator.options import CopyOptions
from replicator.progress import Progress
from tests.replicator.conftest import tree, write


def files_of(root: Path) -> dict[str, bytes]:
    return {rel: data for rel, data in tree(root).items() if data is not None}


def hdfs_files(uri: str) -> dict[str, bytes]:
    fs, root = resolve(uri)
    out: dict[str, bytes] = {}
    stack = [root]
    while stack:
        for info in fs.list_dir(stack.pop()):
            if info.kind == "d":
                stack.append(info.path)
            else:
                out[info.path[len(root) + 1:]] = b"".join(fs.read_chunks(info.path))
    return out


def test_snapshot_diff_lists_only_changes_and_loses_nothing(tmp_path: Path,
                                                             hdfs_cluster):
    src_dir = hdfs_cluster.fresh_dir("snap")
    src = hdfs_cluster.webhdfs_uri(src_dir)
    fs, root = resolve(src)
    seed = tmp_path / "seed"
    for i in range(30):
        (seed / f"dt={i % 3}").mkdir(parents=True, exist_ok=True)
        (seed / f"dt={i % 3}" / f"part-{i:03d}").write_bytes(os.urandom(100 + i))
    (seed / "keep.txt").write_bytes(b"keep")
    assert api.copy(str(seed), src, CopyOptions(state_path=str(tmp_path / "seed.db"))).ok
    hdfs_cluster.allow_snapshot(src_dir)
    dst = tmp_path / "dst"
    opts = CopyOptions(state_path=str(tmp_path / "state.db"), snapshot_diff=True,
                       delete=True, workers=4).validated()

    first = api.copy(src, str(dst), opts)
    assert first.ok, first.failures or first.error
    assert first.snapshot["listing"] == "full" and first.snapshot["recorded"]
    assert first.files_copied == 31
    snaps = sorted(n for n in fs.snapshot_names(root) if n.startswith("replicator-"))
    assert snaps == [first.snapshot["name"]]

    noop = api.copy(src, str(dst), opts)
    assert noop.ok and noop.files_copied == 0 and noop.files_skipped == 31
    assert noop.snapshot["listing"] == "diff" and noop.snapshot["changes"] == 0
    assert noop.snapshot["base"] == first.snapshot["name"]
    # the recorded snapshot is the newest one; older ones of ours are gone
    assert sorted(n for n in fs.snapshot_names(root) if n.startswith("replicator-")) == \
        [noop.snapshot["name"]]

    # modify, create (in a new directory), delete and rename
    with fs.open_write(fs.join(root, "keep.txt")) as w:
        w.write(b"keep, but changed")
    fs.makedirs(fs.join(root, "dt=new"))
    with fs.open_write(fs.join(root, "dt=new/part-999")) as w:
        w.write(b"brand new")
    fs.delete_file(fs.join(root, "dt=0/part-000"))
    fs.rename(fs.join(root, "dt=1/part-001"), fs.join(root, "dt=2/renamed"))
    changed = api.copy(src, str(dst), opts)
    assert changed.ok, changed.failures
    assert changed.snapshot["listing"] == "diff" and changed.snapshot["changes"] >= 4
    assert changed.files_copied == 3  # keep.txt, dt=new/part-999, dt=2/renamed
    assert changed.files_deleted == 2  # dt=0/part-000, dt=1/part-001
    assert files_of(dst) == hdfs_files(src)

    # a run that fails does not record its snapshot (and drops it); the run after it lists
    # the new snapshot in full (the failed run may have changed the manifest in ways no diff
    # shows), and the chain starts again from there
    (dst / "dt=late").write_bytes(b"a file where the source now has a directory")
    fs.makedirs(fs.join(root, "dt=late"))
    with fs.open_write(fs.join(root, "dt=late/part-0")) as w:
        w.write(b"late")
    failed = api.copy(src, str(dst), opts.with_(delete=False))
    assert not failed.ok and not failed.snapshot["recorded"]
    assert failed.snapshot["base"] == changed.snapshot["name"]
    assert failed.snapshot["name"] not in fs.snapshot_names(root)  # dropped
    (dst / "dt=late").unlink()
    after = api.copy(src, str(dst), opts)
    assert after.ok, after.failures
    assert after.snapshot["listing"] == "full" and after.snapshot["recorded"]
    assert after.files_copied == 1
    assert files_of(dst) == hdfs_files(src)
    again = api.copy(src, str(dst), opts)
    assert again.ok and again.files_copied == 0 and again.files_deleted == 0
    assert again.snapshot["listing"] == "diff" and again.snapshot["base"] == after.snapshot["name"]


def test_not_snapshottable_falls_back_to_the_listing(tmp_path: Path, hdfs_cluster):
    src_dir = hdfs_cluster.fresh_dir("plain")
    src = hdfs_cluster.webhdfs_uri(src_dir)
    seed = tmp_path / "seed"
    (seed / "a").mkdir(parents=True)
    (seed / "a" / "f").write_bytes(b"f")
    assert api.copy(str(seed), src, CopyOptions(state_path=str(tmp_path / "seed.db"))).ok
    report = api.copy(src, str(tmp_path / "dst"),
                      CopyOptions(state_path=str(tmp_path / "s.db"), snapshot_diff=True))
    assert report.ok and report.files_copied == 1
    assert report.snapshot["listing"] == "full" and not report.snapshot["recorded"]
    assert "snapshot" in report.snapshot["note"]
    assert (tmp_path / "dst" / "a" / "f").read_bytes() == b"f"


def _seeded_snapshot_dir(tmp_path: Path, hdfs_cluster, prefix: str,
                         files: dict[str, tuple[bytes, float | None]]) -> str:
    """A fresh snapshottable HDFS directory holding ``files`` ({rel: (data, mtime)}); its
    webhdfs:// URI."""
    src_dir = hdfs_cluster.fresh_dir(prefix)
    src = hdfs_cluster.webhdfs_uri(src_dir)
    seed = tmp_path / f"seed-{prefix}"
    for rel, (data, mtime) in files.items():
        write(seed / rel, data, mtime)
    assert api.copy(str(seed), src, CopyOptions(state_path=str(tmp_path / f"seed-{prefix}.db"))).ok
    hdfs_cluster.allow_snapshot(src_dir)
    return src


@pytest.mark.parametrize("selection", ["include", "files_from", "max_age"])
def test_a_selective_run_neither_diffs_nor_becomes_the_base(tmp_path: Path, hdfs_cluster,
                                                             selection):
    """A run that lists only part of the source (--include/--exclude, --files-from,
    --max-age) lists its snapshot in full and never records it: an unfiltered run after it
    must not diff from a manifest that only holds the selected part (never copying the rest),
    and --delete after it must not remove live files the selective run did not list."""
    old = time.time() - 30 * 86400
    src = _seeded_snapshot_dir(tmp_path, hdfs_cluster, f"sel-{selection}".replace("_", "-"), {
        "a.csv": (b"a", None), "b.csv": (b"b", None), "c.txt": (b"c", old), "d.txt": (b"d", old)})
    dst = tmp_path / "dst"
    opts = CopyOptions(state_path=str(tmp_path / "state.db"), snapshot_diff=True).validated()
    listing = tmp_path / "list.txt"
    listing.write_text("a.csv\nb.csv\n")
    selective = {"include": {"include": ("*.csv",)},
                 "files_from": {"files_from": str(listing), "delete": True},
                 "max_age": {"max_age_s": 86400.0}}[selection]

    if selection == "files_from":  # the full copy first: the selective run then skips
        first = api.copy(src, str(dst), opts)
        assert first.ok and first.files_copied == 4 and first.snapshot["recorded"]
    part = api.copy(src, str(dst), opts.with_(**selective))
    assert part.ok, part.failures or part.error
    assert sorted(files_of(dst)) == (["a.csv", "b.csv", "c.txt", "d.txt"]
                                     if selection == "files_from" else ["a.csv", "b.csv"])

    full = api.copy(src, str(dst), opts.with_(delete=True))
    assert full.ok, full.failures or full.error
    assert full.files_deleted == 0
    assert files_of(dst) == hdfs_files(src)
    again = api.copy(src, str(dst), opts.with_(delete=True))
    assert again.ok and again.files_copied == 0 and again.files_deleted == 0
    assert again.files_skipped == 4
    assert files_of(dst) == hdfs_files(src)
    # how: the selective run listed its snapshot in full (saying why) and did not record
    # it; the unfiltered run after it listed in full and started the chain again
    assert part.snapshot["listing"] == "full" and not part.snapshot["recorded"]
    assert part.snapshot["base"] is None and part.snapshot["note"]
    assert full.snapshot["listing"] == "full" and full.snapshot["recorded"]
    assert again.snapshot["listing"] == "diff"


def test_snapshot_diff_with_a_transform_chain(tmp_path: Path, hdfs_cluster):
    """-t gunzip with --snapshot-diff: the manifest holds transform rows (an archive and its
    output), which a diff listing cannot stand for; runs list their snapshot in full, make
    no directory out of an archive and pick up a changed archive."""
    src = _seeded_snapshot_dir(tmp_path, hdfs_cluster, "gz", {
        "x.gz": (gzip.compress(b"first"), None), "p.txt": (b"plain", None)})
    fs, root = resolve(src)
    dst = tmp_path / "dst"
    opts = CopyOptions(state_path=str(tmp_path / "state.db"), snapshot_diff=True,
                       transforms=("gunzip",), delete=True).validated()
    reports = []
    for _ in range(3):
        reports.append(rep := api.copy(src, str(dst), opts))
        assert rep.ok, rep.failures or rep.error
        assert tree(dst) == {"x": b"first", "p.txt": b"plain"}
    with fs.open_write(fs.join(root, "x.gz")) as w:
        w.write(gzip.compress(b"second, longer"))
    rep = api.copy(src, str(dst), opts)
    assert rep.ok, rep.failures or rep.error
    assert tree(dst) == {"x": b"second, longer", "p.txt": b"plain"}
    for rep in reports:
        assert rep.snapshot["listing"] == "full" and not rep.snapshot["recorded"]
    # the snapshots of these runs are not left behind
    assert not [n for n in fs.snapshot_names(root) if n.startswith("replicator-")]


def test_two_destinations_of_one_source_keep_their_own_snapshots(tmp_path: Path, hdfs_cluster):
    """Each pair names its snapshots and deletes only its own: a run of pair B neither
    removes the snapshot pair A is reading from (A's copy would fail "source vanished") nor
    the one A recorded as its base (A would never get a diff listing)."""
    src = _seeded_snapshot_dir(tmp_path, hdfs_cluster, "pairs", {
        f"f{i}": (os.urandom(64), None) for i in range(5)})
    fs, root = resolve(src)
    opts = CopyOptions(state_path=str(tmp_path / "state.db"), snapshot_diff=True,
                       delete=True).validated()
    dst_a, dst_b = tmp_path / "a", tmp_path / "b"

    class RunB(Progress):
        """Pair B's whole run, from inside pair A's copy (after A took and listed its
        snapshot, before A read its files)."""
        report = None

        def on_plan(self, files: int, nbytes: int) -> None:
            if RunB.report is None:
                RunB.report = api.copy(src, str(dst_b), opts)

    first_a = api.copy(src, str(dst_a), opts, progress=RunB())
    assert RunB.report is not None and RunB.report.ok, RunB.report
    assert first_a.ok, first_a.failures or first_a.error
    assert first_a.files_copied == 5 and first_a.snapshot["recorded"]
    names = set(fs.snapshot_names(root))
    assert {first_a.snapshot["name"], RunB.report.snapshot["name"]} <= names
    for dst in (dst_a, dst_b):
        rep = api.copy(src, str(dst), opts)
        assert rep.ok and rep.snapshot["listing"] == "diff", rep.snapshot
        assert rep.files_skipped == 5 and files_of(dst) == hdfs_files(src)
    ours = sorted(n for n in fs.snapshot_names(root) if n.startswith("replicator-"))
    assert len(ours) == 2  # one recorded base per pair, older ones deleted


def test_snapshot_diff_over_hdfs_rpc_through_the_namenodes_webhdfs(tmp_path: Path, hdfs_cluster,
                                                                 run_cli):
    """hdfs:// (hdfs-native, no snapshot calls) takes its snapshots and diffs through the
    NameNode's WebHDFS (``http_address``) and reads from the snapshot over RPC; without
    ``http_address`` --snapshot-diff is refused with exit 2 naming the option."""
    src_dir = hdfs_cluster.fresh_dir("snap-rpc")
    seed = tmp_path / "seed"
    for i in range(6):
        (seed / f"d{i % 2}").mkdir(parents=True, exist_ok=True)
        (seed / f"d{i % 2}" / f"f{i}").write_bytes(os.urandom(50 + i))
    assert api.copy(str(seed), hdfs_cluster.webhdfs_uri(src_dir),
                    CopyOptions(state_path=str(tmp_path / "seed.db"))).ok
    hdfs_cluster.allow_snapshot(src_dir)
    remote = {"type": "hdfs", "url": hdfs_cluster.hdfs, "client": "native", "root": src_dir}
    remotes = tmp_path / "remotes.yaml"
    remotes.write_text(yaml.safe_dump({"remotes": {
        "src": {**remote, "http_address": hdfs_cluster.webhdfs}, "nohttp": remote}}))
    run_cli.env["REPLICATOR_REMOTES"] = str(remotes)
    dst = tmp_path / "dst"
    args = ("--snapshot-diff", "--delete", "--state", str(tmp_path / "state.db"), "--json")

    first = run_cli("copy", "src:", str(dst), *args)
    assert first.returncode == 0, first.stderr
    assert first.report["snapshot"]["listing"] == "full" and first.report["snapshot"]["recorded"]
    assert first.report["files_copied"] == 6
    noop = run_cli("copy", "src:", str(dst), *args)
    assert noop.returncode == 0 and noop.report["files_copied"] == 0
    assert noop.report["snapshot"]["listing"] == "diff" and noop.report["snapshot"]["changes"] == 0

    fs, root = resolve(hdfs_cluster.webhdfs_uri(src_dir))
    with fs.open_write(fs.join(root, "d0/f0")) as w:
        w.write(b"changed")
    fs.delete_file(fs.join(root, "d1/f1"))
    changed = run_cli("copy", "src:", str(dst), *args)
    assert changed.returncode == 0, changed.stderr
    assert changed.report["snapshot"]["listing"] == "diff"
    assert (changed.report["files_copied"], changed.report["files_deleted"]) == (1, 1)
    assert files_of(dst) == hdfs_files(hdfs_cluster.webhdfs_uri(src_dir))

    refused = run_cli("copy", "nohttp:", str(tmp_path / "other"), *args)
    assert refused.returncode == 2
    assert "--snapshot-diff" in refused.stderr and "http_address" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize(("changes", "levels", "expected"), [
    # what HDFS reports: a file created in dt=1 (and dt=1 modified), an overwrite (delete +
    # create of one name), an append (modify), a rename within and across partitions
    ([("MODIFY", "dt=1", None), ("CREATE", "dt=1/f", None)], ("dt=*",), ({"dt=1"}, set(), set())),
    ([("DELETE", "dt=2/f", None), ("CREATE", "dt=2/f", None)], ("dt=*",), ({"dt=2"}, set(), set())),
    ([("MODIFY", "dt=3/f", None)], ("dt=*",), ({"dt=3"}, set(), set())),
    ([("MODIFY", "", None), ("RENAME", "dt=4", "dt=44")], ("dt=*",), ({"dt=4", "dt=44"}, set(), set())),
    ([("RENAME", "dt=5/a", "dt=6/a")], ("dt=*",), ({"dt=5", "dt=6"}, set(), set())),
    # names outside the layout, and temporary names, are no partition
    ([("CREATE", "_tmp/x", None), ("CREATE", "dt=7._COPYING_", None), ("CREATE", "x.tmp", None)],
     ("dt=*",), (set(), set(), set())),
    # above partition depth: created and deleted directories are listed in the new / old image
    ([("MODIFY", "", None), ("CREATE", "dt=8", None), ("DELETE", "dt=9", None),
      ("MODIFY", "dt=1", None), ("CREATE", "dt=1/hour=02/f", None)],
     ("dt=*", "hour=*"), ({"dt=1/hour=02"}, {"dt=9"}, {"dt=8"})),
    ([("RENAME", "dt=1", "dt=2")], ("dt=*", "hour=*"), (set(), {"dt=1"}, {"dt=2"})),
    # an unpartitioned dataset: any entry names its one partition
    ([("MODIFY", "f", None)], (), ({""}, set(), set())),
    ([], ("dt=*",), (set(), set(), set())),
])
def test_partitions_in_diff(changes, levels, expected):
    from replicator.snapdiff import partitions_in_diff

    assert partitions_in_diff(changes, levels) == expected
