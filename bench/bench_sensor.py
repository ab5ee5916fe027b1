"""Change-sensor ticks at scale: ``python -m bench.bench_sensor --datasets D --partitions P``.

Builds D datasets x P partitions x 2 files on local disk, records every partition once (the
state a running deployment has), then measures the real sensor function
(``build_sensor_context`` on an ephemeral instance, the per-partition state in an SQLite state
store):

- ``steady_tick_s``: a tick with no change;
- ``changed_tick_s``: a tick after 1% of the partitions got a new file (how Hive and HDFS
  writers land data), with ``changed_found`` of ``changed_total`` requested in that tick;
- ``cursor_bytes``: the cursor after those ticks;
- ``steady_tick_cpu_s``, ``changed_tick_cpu_s``: the CPU seconds of those two ticks (all
  threads): on a shared, loaded machine the wall time is several times that;
- ``seed_tick_s``: a tick from an empty cursor with a materialization of every partition on
  the instance (a reset sensor or a new deployment over existing replicas), with
  ``seed_ticks`` until seeding is done and ``seed_total_s`` for all of them.

A change the directory's mtime does not show (a file rewritten in place) is found by the
rotation: ``rotation_cycle_ticks`` is how many steady ticks one full pass takes.
The history of the seed tick is `--history` records (default 5,000: Dagster's SQLite event
log writes ~30 ms per event here, 100,000 would take an hour); a seed tick reads at most
`seed_records_per_tick` (20,000) whatever the history.
Targets at 100 x 1,000: steady and changed ticks <= 5 s, every changed partition found in
that tick, cursor <= 64 KiB, seed tick <= 10 s. The last line of stdout is one JSON object.
Work directory: .bench/sensor (or $BENCH_DIR/sensor).

``--source hdfs``: the same shape on a real MiniDFSCluster, the snapshot-diff path
(``change_detection: snapshot``) against the listing path on one tree (bench/sensor_hdfs.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import warnings
from pathlib import Path

FILES_PER_PARTITION = 2
NEW_FILE = "part-new.parquet"  # what the changed tick finds
BUILT = ".built"  # the shape of a finished tree: D P files
TARGETS = {"steady_tick_s": 5.0, "changed_tick_s": 5.0, "cursor_bytes": 64 * 1024, "seed_tick_s": 10.0}


def _work_dir() -> Path:
    base = Path(os.environ.get("BENCH_DIR") or Path(__file__).resolve().parents[1] / ".bench")
    return base / "sensor"


def _partition(p: int) -> str:
    return f"dt={p:05d}"


def build_tree(root: Path, datasets: int, partitions: int, budget_s: float) -> Path:
    """The spec and D x P partition directories of FILES_PER_PARTITION files each. The files
    of a dataset's partitions are hard links to one set of files per dataset (one system call
    per file instead of four): the sensor lists, stats and fingerprints every partition's own
    entries all the same."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "src").mkdir(parents=True)
    old = time.time() - 3600
    lines = [
        "version: 1",
        "platform:",
        "  state_path: state.db",
        "  notifier: {kind: jsonl, outbox: outbox.jsonl}",
        f"  change_sensor: {{max_partitions_per_tick: 10000000, tick_budget_s: {budget_s},"
        " max_runs_per_tick: 10000000, max_queued_runs: 10000000}",
        "clusters:",
        "  onprem: {uri: src}",
        "  gcs: {uri: dst}",
        "datasets:",
    ]
    names = [f"part-{f:05d}.parquet" for f in range(FILES_PER_PARTITION)]
    for d in range(datasets):
        name = f"table_{d:03d}"
        lines += [
            f"  {name}:",
            f"    source: {{cluster: onprem, path: {name}}}",
            '    partitions: "dt=*"',
            f"    targets: [{{cluster: gcs, path: {name}}}]",
        ]
        seeds = root / "seeds" / name
        seeds.mkdir(parents=True)
        for f, file_name in enumerate(names):
            fp = seeds / file_name
            fp.write_bytes(b"x" * (100 + f))
            t = old - d  # distinct per dataset
            os.utime(fp, (t, t))
        base = str(root / "src" / name)
        os.mkdir(base)
        seed_paths = [str(seeds / n) for n in names]
        for p in range(partitions):
            part = f"{base}/{_partition(p)}"
            os.mkdir(part)
            for seed, file_name in zip(seed_paths, names, strict=True):
                os.link(seed, f"{part}/{file_name}")
    spec = root / "replication.yaml"
    spec.write_text("\n".join(lines) + "\n")
    (root / BUILT).write_text(f"{datasets} {partitions} {FILES_PER_PARTITION}\n")
    return spec


