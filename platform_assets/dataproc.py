"""A replica partition copied by a Dataproc job (``executor: {kind: dataproc}``).

:func:`run_dataproc_copy` is the hook the replica asset calls for a dataproc target. It
submits the partition's job through the real ``google-cloud-dataproc`` JobControllerClient
to a cluster of the pool chosen by ``JobPlacement.cluster_labels``, waits for it, verifies
the destination with our engine (CRC32C on both sides) and hands back a
:class:`~replicator.report.RunReport`, so the asset records ``copy_finished`` and the rest
of its metadata as for any other executor.

Two job kinds:

* ``distcp``: a Hadoop job running ``org.apache.hadoop.tools.DistCp`` (``-update``, the
  engine's filters shipped as DistCp's ``-filters`` file in the staging bucket). The job is
  followed here: ``GetJob`` every ``poll_interval_s``, the driver output
  (``driveroutput.NNNNNNNNN`` objects in GCS) streamed into the Dagster log as it grows,
  DistCp's counters read from it. A run terminated in Dagster cancels the job
  (``CancelJob``) before the step ends.
* ``replicator``: our engine as a PySpark job, through dagster-gcp's
  ``PipesDataprocJobClient`` (built at run time: it is a preview API): the driver
  (:mod:`resources.dataproc_job`) opens Dagster Pipes, streams its log
  lines through it and reports the engine's run report as the materialization's metadata;
  the client cancels the job when the run is terminated.

Idempotence: the request id is derived from (replica asset, partition, source fingerprint),
so a retried step (or one whose SubmitJob answer was lost) re-attaches to the job already
submitted instead of starting a second one. A job of that key that ended in ERROR or
CANCELLED under another Dagster run is not re-used: a new run gets a fresh generation of
the key (a new job). DistCp jobs are found by their job id (derived from the request id);
``replicator`` jobs, whose id the server makes (the Pipes client needs that), by their
``replicator-request`` label (ListJobs).

Outcomes: DONE and verified -> materialized; the pool's clusters not RUNNING (e.g. ERROR)
or the service unavailable -> a retryable failure (the step's retry policy submits again);
the job in ERROR -> a failure carrying the driver's error, not retried; CANCELLED -> a
failure, not retried; no cluster with the pool's labels -> a failure naming the labels.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from replicator.errors import UsageError
from replicator.executors.dataproc import (
    DataprocSubmitter,
    distcp_args,
    distcp_filter_patterns,
    distcp_job,
    job_id_for,
    request_id_for,
)
from replicator.executors.distcp import parse_counters
from replicator.options import CopyOptions
from replicator.report import RunReport
from replicator.secrets import redact
from resources.dataproc import DataprocResource
from resources.replicator import ReplicatorResource

JOB_KINDS = ("distcp", "replicator")
MAX_GENERATIONS = 50
JOB_STATE = "replicator-state.db"  # relative: the job's working directory
REQUEST_LABEL = "replicator-request"  # a replicator job's request id, to find its generations
_LABEL_VALUE = re.compile(r"[^a-z0-9_-]")


@dataclass(frozen=True)
class DataprocTarget:
    """Where a partition's job runs: the spec's ``executor: {kind: dataproc, ...}``."""

    project: str
    region: str
    cluster_labels: Mapping[str, str]
    job: str = "distcp"
    endpoint: str | None = None
    properties: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Any) -> DataprocTarget:
        """From the spec's executor model (or a mapping with the same keys)."""
        get = config.get if isinstance(config, Mapping) else lambda k, d=None: getattr(config, k, d)
        job = get("job", "distcp") or "distcp"
        if job not in JOB_KINDS:
            raise UsageError(f"dataproc job: expected distcp or replicator, got {job!r}")
        return cls(project=get("project"), region=get("region"),
                   cluster_labels=dict(get("cluster_labels", None) or {}), job=job,
                   endpoint=get("endpoint", None), properties=dict(get("properties", None) or {}))


