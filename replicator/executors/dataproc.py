"""Dataproc submitter: run a copy as a job on a cluster of a pool chosen by labels.

Two kinds of job, through the real ``google.cloud.dataproc_v1.JobControllerClient``:

* :func:`distcp_job`: a Hadoop job running ``org.apache.hadoop.tools.DistCp`` with our
  :class:`~replicator.options.CopyOptions` mapped to its flags (``-update``, ``-delete``,
  ``-p<t|p>``, ``-filters``, ``-bandwidth``, ``-m``), for parity with existing setups;
* :func:`pyspark_job`: a PySpark job whose main file is ``replicator/executors/spark.py``
  (the ``replicator`` CLI) running ``copy --executor spark`` on the cluster.

:class:`DataprocSubmitter` submits with a stable ``request_id`` (and a job id derived from
it), so a submission retried after a timeout or a lost response returns the job already
created instead of starting a second one; then it polls ``GetJob`` with backoff until the
job is DONE, ERROR or CANCELLED and returns a :class:`DataprocResult` carrying the driver
output URI. Arguments are a list handed to the job, never a shell line, and are built from
validated values only (DESIGN.md style rule 13).

The pool is chosen by ``JobPlacement.cluster_labels``: Dataproc places the job on a
cluster whose labels include all of them.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from replicator.errors import RetryableError, UsageError
from replicator.filters import SKIP_DIR_NAMES, SKIP_FILE_PATTERNS, glob_to_regex
from replicator.options import CopyOptions

if TYPE_CHECKING:  # the client library is imported when a submitter is built
    from google.cloud import dataproc_v1

log = logging.getLogger("replicator")

DISTCP_MAIN_CLASS = "org.apache.hadoop.tools.DistCp"
TERMINAL_STATES = frozenset({"DONE", "ERROR", "CANCELLED"})
OBJECT_STORE_SCHEMES = frozenset({"gs", "s3a", "s3", "abfs", "abfss", "wasb", "wasbs"})
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^\s]*$")
_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
# DistCp must compare checksums across HDFS and object stores: composite CRCs do not
# depend on block or chunk sizes (the Dataproc guidance for HDFS <-> GCS copies).
DISTCP_PROPERTIES: dict[str, str] = {"dfs.checksum.combine.mode": "COMPOSITE_CRC"}
SPARK_JOB_PROPERTIES: dict[str, str] = {
    "spark.speculation": "false",
    "spark.task.maxFailures": "4",
}


class DataprocTimeout(RetryableError):
    """The job did not reach a final state in time (it may still be running)."""


# ---------------------------------------------------------------------------- ids
def request_id_for(*parts: str) -> str:
    """A stable request id (40 characters of ``[0-9a-f]``) for e.g. (dataset, partition,
    source fingerprint, attempt): the same parts give the same id, so a retried submission
    is recognised by the server and does not run twice."""
    if not parts or not all(isinstance(p, str) and p for p in parts):
        raise UsageError("request id: expected one or more non-empty strings")
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def job_id_for(request_id: str, prefix: str = "replicator") -> str:
    """A readable job id derived from the request id (Dataproc: ``[A-Za-z0-9_-]``, <= 100)."""
    clean = _ID_CHARS.sub("-", prefix).strip("-")[:60] or "replicator"
    return f"{clean}-{request_id[:20]}"


def source_fingerprint(entries: Iterable[tuple[str, int, int]]) -> str:
    """A fingerprint of a listing ``(rel, size, mtime_ns)``: changes when any file does."""
    h = hashlib.sha256()
    for rel, size, mtime_ns in sorted(entries):
        h.update(f"{rel}\x1f{size}\x1f{mtime_ns}\n".encode())
    return h.hexdigest()[:32]


# ---------------------------------------------------------------------------- validation
def _check_uri(uri: str, what: str) -> str:
    if not isinstance(uri, str) or not _URI.match(uri) or any(ord(c) < 32 for c in uri):
        raise UsageError(f"{what}: expected a URI like hdfs://nn/path or gs://bucket/path, got {uri!r}")
    return uri


def _check_props(props: Mapping[str, Any] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (props or {}).items():
        key, value = str(key), str(value)
        if not re.fullmatch(r"[A-Za-z0-9_.:-]+", key) or any(ord(c) < 32 for c in value):
            raise UsageError(f"{what}: bad property {key!r}={value!r}")
        out[key] = value
    return out


def _refuse(opts: CopyOptions, unsupported: dict[str, bool], tool: str) -> None:
    bad = [name for name, used in unsupported.items() if used]
    if bad:
        raise UsageError(f"{tool} cannot honour {', '.join(bad)}: run with the spark executor "
                         "(pyspark_job) instead, or drop the option")


# ---------------------------------------------------------------------------- DistCp
def distcp_filter_patterns(source: str, exclude: Sequence[str] = (),
                           *, skip_temporary: bool = True) -> list[str]:
    """Java regexes for DistCp ``-filters`` (one per line; a path matching any is not
    copied). They mirror our :class:`~replicator.filters.Filter`: a glob without ``/``
    matches a name at any depth, one with ``/`` the path under ``source``; an excluded
    directory excludes everything under it; writers' temporary names are skipped."""
    root = "\\Q" + _check_uri(source, "source").rstrip("/") + "\\E"
    out: list[str] = []
    names = list(SKIP_FILE_PATTERNS) + sorted(SKIP_DIR_NAMES) if skip_temporary else []
    for glob in [*names, *exclude]:
        if not glob or "\n" in glob:
            raise UsageError(f"--exclude: bad pattern {glob!r}")
        body = glob_to_regex(glob.strip("/")).pattern.removesuffix(r"\Z")
        prefix = root + "/(?:.*/)?" if "/" not in glob.strip("/") else root + "/"
        out.append(f"{prefix}{body}(?:/.*)?")
    return out