def changed_partitions(datasets: int, partitions: int) -> set[tuple[str, str]]:
    """The 1% of partitions the changed tick finds with a new file, spread over the datasets."""
    return {(f"table_{i % datasets:03d}", _partition((i * 7919) % partitions))
            for i in range(max(1, datasets * partitions // 100))}


def reusable(root: Path, datasets: int, partitions: int) -> bool:
    """A tree of this shape built before (``--reuse``)."""
    marker = root / BUILT
    return marker.exists() and marker.read_text().split() == [str(datasets), str(partitions),
                                                                 str(FILES_PER_PARTITION)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=1000)
    ap.add_argument("--budget", type=float, default=4.0, help="tick_budget_s of the spec")
    ap.add_argument("--history", type=int, default=5000,
                    help="materializations on the instance for the seed tick (at most one per "
                         "partition; Dagster's SQLite event log takes ~30 ms per event here)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse a tree of the same shape kept by --keep or --build-only (the state "
                         "and the instance are made anew); implies --keep")
    ap.add_argument("--build-only", action="store_true", help="build the tree, keep it, stop")
    ap.add_argument("--source", choices=("local", "hdfs"), default="local",
                    help="hdfs: the tree on a real MiniDFSCluster, the snapshot-diff path "
                         "against the listing path (bench/sensor_hdfs.py)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.source == "hdfs":
        from bench.sensor_hdfs import main as hdfs_main

        return hdfs_main(args.datasets, args.partitions, args.budget, keep=args.keep)
    import dagster as dg

    from platform_assets.config import load_spec
    from platform_assets.datasets import resolve
    from platform_assets.definitions import build_definitions
    from platform_assets.replication.change_sensor import ChangeState, evaluate_changes
    from platform_assets.replication.names import CHANGE_SENSOR
    from platform_assets.replication.sensor_state import fingerprint_scope, open_sensor_store

    D, P = args.datasets, args.partitions
    root = _work_dir()
    t0 = time.perf_counter()
    if args.reuse and reusable(root, D, P):
        spec_path = root / "replication.yaml"
        for stale in ("state.db", "state.db-wal", "state.db-shm"):
            (root / stale).unlink(missing_ok=True)
        for name, part in changed_partitions(D, P):  # the last run's 1% change
            (root / "src" / name / part / NEW_FILE).unlink(missing_ok=True)
        how = "reused"
    else:
        spec_path = build_tree(root, D, P, args.budget)
        how = "built"
    print(f"sensor bench: {D} datasets x {P} partitions x {FILES_PER_PARTITION} files "
          f"({how} in {time.perf_counter() - t0:.1f}s, load {os.getloadavg()[0]:.1f})", flush=True)
    if args.build_only:
        return 0
    defs = build_definitions(spec_path)
    sensor = defs.get_sensor_def(CHANGE_SENSOR)
    rs = resolve(load_spec(spec_path))
    out: dict[str, float | int | str] = {"datasets": D, "partitions": P, "tick_budget_s": args.budget}

    # a running deployment: every partition recorded once (one unbounded pass, not measured)
    t = time.perf_counter()
    store = open_sensor_store(rs.spec)
    try:
        ev = evaluate_changes(rs, ChangeState(), budget_s=1e9, store=store)
        # a tick from that cursor commits the first one (nothing to fingerprint again)
        state = evaluate_changes(rs, ev.state, budget_s=1e9, max_partitions=1, store=store).state
    finally:
        store.close()
    out["record_all_s"] = round(time.perf_counter() - t, 2)
    print(f"  recorded {ev.scanned} partitions in {out['record_all_s']} s", flush=True)

    import tempfile

    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as home, dg.instance_for_test(temp_dir=home) as instance:
        for d in rs.names():
            instance.add_dynamic_partitions(rs[d].partitions_def_name, [_partition(p) for p in range(P)])

        cpu_s: dict[str, float] = {}

        def tick(label: str, cursor: str | None) -> tuple[dg.SensorResult, float]:
            ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
            start, cpu = time.perf_counter(), time.process_time()
            result = sensor(ctx)
            elapsed = time.perf_counter() - start
            cpu_s[label] = round(time.process_time() - cpu, 2)  # every thread of this process
            print(f"  {label:<34} {elapsed:6.2f} s ({cpu_s[label]:.2f} s CPU, load "
                  f"{os.getloadavg()[0]:.1f})  {len(result.run_requests):>6} run requests, "
                  f"cursor {len(result.cursor or '')} B", flush=True)
            return result, elapsed

        # the state is committed: one tick confirms the lineage, then a steady tick
        warm, _ = tick("warm-up (no change)", state.encode())
        steady, out["steady_tick_s"] = tick("no change", warm.cursor)
        assert not steady.run_requests, len(steady.run_requests)
        scanned_steady = ChangeState.decode(steady.cursor)
        # 1% of the partitions get a new file, spread over the datasets
        changed = changed_partitions(D, P)
        now = time.time()
        for name, part in changed:
            f = root / "src" / name / part / NEW_FILE
            f.write_bytes(b"y" * 150)
            os.utime(f, (now - 120, now - 120))
        result, out["changed_tick_s"] = tick("1% of partitions changed", steady.cursor)
        found = {(r.tags["replication/dataset"], r.partition_key) for r in result.run_requests}
        out["changed_total"] = len(changed)
        out["changed_found"] = len(found & changed)
        out["cursor_bytes"] = len(result.cursor or "")
        # CPU seconds of those ticks: what the tick costs whatever else the machine runs
        out["steady_tick_cpu_s"] = cpu_s["no change"]
        out["changed_tick_cpu_s"] = cpu_s["1% of partitions changed"]
        del scanned_steady

        # how many steady ticks a full rotation takes (changes the mtime does not show)
        ev_steady = evaluate_changes(rs, ChangeState.decode(result.cursor), instance=instance)
        out["rotation_cycle_ticks"] = round(ev_steady.total / max(1, ev_steady.scanned), 1)

        # history: one materialization per partition (the fingerprints the sensor recorded,
        # as the copies would have), then a tick from an empty cursor
        t = time.perf_counter()
        store = open_sensor_store(rs.spec)
        recorded = 0
        try:
            for d in rs.names():
                key = rs[d].replica_keys[0]
                for p, _, _, value, _ in store.sensor_rows(fingerprint_scope(d)):
                    if recorded >= args.history:
                        break
                    instance.report_runless_asset_event(dg.AssetMaterialization(
                        asset_key=key, partition=p,
                        metadata={"source_fingerprint": (value or "-").split(" ")[0]}))
                    recorded += 1
        finally:
            store.close()
        out["history_records"] = recorded
        out["history_built_s"] = round(time.perf_counter() - t, 1)
        seed, out["seed_tick_s"] = tick("empty cursor, existing history", None)
        seed_total, ticks, cursor = out["seed_tick_s"], 1, seed.cursor
        while ChangeState.decode(cursor).seed is not None and ticks < 1000:
            nxt, elapsed = tick("  seeding", cursor)
            seed_total += elapsed
            ticks += 1
            cursor = nxt.cursor
        out["seed_ticks"] = ticks
        out["seed_total_s"] = round(seed_total, 2)
    for k in ("steady_tick_s", "changed_tick_s", "seed_tick_s"):
        out[k] = round(float(out[k]), 2)
    met = (out["steady_tick_s"] <= TARGETS["steady_tick_s"] and out["changed_tick_s"] <= TARGETS["changed_tick_s"]
           and out["changed_found"] == out["changed_total"] and out["cursor_bytes"] <= TARGETS["cursor_bytes"]
           and out["seed_tick_s"] <= TARGETS["seed_tick_s"])
    out["targets_met"] = bool(met)
    out["load"] = round(os.getloadavg()[0], 1)
    if not (args.keep or args.reuse):
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out))
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
