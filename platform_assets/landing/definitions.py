"""The landing kind's ``Definitions``: per landing dataset (resolved once into its
:class:`~platform_assets.landing.view.LandingView`) its three assets (with blocking checks),
its job and its sensor."""

from __future__ import annotations

import dagster as dg

from platform_assets.config import ReplicationSpec
from platform_assets.landing.assets import build_ingested, build_parquet, build_report, landing_job
from platform_assets.landing.sensor import build_landing_sensor
from platform_assets.landing.view import resolve_landing


def build_defs(spec: ReplicationSpec,
               sensor_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING) -> dg.Definitions:
    assets: list[dg.AssetsDefinition] = []
    jobs = []
    sensors = []
    for view in resolve_landing(spec).values():
        assets += [build_ingested(view), build_parquet(view), build_report(view)]
        job = landing_job(view)
        jobs.append(job)
        sensors.append(build_landing_sensor(view, job, sensor_status))
    return dg.Definitions(assets=assets, jobs=jobs, sensors=sensors)