def distcp_args(source: str, destination: str, opts: CopyOptions, *,
                filters_file: str | None = None, direct: bool | None = None,
                strategy: str | None = None) -> list[str]:
    """DistCp's argument list for ``opts``.

    ``-update`` always (incremental: unchanged files are skipped by size and checksum);
    ``-delete`` with ``--delete`` (note: DistCp has no ``--max-delete`` guard);
    ``-p`` letters from ``preserve`` (``t`` times, ``p`` permissions); ``-m`` from ``workers``;
    ``-bandwidth`` is per map in DistCp, so our total MiB/s is divided by ``workers``;
    ``-filters`` names the file of :func:`distcp_filter_patterns` (shipped in ``file_uris``);
    ``-direct`` (no temporary + rename) by default when the destination is an object store.
    """
    opts = opts.validated()
    _check_uri(source, "source")
    _check_uri(destination, "destination")
    _refuse(opts, {
        "--include": bool(opts.include),
        "--min-age": opts.min_age_s > 0,
        "--copy-links": opts.copy_links,
        "--marker": opts.marker is not None,
        "--dry-run": opts.dry_run,
    }, "hadoop distcp")
    if opts.exclude and not filters_file:
        raise UsageError("--exclude with distcp needs a filters file: upload the lines of "
                         "distcp_filter_patterns() and pass its URI as filters_uri")
    args = ["-update"]
    if opts.delete:
        args.append("-delete")
    letters = "".join(letter for kind, letter in (("perms", "p"), ("times", "t")) if kind in opts.preserve)
    if letters:
        args.append(f"-p{letters}")
    args += ["-m", str(opts.workers)]
    if opts.bandwidth_mbps:
        per_map = opts.bandwidth_mbps / opts.workers
        args += ["-bandwidth", f"{per_map:.6g}"]
    if filters_file:
        if filters_file.startswith("-") or "/" in filters_file or not filters_file.strip():
            raise UsageError(f"filters file: expected a plain file name, got {filters_file!r}")
        args += ["-filters", filters_file]
    if direct is None:
        direct = destination.split("://", 1)[0].lower() in OBJECT_STORE_SCHEMES
    if direct:
        args.append("-direct")
    if strategy:
        if strategy not in ("uniformsize", "dynamic"):
            raise UsageError(f"distcp strategy: expected uniformsize or dynamic, got {strategy!r}")
        args += ["-strategy", strategy]
    args += [source, destination]
    return args


