"""Landing-zone pipeline: files users drop in a watched directory are ingested onto the
cluster, validated, converted to Parquet and reported on, as Dagster assets.

Per landing dataset ``NAME`` declared under ``landing:`` in ``replication.yaml`` (group
``landing_NAME``, job ``landing_NAME``):

- ``landing/NAME/ingested``: copies the new and changed landing files (the engine's manifest
  decides, files younger than ``min_age_s`` are left alone) into the raw area, verified; then
  validates each file it copied. Four **blocking** checks on this asset (``schema``,
  ``row_count``, ``not_null``, ``unique``): one failing fails the step, so the downstream assets
  do not run; its metadata and the ``rejected`` notification name the file, row and rule.
- ``landing/NAME/parquet``: converts the batch's files to Parquet with pyarrow (with Spark,
  local mode, when the batch is larger than ``spark_threshold_bytes``), partitioned by
  ``partition_by`` (hive style ``col=value/``), written to a temporary directory and swapped in
  file by file, so a rerun replaces its own output and a failed one leaves the previous output.
- ``landing/NAME/report``: an HTML report with charts and a CSV summary under
  ``<output>/_landing/reports/<batch>/`` (Parquet readers skip ``_``-prefixed paths), linked
  from the asset metadata.

Assets are unpartitioned; a run is one **batch**, named by the run tag ``landing/batch`` (the
landing sensor and the trigger set it; otherwise the root run id). The batch record
(``<output>/_landing/batches/<batch>.json``) lists the files that batch ingested, so the steps
of one run, a re-execution, or a trigger naming the batch again all work on the same files.
Every step notifies through the platform's ``NotifierResource``.
"""

import contextlib
import posixpath
import time
from collections.abc import Iterator
from typing import Any

import dagster as dg

from platform_assets.engine import copy_or_fail, report_metadata
from platform_assets.landing.batches import (
    CopiedFiles,
    LandingError,
    LandingPaths,
    batch_id,
    load_record,
    notify_step,
    record_history,
    require_record,
    save_record,
    take_files,
    update_pending,
)
from platform_assets.landing.checks import CHECK_DESCRIPTIONS, CHECKS, check_results
from platform_assets.landing.names import TAG_LANDING
from platform_assets.landing.parquet import write_parquet
from platform_assets.landing.report import read_history, write_report
from platform_assets.landing.store import StoreError
from platform_assets.landing.validation import FileResult, validate_file
from platform_assets.landing.view import LandingView
from replicator.secrets import redact
from resources.notify import NotifierResource
from resources.replicator import ReplicatorResource


def _file_entry(r: FileResult) -> dict[str, Any]:
    return {"file": r.file, "rows": r.rows, "bytes": r.bytes, "status": "ok" if r.ok else "rejected",
            "violations": r.violation_count, "rule_counts": dict(r.rule_counts),
            "first_violation": r.first.describe() if r.first else None}


@contextlib.contextmanager
def _paths(view: LandingView) -> Iterator[LandingPaths]:
    """The dataset's places for one step, closed afterwards; a place or batch the pipeline
    cannot use (an object store as output, a malformed batch tag) fails the step with its
    message, not a traceback."""
    paths = view.paths()
    try:
        yield paths
    except (LandingError, StoreError) as exc:
        raise dg.Failure(description=str(exc)) from None
    finally:
        paths.close()


