"""The change sensor through build_sensor_context: new, changed, unchanged, missed ticks, paging."""

from __future__ import annotations

import os
import time

import dagster as dg

from platform_assets.datasets import resolve
from platform_assets.definitions import build_definitions
from platform_assets.replication.change_sensor import ChangeState, evaluate_changes
from platform_assets.replication.names import TAG_FINGERPRINT
from platform_assets.replication.sensor_state import fingerprint_scope, open_sensor_store
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


def stored(spec, dataset: str) -> dict[str, str]:
    """The fingerprints the sensor keeps for ``dataset`` in the state store (any lineage)."""
    store = open_sensor_store(spec)
    try:
        return {k: v.split(" ")[0] for k, _, _, v, _ in store.sensor_rows(fingerprint_scope(dataset))
                if v is not None}
    finally:
        store.close()


def test_cursor_stays_small_the_fingerprints_are_in_the_state_store(platform: Platform) -> None:
    for i in range(500):
        platform.write("events", f"dt={i:04d}", "f.csv", "x")
    ev = evaluate_changes(resolve(platform.spec), ChangeState())
    text = ev.state.encode()
    assert len(text) < 300 and not text.startswith("z1:")  # a position, whatever the size
    assert ChangeState.decode(text) == ev.state
    fps = stored(platform.spec, "events")
    assert len(fps) == 500
    assert fps["dt=0007"] == next(r.tags[TAG_FINGERPRINT] for r in ev.run_requests
                                  if r.partition_key == "dt=0007")


def test_removed_partition_is_forgotten(platform: Platform, instance) -> None:
    import shutil

    platform.write("events", "dt=1", "a.csv", "1")
    platform.write("events", "dt=2", "b.csv", "2")
    defs = build_definitions(platform.spec_path)
    first = tick(defs, instance, None)
    shutil.rmtree(platform.source("events") / "dt=2")
    second = tick(defs, instance, first.cursor)
    assert second.run_requests == []
    assert set(stored(platform.spec, "events")) == {"dt=1"}
    platform.write("events", "dt=2", "b.csv", "2")  # back: a new partition again
    assert requested(tick(defs, instance, second.cursor)) == [("events", "dt=2")]


def test_a_tick_whose_cursor_never_landed_leaves_no_trace(platform: Platform, instance) -> None:
    """The daemon dies after evaluating a tick, before storing its cursor: the state store
    holds that tick's writes, but a tick from the old cursor must still find the change, and
    so must a later tick that did not look at that partition again."""
    for i in range(6):
        platform.write("events", f"dt={i}", "a.csv", str(i))
    defs = build_definitions(platform.spec_path)
    base = tick(defs, instance, None).cursor
    base = tick(defs, instance, base).cursor  # the first lineage's tick landed
    platform.write("events", "dt=3", "a.csv", "changed", age_s=30)
    lost = tick(defs, instance, base)  # evaluated, never committed
    assert requested(lost) == [("events", "dt=3")]
    again = tick(defs, instance, base)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in lost.run_requests]
    # a tick from the old cursor that stops before dt=3 (page of 2 in rotation order) ...
    rs = resolve(platform.spec)
    ev = evaluate_changes(rs, ChangeState.decode(base), max_partitions=2, instance=instance)
    assert ev.run_requests == [] and ev.scanned == 2
    # ... put the lost write back, so the ticks after it still find dt=3
    found = []
    state = ev.state
    for _ in range(3):
        ev = evaluate_changes(rs, state, max_partitions=2, instance=instance)
        found += [r.partition_key for r in ev.run_requests]
        state = ev.state
    assert found == ["dt=3"]


