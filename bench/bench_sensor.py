"""Change-sensor ticks at scale: ``python -m bench.bench_sensor --datasets D --partitions P``.

Builds D datasets x P partitions x 2 files on local disk, records every partition once (the
state a running deployment has), then measures the real sensor function
(``build_sensor_context`` on an ephemeral instance, the per-partition state in an SQLite state
store):

- ``steady_tick_s``: a tick with no change;
- ``changed_tick_s``: a tick after 1% of the partitions got a new file (how Hive and HDFS
  writers land data), with ``changed_found`` of ``changed_total`` requested in that tick;
- ``cursor_bytes``: the cursor after those ticks;
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
TARGETS = {"steady_tick_s": 5.0, "changed_tick_s": 5.0, "cursor_bytes": 64 * 1024, "seed_tick_s": 10.0}


def _work_dir() -> Path:
    base = Path(os.environ.get("BENCH_DIR") or Path(__file__).resolve().parents[1] / ".bench")
    return base / "sensor"


def _partition(p: int) -> str:
    return f"dt={p:05d}"


def build_tree(root: Path, datasets: int, partitions: int, budget_s: float) -> Path:
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
    for d in range(datasets):
        name = f"table_{d:03d}"
        lines += [
            f"  {name}:",
            f"    source: {{cluster: onprem, path: {name}}}",
            '    partitions: "dt=*"',
            f"    targets: [{{cluster: gcs, path: {name}}}]",
        ]
        for p in range(partitions):
            part = root / "src" / name / _partition(p)
            part.mkdir(parents=True)
            for f in range(FILES_PER_PARTITION):
                fp = part / f"part-{f:05d}.parquet"
                fp.write_bytes(b"x" * (100 + f))
                t = old - d * partitions - p  # distinct fingerprints, as in real data
                os.utime(fp, (t, t))
    spec = root / "replication.yaml"
    spec.write_text("\n".join(lines) + "\n")
    return spec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=1000)
    ap.add_argument("--budget", type=float, default=4.0, help="tick_budget_s of the spec")
    ap.add_argument("--history", type=int, default=5000,
                    help="materializations on the instance for the seed tick (at most one per "
                         "partition; Dagster's SQLite event log takes ~30 ms per event here)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
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
    spec_path = build_tree(root, D, P, args.budget)
    print(f"sensor bench: {D} datasets x {P} partitions x {FILES_PER_PARTITION} files "
          f"(built in {time.perf_counter() - t0:.1f}s, load {os.getloadavg()[0]:.1f})", flush=True)
    defs = build_definitions(spec_path)
    sensor = defs.get_sensor_def(CHANGE_SENSOR)
    rs = resolve(load_spec(spec_path))
    out: dict[str, float | int | str] = {"datasets": D, "partitions": P, "tick_budget_s": args.budget}

    # a running deployment: every partition recorded once (one unbounded pass, not measured)
    t = time.perf_counter()
    store = open_sensor_store(rs.spec)
    try:
        ev = evaluate_changes(rs, ChangeState(), budget_s=1e9, store=store)
        state = evaluate_changes(rs, ev.state, budget_s=1e9, store=store).state
    finally:
        store.close()
    out["record_all_s"] = round(time.perf_counter() - t, 2)
    print(f"  recorded {ev.scanned} partitions in {out['record_all_s']} s", flush=True)

    import tempfile

    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as home, dg.instance_for_test(temp_dir=home) as instance:
        for d in rs.names():
            instance.add_dynamic_partitions(rs[d].partitions_def_name, [_partition(p) for p in range(P)])

        def tick(label: str, cursor: str | None) -> tuple[dg.SensorResult, float]:
            ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
            start = time.perf_counter()
            result = sensor(ctx)
            elapsed = time.perf_counter() - start
            print(f"  {label:<34} {elapsed:6.2f} s  {len(result.run_requests):>6} run requests, "
                  f"cursor {len(result.cursor or '')} B", flush=True)
            return result, elapsed

        # the state is committed: one tick confirms the lineage, then a steady tick
        warm, _ = tick("warm-up (no change)", state.encode())
        steady, out["steady_tick_s"] = tick("no change", warm.cursor)
        assert not steady.run_requests, len(steady.run_requests)
        scanned_steady = ChangeState.decode(steady.cursor)
        # 1% of the partitions get a new file, spread over the datasets
        changed: set[tuple[str, str]] = set()
        now = time.time()
        n = max(1, D * P // 100)
        for i in range(n):
            d, p = i % D, (i * 7919) % P
            name, part = f"table_{d:03d}", _partition(p)
            if (name, part) in changed:
                continue
            f = root / "src" / name / part / "part-new.parquet"
            f.write_bytes(b"y" * 150)
            os.utime(f, (now - 120, now - 120))
            changed.add((name, part))
        result, out["changed_tick_s"] = tick("1% of partitions changed", steady.cursor)
        found = {(r.tags["replication/dataset"], r.partition_key) for r in result.run_requests}
        out["changed_total"] = len(changed)
        out["changed_found"] = len(found & changed)
        out["cursor_bytes"] = len(result.cursor or "")
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
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out))
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