def label_value(text: str) -> str:
    """A Dataproc label value (lower-case letters, digits, ``_``, ``-``; at most 63)."""
    return _LABEL_VALUE.sub("-", text.lower())[:63].strip("-_") or "x"


def _gcs_client() -> Any:
    from google.cloud import storage

    return storage.Client()  # STORAGE_EMULATOR_HOST: the emulator, anonymous


class DriverOutput:
    """Follows a job's driver output in GCS (``<uri>.000000000``, ``.000000001``, ...)."""

    def __init__(self, uri: str, emit: Callable[[str], None], client: Any = None) -> None:
        if not uri.startswith("gs://"):
            raise UsageError(f"driver output {uri!r}: expected a gs:// URI")
        self.bucket, _, self.key = uri[5:].partition("/")
        self.emit = emit
        self.client = client or _gcs_client()
        self.next_index = 0
        self.text: list[str] = []

    def poll(self) -> None:
        try:
            blobs = self.client.list_blobs(self.bucket, prefix=self.key + ".")
            chunks = sorted((b.name, b) for b in blobs)
        except Exception:  # the driver output is best effort while the job runs
            return
        for name, blob in chunks:
            suffix = name[len(self.key) + 1:]
            if not suffix.isdigit() or int(suffix) < self.next_index:
                continue
            if int(suffix) != self.next_index:
                break  # a gap: the next chunk is not written yet
            try:
                data = blob.download_as_bytes().decode(errors="replace")
            except Exception:
                return
            self.next_index += 1
            self.text.append(data)
            lines = [redact(ln) for ln in data.splitlines() if ln.strip()]
            if lines:
                self.emit("\n".join(lines))

    def all_text(self) -> str:
        return "".join(self.text)

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.all_text().splitlines()[-lines:])


def _upload_filters(dataproc: DataprocResource, request_id: str, source: str,
                    exclude: Sequence[str]) -> str:
    """DistCp's ``-filters`` file (the engine's excludes and temporary names) in staging."""
    bucket, prefix = dataproc.staging()
    key = "/".join(p for p in (prefix, "distcp-filters", f"{request_id}.txt") if p)
    body = "\n".join(distcp_filter_patterns(source, exclude)) + "\n"
    _gcs_client().bucket(bucket).blob(key).upload_from_string(body, content_type="text/plain")
    return f"gs://{bucket}/{key}"


def _failure(description: str, *, retry: bool, **metadata: Any) -> dg.Failure:
    return dg.Failure(description=redact(description), allow_retries=retry,
                      metadata={k: v for k, v in metadata.items() if v is not None})


def _submit_error(exc: Exception, target: DataprocTarget) -> dg.Failure:
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.FailedPrecondition | gexc.ServiceUnavailable | gexc.DeadlineExceeded
                  | gexc.InternalServerError | gexc.TooManyRequests):
        return _failure(f"dataproc: the job could not be submitted (will retry): {exc.message}",
                        retry=True)
    if isinstance(exc, gexc.NotFound):
        return _failure(f"dataproc: no cluster in {target.project}/{target.region} carries the "
                        f"labels {dict(target.cluster_labels)}: {exc.message}", retry=False)
    return _failure(f"dataproc: SubmitJob refused: {getattr(exc, 'message', exc)}", retry=False)


def _attach_or_new(submitter: DataprocSubmitter, parts: Sequence[str], run_id: str,
                   prefix: str, verifies: Callable[[], bool] | None = None) -> tuple[str, Any]:
    """(request id, existing job or None): the key's latest generation that this run may
    re-attach to (running, done and its copy still verifying, or failed under this same
    run); else a fresh one. A DONE job whose destination no longer verifies (files lost or
    damaged since, or never copied) is spent: re-attaching to it would fail the same way on
    every retry and every run until the source changed."""
    from google.api_core import exceptions as gexc

    for gen in range(MAX_GENERATIONS):
        rid = request_id_for(*parts, *([f"g{gen}"] if gen else []))
        try:
            job = submitter.get(job_id_for(rid, prefix))
        except gexc.NotFound:
            return rid, None
        state = job.status.state.name
        if state in ("ERROR", "CANCELLED") and job.labels.get("dagster-run-id") != label_value(run_id):
            continue  # failed under another run: this run submits anew
        if state == "DONE" and verifies is not None and not verifies():
            continue  # its copy does not hold: this run copies again
        return rid, job
    raise _failure(f"dataproc: {MAX_GENERATIONS} failed jobs for {'/'.join(parts)}", retry=False)


