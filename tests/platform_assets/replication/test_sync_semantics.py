"""Honest sync semantics: a `via` hop records what the hop it copied from held, an unverified
copy blocks the next hop, and per-partition lag is measured, plotted and alerting."""

from __future__ import annotations

import time

import dagster as dg

from platform_assets.datasets import resolve
from platform_assets.definitions import build_definitions
from platform_assets.replication.checks import evaluate_lag
from platform_assets.replication.names import LAG_JOB, LAG_SCHEDULE, partitions_def_name
from replicator.filters import TEMP_PREFIX
from resources.replicator import ReplicatorResource
from tests.fixtures.platform import Platform

GCS = dg.AssetKey(["gcs", "events"])
DR = dg.AssetKey(["dr", "events"])  # copied `via` gcs
PART = "dt=2026-11-20"


def _replicas(defs: dg.Definitions) -> list[dg.AssetsDefinition]:
    return [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.keys & {GCS, DR}]


def _copy(defs, instance, platform: Platform, keys, **resource) -> dg.ExecuteInProcessResult:
    replicator = ReplicatorResource(state_path=str(platform.root / "state.db"), marker="_SUCCESS.json",
                                    **resource)
    return dg.materialize(_replicas(defs), instance=instance, resources={"replicator": replicator},
                          partition_key=PART, selection=list(keys), raise_on_error=False)


def _latest(instance, key) -> dict:
    event = instance.get_latest_materialization_event(key)
    return event.asset_materialization.metadata if event else {}


def test_via_replica_records_the_version_of_the_hop_it_copied_from(platform: Platform, instance) -> None:
    platform.write("events", PART, "a.csv", "v1")
    instance.add_dynamic_partitions(partitions_def_name("events"), [PART])
    defs = build_definitions(platform.spec_path)
    view = resolve(platform.spec)["events"]
    v1 = view.fingerprint(PART).fingerprint
    assert _copy(defs, instance, platform, [GCS, DR]).success
    assert _latest(instance, DR)["source_fingerprint"].value == v1

    platform.write("events", PART, "a.csv", "version two")  # the source moves on
    v2 = view.fingerprint(PART).fingerprint
    assert v2 != v1
    # dr alone: it copies the gcs hop, which still holds v1 -> it must say v1, not v2
    assert _copy(defs, instance, platform, [DR]).success
    assert _latest(instance, DR)["source_fingerprint"].value == v1
    dr_event = instance.get_latest_materialization_event(DR)
    assert dr_event.asset_materialization.tags["dagster/data_version"] == v1  # its data version
    assert (platform.root / "dr" / "events" / PART / "a.csv").read_text() == "v1"
    lag = evaluate_lag(view, view.target("dr"), instance)
    assert not lag.passed and lag.metadata["lagging"].value == PART  # a stale hop looks stale

    assert _copy(defs, instance, platform, [GCS, DR]).success  # the whole chain catches up
    assert _latest(instance, DR)["source_fingerprint"].value == v2
    assert evaluate_lag(view, view.target("dr"), instance).passed