def test_new_file_in_a_partition_is_found_first_even_with_a_small_page(platform: Platform) -> None:
    """The partition directory's mtime (from the listing, free) hints at a new file: found in
    the next tick, however far the rotation is from it."""
    for i in range(40):
        platform.write("events", f"dt={i:02d}", "a.csv", str(i))
    rs = resolve(platform.spec)
    state = evaluate_changes(rs, ChangeState()).state
    platform.write("events", "dt=37", "b.csv", "new file")
    ev = evaluate_changes(rs, state, max_partitions=3)
    assert [r.partition_key for r in ev.run_requests] == ["dt=37"] and ev.hinted == 1
    assert evaluate_changes(rs, ev.state, max_partitions=3).run_requests == []


def test_a_first_deployment_backlog_is_paced(tmp_path, instance) -> None:
    from tests.fixtures.platform import SPEC_TEMPLATE

    text = SPEC_TEMPLATE.format(page=100).replace(
        "tick_budget_s: 25}", "tick_budget_s: 25, max_runs_per_tick: 3, max_queued_runs: 5}")
    p = make_platform(tmp_path / "p", spec_text=text)
    for i in range(8):
        p.write("events", f"dt={i}", "f.csv", str(i))
    defs = build_definitions(p.spec_path)
    first = tick(defs, instance, None)
    assert len(first.run_requests) == 3  # not all 8 at once
    adds = [k for r in first.dynamic_partitions_requests for k in r.partition_keys]
    assert sorted(adds) == sorted(r.partition_key for r in first.run_requests if r.partition_key != "all")
    # the runs wait to start: the queue bound (5) lets only 2 more in
    for req in first.run_requests:
        instance.create_run_for_job(defs.get_job_def(req.job_name), tags=req.tags,
                                    status=dg.DagsterRunStatus.NOT_STARTED)
    second = tick(defs, instance, first.cursor)
    assert len(second.run_requests) == 2
    for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.NOT_STARTED])):
        instance.report_run_canceled(run)
    seen = [r.partition_key for r in first.run_requests + second.run_requests]
    cursor = second.cursor
    for _ in range(3):
        result = tick(defs, instance, cursor)
        assert len(result.run_requests) <= 3
        seen += [r.partition_key for r in result.run_requests]
        cursor = result.cursor
    assert sorted(seen) == [f"dt={i}" for i in range(8)]  # nothing lost, none twice
    assert tick(defs, instance, cursor).run_requests == []


def _history(instance, key: dg.AssetKey, items: list[tuple[str, str]]) -> None:
    for partition, fp in items:
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key=key, partition=partition,
            metadata={"source_fingerprint": fp, "copy_finished": dg.MetadataValue.timestamp(time.time())}))


def test_seeding_a_long_history_is_bounded_per_tick(tmp_path, instance) -> None:
    from tests.fixtures.platform import SPEC_TEMPLATE

    text = SPEC_TEMPLATE.format(page=1000).replace(
        "tick_budget_s: 25}", "tick_budget_s: 25, seed_records_per_tick: 100}")
    p = make_platform(tmp_path / "p", spec_text=text)
    for i in range(60):
        p.write("events", f"dt={i:02d}", "f.csv", str(i))
    rs = resolve(p.spec)
    view = rs["events"]
    fps = {f"dt={i:02d}": view.fingerprint(f"dt={i:02d}").fingerprint for i in range(60)}
    instance.add_dynamic_partitions("events_copies", list(fps))
    gcs, dr = view.replica_keys
    _history(instance, gcs, [(k, "old") for k in fps])  # an older copy of every partition
    _history(instance, gcs, list(fps.items()))  # then the current content
    _history(instance, dr, [(k, v) for k, v in fps.items() if k != "dt=05"])
    _history(instance, dr, [("dt=07", "old")])  # the dr hop's newest copy of dt=07 is stale
    ticks = []
    state = ChangeState()
    while True:
        ev = evaluate_changes(rs, state, instance=instance)
        ticks.append(ev)
        state = ev.state
        if not ev.seeding:
            break
        assert ev.run_requests == [] and ev.seeded_records <= 100
    assert len(ticks) == 2 and ticks[0].seeding  # 120 + 61 records, 100 per tick
    assert len(ChangeState.decode(state.encode()).encode()) < 300
    # only what some replica does not hold at the current content is copied again
    requested_now = sorted(r.partition_key for r in ticks[-1].run_requests)
    assert requested_now == ["dt=05", "dt=07"]  # (customers has no file: nothing to copy)


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


