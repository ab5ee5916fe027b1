"""Names of the landing kind: asset keys, job, group and sensor names, run tags."""

from __future__ import annotations

import dagster as dg

TAG_BATCH = "landing/batch"
TAG_LANDING = "landing/dataset"


def ingested_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["landing", name, "ingested"])


def parquet_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["landing", name, "parquet"])


def report_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["landing", name, "report"])


def landing_job_name(name: str) -> str:
    return f"landing_{name}"


def landing_group(name: str) -> str:
    return f"landing_{name}"


def landing_sensor_name(name: str) -> str:
    return f"landing_{name}_sensor"
