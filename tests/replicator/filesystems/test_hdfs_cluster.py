"""Copies through a real HDFS (MiniDFSCluster on loopback): awkward trees round trip byte-exact,
a client that is not ours (plain WebHDFS REST with ``requests``) sees exactly the source, the
cluster's own COMPOSITE-CRC32C is the file's CRC32C and verification uses it without reading
bytes, and a NameNode or DataNode stopped mid-copy fails cleanly and loses nothing."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import google_crc32c
import requests

from tests.replicator.conftest import cli_command, tree, write

MiB = 1 << 20


def hdfs_remote(cluster, root: str, **extra) -> dict:
    return {"type": "hdfs", "url": cluster.hdfs, "client": "native",
            "http_address": cluster.webhdfs, "root": root, **extra}


def use_remotes(run_cli, remotes_file, remotes: dict) -> None:
    """Named remotes for this test's CLI runs (``name:path``)."""
    run_cli.env["REPLICATOR_REMOTES"] = str(remotes_file(remotes))


def rest_files(cluster, root: str) -> dict[str, int]:
    """{relative path: length} of every file under ``root``, by plain WebHDFS LISTSTATUS."""
    out: dict[str, int] = {}
    todo = [""]
    while todo:
        rel = todo.pop()
        r = requests.get(f"{cluster.webhdfs}/webhdfs/v1{root}/{rel}",
                         params={"op": "LISTSTATUS", "user.name": cluster.superuser}, timeout=30)
        r.raise_for_status()
        for st in r.json()["FileStatuses"]["FileStatus"]:
            child = f"{rel}{st['pathSuffix']}"
            if st["type"] == "DIRECTORY":
                todo.append(child + "/")
            else:
                out[child] = st["length"]
    return out


def rest_read(cluster, path: str) -> bytes:
    r = requests.get(f"{cluster.webhdfs}/webhdfs/v1{path}",
                     params={"op": "OPEN", "user.name": cluster.superuser}, timeout=60)
    r.raise_for_status()
    return r.content


