"""The Hive kind's sensors: ``hive_async_copy_sensor`` requests the copy of every async import
not yet on its remote clusters (again after a run that failed for good); ``hive_copy_slave_sensor``
starts each remote cluster's ETL on a partition when its ``copy_finished`` there is newer than
the ETL's last start."""

import dagster as dg

from platform_assets.history import latest_copies, latest_timestamps
from platform_assets.hive.assets import pending_copies
from platform_assets.hive.names import (
    ASYNC_SENSOR,
    COPY_SLAVE_SENSOR,
    TAG_HIVE_DATASET,
    TAG_HIVE_IMPORTED,
    TAG_HIVE_PARTITION,
)
from platform_assets.hive.view import HiveSpec


def copy_slave_requests(hs: HiveSpec, instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    """ETL runs on each remote cluster for the partitions whose ``copy_finished`` there is newer
    than the ETL's own last start (or that never ran)."""
    out = []
    for hv in hs:
        for remote in hv.remote:
            copies = latest_copies(instance, remote.key)
            started = latest_timestamps(instance, remote.etl_key, copies, "started_at")
            for p, c in sorted(copies.items()):
                if p in started and started[p] >= c.copy_finished:
                    continue
                out.append(dg.RunRequest(
                    run_key=f"{hv.name}|{remote.cluster}|{p}|{c.copy_finished:.6f}",
                    job_name=remote.etl_job_name,
                    partition_key=p,
                    tags={TAG_HIVE_DATASET: hv.name, TAG_HIVE_PARTITION: p},
                ))
    return out


def async_copy_requests(hs: HiveSpec, instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    """For each ``async`` dataset, one copy run per partition whose import is not copied and
    registered everywhere yet, unless such a run is queued or in progress. A run that failed
    for good (step retries spent) is requested again (new run key) on a later tick."""
    out = []
    for hv in hs:
        if hv.mode != "async":
            continue
        pending: dict[str, float] = {}
        for p in pending_copies(hv, instance):
            pending[p.partition] = p.imported_at
        for p, imported_at in sorted(pending.items()):
            tags = {TAG_HIVE_DATASET: hv.name, TAG_HIVE_PARTITION: p,
                    TAG_HIVE_IMPORTED: f"{imported_at:.6f}"}
            runs = instance.get_runs(filters=dg.RunsFilter(job_name=hv.async_copy_job_name, tags=tags))
            if any(not r.is_finished for r in runs):
                continue
            failed = sum(1 for r in runs if r.status == dg.DagsterRunStatus.FAILURE)
            out.append(dg.RunRequest(
                run_key=f"{hv.name}|{p}|{imported_at:.6f}|{failed}",
                job_name=hv.async_copy_job_name,
                partition_key=p,
                tags=tags,
            ))
    return out


def build_sensors(hs: HiveSpec, async_jobs: list, etl_jobs: list) -> list[dg.SensorDefinition]:
    sensors: list[dg.SensorDefinition] = []
    async_names = {hv.async_copy_job_name for hv in hs if hv.mode == "async"}
    if async_names:
        @dg.sensor(name=ASYNC_SENSOR, jobs=[j for j in async_jobs if j.name in async_names],
                   minimum_interval_seconds=30,
                   default_status=hs.sensor_status,
                   description="Requests the copy of every async import not yet on its remote "
                               "clusters, and again after a copy run that failed for good.")
        def _async_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
            return dg.SensorResult(run_requests=async_copy_requests(hs, context.instance))

        sensors.append(_async_sensor)
    if etl_jobs:
        @dg.sensor(name=COPY_SLAVE_SENSOR, jobs=etl_jobs, minimum_interval_seconds=30,
                   default_status=hs.sensor_status,
                   description="Starts each remote cluster's ETL on a partition when its "
                               "copy_finished is newer than the ETL's own last start.")
        def _slave_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
            return dg.SensorResult(run_requests=copy_slave_requests(hs, context.instance))

        sensors.append(_slave_sensor)
    return sensors
