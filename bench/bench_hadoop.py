"""Ours against real ``hadoop distcp`` on the same real HDFS, in one run (issue 11, item 8):

  a  10,000 small files (4 KiB) HDFS -> HDFS: seconds, files/s
  b  one 1 GiB file HDFS -> HDFS: seconds, MB/s
  c  a no-op re-sync of tree (a) onto an up-to-date copy: seconds

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
``BENCH_HADOOP_REPEAT`` (3), ``BENCH_HADOOP_SCENARIOS`` (e.g. ``ac``).
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


def ours(env: dict[str, str], src: str, dst: str, state: Path) -> tuple[float, dict]:
    elapsed, out = _run([sys.executable, "-m", "replicator.cli", "copy", src, dst,
                         "--workers", str(WORKERS), "--state", str(state), "--json", "-q"], env)
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
                p = seed / f"dt={i % 10:02d}" / f"part-{i:06d}"
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
