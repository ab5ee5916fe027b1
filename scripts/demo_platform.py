"""`make demo`, platform part: replay the audit-file flow on local folders, through Dagster.

Wave 1: the "on-prem cluster" (.demo/onprem) has folder_1 and folder_2 -> a change-sensor tick
-> one copy run per folder -> replicas on "gcs" and "dr" with copy_finished.
Wave 2: folder_3 and folder_4 appear, and the legacy cron drops an audit file naming them ->
the next tick copies only those two; the audit sensor finds them already copied, refuses a bad
line and archives the file. Everything is recorded in a SQLite Dagster home (.demo/dagster_home)
that `make ui` opens.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / ".demo"
DAGSTER_HOME = DEMO / "dagster_home"
DEMO_INSTANCE_YAML = """\
# The demo's Dagster instance: SQLite storage under this directory, no server needed.
telemetry:
  enabled: false
run_retries:
  enabled: true
  max_retries: 1
concurrency:
  pools:
    default_limit: 4
"""


def prepare_home() -> Path:
    DAGSTER_HOME.mkdir(parents=True, exist_ok=True)
    (DAGSTER_HOME / "dagster.yaml").write_text(DEMO_INSTANCE_YAML)
    return DAGSTER_HOME


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _folder(root: Path, name: str, rows: int) -> None:
    for part in range(2):
        lines = [f"{name},{part},{i},event-{i * 7 % 13}" for i in range(rows)]
        _write(root / name / f"part-{part:05d}.csv", "\n".join(lines) + "\n")


def main() -> int:
    warnings.filterwarnings("ignore")
    os.environ["DAGSTER_HOME"] = str(prepare_home())
    import dagster as dg

    from platform_assets.config import load_spec
    from platform_assets.datasets import resolve
    from platform_assets.definitions import build_definitions
    from platform_assets.operations import apply_pool_limits
    from platform_assets.replication.audit_sensor import AuditState, evaluate_audit
    from platform_assets.replication.change_sensor import ChangeState, evaluate_changes
    from platform_assets.replication.requests import missing_dynamic_partitions
    from platform_assets.runner import QUIET, apply_sensor_result

    spec = load_spec(REPO / "replication.yaml")
    rs = resolve(spec)
    events_src = Path(rs["events"].source_root)
    customers_src = Path(rs["customers"].source_root)
    audit_dir = Path(spec.resolve_location(spec.platform.audit.dir))
    # start from scratch: only what this demo owns
    for path in (events_src, customers_src, DEMO / "gcs", DEMO / "dr", audit_dir,
                 Path(spec.resolve_location(spec.platform.notifier.outbox)).parent):
        shutil.rmtree(path, ignore_errors=True)
    for p in Path(spec.state_path).parent.glob(Path(spec.state_path).name + "*"):
        p.unlink()
    for child in DAGSTER_HOME.iterdir():
        if child.name != "dagster.yaml":
            shutil.rmtree(child) if child.is_dir() else child.unlink()

    defs = build_definitions(REPO / "replication.yaml")
    instance = dg.DagsterInstance.get()
    apply_pool_limits(instance, spec)

    def change_tick(state: ChangeState) -> tuple[ChangeState, list]:
        ev = evaluate_changes(rs, state, instance=instance)
        result = dg.SensorResult(
            run_requests=ev.run_requests,
            asset_events=ev.observations,  # the source partitions' data versions
            dynamic_partitions_requests=missing_dynamic_partitions(rs, instance, ev.new_partitions),
        )
        launched = apply_sensor_result(defs, instance, result,
                                       sensor_name="replication_change_sensor", quiet=True)
        print(f"  change sensor: scanned {ev.scanned} partitions in {ev.elapsed_s * 1000:.0f} ms, "
              f"{len(ev.run_requests)} new/changed")
        for run in launched:
            print(f"    copy run {run.run_id[:8]}  {run.partition:<10} {'ok' if run.success else 'FAILED'}")
        return ev.state, launched

    print("== wave 1: folder_1 and folder_2 on the on-prem cluster")
    _folder(events_src, "folder_1", 200)
    _folder(events_src, "folder_2", 300)
    _write(customers_src / "customers.csv", "id,name\n1,ada\n2,grace\n")
    state, wave1 = change_tick(ChangeState())

    print("== wave 2: folder_3 and folder_4 appear, with an audit file naming them")
    time.sleep(0.05)
    _folder(events_src, "folder_3", 400)
    _folder(events_src, "folder_4", 500)
    gcs_events = rs["events"].target("gcs").root
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    audit_name = f"{spec.platform.audit.prefix}{stamp}"
    _write(audit_dir / audit_name, "\n".join([
        f"{events_src}/folder_3 {gcs_events}/folder_3",
        f"{events_src}/folder_4 {gcs_events}/folder_4",
        f"{events_src}/../../etc {gcs_events}/etc",
    ]) + "\n")
    state, wave2 = change_tick(state)
    ev = evaluate_audit(rs, AuditState(), instance)
    for rejections in ev.rejected.values():
        for r in rejections:
            print(f"  audit sensor: {audit_name} line {r.line_no} refused: {r.reason}")
    launched = apply_sensor_result(defs, instance, dg.SensorResult(
        run_requests=ev.run_requests, dynamic_partitions_requests=ev.dynamic_partitions_requests),
        sensor_name="replication_audit_file_sensor", quiet=True)
    if launched:
        ev = evaluate_audit(rs, ev.state, instance)
    print(f"  audit sensor: {len(launched)} extra copies needed; archived: {', '.join(ev.archived) or 'none'}")

    # run the lag checks so the UI shows them (source data versions come from the change sensor)
    for job in ("replication_lag_checks",):
        defs.resolve_job_def(job).execute_in_process(instance=instance, run_config=QUIET,
                                                     raise_on_error=False)

    print()
    print(f"{'asset':<16} {'partition':<10} {'copy_finished (UTC)':<24} {'files':>5} {'bytes':>8}")
    print("-" * 67)
    for d in sorted(spec.datasets):
        for key in rs[d].replica_keys:
            latest: dict[str, dict] = {}
            for rec in instance.fetch_materializations(key, limit=1000).records:
                latest.setdefault(rec.partition_key or "all", rec.asset_materialization.metadata)
            for part in sorted(latest):
                md = latest[part]
                when = dt.datetime.fromtimestamp(md["copy_finished"].value, dt.UTC)
                print(f"{key.to_user_string():<16} {part:<10} {when:%Y-%m-%d %H:%M:%S.%f}"[:-3]
                      + f"  {md['files_copied'].value:>5} {md['bytes_copied'].value:>8}")
    first = sorted(r.partition for r in wave1 if r.partition != "all")
    second = sorted(r.partition for r in wave2)
    ok = all(r.success for r in wave1 + wave2) and second == ["folder_3", "folder_4"]
    print()
    print(f"wave 1 copied {', '.join(first)} (+ customers); wave 2 copied only {', '.join(second)}"
          f" -> {'OK' if ok else 'UNEXPECTED'}")
    print(f"Dagster home: {DAGSTER_HOME}")
    print("Open the UI: `make ui`, then http://127.0.0.1:3000 (assets, partitions, freshness, "
          "copy_finished; sensors running)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