# ------------------------------------------------------------------ the order of work, as tables
def test_classify_sorts_a_listing_into_new_hinted_rotation_and_gone() -> None:
    from platform_assets.replication.change_sensor import classify_partitions

    listing = [("dt=1", 100), ("dt=2", 200), ("dt=3", 300), ("dt=4", 400), ("dt=5", 500),
               ("dt=6", 600)]
    recorded = {
        "dt=1": "aa 100 0",  # unchanged: the rotation's
        "dt=2": "bb 199 0",  # the directory's mtime moved: hinted
        "dt=3": "cc 300 1",  # files were held back: hinted until they count
        "dt=4": "dd ? 0",  # seeded, the directory's time unknown yet: hinted
        "dt=5": "ee 500 0",  # a failed copy due again: first
        "dt=9": "zz 900 0",  # no longer listed: gone
    }
    c = classify_partitions(([p for p, _ in listing], [m for _, m in listing]), recorded,
                            due={"dt=5", "dt=8"})
    assert c.first == ["dt=5", "dt=6"]  # dt=6 is new; dt=8 is due but not listed
    assert c.hinted == ["dt=2", "dt=3", "dt=4"]
    assert c.rotation == ["dt=1"]
    assert c.gone == ["dt=9"]
    assert c.tokens == {f"dt={i}": str(i * 100) for i in range(1, 7)}


def test_classify_without_directory_mtimes_hints_nothing_and_rotates() -> None:
    from platform_assets.replication.change_sensor import classify_partitions

    c = classify_partitions((["a", "b"], [None, None]), {"a": "aa n 0", "b": "bb n 0"}, set())
    assert (c.first, c.hinted, c.rotation, c.gone) == ([], [], ["a", "b"], [])
    assert c.tokens == {"a": "n", "b": "n"}


def test_rotation_goes_on_after_the_position_across_datasets_and_wraps() -> None:
    from platform_assets.replication.change_sensor import _rotation

    rot = {"a": ["1", "2", "3"], "b": [], "c": ["1", "2"]}
    names = ["a", "b", "c"]
    assert list(_rotation(names, rot, None)) == [("a", "1"), ("a", "2"), ("a", "3"), ("c", "1"), ("c", "2")]
    assert list(_rotation(names, rot, ("a", "2"))) == [("a", "3"), ("c", "1"), ("c", "2"), ("a", "1"), ("a", "2")]
    # the position's partition or dataset is gone: the next one after it in sorted order
    assert list(_rotation(names, rot, ("a", "25"))) == [("a", "3"), ("c", "1"), ("c", "2"), ("a", "1"), ("a", "2")]
    assert list(_rotation(names, rot, ("bb", "x"))) == [("c", "1"), ("c", "2"), ("a", "1"), ("a", "2"), ("a", "3")]
    assert list(_rotation(names, rot, ("z", "x"))) == [("a", "1"), ("a", "2"), ("a", "3"), ("c", "1"), ("c", "2")]


