"""Run success / failure notifications reach the configured notifier (JSONL outbox here)."""

from __future__ import annotations

import json

import dagster as dg

from platform_assets.definitions import build_definitions, build_resources
from platform_assets.runner import apply_sensor_result
from tests.fixtures.platform import Platform


def _run_and_event(instance, defs, platform):
    change = defs.resolve_sensor_def("replication_change_sensor")(
        dg.build_sensor_context(instance=instance, definitions=defs)
    )
    launched = apply_sensor_result(defs, instance, change, sensor_name="replication_change_sensor")
    run = instance.get_run_by_id(launched[0].run_id)
    records = instance.get_records_for_run(run.run_id).records
    final = [r.event_log_entry.dagster_event for r in records
             if r.event_log_entry.dagster_event
             and r.event_log_entry.dagster_event.event_type_value in ("PIPELINE_SUCCESS", "PIPELINE_FAILURE")]
    return run, final[-1]


def test_success_notification_goes_to_the_outbox(platform: Platform, instance) -> None:
    platform.write("events", "dt=1", "a.csv", "1")
    defs = build_definitions(platform.spec_path)
    run, event = _run_and_event(instance, defs, platform)
    ctx = dg.build_run_status_sensor_context(
        sensor_name="notify_run_success", dagster_instance=instance, dagster_run=run,
        dagster_event=event, resources=build_resources(platform.spec),
    )
    defs.resolve_sensor_def("notify_run_success")(ctx)
    [line] = platform.outbox()
    msg = json.loads(line)
    assert msg["event"] == "run_succeeded"
    assert msg["dataset"] == "events" and msg["partition"] == "dt=1"
    assert msg["run_id"] == run.run_id and msg["trigger"] == "change"


def test_failure_notification_carries_the_error(platform: Platform, instance) -> None:
    platform.write("events", "dt=1", "a.csv", "1")
    (platform.root / "gcs" / "events").mkdir(parents=True)
    (platform.root / "gcs" / "events" / "dt=1").write_text("a file where a directory goes")
    defs = build_definitions(platform.spec_path)
    run, event = _run_and_event(instance, defs, platform)
    assert run.status == dg.DagsterRunStatus.FAILURE
    ctx = dg.build_run_status_sensor_context(
        sensor_name="notify_run_failure", dagster_instance=instance, dagster_run=run,
        dagster_event=event, resources=build_resources(platform.spec),
    ).for_run_failure()
    defs.resolve_sensor_def("notify_run_failure")(ctx)
    [line] = platform.outbox()
    msg = json.loads(line)
    assert msg["event"] == "run_failed" and msg["partition"] == "dt=1"
    assert msg["error"]