def test_local_hdfs_local_round_trip(hdfs_cluster, tmp_path, run_cli, remotes_file):
    src = tmp_path / "src"
    two_blocks = os.urandom(MiB + MiB // 2)
    files = {
        "with space/ünïcødé 日本.txt": b"non-ASCII names and spaces",
        "empty": b"",
        "a/b/c/d/e/f/g/deep.csv": b"1,2,3\n" * 100,
        "dt=2026-11-20/part 0001.parquet": os.urandom(70_000),
        "two-blocks.bin": two_blocks,
    }
    for rel, data in files.items():
        write(src / rel, data)
    root = hdfs_cluster.fresh_dir("roundtrip")
    # 1 MiB blocks for what we write (the cluster default is 128 MiB): a two-block file
    use_remotes(run_cli, remotes_file, {"onprem": hdfs_remote(hdfs_cluster, root, blocksize=MiB)})

    first = run_cli("copy", str(src), "onprem:", "--json")
    assert first.returncode == 0, first.stderr
    assert first.report["files_copied"] == len(files)

    # A client that is not ours sees exactly the source: names, lengths, bytes.
    assert rest_files(hdfs_cluster, root) == {rel: len(d) for rel, d in files.items()}
    for rel, data in files.items():
        assert rest_read(hdfs_cluster, f"{root}/{rel}") == data
    blocks = requests.get(f"{hdfs_cluster.webhdfs}/webhdfs/v1{root}/two-blocks.bin",
                          params={"op": "GET_BLOCK_LOCATIONS", "user.name": "root",
                                  "offset": 0, "length": 1 << 40}, timeout=30).json()
    assert len(blocks["LocatedBlocks"]["locatedBlocks"]) == 2
    # The cluster's own checksum (Java client, COMPOSITE_CRC) is the CRC32C of the bytes.
    algorithm, value = hdfs_cluster.checksum(f"{root}/two-blocks.bin")
    assert (algorithm, int(value, 16)) == ("COMPOSITE-CRC32C", google_crc32c.value(two_blocks))

    back = tmp_path / "back"
    down = run_cli("copy", "onprem:", str(back), "--json")
    assert down.returncode == 0, down.stderr
    assert {k: v for k, v in tree(back).items() if v is not None} == files

    verify = run_cli("verify", str(src), "onprem:", "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    sums = verify.report["checksums"]
    # HDFS side: the DataNodes' COMPOSITE-CRC32C, no bytes read; local side: computed.
    assert sums["destination"] == {"stored": len(files)}
    assert sums["source"] == {"computed": len(files)}
    assert {f["path"]: f["destination"] for f in verify.report["files"]} == dict.fromkeys(
        files, "stored")

    again = run_cli("copy", str(src), "onprem:", "--json")
    assert again.returncode == 0, again.stderr
    assert again.report["files_copied"] == 0

    with open(src / "two-blocks.bin", "ab") as f:
        f.write(b"appended")
    os.utime(src / "two-blocks.bin", (time.time() + 5, time.time() + 5))
    appended = run_cli("copy", str(src), "onprem:", "--json")
    assert appended.returncode == 0, appended.stderr
    assert appended.report["files_copied"] == 1
    assert rest_read(hdfs_cluster, f"{root}/two-blocks.bin") == two_blocks + b"appended"
    assert run_cli("verify", str(src), "onprem:", "--json").returncode == 0


def test_verify_finds_a_corrupted_hdfs_copy_by_stored_checksum(hdfs_cluster, tmp_path, run_cli,
                                                                remotes_file):
    """Same size, different bytes: the stored COMPOSITE-CRC32C tells them apart."""
    src = tmp_path / "src"
    write(src / "f.bin", b"a" * 1000)
    root = hdfs_cluster.fresh_dir("corrupt")
    use_remotes(run_cli, remotes_file, {"onprem": hdfs_remote(hdfs_cluster, root)})
    assert run_cli("copy", str(src), "onprem:", "--json").returncode == 0
    write(src / "f.bin", b"b" * 1000)
    result = run_cli("verify", str(src), "onprem:", "--json")
    assert result.returncode == 1
    [diff] = result.report["differing"]
    assert diff["path"] == "f.bin" and diff["reason"] == "checksum"
    assert result.report["checksums"]["destination"] == {"stored": 1}


def _copy_with_fault(cluster, tmp_path: Path, run_cli, remotes_file, stop, restart, root: str):
    """Start a slow copy of 12 files into ``root``, call ``stop`` once two are published,
    wait for the copy to end, then ``restart``. Returns (returncode, report, files, seconds
    from the fault to the end)."""
    src = tmp_path / "src"
    files = {f"part-{i:03d}.bin": os.urandom(512 * 1024) for i in range(12)}
    for name, data in files.items():
        write(src / name, data)
    use_remotes(run_cli, remotes_file, {"onprem": hdfs_remote(cluster, root)})
    env = run_cli.env
    args = ["copy", str(src), "onprem:", "--workers", "2", "--bandwidth", "2", "--retries", "2",
            "--json"]
    proc = subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                published = [n for n in rest_files(cluster, root) if n in files]
            except requests.HTTPError:
                published = []
            if len(published) >= 2:
                break
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "copy did not start"
            time.sleep(0.05)
        stop()
        stopped = time.monotonic()
        out, err = proc.communicate(timeout=180)
        took = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            proc.kill()
        restart()
    report = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    return proc.returncode, report, files, took, err


def _check_after_fault(cluster, root, src_files, returncode, report, err, run_cli, tmp_path):
    assert returncode == 1, err
    assert report["files_failed"] > 0
    assert cluster.hdfs in json.dumps(report), report  # the failure names the cluster
    # Nothing partial under a final name: every published file is complete and exact.
    for name, length in rest_files(cluster, root).items():
        if name in src_files:
            assert length == len(src_files[name])
            assert rest_read(cluster, f"{root}/{name}") == src_files[name]
    again = run_cli("copy", str(tmp_path / "src"), "onprem:", "--json")
    assert again.returncode == 0, again.stderr
    listed = rest_files(cluster, root)
    assert {n: listed[n] for n in src_files} == {n: len(d) for n, d in src_files.items()}
    assert run_cli("verify", str(tmp_path / "src"), "onprem:", "--json").returncode == 0


def test_namenode_stopped_mid_copy(hdfs_cluster, tmp_path, run_cli, remotes_file):
    root = hdfs_cluster.fresh_dir("nn-down")
    rc, report, files, took, err = _copy_with_fault(
        hdfs_cluster, tmp_path, run_cli, remotes_file, hdfs_cluster.stop_namenode,
        hdfs_cluster.restart_namenode, root)
    print(f"NameNode stopped: the copy ended {took:.1f}s later")
    _check_after_fault(hdfs_cluster, root, files, rc, report, err, run_cli, tmp_path)


def test_datanode_stopped_mid_copy(hdfs_cluster, tmp_path, run_cli, remotes_file):
    root = hdfs_cluster.fresh_dir("dn-down")
    rc, report, files, took, err = _copy_with_fault(
        hdfs_cluster, tmp_path, run_cli, remotes_file, lambda: hdfs_cluster.stop_datanode(0),
        lambda: hdfs_cluster.restart_datanode(0), root)
    print(f"DataNode stopped: the copy ended {took:.1f}s later")
    _check_after_fault(hdfs_cluster, root, files, rc, report, err, run_cli, tmp_path)


def test_dead_namenode_is_a_clear_error_naming_the_uri(tmp_path, run_cli):
    from tests.replicator.filesystems.servers import free_port

    uri = f"hdfs://127.0.0.1:{free_port()}/data"
    write(tmp_path / "src" / "f", b"x")
    start = time.monotonic()
    result = run_cli("copy", str(tmp_path / "src"), uri, "--retries", "1", "--json")
    print(f"dead NameNode: failed after {time.monotonic() - start:.1f}s")
    assert result.returncode in (1, 2), result.stderr
    assert "127.0.0.1" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_file_with_open_lease_is_not_copied_half_written(hdfs_cluster, tmp_path, run_cli,
                                                         remotes_file):
    import hdfs_native

    root = hdfs_cluster.fresh_dir("lease")
    client = hdfs_native.Client(hdfs_cluster.hdfs)
    with client.create(f"{root}/done.bin", hdfs_native.WriteOptions(create_parent=True)) as w:
        w.write(b"complete")
    writer = client.create(f"{root}/open.bin", hdfs_native.WriteOptions(create_parent=True))
    writer.write(b"x" * 300_000)  # another client is still writing: the NameNode shows 0 bytes
    use_remotes(run_cli, remotes_file, {"onprem": hdfs_remote(hdfs_cluster, root)})
    dst = tmp_path / "dst"
    try:
        first = run_cli("copy", "onprem:", str(dst), "--retries", "1", "--json")
        assert first.returncode == 1, first.stderr
        [failure] = first.report["failures"]
        assert failure["path"] == "open.bin" and "open lease" in failure["error"]
        assert tree(dst) == {"done.bin": b"complete"}
    finally:
        writer.write(b"y")
        writer.close()
    second = run_cli("copy", "onprem:", str(dst), "--json")
    assert second.returncode == 0, second.stderr
    assert (dst / "open.bin").read_bytes() == b"x" * 300_000 + b"y"


def test_unknown_user_and_denied_directory_fail_per_file(hdfs_cluster, tmp_path, run_cli,
                                                         remotes_file):
    import hdfs_native

    root = hdfs_cluster.fresh_dir("denied")
    client = hdfs_native.Client(hdfs_cluster.hdfs)
    for rel in ("open/a.txt", "open/b.txt", "private/secret.txt"):
        with client.create(f"{root}/{rel}", hdfs_native.WriteOptions(create_parent=True)) as w:
            w.write(rel.encode())
    client.set_permission(f"{root}/private", 0o700)
    use_remotes(run_cli, remotes_file, {"onprem": hdfs_remote(hdfs_cluster, root)})

    # Reading as a user the cluster does not know: the 0700 directory fails alone.
    run_cli.env["HADOOP_USER_NAME"] = "no-such-user"
    try:
        dst = tmp_path / "dst"
        result = run_cli("copy", "onprem:", str(dst), "--json")
        assert result.returncode == 1, result.stderr
        files = {k: v for k, v in tree(dst).items() if v is not None}
        assert files == {"open/a.txt": b"open/a.txt", "open/b.txt": b"open/b.txt"}
        [failure] = result.report["failures"]
        assert failure["path"].startswith("private")
        assert "Permission denied" in failure["error"] or "AccessControl" in failure["error"]
        assert "Traceback" not in result.stderr

        # Writing as that user into the superuser's 0755 tree: every file fails, named, and
        # nothing already there is lost.
        src = tmp_path / "src"
        write(src / "new.txt", b"new")
        write(src / "sub/other.txt", b"other")
        up = run_cli("copy", str(src), "onprem:open", "--json")
        assert up.returncode == 1, up.stderr
        failed = {f["path"] for f in up.report["failures"]}
        assert {"new.txt", "sub/other.txt"} <= failed <= {"new.txt", "sub", "sub/other.txt"}
        assert all("Permission denied" in f["error"] for f in up.report["failures"])
        assert rest_files(hdfs_cluster, f"{root}/open") == {"a.txt": 10, "b.txt": 10}
    finally:
        del run_cli.env["HADOOP_USER_NAME"]


def test_preserve_owner_group_replication_blocksize_between_clusters(
        hdfs_cluster, hdfs_cluster_b, tmp_path, run_cli, remotes_file):
    """DistCp -pugrb: HDFS -> HDFS keeps owner, group, replication and block size."""
    import hdfs_native

    root = hdfs_cluster.fresh_dir("attrs")
    src = hdfs_native.Client(hdfs_cluster.hdfs)
    data = os.urandom(MiB + 1000)
    opts = hdfs_native.WriteOptions(create_parent=True, block_size=MiB, replication=2)
    with src.create(f"{root}/t/part-0.bin", opts) as w:
        w.write(data)
    src.set_owner(f"{root}/t/part-0.bin", "alice", "analysts")
    use_remotes(run_cli, remotes_file, {
        "onprem": hdfs_remote(hdfs_cluster, root), "dr": hdfs_remote(hdfs_cluster_b, root),
        "plain": hdfs_remote(hdfs_cluster_b, root + "-plain")})

    kept = run_cli("copy", "onprem:", "dr:", "--preserve",
                   "times,owner,group,replication,blocksize", "--json")
    assert kept.returncode == 0, kept.stderr
    plain = run_cli("copy", "onprem:", "plain:", "--json")
    assert plain.returncode == 0, plain.stderr

    def status(path):
        r = requests.get(f"{hdfs_cluster_b.webhdfs}/webhdfs/v1{path}",
                         params={"op": "GETFILESTATUS", "user.name": "root"}, timeout=30)
        r.raise_for_status()
        st = r.json()["FileStatus"]
        return st["owner"], st["group"], st["replication"], st["blockSize"]

    assert status(f"{root}/t/part-0.bin") == ("alice", "analysts", 2, MiB)
    assert status(f"{root}-plain/t/part-0.bin") == ("root", "supergroup", 1, 128 * MiB)
    assert rest_read(hdfs_cluster_b, f"{root}/t/part-0.bin") == data
    # the block size differs, the COMPOSITE-CRC32C does not: verify reads no bytes
    result = run_cli("verify", "onprem:", "plain:", "--json")
    assert result.returncode == 0, result.stdout
    assert result.report["checksums"] == {"source": {"stored": 1}, "destination": {"stored": 1}}


def test_paged_listing_of_a_large_directory(hdfs_cluster):
    """The NameNode answers a listing in pages of dfs.ls.limit (1000) entries: hdfs-native
    and WebHDFS LISTSTATUS_BATCH page on (``startafter``: the non-ASCII last name of the first
    page is where a client sending ``startAfter`` loops); both see all 1100."""
    import hdfs_native

    from replicator.filesystems.hdfs import HDFSFileSystem
    from replicator.filesystems.webhdfs import WebHDFSFileSystem

    root = hdfs_cluster.fresh_dir("paged")
    client = hdfs_native.Client(hdfs_cluster.hdfs)
    client.mkdirs(f"{root}/big", create_parent=True)
    names = {f"f-{i:04d} ü.txt" for i in range(1100)}
    for name in names:
        client.create(f"{root}/big/{name}").close()
    host, port = hdfs_cluster.webhdfs.removeprefix("http://").split(":")
    web = WebHDFSFileSystem(host=host, port=int(port))
    native = HDFSFileSystem(url=hdfs_cluster.hdfs, client="native")
    for fs in (web, native):
        listed = fs.list_dir(f"{root}/big")
        assert sorted(i.name for i in listed) == sorted(names)
        assert {i.size for i in listed} == {0}
