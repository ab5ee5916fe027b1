"""Change-sensor tick over 100 datasets x 100 partitions (10,000 partition directories).

Measures the real sensor function (``build_sensor_context`` on an ephemeral instance: listing,
fingerprints, cursor encode/decode, dynamic-partition lookups): the first tick (everything
new), a tick with no change, and a tick with 1% of the partitions changed. Target: < 5 s.
Work directory: .bench/sensor (or $BENCH_DIR/sensor).
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path

DATASETS = 100
PARTITIONS = 100
FILES_PER_PARTITION = 2
TARGET_S = 5.0


def _work_dir() -> Path:
    base = Path(os.environ.get("BENCH_DIR") or Path(__file__).resolve().parents[1] / ".bench")
    return base / "sensor"


def build_tree(root: Path) -> Path:
    shutil.rmtree(root, ignore_errors=True)
    (root / "src").mkdir(parents=True)
    old = time.time() - 3600
    lines = [
        "version: 1",
        "platform:",
        "  state_path: state.db",
        "  notifier: {kind: jsonl, outbox: outbox.jsonl}",
        "  change_sensor: {max_partitions_per_tick: 20000, tick_budget_s: 25}",
        "clusters:",
        "  onprem: {uri: src}",
        "  gcs: {uri: dst}",
        "datasets:",
    ]
    for d in range(DATASETS):
        name = f"table_{d:03d}"
        lines += [
            f"  {name}:",
            f"    source: {{cluster: onprem, path: {name}}}",
            '    partitions: "dt=*"',
            f"    targets: [{{cluster: gcs, path: {name}}}]",
        ]
        for p in range(PARTITIONS):
            part = root / "src" / name / f"dt=2026-{1 + p // 28:02d}-{1 + p % 28:02d}"
            part.mkdir(parents=True)
            for f in range(FILES_PER_PARTITION):
                fp = part / f"part-{f:05d}.parquet"
                fp.write_bytes(b"x" * (100 + f))
                t = old - d * PARTITIONS - p  # distinct fingerprints, as in real data
                os.utime(fp, (t, t))
    spec = root / "replication.yaml"
    spec.write_text("\n".join(lines) + "\n")
    return spec


def main() -> int:
    warnings.filterwarnings("ignore")
    import dagster as dg

    from platform_assets.definitions import build_definitions

    root = _work_dir()
    t0 = time.perf_counter()
    spec_path = build_tree(root)
    print(f"sensor bench: {DATASETS} datasets x {PARTITIONS} partitions x {FILES_PER_PARTITION} files "
          f"(built in {time.perf_counter() - t0:.1f}s)")
    defs = build_definitions(spec_path)
    sensor = defs.get_sensor_def("replication_change_sensor")
    results: dict[str, float] = {}
    with dg.instance_for_test() as instance:

        def tick(label: str, cursor: str | None) -> dg.SensorResult:
            ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
            start = time.perf_counter()
            result = sensor(ctx)
            elapsed = time.perf_counter() - start
            results[label] = elapsed
            print(f"  {label:<28} {elapsed:6.2f} s   {len(result.run_requests):>6} run requests, "
                  f"cursor {len(result.cursor or '') / 1024:.0f} KiB")
            return result

        first = tick("first tick (all new)", None)
        for req in first.dynamic_partitions_requests:
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        second = tick("no change", first.cursor)
        assert not second.run_requests
        now = time.time()
        for d in range(0, DATASETS, 10):  # 1% of the partitions: 10 datasets x 10 partitions
            for p in range(10):
                f = root / "src" / f"table_{d:03d}" / f"dt=2026-{1 + p // 28:02d}-{1 + p % 28:02d}" / "part-00000.parquet"
                f.write_bytes(b"y" * 150)
                os.utime(f, (now - 120, now - 120))
        third = tick("1% of partitions changed", second.cursor)
        assert len(third.run_requests) == 100, len(third.run_requests)
    worst = max(results.values())
    print(f"  worst tick {worst:.2f} s (target < {TARGET_S:.0f} s): {'OK' if worst < TARGET_S else 'SLOW'}")
    shutil.rmtree(root, ignore_errors=True)
    return 0 if worst < TARGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
