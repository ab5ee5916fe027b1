"""Ours against real ``hadoop distcp`` on the same real HDFS, in one run (issue 11, item 8):

  a  10,000 small files (4 KiB) HDFS -> HDFS: seconds, files/s
  b  one 1 GiB file HDFS -> HDFS: seconds, MB/s
  c  a no-op re-sync of tree (a) onto an up-to-date copy: seconds
  d  a no-op re-sync of a partitioned tree (that of a/c, 10 files a directory, or one of
     ``BENCH_HADOOP_SNAP_FILES`` files) from WebHDFS, ours with the full listing vs ours with ``--snapshot-diff``
     (issue 11, item 7): seconds

HDFS is one MiniDFSCluster (``scripts/hadoop.py``: NameNode + one DataNode + WebHDFS in one
JVM on loopback); both tools copy between two directories of it. DistCp is hadoop-distcp
3.5.0 on the local MapReduce runner with ``-m 8`` and 8 concurrent local maps
(``mapreduce.local.map.tasks.maximum``; its default of 1 would run the maps one by one),
heap 512m, ``-update`` (a no-op re-sync compares sizes and checksums of every file); ours is
``replicator copy`` with ``--workers 8`` (hdfs-native client, no JVM). Each scenario runs
``BENCH_HADOOP_REPEAT`` times (default 3), alternating which tool goes first, into fresh
destinations; medians are printed with the ratio ours/DistCp as a speed-up (DistCp's time
divided by ours: > 1 means ours is faster).

Environment: ``BENCH_DIR``, ``BENCH_HADOOP_FILES`` (10000), ``BENCH_HADOOP_BIG_MIB`` (1024),
``BENCH_HADOOP_REPEAT`` (3), ``BENCH_HADOOP_SCENARIOS`` (default ``abc``; ``d`` on request),
``BENCH_HADOOP_SNAP_FILES`` (a tree of its own for d).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MiB = 1 << 20
WORKERS = 8


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... exit {proc.returncode}:\n"
                           f"{(proc.stdout + proc.stderr)[-3000:]}")
    return elapsed, proc.stdout


def ours(env: dict[str, str], src: str, dst: str, state: Path, *extra: str) -> tuple[float, dict]:
    if dst.startswith("hdfs://"):  # DistCp runs without -p: neither tool sets times there
        extra = ("--preserve", "", *extra)
    elapsed, out = _run([sys.executable, "-m", "replicator.cli", "copy", src, dst,
                         "--workers", str(WORKERS), "--state", str(state), "--json", "-q",
                         *extra], env)
    report = json.loads(out.strip().splitlines()[-1])
    if not report["ok"]:
        raise RuntimeError(f"replicator copy failed: {report.get('failures')}")
    return elapsed, report


def distcp(env: dict[str, str], cp: str, work: Path, src: str, dst: str) -> float:
    props = [f"-Dmapreduce.local.map.tasks.maximum={WORKERS}",
             f"-Dmapreduce.jobtracker.staging.root.dir={work / 'staging'}",
             f"-Dhadoop.tmp.dir={work / 'tmp'}", "-Ddfs.checksum.combine.mode=COMPOSITE_CRC"]
    elapsed, _ = _run(["java", "-Xmx512m", "-cp", cp, "org.apache.hadoop.tools.DistCp", *props,
                       "-update", "-m", str(WORKERS), src, dst], env)
    return elapsed


def snapshot_noop(env: dict[str, str], work: Path, cluster: dict,
                  repeat: int) -> tuple[str, float, float, str]:
    """Scenario d: the same no-op re-sync, listed in full vs by snapshot diff."""
    from scripts import hadoop

    n = int(os.environ.get("BENCH_HADOOP_SNAP_FILES", "0")) or None
    tree = "small"  # the tree of scenarios a/c (10 files a directory) unless a size is asked
    if n is not None or not (work / "seed.db").exists():
        n = n or 100_000
        tree = "part"
        seed = work / "seed-part"
        for i in range(n):
            p = seed / f"dt={i // 10:06d}" / f"part-{i % 10}"
            if i % 10 == 0:
                p.parent.mkdir(parents=True)
            p.write_bytes(b"x" * 64)
        t, _ = ours(env, str(seed), f"{cluster['hdfs']}/part", work / "seed-part.db")
        print(f"seeded {n:,} files in {n // 10:,} directories into HDFS in {t:.1f}s", flush=True)
        shutil.rmtree(seed)
    else:
        n = int(os.environ.get("BENCH_HADOOP_FILES", "10000"))
    hadoop.control(work / "hdfs", f"allow-snapshot /{tree}")
    src = f"webhdfs://{cluster['webhdfs'].removeprefix('http://')}/{tree}"
    dst = str(work / "part-copy")
    ours(env, src, dst, work / "d-full.db")  # the copy both modes then re-sync
    ours(env, src, dst, work / "d-snap.db", "--snapshot-diff")  # adopts it, records a snapshot
    full, snap = [], []
    for r in range(repeat):
        for mode in (("full", "snap") if r % 2 == 0 else ("snap", "full")):
            if mode == "full":
                t, rep = ours(env, src, dst, work / "d-full.db")
                full.append(t)
            else:
                t, rep = ours(env, src, dst, work / "d-snap.db", "--snapshot-diff")
                assert rep["snapshot"]["listing"] == "diff", rep["snapshot"]
                snap.append(t)
            assert rep["files_copied"] == 0, rep
        print(f"  d run {r + 1}: full listing {full[-1]:.2f}s, snapshot diff {snap[-1]:.2f}s",
              flush=True)
    return (f"d no-op {n:,} files, snapshot diff vs listing", _median(snap), _median(full),
            "(the 'distcp s' column is our full listing here)")


def _median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    from scripts import hadoop
    from scripts.maven import classpath

    n_files = int(os.environ.get("BENCH_HADOOP_FILES", "10000"))
    big_mib = int(os.environ.get("BENCH_HADOOP_BIG_MIB", "1024"))
    repeat = int(os.environ.get("BENCH_HADOOP_REPEAT", "3"))
    scenarios = os.environ.get("BENCH_HADOOP_SCENARIOS", "abc")
    base = Path(os.environ.get("BENCH_DIR") or ROOT / ".bench")
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-hadoop-", dir=base))
    cp = classpath("hadoop")
    env = dict(os.environ, REPLICATOR_HOME=str(work / "home"))
    env.pop("HADOOP_CONF_DIR", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cluster = hadoop.start(work / "hdfs", watch_pid=os.getpid())
    nn = cluster["hdfs"]
    print(f"hdfs {nn}; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at start "
          f"(a shared machine: figures move with the load)", flush=True)
    results: list[tuple[str, float, float, str]] = []
    try:
        if "a" in scenarios or "c" in scenarios:
            seed = work / "seed-small"
            for i in range(n_files):
                p = seed / f"dt={i // 10:06d}" / f"part-{i % 10}"  # 10 files a partition
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(os.urandom(4096))
            t, _ = ours(env, str(seed), f"{nn}/small", work / "seed.db")
            print(f"seeded {n_files:,} small files into HDFS in {t:.1f}s", flush=True)
            shutil.rmtree(seed)
        if "a" in scenarios:
            mine, theirs = [], []
            for r in range(repeat):
                order = ("ours", "distcp") if r % 2 == 0 else ("distcp", "ours")
                for tool in order:
                    if tool == "ours":
                        t, rep = ours(env, f"{nn}/small", f"{nn}/a-ours-{r}", work / f"a{r}.db")
                        assert rep["files_copied"] == n_files, rep
                        mine.append(t)
                    else:
                        theirs.append(distcp(env, cp, work, f"{nn}/small", f"{nn}/a-distcp-{r}"))
                print(f"  a run {r + 1}: ours {mine[-1]:.1f}s, distcp {theirs[-1]:.1f}s", flush=True)
            results.append((f"a {n_files:,} small files HDFS->HDFS", _median(mine),
                            _median(theirs), f"{n_files / _median(mine):.0f} vs "
                            f"{n_files / _median(theirs):.0f} files/s"))
        if "c" in scenarios:
            if "a" not in scenarios:
                ours(env, f"{nn}/small", f"{nn}/a-ours-0", work / "a0.db")
                distcp(env, cp, work, f"{nn}/small", f"{nn}/a-distcp-0")
            mine, theirs = [], []
            for r in range(repeat):
                order = ("ours", "distcp") if r % 2 == 0 else ("distcp", "ours")
                for tool in order:
                    if tool == "ours":
                        t, rep = ours(env, f"{nn}/small", f"{nn}/a-ours-0", work / "a0.db")
                        assert rep["files_copied"] == 0, rep
                        mine.append(t)
                    else:
                        theirs.append(distcp(env, cp, work, f"{nn}/small", f"{nn}/a-distcp-0"))
                print(f"  c run {r + 1}: ours {mine[-1]:.2f}s, distcp {theirs[-1]:.1f}s", flush=True)
            results.append((f"c no-op re-sync of {n_files:,} files", _median(mine),
                            _median(theirs), ""))
        if "b" in scenarios:
            seed = work / "seed-big"
            seed.mkdir()
            with (seed / "big.bin").open("wb") as f:
                for _ in range(big_mib):
                    f.write(os.urandom(MiB))
            t, _ = ours(env, str(seed), f"{nn}/big", work / "seed-big.db")
            print(f"seeded a {big_mib} MiB file into HDFS in {t:.1f}s", flush=True)
            shutil.rmtree(seed)
            mine, theirs = [], []
            from replicator.filesystems.registry import resolve

            fs, _root = resolve(nn + "/")
            for r in range(repeat):
                order = ("ours", "distcp") if r % 2 == 0 else ("distcp", "ours")
                for tool in order:
                    if tool == "ours":
                        t, rep = ours(env, f"{nn}/big", f"{nn}/b-ours", work / f"b{r}.db")
                        assert rep["files_copied"] == 1, rep
                        mine.append(t)
                        fs.delete_file("/b-ours/big.bin")
                    else:
                        theirs.append(distcp(env, cp, work, f"{nn}/big", f"{nn}/b-distcp"))
                        fs.delete_file("/b-distcp/big.bin")
                print(f"  b run {r + 1}: ours {mine[-1]:.1f}s, distcp {theirs[-1]:.1f}s", flush=True)
            mb = big_mib * MiB / 1e6
            results.append((f"b one {big_mib} MiB file HDFS->HDFS", _median(mine), _median(theirs),
                            f"{mb / _median(mine):.0f} vs {mb / _median(theirs):.0f} MB/s"))
        if "d" in scenarios:
            results.append(snapshot_noop(env, work, cluster, repeat))
    finally:
        hadoop.stop(work / "hdfs")
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmedians of {repeat}, load {os.getloadavg()[0]:.1f} at the end")
    print(f"{'scenario':<40} {'ours s':>9} {'distcp s':>9} {'speed-up':>9}  rates")
    for name, mine_s, theirs_s, rates in results:
        print(f"{name:<40} {mine_s:>9.2f} {theirs_s:>9.2f} {theirs_s / mine_s:>8.1f}x  {rates}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
