"""Names of the Hive kind: asset keys, check names, job and sensor names, run tags."""

from __future__ import annotations

import dagster as dg

CHECK_PREVIOUS_COPIES = "previous_copies_finished"
CHECK_ROW_COUNTS = "row_counts_match"
TAG_HIVE_DATASET = "hive/dataset"
TAG_HIVE_PARTITION = "hive/partition"
TAG_HIVE_IMPORTED = "hive/imported_at"
ASYNC_SENSOR = "hive_async_copy_sensor"
COPY_SLAVE_SENSOR = "hive_copy_slave_sensor"
COPY_TABLE_JOB = "hive_copy_table"


def import_key(dataset: str, cluster: str) -> dg.AssetKey:
    """The import of a Hive dataset on its source ``cluster``."""
    return dg.AssetKey([cluster, dataset, "import"])


def hive_table_key(dataset: str, cluster: str) -> dg.AssetKey:
    return dg.AssetKey([cluster, dataset, "hive_table"])


def etl_key(dataset: str, cluster: str) -> dg.AssetKey:
    return dg.AssetKey([cluster, dataset, "etl_summary"])


def sync_job_name(dataset: str) -> str:
    return f"hive_{dataset}"


def import_job_name(dataset: str) -> str:
    return f"hive_import_{dataset}"


def async_copy_job_name(dataset: str) -> str:
    return f"hive_copy_{dataset}"


def etl_job_name(dataset: str, cluster: str) -> str:
    return f"etl_{cluster}_{dataset}"