def test_an_unverified_copy_blocks_the_next_hop(platform: Platform, instance) -> None:
    platform.write("events", PART, "a.csv", "x" * 100)
    instance.add_dynamic_partitions(partitions_def_name("events"), [PART])
    defs = build_definitions(platform.spec_path)
    # checked by size only: copy_verified fails, and as a blocking check it stops dr
    result = _copy(defs, instance, platform, [GCS, DR], verify_checksum=False)
    checks = {(e.asset_key, e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    assert checks[(GCS, "copy_verified")] is False
    assert instance.get_latest_materialization_event(DR) is None
    assert not (platform.root / "dr" / "events" / PART).exists()


def test_lag_is_per_partition_warns_then_errors_past_the_freshness_window(
    platform: Platform, instance
) -> None:
    """events: freshness fail_window 6h. A partition behind for minutes fails the check at
    WARN; one behind for 7 h at ERROR; each copy records the lag it caught up."""
    platform.write("events", "dt=1", "a.csv", "recent", age_s=120)
    view = resolve(platform.spec)["events"]
    gcs = view.target("gcs")
    now = time.time()
    recent = evaluate_lag(view, gcs, instance, now=now)
    assert not recent.passed and recent.severity == dg.AssetCheckSeverity.WARN
    assert 100 < recent.metadata["lag_s_by_partition"].value["dt=1"] < 400

    platform.write("events", "dt=0", "a.csv", "old", age_s=7 * 3600)
    overdue = evaluate_lag(view, gcs, instance, now=now)
    assert overdue.severity == dg.AssetCheckSeverity.ERROR
    assert overdue.metadata["partitions_overdue"].value == 1
    assert overdue.metadata["lagging"].value.split(", ")[0] == "dt=0"  # the worst first

    instance.add_dynamic_partitions(partitions_def_name("events"), ["dt=0", "dt=1"])
    defs = build_definitions(platform.spec_path)
    replicator = ReplicatorResource(state_path=str(platform.root / "state.db"))
    for p in ("dt=0", "dt=1"):
        assert dg.materialize(_replicas(defs), instance=instance, resources={"replicator": replicator},
                              partition_key=p, selection=[GCS]).success
    assert evaluate_lag(view, gcs, instance).passed
    lag_by_partition = {
        r.partition_key: r.asset_materialization.metadata["replication_lag_s"].value
        for r in instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=GCS), limit=10).records
    }
    assert lag_by_partition["dt=0"] > 7 * 3600 - 60 and 60 < lag_by_partition["dt=1"] < 3600


def test_no_temporary_files_check_names_what_a_copy_left_behind(platform: Platform, instance) -> None:
    """The replica's ``no_temporary_files`` check lists our staged names (``.rtmp-*``) and
    Hadoop's ``*._COPYING_`` found under the partition after the copy, and passes once they
    are gone."""
    platform.write("events", PART, "a.csv", "v1")
    instance.add_dynamic_partitions(partitions_def_name("events"), [PART])
    defs = build_definitions(platform.spec_path)
    replica = platform.root / "gcs" / "events" / PART
    (replica / "sub").mkdir(parents=True)
    (replica / f"{TEMP_PREFIX}0123-a.csv").write_text("half")  # a killed run's staged file
    (replica / "sub" / "b.csv._COPYING_").write_text("half")  # a killed hadoop put / distcp

    def no_temp(result: dg.ExecuteInProcessResult):
        [check] = [e for e in result.get_asset_check_evaluations()
                   if e.asset_key == GCS and e.check_name == "no_temporary_files"]
        return check

    left = no_temp(_copy(defs, instance, platform, [GCS]))
    assert left.passed is False
    assert sorted(left.metadata["leftovers"].value.split(", ")) == [
        f"{TEMP_PREFIX}0123-a.csv", "sub/b.csv._COPYING_"]
    assert (replica / "a.csv").read_text() == "v1"  # the copy itself went through

    (replica / f"{TEMP_PREFIX}0123-a.csv").unlink()
    (replica / "sub" / "b.csv._COPYING_").unlink()
    clean = no_temp(_copy(defs, instance, platform, [GCS]))
    assert clean.passed is True and clean.metadata["leftovers"].value == "none"


def test_the_scheduled_lag_job_fails_the_check_at_error_for_an_overdue_partition(
    platform: Platform, instance
) -> None:
    """What the hourly schedule runs: the lag job evaluates every replica's check, and a
    partition behind by more than the freshness window (6 h) fails it at ERROR, on the
    replica and on the `via` hop behind it; a replica in sync passes."""
    platform.write("events", "dt=0", "a.csv", "old", age_s=7 * 3600)
    defs = build_definitions(platform.spec_path)
    schedule = defs.resolve_schedule_def(LAG_SCHEDULE)
    assert schedule.job_name == LAG_JOB
    result = defs.resolve_job_def(LAG_JOB).execute_in_process(instance=instance, raise_on_error=False)
    assert result.success  # a failed check is an alert, not a failed run
    evaluations = {(e.asset_key, e.check_name): e for e in result.get_asset_check_evaluations()}
    for key in (GCS, DR):
        lag = evaluations[(key, "replication_lag")]
        assert lag.passed is False and lag.severity == dg.AssetCheckSeverity.ERROR, key
        assert lag.metadata["lagging"].value == "dt=0"
    customers = evaluations[(dg.AssetKey(["gcs", "customers"]), "replication_lag")]
    assert customers.passed is True  # nothing at its source: nothing behind
