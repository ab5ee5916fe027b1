"""The replication spec (``replication.yaml``): pydantic models, validated once at load.

This module never imports dagster, so the CLI and other tools can read the same spec.
A mistake is reported as :class:`SpecError`, whose message names the file, the key path
(``datasets.events.targets[0].cluster``) and what was expected.
"""

from __future__ import annotations

import fnmatch
import functools
import itertools
import os
import posixpath
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
HIVE_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
LABEL_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
KAFKA_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SCHEME_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
# what Dagster accepts as an asset owner: an e-mail address or team:<name>
_OWNER_RE = re.compile(r"^(?:[^@\s]+@[^@\s]+\.[^@\s]+|team:[A-Za-z0-9_-]+)$")
UNPARTITIONED_KEY = "all"


def join_place(root: str, rest: str) -> str:
    """``root/rest``, ``rest`` being names (a path, a partition). Below a URI root, their
    ``%``, ``?`` and ``#`` are percent-encoded, which the engine decodes back: raw, ``?`` and
    ``#`` would start the URI's query or fragment."""
    if not rest:
        return root
    if _SCHEME_RE.match(root):
        rest = rest.replace("%", "%25").replace("?", "%3F").replace("#", "%23")
    return root + rest if root.endswith("/") else f"{root}/{rest}"


def file_uri_path(uri: str) -> str:
    """The local path a ``file://`` URI names, decoded as the engine (and so the CLI) decodes
    it: ``file:///data/a%20b`` is ``/data/a b``."""
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"expected a file:// URI without a host (file:///path), got {uri!r}")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise ValueError(f"expected a file:// URI with an absolute path, got {uri!r}")
    return os.path.normpath(path)


class SpecError(ValueError):
    """A replication spec that cannot be used; the message says where and what was expected."""


def parse_duration(value: Any) -> timedelta:
    """``90`` (seconds), ``"30m"``, ``"6h"``, ``"1.5d"``, ``"2w"`` -> timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30m, 6h or 1d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION_RE.match(str(value))
        if not m:
            raise ValueError(f"expected a duration such as 30m, 6h or 1d, got {value!r}")
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2) or "s"]
    if seconds <= 0:
        raise ValueError(f"expected a positive duration, got {value!r}")
    return timedelta(seconds=seconds)


def _is_number_type(annotation: Any) -> bool:
    """``int``, ``float`` or an optional/union of them with no ``bool`` member."""
    if annotation in (int, float):
        return True
    args = get_args(annotation)
    if get_origin(annotation) is Annotated:
        return _is_number_type(args[0])
    if not args or bool in args or get_origin(annotation) not in (Union, UnionType):
        return False
    return any(_is_number_type(a) for a in args) and all(
        _is_number_type(a) or a is type(None) for a in args)


class _YamlBoolean:
    """A YAML boolean given where a number was expected: no number type accepts it."""

    def __init__(self, value: bool) -> None:
        self.value = value

    def __repr__(self) -> str:
        return str(self.value).lower()


@functools.cache
def _number_keys(model: type[BaseModel]) -> frozenset[str]:
    """The input keys (names and aliases) of ``model``'s number fields."""
    keys = set()
    for name, f in model.model_fields.items():
        if _is_number_type(f.annotation):
            keys.add(name)
            alias = f.validation_alias
            keys.update(a for a in (alias.choices if isinstance(alias, AliasChoices) else [alias])
                        if isinstance(a, str))
            if f.alias:
                keys.add(f.alias)
    return frozenset(keys)


class _Model(BaseModel):
    # inf and nan are no setting: a delay of .inf, a min_age_s of .inf that holds every file
    # back forever; they are refused with the key ("Input should be a finite number")
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_numbers(cls, data: Any) -> Any:
        # YAML's yes/true is a boolean, and pydantic's lax mode takes it as 1: a spec saying
        # ``max_retries: true`` or ``workers: yes`` meant something else. The boolean goes on
        # wrapped, which the number field refuses by its key ("Input should be a valid integer").
        if not isinstance(data, Mapping) or not any(isinstance(v, bool) for v in data.values()):
            return data
        numbers = _number_keys(cls)
        return {k: (_YamlBoolean(v) if isinstance(v, bool) and k in numbers else v)
                for k, v in data.items()}


_SPARK_MASTER_RE = re.compile(
    r"^(local(\[(\*|[1-9][0-9]{0,3})(,[1-9][0-9]{0,2})?\])?|yarn|(spark|k8s|mesos)://\S+)$")
_SPARK_CONF_KEY_RE = re.compile(r"^spark\.[A-Za-z0-9_.-]+$")
# a project id, optionally domain-scoped (example.com:my-project)
_GCP_PROJECT_RE = re.compile(r"^(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{0,62}$")
_GCP_REGION_RE = re.compile(r"^(global|[a-z]+-[a-z]+[0-9]{1,2})$")
_HOST_PORT_RE = re.compile(r"^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\]):([0-9]{1,5})$")
EXECUTOR_KINDS = ("local", "spark", "distcp", "dataproc")


