"""The change sensor on a real HDFS: ``python -m bench.bench_sensor --source hdfs --datasets D
--partitions P``.

One MiniDFSCluster (``scripts.hadoop``, NameNode + DataNode + WebHDFS in one JVM, -Xmx448m)
holds D dataset roots of P partitions x FILES files each, every root snapshottable. Two specs
watch the same tree over WebHDFS, each with its own state store: ``change_detection:
listing`` (list every partition directory, fingerprint the hinted ones and a rotation) and
``change_detection: snapshot`` (a snapshot per root per tick, GETSNAPSHOTDIFF, fingerprint
what the diff names). After both recorded every partition once, each path runs:

- a tick with no change (``steady_tick_s``);
- a tick after 1% of the partitions got a new file, spread over the datasets
  (``changed_tick_s``, ``changed_found`` of ``changed_total``);
- then a tick after files in 0.1% of the partitions were rewritten in place with the same
  size and the directory times put back (``rewrite_found`` of ``rewrite_total``): the
  listing path's hint does not see those, its rotation does, a partition budget later.

Wall seconds, the tick's own CPU seconds (``*_cpu_s``, every thread of this process) and the
NameNode JVM's CPU seconds during the tick (``*_namenode_cpu_s``), then the ratios listing /
snapshot. The ticks are the evaluation functions the sensor calls (``evaluate_changes`` and
``snapshot_changes.evaluate_tick``), without a Dagster instance. The last line of stdout is
one JSON object. Work directory: .bench/sensor-hdfs (or $BENCH_DIR/sensor-hdfs).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

FILES = 2
NEW_FILE = "part-new.parquet"


def _spec(src_uri: str, datasets: int, budget_s: float, detection: str) -> str:
    lines = [
        "version: 1",
        "platform:",
        f"  state_path: state-{detection}.db",
        "  notifier: {kind: jsonl, outbox: outbox.jsonl}",
        f"  change_sensor: {{max_partitions_per_tick: 10000000, tick_budget_s: {budget_s},"
        " max_runs_per_tick: 10000000, max_queued_runs: 10000000}",
        "clusters:",
        f'  onprem: {{uri: "{src_uri}"}}',
        "  gcs: {uri: dst}",
        "datasets:",
    ]
    for d in range(datasets):
        name = f"table_{d:03d}"
        lines += [f"  {name}:", f"    source: {{cluster: onprem, path: {name}}}",
                  '    partitions: "dt=*"', f"    targets: [{{cluster: gcs, path: {name}}}]",
                  f"    change_detection: {detection}"]
    return "\n".join(lines) + "\n"


def _put(hdfs: str, local: Path, dest: str) -> None:
    """``hdfs dfs -put -t 8 local dest`` with the bundle's jars (FsShell in one JVM, -Xmx256m):
    tens of thousands of small files a minute, where a client per file takes much longer."""
    import getpass
    import subprocess

    from scripts.jvm import java_tool
    from scripts.maven import classpath

    conf = local.parent / "put-conf"  # an empty core-site.xml: Configuration insists on one
    conf.mkdir(exist_ok=True)
    (conf / "core-site.xml").write_text("<configuration/>\n")
    subprocess.run([java_tool("java"), "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                    "-Djava.net.preferIPv4Stack=true", "-cp", f"{conf}{os.pathsep}{classpath('hadoop')}",
                    "org.apache.hadoop.fs.FsShell", "-fs", hdfs, "-put", "-p", "-t", "8",
                    str(local), dest], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "HADOOP_USER_NAME": os.environ.get("HADOOP_USER_NAME") or getpass.getuser()})


def _jvm_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _partition(p: int) -> str:
    return f"dt={p:05d}"


def main(datasets: int, partitions: int, budget_s: float, keep: bool = False) -> int:
    from platform_assets.config import load_spec
    from platform_assets.datasets import resolve
    from platform_assets.replication.change_sensor import ChangeState, evaluate_changes
    from platform_assets.replication.snapshot_changes import evaluate_tick
    from replicator.filesystems.registry import resolve as resolve_fs
    from scripts import hadoop

    D, P = datasets, partitions
    base = Path(os.environ.get("BENCH_DIR") or Path(__file__).resolve().parents[1] / ".bench") / "sensor-hdfs"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    t0 = time.perf_counter()
    cluster = hadoop.start(base / "cluster", watch_pid=os.getpid())
    out: dict[str, object] = {"source": "hdfs", "datasets": D, "partitions": P,
                              "files_per_partition": FILES, "tick_budget_s": budget_s}
    try:
        jvm = int(cluster["pid"])
        out["cluster_start_s"] = round(time.perf_counter() - t0, 1)
        web = cluster["webhdfs"].removeprefix("http://")
        # the tree, written locally and put in by Hadoop's own shell (one JVM, 8 threads)
        local = base / "local"
        old = time.time() - 3600
        for d in range(D):
            for p in range(P):
                part = local / f"table_{d:03d}" / _partition(p)
                part.mkdir(parents=True)
                for f in range(FILES):
                    fp = part / f"part-{f:05d}.parquet"
                    fp.write_bytes(b"x" * (100 + f))
                    os.utime(fp, (old - d, old - d))
        resolve_fs(f"webhdfs://{web}/")[0].makedirs("/bench")
        _put(cluster["hdfs"], local, "/bench/src")
        shutil.rmtree(local)
        for d in range(D):
            hadoop.control(base / "cluster", f"allow-snapshot /bench/src/table_{d:03d}")
        out["build_s"] = round(time.perf_counter() - t0, 1)
        print(f"sensor bench (hdfs): {D} datasets x {P} partitions x {FILES} files on a "
              f"MiniDFSCluster, built in {out['build_s']} s (load {os.getloadavg()[0]:.1f})", flush=True)

        src_uri = f"webhdfs://{web}/bench/src"
        specs = {}
        for how in ("listing", "snapshot"):
            path = base / f"{how}.yaml"
            path.write_text(_spec(src_uri, D, budget_s, how))
            specs[how] = resolve(load_spec(path))

        def run(how: str, state: ChangeState, **kw):
            rs = specs[how]
            if how == "listing":
                return evaluate_changes(rs, state, **kw)
            return evaluate_tick(rs, state, log=_Quiet(), **kw)

        states: dict[str, ChangeState] = {}
        for how in ("listing", "snapshot"):  # every partition recorded once (not measured)
            t = time.perf_counter()
            ev = run(how, ChangeState(), budget_s=1e9)
            # a tick from that cursor commits the first (nothing to fingerprint again)
            ev = run(how, ev.state, budget_s=1e9, max_partitions=1)
            states[how] = ev.state
            out[f"{how}_record_all_s"] = round(time.perf_counter() - t, 2)

        def tick(label: str, how: str) -> tuple[object, dict[str, float]]:
            start, cpu, nn = time.perf_counter(), time.process_time(), _jvm_cpu_s(jvm)
            ev = run(how, states[how])
            took = {"s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu,
                    "namenode_cpu_s": _jvm_cpu_s(jvm) - nn}
            states[how] = ev.state
            print(f"  {how:<8} {label:<28} {took['s']:6.2f} s ({took['cpu_s']:.2f} s CPU, "
                  f"NameNode {took['namenode_cpu_s']:.2f} s)  {len(ev.run_requests):>5} run "
                  f"requests, {ev.scanned} fingerprinted", flush=True)
            return ev, took

        fs, _ = resolve_fs(src_uri)
        for how in ("listing", "snapshot"):
            tick("warm-up (no change)", how)
        for how in ("listing", "snapshot"):
            ev, took = tick("no change", how)
            assert not ev.run_requests, (how, len(ev.run_requests))
            out[f"{how}_steady_tick_s"] = round(took["s"], 3)
            out[f"{how}_steady_tick_cpu_s"] = round(took["cpu_s"], 3)
            out[f"{how}_steady_tick_namenode_cpu_s"] = round(took["namenode_cpu_s"], 3)

        changed = {(f"table_{i % D:03d}", _partition((i * 7919) % P)) for i in range(max(1, D * P // 100))}
        for name, part in sorted(changed):
            with fs.open_write(f"/bench/src/{name}/{part}/{NEW_FILE}") as w:
                w.write(b"y" * 150)
            fs.set_times(f"/bench/src/{name}/{part}/{NEW_FILE}", int((time.time() - 120) * 1e9))
        out["changed_total"] = len(changed)
        for how in ("listing", "snapshot"):
            ev, took = tick("1% of partitions changed", how)
            found = {(r.tags["replication/dataset"], r.partition_key) for r in ev.run_requests}
            out[f"{how}_changed_tick_s"] = round(took["s"], 3)
            out[f"{how}_changed_tick_cpu_s"] = round(took["cpu_s"], 3)
            out[f"{how}_changed_tick_namenode_cpu_s"] = round(took["namenode_cpu_s"], 3)
            out[f"{how}_changed_found"] = len(found & changed)

        # in place, same size, the partition directory's time put back: no listing hint
        rewritten = {(f"table_{i % D:03d}", _partition((i * 104729 + 13) % P))
                     for i in range(max(1, D * P // 1000))}
        for name, part in sorted(rewritten):
            d = f"/bench/src/{name}/{part}"
            dir_mtime = fs.stat(d).mtime_ns
            with fs.open_write(f"{d}/part-00000.parquet") as w:
                w.write(b"z" * 100)
            fs.set_times(f"{d}/part-00000.parquet", int((time.time() - 60) * 1e9))
            fs.set_times(d, dir_mtime)
        out["rewrite_total"] = len(rewritten)
        for how in ("listing", "snapshot"):
            ev, took = tick("0.1% rewritten in place", how)
            found = {(r.tags["replication/dataset"], r.partition_key) for r in ev.run_requests}
            out[f"{how}_rewrite_tick_s"] = round(took["s"], 3)
            out[f"{how}_rewrite_found"] = len(found & rewritten)
    finally:
        hadoop.stop(base / "cluster")
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    for k in ("steady_tick_s", "changed_tick_s", "steady_tick_namenode_cpu_s",
              "changed_tick_namenode_cpu_s"):
        snap = float(out[f"snapshot_{k}"])  # type: ignore[arg-type]
        out[f"ratio_listing_over_snapshot_{k}"] = round(float(out[f"listing_{k}"]) / snap, 2) if snap else None  # type: ignore[arg-type]
    # the headline figures of issue 13's bench, for the snapshot path
    out["steady_tick_s"] = out["snapshot_steady_tick_s"]
    out["changed_tick_s"] = out["snapshot_changed_tick_s"]
    out["changed_found"] = out["snapshot_changed_found"]
    out["load"] = round(os.getloadavg()[0], 1)
    print(json.dumps(out))
    return 0 if out["snapshot_changed_found"] == out["changed_total"] else 1


class _Quiet:
    def info(self, *a, **k) -> None:
        pass

    def warning(self, msg, *a, **k) -> None:
        print(f"  warning: {msg % a if a else msg}", flush=True)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit("run it as: python -m bench.bench_sensor --source hdfs ...")
