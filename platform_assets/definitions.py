"""The one place the code location's ``Definitions`` is assembled (``workspace.yaml`` loads it).

Import reads ``replication.yaml`` next to the repository root and nothing else: no network
call and no environment read at import; resources resolve their ``EnvVar`` fields at run time.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from platform_assets.config import ReplicationSpec, load_spec
from platform_assets.factory import build_replication_assets
from platform_assets.hive import build_hive_bundle, build_hive_resource
from platform_assets.landing import build_landing
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
    elif n.kind == "kafka":
        notifier = NotifierResource(kind="kafka", kafka_bootstrap_servers=n.bootstrap_servers or "",
                                    kafka_topic=n.topic or "", kafka_topics=dict(n.topics),
                                    outbox_path=_setting(n.outbox, resolve_path=spec))
    else:
        notifier = NotifierResource(kind="jsonl", outbox_path=_setting(n.outbox, resolve_path=spec))
    hive = build_hive_resource(spec, str(_setting(p.hive_home, resolve_path=spec)))
    return {"replicator": replicator, "notifier": notifier, "hive": hive}


def build_definitions(
    spec_path: str | Path = SPEC_PATH, *, spec: ReplicationSpec | None = None
) -> dg.Definitions:
    spec = spec or load_spec(spec_path)
    ra = build_replication_assets(spec)
    sensors: list[dg.SensorDefinition] = [build_change_sensor(spec, ra)]
    if spec.platform.audit is not None:
        sensors.append(build_audit_sensor(spec, ra.copy_jobs))
    sensors.extend(build_notification_sensors(outbox=spec.platform.notifier.kind == "kafka"))
    landing = build_landing(spec)
    sensors.extend(landing.sensors)

    hive = build_hive_bundle(spec)
    sensors.extend(hive.sensors)
    jobs: list[dg.UnresolvedAssetJobDefinition] = [*ra.copy_jobs, *landing.jobs, *hive.jobs]
    schedules: list[dg.ScheduleDefinition] = []

    def scheduled(name: str, schedule: str, cron: str, selection: dg.AssetSelection,
                  description: str) -> None:
        job = dg.define_asset_job(name, selection=selection, description=description)
        jobs.append(job)
        schedules.append(dg.ScheduleDefinition(
            name=schedule, job=job, cron_schedule=cron,
            default_status=dg.DefaultScheduleStatus.RUNNING,
        ))

    if ra.checks:
        scheduled("replication_lag_checks", "replication_lag_schedule", "5 * * * *",
                  dg.AssetSelection.checks(*ra.checks),
                  "Is any replica partition older than its source?")
    return dg.Definitions(
        assets=[*ra.sources, *ra.replicas, *landing.assets, *hive.assets],
        asset_checks=ra.checks,
        sensors=sensors,
        jobs=jobs,
        schedules=schedules,
        resources=build_resources(spec),
    )


defs = build_definitions()
