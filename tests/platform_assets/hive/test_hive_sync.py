"""Multi-cluster sync of Hive tables between two simulated clusters (two Derby metastores in two
worker processes): sync, async with the remote cluster down, incremental blocking, copy_slave
ETL and the whole-table copy."""

from __future__ import annotations

import fcntl
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from platform_assets.datasets import resolve
from platform_assets.definitions import build_resources
from platform_assets.hive import copy_table as ct
from platform_assets.hive import names as hn
from platform_assets.hive.assets import pending_copies
from platform_assets.hive.definitions import build_defs as hive_defs
from platform_assets.hive.sensors import async_copy_requests, copy_slave_requests
from platform_assets.hive.view import HiveSpec, resolve_hive
from platform_assets.replication.names import replica_key
from platform_assets.runner import execute_run_request
from resources.hive import HiveUnavailable
from tests.platform_assets.hive.conftest import HiveEnv

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def _import_config(dataset: str, rows: int, seed: int = 0) -> dict[str, Any]:
    op = f"a__{dataset}__import"
    return {**QUIET, "ops": {op: {"config": {"rows": rows, "seed": seed}}}}


def run_job(env: HiveEnv, instance: dg.DagsterInstance, job: str, dataset: str, partition: str,
            rows: int = 5, seed: int = 0) -> dg.ExecuteInProcessResult:
    if partition != "all":
        instance.add_dynamic_partitions(f"{dataset}_copies", [partition])
    job_def = env.defs.resolve_job_def(job)
    run_config = _import_config(dataset, rows, seed) if job.startswith(("hive_import_", "hive_")) \
        and not job.startswith("hive_copy_") else QUIET
    return job_def.execute_in_process(instance=instance, partition_key=partition,
                                      run_config=run_config, raise_on_error=False)


def hive_of(spec: Any) -> HiveSpec:
    """The spec's Hive datasets, resolved as the Hive kind's ``build_defs`` resolves them."""
    return resolve_hive(resolve(spec))


def materialized(result: dg.ExecuteInProcessResult) -> set[dg.AssetKey]:
    return {e.asset_key for e in result.get_asset_materialization_events()}


def check_results(result: dg.ExecuteInProcessResult, name: str) -> list[dg.AssetCheckEvaluation]:
    return [e.event_specific_data for e in result.all_events
            if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
            and e.event_specific_data.check_name == name]