def distcp_job(source: str, destination: str, opts: CopyOptions, *,
               filters_uri: str | None = None, properties: Mapping[str, Any] | None = None,
               jar_file_uris: Sequence[str] = (), direct: bool | None = None,
               strategy: str | None = None) -> dataproc_v1.HadoopJob:
    """A Hadoop job running DistCp (its classes are on the Dataproc image's classpath)."""
    from google.cloud import dataproc_v1

    filters_file = None
    file_uris: list[str] = []
    if filters_uri:
        _check_uri(filters_uri, "filters_uri")
        filters_file = filters_uri.rstrip("/").rsplit("/", 1)[-1]
        file_uris.append(filters_uri)  # copied to the driver's working directory
    props = dict(DISTCP_PROPERTIES)
    props.update(_check_props(properties, "properties"))
    return dataproc_v1.HadoopJob(
        main_class=DISTCP_MAIN_CLASS,
        args=distcp_args(source, destination, opts, filters_file=filters_file, direct=direct,
                         strategy=strategy),
        jar_file_uris=[_check_uri(u, "jar_file_uris") for u in jar_file_uris],
        file_uris=file_uris,
        properties=props,
    )


# ---------------------------------------------------------------------------- PySpark
def replicator_cli_args(source: str, destination: str, opts: CopyOptions, *,
                        state: str | None = None) -> list[str]:
    """``replicator copy`` arguments equivalent to ``opts``, on the spark executor."""
    opts = opts.validated()
    _check_uri(source, "source")
    _check_uri(destination, "destination")
    args = ["copy", source, destination, "--executor", "spark", "--workers", str(opts.workers),
            "--preserve", ",".join(sorted(opts.preserve)), "--retries", str(opts.retries),
            "--max-delete", opts.max_delete, "--json", "-q"]
    for flag, on in (("--delete", opts.delete), ("--checksum", opts.checksum),
                     ("--dry-run", opts.dry_run), ("--copy-links", opts.copy_links)):
        if on:
            args.append(flag)
    for glob in opts.include:
        args += ["--include", glob]
    for glob in opts.exclude:
        args += ["--exclude", glob]
    if opts.min_age_s:
        args += ["--min-age", f"{opts.min_age_s:g}"]
    if opts.bandwidth_mbps:
        args += ["--bandwidth", f"{opts.bandwidth_mbps:g}"]
    if opts.marker:
        args += ["--marker", opts.marker]
    if state or opts.state_path:
        spec = state or opts.state_path or ""
        if "://" in spec and urlsplit(spec).password:  # job arguments are visible to anyone who lists jobs
            raise UsageError("--state: a state URL with a password cannot go into Dataproc job arguments; "
                             "give the cluster PGPASSWORD or ~/.pgpass and pass the URL without it")
        args += ["--state", spec]
    for value in args:
        if any(ord(c) < 32 for c in value):
            raise UsageError(f"argument with a control character: {value!r}")
    return args


def pyspark_job(source: str, destination: str, opts: CopyOptions, *, main_python_file_uri: str,
                python_file_uris: Sequence[str] = (), properties: Mapping[str, Any] | None = None,
                state: str | None = None) -> dataproc_v1.PySparkJob:
    """A PySpark job running our engine with the spark executor on the cluster.

    ``main_python_file_uri``: a copy of ``replicator/executors/spark.py`` (it is the CLI when
    run as a script); ``python_file_uris``: the replicator wheel or zip (its dependencies
    must be on the image, e.g. by an initialization action). ``state``: the state store
    path; on an ephemeral cluster without one the run compares against the destination."""
    from google.cloud import dataproc_v1

    props = dict(SPARK_JOB_PROPERTIES)
    props.update(_check_props(properties, "properties"))
    if props.get("spark.speculation", "false").lower() == "true":
        raise UsageError("spark.speculation must be false for the spark executor")
    return dataproc_v1.PySparkJob(
        main_python_file_uri=_check_uri(main_python_file_uri, "main_python_file_uri"),
        args=replicator_cli_args(source, destination, opts, state=state),
        python_file_uris=[_check_uri(u, "python_file_uris") for u in python_file_uris],
        properties=props,
    )


