"""The audit-file sensor: validation of every line, copy requests, archive only after success."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from platform_assets.datasets import resolve
from platform_assets.definitions import build_definitions, build_resources
from platform_assets.replication.audit_sensor import AuditState, parse_audit_text
from platform_assets.runner import apply_sensor_result
from tests.fixtures.platform import Platform

SENSOR = "replication_audit_file_sensor"


def tick(defs, platform: Platform, instance, cursor):
    ctx = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=build_resources(platform.spec)
    )
    result = defs.resolve_sensor_def(SENSOR)(ctx)
    assert isinstance(result, dg.SensorResult)
    return result


def test_every_bad_line_is_refused_with_its_reason_and_good_lines_proceed(platform: Platform) -> None:
    platform.write("events", "dt=1", "a.csv", "1")
    spec = platform.spec
    src = platform.source("events")
    gcs = platform.root / "gcs" / "events"
    text = "\n".join([
        "# comment lines and blank lines are ignored",
        "",
        f"{src}/dt=1 {gcs}/dt=1",                       # 3 good
        f"{src}/dt=1",                                  # 4 malformed: one field
        f"{src}/dt=1 {gcs}/dt=1 extra",                 # 5 malformed: three fields
        f"{src}/../events/dt=1 {gcs}/dt=1",             # 6 ..
        f"{src}/dt=1 {gcs}/../x/dt=1",                  # 7 .. in destination
        f"/etc/passwd {gcs}/dt=1",                      # 8 unknown source root
        f"{src}/dt=1 /tmp/elsewhere/dt=1",              # 9 unknown destination root
        f"{src}/dt=1 {gcs}/dt=2",                       # 10 partition mismatch
        f"{src}/not_a_partition {gcs}/not_a_partition", # 11 not matching dt=*
        f"relative/dt=1 {gcs}/dt=1",                    # 12 relative path
        f"file://{src}/dt=1 file://{platform.root}/dr/events/dt=1",  # 13 good, URIs, dr target
    ])
    accepted, rejected = parse_audit_text(resolve(spec), text)
    assert [(a.line_no, a.dataset, a.partition, a.target) for a in accepted] == [
        (3, "events", "dt=1", "gcs"), (13, "events", "dt=1", "dr"),
    ]
    reasons = {r.line_no: r.reason for r in rejected}
    assert sorted(reasons) == [4, 5, 6, 7, 8, 9, 10, 11, 12]
    assert "malformed pair" in reasons[4] and "malformed pair" in reasons[5]
    assert "'..'" in reasons[6] and "'..'" in reasons[7]
    assert "unknown source root" in reasons[8]
    assert "unknown destination root" in reasons[9]
    assert "does not match" in reasons[10]
    assert "not a partition directory" in reasons[11]
    assert "absolute" in reasons[12]


def test_audit_file_runs_then_archives_only_after_success(platform: Platform, instance) -> None:
    platform.write("legacy", "part_1", "a", "1")
    platform.write("legacy", "part_2", "b", "2")
    src, dst = platform.source("legacy"), platform.root / "gcs" / "legacy"
    audit = platform.audit(
        "folders_to_copy_20261120T1200",
        f"{src}/part_1 {dst}/part_1\n{src}/part_2 {dst}/part_2\n{src}/../x {dst}/x\n",
    )
    defs = build_definitions(platform.spec_path)

    first = tick(defs, platform, instance, None)
    assert sorted(r.partition_key for r in first.run_requests) == ["part_1", "part_2"]
    assert all(r.tags["replication/audit_file"] == audit.name for r in first.run_requests)
    assert {r.partitions_def_name for r in first.dynamic_partitions_requests} == {"legacy_copies"}
    rejected_events = [json.loads(x) for x in platform.outbox()]
    assert rejected_events[0]["event"] == "audit_lines_rejected"
    assert rejected_events[0]["rejected"][0]["line_no"] == 3
    # runs not finished yet: the file stays
    second = tick(defs, platform, instance, first.cursor)
    assert second.run_requests == [] and audit.exists()

    # run only one of the two copies: still not archived
    part1 = dg.SensorResult(
        run_requests=[r for r in first.run_requests if r.partition_key == "part_1"],
        dynamic_partitions_requests=first.dynamic_partitions_requests,
    )
    assert all(r.success for r in apply_sensor_result(defs, instance, part1, sensor_name=SENSOR))
    third = tick(defs, platform, instance, second.cursor)
    assert audit.exists()

    part2 = dg.SensorResult(run_requests=[r for r in first.run_requests if r.partition_key == "part_2"])
    assert all(r.success for r in apply_sensor_result(defs, instance, part2, sensor_name=SENSOR))
    fourth = tick(defs, platform, instance, third.cursor)
    archive = platform.root / "audit" / "archive"
    assert not audit.exists()
    assert (archive / audit.name).exists()
    rejected = json.loads((archive / (audit.name + ".rejected.json")).read_text())
    assert rejected[0]["line_no"] == 3 and "'..'" in rejected[0]["reason"]
    assert AuditState.decode(fourth.cursor).pending == {}
    assert (platform.root / "gcs" / "legacy" / "part_2" / "b").read_text() == "2"


def test_failed_copy_keeps_the_audit_file_and_reports_once(platform: Platform, instance) -> None:
    platform.write("legacy", "part_1", "a", "1")
    src, dst = platform.source("legacy"), platform.root / "gcs" / "legacy"
    # the destination partition is a file: the copy cannot succeed
    Path(dst).mkdir(parents=True)
    (Path(dst) / "part_1").write_text("in the way")
    audit = platform.audit("folders_to_copy_1", f"{src}/part_1 {dst}/part_1\n")
    defs = build_definitions(platform.spec_path)
    first = tick(defs, platform, instance, None)
    launched = apply_sensor_result(defs, instance, first, sensor_name=SENSOR)
    assert [r.success for r in launched] == [False]
    second = tick(defs, platform, instance, first.cursor)
    third = tick(defs, platform, instance, second.cursor)
    assert audit.exists()
    kept = [json.loads(x) for x in platform.outbox() if "audit_file_kept" in x]
    assert len(kept) == 1 and kept[0]["failed"] == ["legacy:part_1"]
    # fixed and re-run (e.g. from the UI): the next tick archives it
    (Path(dst) / "part_1").unlink()
    rerun = dg.SensorResult(run_requests=list(first.run_requests))
    assert all(r.success for r in apply_sensor_result(defs, instance, rerun, sensor_name=None))
    tick(defs, platform, instance, third.cursor)
    assert not audit.exists()


def test_audit_line_already_copied_by_the_change_sensor_requests_nothing(
    platform: Platform, instance
) -> None:
    platform.write("events", "dt=1", "a.csv", "1")
    defs = build_definitions(platform.spec_path)
    change = defs.resolve_sensor_def("replication_change_sensor")(
        dg.build_sensor_context(instance=instance, definitions=defs)
    )
    apply_sensor_result(defs, instance, change, sensor_name="replication_change_sensor")
    src, dst = platform.source("events"), platform.root / "gcs" / "events"
    audit = platform.audit("folders_to_copy_2", f"{src}/dt=1 {dst}/dt=1\n")
    result = tick(defs, platform, instance, None)
    assert result.run_requests == []
    assert not audit.exists()  # its only copy had already succeeded


def test_missing_source_partition_is_refused(platform: Platform, instance) -> None:
    src, dst = platform.source("events"), platform.root / "gcs" / "events"
    platform.audit("folders_to_copy_3", f"{src}/dt=9 {dst}/dt=9\n")
    defs = build_definitions(platform.spec_path)
    result = tick(defs, platform, instance, None)
    assert result.run_requests == []
    events = [json.loads(x) for x in platform.outbox()]
    assert events[0]["rejected"][0]["reason"].startswith("source directory is missing")


def test_two_audit_files_naming_one_partition_in_one_tick_request_one_run(
    platform: Platform, instance
) -> None:
    """Two audit files arriving together that name the same partition: each file's group saw
    no run yet (the first request is not launched until the tick ends), so the tick requested
    the same copy twice under two run keys. Review finding; failed before."""
    platform.write("legacy", "part_1", "a", "1")
    src, dst = platform.source("legacy"), platform.root / "gcs" / "legacy"
    first_file = platform.audit("folders_to_copy_1", f"{src}/part_1 {dst}/part_1\n")
    second_file = platform.audit("folders_to_copy_2", f"{src}/part_1 {dst}/part_1\n")
    defs = build_definitions(platform.spec_path)
    first = tick(defs, platform, instance, None)
    assert [r.partition_key for r in first.run_requests] == ["part_1"]
    assert all(r.success for r in apply_sensor_result(defs, instance, first, sensor_name=SENSOR))
    tick(defs, platform, instance, first.cursor)
    assert not first_file.exists() and not second_file.exists()  # the one run finished both


def test_a_refused_audit_line_with_credentials_is_reported_without_them(
    platform: Platform, instance
) -> None:
    """A line naming ``s3://KEY:SECRET@bucket/...`` (an unknown root) was refused with the
    line and the path as written: the secret went to the sensor's log, the notifier (chat,
    Kafka) and ``<file>.rejected.json`` (the log line is built from the same rejection).
    Review finding; failed before."""
    dst = platform.root / "gcs" / "events"
    platform.audit("folders_to_copy_4", f"s3://AKIAEXAMPLE:s3cr3t-Value@bkt/dt=1 {dst}/dt=1\n")
    defs = build_definitions(platform.spec_path)
    tick(defs, platform, instance, None)
    events = [json.loads(x) for x in platform.outbox()]
    assert events[0]["event"] == "audit_lines_rejected"
    assert "unknown source root" in events[0]["rejected"][0]["reason"]
    archived = platform.root / "audit" / "archive" / "folders_to_copy_4.rejected.json"
    for text in ("\n".join(platform.outbox()), archived.read_text()):
        assert "s3cr3t-Value" not in text
        assert "s3://AKIAEXAMPLE:***@bkt/dt=1" in text
