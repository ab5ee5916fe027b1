"""The real HDFS launcher (scripts/hadoop.py): a MiniDFSCluster that serves WebHDFS and RPC,
checked with plain REST calls (``requests``, not our client)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import google_crc32c
import pytest
import requests

from scripts import hadoop

REPO = Path(__file__).resolve().parents[2]


def rest(cluster, method: str, path: str, op: str, data: bytes | None = None, **params):
    """One WebHDFS call as the docs describe it: the NameNode answers or redirects (307) to a
    DataNode, which takes or serves the bytes."""
    url = f"{cluster.webhdfs}/webhdfs/v1{path}"
    q = {"op": op, "user.name": cluster.superuser, **params}
    if method == "PUT" and op == "CREATE":
        r = requests.put(url, params=q, allow_redirects=False, timeout=30)
        assert r.status_code == 307, r.text
        r = requests.put(r.headers["Location"], data=data, timeout=30)
    else:
        r = requests.request(method, url, params=q, timeout=30)
    assert r.ok, f"{op} {path}: {r.status_code} {r.text}"
    return r


def test_cluster_serves_webhdfs_and_checksums_are_crc32c(hdfs_cluster):
    d = hdfs_cluster.fresh_dir()
    data = os.urandom(3 * 1024 * 1024 + 17)
    # A 1 MiB block size: the file spans four blocks, and the composite CRC still is the
    # CRC32C of the whole file (what GCS stores), independent of block boundaries.
    rest(hdfs_cluster, "PUT", f"{d}/a b/ü.bin", "CREATE", data=data, overwrite="false",
         blocksize=str(1024 * 1024))
    assert rest(hdfs_cluster, "GET", f"{d}/a b/ü.bin", "OPEN").content == data
    listing = rest(hdfs_cluster, "GET", f"{d}/a b", "LISTSTATUS").json()
    [entry] = listing["FileStatuses"]["FileStatus"]
    assert (entry["pathSuffix"], entry["length"], entry["blockSize"]) == (
        "ü.bin", len(data), 1024 * 1024)
    assert entry["owner"] == hdfs_cluster.superuser
    algorithm, value = hdfs_cluster.checksum(f"{d}/a b/ü.bin")
    assert algorithm == "COMPOSITE-CRC32C"
    assert int(value, 16) == google_crc32c.value(data)


def test_two_clusters_are_independent(hdfs_cluster, hdfs_cluster_b):
    assert hdfs_cluster.hdfs != hdfs_cluster_b.hdfs
    d = hdfs_cluster.fresh_dir()
    rest(hdfs_cluster, "PUT", f"{d}/only-a", "CREATE", data=b"a")
    r = requests.get(f"{hdfs_cluster_b.webhdfs}/webhdfs/v1{d}/only-a",
                     params={"op": "GETFILESTATUS", "user.name": "root"}, timeout=30)
    assert r.status_code == 404


def test_permissions_are_enforced(hdfs_cluster):
    d = hdfs_cluster.fresh_dir()
    rest(hdfs_cluster, "PUT", d, "MKDIRS", permission="700")
    r = requests.put(f"{hdfs_cluster.webhdfs}/webhdfs/v1{d}/x",
                     params={"op": "CREATE", "user.name": "nobody"}, allow_redirects=False,
                     timeout=30)
    assert r.status_code == 307  # the DataNode creates the file, as the user
    r = requests.put(r.headers["Location"], data=b"x", timeout=30)
    assert r.status_code == 403, r.text
    assert "Permission denied" in r.text
    r = requests.get(f"{hdfs_cluster.webhdfs}/webhdfs/v1{d}",
                     params={"op": "LISTSTATUS", "user.name": "nobody"}, timeout=30)
    assert r.status_code == 403, r.text


def read_once_served(cluster, path: str, timeout_s: float = 90.0) -> bytes:
    """OPEN ``path`` as soon as the restarted cluster serves it again. Right after a NameNode
    restart a DataNode's WebHDFS handler may still hold its IPC connection to the old process
    and answer one EOFException (403); it reconnects on the next call."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = requests.get(f"{cluster.webhdfs}/webhdfs/v1{path}",
                         params={"op": "OPEN", "user.name": cluster.superuser}, timeout=30)
        if r.ok or time.monotonic() > deadline:
            assert r.ok, f"OPEN {path}: {r.status_code} {r.text}"
            return r.content
        time.sleep(0.5)


def test_namenode_and_datanode_stop_and_restart(hdfs_cluster):
    d = hdfs_cluster.fresh_dir()
    rest(hdfs_cluster, "PUT", f"{d}/f", "CREATE", data=b"kept")
    with hdfs_cluster.namenode_down(), pytest.raises(requests.ConnectionError):
        requests.get(f"{hdfs_cluster.webhdfs}/webhdfs/v1{d}/f",
                     params={"op": "GETFILESTATUS"}, timeout=10)
    # Same ports after the restart; the namespace survived it.
    assert read_once_served(hdfs_cluster, f"{d}/f") == b"kept"
    with hdfs_cluster.datanode_down(0):
        # The NameNode still redirects to the stopped DataNode (until it declares it dead)
        # or refuses for lack of one: either way the bytes cannot be read.
        try:
            r = requests.get(f"{hdfs_cluster.webhdfs}/webhdfs/v1{d}/f",
                             params={"op": "OPEN", "user.name": "root"}, timeout=60)
        except requests.ConnectionError:
            pass
        else:
            assert not r.ok
    assert read_once_served(hdfs_cluster, f"{d}/f") == b"kept"


def test_snapshots_can_be_allowed(hdfs_cluster):
    d = hdfs_cluster.fresh_dir()
    rest(hdfs_cluster, "PUT", d, "MKDIRS")
    hdfs_cluster.allow_snapshot(d)
    r = rest(hdfs_cluster, "PUT", d, "CREATESNAPSHOT", snapshotname="s1")
    assert r.json()["Path"] == f"{d}/.snapshot/s1"
    with pytest.raises(hadoop.HadoopError, match="unknown command"):
        hdfs_cluster.control("no-such-command")


def test_cli_start_prints_endpoints_and_stop_stops_it(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "scripts.hadoop", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=300)

    started = cli("start", str(tmp_path))
    assert started.returncode == 0, started.stderr
    state = json.loads(started.stdout.strip().splitlines()[-1])
    try:
        assert state["hdfs"].startswith("hdfs://127.0.0.1:")
        r = requests.get(f"{state['webhdfs']}/webhdfs/v1/", params={"op": "LISTSTATUS"},
                         timeout=30)
        assert r.ok
        again = cli("start", str(tmp_path))
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        stopped = cli("stop", str(tmp_path))
    assert stopped.returncode == 0, stopped.stderr
    assert not hadoop.pid_alive(int(state["pid"]))
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{state['webhdfs']}/webhdfs/v1/", params={"op": "LISTSTATUS"}, timeout=5)
    assert "no HDFS running" in cli("stop", str(tmp_path)).stderr