# ---------------------------------------------------------------------------- results
@dataclass
class DataprocResult:
    """What a job came to. ``ok`` only for DONE."""

    job_id: str
    state: str
    ok: bool
    request_id: str
    driver_output_resource_uri: str | None = None
    details: str | None = None
    cluster_name: str | None = None
    cluster_uuid: str | None = None
    job_uuid: str | None = None
    duration_s: float = 0.0
    states_seen: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_client(region: str, *, api_endpoint: str | None = None, insecure: bool = False,
                credentials: Any = None) -> dataproc_v1.JobControllerClient:
    """A JobController client for ``region`` (``<region>-dataproc.googleapis.com``).

    ``api_endpoint`` overrides the host; ``insecure=True`` talks plain gRPC to it (a local
    test server), through a transport built on an insecure channel."""
    import grpc
    from google.cloud import dataproc_v1
    from google.cloud.dataproc_v1.services.job_controller import transports

    endpoint = api_endpoint or f"{region}-dataproc.googleapis.com:443"
    if insecure:
        channel = grpc.insecure_channel(endpoint)
        return dataproc_v1.JobControllerClient(
            transport=transports.JobControllerGrpcTransport(channel=channel))
    return dataproc_v1.JobControllerClient(credentials=credentials,
                                           client_options={"api_endpoint": endpoint})


