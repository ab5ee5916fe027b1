"""The replication kind's ``Definitions``: per dataset its source, replicas, checks and copy
job; the change sensor (sync datasets), the audit-file sensor (when ``platform.audit`` is set)
and the hourly lag-check schedule."""

from __future__ import annotations

import dagster as dg

from platform_assets.datasets import ResolvedSpec, partitions_def_for
from platform_assets.replication.assets import build_replica, build_source
from platform_assets.replication.audit_sensor import build_audit_sensor
from platform_assets.replication.change_sensor import build_change_sensor
from platform_assets.replication.checks import build_lag_check
from platform_assets.replication.names import LAG_JOB, LAG_SCHEDULE
from platform_assets.replication.requests import build_copy_job


def build_defs(rs: ResolvedSpec) -> dg.Definitions:
    sources: list[dg.SourceAsset] = []
    replicas: list[dg.AssetsDefinition] = []
    checks: list[dg.AssetChecksDefinition] = []
    copy_jobs = []
    for view in rs:
        pdef = partitions_def_for(view)
        sources.append(build_source(view, pdef))
        for target in view.targets:
            replicas.append(build_replica(rs.spec, view, target, pdef))
            checks.append(build_lag_check(view, target))
        copy_jobs.append(build_copy_job(view))
    sensors = [build_change_sensor(rs, copy_jobs)]
    if rs.platform.audit is not None:
        sensors.append(build_audit_sensor(rs, copy_jobs))
    jobs = list(copy_jobs)
    schedules = []
    if checks:
        lag_job = dg.define_asset_job(
            LAG_JOB, selection=dg.AssetSelection.checks(*checks),
            description="Is any replica partition older than its source?",
        )
        jobs.append(lag_job)
        schedules.append(dg.ScheduleDefinition(
            name=LAG_SCHEDULE, job=lag_job, cron_schedule="5 * * * *",
            default_status=rs.schedule_status,
        ))
    return dg.Definitions(assets=[*sources, *replicas], asset_checks=checks, sensors=sensors,
                          jobs=jobs, schedules=schedules)
