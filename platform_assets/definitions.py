"""The one place the code location's ``Definitions`` is assembled (``workspace.yaml`` loads it).

Each dataset kind builds its own ``Definitions`` (``replication/``, ``landing/``, ``hive/``,
each in its ``definitions.py``); this module only merges them and applies what holds for the
whole code location: the resources every kind shares, the shared run-status notification
sensors (``sensors/``) and the executor (in process: one process per run).

The spec is the file ``REPLICATION_SPEC`` names (default: the demo's ``replication.yaml`` at
the repository root). Importing this module reads nothing; loading the code location (Dagster
calls ``defs``) reads the spec and contacts nothing: no file system, metastore or notifier is
reached until a sensor ticks or a run starts; resources resolve their ``EnvVar`` fields at run
time.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from platform_assets.config import ReplicationSpec, load_spec
from platform_assets.datasets import resolve
from platform_assets.hive.definitions import build_defs as hive_defs
from platform_assets.landing.definitions import build_defs as landing_defs
from platform_assets.replication.definitions import build_defs as replication_defs
from platform_assets.replication.names import (
    TAG_AUDIT_FILE,
    TAG_DATASET,
    TAG_PARTITION,
    TAG_TRIGGER,
)
from resources.dataproc import DataprocResource
from resources.hive import HiveMetastoreResource
from resources.notify import NotifierResource
from resources.replicator import ReplicatorResource
from sensors.notify import build_notification_sensors

SPEC_PATH = Path(__file__).resolve().parents[1] / "replication.yaml"
SPEC_ENV = "REPLICATION_SPEC"
ENV_PREFIX = "env:"
# event field of a run notification -> the run tags that fill it, first present wins
NOTIFICATION_FIELDS: dict[str, tuple[str, ...]] = {
    "dataset": (TAG_DATASET,),
    "partition": (TAG_PARTITION, "dagster/partition"),
    "trigger": (TAG_TRIGGER,),
    "audit_file": (TAG_AUDIT_FILE,),
}


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
    hive = HiveMetastoreResource(
        home=str(_setting(p.hive_home, resolve_path=spec)),
        metastores={name: c.hive_metastore for name, c in spec.clusters.items() if c.hive_metastore},
    )
    resources: dict[str, dg.ConfigurableResource] = {
        "replicator": replicator, "notifier": notifier, "hive": hive}
    if p.dataproc is not None:
        d = p.dataproc
        resources["dataproc"] = DataprocResource(
            staging_uri=d.staging, poll_interval_s=d.poll_interval_s, timeout_s=d.timeout_s,
            main_python_file_uri=d.main_python_file_uri, python_file_uris=list(d.python_file_uris))
    return resources


def spec_path() -> Path:
    """The spec the code location serves: ``$REPLICATION_SPEC``, else the demo's."""
    named = os.environ.get(SPEC_ENV, "").strip()
    return Path(named).expanduser() if named else SPEC_PATH


def build_definitions(
    spec_path: str | Path = SPEC_PATH, *, spec: ReplicationSpec | None = None
) -> dg.Definitions:
    spec = spec or load_spec(spec_path)
    rs = resolve(spec)
    return dg.Definitions.merge(
        replication_defs(rs),
        landing_defs(spec, rs.sensor_status),
        hive_defs(rs),
        dg.Definitions(
            sensors=build_notification_sensors(
                NOTIFICATION_FIELDS, rs.sensor_status,
                outbox=spec.platform.notifier.kind == "kafka"),
            resources=build_resources(spec),
            # one process per run: a copy's parallelism is inside the engine (threads, Spark,
            # DistCp, Dataproc), so a process per step only adds an interpreter start and a
            # code location load to every step of every run
            executor=dg.in_process_executor,
        ),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """What ``workspace.yaml`` (``python_module: platform_assets.definitions``) and ``dg`` load."""
    return build_definitions(spec_path())