def run_dataproc_copy(
    context: dg.AssetExecutionContext, dataproc: DataprocResource, replicator: ReplicatorResource,
    target: DataprocTarget, source: str, destination: str, options: CopyOptions, *,
    key_parts: Sequence[str], labels: Mapping[str, str] | None = None,
) -> RunReport:
    """Copy ``source`` to ``destination`` with a Dataproc job; verify; the run report."""
    started = time.time()
    def verifies() -> bool:  # asked only of a DONE job found for the key: may it stand?
        return not _verify_problems(replicator, source, destination, options)[1]

    if target.job == "replicator":
        report = _run_replicator_job(context, dataproc, target, source, destination, options,
                                     key_parts=key_parts, labels=labels, verifies=verifies)
    else:
        report = _run_distcp_job(
            context, dataproc, target, source, destination, options, key_parts=key_parts,
            labels=labels, verifies=verifies)
    report.started_at = started
    _verify(context, replicator, source, destination, options, report)
    return report


def _submitter(dataproc: DataprocResource, target: DataprocTarget) -> DataprocSubmitter:
    return DataprocSubmitter(
        target.project, target.region, cluster_labels=dict(target.cluster_labels),
        client=dataproc.client(target.region, target.endpoint),
        poll_initial_s=dataproc.poll_interval_s, poll_max_s=dataproc.poll_interval_s,
        timeout_s=dataproc.timeout_s, submit_deadline_s=min(600.0, dataproc.timeout_s),
    )


def _run_distcp_job(
    context: dg.AssetExecutionContext, dataproc: DataprocResource, target: DataprocTarget,
    source: str, destination: str, options: CopyOptions, *, key_parts: Sequence[str],
    labels: Mapping[str, str] | None, verifies: Callable[[], bool] | None = None,
) -> RunReport:
    from google.api_core import exceptions as gexc

    prefix = "replicator-distcp"
    submitter = _submitter(dataproc, target)
    run_id = context.run.run_id
    marker = options.marker  # written by us once the job's copy is verified
    options = dataclasses.replace(options, marker=None)
    rid = ""
    try:
        if options.include_regex or options.exclude_regex:
            raise UsageError("hadoop distcp cannot honour include_regex/exclude_regex: use "
                             "globs (exclude), or job: replicator")
        rid, job = _attach_or_new(submitter, key_parts, run_id, prefix, verifies)
        if job is None:
            # what DistCp cannot honour is refused here, before anything is submitted
            distcp_args(source, destination, options, filters_file="filters.txt")
            filters = _upload_filters(dataproc, rid, source, options.exclude)
            kind = distcp_job(source, destination, options, filters_uri=filters,
                              properties=target.properties)
            job_labels = {"dagster-run-id": label_value(run_id), **(labels or {})}
            built = submitter.build_job(kind, job_id_for(rid, prefix),
                                        {k: label_value(v) for k, v in job_labels.items()})
            job = submitter.submit(built, rid)
            context.log.info(f"dataproc: submitted job {job.reference.job_id} to cluster "
                             f"{job.placement.cluster_name} (labels {dict(target.cluster_labels)}, "
                             f"request {rid})")
        else:
            context.log.info(f"dataproc: re-attached to job {job.reference.job_id} on cluster "
                             f"{job.placement.cluster_name} ({job.status.state.name}, request {rid})")
        job_id = job.reference.job_id
        out = DriverOutput(job.driver_output_resource_uri,
                           lambda text: context.log.info(f"[{job_id} driver]\n{text}"))
        job = _follow(submitter, job, out, dataproc.poll_interval_s, dataproc.timeout_s)
    except UsageError as exc:
        raise _failure(f"dataproc distcp: {exc}", retry=False) from None
    except gexc.GoogleAPICallError as exc:
        raise _submit_error(exc, target) from None
    except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt):
        # interrupted anywhere once the request id is known (even inside SubmitJob, whose
        # answer may be lost): the job has that id, so it is cancelled by it
        if rid:
            _cancel(context, submitter, job_id_for(rid, prefix))
        raise
    out.poll()
    report = _report(job, rid, source, destination, out.all_text(), "distcp", out.tail())
    report.marker = marker
    return report