def _check_labels(v: dict[str, str]) -> dict[str, str]:
    for key, value in v.items():
        if not LABEL_RE.match(key):
            raise ValueError(
                f"label key {key!r}: expected lower-case letters, digits, '_' or '-', "
                "starting with a letter"
            )
        if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9_-]{0,63}", value):
            raise ValueError(
                f"label {key}={value!r}: expected a value of lower-case letters, digits, '_' or '-'"
            )
    return v


class LocalExecutorSpec(_Model):
    """Threads in the process that runs the copy (the Dagster run): the default."""

    kind: Literal["local"] = "local"


class SparkExecutorSpec(_Model):
    """Our copy function inside Spark tasks (``--executor spark``)."""

    kind: Literal["spark"]
    master: str = "local[2]"
    conf: dict[str, str] = Field(default_factory=dict)

    @field_validator("master")
    @classmethod
    def _master(cls, v: str) -> str:
        if not _SPARK_MASTER_RE.match(v):
            raise ValueError(
                f"expected a Spark master such as local[2], local[*], yarn or spark://host:port, got {v!r}")
        return v

    @field_validator("conf", mode="before")
    @classmethod
    def _conf(cls, v: Any) -> Any:
        if not isinstance(v, Mapping):
            raise ValueError("expected a mapping of Spark properties such as {spark.executor.memory: 2g}")
        out: dict[str, str] = {}
        for key, value in v.items():
            if not isinstance(key, str) or not _SPARK_CONF_KEY_RE.match(key):
                raise ValueError(f"conf key {key!r}: expected a Spark property name (spark.*)")
            if isinstance(value, Mapping | list | tuple) or value is None:
                raise ValueError(f"conf {key}: expected a string, number or boolean, got {value!r}")
            text = str(value).lower() if isinstance(value, bool) else str(value)
            if any(ord(c) < 32 for c in text):
                raise ValueError(f"conf {key}: expected a value without control characters")
            out[key] = text
        if out.get("spark.speculation", "false").strip().lower() in ("true", "1", "yes"):
            raise ValueError("conf spark.speculation: expected false (two attempts of one task "
                             "would write the same staged file)")
        return out


class DistCpExecutorSpec(_Model):
    """Real ``hadoop distcp`` moves the bytes (``--executor distcp``)."""

    kind: Literal["distcp"]
    # a directory with core-site.xml / mapred-site.xml (path relative to the spec, or absolute);
    # default: none, DistCp runs on the local MapReduce runner in a child JVM
    hadoop_conf_dir: str | None = Field(default=None, min_length=1)
    maps: int | None = Field(default=None, ge=1, le=10000)  # DistCp -m; default: platform.workers


