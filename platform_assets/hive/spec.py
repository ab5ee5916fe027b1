"""Which datasets are Hive datasets and how their partitions map to Hive partition specs;
the Hive parts of the spec checked at load."""

from __future__ import annotations

import datetime as dt
import re

from platform_assets.config import UNPARTITIONED_KEY, SpecError
from platform_assets.datasets import DatasetView, ResolvedSpec
from resources.hive import check_metastore_setting
from resources.hive_worker import PARTITION_VALUE_RE, HiveInputError

_LEVEL_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]{0,127})=(.+)$")
# properties of A's table that belong to A's metastore, not to the table's definition
_LOCAL_PROPERTIES = {"transient_lastDdlTime", "last_modified_by", "last_modified_time",
                     "numFiles", "totalSize", "numRows", "rawDataSize", "COLUMN_STATS_ACCURATE",
                     "copy_finished", "copy_finished_partition", "copy_slave", "copied_from",
                     "spark.sql.create.version"}


def table_properties(described: dict) -> dict[str, str]:
    """A described table's own properties (those of its definition, not of its metastore)."""
    return {k: v for k, v in described.get("properties", {}).items()
            if k not in _LOCAL_PROPERTIES and not k.startswith(("spark.", "option."))}


def hive_datasets(rs: ResolvedSpec) -> list[str]:
    """Datasets with a Hive table imported on a source cluster that has a metastore."""
    return [v.name for v in rs if v.import_key is not None]


def partition_columns(view: DatasetView) -> list[str]:
    """``dt=*/hour=*`` -> ``["dt", "hour"]``."""
    return [_LEVEL_RE.match(level).group(1) for level in view.layout_levels]  # type: ignore[union-attr]


def partition_spec(partition: str) -> dict[str, str]:
    """``dt=2026-11-20/hour=03`` -> ``{"dt": "2026-11-20", "hour": "03"}``; ``all`` -> ``{}``."""
    if partition == UNPARTITIONED_KEY:
        return {}
    out: dict[str, str] = {}
    for level in partition.split("/"):
        m = _LEVEL_RE.match(level)
        if not m or not PARTITION_VALUE_RE.match(m.group(2)):
            raise HiveInputError(
                f"partition {partition!r}: expected name=value levels with values matching "
                f"{PARTITION_VALUE_RE.pattern}"
            )
        out[m.group(1)] = m.group(2)
    return out


def validate_hive_spec(rs: ResolvedSpec) -> None:
    """The Hive parts of the spec: metastore settings, ``hive_table.cluster`` naming a target
    with a metastore, and Hive-style layouts (``name=*``) for datasets with a table. Raises
    :class:`SpecError` naming file and key."""
    spec = rs.spec
    errors = []
    for name, cluster in spec.clusters.items():
        if cluster.hive_metastore:
            try:
                check_metastore_setting(cluster.hive_metastore)
            except ValueError as exc:
                errors.append(f"{spec.source_file}: clusters.{name}.hive_metastore: {exc}")
    for d in hive_datasets(rs):
        wanted = rs[d].hive_table.cluster  # type: ignore[union-attr]
        if wanted is not None and not spec.clusters[wanted].hive_metastore:
            with_metastore = [t.cluster for t in rs[d].targets if spec.clusters[t.cluster].hive_metastore]
            errors.append(
                f"{spec.source_file}: datasets.{d}.hive_table.cluster: expected a target cluster "
                f"with a hive_metastore ({', '.join(with_metastore) or 'none has one'}), got {wanted!r}"
            )
        for level in rs[d].layout_levels:
            if not _LEVEL_RE.match(level):
                errors.append(
                    f"{spec.source_file}: datasets.{d}.partitions: a dataset with a hive_table "
                    f"needs Hive-style levels such as 'dt=*', got {level!r}"
                )
    if errors:
        raise SpecError("\n".join(errors))


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="microseconds")


def local_path(location: str) -> str:
    return location[len("file:"):] if location.startswith("file:") else location

