"""Execute sensor results in-process (the demo and the tests; the daemon does this in production).

``apply_sensor_result`` does what the sensor daemon does with a ``SensorResult``: report its
asset events, add the requested dynamic partitions, then launch each run request. Runs execute in this process
against the given instance, so they appear in the UI like daemon-launched runs.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class LaunchedRun:
    run_key: str | None
    partition: str | None
    success: bool
    run_id: str


def execute_run_request(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    request: dg.RunRequest,
    *,
    extra_tags: Mapping[str, str] | None = None,
    raise_on_error: bool = False,
    quiet: bool = False,
) -> dg.ExecuteInProcessResult:
    keys = list(request.asset_selection or [])
    if request.job_name:
        job = defs.resolve_job_def(request.job_name)
    else:
        job = defs.resolve_implicit_job_def_def_for_assets(keys)
    if job is None:
        raise ValueError(f"no job covers {keys}")
    if request.asset_check_keys is not None:
        job = job.get_subset(
            asset_selection=set(keys), asset_check_selection=set(request.asset_check_keys)
        )
    tags = dict(request.tags or {})
    if request.run_key:
        tags["dagster/run_key"] = request.run_key
    tags.update(extra_tags or {})
    return job.execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        tags=tags,
        raise_on_error=raise_on_error,
        run_config=QUIET if quiet else None,
    )


def apply_sensor_result(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    result: dg.SensorResult,
    *,
    sensor_name: str | None = None,
    skip_known_run_keys: bool = True,
    quiet: bool = False,
) -> list[LaunchedRun]:
    for event in result.asset_events or []:  # the daemon reports these first too
        instance.report_runless_asset_event(event)
    for req in result.dynamic_partitions_requests or []:
        if isinstance(req, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        elif isinstance(req, dg.DeleteDynamicPartitionsRequest):
            for key in req.partition_keys:
                instance.delete_dynamic_partition(req.partitions_def_name, key)
    launched: list[LaunchedRun] = []
    for request in result.run_requests or []:
        extra = {"dagster/sensor_name": sensor_name} if sensor_name else {}
        if skip_known_run_keys and request.run_key and sensor_name:
            existing = instance.get_runs(
                filters=dg.RunsFilter(
                    tags={"dagster/run_key": request.run_key, "dagster/sensor_name": sensor_name}
                ),
                limit=1,
            )
            if existing:
                continue
        res = execute_run_request(defs, instance, request, extra_tags=extra, quiet=quiet)
        launched.append(
            LaunchedRun(request.run_key, request.partition_key, res.success, res.run_id)
        )
    return launched