def _cancel(context: dg.AssetExecutionContext, submitter: DataprocSubmitter, job_id: str) -> None:
    from google.api_core import exceptions as gexc

    context.log.warning(f"dataproc: run interrupted: cancelling job {job_id}")
    try:
        submitter.cancel(job_id)
    except gexc.NotFound:
        pass  # never created: nothing runs
    except gexc.GoogleAPICallError as exc:  # best effort: say so
        context.log.error(f"dataproc: could not cancel job {job_id}: {exc.message}")


def _follow(submitter: DataprocSubmitter, job: Any, out: DriverOutput, poll_s: float,
            timeout_s: float) -> Any:
    from google.api_core import exceptions as gexc

    deadline = time.monotonic() + timeout_s
    while not job.done:
        if time.monotonic() > deadline:
            raise _failure(f"dataproc job {job.reference.job_id} still {job.status.state.name} "
                           f"after {timeout_s:.0f}s", retry=False)
        time.sleep(poll_s)
        out.poll()
        try:
            job = submitter.get(job.reference.job_id)
        except (gexc.ServiceUnavailable, gexc.DeadlineExceeded):
            continue  # transient: poll again
    return job


def _report(job: Any, rid: str, source: str, destination: str, text: str, kind: str,
            tail: str) -> RunReport:
    state = job.status.state.name
    details = {
        "tool": "dataproc", "job": kind, "job_id": job.reference.job_id,
        "job_uuid": job.job_uuid, "cluster": job.placement.cluster_name,
        "cluster_uuid": job.placement.cluster_uuid, "request_id": rid, "state": state,
        "driver_output": job.driver_output_resource_uri,
        "states": [s.state.name for s in job.status_history] + [state],
    }
    meta = {"dataproc_job_id": job.reference.job_id, "dataproc_cluster": job.placement.cluster_name,
            "dataproc_request_id": rid, "dataproc_driver_output": job.driver_output_resource_uri}
    if state == "CANCELLED":
        raise _failure(f"dataproc job {job.reference.job_id} on {job.placement.cluster_name} was "
                       "cancelled", retry=False, **meta)
    if state != "DONE":
        raise _failure(f"dataproc job {job.reference.job_id} on {job.placement.cluster_name} "
                       f"ended in {state}: {job.status.details}\ndriver output (last lines):\n{tail}",
                       retry=False, **meta)
    report = RunReport(run_id=job.reference.job_id, source=source, destination=destination,
                       executor=f"dataproc-{kind}", finished_at=time.time())
    counters = parse_counters(text).get("DistCp Counters", {})
    if counters:
        details["counters"] = counters
        report.files_copied = counters.get("Files Copied", 0)
        report.bytes_copied = counters.get("Bytes Copied", 0)
        report.files_skipped = counters.get("Files Skipped", 0)
    report.executor_details = details
    return report


