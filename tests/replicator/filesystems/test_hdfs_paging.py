"""Paged listings on a real NameNode whose ``dfs.ls.limit`` is 7: WebHDFS LISTSTATUS_BATCH
and hdfs-native list a directory many pages long completely, each entry exactly once, whatever
the names (non-ASCII names sort before ASCII ones on HDFS: signed-byte order), and a copy out
of it copies every file."""

from __future__ import annotations

import requests

from tests.fixtures.hadoop import SMALL_PAGE
from tests.replicator.filesystems.test_hdfs_cluster import use_remotes

NAMES = ([f"f-{i:03d}.txt" for i in range(40)]
         + [f"ü-{i}" for i in range(5)] + [f"日本 {i}.csv" for i in range(5)]
         + ["a b", "hash#1", "pct%41", "amp&x=y", "plus+1", "q?x", "zz"])


def _make_tree(cluster, root: str) -> None:
    base = f"{cluster.webhdfs}/webhdfs/v1"
    user = {"user.name": cluster.superuser}
    for name in NAMES:
        r = requests.put(f"{base}{root}/{requests.utils.quote(name, safe='')}",
                         params={"op": "CREATE", **user}, allow_redirects=False, timeout=30)
        r.raise_for_status()
        requests.put(r.headers["Location"], data=name.encode(), timeout=30).raise_for_status()
    for d in ("sub-1", "sub-2"):
        requests.put(f"{base}{root}/{d}", params={"op": "MKDIRS", **user}, timeout=30).raise_for_status()


def test_a_directory_of_many_pages_lists_whole_exactly_once(hdfs_cluster_small_pages, tmp_path,
                                                           run_cli, remotes_file) -> None:
    import hdfs_native

    from replicator.filesystems.hdfs import HDFSFileSystem
    from replicator.filesystems.webhdfs import WebHDFSFileSystem

    cluster = hdfs_cluster_small_pages
    root = cluster.fresh_dir("pages")
    _make_tree(cluster, root)
    want = sorted([*NAMES, "sub-1", "sub-2"])

    # the NameNode really pages: its first batch holds SMALL_PAGE entries and says more remain
    r = requests.get(f"{cluster.webhdfs}/webhdfs/v1{root}",
                     params={"op": "LISTSTATUS_BATCH", "user.name": cluster.superuser}, timeout=30)
    listing = r.json()["DirectoryListing"]
    assert len(listing["partialListing"]["FileStatuses"]["FileStatus"]) == SMALL_PAGE
    assert listing["remainingEntries"] == len(want) - SMALL_PAGE

    host, port = cluster.webhdfs.removeprefix("http://").split(":")
    web = WebHDFSFileSystem(host, int(port), user=cluster.superuser)
    names = [i.name for i in web.list_dir(root)]
    assert sorted(names) == want and len(names) == len(set(names))
    native = HDFSFileSystem(cluster.hdfs, client="native")
    names = [i.name for i in native.list_dir(root)]
    assert sorted(names) == want and len(names) == len(set(names))
    assert len(list(hdfs_native.Client(cluster.hdfs).list_status(root))) == len(want)

    # a copy out of it over WebHDFS gets every file, with its bytes
    use_remotes(run_cli, remotes_file, {"src": {"type": "webhdfs", "host": host, "port": int(port),
                                                "root": root}})
    out = tmp_path / "out"
    copied = run_cli("copy", "src:", str(out), "--json")
    assert copied.returncode == 0, copied.stderr
    assert copied.report["files_copied"] == len(NAMES)
    assert sorted(p.name for p in out.iterdir()) == want
    assert all((out / n).read_bytes() == n.encode() for n in NAMES)
