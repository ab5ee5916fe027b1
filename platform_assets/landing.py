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


import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import Any

import dagster as dg

from platform_assets.config import LandingDataset, ReplicationSpec
from platform_assets.landing_report import append_history, read_history, write_report
from platform_assets.validation import (
    RULE_COLUMNS,
    RULE_MAX_ROWS,
    RULE_MIN_ROWS,
    RULE_NOT_NULL,
    RULE_TYPE,
    RULE_UNIQUE,
    FileResult,
    Rules,
    validate_file,
)
from replicator.errors import ReplicatorError, is_retryable
from replicator.progress import Progress
from replicator.secrets import redact
from resources.notify import NotifierResource
from resources.replicator import ReplicatorResource

TAG_BATCH = "landing/batch"
TAG_LANDING = "landing/dataset"
CHECKS: dict[str, tuple[str, ...]] = {
    "schema": (RULE_COLUMNS, RULE_TYPE),
    "row_count": (RULE_MIN_ROWS, RULE_MAX_ROWS),
    "not_null": (RULE_NOT_NULL,),
    "unique": (RULE_UNIQUE,),
}
CHECK_DESCRIPTIONS = {
    "schema": "every file has the declared columns, and every value parses as its column's type",
    "row_count": "every file's row count is within the declared bounds",
    "not_null": "no empty value in a not-null column",
    "unique": "no duplicate key (the declared unique columns) within a file",
}
_BATCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class LandingError(ValueError):
    """A landing batch that cannot be processed (the message says what and where)."""


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


def check_keys(name: str) -> list[dg.AssetCheckKey]:
    return [dg.AssetCheckKey(ingested_key(name), c) for c in CHECKS]


# ---------------------------------------------------------------------------- places
@dataclass(frozen=True)
class LandingPaths:
    """Where one landing dataset's files live (raw and output are local paths here)."""

    source: str
    raw: str
    output: str

    @property
    def meta(self) -> str:
        return os.path.join(self.output, "_landing")

    @property
    def history(self) -> str:
        return os.path.join(self.meta, "history.jsonl")

    @property
    def pending(self) -> str:
        return os.path.join(self.meta, "pending.json")

    def batch_record(self, batch: str) -> str:
        return os.path.join(self.meta, "batches", f"{batch}.json")

    def report_dir(self, batch: str) -> str:
        return os.path.join(self.meta, "reports", batch)


def _local(uri: str, where: str) -> str:
    if "://" in uri and not uri.startswith("file://"):
        raise LandingError(
            f"{where}: expected a local path (the landing pipeline reads the raw area and writes "
            f"Parquet locally in this version), got {redact(uri)}"
        )
    return os.path.abspath(uri.removeprefix("file://"))


def landing_paths(spec: ReplicationSpec, name: str) -> LandingPaths:
    ld = spec.landing[name]
    return LandingPaths(
        source=spec.endpoint_uri(ld.source),
        raw=_local(spec.endpoint_uri(ld.raw), f"landing.{name}.raw"),
        output=_local(spec.endpoint_uri(ld.output), f"landing.{name}.output"),
    )


def rules_for(ld: LandingDataset) -> Rules:
    return Rules(columns=dict(ld.columns), min_rows=ld.rows.min, max_rows=ld.rows.max,
                 not_null=ld.not_null, unique=ld.unique, format=ld.format)


def batch_id(context: dg.AssetExecutionContext) -> str:
    tags = context.run.tags
    batch = tags.get(TAG_BATCH) or tags.get("dagster/root_run_id") or context.run_id
    if not _BATCH_RE.match(batch):
        raise LandingError(
            f"run tag {TAG_BATCH}: expected letters, digits, '.', '_' or '-' (at most 100), "
            f"got {batch[:120]!r}"
        )
    return batch


