"""The one place the code location's ``Definitions`` is assembled (``workspace.yaml`` loads it).

Import reads ``replication.yaml`` next to the repository root and nothing else: no network
call and no environment read at import; resources resolve their ``EnvVar`` fields at run time.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from platform_assets.config import ReplicationSpec, load_spec
from platform_assets.factory import CHECK_LAG, build_replication_assets, replica_key
from resources.notify import NotifierResource
from resources.replicator import ReplicatorResource
from sensors.audit import build_audit_sensor
from sensors.change import build_change_sensor
from sensors.notify import build_notification_sensors

SPEC_PATH = Path(__file__).resolve().parents[1] / "replication.yaml"
ENV_PREFIX = "env:"


def _setting(value: str, *, resolve_path: ReplicationSpec | None = None) -> str | dg.EnvVar:
    """``env:NAME`` in the spec becomes ``dg.EnvVar("NAME")``; a path is made absolute."""
    if value.startswith(ENV_PREFIX):
        return dg.EnvVar(value[len(ENV_PREFIX) :])
    return resolve_path.resolve_location(value) if resolve_path is not None else value


def build_resources(spec: ReplicationSpec) -> dict[str, dg.ConfigurableResource]:
    p = spec.platform
    replicator = ReplicatorResource(
        state_path=_setting(p.state_path, resolve_path=spec),
        workers=p.workers,
        marker=p.marker,
    )
    n = p.notifier
    if n.kind == "webhook":
        notifier = NotifierResource(kind="webhook", webhook_url=dg.EnvVar(n.url_env or ""))
    elif n.kind == "slack":
        notifier = NotifierResource(
            kind="slack", slack_token=dg.EnvVar(n.token_env or ""), slack_channel=n.channel or ""
        )
    else:
        notifier = NotifierResource(kind="jsonl", outbox_path=_setting(n.outbox, resolve_path=spec))
    return {"replicator": replicator, "notifier": notifier}


def build_definitions(
    spec_path: str | Path = SPEC_PATH, *, spec: ReplicationSpec | None = None
) -> dg.Definitions:
    spec = spec or load_spec(spec_path)
    ra = build_replication_assets(spec)
    sensors: list[dg.SensorDefinition] = [build_change_sensor(spec, ra)]
    if spec.platform.audit is not None:
        sensors.append(build_audit_sensor(spec, ra.copy_jobs))
    sensors.extend(build_notification_sensors())

    jobs: list[dg.UnresolvedAssetJobDefinition] = list(ra.copy_jobs)
    schedules: list[dg.ScheduleDefinition] = []
    if ra.sources:
        observe = dg.define_asset_job(
            "observe_sources",
            selection=dg.AssetSelection.assets(*ra.source_keys),
            description="Observe every source directory (data version = listing fingerprint).",
        )
        jobs.append(observe)
        schedules.append(
            dg.ScheduleDefinition(
                name="observe_sources_schedule", job=observe, cron_schedule="*/15 * * * *",
                default_status=dg.DefaultScheduleStatus.RUNNING,
            )
        )
    if ra.checks:
        lag_keys = [
            dg.AssetCheckKey(replica_key(d, t.cluster), CHECK_LAG)
            for d, ds in spec.datasets.items()
            for t in ds.targets
        ]
        lag = dg.define_asset_job(
            "replication_lag_checks",
            selection=dg.AssetSelection.checks(*lag_keys),
            description="Is any replica partition older than its source?",
        )
        jobs.append(lag)
        schedules.append(
            dg.ScheduleDefinition(
                name="replication_lag_schedule", job=lag, cron_schedule="5 * * * *",
                default_status=dg.DefaultScheduleStatus.RUNNING,
            )
        )
    return dg.Definitions(
        assets=[*ra.sources, *ra.replicas],
        asset_checks=ra.checks,
        sensors=sensors,
        jobs=jobs,
        schedules=schedules,
        resources=build_resources(spec),
    )


defs = build_definitions()
