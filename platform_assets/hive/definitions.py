"""The Hive kind's ``Definitions``: per Hive dataset the import on its source cluster, the
remote tables and the remote clusters' ETL, the sync / import / copy / ETL jobs, the two
sensors, and the on-demand whole-table copy job. Empty when no dataset has a Hive table on a
cluster with a metastore. Every Hive dataset is resolved once here (:func:`resolve_hive`) and
its :class:`HiveView` handed to the builders."""

from __future__ import annotations

from typing import Any

import dagster as dg

from platform_assets.datasets import ResolvedSpec, partitions_def_for
from platform_assets.hive.assets import (
    Importer,
    build_etl,
    build_import,
    build_remote_table,
    synthetic_import,
)
from platform_assets.hive.copy_table import build_copy_table_job
from platform_assets.hive.names import ASYNC_SENSOR, COPY_SLAVE_SENSOR, TAG_HIVE_DATASET
from platform_assets.hive.sensors import build_sensors
from platform_assets.hive.view import resolve_hive


def build_defs(rs: ResolvedSpec, importer: Importer = synthetic_import) -> dg.Definitions:
    hs = resolve_hive(rs)
    assets: list[dg.AssetsDefinition] = []
    jobs: list[Any] = []
    etl_jobs: list[Any] = []
    async_jobs: list[Any] = []
    for hv in hs:
        d = hv.name
        pdef = partitions_def_for(hv.dataset)
        assets.append(build_import(hv, pdef, importer, hs.retry_policy))
        for remote in hv.remote:
            assets.append(build_remote_table(hv, remote, pdef, hs.retry_policy))
            assets.append(build_etl(hv, remote, pdef))
            etl_jobs.append(dg.define_asset_job(
                remote.etl_job_name, selection=[remote.etl_key],
                tags={TAG_HIVE_DATASET: d},
                description=f"{remote.cluster}'s ETL on the copied {d} (started by {COPY_SLAVE_SENSOR}).",
            ))
        copy_sel = dg.AssetSelection.assets(*hv.dataset.replica_keys, *hv.remote_keys)
        # copy + registration alone: what the async sensor runs, and how an operator finishes
        # a sync run whose registration failed for good (the next incremental import waits)
        async_jobs.append(dg.define_asset_job(
            hv.async_copy_job_name, selection=copy_sel,
            tags={TAG_HIVE_DATASET: d},
            description=f"copy {d} to its targets and register the remote tables "
                        "(retried with backoff until the remote cluster answers).",
        ))
        if hv.mode == "sync":
            jobs.append(dg.define_asset_job(
                hv.sync_job_name, selection=dg.AssetSelection.assets(hv.import_key) | copy_sel,
                tags={TAG_HIVE_DATASET: d},
                description=f"sync: import {d} on {hv.source_cluster}, copy it and register it "
                            "remotely, in one run.",
            ))
        else:
            jobs.append(dg.define_asset_job(
                hv.import_job_name, selection=dg.AssetSelection.assets(hv.import_key),
                tags={TAG_HIVE_DATASET: d},
                description=f"async: import {d} on {hv.source_cluster} only; {ASYNC_SENSOR} copies it.",
            ))
    if hs:
        jobs.append(build_copy_table_job(hs))
    return dg.Definitions(assets=assets, jobs=[*jobs, *async_jobs, *etl_jobs],
                          sensors=build_sensors(hs, async_jobs, etl_jobs))
