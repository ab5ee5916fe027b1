"""`make demo`, landing part: a landing file through the pipeline, a bad one rejected, then fixed.

A user drops ``orders-2026-11-20.csv`` in the landing directory (.demo/dropzone/orders) while
another file is still being written. A landing-sensor tick sees only the finished file (the
engine's plan against its manifest, with min_age_s) and runs ``landing_orders``: ingest into the
raw area (.demo/onprem/raw/orders), blocking validation checks, Parquet partitioned by ``dt``
(.demo/onprem/curated/orders), and the HTML report. Then a file with a duplicate key and an
empty customer arrives: it is ingested but rejected, nothing downstream runs, and the
notification names file, row and rule. The user drops a corrected file with the next day's
orders: that batch goes through, and its report shows the three batches. Notifications go to
the platform's outbox.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SILENT = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def _drop(path: Path, text: str, age_s: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    t = time.time() - age_s
    os.utime(path, (t, t))


def _orders(n: int) -> str:
    days = ["2026-11-18", "2026-11-19", "2026-11-20"]
    lines = ["order_id,customer,amount,dt"]
    lines += [f"{i},customer-{i % 37},{(i * 7.31) % 500:.2f},{days[i % 3]}" for i in range(1, n + 1)]
    return "\n".join(lines) + "\n"


def main() -> int:
    warnings.filterwarnings("ignore")
    from scripts.demo_platform import prepare_home

    os.environ["DAGSTER_HOME"] = str(prepare_home())
    import dagster as dg

    from platform_assets.config import load_spec
    from platform_assets.definitions import build_definitions, build_resources
    from platform_assets.landing.view import landing_view

    spec = load_spec(REPO / "replication.yaml")
    name = "orders"
    view = landing_view(spec, name)
    drop = Path(view.source)
    for p in (drop, Path(view.raw), Path(view.output)):
        shutil.rmtree(p, ignore_errors=True)
    outbox = Path(spec.resolve_location(spec.platform.notifier.outbox))
    seen_lines = len(outbox.read_text().splitlines()) if outbox.exists() else 0

    defs = build_definitions(REPO / "replication.yaml")
    sensor = defs.resolve_sensor_def(view.sensor_name)
    instance = dg.DagsterInstance.get()
    cursor: str | None = None

    def tick() -> bool | None:
        nonlocal cursor
        ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                      resources=build_resources(spec))
        result = sensor(ctx)
        if isinstance(result, dg.SkipReason):
            print(f"  landing sensor: skipped ({result.skip_message})")
            return None
        cursor = result.cursor
        req = result.run_requests[0]
        print(f"  landing sensor: batch {req.tags['landing/batch']} -> run of {req.job_name}")
        run = defs.resolve_job_def(req.job_name).execute_in_process(
            instance=instance, run_config=SILENT, raise_on_error=False,
            tags={**req.tags, "dagster/run_key": req.run_key,
                  "dagster/sensor_name": view.sensor_name},
        )
        print(f"  run {run.run_id[:8]}: {'succeeded' if run.success else 'FAILED (blocked)'}")
        return run.success

    def new_notifications() -> None:
        nonlocal seen_lines
        lines = outbox.read_text().splitlines() if outbox.exists() else []
        for line in lines[seen_lines:]:
            e = json.loads(line)
            if e.get("pipeline") != "landing":
                continue
            files = e.get("files")
            detail = e.get("error") or e.get("report") or (
                ", ".join(files) if isinstance(files, list) else f"{files} files, {e.get('rows', '?')} rows"
                if e["event"] == "validated" else f"{files} files -> {e.get('parquet_files')} Parquet files")
            print(f"    notify {e['event']:<12} {detail}")
        seen_lines = len(lines)

    print("== landing: a user drops orders-2026-11-20.csv (another file is still being written)")
    _drop(drop / "orders-2026-11-20.csv", _orders(240), age_s=60)
    _drop(drop / "orders-partial.csv", "order_id,customer,amount,dt\n1,a", age_s=0)
    ok_good = tick()
    new_notifications()
    report_md = instance.fetch_materializations(
        dg.AssetKey(["landing", name, "report"]), limit=1).records
    report = report_md[0].asset_materialization.metadata["report"].value if report_md else None
    parquet = sorted(str(p.relative_to(view.output)) for p in Path(view.output).rglob("*.parquet"))
    print(f"  Parquet ({len(parquet)} files, partitioned by dt): {', '.join(parquet)}")

    print("== landing: a file with an empty customer and a duplicate order_id arrives")
    (drop / "orders-partial.csv").unlink()
    _drop(drop / "orders-bad.csv",
          "order_id,customer,amount,dt\n900,ann,1,2026-11-21\n901,,2,2026-11-21\n900,bo,3,2026-11-21\n",
          age_s=60)
    ok_bad = tick()
    new_notifications()
    parquet_after = sorted(str(p.relative_to(view.output))
                           for p in Path(view.output).rglob("*.parquet"))
    print(f"  Parquet unchanged: {parquet_after == parquet}")

    print("== landing: the user drops the corrected file and the next day's orders")
    _drop(drop / "orders-bad.csv",
          "order_id,customer,amount,dt\n900,ann,1,2026-11-21\n901,bea,2,2026-11-21\n902,bo,3,2026-11-21\n",
          age_s=30)
    _drop(drop / "orders-2026-11-21.csv", _orders(420).replace("customer-", "c-"), age_s=30)
    ok_fixed = tick()
    new_notifications()
    report_md = instance.fetch_materializations(
        dg.AssetKey(["landing", name, "report"]), limit=1).records
    report = report_md[0].asset_materialization.metadata["report"].value if report_md else None

    ok = (bool(ok_good) and ok_bad is False and bool(ok_fixed) and report is not None
          and parquet_after == parquet)
    print()
    print(f"landing report: {report}")
    print(f"  (CSV summary next to it; open the HTML in a browser: file://{report})")
    print(f"landing pipeline -> {'OK' if ok else 'UNEXPECTED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
