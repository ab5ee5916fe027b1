"""The Hive kind's ``Definitions``: per Hive dataset the import on its source cluster, the
remote tables and the remote clusters' ETL, the sync / import / copy / ETL jobs, the two
sensors, and the on-demand whole-table copy job. Empty when no dataset has a Hive table on a
cluster with a metastore."""

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
from platform_assets.hive.names import (
    ASYNC_SENSOR,
    COPY_SLAVE_SENSOR,
    TAG_HIVE_DATASET,
    async_copy_job_name,
    etl_job_name,
    etl_key,
    hive_table_key,
    import_job_name,
    sync_job_name,
)
from platform_assets.hive.sensors import build_sensors
from platform_assets.hive.spec import hive_datasets, remote_clusters, validate_hive_spec


def build_defs(rs: ResolvedSpec, importer: Importer = synthetic_import) -> dg.Definitions:
    validate_hive_spec(rs)
    assets: list[dg.AssetsDefinition] = []
    jobs: list[Any] = []
    etl_jobs: list[Any] = []
    async_jobs: list[Any] = []
    for d in hive_datasets(rs):
        view = rs[d]
        pdef = partitions_def_for(view)
        ikey = view.import_key
        assert ikey is not None
        assets.append(build_import(rs, view, pdef, importer))
        remote_keys = list(view.replica_keys)
        tables = remote_clusters(rs, d)
        for t in view.targets:
            if t.cluster in tables:
                assets.append(build_remote_table(rs, view, t, pdef))
                assets.append(build_etl(view, t.cluster, pdef))
                remote_keys.append(hive_table_key(d, t.cluster))
                etl_jobs.append(dg.define_asset_job(
                    etl_job_name(d, t.cluster), selection=[etl_key(d, t.cluster)],
                    tags={TAG_HIVE_DATASET: d},
                    description=f"{t.cluster}'s ETL on the copied {d} (started by {COPY_SLAVE_SENSOR}).",
                ))
        copy_sel = dg.AssetSelection.assets(*remote_keys)
        # copy + registration alone: what the async sensor runs, and how an operator finishes
        # a sync run whose registration failed for good (the next incremental import waits)
        async_jobs.append(dg.define_asset_job(
            async_copy_job_name(d), selection=copy_sel,
            tags={TAG_HIVE_DATASET: d},
            description=f"copy {d} to its targets and register the remote tables "
                        "(retried with backoff until the remote cluster answers).",
        ))
        if view.mode == "sync":
            jobs.append(dg.define_asset_job(
                sync_job_name(d), selection=dg.AssetSelection.assets(ikey) | copy_sel,
                tags={TAG_HIVE_DATASET: d},
                description=f"sync: import {d} on {view.source_cluster}, copy it and register it "
                            "remotely, in one run.",
            ))
        else:
            jobs.append(dg.define_asset_job(
                import_job_name(d), selection=dg.AssetSelection.assets(ikey),
                tags={TAG_HIVE_DATASET: d},
                description=f"async: import {d} on {view.source_cluster} only; {ASYNC_SENSOR} copies it.",
            ))
    if hive_datasets(rs):
        jobs.append(build_copy_table_job(rs.spec))
    return dg.Definitions(assets=assets, jobs=[*jobs, *async_jobs, *etl_jobs],
                          sensors=build_sensors(rs, async_jobs, etl_jobs))