def _in_flight(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether the run that claimed a pending file may still convert it (not finished, and
    known to this instance)."""
    run = instance.get_run_by_id(run_id)
    return run is not None and not run.is_finished


def _validate(paths: LandingPaths, rel: str, view: LandingView) -> FileResult:
    with paths.raw_store.local_file(rel) as local:
        return validate_file(local, view.rules, name=rel)


def build_ingested(view: LandingView) -> dg.AssetsDefinition:
    name = view.name
    key = view.ingested_key

    @dg.asset(
        key=key,
        group_name=view.group,
        description=(f"Landing files of {name!r} copied into the raw area (verified) and "
                     "validated; blocking checks stop the pipeline on a bad file."),
        metadata={"source": view.shown["source"], "raw": view.shown["raw"],
                  "format": view.format},
        kinds={view.format},
        tags={"replication/role": "landing"},
        check_specs=[dg.AssetCheckSpec(c, asset=key, description=CHECK_DESCRIPTIONS[c],
                                       blocking=True) for c in CHECKS],
    )
    def _ingested(context: dg.AssetExecutionContext, replicator: ReplicatorResource,
                  notifier: NotifierResource) -> dg.MaterializeResult:
        state = replicator.state_path
        with _paths(view) as paths:
            batch = batch_id(context)
            previous = load_record(paths, batch)
            copy_md: dict[str, dg.MetadataValue] = {}
            if previous is not None:  # the same batch again (re-execution, trigger naming it)
                files = list(previous["files"])
                missing = [f for f in files if not paths.raw_store.is_file(f)]
                if missing:
                    raise dg.Failure(description=f"batch {batch}: files gone from the raw area: "
                                                 f"{', '.join(missing[:10])}")
                context.log.info(f"batch {batch}: reprocessing its {len(files)} files")
            else:
                options = view.ingest_options(replicator)
                collector = CopiedFiles()
                # on failure, files that did get copied are in the manifest now: the next batch
                # takes them
                report = copy_or_fail(
                    replicator, paths.source, paths.raw, options, progress=collector,
                    on_failure=lambda _: update_pending(paths, state, add=collector.ok),
                )
                copied = sorted(collector.ok)
                # each pending file goes into one batch: not into one a concurrent run (a
                # trigger's, the sensor's) has taken it into
                carried = take_files(paths, state, context.run.run_id, copied,
                                     lambda run_id: _in_flight(context.instance, run_id))
                if carried:
                    context.log.info(f"batch {batch}: takes along {len(carried)} valid files of an "
                                     f"earlier batch not converted yet: {', '.join(carried[:10])}")
                files = sorted({*copied, *carried})
                copy_md = report_metadata(report)
                save_record(paths, {"batch": batch, "files": files, "ingested_at": time.time(),
                                    "run_id": context.run.run_id, "source": redact(paths.source),
                                    "carried": carried})
                if copied:
                    notify_step(context, notifier, view, "ingested", dataset=name, batch=batch,
                                files=copied[:50], files_total=len(copied),
                                bytes=report.bytes_copied, raw=redact(paths.raw))
            results = [_validate(paths, f, view) for f in files]
            checks = check_results(key, results)
            record = load_record(paths, batch) or {"batch": batch, "files": files}
            record["validation"] = [_file_entry(r) for r in results]
            save_record(paths, record)
            bad = [r for r in results if not r.ok]
            # the valid files wait in pending.json for the conversion (a rejected batch's go
            # with a later one); on a reprocessed batch not the ones it converted already
            converted = set((previous or {}).get("parquet") or {})
            update_pending(paths, state, remove=files,
                           add=[r.file for r in results if r.ok and r.file not in converted])
            rule_counts: dict[str, int] = {}
            for r in results:
                for rule, c in r.rule_counts.items():
                    rule_counts[rule] = rule_counts.get(rule, 0) + c
            first = next((r.first for r in bad if r.first), None)
            history_entry = {
                "batch": batch, "at": time.time(), "run_id": context.run.run_id,
                "status": "rejected" if bad else "accepted", "files": len(results),
                "files_ok": len(results) - len(bad), "files_rejected": len(bad),
                "rows": sum(r.rows for r in results), "rule_counts": rule_counts,
                "first_violation": first.describe() if first else None,
            }
            if results:  # an empty batch (a trigger with nothing new) is no point on the trend
                record_history(paths, state, history_entry)
            if bad:
                notify_step(context, notifier, view, "rejected", dataset=name, batch=batch,
                            file=first.file if first else None, row=first.row if first else None,
                            rule=first.rule if first else None,
                            error=first.describe() if first else None,
                            files_rejected=[r.file for r in bad][:50],
                            files_rejected_total=len(bad))
                context.log.error(f"batch {batch}: rejected: {first.describe() if first else ''}")
            elif files:
                notify_step(context, notifier, view, "validated", dataset=name, batch=batch,
                            files=len(files), rows=sum(r.rows for r in results))
            return dg.MaterializeResult(
                metadata={
                    "batch": batch, "files": len(files), "rows": sum(r.rows for r in results),
                    "files_rejected": len(bad), "raw": dg.MetadataValue.path(redact(paths.raw)),
                    "batch_files": ", ".join(files[:50]) or "none", **copy_md,
                },
                check_results=checks,
            )

    return _ingested


def build_parquet(view: LandingView) -> dg.AssetsDefinition:
    name = view.name

    @dg.asset(
        key=view.parquet_key,
        deps=[view.ingested_key],
        group_name=view.group,
        description=(f"Validated landing files of {name!r} as a Parquet dataset"
                     + (f" partitioned by {view.partition_by!r}." if view.partition_by else ".")),
        metadata={"output": view.shown["output"], "partition_by": view.partition_by or "none"},
        kinds={"parquet"},
        tags={"replication/role": "landing"},
    )
    def _parquet(context: dg.AssetExecutionContext, replicator: ReplicatorResource,
                 notifier: NotifierResource) -> dg.MaterializeResult:
        with _paths(view) as paths:
            batch = batch_id(context)
            record = require_record(paths, batch)
            files = list(record["files"])
            gone = {f: "not in the raw area any more" for f in files if not paths.raw_store.is_file(f)}
            present = [f for f in files if f not in gone]
            total = sum(paths.raw_store.size(f) for f in present)
            engine = view.conversion_engine(total)
            context.log.info(f"batch {batch}: converting {len(present)} files ({total} bytes) with {engine}")
            try:
                written, failed = write_parquet(view, paths, present, batch, engine=engine)
            except Exception as exc:  # the output's file system: upload, rename, mkdir
                raise dg.Failure(description=f"batch {batch}: Parquet conversion failed: "
                                             f"{redact(str(exc))[:1000]}") from None
            failed = {**gone, **failed}
            record["parquet"] = written
            record["conversion_failed"] = failed
            save_record(paths, record)
            # a file that failed is rejected like an invalid one: it comes back when the user
            # drops a new version, and does not fail every later batch it would be carried into
            update_pending(paths, replicator.state_path, remove=[*written, *failed],
                           release=[*written, *failed],
                           owners=[str(record.get("run_id")), context.run.run_id])
            n_files = sum(len(v) for v in written.values())
            partitions = sorted({posixpath.dirname(f) for v in written.values() for f in v} - {""})
            if written:
                notify_step(context, notifier, view, "converted", dataset=name, batch=batch,
                            files=len(written), parquet_files=n_files, output=redact(paths.output))
            if failed:
                first = sorted(failed)[0]
                error = f"{first}: Parquet conversion failed: {failed[first]}"
                notify_step(context, notifier, view, "rejected", dataset=name, batch=batch,
                            file=first, row=0, rule="conversion", error=error,
                            files_rejected=sorted(failed)[:50], files_rejected_total=len(failed))
                raise dg.Failure(
                    description=(f"batch {batch}: {len(failed)} of {len(files)} files not converted "
                                 f"(the other {len(written)} are published); first: {error}")[:2000],
                    metadata={"files_converted": len(written), "files_failed": len(failed),
                              "failed_files": ", ".join(sorted(failed)[:50])},
                )
            return dg.MaterializeResult(metadata={
                "batch": batch, "files_converted": len(written), "parquet_files": n_files,
                "bytes_in": total, "engine": engine, "partitions": ", ".join(partitions[:50]) or "none",
                "output": dg.MetadataValue.path(redact(paths.output)),
            })

    return _parquet


def build_report(view: LandingView) -> dg.AssetsDefinition:
    name = view.name

    @dg.asset(
        key=view.report_key,
        deps=[view.parquet_key],
        group_name=view.group,
        description=(f"HTML report (charts: rows per file, validation outcomes, trends) and CSV "
                     f"summary of each {name!r} batch, stored next to the data."),
        kinds={"html"},
        tags={"replication/role": "landing"},
    )
    def _report(context: dg.AssetExecutionContext,
                notifier: NotifierResource) -> dg.MaterializeResult:
        with _paths(view) as paths:
            batch = batch_id(context)
            record = require_record(paths, batch)
            parquet = record.get("parquet", {})
            files = [{**f, "parquet_files": len(parquet.get(f["file"], []))}
                     for f in record.get("validation", [])]
            out = write_report(
                paths.out_store, paths.report_dir(batch), dataset=name, batch=batch, files=files,
                history=read_history(paths.out_store, paths.history), generated_at=time.time(),
                output_uri=view.shown["output"], partition_by=view.partition_by,
            )
            notify_step(context, notifier, view, "report_ready", dataset=name, batch=batch,
                        report=out.html, report_png=out.png, summary=out.csv)
            return dg.MaterializeResult(metadata={
                "batch": batch,
                "report": dg.MetadataValue.path(out.html),
                "report_url": dg.MetadataValue.url(paths.out_store.link(f"{paths.report_dir(batch)}/report.html")),
                "charts_png": dg.MetadataValue.path(out.png),
                "summary_csv": dg.MetadataValue.path(out.csv),
                "files": len(files), "rows": sum(int(f["rows"]) for f in files),
            })

    return _report


def landing_job(view: LandingView) -> Any:
    return dg.define_asset_job(
        view.job_name,
        selection=dg.AssetSelection.assets(*view.asset_keys),
        tags={TAG_LANDING: view.name},
        description=f"Ingest, validate, convert and report one batch of landing dataset {view.name!r}.",
    )