def load_record(paths: LandingPaths, batch: str) -> dict[str, Any] | None:
    try:
        with open(paths.batch_record(batch), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def save_record(paths: LandingPaths, record: dict[str, Any]) -> None:
    path = paths.batch_record(record["batch"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def load_pending(paths: LandingPaths) -> list[str]:
    """Files ingested but not converted yet, and not rejected: the valid files of a rejected
    batch, or the files a partly failed copy did copy. The next batch takes them along, so one
    bad or failed file does not strand the good ones of its batch."""
    try:
        with open(paths.pending, encoding="utf-8") as f:
            return [str(x) for x in json.load(f)]
    except FileNotFoundError:
        return []


def save_pending(paths: LandingPaths, files: list[str]) -> None:
    os.makedirs(paths.meta, exist_ok=True)
    tmp = f"{paths.pending}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(sorted(set(files)), f)
    os.replace(tmp, paths.pending)


def _require_record(paths: LandingPaths, batch: str) -> dict[str, Any]:
    record = load_record(paths, batch)
    if record is None:
        raise dg.Failure(description=f"batch {batch}: no batch record; run the ingest step first")
    return record


def notify_step(context: Any, notifier: NotifierResource, ld: LandingDataset, step: str,
                **fields: Any) -> None:
    """Send one step notification; a notifier failure is logged, never fails the data step."""
    if step not in ld.notify:
        return
    event = {"event": step, "pipeline": "landing", **{k: v for k, v in fields.items() if v is not None}}
    try:
        notifier.notify(event)
    except Exception as exc:
        context.log.warning(f"notification {step} not delivered: {redact(str(exc))[:300]}")


class _CopiedFiles(Progress):
    def __init__(self) -> None:
        self.ok: list[str] = []
        self.failed: list[str] = []

    def on_file(self, path: str, ok: bool) -> None:
        (self.ok if ok else self.failed).append(path)


# ---------------------------------------------------------------------------- checks
def check_results(name: str, results: list[FileResult]) -> list[dg.AssetCheckResult]:
    """One blocking check result per rule group; a failing one names file, row and rule."""
    out = []
    for check, rules in CHECKS.items():
        hits = [v for r in results for v in r.violations if v.rule in rules]
        count = sum(r.rule_counts.get(rule, 0) for r in results for rule in rules)
        files = sorted({r.file for r in results if any(r.rule_counts.get(x) for x in rules)})
        md: dict[str, Any] = {"files_checked": len(results), "violations": count}
        description = CHECK_DESCRIPTIONS[check]
        if hits:
            first = hits[0]
            md.update({
                "first_violation": first.describe(),
                "file": first.file,
                "row": first.row,
                "rule": first.rule,
                "failing_files": ", ".join(files[:20]),
                "examples": dg.MetadataValue.md(
                    "\n".join(f"- {v.describe()}" for v in hits[:20])
                ),
            })
            description = f"{count} violation(s); first: {first.describe()}"
        out.append(dg.AssetCheckResult(
            asset_key=ingested_key(name), check_name=check, passed=not count,
            severity=dg.AssetCheckSeverity.ERROR, metadata=md, description=description[:1000],
        ))
    return out


# ---------------------------------------------------------------------------- parquet
def _stem(rel: str) -> str:
    base = rel.rsplit(".", 1)[0] if "." in os.path.basename(rel) else rel
    safe = _UNSAFE.sub("_", base.replace("/", "__"))
    if safe != base.replace("/", "__"):
        safe += "-" + hashlib.sha1(rel.encode()).hexdigest()[:8]
    return safe


def arrow_schema(ld: LandingDataset):
    import pyarrow as pa

    types = {"string": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
             "date": pa.date32(), "timestamp": pa.timestamp("us", tz="UTC")}
    return pa.schema([(c, types[t]) for c, t in ld.columns.items()])


def read_table(path: str, ld: LandingDataset):
    """One landing file as an Arrow table with the declared schema (empty value = null)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    from platform_assets.validation import parse_value

    schema = arrow_schema(ld)
    if ld.format == "csv":
        # timestamps are read as text and parsed like the validation did (offset or UTC)
        stamps = [c for c, t in ld.columns.items() if t == "timestamp"]
        types = {c: (pa.string() if c in stamps else schema.field(c).type) for c in ld.columns}
        table = pcsv.read_csv(
            path,
            convert_options=pcsv.ConvertOptions(
                column_types=types, include_columns=list(ld.columns), null_values=[""],
                strings_can_be_null=True, true_values=["true", "True", "TRUE", "1"],
                false_values=["false", "False", "FALSE", "0"],
            ),
        )
        for c in stamps:
            parsed = [parse_value("timestamp", v) for v in table.column(c).to_pylist()]
            table = table.set_column(table.schema.get_field_index(c), c,
                                     pa.array(parsed, type=schema.field(c).type))
        return table.select(list(ld.columns)).cast(schema)

    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                obj = json.loads(line)
                rows.append({c: parse_value(t, obj.get(c)) for c, t in ld.columns.items()})
    return pa.Table.from_pylist(rows, schema=schema)


def write_parquet(ld: LandingDataset, paths: LandingPaths, files: list[str], batch: str,
                  *, engine: str = "pyarrow") -> dict[str, list[str]]:
    """Convert ``files`` (relative to the raw area) to Parquet under the output directory,
    with pyarrow or (``engine="spark"``) Spark.

    Everything is written to ``<output>/.tmp-<batch>-<uuid>/`` first; only when every file has
    been converted are each file's previous Parquet files removed and the new ones moved in, so
    a rerun is idempotent and a failed conversion leaves the previous output. Each landing file
    owns the Parquet files named ``<stem>-part-<i>.parquet`` (in the partition directories).
    Returns the Parquet files (relative to the output) per landing file.
    """
    os.makedirs(paths.output, exist_ok=True)
    tmp = os.path.join(paths.output, f".tmp-{batch}-{uuid.uuid4().hex[:8]}")
    try:
        convert = _convert_spark if engine == "spark" else _convert_pyarrow
        written = convert(ld, paths, files, tmp)
        for rel, new_files in written.items():
            own = re.compile(rf"^{re.escape(_stem(rel))}-part-\d+\.parquet$")
            for dirpath, dirnames, filenames in os.walk(paths.output):
                dirnames[:] = [d for d in dirnames if not d.startswith((".", "_"))]
                for fn in filenames:
                    if own.match(fn):
                        os.unlink(os.path.join(dirpath, fn))
            for f in new_files:
                dst = os.path.join(paths.output, f)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                os.replace(os.path.join(tmp, f), dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return written


def _convert_pyarrow(ld: LandingDataset, paths: LandingPaths, files: list[str],
                     tmp: str) -> dict[str, list[str]]:
    import pyarrow.dataset as pds

    written: dict[str, list[str]] = {}
    for rel in files:
        table = read_table(os.path.join(paths.raw, rel), ld)
        out: list[str] = []
        pds.write_dataset(
            table, tmp, format="parquet",
            partitioning=[ld.partition_by] if ld.partition_by else None,
            partitioning_flavor="hive" if ld.partition_by else None,
            basename_template=f"{_stem(rel)}-part-{{i}}.parquet",
            existing_data_behavior="overwrite_or_ignore",
            file_visitor=lambda wf, out=out: out.append(os.path.relpath(wf.path, tmp)),
        )
        written[rel] = sorted(out)
    return written


def _spark_session():
    """The active SparkSession, or a local one (ours to stop): ``(session, owned)``."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    spark = (
        SparkSession.builder.master(os.environ.get("LANDING_SPARK_MASTER", "local[2]"))
        .appName("landing-parquet")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .getOrCreate()
    )
    return spark, True


def _convert_spark(ld: LandingDataset, paths: LandingPaths, files: list[str],
                   tmp: str) -> dict[str, list[str]]:
    """Spark (local mode unless ``LANDING_SPARK_MASTER`` says otherwise): every column is read
    as a string and cast like the validation parsed it, partitioned by ``partition_by``; the
    part files are then renamed ``<stem>-part-<i>.parquet`` so the swap treats both engines alike."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    spark, owned = _spark_session()
    casts = {
        "string": lambda c: F.col(c),
        "int": lambda c: F.col(c).cast("bigint"),
        "float": lambda c: F.col(c).cast("double"),
        "bool": lambda c: F.when(F.lower(F.col(c)).isin("true", "1"), F.lit(True))
        .when(F.lower(F.col(c)).isin("false", "0"), F.lit(False)),
        "date": lambda c: F.to_date(F.col(c), "yyyy-MM-dd"),
        "timestamp": lambda c: F.to_timestamp(F.col(c)),
    }
    written: dict[str, list[str]] = {}
    try:
        as_strings = T.StructType([T.StructField(c, T.StringType()) for c in ld.columns])
        for k, rel in enumerate(files):
            src = os.path.join(paths.raw, rel)
            if ld.format == "csv":  # by header name (any column order), every value a string
                df = spark.read.option("header", True).option("inferSchema", False).csv(src)
                df = df.toDF(*[c.lstrip("\ufeff") for c in df.columns])
            else:
                df = spark.read.schema(as_strings).json(src)
            df = df.select([casts[t](c).alias(c) for c, t in ld.columns.items()])
            staged = os.path.join(tmp, ".spark", str(k))
            writer = df.write.mode("overwrite")
            if ld.partition_by:
                writer = writer.partitionBy(ld.partition_by)
            writer.parquet(staged)
            out: list[str] = []
            for dirpath, _, filenames in sorted(os.walk(staged)):
                for fn in sorted(f for f in filenames if f.endswith(".parquet")):
                    rel_dir = os.path.relpath(dirpath, staged)
                    name = os.path.normpath(os.path.join(rel_dir, f"{_stem(rel)}-part-{len(out)}.parquet"))
                    os.makedirs(os.path.join(tmp, os.path.dirname(name)), exist_ok=True)
                    os.replace(os.path.join(dirpath, fn), os.path.join(tmp, name))
                    out.append(name)
            written[rel] = sorted(out)
    finally:
        if owned:
            spark.stop()
    return written


# ---------------------------------------------------------------------------- assets
def _file_entry(r: FileResult) -> dict[str, Any]:
    return {"file": r.file, "rows": r.rows, "bytes": r.bytes, "status": "ok" if r.ok else "rejected",
            "violations": r.violation_count, "rule_counts": dict(r.rule_counts),
            "first_violation": r.first.describe() if r.first else None}


def _build_ingested(spec: ReplicationSpec, name: str) -> dg.AssetsDefinition:
    ld = spec.landing[name]
    key = ingested_key(name)

    @dg.asset(
        key=key,
        group_name=landing_group(name),
        description=(f"Landing files of {name!r} copied into the raw area (verified) and "
                     "validated; blocking checks stop the pipeline on a bad file."),
        metadata={"source": redact(spec.endpoint_uri(ld.source)),
                  "raw": redact(spec.endpoint_uri(ld.raw)), "format": ld.format},
        kinds={ld.format},
        tags={"replication/role": "landing"},
        check_specs=[dg.AssetCheckSpec(c, asset=key, description=CHECK_DESCRIPTIONS[c],
                                       blocking=True) for c in CHECKS],
    )
    def _ingested(context: dg.AssetExecutionContext, replicator: ReplicatorResource,
                  notifier: NotifierResource) -> dg.MaterializeResult:
        from replicator import api

        paths = landing_paths(spec, name)
        batch = batch_id(context)
        previous = load_record(paths, batch)
        copy_md: dict[str, Any] = {}
        if previous is not None:  # the same batch again (re-execution, trigger naming it)
            files = list(previous["files"])
            missing = [f for f in files if not os.path.isfile(os.path.join(paths.raw, f))]
            if missing:
                raise dg.Failure(description=f"batch {batch}: files gone from the raw area: "
                                             f"{', '.join(missing[:10])}")
            context.log.info(f"batch {batch}: reprocessing its {len(files)} files")
        else:
            options = replicator.options(include=ld.file_globs, min_age_s=ld.min_age_s)
            collector = _CopiedFiles()
            try:
                report = api.copy(paths.source, paths.raw, options, progress=collector)
            except ReplicatorError as exc:
                raise dg.Failure(description=f"ingest {redact(paths.source)}: {redact(str(exc))}",
                                 allow_retries=is_retryable(exc)) from None
            if not report.ok:
                from platform_assets.factory import failure_summary

                # files that did get copied are in the manifest now: the next batch takes them
                save_pending(paths, [*load_pending(paths), *collector.ok])
                raise dg.Failure(description=failure_summary(report))
            copied = sorted(collector.ok)
            carried = [f for f in load_pending(paths)
                       if f not in copied and os.path.isfile(os.path.join(paths.raw, f))]
            if carried:
                context.log.info(f"batch {batch}: takes along {len(carried)} valid files of an "
                                 f"earlier batch not converted yet: {', '.join(carried[:10])}")
            files = sorted({*copied, *carried})
            copy_md = {
                "copy_finished": dg.MetadataValue.timestamp(report.finished_at or time.time()),
                "files_copied": report.files_copied, "bytes_copied": report.bytes_copied,
                "files_held_back": report.files_held_back, "verified": bool(report.verified),
            }
            save_record(paths, {"batch": batch, "files": files, "ingested_at": time.time(),
                                "run_id": context.run_id, "source": redact(paths.source),
                                "carried": carried})
            if copied:
                notify_step(context, notifier, ld, "ingested", dataset=name, batch=batch,
                            files=copied[:50], bytes=report.bytes_copied, raw=paths.raw)
        results = [validate_file(os.path.join(paths.raw, f), rules_for(ld), name=f) for f in files]
        checks = check_results(name, results)
        record = load_record(paths, batch) or {"batch": batch, "files": files}
        record["validation"] = [_file_entry(r) for r in results]
        save_record(paths, record)
        bad = [r for r in results if not r.ok]
        save_pending(paths, [*(f for f in load_pending(paths) if f not in files),
                             *(r.file for r in results if r.ok)])
        rule_counts: dict[str, int] = {}
        for r in results:
            for rule, c in r.rule_counts.items():
                rule_counts[rule] = rule_counts.get(rule, 0) + c
        first = next((r.first for r in bad if r.first), None)
        history_entry = {
            "batch": batch, "at": time.time(), "run_id": context.run_id,
            "status": "rejected" if bad else "accepted", "files": len(results),
            "files_ok": len(results) - len(bad), "files_rejected": len(bad),
            "rows": sum(r.rows for r in results), "rule_counts": rule_counts,
            "first_violation": first.describe() if first else None,
        }
        if results:  # an empty batch (a trigger with nothing new) is no point on the trend
            append_history(paths.history, history_entry)
        if bad:
            notify_step(context, notifier, ld, "rejected", dataset=name, batch=batch,
                        file=first.file if first else None, row=first.row if first else None,
                        rule=first.rule if first else None,
                        error=first.describe() if first else None,
                        files_rejected=[r.file for r in bad][:50])
            context.log.error(f"batch {batch}: rejected: {first.describe() if first else ''}")
        elif files:
            notify_step(context, notifier, ld, "validated", dataset=name, batch=batch,
                        files=len(files), rows=sum(r.rows for r in results))
        return dg.MaterializeResult(
            metadata={
                "batch": batch, "files": len(files), "rows": sum(r.rows for r in results),
                "files_rejected": len(bad), "raw": dg.MetadataValue.path(paths.raw),
                "batch_files": ", ".join(files[:50]) or "none", **copy_md,
            },
            check_results=checks,
        )

    return _ingested


def _build_parquet(spec: ReplicationSpec, name: str) -> dg.AssetsDefinition:
    ld = spec.landing[name]

    @dg.asset(
        key=parquet_key(name),
        deps=[ingested_key(name)],
        group_name=landing_group(name),
        description=(f"Validated landing files of {name!r} as a Parquet dataset"
                     + (f" partitioned by {ld.partition_by!r}." if ld.partition_by else ".")),
        metadata={"output": redact(spec.endpoint_uri(ld.output)),
                  "partition_by": ld.partition_by or "none"},
        kinds={"parquet"},
        tags={"replication/role": "landing"},
    )
    def _parquet(context: dg.AssetExecutionContext,
                 notifier: NotifierResource) -> dg.MaterializeResult:
        paths = landing_paths(spec, name)
        batch = batch_id(context)
        record = _require_record(paths, batch)
        files = list(record["files"])
        total = sum(os.path.getsize(os.path.join(paths.raw, f)) for f in files)
        engine = ("spark" if ld.spark_threshold_bytes is not None
                  and total > ld.spark_threshold_bytes else "pyarrow")
        context.log.info(f"batch {batch}: converting {len(files)} files ({total} bytes) with {engine}")
        try:
            written = write_parquet(ld, paths, files, batch, engine=engine)
        except Exception as exc:  # pyarrow.ArrowInvalid, Spark's AnalysisException, OSError
            raise dg.Failure(description=f"batch {batch}: Parquet conversion failed: "
                                         f"{redact(str(exc))[:1000]}") from None
        record["parquet"] = written
        save_record(paths, record)
        save_pending(paths, [f for f in load_pending(paths) if f not in written])
        n_files = sum(len(v) for v in written.values())
        partitions = sorted({os.path.dirname(f) for v in written.values() for f in v} - {""})
        if files:
            notify_step(context, notifier, ld, "converted", dataset=name, batch=batch,
                        files=len(files), parquet_files=n_files, output=paths.output)
        return dg.MaterializeResult(metadata={
            "batch": batch, "files_converted": len(files), "parquet_files": n_files,
            "bytes_in": total, "engine": engine, "partitions": ", ".join(partitions[:50]) or "none",
            "output": dg.MetadataValue.path(paths.output),
        })

    return _parquet


def _build_report(spec: ReplicationSpec, name: str) -> dg.AssetsDefinition:
    ld = spec.landing[name]

    @dg.asset(
        key=report_key(name),
        deps=[parquet_key(name)],
        group_name=landing_group(name),
        description=(f"HTML report (charts: rows per file, validation outcomes, trends) and CSV "
                     f"summary of each {name!r} batch, stored next to the data."),
        kinds={"html"},
        tags={"replication/role": "landing"},
    )
    def _report(context: dg.AssetExecutionContext,
                notifier: NotifierResource) -> dg.MaterializeResult:
        paths = landing_paths(spec, name)
        batch = batch_id(context)
        record = _require_record(paths, batch)
        parquet = record.get("parquet", {})
        files = [{**f, "parquet_files": len(parquet.get(f["file"], []))}
                 for f in record.get("validation", [])]
        out = write_report(
            paths.report_dir(batch), dataset=name, batch=batch, files=files,
            history=read_history(paths.history), generated_at=time.time(),
            output_uri=paths.output, partition_by=ld.partition_by,
        )
        notify_step(context, notifier, ld, "report_ready", dataset=name, batch=batch,
                    report=out.html, report_png=out.png, summary=out.csv)
        return dg.MaterializeResult(metadata={
            "batch": batch,
            "report": dg.MetadataValue.path(out.html),
            "report_url": dg.MetadataValue.url("file://" + out.html),
            "charts_png": dg.MetadataValue.path(out.png),
            "summary_csv": dg.MetadataValue.path(out.csv),
            "files": len(files), "rows": sum(int(f["rows"]) for f in files),
        })

    return _report


@dataclass(frozen=True)
class LandingBundle:
    assets: list[dg.AssetsDefinition]
    jobs: list  # unresolved asset jobs
    sensors: list[dg.SensorDefinition]


def landing_job(name: str) -> Any:
    return dg.define_asset_job(
        landing_job_name(name),
        selection=dg.AssetSelection.assets(ingested_key(name), parquet_key(name), report_key(name)),
        tags={TAG_LANDING: name},
        description=f"Ingest, validate, convert and report one batch of landing dataset {name!r}.",
    )


def build_landing(spec: ReplicationSpec) -> LandingBundle:
    """Assets, blocking checks, jobs and sensors of every landing dataset (definitions.py adds them)."""
    from sensors.landing import build_landing_sensor

    assets: list[dg.AssetsDefinition] = []
    jobs = []
    sensors = []
    for name in sorted(spec.landing):
        assets += [_build_ingested(spec, name), _build_parquet(spec, name), _build_report(spec, name)]
        job = landing_job(name)
        jobs.append(job)
        sensors.append(build_landing_sensor(spec, name, job))
    return LandingBundle(assets, jobs, sensors)
