"""One resolved view per landing dataset, computed once from the spec and handed to the landing
assets, checks and sensor: where the watched directory, the raw area and the output live, the
files the pipeline takes, the validation rules, the conversion settings, the notified steps,
the sensor's interval and the Dagster names. Nothing here is re-derived per call.

``resolve_landing(spec)`` contacts nothing (it only joins strings); the stores are opened per
step by :meth:`LandingView.paths`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import dagster as dg

from platform_assets.config import LandingDataset, ReplicationSpec, file_uri_path
from platform_assets.datasets import storage_kind
from platform_assets.landing.batches import LandingPaths
from platform_assets.landing.checks import check_keys
from platform_assets.landing.names import (
    ingested_key,
    landing_group,
    landing_job_name,
    landing_sensor_name,
    parquet_key,
    report_key,
)
from platform_assets.landing.validation import Rules
from replicator.options import CopyOptions
from replicator.secrets import redact
from resources.replicator import ReplicatorResource


def _location(uri: str) -> str:
    """A URI as given, a ``file://`` URI or a plain path as an absolute local path."""
    if "://" in uri and not uri.startswith("file://"):
        return uri
    return file_uri_path(uri) if uri.startswith("file://") else os.path.abspath(uri)


@dataclass(frozen=True)
class LandingView:
    """One landing dataset, resolved (``landing.<name>`` of the spec)."""

    name: str
    config: LandingDataset
    # places: the watched directory (any engine URI), the raw area and the output (a URI or
    # an absolute local path); reports, history and batch records live under <output>/_landing
    source: str
    raw: str
    output: str
    source_kind: str  # where the watched directory lives: local, s3, gcs, hdfs, ...
    # what the pipeline takes and how it checks it
    format: Literal["csv", "jsonl"]
    file_globs: tuple[str, ...]  # the engine's include globs (default: *.<format>)
    min_age_s: float  # files younger than this are still being written: left alone
    rules: Rules
    # conversion
    columns: Mapping[str, str]  # column -> type, in the declared order
    partition_by: str | None
    spark_threshold_bytes: int | None  # a batch larger than this is converted with Spark
    # notifications and sensor
    notify: frozenset[str]  # the steps that send a message
    interval_s: int
    # Dagster names
    ingested_key: dg.AssetKey
    parquet_key: dg.AssetKey
    report_key: dg.AssetKey
    check_keys: tuple[dg.AssetCheckKey, ...]
    group: str
    job_name: str
    sensor_name: str

    @property
    def asset_keys(self) -> tuple[dg.AssetKey, dg.AssetKey, dg.AssetKey]:
        return self.ingested_key, self.parquet_key, self.report_key

    def paths(self) -> LandingPaths:
        """The dataset's places with their stores (opened lazily; ``close()`` them)."""
        return LandingPaths(source=self.source, raw=self.raw, output=self.output, name=self.name)

    def ingest_options(self, replicator: ReplicatorResource) -> CopyOptions:
        """The engine options of the ``source -> raw`` copy: the ingest copies with them and
        the sensor plans with them, so both take the same files."""
        return replicator.options(include=self.file_globs, min_age_s=self.min_age_s)

    def notifies(self, step: str) -> bool:
        return step in self.notify

    def conversion_engine(self, batch_bytes: int) -> Literal["spark", "pyarrow"]:
        """Spark for a batch larger than ``spark_threshold_bytes``, else pyarrow."""
        if self.spark_threshold_bytes is not None and batch_bytes > self.spark_threshold_bytes:
            return "spark"
        return "pyarrow"

    @property
    def shown(self) -> dict[str, str]:
        """The places as users may see them (passwords and tokens redacted)."""
        return {"source": redact(self.source), "raw": redact(self.raw),
                "output": redact(self.output)}


def landing_view(spec: ReplicationSpec, name: str) -> LandingView:
    ld = spec.landing[name]
    return LandingView(
        name=name,
        config=ld,
        source=spec.endpoint_uri(ld.source),
        raw=_location(spec.endpoint_uri(ld.raw)),
        output=_location(spec.endpoint_uri(ld.output)),
        source_kind=storage_kind(spec.cluster_root(ld.source.cluster)),
        format=ld.format,
        file_globs=tuple(ld.file_globs),
        min_age_s=ld.min_age_s,
        rules=Rules(columns=dict(ld.columns), min_rows=ld.rows.min, max_rows=ld.rows.max,
                    not_null=tuple(ld.not_null), unique=tuple(ld.unique), format=ld.format),
        columns=dict(ld.columns),
        partition_by=ld.partition_by,
        spark_threshold_bytes=ld.spark_threshold_bytes,
        notify=frozenset(ld.notify),
        interval_s=ld.interval_s,
        ingested_key=ingested_key(name),
        parquet_key=parquet_key(name),
        report_key=report_key(name),
        check_keys=tuple(check_keys(name)),
        group=landing_group(name),
        job_name=landing_job_name(name),
        sensor_name=landing_sensor_name(name),
    )


def resolve_landing(spec: ReplicationSpec) -> dict[str, LandingView]:
    """Resolve every landing dataset of ``spec`` once."""
    return {name: landing_view(spec, name) for name in sorted(spec.landing)}