def _verify(context: dg.AssetExecutionContext, replicator: ReplicatorResource, source: str,
            destination: str, options: CopyOptions, report: RunReport) -> None:
    """Our engine's verify over the partition (CRC32C both sides): the job's word is not enough."""
    v, problems = _verify_problems(replicator, source, destination, options)
    report.files_verified = v.files_compared
    job_id = report.executor_details.get("job_id")
    if problems:
        raise _failure(
            f"dataproc job {job_id} finished but the destination differs from the source: "
            f"{v.n_missing} missing, {v.n_differing} differing, {len(v.errors)} errors "
            f"(first: {(v.missing + [d.get('path', '') for d in v.differing] + v.errors)[:5]})",
            retry=True, dataproc_job_id=job_id)
    report.verified = True
    context.log.info(f"dataproc job {job_id}: destination verified ({v.files_compared} files, "
                     f"CRC32C)")
    if report.marker and report.executor == "dataproc-distcp":
        report.marker = _write_marker(destination, report.marker, report)


def _verify_problems(replicator: ReplicatorResource, source: str, destination: str,
                     options: CopyOptions) -> tuple[Any, int]:
    """(the engine's verify report, how many files keep the destination from matching)."""
    from replicator.api import verify

    opts = CopyOptions(state_path=replicator.state_path, include=options.include,
                       exclude=options.exclude, include_regex=options.include_regex,
                       exclude_regex=options.exclude_regex)
    v = verify(source, destination, opts)
    return v, v.n_missing + v.n_differing + len(v.errors) + (v.n_extra if options.delete else 0)