def test_the_budget_stops_before_a_chunk_that_would_overrun_it_and_the_rotation_goes_on(
    platform: Platform, monkeypatch
) -> None:
    """A chunk of fingerprints is not started when the last one's duration says it would end
    past ``tick_budget_s``; the next tick goes on after the position in the cursor, and finds
    a change the directory's mtime does not show (a file rewritten in place) when it gets
    there."""
    from platform_assets.datasets import DatasetView

    for i in range(200):
        platform.write("events", f"dt={i:03d}", "f.csv", str(i))
    rs = resolve(platform.spec)
    state = evaluate_changes(rs, ChangeState(), workers=1).state
    state = evaluate_changes(rs, state, workers=1, max_partitions=1).state  # commits the first
    # in place, same size, and the directory's mtime put back: only the rotation sees it
    part = platform.source("events") / "dt=150"
    dir_stat = part.stat()
    f = part / "f.csv"
    st = f.stat()
    f.write_text("999")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    os.utime(part, ns=(dir_stat.st_atime_ns, dir_stat.st_mtime_ns))

    t = [0.0]
    real = DatasetView.fingerprint

    def slow(self, partition, *, now=None):  # each fingerprint takes 20 ms of the fake clock
        t[0] += 0.02
        return real(self, partition, now=now)

    monkeypatch.setattr(DatasetView, "fingerprint", slow)
    order = [("customers", "all")] + [("events", f"dt={i:03d}") for i in range(200)]
    positions, found, scanned = [], [], []
    for _ in range(2):  # chunks of 64 take 1.28 s: two fit in 3 s, then smaller ones
        ev = evaluate_changes(rs, state, workers=1, budget_s=3.0, clock=lambda: t[0])
        # the chunks after the second shrink to half the time left each: the tick uses its
        # budget and ends within it
        assert 128 < ev.scanned < 150 and ev.elapsed_s <= 3.0 and not ev.complete_cycle
        positions.append(ev.state.position)
        scanned.append(ev.scanned)
        found += [r.partition_key for r in ev.run_requests]
        state, t[0] = ev.state, 0.0
    # sorted order: customers/all, events/dt=000 ... dt=199, from after customers/all (the
    # committing tick's one partition), round to the start
    assert positions == [order[scanned[0]], order[(scanned[0] + scanned[1]) % len(order)]]
    assert found == ["dt=150"]


def _age_tree(root, ns: int) -> None:
    """Every directory under ``root`` (and ``root``) last changed at ``ns``."""
    for dirpath, _, _ in os.walk(root):
        os.utime(dirpath, ns=(ns, ns))


def test_ticks_from_the_kept_listing_find_new_removed_and_changed_partitions(platform: Platform) -> None:
    """The sensor keeps its local listings between ticks (ListingCache): the dataset root is
    not read again while its mtime stands, only its partition directories stat'ed. A new
    partition, a removed one and a file landing in a third are all found in the next tick."""
    import shutil

    from replicator.fingerprint import ListingCache

    for i in range(5):
        platform.write("events", f"dt={i}", "f.csv", str(i), age_s=3600)
    root = platform.source("events")
    old_ns = time.time_ns() - 3600 * 10**9
    _age_tree(root, old_ns)
    rs, cache = resolve(platform.spec), ListingCache()
    state = evaluate_changes(rs, ChangeState(), listing_cache=cache).state
    state = evaluate_changes(rs, state, listing_cache=cache).state  # commits the first
    hits = cache.hits
    ev = evaluate_changes(rs, state, listing_cache=cache, max_partitions=1)
    assert ev.run_requests == [] and cache.hits > hits  # the kept listing answered
    platform.write("events", "dt=2", "g.csv", "new file", age_s=600)  # moves dt=2's mtime only
    platform.write("events", "dt=7", "f.csv", "new partition", age_s=600)  # moves the root's
    shutil.rmtree(root / "dt=4")
    ev = evaluate_changes(rs, ev.state, listing_cache=cache, max_partitions=2)
    assert sorted(r.partition_key for r in ev.run_requests) == ["dt=2", "dt=7"]
    assert ev.new_partitions == {"events": ["dt=7"]} and ev.hinted == 1
    assert set(stored(platform.spec, "events")) == {f"dt={i}" for i in (0, 1, 2, 3, 7)}


