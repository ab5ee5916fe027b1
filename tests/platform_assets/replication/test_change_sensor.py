"""The change sensor through build_sensor_context: new, changed, unchanged, missed ticks, paging."""

from __future__ import annotations

import os
import time

import dagster as dg

from platform_assets.datasets import resolve
from platform_assets.definitions import build_definitions
from platform_assets.replication.change_sensor import ChangeState, evaluate_changes
from platform_assets.replication.names import TAG_FINGERPRINT
from platform_assets.runner import apply_sensor_result
from tests.fixtures.platform import Platform, make_platform

SENSOR = "replication_change_sensor"


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    result = defs.get_sensor_def(SENSOR)(ctx)
    assert isinstance(result, dg.SensorResult)
    return result


def requested(result: dg.SensorResult) -> list[tuple[str, str]]:
    return sorted((r.tags["replication/dataset"], r.partition_key) for r in result.run_requests)


def test_first_tick_requests_every_partition_and_adds_them(platform: Platform, instance) -> None:
    platform.write("events", "dt=2026-01-01", "a.csv", "1")
    platform.write("events", "dt=2026-01-02", "b.csv", "22")
    platform.write("customers", "", "c.csv", "333")
    platform.write("legacy", "part_1", "x", "async datasets are the audit sensor's")
    defs = build_definitions(platform.spec_path)

    result = tick(defs, instance, None)

    assert requested(result) == [
        ("customers", "all"), ("events", "dt=2026-01-01"), ("events", "dt=2026-01-02"),
    ]
    adds = {r.partitions_def_name: sorted(r.partition_keys) for r in result.dynamic_partitions_requests}
    assert adds == {"events_copies": ["dt=2026-01-01", "dt=2026-01-02"]}
    events = next(r for r in result.run_requests if r.tags["replication/dataset"] == "events")
    assert set(events.asset_selection) == {dg.AssetKey(["gcs", "events"]), dg.AssetKey(["dr", "events"])}
    assert all(r.run_key and r.tags[TAG_FINGERPRINT] in r.run_key for r in result.run_requests)


def test_unchanged_tick_requests_nothing_and_changed_partition_only(platform: Platform, instance) -> None:
    platform.write("events", "dt=1", "a.csv", "1")
    platform.write("events", "dt=2", "b.csv", "2")
    defs = build_definitions(platform.spec_path)
    first = tick(defs, instance, None)
    assert len(first.run_requests) == 2

    second = tick(defs, instance, first.cursor)
    assert second.run_requests == []
    assert second.dynamic_partitions_requests == []

    platform.write("events", "dt=2", "b.csv", "changed", age_s=60)
    third = tick(defs, instance, second.cursor)
    assert requested(third) == [("events", "dt=2")]


def test_missed_ticks_lose_nothing(platform: Platform, instance) -> None:
    platform.write("events", "dt=1", "a.csv", "1")
    defs = build_definitions(platform.spec_path)
    first = tick(defs, instance, None)
    # many changes while the sensor was not running: one tick finds all of them
    platform.write("events", "dt=1", "a.csv", "11", age_s=50)
    platform.write("events", "dt=2", "new.csv", "2")
    platform.write("events", "dt=3", "new.csv", "3")
    platform.write("customers", "", "c.csv", "c")
    later = tick(defs, instance, first.cursor)
    assert requested(later) == [
        ("customers", "all"), ("events", "dt=1"), ("events", "dt=2"), ("events", "dt=3"),
    ]


def test_reevaluated_tick_is_idempotent_and_content_returning_gets_new_key(
    platform: Platform, instance
) -> None:
    a = platform.write("events", "dt=1", "a.csv", "1")
    defs = build_definitions(platform.spec_path)
    first = tick(defs, instance, None)
    again = tick(defs, instance, None)  # the daemon re-evaluates a tick from the same cursor
    assert [r.run_key for r in first.run_requests] == [r.run_key for r in again.run_requests]

    st = a.stat()
    a.write_text("2")
    second = tick(defs, instance, first.cursor)
    a.write_text("1")
    os.utime(a, ns=(st.st_mtime_ns, st.st_mtime_ns))  # back to the first content exactly
    third = tick(defs, instance, second.cursor)
    assert len(third.run_requests) == 1
    assert third.run_requests[0].run_key != first.run_requests[0].run_key


def test_files_younger_than_min_age_wait_until_old_enough(tmp_path, instance) -> None:
    from tests.fixtures.platform import SPEC_TEMPLATE

    text = SPEC_TEMPLATE.format(page=100).replace('exclude: ["*.tmp"]', 'exclude: ["*.tmp"]\n    min_age_s: 60')
    p = make_platform(tmp_path / "p", spec_text=text)
    p.write("events", "dt=1", "old.csv", "1", age_s=600)
    young = p.write("events", "dt=1", "young.csv", "2", age_s=0)
    defs = build_definitions(p.spec_path)
    first = tick(defs, instance, None)
    assert requested(first) == [("events", "dt=1")]
    assert tick(defs, instance, first.cursor).run_requests == []
    t = time.time() - 120
    os.utime(young, (t, t))  # the file has aged: now it counts
    assert requested(tick(defs, instance, first.cursor)) == [("events", "dt=1")]


