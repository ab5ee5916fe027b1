"""Names of the replication kind: asset keys, check names, job names, run tags, pools.

Only names: no spec logic, so every module (and the other kinds) can import them.
"""

from __future__ import annotations

import dagster as dg

CHECK_VERIFIED = "copy_verified"
CHECK_NO_TEMP = "no_temporary_files"
CHECK_LAG = "replication_lag"

TAG_DATASET = "replication/dataset"
TAG_PARTITION = "replication/partition"
TAG_FINGERPRINT = "replication/fingerprint"
TAG_TRIGGER = "replication/trigger"
TAG_AUDIT_FILE = "replication/audit_file"
TAG_COPY = "replication/copy"  # dataset/partition: dagster.yaml runs one copy of it at a time

# the observation tag Dagster reads a data version from (what ``DataVersion`` sets on a
# materialization); written on the sources' observations
DATA_VERSION_TAG = "dagster/data_version"

CHANGE_SENSOR = "replication_change_sensor"
AUDIT_SENSOR = "replication_audit_file_sensor"
LAG_JOB = "replication_lag_checks"
LAG_SCHEDULE = "replication_lag_schedule"


def source_key(cluster: str, dataset: str) -> dg.AssetKey:
    """The source directory of ``dataset`` on its source ``cluster``."""
    return dg.AssetKey([cluster, dataset])


def replica_key(dataset: str, cluster: str) -> dg.AssetKey:
    return dg.AssetKey([cluster, dataset])


def partitions_def_name(dataset: str) -> str:
    return f"{dataset}_copies"


def copy_job_name(dataset: str) -> str:
    return f"copy_{dataset}"


def copy_pool(cluster: str) -> str:
    """The concurrency pool of copies writing to ``cluster``."""
    return f"copy_to_{cluster}"