def test_known_changes_are_fingerprinted_past_the_budget_the_rotation_is_not(
    platform: Platform, monkeypatch
) -> None:
    """On a loaded machine the listing can eat the tick's budget. Partitions the listing shows
    changed still get half the budget after it, so they are requested in that tick; the
    rotation, which only looks for changes the mtime does not show, gets nothing."""
    from platform_assets.datasets import DatasetView

    for i in range(300):
        platform.write("events", f"dt={i:03d}", "f.csv", str(i), age_s=3600)
    rs = resolve(platform.spec)
    state = evaluate_changes(rs, ChangeState(), workers=1).state
    state = evaluate_changes(rs, state, workers=1, max_partitions=1).state  # commits the first
    changed = [f"dt={i:03d}" for i in range(0, 300, 3)]  # 100: two chunks of 64
    for p in changed:
        platform.write("events", p, "g.csv", "new", age_s=600)

    t = [0.0]
    real = DatasetView.fingerprint
    real_listing = DatasetView.partition_listing

    def slow_listing(self, cache=None):  # the listing takes 90% of the 3 s budget
        if self.name == "events":
            t[0] += 2.7
        return real_listing(self, cache)

    def slow(self, partition, *, now=None):  # each fingerprint takes 10 ms of the fake clock
        t[0] += 0.01
        return real(self, partition, now=now)

    monkeypatch.setattr(DatasetView, "partition_listing", slow_listing)
    monkeypatch.setattr(DatasetView, "fingerprint", slow)
    ev = evaluate_changes(rs, state, workers=1, budget_s=3.0, clock=lambda: t[0])
    assert sorted(r.partition_key for r in ev.run_requests) == changed
    assert ev.hinted == 100 and 100 <= ev.scanned < 128  # the second chunk ran on, no third
    assert ev.elapsed_s <= 2.7 + 3.0 / 2


def test_the_state_kept_from_the_last_tick_is_used_only_while_it_is_the_stores(platform: Platform) -> None:
    """The sensor keeps the rows its last tick left in memory (StateMirror): the next tick from
    that tick's cursor reads no rows and finds the same changes. A tick from another cursor
    (the last one never landed), or after another process wrote rows (its tick landed or
    not), reads the store, so what it finds is what a tick without memory finds."""
    from platform_assets.replication.sensor_state import StateMirror

    for i in range(4):
        platform.write("events", f"dt={i}", "f.csv", str(i), age_s=3600)
    rs, mirror = resolve(platform.spec), StateMirror()
    s1 = evaluate_changes(rs, ChangeState(), state_mirror=mirror).state
    ev = evaluate_changes(rs, s1, state_mirror=mirror)
    assert ev.mirrored == 2 and ev.run_requests == []  # customers and events, from memory
    platform.write("events", "dt=1", "g.csv", "new", age_s=600)
    s2 = ev.state
    ev = evaluate_changes(rs, s2, state_mirror=mirror)
    assert ev.mirrored == 2 and [r.partition_key for r in ev.run_requests] == ["dt=1"]
    # that tick's cursor never landed: re-evaluated from s2, from the store, the same request
    again = evaluate_changes(rs, s2, state_mirror=mirror)
    assert again.mirrored == 0 and [r.partition_key for r in again.run_requests] == ["dt=1"]
    s3 = again.state
    # another code server evaluates from s3 and finds a file rewritten in place (only its
    # rotation sees that), writes its rows, and its cursor never lands
    part = platform.source("events") / "dt=2"
    dir_st, f = part.stat(), part / "f.csv"
    st = f.stat()
    f.write_text("9")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    os.utime(part, ns=(dir_st.st_atime_ns, dir_st.st_mtime_ns))
    other = evaluate_changes(rs, s3)
    assert [r.partition_key for r in other.run_requests] == ["dt=2"]
    # this process, from s3 (its own cursor), with a small tick that does not reach dt=2:
    # its memory is no longer the store's rows, so the other's row is put back...
    ev = evaluate_changes(rs, s3, state_mirror=mirror, max_partitions=1)
    assert ev.mirrored == 1 and ev.run_requests == []  # customers: nobody wrote it since
    # ...and the change is requested by a later tick, also by a restarted process (no memory:
    # the store's rows must say dt=2 was not recorded)
    ev = evaluate_changes(rs, ev.state)
    assert [r.partition_key for r in ev.run_requests] == ["dt=2"]
    assert evaluate_changes(rs, ev.state, state_mirror=mirror).run_requests == []