def test_temporary_and_excluded_files_are_not_changes(platform: Platform, instance) -> None:
    platform.write("events", "dt=1", "a.csv", "1")
    defs = build_definitions(platform.spec_path)
    first = tick(defs, instance, None)
    platform.write("events", "dt=1", "b.csv._COPYING_", "in flight")
    platform.write("events", "dt=1", "scratch.tmp", "excluded")
    assert tick(defs, instance, first.cursor).run_requests == []


def test_paging_covers_every_partition_once_within_the_page_size(tmp_path, instance) -> None:
    p = make_platform(tmp_path / "p", page=3)
    for i in range(7):
        p.write("events", f"dt={i}", "f.csv", str(i))
    defs = build_definitions(p.spec_path)
    cursor = None
    seen: list[str] = []
    for _ in range(3):  # 7 new event partitions + customers(no files: empty) in pages of 3
        result = tick(defs, instance, cursor)
        assert len(result.run_requests) <= 3
        seen += [r.partition_key for r in result.run_requests]
        cursor = result.cursor
    assert sorted(seen) == [f"dt={i}" for i in range(7)]
    # once everything is known, ticks walk through the known partitions from the cursor
    p.write("events", "dt=6", "f.csv", "changed", age_s=30)
    found = []
    for _ in range(3):
        result = tick(defs, instance, cursor)
        found += [r.partition_key for r in result.run_requests]
        cursor = result.cursor
    assert found == ["dt=6"]


def test_time_budget_stops_a_tick_early_and_the_next_goes_on(platform: Platform) -> None:
    for i in range(300):
        platform.write("events", f"dt={i:03d}", "f.csv", str(i))
    spec = platform.spec
    clock_values = iter([0.0] + [100.0] * 10_000)  # the budget is spent after the first chunk
    ev = evaluate_changes(resolve(spec), ChangeState(), budget_s=1.0, workers=2, clock=lambda: next(clock_values))
    assert 0 < ev.scanned < 300 and not ev.complete_cycle
    ev2 = evaluate_changes(resolve(spec), ev.state, workers=2)
    assert ev2.complete_cycle
    got = {r.partition_key for r in ev.run_requests} | {r.partition_key for r in ev2.run_requests}
    assert len(got) == 300


def test_cursor_is_compact_and_round_trips(platform: Platform) -> None:
    for i in range(500):
        platform.write("events", f"dt={i:04d}", "f.csv", "x")
    ev = evaluate_changes(resolve(platform.spec), ChangeState())
    text = ev.state.encode()
    assert text.startswith("z1:") and len(text) < 20_000
    assert ChangeState.decode(text).fingerprints == ev.state.fingerprints


def test_removed_partition_is_forgotten(platform: Platform, instance) -> None:
    import shutil

    platform.write("events", "dt=1", "a.csv", "1")
    platform.write("events", "dt=2", "b.csv", "2")
    defs = build_definitions(platform.spec_path)
    first = tick(defs, instance, None)
    shutil.rmtree(platform.source("events") / "dt=2")
    second = tick(defs, instance, first.cursor)
    assert second.run_requests == []
    assert "dt=2" not in ChangeState.decode(second.cursor).fingerprints["events"]


def test_empty_cursor_is_seeded_from_materializations(platform: Platform, instance) -> None:
    platform.write("events", "dt=1", "a.csv", "1")
    platform.write("customers", "", "c.csv", "c")
    defs = build_definitions(platform.spec_path)
    first = tick(defs, instance, None)
    launched = apply_sensor_result(defs, instance, first, sensor_name=SENSOR)
    assert [r.success for r in launched] == [True, True]
    # the sensor is reset (cursor lost): nothing already copied is copied again
    assert tick(defs, instance, None).run_requests == []
    platform.write("events", "dt=2", "b.csv", "2")
    assert requested(tick(defs, instance, None)) == [("events", "dt=2")]