def parts(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    return sorted((p["spec"] for p in rows), key=lambda s: sorted(s.items()))


def test_sync_one_run_gives_b_the_same_partitions_and_row_counts(hive_env: HiveEnv, instance) -> None:
    a, b = hive_env.hive.client("a"), hive_env.hive.client("b")
    for p, rows in (("dt=2026-11-01", 7), ("dt=2026-11-02", 4)):
        res = run_job(hive_env, instance, "hive_sales", "sales", p, rows=rows)
        assert res.success
        # import, copy and remote registration in the same run
        assert materialized(res) == {
            dg.AssetKey(["a", "sales", "import"]), replica_key("sales", "b"), hn.hive_table_key("sales", "b"),
        }
        [rc] = check_results(res, hn.CHECK_ROW_COUNTS)
        assert rc.passed and rc.metadata["rows_source"].value == rc.metadata["rows_remote"].value == rows

    assert parts(b.list_partitions("analytics", "sales")) == parts(a.list_partitions("analytics", "sales"))
    assert b.count_by_partition("analytics", "sales") == {"dt=2026-11-01": 7, "dt=2026-11-02": 4}
    assert b.count_by_partition("analytics", "sales") == a.count_by_partition("analytics", "sales")
    assert b.read_rows("analytics", "sales") == a.read_rows("analytics", "sales")

    info_a, info_b = a.describe_table("analytics", "sales"), b.describe_table("analytics", "sales")
    assert info_b["columns"] == info_a["columns"] == [["id", "bigint"], ["name", "string"], ["amount", "double"]]
    assert info_b["partition_columns"] == info_a["partition_columns"] == [["dt", "string"]]
    b_replica = hive_env.root / "b" / "replica" / "sales"
    assert info_b["location"] == f"file:{b_replica}"  # rewritten to b's replica
    for p in b.list_partitions("analytics", "sales"):
        assert p["location"].startswith(f"file:{b_replica}/dt=")
    props = info_b["properties"]
    assert props["copy_slave"] == "1" and props["copy_finished_partition"] == "dt=2026-11-02"
    mat = instance.get_latest_materialization_event(hn.hive_table_key("sales", "b")).asset_materialization
    stamped = mat.metadata["copy_finished"].value
    import datetime as dt

    assert props["copy_finished"] == dt.datetime.fromtimestamp(stamped, dt.UTC).isoformat(timespec="microseconds")
    # the standard metadata the catalog shows: the remote table's rows (the partition just
    # registered) and its schema with the partition column marked, from a's table
    assert mat.metadata["dagster/row_count"].value == 4
    schema = mat.metadata["dagster/column_schema"].value
    assert [(c.name, c.type, c.description) for c in schema.columns] == [
        ("id", "bigint", None), ("name", "string", None), ("amount", "double", None),
        ("dt", "string", "partition column")]
    imported = instance.get_latest_materialization_event(
        dg.AssetKey(["a", "sales", "import"])).asset_materialization
    assert [c.name for c in imported.metadata["dagster/column_schema"].value.columns] == [
        "id", "name", "amount", "dt"]
    # the second cluster never imports: there is no import asset on b
    keys = {k for a_def in hive_env.defs.assets or [] for k in getattr(a_def, "keys", [])}
    assert dg.AssetKey(["b", "sales", "import"]) not in keys
    assert dg.AssetKey(["a", "sales", "import"]) in keys


def test_unpartitioned_full_load_replaces_the_remote_table(hive_env: HiveEnv, instance) -> None:
    a, b = hive_env.hive.client("a"), hive_env.hive.client("b")
    for rows in (8, 3):  # a full load replaces the data; the copy mirrors deletes
        res = run_job(hive_env, instance, "hive_dims", "dims", "all", rows=rows, seed=rows)
        assert res.success
        assert a.count_rows("analytics", "dims") == b.count_rows("analytics", "dims") == rows
    assert b.read_rows("analytics", "dims") == a.read_rows("analytics", "dims")
    info = b.describe_table("analytics", "dims")
    assert info["partition_columns"] == [] and info["properties"]["copy_finished_partition"] == "all"


def test_a_copy_slave_table_is_not_imported_again(hive_env: HiveEnv, instance) -> None:
    """A spec that would import into b's copy of analytics.sales is refused at run time."""
    from platform_assets.definitions import build_definitions

    if not hive_env.hive.client("b").describe_table("analytics", "sales").get("exists"):
        assert run_job(hive_env, instance, "hive_sales", "sales", "dt=2026-10-01").success
    other = hive_env.root / "b_imports.yaml"
    other.write_text(SPEC_B_IMPORTS)
    defs = build_definitions(other)
    instance.add_dynamic_partitions("sales_copies", ["dt=2026-10-02"])
    res = defs.resolve_job_def("hive_sales").execute_in_process(
        instance=instance, partition_key="dt=2026-10-02", raise_on_error=False,
        run_config={**QUIET, "ops": {"b__sales__import": {"config": {"rows": 1}}}})
    assert not res.success
    failure = next(e for e in res.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "copy_slave=1" in failure.event_specific_data.error.message
    assert {"dt": "2026-10-02"} not in parts(hive_env.hive.client("b").list_partitions("analytics", "sales"))


SPEC_B_IMPORTS = """\
platform: {state_path: state/replicator.db, hive_home: hive, retries: {max_retries: 0, delay_s: 0}}
clusters:
  a: {uri: a, hive_metastore: embedded}
  b: {uri: b, hive_metastore: embedded}
datasets:
  sales:
    source: {cluster: b, path: replica/sales}
    partitions: "dt=*"
    targets: [{cluster: a, path: back/sales}]
    hive_table: {database: analytics, table: sales}
"""


def test_copy_slave_etl_starts_when_copy_finished_moves(hive_env: HiveEnv, instance) -> None:
    spec = hive_env.spec
    assert run_job(hive_env, instance, "hive_clicks", "clicks", "dt=2026-11-01", rows=3).success
    etl = hn.etl_key("clicks", "b")

    def requests() -> list[dg.RunRequest]:
        return [r for r in copy_slave_requests(hive_of(spec), instance) if r.job_name == "etl_b_clicks"]

    [req] = requests()
    assert req.partition_key == "dt=2026-11-01"
    # the sensor itself returns the same request
    sensor = hive_env.defs.resolve_sensor_def(hn.COPY_SLAVE_SENSOR)
    out = sensor(dg.build_sensor_context(instance=instance, definitions=hive_env.defs))
    assert [r.run_key for r in out.run_requests if r.job_name == "etl_b_clicks"] == [req.run_key]
    res = execute_run_request(hive_env.defs, instance, req, quiet=True)
    assert res.success
    etl_mat = instance.get_latest_materialization_event(etl).asset_materialization
    assert etl_mat.metadata["rows"].value == 3
    assert requests() == []  # nothing new landed: the ETL does not run again
    # an incremental import appends 6 rows to the partition; its copy lands: copy_finished moves
    assert run_job(hive_env, instance, "hive_clicks", "clicks", "dt=2026-11-01", rows=6, seed=1).success
    [req2] = requests()
    assert req2.partition_key == "dt=2026-11-01" and req2.run_key != req.run_key
    assert execute_run_request(hive_env.defs, instance, req2, quiet=True).success
    assert instance.get_latest_materialization_event(etl).asset_materialization.metadata["rows"].value == 9
    assert requests() == []


def test_async_retries_while_b_is_down_then_completes(hive_env: HiveEnv, instance) -> None:
    spec, hive = hive_env.spec, hive_env.hive
    res = run_job(hive_env, instance, "hive_import_orders", "orders", "dt=2026-11-05", rows=9)
    assert res.success
    # the import run ended after the import: nothing copied yet
    assert materialized(res) == {dg.AssetKey(["a", "orders", "import"])}
    [req] = [r for r in async_copy_requests(hive_of(spec), instance) if r.job_name == "hive_copy_orders"]
    assert req.partition_key == "dt=2026-11-05"

    # cluster b goes down: its metastore process stops and cannot start again (the metastore is
    # held by another process) until the lock is released, once the registration step has
    # failed and been put up for retry (a condition, not a timer: the copy before it may take
    # any time on a loaded machine)
    hive.client("b").stop()
    lock = open(hive_env.b_lock, "a+")  # noqa: SIM115
    fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with pytest.raises(HiveUnavailable, match="held by another process"):
        hive.client("b").ping()
    done = threading.Event()

    def back_up_after_first_retry() -> None:
        deadline = time.monotonic() + 600
        try:
            while not done.is_set() and time.monotonic() < deadline:
                runs = instance.get_runs(dg.RunsFilter(tags={"dagster/run_key": req.run_key}), limit=1)
                if runs and instance.all_logs(runs[0].run_id,
                                              of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY):
                    return
                done.wait(0.05)
        finally:
            fcntl.lockf(lock, fcntl.LOCK_UN)
            lock.close()

    watcher = threading.Thread(target=back_up_after_first_retry, daemon=True)
    watcher.start()
    try:
        result = execute_run_request(hive_env.defs, instance, req, quiet=True)
    finally:
        done.set()
        watcher.join(timeout=60)
    assert result.success
    retries = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert retries and all("orders__hive_table" in e.step_key for e in retries)
    b = hive.client("b")
    assert b.count_by_partition("analytics", "orders") == {"dt=2026-11-05": 9}
    assert async_copy_requests(hive_of(spec), instance) == []  # nothing pending any more


def test_async_copy_is_requested_again_after_a_run_that_failed_for_good(hive_env: HiveEnv, instance) -> None:
    spec = hive_env.spec
    assert run_job(hive_env, instance, "hive_import_snapshots", "snapshots", "dt=2026-12-01").success

    def pending() -> list[dg.RunRequest]:
        return [r for r in async_copy_requests(hive_of(spec), instance) if r.job_name == "hive_copy_snapshots"]

    [first] = pending()
    job = hive_env.defs.resolve_job_def("hive_copy_snapshots")
    run = instance.create_run_for_job(job, tags={**first.tags, "dagster/partition": first.partition_key})
    assert pending() == []  # queued or running: not requested twice
    instance.report_run_failed(run)
    [again] = pending()  # failed for good: requested again under a new run key
    assert again.partition_key == first.partition_key and again.run_key != first.run_key
    assert execute_run_request(hive_env.defs, instance, again, quiet=True).success
    assert pending() == []


def test_incremental_import_refused_while_previous_copy_pending(hive_env: HiveEnv, instance) -> None:
    spec = hive_env.spec
    assert run_job(hive_env, instance, "hive_import_ledger", "ledger", "dt=2026-11-01").success
    # a copy in flight of another partition will not copy dt=2026-11-01: no wait, refused at once
    instance.create_run_for_job(hive_env.defs.resolve_job_def("hive_copy_ledger"),
                                tags={"dagster/partition": "dt=2026-10-01"},
                                status=dg.DagsterRunStatus.STARTED)
    refused = run_job(hive_env, instance, "hive_import_ledger", "ledger", "dt=2026-11-02")
    assert not refused.success
    [check] = check_results(refused, hn.CHECK_PREVIOUS_COPIES)
    assert not check.passed and check.blocking
    assert "dt=2026-11-01" in check.metadata["pending"].value and "not yet on b" in check.metadata["pending"].value
    failure = next(e for e in refused.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    msg = failure.event_specific_data.error.message
    assert "refused" in msg and "dt=2026-11-01" in msg and "b" in msg
    a_parts = hive_env.hive.client("a").list_partitions("analytics", "ledger")
    assert [p["spec"] for p in a_parts] == [{"dt": "2026-11-01"}]  # nothing imported

    [req] = [r for r in async_copy_requests(hive_of(spec), instance) if r.job_name == "hive_copy_ledger"]
    assert execute_run_request(hive_env.defs, instance, req, quiet=True).success
    again = run_job(hive_env, instance, "hive_import_ledger", "ledger", "dt=2026-11-02")
    assert again.success
    [ok] = check_results(again, hn.CHECK_PREVIOUS_COPIES)
    assert ok.passed


def test_incremental_import_waits_for_a_copy_in_flight_instead_of_failing(
        hive_env: HiveEnv, instance) -> None:
    """A backfill of several partitions of an incremental dataset: the second import meets the
    first's copy still running. It waits for it (instead of failing the backfill) and then
    imports."""
    assert run_job(hive_env, instance, "hive_import_ledger", "ledger", "dt=2026-11-05").success
    [req] = [r for r in async_copy_requests(hive_of(hive_env.spec), instance)
             if r.job_name == "hive_copy_ledger" and r.partition_key == "dt=2026-11-05"]
    # the copy of dt=2026-11-05 is running (another run of the backfill)
    flying = instance.create_run_for_job(hive_env.defs.resolve_job_def("hive_copy_ledger"),
                                         tags={"dagster/partition": "dt=2026-11-05"},
                                         status=dg.DagsterRunStatus.STARTED)
    second: dict[str, dg.ExecuteInProcessResult] = {}
    importer = threading.Thread(target=lambda: second.update(r=run_job(
        hive_env, instance, "hive_import_ledger", "ledger", "dt=2026-11-06")))
    importer.start()
    deadline = time.monotonic() + 120
    while not any("waits for earlier imports to be copied: dt=2026-11-05 " in (e.message or "")
                  for run_id in _runs_of(instance, "hive_import_ledger")
                  for e in instance.all_logs(run_id)):
        assert importer.is_alive() and time.monotonic() < deadline, second
        time.sleep(0.2)
    assert importer.is_alive()  # waiting, not refused
    assert execute_run_request(hive_env.defs, instance, req, quiet=True).success  # the copy lands
    instance.report_run_canceled(flying)
    importer.join(timeout=300)
    assert not importer.is_alive() and second["r"].success
    [ok] = check_results(second["r"], hn.CHECK_PREVIOUS_COPIES)
    assert ok.passed


def _runs_of(instance: dg.DagsterInstance, job: str) -> list[str]:
    return [r.run_id for r in instance.get_runs(dg.RunsFilter(job_name=job))]


def test_full_load_import_is_not_blocked(hive_env: HiveEnv, instance) -> None:
    assert run_job(hive_env, instance, "hive_import_snapshots", "snapshots", "dt=2026-11-01").success
    assert pending_copies(hive_of(hive_env.spec)["snapshots"], instance)  # its copy is still pending
    res = run_job(hive_env, instance, "hive_import_snapshots", "snapshots", "dt=2026-11-02")
    assert res.success


def test_whole_table_copy_gives_identical_tables(hive_env: HiveEnv, capsys) -> None:
    a, b = hive_env.hive.client("a"), hive_env.hive.client("b")
    loc = hive_env.root / "a" / "history" / "payments"
    cols = [["id", "bigint"], ["payer", "string"], ["amount", "double"]]
    for day, n in (("2025-01-01", 3), ("2025-01-02", 5)):
        rows = [[i, f"p{i}", i + 0.25] for i in range(n)]
        a.write_partition("archive", "payments", cols, {"day": day}, rows, str(loc), f"{loc}/day={day}")
    res = build_resources(hive_env.spec)
    r = ct.copy_table(hive_of(hive_env.spec), res["hive"], res["replicator"], "a", "b", "archive", "payments")
    assert r.identical_counts and r.rows_target == {"day=2025-01-01": 3, "day=2025-01-02": 5}
    assert r.files_copied >= 2
    ia, ib = a.describe_table("archive", "payments"), b.describe_table("archive", "payments")
    assert ib["columns"] == ia["columns"] and ib["partition_columns"] == ia["partition_columns"]
    assert ib["location"] == f"file:{hive_env.root / 'b' / 'history' / 'payments'}"
    assert parts(b.list_partitions("archive", "payments")) == parts(a.list_partitions("archive", "payments"))
    assert b.read_rows("archive", "payments") == a.read_rows("archive", "payments")
    assert ib["properties"]["copied_from"] == "a.archive.payments"

    # the command line: again (nothing to copy), then bad input exits 2
    args = ["copy-table", "--spec", str(hive_env.spec_path), "--from", "a", "--to", "b"]
    assert ct.main([*args, "--database", "archive", "--table", "payments"]) == 0
    assert "0 files" in capsys.readouterr().out
    assert ct.main([*args, "--database", "archive", "--table", "pay;drop"]) == 2
    assert "expected a Hive identifier" in capsys.readouterr().err
    assert ct.main([*args, "--database", "archive", "--table", "payments", "--target-path", "../x"]) == 2


def test_bad_hive_spec_names_file_and_key(tmp_path: Path) -> None:
    from platform_assets.config import SpecError, load_spec

    text = (
        "clusters:\n  a: {uri: a, hive_metastore: 'mysql://x'}\n  b: {uri: b, hive_metastore: embedded}\n"
        "datasets:\n  d:\n    source: {cluster: a}\n    partitions: 'folder_*'\n"
        "    targets: [{cluster: b}]\n    hive_table: {database: db, table: t}\n"
    )
    p = tmp_path / "r.yaml"
    p.write_text(text)
    with pytest.raises(SpecError) as err:
        hive_defs(resolve(load_spec(p)))
    msg = str(err.value)
    assert f"{p}: clusters.a.hive_metastore: expected 'embedded' or thrift://" in msg
    assert f"{p}: datasets.d.partitions: a dataset with a hive_table needs Hive-style levels" in msg


def test_hive_table_cluster_without_a_metastore_is_refused(tmp_path: Path) -> None:
    """``hive_table.cluster`` names where the table is registered: a cluster without a
    metastore there would leave the table registered nowhere, silently."""
    from platform_assets.config import SpecError, load_spec

    p = tmp_path / "r.yaml"
    p.write_text(
        "clusters:\n  a: {uri: a, hive_metastore: embedded}\n  b: {uri: b, hive_metastore: embedded}\n"
        "  c: {uri: c}\n"
        "datasets:\n  d:\n    source: {cluster: a}\n    partitions: 'dt=*'\n"
        "    targets: [{cluster: b}, {cluster: c}]\n"
        "    hive_table: {database: db, table: t, cluster: c}\n"
    )
    with pytest.raises(SpecError) as err:
        hive_defs(resolve(load_spec(p)))
    assert (f"{p}: datasets.d.hive_table.cluster: expected a target cluster with a "
            "hive_metastore (b), got 'c'") in str(err.value)
