"""One cluster's Hive metastore session in its own process (``python -m resources.hive_worker``).

Two Hive metastores cannot share one SparkSession (one JVM boots one metastore client), so each
cluster gets a long-lived worker process holding its SparkSession with Hive support. The parent
(:mod:`resources.hive`) talks to it over a JSON-lines protocol on stdin/stdout: one request
``{"id": n, "op": "...", "args": {...}}`` per line, one response ``{"id": n, "ok": true,
"result": ...}`` or ``{"id": n, "ok": false, "error": "...", "kind": "..."}`` per line. The
worker's own logs (and Spark's) go to stderr / a log file, never to stdout.

Requests are structured operations, never SQL text: every identifier, type, partition value,
location and table property is validated here against a strict pattern and quoted (identifiers
in backticks, literals in single quotes with escapes) before it reaches ``spark.sql``. The
builders are plain functions so they are unit-tested without Spark.

This module imports neither dagster nor pyspark at import time.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

HIVE_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# a Hive/Spark column type: names, <>, (), commas, ':' (struct fields) and spaces; no quotes,
# backticks, semicolons or comment markers
TYPE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_<>(),: ]{0,3999}$")
PARTITION_VALUE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:+-]{0,127}$")
PROPERTY_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$")
PROPERTY_VALUE_RE = re.compile(r"^[A-Za-z0-9_.:+=,\-/ ]{0,512}$")
THRIFT_RE = re.compile(r"^thrift://[A-Za-z0-9.-]+:\d{1,5}(,thrift://[A-Za-z0-9.-]+:\d{1,5})*$")
_LOCATION_FORBIDDEN = re.compile(r"['\\`;\x00-\x1f\x7f]")
FORMATS = {"parquet": "PARQUET", "orc": "ORC"}


class HiveInputError(ValueError):
    """A name, type, value or location that cannot be used in Hive DDL."""


# --------------------------------------------------------------------------- quoting
def ident(name: str) -> str:
    """A validated identifier in backticks."""
    if not isinstance(name, str) or not HIVE_IDENT_RE.match(name):
        raise HiveInputError(f"expected a Hive identifier (letters, digits, '_'), got {name!r}")
    return f"`{name}`"


def qualified(database: str, table: str) -> str:
    return f"{ident(database)}.{ident(table)}"


def col_type(t: str) -> str:
    if not isinstance(t, str) or not TYPE_RE.match(t) or "--" in t:
        raise HiveInputError(f"expected a Hive column type such as bigint or decimal(10,2), got {t!r}")
    return t


def literal(value: str, pattern: re.Pattern[str], what: str) -> str:
    """A validated value as a single-quoted SQL literal (escaped even though the pattern
    already excludes quotes and backslashes)."""
    if not isinstance(value, str) or not pattern.match(value):
        raise HiveInputError(f"expected a {what} matching {pattern.pattern}, got {value!r}")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def location_literal(location: str) -> str:
    if not isinstance(location, str) or not location or _LOCATION_FORBIDDEN.search(location):
        raise HiveInputError(
            f"expected a location URI or absolute path without quotes, backslashes, backticks, "
            f"';' or control characters, got {location!r}"
        )
    if not (location.startswith("/") or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", location)):
        raise HiveInputError(f"expected an absolute path or a URI as location, got {location!r}")
    return "'" + location + "'"


def partition_clause(spec: Mapping[str, str]) -> str:
    if not spec:
        raise HiveInputError("expected at least one partition column")
    return ", ".join(
        f"{ident(k)} = {literal(v, PARTITION_VALUE_RE, 'partition value')}" for k, v in spec.items()
    )


def properties_clause(props: Mapping[str, str]) -> str:
    return ", ".join(
        f"{literal(k, PROPERTY_KEY_RE, 'table property key')} = "
        f"{literal(str(v), PROPERTY_VALUE_RE, 'table property value')}"
        for k, v in props.items()
    )


def create_table_sql(
    database: str,
    table: str,
    columns: Sequence[Sequence[str]],
    partition_columns: Sequence[Sequence[str]],
    location: str,
    file_format: str = "parquet",
    properties: Mapping[str, str] | None = None,
) -> str:
    if not columns:
        raise HiveInputError("expected at least one column")
    if file_format not in FORMATS:
        raise HiveInputError(f"expected a file format in {sorted(FORMATS)}, got {file_format!r}")
    cols = ", ".join(f"{ident(n)} {col_type(t)}" for n, t in columns)
    sql = f"CREATE TABLE IF NOT EXISTS {qualified(database, table)} ({cols})"
    if partition_columns:
        pcols = ", ".join(f"{ident(n)} {col_type(t)}" for n, t in partition_columns)
        sql += f" PARTITIONED BY ({pcols})"
    sql += f" STORED AS {FORMATS[file_format]} LOCATION {location_literal(location)}"
    if properties:
        sql += f" TBLPROPERTIES ({properties_clause(properties)})"
    return sql


def add_partition_sql(database: str, table: str, spec: Mapping[str, str], location: str) -> str:
    return (
        f"ALTER TABLE {qualified(database, table)} ADD IF NOT EXISTS PARTITION "
        f"({partition_clause(spec)}) LOCATION {location_literal(location)}"
    )


def set_partition_location_sql(database: str, table: str, spec: Mapping[str, str], location: str) -> str:
    return (
        f"ALTER TABLE {qualified(database, table)} PARTITION ({partition_clause(spec)}) "
        f"SET LOCATION {location_literal(location)}"
    )


def set_properties_sql(database: str, table: str, props: Mapping[str, str]) -> str:
    if not props:
        raise HiveInputError("expected at least one table property")
    return f"ALTER TABLE {qualified(database, table)} SET TBLPROPERTIES ({properties_clause(props)})"


def to_location(path_or_uri: str) -> str:
    """A local absolute path becomes a ``file:`` URI (what the metastore stores)."""
    return "file:" + path_or_uri if path_or_uri.startswith("/") else path_or_uri


# --------------------------------------------------------------------------- operations
class Worker:
    def __init__(self, spark: Any) -> None:
        self.spark = spark

    def _table_exists(self, database: str, table: str) -> bool:
        ident(database), ident(table)
        return bool(self.spark.catalog.tableExists(f"{database}.{table}"))

    def op_ping(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "spark": self.spark.version}

    def op_create_database(self, database: str) -> None:
        self.spark.sql(f"CREATE DATABASE IF NOT EXISTS {ident(database)}")

    def op_describe_table(self, database: str, table: str) -> dict[str, Any]:
        if not self._table_exists(database, table):
            return {"exists": False}
        t = self.spark.sql(f"DESCRIBE TABLE EXTENDED {qualified(database, table)}").collect()
        columns: list[list[str]] = []
        partition_names: list[str] = []
        info: dict[str, str] = {}
        section = "columns"
        for row in t:
            name, dtype = (row[0] or "").strip(), (row[1] or "").strip()
            if name.startswith("# Partition Information"):
                section = "partitions"
                continue
            if name.startswith("# Detailed Table Information"):
                section = "info"
                continue
            if not name or name.startswith("#"):
                continue
            if section == "columns":
                columns.append([name, dtype])
            elif section == "partitions":
                partition_names.append(name)
            else:
                info[name] = dtype
        data_columns = [c for c in columns if c[0] not in partition_names]
        partition_columns = [c for c in columns if c[0] in partition_names]
        props = {
            str(r[0]): str(r[1])
            for r in self.spark.sql(f"SHOW TBLPROPERTIES {qualified(database, table)}").collect()
        }
        provider = (info.get("Provider") or "").lower()
        serde = (info.get("Serde Library") or "").lower()
        fmt = "orc" if "orc" in provider or "orc" in serde else "parquet"
        return {
            "exists": True,
            "columns": data_columns,
            "partition_columns": partition_columns,
            "location": info.get("Location", ""),
            "format": fmt,
            "properties": props,
        }

    def op_create_table(
        self,
        database: str,
        table: str,
        columns: list[list[str]],
        partition_columns: list[list[str]],
        location: str,
        file_format: str = "parquet",
        properties: dict[str, str] | None = None,
    ) -> bool:
        """Create the table when missing; returns whether it was created."""
        self.op_create_database(database)
        existed = self._table_exists(database, table)
        if not existed:
            self.spark.sql(
                create_table_sql(database, table, columns, partition_columns,
                                 to_location(location), file_format, properties)
            )
        return not existed

    def op_list_partitions(self, database: str, table: str) -> list[dict[str, Any]]:
        """Every partition with its location (``{"spec": {...}, "location": ...}``)."""
        out = []
        client_rows = self.spark.sql(f"SHOW PARTITIONS {qualified(database, table)}").collect()
        for row in client_rows:
            spec = dict(part.split("=", 1) for part in str(row[0]).split("/"))
            desc = self.spark.sql(
                f"DESCRIBE FORMATTED {qualified(database, table)} PARTITION ({partition_clause(spec)})"
            ).collect()
            loc = next((str(r[1]).strip() for r in desc if (r[0] or "").strip() == "Location"), "")
            out.append({"spec": spec, "location": loc})
        return out

    def op_add_partition(self, database: str, table: str, spec: dict[str, str], location: str) -> str:
        """Add the partition at ``location``, or point an existing one there; refresh caches.
        Returns ``added`` or ``refreshed``."""
        loc = to_location(location)
        found = self.spark.sql(
            f"SHOW PARTITIONS {qualified(database, table)} PARTITION ({partition_clause(spec)})"
        ).collect()
        if found:
            self.spark.sql(set_partition_location_sql(database, table, spec, loc))
            outcome = "refreshed"
        else:
            self.spark.sql(add_partition_sql(database, table, spec, loc))
            outcome = "added"
        self.spark.sql(f"REFRESH TABLE {qualified(database, table)}")
        return outcome

    def op_set_properties(self, database: str, table: str, properties: dict[str, str]) -> None:
        self.spark.sql(set_properties_sql(database, table, properties))

    def op_count_rows(self, database: str, table: str, spec: dict[str, str] | None = None) -> int:
        self.spark.sql(f"REFRESH TABLE {qualified(database, table)}")
        df = self.spark.table(f"{database}.{table}")
        for k, v in (spec or {}).items():
            ident(k)
            literal(v, PARTITION_VALUE_RE, "partition value")
            df = df.filter(df[k] == v)
        return int(df.count())

    def op_count_by_partition(self, database: str, table: str) -> dict[str, int]:
        """Row count per partition, keyed ``col=value[/col=value]``."""
        info = self.op_describe_table(database, table)
        pcols = [c[0] for c in info.get("partition_columns", [])]
        if not pcols:
            return {"all": self.op_count_rows(database, table)}
        self.spark.sql(f"REFRESH TABLE {qualified(database, table)}")
        rows = self.spark.table(f"{database}.{table}").groupBy(*pcols).count().collect()
        return {"/".join(f"{c}={r[c]}" for c in pcols): int(r["count"]) for r in rows}

    def op_read_rows(self, database: str, table: str, limit: int = 100_000) -> list[list[Any]]:
        """Every row (data and partition columns), sorted: for comparing small tables."""
        self.spark.sql(f"REFRESH TABLE {qualified(database, table)}")
        rows = self.spark.table(f"{database}.{table}").limit(int(limit)).collect()
        return sorted(([None if v is None else v for v in r] for r in rows), key=repr)

    def op_write_partition(
        self,
        database: str,
        table: str,
        columns: list[list[str]],
        partition: dict[str, str],
        rows: list[list[Any]],
        table_location: str,
        partition_location: str,
        file_format: str = "parquet",
        mode: str = "append",
    ) -> int:
        """An import into this cluster's table: create the table if missing, add (``append``:
        an incremental import) or replace (``overwrite``: a full load) the partition's files at
        ``partition_location`` and register the partition."""
        if mode not in ("append", "overwrite"):
            raise HiveInputError(f"expected mode append or overwrite, got {mode!r}")
        pcols = [[k, "string"] for k in partition]
        self.op_create_table(database, table, columns, pcols, table_location, file_format)
        for n, t in columns:
            ident(n), col_type(t)
        schema = ", ".join(f"`{n}` {t}" for n, t in columns)
        df = self.spark.createDataFrame([tuple(r) for r in rows], schema=schema).coalesce(1)
        writer = df.write.mode(mode)
        target = to_location(partition_location)
        (writer.orc if file_format == "orc" else writer.parquet)(target)
        if partition:
            self.op_add_partition(database, table, partition, partition_location)
        else:  # an unpartitioned table: its files are at the table's location
            self.spark.sql(f"REFRESH TABLE {qualified(database, table)}")
        return len(rows)

    def op_drop_table(self, database: str, table: str) -> None:
        # external data stays: only the metastore entry is dropped (tables here are external
        # or managed by location; the replicated files are not ours to delete)
        self.spark.sql(f"DROP TABLE IF EXISTS {qualified(database, table)}")


# --------------------------------------------------------------------------- process
def build_session(home: str, metastore_uris: str | None, warehouse: str | None) -> Any:
    from pyspark.sql import SparkSession

    os.makedirs(home, exist_ok=True)
    warehouse = warehouse or os.path.join(home, "warehouse")
    builder = (
        SparkSession.builder.appName(f"hive-worker-{os.path.basename(home)}")
        .master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.memory", "512m")
        .config("spark.sql.warehouse.dir", to_location(os.path.abspath(warehouse)))
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        # short-lived metadata work: the C1 JIT and the serial GC start faster
        .config("spark.driver.extraJavaOptions",
                f"-Dderby.system.home={home} -XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
        .config("spark.sql.hive.convertMetastoreParquet", "true")
        .config("spark.local.dir", os.path.join(home, "spark-local"))
    )
    if metastore_uris:
        if not THRIFT_RE.match(metastore_uris):
            raise HiveInputError(f"expected thrift://host:port[,thrift://...], got {metastore_uris!r}")
        builder = builder.config("spark.hadoop.hive.metastore.uris", metastore_uris)
    else:
        db = os.path.join(home, "metastore_db")
        builder = builder.config(
            "spark.hadoop.javax.jdo.option.ConnectionURL", f"jdbc:derby:;databaseName={db};create=true"
        )
    spark = builder.enableHiveSupport().getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    spark.sql("SHOW DATABASES").collect()  # boot the metastore now: a failure is a start failure
    return spark


def serve(worker: Worker, inp: TextIO, out: TextIO) -> None:
    for line in inp:
        line = line.strip()
        if not line:
            continue
        rid = None
        try:
            req = json.loads(line)
            rid = req.get("id")
            op = req.get("op")
            if op == "shutdown":
                out.write(json.dumps({"id": rid, "ok": True, "result": None}) + "\n")
                out.flush()
                return
            fn = getattr(worker, f"op_{op}", None) if isinstance(op, str) and op.isidentifier() else None
            if fn is None:
                raise HiveInputError(f"unknown operation {op!r}")
            result = fn(**(req.get("args") or {}))
            resp = {"id": rid, "ok": True, "result": result}
        except HiveInputError as exc:
            resp = {"id": rid, "ok": False, "kind": "input", "error": str(exc)}
        except Exception as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(traceback.format_exc(), file=sys.stderr, flush=True)
            resp = {"id": rid, "ok": False, "kind": type(exc).__name__, "error": msg[:2000]}
        out.write(json.dumps(resp, default=str) + "\n")
        out.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m resources.hive_worker", description=__doc__)
    ap.add_argument("--home", required=True, help="this metastore's directory (Derby, logs, lock)")
    ap.add_argument("--metastore-uris", default=None, help="thrift://host:port (a real metastore)")
    ap.add_argument("--warehouse", default=None)
    args = ap.parse_args(argv)
    home = os.path.abspath(args.home)
    os.makedirs(home, exist_ok=True)
    # one session per metastore: a second worker on the same home is refused (Derby would
    # refuse the second boot anyway, later and less clearly)
    lock = open(os.path.join(home, "worker.lock"), "a+")  # noqa: SIM115 - held for the lifetime
    try:
        fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print(json.dumps({"ready": False, "error": f"metastore {home} is held by another process"}),
              flush=True)
        return 3
    # nothing but protocol lines on the real stdout: keep it on a private descriptor and point
    # fd 1 (inherited by the JVM Spark starts) and sys.stdout at stderr
    real_stdout = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    os.chdir(home)  # derby.log and any stray spark files land here, not in the caller's cwd
    try:
        spark = build_session(home, args.metastore_uris, args.warehouse)
    except Exception as exc:
        traceback.print_exc()  # the whole story goes to the worker log
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(json.dumps({"ready": False, "error": msg[:2000]}), file=real_stdout, flush=True)
        return 4
    print(json.dumps({"ready": True, "pid": os.getpid()}), file=real_stdout, flush=True)
    try:
        serve(Worker(spark), sys.stdin, real_stdout)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