class DataprocExecutorSpec(_Model):
    """A Dataproc job on a cluster chosen from a pool by labels."""

    kind: Literal["dataproc"]
    project: str
    region: str
    # the Dataproc API endpoint (host:port); default: <region>-dataproc.googleapis.com:443.
    # Tests point it at a local JobController.
    endpoint: str | None = None
    cluster_labels: dict[str, str] = Field(min_length=1)
    job: Literal["distcp", "replicator"] = "distcp"

    @field_validator("project")
    @classmethod
    def _project(cls, v: str) -> str:
        if not _GCP_PROJECT_RE.match(v):
            raise ValueError(f"expected a Google Cloud project id (lower-case letters, digits "
                             f"and '-', starting with a letter), got {v!r}")
        return v

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not _GCP_REGION_RE.match(v):
            raise ValueError(f"expected a Dataproc region such as europe-west1, got {v!r}")
        return v

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is None:
            return v
        m = _HOST_PORT_RE.match(v)
        if not m or not 0 < int(m.group(2)) < 65536:
            raise ValueError(f"expected host:port, got {v!r}")
        return v

    @field_validator("cluster_labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_labels(v)


ExecutorConfig = LocalExecutorSpec | SparkExecutorSpec | DistCpExecutorSpec | DataprocExecutorSpec
ExecutorSpec = Annotated[
    LocalExecutorSpec | SparkExecutorSpec | DistCpExecutorSpec | DataprocExecutorSpec,
    Field(discriminator="kind"),
]


def _executor_before(v: Any) -> Any:
    """A readable error for a missing or unknown ``kind`` (pydantic's tagged-union one is not)."""
    if v is None:
        return {"kind": "local"}
    if isinstance(v, str):  # ``executor: spark`` is short for ``{kind: spark}``
        v = {"kind": v}
    if not isinstance(v, Mapping):
        raise ValueError(f"expected a mapping with kind ({', '.join(EXECUTOR_KINDS)}), "
                         f"got {type(v).__name__}")
    kind = v.get("kind", "local")
    if kind not in EXECUTOR_KINDS:
        raise ValueError(f"kind: expected one of {', '.join(EXECUTOR_KINDS)}, got {kind!r}")
    return {**v, "kind": kind}


class Cluster(_Model):
    """A file system the platform reads from or writes to (an HDFS cluster, a bucket, a folder)."""

    uri: str = Field(min_length=1, description="file system URI, or a path relative to the spec")
    hive_metastore: str | None = None
    # where copies writing to this cluster run (default: threads in the Dagster run)
    executor: ExecutorSpec = LocalExecutorSpec()
    max_concurrent_copies: int = Field(default=4, ge=1, le=1000)

    @model_validator(mode="before")
    @classmethod
    def _no_dataproc_pool(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "dataproc_pool" in data:
            pool = data["dataproc_pool"]
            labels = pool.get("labels") if isinstance(pool, Mapping) else None
            region = pool.get("region") if isinstance(pool, Mapping) else None
            raise ValueError(
                "dataproc_pool: replaced by executor; write executor: {kind: dataproc, "
                f"project: PROJECT, region: {region or 'REGION'}, "
                f"cluster_labels: {dict(labels) if isinstance(labels, Mapping) else '{...}'}}} "
                "(or leave it out: the default executor is local)"
            )
        return data

    @field_validator("executor", mode="before")
    @classmethod
    def _executor(cls, v: Any) -> Any:
        return {"kind": "local"} if v is None else _executor_before(v)

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        if ".." in Path(_SCHEME_RE.sub("", v)).parts:
            raise ValueError("expected a URI or path without '..' components")
        if _SCHEME_RE.match(v) and ("?" in v or "#" in v):
            raise ValueError("expected a URI without '?' or '#' (they start a query or a "
                             "fragment, which name no path); write them as %3F and %23")
        if v.startswith("file://"):
            file_uri_path(v)  # a host, or no absolute path: refused here, with the key
        return v.rstrip("/") or "/"


class Endpoint(_Model):
    """A place on a cluster: ``cluster`` plus a ``path`` below its URI."""

    cluster: str
    path: str = ""

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        v = v.strip("/")
        if v and any(part in ("", ".", "..") for part in v.split("/")):
            raise ValueError("expected a relative path without '.', '..' or empty components")
        return v


class Target(Endpoint):
    """One replica of a dataset. ``via`` copies from another target instead of the source
    (multi-cluster sync: that replica becomes an upstream asset)."""

    via: str | None = None


class Freshness(_Model):
    fail_window: timedelta
    warn_window: timedelta | None = None

    @field_validator("fail_window", "warn_window", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return None if v is None else parse_duration(v)

    @model_validator(mode="after")
    def _order(self) -> Freshness:
        if self.warn_window is not None and self.warn_window >= self.fail_window:
            raise ValueError("expected warn_window shorter than fail_window")
        return self


class HiveTable(_Model):
    database: str
    table: str
    cluster: str | None = None  # where to register it; default: every target with a metastore

    @field_validator("database", "table")
    @classmethod
    def _ident(cls, v: str) -> str:
        if not HIVE_IDENT_RE.match(v):
            raise ValueError("expected a Hive identifier (letters, digits, '_')")
        return v


class Dataset(_Model):
    source: Endpoint
    partitions: str | None = Field(
        default=None, description="partition layout, e.g. 'dt=*' or 'dt=*/hour=*'; none: one copy"
    )
    targets: list[Target] = Field(min_length=1)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    include_regex: tuple[str, ...] = Field(default=(), description="regexes searched in relative paths")
    exclude_regex: tuple[str, ...] = ()
    min_age_s: float = Field(default=0.0, ge=0)
    max_age: float | None = Field(default=None, description="leave files older than this alone: "
                                  "seconds or a duration such as '7d' or '12h'")
    transforms: tuple[str, ...] = Field(default=(), description="gunzip, untar, gpg-encrypt=RCPT, gpg-decrypt")
    preserve: tuple[str, ...] = Field(
        default=("times",), description="attributes kept on the replicas (--preserve): times, "
        "perms, owner, group, replication, blocksize; a comma string or a list")
    mode: Literal["sync", "async"] = "sync"
    # how the change sensor finds changed partitions: listing the partition directories
    # (any back end), or an HDFS snapshot diff of the source root per tick (the root must be
    # snapshottable; see docs/platform.md)
    change_detection: Literal["listing", "snapshot"] = "listing"
    incremental: bool = True
    delete: bool = False
    freshness: Freshness | None = None
    hive_table: HiveTable | None = None
    description: str | None = Field(default=None, max_length=2000)
    owners: tuple[str, ...] = ()  # e-mail addresses or team:<name>, shown on every asset
    # where this dataset's copies run, for every target: replaces the target cluster's executor
    executor: ExecutorSpec | None = None

    @field_validator("executor", mode="before")
    @classmethod
    def _executor(cls, v: Any) -> Any:
        return None if v is None else _executor_before(v)

    @field_validator("owners", mode="before")
    @classmethod
    def _owners(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list | tuple):
            raise ValueError("expected a list of owners (e-mail addresses or team:<name>)")
        for owner in v:
            if not isinstance(owner, str) or not _OWNER_RE.match(owner):
                raise ValueError(f"owner {owner!r}: expected an e-mail address or team:<name>")
        return v

    @field_validator("partitions", mode="before")
    @classmethod
    def _layout(cls, v: Any) -> Any:
        if v is None or (isinstance(v, str) and v.strip().lower() in ("", "none")):
            return None
        if not isinstance(v, str):
            raise ValueError("expected a layout such as 'dt=*', or 'none'")
        levels = v.strip("/").split("/")
        for level in levels:
            if level in ("", ".", "..") or "**" in level:
                raise ValueError(
                    f"expected one glob per directory level such as 'dt=*', got {v!r}"
                )
        return "/".join(levels)

    @field_validator("preserve", mode="before")
    @classmethod
    def _preserve(cls, v: Any) -> Any:
        from replicator.errors import UsageError
        from replicator.options import parse_preserve

        if isinstance(v, list | tuple) and all(isinstance(x, str) for x in v):
            v = ",".join(v)
        if not isinstance(v, str):
            raise ValueError("expected a comma list or a list of attribute names")
        try:
            return tuple(sorted(parse_preserve(v)))
        except UsageError as exc:
            raise ValueError(str(exc).removeprefix("--preserve: ")) from None

    @field_validator("include", "exclude", mode="before")
    @classmethod
    def _globs(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list) and any(not isinstance(x, str) or not x for x in v):
            raise ValueError("expected a list of non-empty glob strings")
        return v

    @field_validator("include_regex", "exclude_regex", mode="before")
    @classmethod
    def _regexes(cls, v: Any) -> Any:
        from replicator.errors import UsageError
        from replicator.filters import compile_regex

        v = [v] if isinstance(v, str) else v
        if not isinstance(v, list) or any(not isinstance(x, str) for x in v):
            raise ValueError("expected a list of regular expressions")
        try:
            for x in v:
                compile_regex(x, "regex")
        except UsageError as exc:
            raise ValueError(str(exc).removeprefix("regex: ")) from None
        return v

    @field_validator("max_age", mode="before")
    @classmethod
    def _max_age(cls, v: Any) -> Any:
        from replicator.errors import UsageError
        from replicator.options import parse_duration

        if v is None:
            return None
        try:
            seconds = parse_duration(v, "max_age")
        except UsageError:
            raise ValueError(f"expected seconds or a duration such as 30m, 12h, 7d, got {v!r}") from None
        if seconds <= 0:
            raise ValueError(f"expected a duration > 0, got {v!r}")
        return seconds

    @field_validator("transforms", mode="before")
    @classmethod
    def _transforms(cls, v: Any) -> Any:
        from replicator.errors import UsageError
        from replicator.transforms import parse_chain

        v = [v] if isinstance(v, str) else v
        if not isinstance(v, list) or any(not isinstance(x, str) for x in v):
            raise ValueError("expected a list such as [gunzip, untar]")
        try:
            parse_chain(v)
        except UsageError as exc:
            raise ValueError(str(exc).removeprefix("--transform ").removeprefix("--transform: ")) from None
        return v

    @property
    def partitioned(self) -> bool:
        return self.partitions is not None

    @property
    def layout_levels(self) -> tuple[str, ...]:
        return tuple(self.partitions.split("/")) if self.partitions else ()

    def matches_partition(self, rel: str) -> bool:
        """Whether ``rel`` (``dt=2026-01-01``) is a partition directory of this layout."""
        parts = rel.split("/")
        levels = self.layout_levels
        return len(parts) == len(levels) and all(
            fnmatch.fnmatchcase(p, pat) for p, pat in zip(parts, levels, strict=True)
        )


class NotifierSpec(_Model):
    """Where run notifications go. Secrets are named by environment variable, never written here."""

    kind: Literal["jsonl", "webhook", "slack", "kafka"] = "jsonl"
    outbox: str = ".demo/outbox/notifications.jsonl"
    url_env: str | None = None  # webhook URL (may carry a token)
    token_env: str | None = None  # Slack bot token
    channel: str | None = None
    bootstrap_servers: str | None = None  # kafka: host:port[,host:port]
    topic: str | None = None  # kafka: default topic
    topics: dict[str, str] = Field(default_factory=dict)  # kafka: event/step -> topic

    @model_validator(mode="after")
    def _needs(self) -> NotifierSpec:
        if self.kind == "webhook" and not self.url_env:
            raise ValueError("kind webhook: expected url_env (the variable holding the URL)")
        if self.kind == "slack" and not (self.token_env and self.channel):
            raise ValueError("kind slack: expected token_env and channel")
        if self.kind == "kafka" and not (self.bootstrap_servers and (self.topic or self.topics)):
            raise ValueError("kind kafka: expected bootstrap_servers and topic (or topics per step)")
        for name in (self.topic, *self.topics.values()):
            if name is not None and not KAFKA_TOPIC_RE.match(name):
                raise ValueError(f"kafka topic {name!r}: expected letters, digits, '.', '_' or '-'")
        return self


class ChangeSensorSpec(_Model):
    interval_s: int = Field(default=60, ge=5)
    max_partitions_per_tick: int = Field(default=20000, ge=1)
    tick_budget_s: float = Field(default=25.0, gt=0, le=50)
    workers: int = Field(default=8, ge=1, le=64)
    # a copy run that failed for good (its retries spent) is requested again after this
    # delay, doubled per further failure up to the maximum, until a copy of that content
    # succeeds or the content changes
    failed_retry_s: float = Field(default=300.0, ge=0)
    failed_retry_max_s: float = Field(default=6 * 3600.0, gt=0)
    # pacing: run requests per tick, and none while this many copy runs wait in the queue
    max_runs_per_tick: int = Field(default=500, ge=1)
    max_queued_runs: int = Field(default=2000, ge=1)
    # seeding an empty cursor: materializations read per tick (newest first)
    seed_records_per_tick: int = Field(default=20000, ge=100)


class AuditSpec(_Model):
    """The legacy flow: audit files ``<prefix><timestamp>`` with ``SOURCE_DIR DEST_DIR`` lines."""

    # a directory holding the audit files: a path relative to the spec, or a URI on any back
    # end the engine reaches (gs://bucket/prefix, s3://..., sftp://..., hdfs://...)
    dir: str = Field(min_length=1)
    prefix: str = Field(default="folders_to_copy_", min_length=1)
    # where a file goes once all its copies succeeded; default: none, the file is deleted
    archive_dir: str | None = Field(default=None, min_length=1)
    interval_s: int = Field(default=30, ge=5)


class DataprocPlatformSpec(_Model):
    """What every Dataproc job of the platform shares (``platform.dataproc``): where their
    side files go (the DistCp filters file, Pipes messages) and how they are followed."""

    staging: str  # gs://bucket/prefix the clusters can read
    poll_interval_s: float = Field(default=5.0, gt=0, le=300)
    timeout_s: float = Field(default=24 * 3600.0, gt=0)
    # the replicator job's driver; default: this install's resources/dataproc_job.py
    main_python_file_uri: str | None = None
    python_file_uris: list[str] = Field(default_factory=list)

    @field_validator("staging")
    @classmethod
    def _staging(cls, v: str) -> str:
        if not re.fullmatch(r"gs://[a-z0-9][a-z0-9._-]{1,221}[a-z0-9](/[^\s]*)?", v):
            raise ValueError(f"expected gs://bucket/prefix, got {v!r}")
        return v.rstrip("/")


class RetrySpec(_Model):
    max_retries: int = Field(default=3, ge=0, le=20)
    delay_s: float = Field(default=30.0, ge=0)
    backoff: Literal["exponential", "linear"] = "exponential"


LANDING_TYPES = ("string", "int", "float", "bool", "date", "timestamp")
LANDING_STEPS = ("detected", "ingested", "validated", "rejected", "converted", "report_ready")


class RowBounds(_Model):
    min: int = Field(default=0, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _order(self) -> RowBounds:
        if self.max is not None and self.max < self.min:
            raise ValueError(f"expected max >= min, got min {self.min}, max {self.max}")
        return self


class LandingDataset(_Model):
    """Files users drop in a watched directory: ingested to the raw area, validated,
    converted to Parquet and reported on (see ``platform_assets/landing.py``)."""

    source: Endpoint  # the watched landing directory
    raw: Endpoint  # the cluster's raw area (a verified copy of the landing files)
    output: Endpoint  # Parquet dataset; reports and history live under <output>/_landing
    format: Literal["csv", "jsonl"] = "csv"
    include: tuple[str, ...] = ()
    min_age_s: float = Field(default=60.0, ge=0)
    columns: dict[str, Literal[LANDING_TYPES]] = Field(min_length=1)  # type: ignore[valid-type]
    rows: RowBounds = RowBounds()  # per file
    not_null: tuple[str, ...] = ()
    unique: tuple[str, ...] = ()  # key columns: their combination is unique within a file
    partition_by: str | None = None
    spark_threshold_bytes: int | None = Field(default=None, ge=0)
    notify: tuple[Literal[LANDING_STEPS], ...] = LANDING_STEPS  # type: ignore[valid-type]
    interval_s: int = Field(default=30, ge=5)

    @field_validator("include", mode="before")
    @classmethod
    def _globs(cls, v: Any) -> Any:
        return Dataset._globs(v)

    @field_validator("columns")
    @classmethod
    def _cols(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not NAME_RE.match(name):
                raise ValueError(f"column {name!r}: expected letters, digits and '_'")
        return v

    @model_validator(mode="after")
    def _known_columns(self) -> LandingDataset:
        cols = set(self.columns)
        for key, names in (("not_null", self.not_null), ("unique", self.unique),
                           ("partition_by", (self.partition_by,) if self.partition_by else ())):
            for n in names:
                if n not in cols:
                    raise ValueError(
                        f"{key}: expected one of the declared columns ({', '.join(self.columns)}), "
                        f"got {n!r}"
                    )
        return self

    @property
    def file_globs(self) -> tuple[str, ...]:
        return self.include or (f"*.{self.format}",)


class TriggerSpec(_Model):
    """The HTTP trigger endpoint (``python -m platform_assets.trigger``)."""

    allow: tuple[str, ...] = Field(min_length=1)  # landing or replication datasets
    token_env: str = "REPLICATOR_TRIGGER_TOKEN"
    listen: str = "127.0.0.1:8765"
    dagster_url: str = "http://127.0.0.1:3000"

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port, got {v!r}")
        return v

    @field_validator("dagster_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s) URL, got {v!r}")
        return v.rstrip("/")


class PlatformSpec(_Model):
    # the engine's state store, key ``state`` (``state_path`` still read): an SQLite file
    # (relative to the spec), a postgresql:// URL, or env:NAME (a URL with a password must be)
    state_path: str = Field(default=".demo/state/replicator.db",
                            validation_alias=AliasChoices("state", "state_path"))
    # embedded Hive metastores (Derby + warehouse per cluster) and Hive worker logs
    hive_home: str = ".demo/hive"
    workers: int = Field(default=8, ge=1, le=1024)
    marker: str | None = "_SUCCESS.json"
    notifier: NotifierSpec = NotifierSpec()
    change_sensor: ChangeSensorSpec = ChangeSensorSpec()
    audit: AuditSpec | None = None
    retries: RetrySpec = RetrySpec()
    dataproc: DataprocPlatformSpec | None = None  # needed once an executor is of kind dataproc
    # whether the code location's sensors and schedules run as soon as it is loaded; a new
    # production deployment may want them stopped until someone starts them in the UI
    default_status: Literal["running", "stopped"] = "running"

    @field_validator("state_path")
    @classmethod
    def _state(cls, v: str) -> str:
        if v.startswith("env:"):
            if not v[4:]:
                raise ValueError("expected env:VARIABLE_NAME")
            return v
        from urllib.parse import urlsplit

        from replicator.errors import UsageError
        from replicator.state import state_scheme

        try:
            kind = state_scheme(v)
        except UsageError as exc:
            raise ValueError(str(exc).removeprefix("--state: ")) from None
        if kind == "postgresql" and urlsplit(v).password:
            raise ValueError("a state URL with a password belongs in the environment: "
                             "write env:VARIABLE_NAME (or use PGPASSWORD / ~/.pgpass)")
        return v



class BotSpec(_Model):
    """The chat bot (``python -m platform_assets.bot``): relays each step's message to the chats
    subscribed to its dataset and takes commands from the allowed chats. The token is named by
    environment variable, never written here."""

    token_env: str = "REPLICATOR_BOT_TOKEN"
    api_url: str = "https://api.telegram.org"  # Bot API base URL (a local one in tests)
    allowed_chats: tuple[int, ...] = ()  # chats whose commands are accepted
    subscriptions: dict[str, tuple[int, ...]] = Field(default_factory=dict)  # dataset -> chats
    trigger_url: str | None = None  # default: http://<trigger.listen>
    state: str = ".demo/bot/state.json"  # update offset, outbox position, last report per dataset
    group_id: str = "replicator-chat-bot"  # Kafka consumer group (notifier kind kafka)
    poll_s: int = Field(default=10, ge=0, le=50)  # getUpdates long-poll timeout


class ReplicationSpec(_Model):
    version: Literal[1] = 1
    platform: PlatformSpec = PlatformSpec()
    clusters: dict[str, Cluster] = Field(min_length=1)
    datasets: dict[str, Dataset] = Field(default_factory=dict)
    landing: dict[str, LandingDataset] = Field(default_factory=dict)
    trigger: TriggerSpec | None = None
    bot: BotSpec | None = None

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _source_file: str = PrivateAttr(default="<spec>")

    @field_validator("clusters", "datasets", "landing")
    @classmethod
    def _names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not NAME_RE.match(name):
                raise ValueError(
                    f"name {name!r}: expected letters, digits and '_', starting with a letter or '_'"
                )
        return v

    @model_validator(mode="after")
    def _references(self) -> ReplicationSpec:
        clusters = sorted(self.clusters)
        errors: list[str] = []
        for ds_name, ds in self.datasets.items():
            where = f"datasets.{ds_name}"
            if ds.source.cluster not in self.clusters:
                errors.append(
                    f"{where}.source.cluster: expected one of the declared clusters "
                    f"({', '.join(clusters)}), got {ds.source.cluster!r}"
                )
            seen: list[str] = []
            for i, t in enumerate(ds.targets):
                if t.cluster not in self.clusters:
                    errors.append(
                        f"{where}.targets[{i}].cluster: expected one of the declared clusters "
                        f"({', '.join(clusters)}), got {t.cluster!r}"
                    )
                if t.cluster == ds.source.cluster:
                    errors.append(
                        f"{where}.targets[{i}].cluster: expected a cluster other than the "
                        f"source cluster {ds.source.cluster!r}"
                    )
                if t.cluster in seen:
                    errors.append(
                        f"{where}.targets[{i}].cluster: expected one target per cluster, "
                        f"{t.cluster!r} appears twice"
                    )
                if t.via is not None and t.via not in seen:
                    errors.append(
                        f"{where}.targets[{i}].via: expected the cluster of an earlier target "
                        f"({', '.join(seen) or 'none'}), got {t.via!r}"
                    )
                seen.append(t.cluster)
            if ds.transforms:
                for i, t in enumerate(ds.targets):
                    ex = self.executor_for(ds_name, t.cluster, strict=False)
                    if ex is not None and ex.kind != "local":
                        key = (f"{where}.executor" if ds.executor is not None
                               else f"clusters.{t.cluster}.executor")
                        errors.append(
                            f"{key}: expected kind local for dataset {ds_name!r}, whose "
                            f"transforms ({', '.join(ds.transforms)}) run with the local "
                            f"executor only, got {ex.kind!r} (targets[{i}])"
                        )
            for t in ds.targets:
                ex = self.executor_for(ds_name, t.cluster, strict=False)
                if ex is not None and ex.kind == "dataproc" and self.platform.dataproc is None:
                    key = (f"{where}.executor" if ds.executor is not None
                           else f"clusters.{t.cluster}.executor")
                    errors.append(
                        f"platform.dataproc: expected a section with staging: gs://bucket/prefix "
                        f"(where Dataproc jobs' side files go), needed by {key} (kind dataproc)")
                    break
            if ds.hive_table and ds.hive_table.cluster and ds.hive_table.cluster not in seen:
                errors.append(
                    f"{where}.hive_table.cluster: expected one of the dataset's target clusters "
                    f"({', '.join(seen)}), got {ds.hive_table.cluster!r}"
                )
        if not errors:
            errors.extend(self._overlapping_targets())
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def _overlapping_targets(self) -> list[str]:
        """Two datasets' replicas in one place, or one inside what the other copies (its root
        when unpartitioned, its partition directories when partitioned): one copy would
        overwrite, or with ``delete`` (always for a full load) remove, the other's files."""
        def place(t: Target) -> str:
            root = self.clusters[t.cluster].uri
            if not _SCHEME_RE.match(root) or root.startswith("file://"):
                local = file_uri_path(root) if root.startswith("file://") else root
                return posixpath.normpath(posixpath.join(local, t.path))
            return f"{root.rstrip('/')}/{t.path}".rstrip("/")

        def inside(inner: str, outer: str, ds: Dataset) -> bool:
            if inner == outer:
                return True
            prefix = outer.rstrip("/") + "/"
            if not inner.startswith(prefix):
                return False
            levels = ds.layout_levels  # () when unpartitioned: the copy owns the whole root
            parts = inner[len(prefix):].split("/")
            return all(fnmatch.fnmatchcase(p, pat) for p, pat in zip(parts, levels, strict=False))

        seen: list[tuple[str, str, Dataset, str]] = []  # (place, key, dataset, its name)
        errors: list[str] = []
        for ds_name, ds in self.datasets.items():
            for i, t in enumerate(ds.targets):
                here, key = place(t), f"datasets.{ds_name}.targets[{i}]"
                for other, other_key, other_ds, other_name in seen:
                    if other_name != ds_name and (inside(here, other, other_ds)
                                                  or inside(other, here, ds)):
                        errors.append(
                            f"{key}: expected a place no other dataset's replica overlaps, got "
                            f"{here!r}, which overlaps {other_key} ({other!r})")
                seen.append((here, key, ds, ds_name))
        return errors

    @model_validator(mode="after")
    def _landing_references(self) -> ReplicationSpec:
        errors: list[str] = []
        clusters = ", ".join(sorted(self.clusters))
        for name, ld in self.landing.items():
            if name in self.datasets:
                errors.append(f"landing.{name}: expected a name not used by datasets, got {name!r}")
            for key in ("source", "raw", "output"):
                ep = getattr(ld, key)
                if ep.cluster not in self.clusters:
                    errors.append(
                        f"landing.{name}.{key}.cluster: expected one of the declared clusters "
                        f"({clusters}), got {ep.cluster!r}"
                    )
            if (ld.source.cluster, ld.source.path) == (ld.raw.cluster, ld.raw.path):
                errors.append(f"landing.{name}.raw: expected a place other than the source")
        if self.trigger is not None:
            known = sorted({*self.landing, *self.datasets})
            for i, name in enumerate(self.trigger.allow):
                if name not in known:
                    errors.append(
                        f"trigger.allow[{i}]: expected a landing or replication dataset "
                        f"({', '.join(known) or 'none declared'}), got {name!r}"
                    )
        if self.bot is not None:
            known = sorted({*self.landing, *self.datasets})
            for name in self.bot.subscriptions:
                if name not in known:
                    errors.append(
                        f"bot.subscriptions.{name}: expected a landing or replication dataset "
                        f"({', '.join(known) or 'none declared'}), got {name!r}"
                    )
        if errors:
            raise ValueError("; ".join(errors))
        return self

    # ------------------------------------------------------------------ resolution
    @property
    def base_dir(self) -> Path:
        return self._base_dir

    @property
    def source_file(self) -> str:
        return self._source_file

    def resolve_location(self, location: str) -> str:
        """A URI stays as it is; a relative path is taken relative to the spec's directory."""
        if _SCHEME_RE.match(location):
            if location.startswith("file://"):
                return file_uri_path(location)
            return location.rstrip("/")
        return os.path.normpath(os.path.join(self._base_dir, os.path.expanduser(location)))

    def cluster_root(self, cluster: str) -> str:
        return self.resolve_location(self.clusters[cluster].uri)

    def endpoint_uri(self, endpoint: Endpoint, partition: str | None = None) -> str:
        """The URI (or absolute local path) of ``endpoint``, optionally of one partition under it."""
        parts = [self.cluster_root(endpoint.cluster)]
        if endpoint.path:
            parts.append(endpoint.path)
        if partition and partition != UNPARTITIONED_KEY:
            parts.append(partition)
        return join_place(parts[0].rstrip("/") or "/", "/".join(parts[1:]))

    def target(self, dataset: str, cluster: str) -> Target:
        for t in self.datasets[dataset].targets:
            if t.cluster == cluster:
                return t
        raise KeyError(f"dataset {dataset!r} has no target on cluster {cluster!r}")

    def executor_for(self, dataset: str, cluster: str, *, strict: bool = True) -> ExecutorConfig | None:
        """Where ``dataset``'s copy to its target on ``cluster`` runs: the dataset's
        ``executor`` when it has one, else the target cluster's (default local)."""
        ds = self.datasets[dataset]
        if ds.executor is not None:
            return ds.executor
        if cluster not in self.clusters:
            if strict:
                raise KeyError(f"no cluster {cluster!r}")
            return None
        return self.clusters[cluster].executor

    def copy_source(self, dataset: str, target: Target) -> Endpoint:
        """Where a target copies from: the dataset's source, or the target named by ``via``."""
        if target.via is None:
            return self.datasets[dataset].source
        return self.target(dataset, target.via)

    @property
    def state_path(self) -> str:
        return self.resolve_location(self.platform.state_path)


_EXECUTOR_MODELS: dict[str, type[_Model]] = {
    "local": LocalExecutorSpec, "spark": SparkExecutorSpec, "distcp": DistCpExecutorSpec,
    "dataproc": DataprocExecutorSpec,
}


def _executor_kind(loc: tuple[Any, ...]) -> str | None:
    """The executor kind pydantic put in ``loc`` as the tagged union's tag, if any."""
    for prev, part in itertools.pairwise(loc):
        if prev == "executor" and part in _EXECUTOR_MODELS:
            return str(part)
    return None


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    prev: Any = None
    for part in loc:
        skip = prev == "executor" and part in _EXECUTOR_MODELS  # the tagged union's tag
        prev = part
        if isinstance(part, int):
            out += f"[{part}]"
        elif skip or str(part).startswith(("function-", "union[", "tagged-union[")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _format_validation_error(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = _format_loc(tuple(err.get("loc", ())))
        msg = err.get("msg", "invalid")
        msg = msg.removeprefix("Value error, ")
        kind = _executor_kind(tuple(err.get("loc", ())))
        if err.get("type") == "extra_forbidden" and kind is not None:
            keys = [k for k in _EXECUTOR_MODELS[kind].model_fields if k != "kind"]
            msg = (f"unknown key for executor kind {kind} (expected "
                   f"{', '.join(keys) if keys else 'no other key than kind'})")
        elif err.get("type") == "extra_forbidden":
            msg = "unknown key (expected only the documented keys)"
        elif err.get("type") == "missing":
            msg = "required key is missing"
        if loc == "(top level)" and ": expected" in msg:
            lines.extend(f"{source}: {m.strip()}" for m in msg.split("; "))
        else:
            lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def parse_spec(data: Any, *, source: str = "<spec>", base_dir: str | Path | None = None) -> ReplicationSpec:
    """Validate already-parsed YAML/JSON data into a :class:`ReplicationSpec`."""
    if not isinstance(data, Mapping):
        raise SpecError(
            f"{source}: (top level): expected a mapping with keys version, platform, clusters, "
            f"datasets; got {type(data).__name__}"
        )
    try:
        spec = ReplicationSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise SpecError(_format_validation_error(source, exc)) from None
    spec._base_dir = Path(base_dir).resolve() if base_dir is not None else Path.cwd()
    spec._source_file = source
    return spec


def load_spec(path: str | Path) -> ReplicationSpec:
    """Read and validate a replication spec; relative paths in it are relative to its directory."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the replication spec: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise SpecError(f"{path}:{line}: expected UTF-8 text: byte 0x{exc.object[exc.start]:02x} "
                        f"at offset {exc.start} is not UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{path}{where}: expected valid YAML: {problem}") from None
    return parse_spec(data, source=str(path), base_dir=path.parent)