def test_copy_that_failed_for_good_is_requested_again_until_it_succeeds(
    platform: Platform, instance
) -> None:
    platform.write("events", "dt=1", "a.csv", "1")
    blocker = platform.root / "gcs" / "events"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the replica directory must go")  # every copy fails
    defs = build_definitions(platform.spec_path)
    spec = platform.spec

    first = tick(defs, instance, None)
    assert requested(first) == [("events", "dt=1")]
    assert [r.success for r in apply_sensor_result(defs, instance, first, sensor_name=SENSOR)] == [False]

    # the source did not change; the failure is noted and waits for its delay (300 s)
    second = tick(defs, instance, first.cursor)
    assert second.run_requests == []
    state = ChangeState.decode(second.cursor)
    fp, failures, not_before, _ = state.failed["events"]["dt=1"]
    assert failures == 1 and not_before > time.time() + 250
    assert fp == first.run_requests[0].tags[TAG_FINGERPRINT]

    later = time.time() + 301
    ev = evaluate_changes(resolve(spec), state, instance=instance, wall_clock=lambda: later)
    assert [(r.partition_key, r.tags["replication/trigger"]) for r in ev.run_requests] == [("dt=1", "retry")]
    assert ev.run_requests[0].run_key != first.run_requests[0].run_key
    # asked again once: not on every tick while that run is pending
    assert evaluate_changes(resolve(spec), ev.state, instance=instance, wall_clock=lambda: later + 60).run_requests == []

    # it fails again: the next delay doubles
    retry = dg.SensorResult(run_requests=ev.run_requests, cursor=ev.state.encode())
    assert [r.success for r in apply_sensor_result(defs, instance, retry, sensor_name=SENSOR)] == [False]
    ev2 = evaluate_changes(resolve(spec), ev.state, instance=instance, wall_clock=lambda: later + 61)
    assert ev2.run_requests == []
    assert ev2.state.failed["events"]["dt=1"][1] == 2
    assert ev2.state.failed["events"]["dt=1"][2] >= later + 61 + 600

    # the destination is repaired: the retry succeeds and the entry is cleared
    blocker.unlink()
    ev3 = evaluate_changes(resolve(spec), ev2.state, instance=instance, wall_clock=lambda: later + 61 + 601)
    assert [r.partition_key for r in ev3.run_requests] == ["dt=1"]
    fixed = dg.SensorResult(run_requests=ev3.run_requests, cursor=ev3.state.encode())
    assert [r.success for r in apply_sensor_result(defs, instance, fixed, sensor_name=SENSOR)] == [True]
    ev4 = evaluate_changes(resolve(spec), ev3.state, instance=instance, wall_clock=lambda: later + 10_000)
    assert ev4.run_requests == [] and ev4.state.failed == {}
    assert (platform.root / "gcs" / "events" / "dt=1" / "a.csv").read_text() == "1"


def test_sensor_records_source_versions_so_only_changed_replica_partitions_are_unsynced(
    platform: Platform, instance
) -> None:
    from dagster._core.definitions.data_version import StaleStatus
    from dagster._utils.test.data_versions import get_stale_status_resolver

    platform.write("events", "dt=1", "a.csv", "1")
    platform.write("events", "dt=2", "b.csv", "2")
    defs = build_definitions(platform.spec_path)
    first = tick(defs, instance, None)
    apply_sensor_result(defs, instance, first, sensor_name=SENSOR)
    source = dg.AssetKey(["onprem", "events"])
    observed = instance.fetch_observations(source, limit=100).records
    assert sorted(r.partition_key for r in observed) == ["dt=1", "dt=2"]

    platform.write("events", "dt=2", "b.csv", "changed", age_s=30)
    second = tick(defs, instance, first.cursor)
    apply_sensor_result(defs, instance, dg.SensorResult(asset_events=second.asset_events))
    newest = instance.fetch_observations(source, limit=1).records[0]
    assert newest.partition_key == "dt=2"
    assert newest.asset_observation.tags["dagster/data_version"] == second.run_requests[0].tags[TAG_FINGERPRINT]
    assert newest.asset_observation.metadata["files"].value == 1

    # sources are external AssetSpecs: the resolver wants AssetsDefinitions
    assets = [dg.AssetsDefinition(specs=[a]) if isinstance(a, dg.AssetSpec) else a for a in defs.assets]
    resolver = get_stale_status_resolver(instance, assets)
    replica = dg.AssetKey(["gcs", "events"])
    assert resolver.get_status(replica, "dt=1") == StaleStatus.FRESH
    assert resolver.get_status(replica, "dt=2") == StaleStatus.STALE
    apply_sensor_result(defs, instance, dg.SensorResult(run_requests=second.run_requests), sensor_name=SENSOR)
    resolver = get_stale_status_resolver(instance, assets)
    assert resolver.get_status(replica, "dt=2") == StaleStatus.FRESH


def test_symlinks_in_a_source_partition_are_skipped_as_the_copy_skips_them(
    platform: Platform, instance
) -> None:
    """A link back to its own partition (a loop) and a link to a file elsewhere: the copy skips
    both, so the fingerprint must too (it once followed links with no loop guard and failed
    the tick, or saw a change the copy would never carry)."""
    platform.write("events", "dt=1", "a.csv", "1")
    part = platform.source("events") / "dt=1"
    outside = platform.root / "elsewhere.csv"
    outside.write_text("not part of the dataset")
    rs = resolve(platform.spec)
    plain = rs["events"].fingerprint("dt=1")
    (part / "loop").symlink_to(part, target_is_directory=True)
    (part / "link.csv").symlink_to(outside)

    linked = rs["events"].fingerprint("dt=1")
    assert (linked.fingerprint, linked.files) == (plain.fingerprint, 1)
    defs = build_definitions(platform.spec_path)
    result = tick(defs, instance, None)
    assert ("events", "dt=1") in requested(result)
    launched = apply_sensor_result(defs, instance, result, sensor_name=SENSOR)
    assert all(r.success for r in launched)
    mat = instance.get_latest_materialization_event(dg.AssetKey(["gcs", "events"]))
    assert mat.asset_materialization.metadata["source_fingerprint"].value == plain.fingerprint
