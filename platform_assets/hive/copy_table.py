"""Whole-table copy (history and custom tables) between two clusters' metastores: export A's
DDL and partitions, copy the data with the engine (verified, incremental on reruns), create the
table on B at the rewritten location and add every partition. Job ``hive_copy_table`` and
``python -m platform_assets.hive copy-table --from A --to B --database D --table T``.
"""

import argparse
import datetime as dt
import posixpath
import sys
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from platform_assets.config import HIVE_IDENT_RE, SpecError, load_spec
from platform_assets.datasets import resolve
from platform_assets.engine import CopyFailed, as_failure, run_copy
from platform_assets.hive.names import COPY_TABLE_JOB
from platform_assets.hive.spec import iso, local_path, table_properties
from platform_assets.hive.view import HiveSpec, resolve_hive
from replicator.secrets import redact
from resources.hive import HiveError, HiveMetastoreResource, HiveUnavailable
from resources.hive_worker import HiveInputError
from resources.replicator import ReplicatorResource


@dataclass
class TableCopyResult:
    source: str
    target: str
    location: str
    partitions: int
    rows_source: dict[str, int]
    rows_target: dict[str, int]
    files_copied: int = 0
    bytes_copied: int = 0
    created: bool = False
    reports: list[dict[str, Any]] = field(default_factory=list)

    @property
    def identical_counts(self) -> bool:
        return self.rows_source == self.rows_target


def _under(root: str, location: str) -> str | None:
    """``location`` relative to ``root`` (``""`` for the root itself), or None when outside."""
    root = root.rstrip("/")
    loc = local_path(location).rstrip("/")
    if loc == root:
        return ""
    if loc.startswith(root + "/"):
        rel = loc[len(root) + 1:]
        if all(part not in ("", ".", "..") for part in rel.split("/")):
            return rel
    return None


def copy_table(hs: HiveSpec, hive: HiveMetastoreResource, replicator: ReplicatorResource,
               source_cluster: str, target_cluster: str, database: str, table: str, *,
               target_path: str | None = None, target_database: str | None = None) -> TableCopyResult:
    """Copy one Hive table from cluster A to B: export A's DDL and partitions, copy the data
    with the engine (verified, incremental on reruns), create the table on B with the same
    schema at the rewritten location and add every partition there."""
    for c in (source_cluster, target_cluster):
        if c not in hs.cluster_roots:
            raise SpecError(f"{hs.source_file}: clusters: no cluster named {c!r}")
        if not hive.has(c):
            raise SpecError(f"{hs.source_file}: clusters.{c}.hive_metastore: expected a metastore")
    if source_cluster == target_cluster:
        raise SpecError("expected two different clusters")
    for name in (database, table, target_database or database):
        if not HIVE_IDENT_RE.match(name):
            raise HiveInputError(f"expected a Hive identifier (letters, digits, '_'), got {name!r}")
    a, b = hive.client(source_cluster), hive.client(target_cluster)
    info = a.describe_table(database, table)
    if not info.get("exists"):
        raise HiveError(f"table {database}.{table} does not exist on cluster {source_cluster!r}")
    a_root, b_root = hs.cluster_roots[source_cluster], hs.cluster_roots[target_cluster]
    rel = _under(a_root, info["location"])
    if target_path is not None:
        target_path = target_path.strip("/")
        if not target_path or any(p in ("", ".", "..") for p in target_path.split("/")):
            raise HiveInputError(f"target path {target_path!r}: expected a relative path without '..'")
        rel = target_path
    if rel is None:
        raise HiveInputError(
            f"table location {info['location']!r} is outside cluster {source_cluster!r}'s root "
            f"{a_root!r}: pass a target path"
        )
    dst_loc = posixpath.join(b_root, rel) if rel else b_root
    if _under(b_root, dst_loc) is None:
        raise HiveInputError(f"target location {dst_loc!r} escapes cluster {target_cluster!r}")
    partitions = a.list_partitions(database, table) if info["partition_columns"] else []
    # data: the table directory, then partitions stored outside it
    copies: list[tuple[str, str]] = [(local_path(info["location"]), dst_loc)]
    part_locs: list[tuple[dict[str, str], str]] = []
    for p in partitions:
        inner = _under(local_path(info["location"]), p["location"])
        if inner is not None:
            part_locs.append((p["spec"], posixpath.join(dst_loc, inner) if inner else dst_loc))
            continue
        outer = _under(a_root, p["location"])
        if outer is None:
            raise HiveInputError(f"partition location {p['location']!r} is outside cluster "
                                 f"{source_cluster!r}'s root")
        copies.append((local_path(p["location"]), posixpath.join(b_root, outer)))
        part_locs.append((p["spec"], posixpath.join(b_root, outer)))
    result = TableCopyResult(f"{source_cluster}.{database}.{table}",
                             f"{target_cluster}.{target_database or database}.{table}",
                             dst_loc, len(partitions), {}, {})
    opts = replicator.options(checksum=True)
    for src, dst in copies:
        report = run_copy(replicator, src, dst, opts)
        result.files_copied += report.files_copied
        result.bytes_copied += report.bytes_copied
        result.reports.append({"source": redact(src), "destination": redact(dst),
                               "files_copied": report.files_copied, "verified": report.verified})
    tdb = target_database or database
    props = table_properties(info)
    props["copied_from"] = f"{source_cluster}.{database}.{table}"
    result.created = b.create_table(tdb, table, info["columns"], info["partition_columns"], dst_loc,
                                    info.get("format", "parquet"), props)
    for pspec, loc in part_locs:
        b.add_partition(tdb, table, pspec, loc)
    b.set_properties(tdb, table, {"copy_finished": iso(dt.datetime.now(dt.UTC).timestamp())})
    result.rows_source = a.count_by_partition(database, table)
    result.rows_target = b.count_by_partition(tdb, table)
    return result


