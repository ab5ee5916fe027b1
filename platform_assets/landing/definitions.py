"""The landing kind's ``Definitions``: per landing dataset its three assets (with blocking
checks), its job and its sensor."""

from __future__ import annotations

import dagster as dg

from platform_assets.config import ReplicationSpec
from platform_assets.landing.assets import build_ingested, build_parquet, build_report, landing_job
from platform_assets.landing.sensor import build_landing_sensor


def build_defs(spec: ReplicationSpec,
               sensor_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING) -> dg.Definitions:
    assets: list[dg.AssetsDefinition] = []
    jobs = []
    sensors = []
    for name in sorted(spec.landing):
        assets += [build_ingested(spec, name), build_parquet(spec, name), build_report(spec, name)]
        job = landing_job(name)
        jobs.append(job)
        sensors.append(build_landing_sensor(spec, name, job, sensor_status))
    return dg.Definitions(assets=assets, jobs=jobs, sensors=sensors)