def _write_marker(destination: str, name: str, report: RunReport) -> str:
    """The replica's marker, written last as the engine writes it (a temporary name renamed
    into place where the store has rename): DistCp does not write one."""
    from replicator.filesystems.registry import resolve

    fs, root = resolve(destination)
    final = fs.join(root, name)
    summary = report.to_dict()
    summary.pop("actions", None)
    summary.pop("failures", None)
    summary["copy_finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    data = json.dumps(summary, indent=2, sort_keys=True, default=str).encode()
    tmp = fs.join(root, f".{name}.{report.run_id}.tmp") if fs.capabilities.atomic_rename else None
    with fs.open_write(tmp or final) as w:
        w.write(data)
    if tmp:
        fs.rename(tmp, final)
    return fs.uri(final)


# ---------------------------------------------------------------------------- replicator (Pipes)
def _run_replicator_job(
    context: dg.AssetExecutionContext, dataproc: DataprocResource, target: DataprocTarget,
    source: str, destination: str, options: CopyOptions, *, key_parts: Sequence[str],
    labels: Mapping[str, str] | None, verifies: Callable[[], bool] | None = None,
) -> RunReport:
    from dagster_gcp.pipes import (
        PipesDataprocJobClient,
        PipesGCSContextInjector,
        PipesGCSMessageReader,
    )
    from google.api_core import exceptions as gexc
    from google.api_core import retry as gretry
    from google.cloud import dataproc_v1

    from replicator.executors.dataproc import pyspark_job

    bucket, prefix = dataproc.staging()
    gcs = _gcs_client()
    api = dataproc.client(target.region, target.endpoint)
    run_id = context.run.run_id
    try:
        rid = _replicator_request_id(api, target, key_parts, run_id, verifies)
    except gexc.GoogleAPICallError as exc:
        raise _submit_error(exc, target) from None
    try:
        # the Dagster host's state store means nothing on the cluster: the job keeps its own
        # in its working directory (an ephemeral cluster's first run compares against the
        # destination, as a run with no manifest does)
        kind = pyspark_job(source, destination, dataclasses.replace(options, state_path=None),
                           main_python_file_uri=dataproc.driver_uri(),
                           python_file_uris=dataproc.python_file_uris, properties=target.properties,
                           state=JOB_STATE)
    except UsageError as exc:
        raise _failure(f"dataproc replicator job: {exc}", retry=False) from None
    job_labels = {"dagster-run-id": run_id, REQUEST_LABEL: rid, **(labels or {})}
    job = dataproc_v1.Job(
        placement=dataproc_v1.JobPlacement(cluster_labels=dict(target.cluster_labels)),
        labels={k: label_value(v) for k, v in job_labels.items()}, pyspark_job=kind)
    request = dataproc_v1.SubmitJobRequest(project_id=target.project, region=target.region,
                                           job=job, request_id=rid)
    retry = gretry.Retry(predicate=gretry.if_exception_type(gexc.ServiceUnavailable,
                                                            gexc.DeadlineExceeded),
                         initial=0.5, maximum=10.0, timeout=min(600.0, dataproc.timeout_s))
    client = PipesDataprocJobClient(
        client=api,
        context_injector=PipesGCSContextInjector(bucket=bucket, client=gcs,
                                                 key_prefix=f"{prefix}/pipes/" if prefix else "pipes/"),
        message_reader=PipesGCSMessageReader(bucket=bucket, client=gcs,
                                             interval=dataproc.poll_interval_s),
        poll_interval=dataproc.poll_interval_s, forward_termination=True,
    )
    context.log.info(f"dataproc: submitting replicator job (request {rid}, labels "
                     f"{dict(target.cluster_labels)})")
    try:
        invocation = client.run(context=context,
                                submit_job_params={"request": request, "retry": retry})
    except gexc.GoogleAPICallError as exc:
        raise _submit_error(exc, target) from None
    except RuntimeError as exc:  # the client's word for a job that did not end DONE
        raise _failure(f"dataproc replicator job failed: {exc}", retry=False) from None
    got = client.client.get_job(project_id=target.project, region=target.region,
                                job_id=_job_id_of(invocation, client, request))
    reported: dict[str, Any] = {}
    for result in invocation.get_results():
        for k, v in (result.metadata or {}).items():
            reported[k] = getattr(v, "value", v)
    report = _report(got, rid, source, destination, "", "replicator", "")
    engine = reported.get("run_report")
    if isinstance(engine, str):
        engine = json.loads(engine)
    if isinstance(engine, dict):
        for name in ("files_copied", "bytes_copied", "files_skipped", "files_deleted",
                     "files_held_back"):
            setattr(report, name, int(engine.get(name) or 0))
        report.executor_details["engine_report"] = {k: engine.get(k) for k in
                                                    ("run_id", "executor", "files_copied",
                                                     "bytes_copied", "verified")}
    return report


def _replicator_request_id(api: Any, target: DataprocTarget, parts: Sequence[str],
                           run_id: str, verifies: Callable[[], bool] | None = None) -> str:
    """The request id of a ``replicator`` job: the key's latest generation this run may
    re-attach to (running, done and its copy still verifying, or failed under this same run),
    else a fresh one. The server keeps a request id's job for good, so re-using the id of a
    job that ended in ERROR or CANCELLED under another run, or of a DONE job whose copy no
    longer verifies (the replica damaged or removed since), would hand every later run that
    job again: the partition could not be copied until its source changed. The Pipes client
    lets the server name the job, so generations are found by the ``replicator-request``
    label (ListJobs)."""
    for gen in range(MAX_GENERATIONS):
        rid = request_id_for(*parts, *([f"g{gen}"] if gen else []))
        jobs = list(api.list_jobs(request={
            "project_id": target.project, "region": target.region,
            "filter": f"labels.{REQUEST_LABEL} = {rid}"}))
        if not jobs:
            return rid
        job = jobs[0]
        if job.status.state.name in ("ERROR", "CANCELLED") \
                and job.labels.get("dagster-run-id") != label_value(run_id):
            continue  # failed under another run: this run submits anew
        if job.status.state.name == "DONE" and verifies is not None and not verifies():
            continue  # its copy does not hold: this run copies again
        return rid
    raise _failure(f"dataproc: {MAX_GENERATIONS} failed jobs for {'/'.join(parts)}", retry=False)


def _job_id_of(invocation: Any, client: Any, request: Any) -> str:
    """The job the Pipes client ran: its metadata names the job UUID (= its job id when the
    server made the id, as it does here: no job id is set)."""
    value = invocation.metadata.get("GCP Dataproc Job ID") if invocation.metadata else None
    return str(getattr(value, "value", value) or request.job.reference.job_id)