class DataprocSubmitter:
    """Submit jobs to a pool of clusters (by labels) and follow them to the end."""

    def __init__(
        self,
        project_id: str,
        region: str,
        *,
        cluster_labels: Mapping[str, str] | None = None,
        cluster_name: str | None = None,
        client: dataproc_v1.JobControllerClient | None = None,
        api_endpoint: str | None = None,
        insecure: bool = False,
        credentials: Any = None,
        job_labels: Mapping[str, str] | None = None,
        poll_initial_s: float = 2.0,
        poll_max_s: float = 30.0,
        poll_multiplier: float = 1.5,
        timeout_s: float | None = 24 * 3600.0,
        submit_deadline_s: float = 600.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not project_id or not region:
            raise UsageError("dataproc: project_id and region are required")
        if not cluster_labels and not cluster_name:
            raise UsageError("dataproc: give cluster_labels (a pool) or a cluster_name")
        for key, value in {**(cluster_labels or {}), **(job_labels or {})}.items():
            if not re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", key) or not re.fullmatch(r"[a-z0-9_-]{0,63}", value):
                raise UsageError(f"dataproc label {key!r}={value!r}: expected lowercase letters, "
                                 "digits, '_' and '-' (keys start with a letter)")
        self.project_id = project_id
        self.region = region
        self.cluster_labels = dict(cluster_labels or {})
        self.cluster_name = cluster_name
        self.job_labels = dict(job_labels or {})
        self.client = client or make_client(region, api_endpoint=api_endpoint, insecure=insecure,
                                            credentials=credentials)
        self.poll_initial_s = poll_initial_s
        self.poll_max_s = poll_max_s
        self.poll_multiplier = poll_multiplier
        self.timeout_s = timeout_s
        self.submit_deadline_s = submit_deadline_s
        self._sleep = sleep

    # ------------------------------------------------------------------ building
    def build_job(self, kind: dataproc_v1.HadoopJob | dataproc_v1.PySparkJob, job_id: str,
                  labels: Mapping[str, str] | None = None) -> dataproc_v1.Job:
        from google.cloud import dataproc_v1

        placement = dataproc_v1.JobPlacement(cluster_labels=self.cluster_labels)
        if self.cluster_name:
            placement.cluster_name = self.cluster_name
        job = dataproc_v1.Job(
            reference=dataproc_v1.JobReference(project_id=self.project_id, job_id=job_id),
            placement=placement,
            labels={**self.job_labels, **(labels or {})},
        )
        if isinstance(kind, dataproc_v1.HadoopJob):
            job.hadoop_job = kind
        elif isinstance(kind, dataproc_v1.PySparkJob):
            job.pyspark_job = kind
        else:
            raise UsageError(f"dataproc: unsupported job kind {type(kind).__name__}")
        return job

    # ------------------------------------------------------------------ submit and follow
    def submit(self, job: dataproc_v1.Job, request_id: str) -> dataproc_v1.Job:
        """SubmitJob with ``request_id``; retried on UNAVAILABLE / DEADLINE_EXCEEDED (safe:
        the server answers a repeated request id with the job it already created). A job id
        that exists already (the request id expired) is followed, not started again."""
        from google.api_core import exceptions as gexc
        from google.api_core import retry as gretry
        from google.cloud import dataproc_v1

        if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", request_id):
            raise UsageError(f"request_id: expected 1-40 of [A-Za-z0-9_-], got {request_id!r}")
        retry = gretry.Retry(
            predicate=gretry.if_exception_type(gexc.ServiceUnavailable, gexc.DeadlineExceeded),
            initial=min(1.0, self.poll_initial_s), maximum=max(self.poll_max_s, 1.0),
            multiplier=2.0, timeout=self.submit_deadline_s,
        )
        request = dataproc_v1.SubmitJobRequest(project_id=self.project_id, region=self.region,
                                               job=job, request_id=request_id)
        try:
            submitted = self.client.submit_job(request=request, retry=retry)
        except gexc.AlreadyExists:
            log.info("dataproc job %s exists already: following it", job.reference.job_id)
            return self.get(job.reference.job_id)
        log.info("submitted dataproc job %s (request %s) to %s", submitted.reference.job_id,
                 request_id, submitted.placement.cluster_name or self.cluster_labels)
        return submitted

    def get(self, job_id: str) -> dataproc_v1.Job:
        return self.client.get_job(project_id=self.project_id, region=self.region, job_id=job_id)

    def cancel(self, job_id: str) -> dataproc_v1.Job:
        return self.client.cancel_job(project_id=self.project_id, region=self.region, job_id=job_id)

    def wait(self, job_id: str, request_id: str = "",
             submitted: dataproc_v1.Job | None = None) -> DataprocResult:
        """Poll GetJob with backoff until DONE, ERROR or CANCELLED (``submitted``: the job as
        SubmitJob returned it, whose state counts as the first one seen)."""
        start = time.monotonic()
        delay = self.poll_initial_s
        seen: list[str] = []
        job = submitted  # its state is the first one seen; then GetJob
        while True:
            if job is None:
                job = self.get(job_id)
            state = job.status.state.name
            if not seen or seen[-1] != state:
                seen.append(state)
                log.info("dataproc job %s: %s", job_id, state)
            if state in TERMINAL_STATES:
                return DataprocResult(
                    job_id=job.reference.job_id or job_id, state=state, ok=state == "DONE",
                    request_id=request_id,
                    driver_output_resource_uri=job.driver_output_resource_uri or None,
                    details=job.status.details or None,
                    cluster_name=job.placement.cluster_name or None,
                    cluster_uuid=job.placement.cluster_uuid or None,
                    job_uuid=job.job_uuid or None,
                    duration_s=round(time.monotonic() - start, 3), states_seen=seen,
                )
            if self.timeout_s is not None and time.monotonic() - start > self.timeout_s:
                raise DataprocTimeout(f"dataproc job {job_id} still {state} after "
                                      f"{self.timeout_s:.0f}s")
            if job is submitted:
                job = None
                continue  # poll at once after the submit answer
            self._sleep(delay)
            delay = min(delay * self.poll_multiplier, self.poll_max_s)
            job = None

    def run(self, kind: dataproc_v1.HadoopJob | dataproc_v1.PySparkJob, *, request_id: str,
            job_id_prefix: str = "replicator", labels: Mapping[str, str] | None = None) -> DataprocResult:
        job = self.build_job(kind, job_id_for(request_id, job_id_prefix), labels)
        submitted = self.submit(job, request_id)
        return self.wait(submitted.reference.job_id, request_id, submitted)

    # ------------------------------------------------------------------ the two jobs
    def submit_distcp(self, source: str, destination: str, opts: CopyOptions | None = None, *,
                      request_id: str, filters_uri: str | None = None,
                      properties: Mapping[str, Any] | None = None,
                      labels: Mapping[str, str] | None = None, direct: bool | None = None,
                      strategy: str | None = None) -> DataprocResult:
        """Run ``hadoop distcp source destination`` on a cluster of the pool; wait for it."""
        job = distcp_job(source, destination, opts or CopyOptions(), filters_uri=filters_uri,
                         properties=properties, direct=direct, strategy=strategy)
        return self.run(job, request_id=request_id, job_id_prefix="replicator-distcp",
                        labels=labels)

    def submit_spark_copy(self, source: str, destination: str, opts: CopyOptions | None = None,
                          *, request_id: str, main_python_file_uri: str,
                          python_file_uris: Sequence[str] = (),
                          properties: Mapping[str, Any] | None = None, state: str | None = None,
                          labels: Mapping[str, str] | None = None) -> DataprocResult:
        """Run our engine with the spark executor as a PySpark job; wait for it."""
        job = pyspark_job(source, destination, opts or CopyOptions(),
                          main_python_file_uri=main_python_file_uri,
                          python_file_uris=python_file_uris, properties=properties, state=state)
        return self.run(job, request_id=request_id, job_id_prefix="replicator-spark",
                        labels=labels)
