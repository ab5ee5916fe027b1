"""Landing files to Parquet: read with the declared schema, convert with pyarrow (or Spark in
local mode for large batches), write to a temporary directory and swap in file by file, on a
local output or through the output's file system (HDFS)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from typing import Protocol

from platform_assets.landing.batches import LandingPaths


class Layout(Protocol):
    """What the conversion reads of a landing dataset (its :class:`LandingView`)."""

    @property
    def columns(self) -> Mapping[str, str]: ...
    @property
    def format(self) -> str: ...
    @property
    def partition_by(self) -> str | None: ...

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _stem(rel: str, fmt: str) -> str:
    """The name stem of the Parquet files owned by landing file ``rel`` (of format ``fmt``):
    one stem per landing file. ``dir/a.csv`` is ``dir__a``; a name the plain mapping could
    confuse with another (an extension other than ``.<fmt>``: ``a.txt`` beside ``a.csv``; a
    ``__`` that reads like a directory; characters replaced) gets a hash of ``rel`` too."""
    name = os.path.basename(rel)
    base, ext = (rel.rsplit(".", 1)[0], "." + name.rsplit(".", 1)[1]) if "." in name else (rel, "")
    plain = base.replace("/", "__")
    safe = _UNSAFE.sub("_", plain)
    if safe != plain or ext != f".{fmt}" or any("__" in part for part in rel.split("/")):
        safe += "-" + hashlib.sha1(rel.encode()).hexdigest()[:8]
    return safe


def arrow_schema(ld: Layout):
    import pyarrow as pa

    types = {"string": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
             "date": pa.date32(), "timestamp": pa.timestamp("us", tz="UTC")}
    return pa.schema([(c, types[t]) for c, t in ld.columns.items()])


def read_table(path: str, ld: Layout):
    """One landing file as an Arrow table with the declared schema (empty value = null)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    from platform_assets.landing.validation import parse_value

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


def write_parquet(ld: Layout, paths: LandingPaths, files: list[str], batch: str,
                  *, engine: str = "pyarrow") -> tuple[dict[str, list[str]], dict[str, str]]:
    """Convert ``files`` (relative to the raw area) to Parquet under the output directory,
    with pyarrow or (``engine="spark"``) Spark.

    Everything is written to ``<output>/.tmp-<batch>-<uuid>/`` first (on a remote output:
    converted in a local temporary directory, then uploaded there and each file checked by
    CRC32C); only when every file has been converted and staged are each file's previous
    Parquet files removed and the new ones renamed in, so a rerun is idempotent and a failed
    conversion or upload leaves the previous output. Each landing file owns the Parquet files
    named ``<stem>-part-<i>.parquet`` (in the partition directories).

    One landing file that cannot be read or converted fails alone: its partial output is
    dropped, its previous Parquet stays, and the others are published. Returns the Parquet
    files (relative to the output) per converted landing file, and the error per failed one.
    An upload or swap that fails (the output's file system) fails the whole batch.
    """
    out = paths.out_store
    out.makedirs("")
    staging = f".tmp-{batch}-{uuid.uuid4().hex[:8]}"
    local_tmp = out.path(staging) if out.local else tempfile.mkdtemp(prefix="landing-parquet-")
    try:
        convert = _convert_spark if engine == "spark" else _convert_pyarrow
        failed: dict[str, str] = {}
        written = convert(ld, paths, files, local_tmp, failed)
        if not out.local:
            for new_files in written.values():
                for f in new_files:
                    out.upload(os.path.join(local_tmp, f), f"{staging}/{f}")
        existing = list(out.walk_files())  # staging and _landing/ are not entered
        # every partition directory first: one that cannot be made (a file in the way, no
        # permission) fails the step before any previous output is touched
        for d in sorted({posixpath.dirname(f) for v in written.values() for f in v} - {""}):
            out.makedirs(d)
        for rel, new_files in written.items():
            own = re.compile(rf"^{re.escape(_stem(rel, ld.format))}-part-\d+\.parquet$")
            for f in existing:
                if own.match(posixpath.basename(f)):
                    out.delete_file(f)
            for f in new_files:
                out.rename(f"{staging}/{f}", f)
    finally:
        out.delete_tree(staging)
        if not out.local:
            shutil.rmtree(local_tmp, ignore_errors=True)
    return written, failed


def _failure(exc: Exception) -> str:
    from replicator.secrets import redact

    return redact(f"{type(exc).__name__}: {exc}")[:500]


def _convert_pyarrow(ld: Layout, paths: LandingPaths, files: list[str],
                     tmp: str, failed: dict[str, str]) -> dict[str, list[str]]:
    import pyarrow.dataset as pds

    written: dict[str, list[str]] = {}
    for rel in files:
        out: list[str] = []
        try:
            with paths.raw_store.local_file(rel) as src:
                table = read_table(src, ld)
            pds.write_dataset(
                table, tmp, format="parquet",
                partitioning=[ld.partition_by] if ld.partition_by else None,
                partitioning_flavor="hive" if ld.partition_by else None,
                basename_template=f"{_stem(rel, ld.format)}-part-{{i}}.parquet",
                existing_data_behavior="overwrite_or_ignore",
                file_visitor=lambda wf, out=out: out.append(os.path.relpath(wf.path, tmp)),
            )
        except Exception as exc:  # ArrowInvalid, OSError, a file gone from the raw area
            failed[rel] = _failure(exc)
            for f in out:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(tmp, f))
            continue
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


def _convert_spark(ld: Layout, paths: LandingPaths, files: list[str],
                   tmp: str, failed: dict[str, str]) -> dict[str, list[str]]:
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
            staged = os.path.join(tmp, ".spark", str(k))
            try:
                _spark_one(spark, ld, paths, rel, staged, as_strings, casts)
            except Exception as exc:  # AnalysisException, Py4JJavaError, a file gone
                failed[rel] = _failure(exc)
                shutil.rmtree(staged, ignore_errors=True)
                continue
            out: list[str] = []
            for dirpath, _, filenames in sorted(os.walk(staged)):
                for fn in sorted(f for f in filenames if f.endswith(".parquet")):
                    rel_dir = os.path.relpath(dirpath, staged)
                    name = os.path.normpath(os.path.join(rel_dir, f"{_stem(rel, ld.format)}-part-{len(out)}.parquet"))
                    os.makedirs(os.path.join(tmp, os.path.dirname(name)), exist_ok=True)
                    os.replace(os.path.join(dirpath, fn), os.path.join(tmp, name))
                    out.append(name)
            written[rel] = sorted(out)
    finally:
        if owned:
            spark.stop()
    return written


def _spark_one(spark, ld: Layout, paths: LandingPaths, rel: str, staged: str, as_strings,
               casts) -> None:
    """One landing file converted by Spark into ``staged`` (its own directory)."""
    with paths.raw_store.local_file(rel) as src:
        if ld.format == "csv":  # by header name (any column order), every value a string
            df = spark.read.option("header", True).option("inferSchema", False).csv(src)
            df = df.toDF(*[c.lstrip("\ufeff") for c in df.columns])
        else:
            df = spark.read.schema(as_strings).json(src)
        df = df.select([casts[t](c).alias(c) for c, t in ld.columns.items()])
        writer = df.write.mode("overwrite")
        if ld.partition_by:
            writer = writer.partitionBy(ld.partition_by)
        writer.parquet(staged)