class CopyTableConfig(dg.Config):
    source_cluster: str
    target_cluster: str
    database: str
    table: str
    target_path: str | None = None
    target_database: str | None = None


def build_copy_table_job(hs: HiveSpec) -> dg.JobDefinition:
    @dg.op(name="copy_hive_table", description="Copy a whole Hive table (data, DDL, partitions).")
    def _copy_op(context: dg.OpExecutionContext, config: CopyTableConfig,
                 hive: HiveMetastoreResource, replicator: ReplicatorResource) -> None:
        try:
            r = copy_table(hs, hive, replicator, config.source_cluster, config.target_cluster,
                           config.database, config.table, target_path=config.target_path,
                           target_database=config.target_database)
        except CopyFailed as exc:
            raise as_failure(exc) from None
        except (HiveError, HiveInputError, SpecError) as exc:
            raise dg.Failure(description=str(exc),
                             allow_retries=isinstance(exc, HiveUnavailable)) from None
        context.log.info(f"{r.source} -> {r.target}: {r.partitions} partitions, "
                         f"{r.files_copied} files copied, rows {r.rows_target}")
        if not r.identical_counts:
            raise dg.Failure(description=f"row counts differ: {r.rows_source} vs {r.rows_target}")

    @dg.job(name=COPY_TABLE_JOB, description="Copy one Hive table from a cluster to another, on demand.")
    def _job() -> None:
        _copy_op()

    return _job



def main(argv: list[str] | None = None) -> int:
    """``python -m platform_assets.hive copy-table --from A --to B --database D --table T``."""
    from platform_assets.definitions import build_resources, spec_path

    ap = argparse.ArgumentParser(prog="python -m platform_assets.hive")
    sub = ap.add_subparsers(dest="command", required=True)
    ct = sub.add_parser("copy-table", help="copy a whole Hive table from one cluster to another")
    ct.add_argument("--spec", default=str(spec_path()),
                    help="the replication spec (default: $REPLICATION_SPEC, else replication.yaml)")
    ct.add_argument("--from", dest="source", required=True)
    ct.add_argument("--to", dest="target", required=True)
    ct.add_argument("--database", required=True)
    ct.add_argument("--table", required=True)
    ct.add_argument("--target-path", default=None, help="below the target cluster's root")
    ct.add_argument("--target-database", default=None)
    args = ap.parse_args(argv)
    try:
        spec = load_spec(args.spec)
        res = build_resources(spec)
        r = copy_table(resolve_hive(resolve(spec)), res["hive"], res["replicator"],
                       args.source, args.target,
                       args.database, args.table, target_path=args.target_path,
                       target_database=args.target_database)
    except (SpecError, HiveInputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (HiveError, CopyFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{r.source} -> {r.target} at {r.location}: {r.partitions} partitions, "
          f"{r.files_copied} files ({r.bytes_copied} bytes) copied; rows {r.rows_target}")
    return 0 if r.identical_counts else 1
