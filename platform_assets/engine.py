"""The one engine-to-Dagster adapter, used by replicas, landing and Hive.

- :func:`run_copy` runs one engine copy and raises :class:`CopyFailed` (no Dagster in it, so a
  CLI can use it too) when the copy raised or a file failed; the retry rule lives here: a
  failure is retryable when the engine says so (the run's error, raised or reported, and every
  failed file are of a retryable class), never for bad input or data errors.
- :func:`copy_or_fail` is the same, raising ``dg.Failure`` whose ``allow_retries`` follows that
  rule, so a step's ``RetryPolicy`` retries only what can succeed on a retry.
- :func:`report_metadata` is the run report as the asset metadata DESIGN.md promises.
- :func:`retry_policy` is the step retry policy from ``platform.retries``.
- :func:`copy_partition` runs one replica partition's copy with the executor the spec gives
  its target (:class:`~platform_assets.datasets.ExecutorView`): ``local``, ``spark`` and
  ``distcp`` through the engine; ``dataproc`` through :func:`run_dataproc_copy`, the one hook
  the Dataproc path fills. :func:`executor_metadata` says which executor ran it, and where.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from platform_assets.config import ReplicationSpec
from platform_assets.datasets import ExecutorView
from replicator.errors import ReplicatorError, is_retryable
from replicator.options import CopyOptions
from replicator.progress import Progress
from replicator.report import RunReport
from replicator.secrets import redact
from resources.replicator import ReplicatorResource


class CopyFailed(Exception):
    """An engine copy that did not complete; ``retryable`` says whether a retry can help."""

    def __init__(self, description: str, *, retryable: bool, report: RunReport | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.retryable = retryable
        self.report = report

    def metadata(self) -> dict[str, object]:
        r = self.report
        if r is None:
            return {}
        return {
            "files_failed": r.files_failed,
            "files_copied": r.files_copied,
            "failures": [{"path": redact(f.path), "error": redact(f.error)} for f in r.failures[:20]],
        }


def failure_summary(report: RunReport, limit: int = 20) -> str:
    lines = [f"copy {redact(report.source)} -> {redact(report.destination)} failed:"]
    if report.error:
        lines.append(f"  run error: {redact(report.error)}")
    if report.delete_refused:
        lines.append(f"  delete refused: {redact(report.delete_refused)}")
    for f in report.failures[:limit]:
        lines.append(f"  {redact(f.path)}: {redact(f.error)}")
    if report.files_failed > limit:
        lines.append(f"  ... {report.files_failed - limit} more failed files")
    return "\n".join(lines)


def run_copy(
    replicator: ReplicatorResource, source: str, destination: str, options: CopyOptions, *,
    progress: Progress | None = None,
) -> RunReport:
    """One engine copy; :class:`CopyFailed` unless it completed."""
    try:
        report = replicator.copy(source, destination, options, progress=progress)
    except ReplicatorError as exc:
        raise CopyFailed(f"copy {redact(source)} -> {redact(destination)}: {redact(str(exc))}",
                         retryable=is_retryable(exc)) from None
    if not report.ok:
        raise CopyFailed(failure_summary(report), retryable=report_retryable(report), report=report)
    return report


def report_retryable(report: RunReport) -> bool:
    """Whether a retry can make a failed run succeed: its run-level error (a destination
    refusing connections, a NameNode failing over) and every failed file are of a retryable
    class; a refused delete (the guard) never is."""
    if report.delete_refused:
        return False
    causes = [f.retryable for f in report.failures]
    if report.error is not None:
        causes.append(report.error_retryable)
    return bool(causes) and all(causes)


def as_failure(exc: CopyFailed) -> dg.Failure:
    return dg.Failure(description=exc.description, metadata=exc.metadata(),
                      allow_retries=exc.retryable)


def copy_or_fail(
    replicator: ReplicatorResource, source: str, destination: str, options: CopyOptions, *,
    progress: Progress | None = None, on_failure: Callable[[CopyFailed], None] | None = None,
) -> RunReport:
    """:func:`run_copy` inside an asset: ``dg.Failure`` (retries per the rule) unless it
    completed. ``on_failure`` runs first (e.g. to keep what did get copied)."""
    try:
        return run_copy(replicator, source, destination, options, progress=progress)
    except CopyFailed as exc:
        if on_failure is not None:
            on_failure(exc)
        raise as_failure(exc) from None


def report_metadata(report: RunReport) -> dict[str, dg.MetadataValue]:
    """The run report as asset metadata (the names DESIGN.md promises)."""
    finished = report.finished_at if report.finished_at is not None else time.time()
    return {
        "copy_finished": dg.MetadataValue.timestamp(finished),
        "files_copied": dg.MetadataValue.int(report.files_copied),
        "bytes_copied": dg.MetadataValue.int(report.bytes_copied),
        "files_skipped": dg.MetadataValue.int(report.files_skipped),
        "files_deleted": dg.MetadataValue.int(report.files_deleted),
        "files_held_back": dg.MetadataValue.int(report.files_held_back),
        "duration_s": dg.MetadataValue.float(round(float(report.duration_s), 3)),
        "throughput_mb_s": dg.MetadataValue.float(float(report.throughput_mb_s)),
        "verified": dg.MetadataValue.bool(bool(report.verified)),
    }


def retry_policy(spec: ReplicationSpec) -> dg.RetryPolicy:
    """Step retries from ``platform.retries`` (only failures the rule above allows)."""
    r = spec.platform.retries
    if not r.delay_s:
        return dg.RetryPolicy(max_retries=r.max_retries)
    return dg.RetryPolicy(
        max_retries=r.max_retries,
        delay=r.delay_s,
        backoff=dg.Backoff.EXPONENTIAL if r.backoff == "exponential" else dg.Backoff.LINEAR,
        jitter=dg.Jitter.PLUS_MINUS,
    )


@dataclass(frozen=True)
class PartitionCopy:
    """One replica partition's copy, as an executor is handed it."""

    dataset: str
    cluster: str  # the target cluster
    partition: str
    source: str  # URI of the partition on the cluster it copies from
    destination: str  # URI of the partition on the target
    options: CopyOptions  # filters and copy policy (the executor's own settings not yet applied)
    source_fingerprint: str  # the version being copied (stable id of what the job must copy)
    executor: ExecutorView


def executor_options(options: CopyOptions, executor: ExecutorView) -> CopyOptions:
    """``options`` run by ``executor`` (one of the engine's own: local, spark, distcp)."""
    changes: dict[str, object] = {"executor": executor.kind,
                                  "executor_options": executor.engine_options()}
    if executor.maps is not None:
        changes["workers"] = executor.maps
    return options.with_(**changes)


def run_dataproc_copy(
    context: dg.AssetExecutionContext, replicator: ReplicatorResource, copy: PartitionCopy
) -> RunReport:
    """The partition's copy as a Dataproc job (``executor.kind == "dataproc"``): submitted to a
    cluster chosen by the executor's ``cluster_labels`` with a request id stable per (replica,
    partition, source fingerprint), its driver output streamed into the log, waited for and
    the destination verified (:mod:`platform_assets.dataproc`)."""
    from platform_assets.dataproc import DataprocTarget
    from platform_assets.dataproc import run_dataproc_copy as run

    dp = copy.executor.dataproc
    assert dp is not None
    return run(context, context.resources.dataproc, replicator, DataprocTarget.from_config(dp),
               copy.source, copy.destination, copy.options,
               # the destination too: a target moved in the spec is a new copy, not the old job
               key_parts=(copy.dataset, copy.cluster, copy.partition, copy.source_fingerprint,
                          copy.destination),
               labels={"dataset": copy.dataset, "target": copy.cluster})


def copy_partition(
    context: dg.AssetExecutionContext, replicator: ReplicatorResource, copy: PartitionCopy
) -> RunReport:
    """Run one replica partition's copy with its target's executor; ``dg.Failure`` unless
    it completed (retries per the rule above)."""
    executor = copy.executor
    context.log.info(
        f"copy {redact(copy.source)} -> {redact(copy.destination)} (partition {copy.partition}) "
        f"with executor {executor.kind} on {executor.runs_on()} ({executor.declared_at})"
    )
    if executor.kind == "dataproc":
        return run_dataproc_copy(context, replicator, copy)
    try:
        options = executor_options(copy.options, executor)
    except ReplicatorError as exc:  # the spec validated it; the engine may still refuse
        raise dg.Failure(description=f"{executor.declared_at}: {redact(str(exc))}",
                         allow_retries=False) from None
    return copy_or_fail(replicator, copy.source, copy.destination, options)


def executor_metadata(executor: ExecutorView, report: RunReport) -> dict[str, dg.MetadataValue]:
    """Which executor ran a copy (``executor``), where (``executor_runs_on``) and from which
    spec key (``executor_from``); DistCp's job ids when DistCp ran it."""
    out: dict[str, dg.MetadataValue] = {
        "executor": dg.MetadataValue.text(report.executor or executor.kind),
        "executor_runs_on": dg.MetadataValue.text(redact(executor.runs_on())),
        "executor_from": dg.MetadataValue.text(executor.declared_at),
    }
    jobs = [j.get("job_id") for j in (report.executor_details or {}).get("jobs", []) if j.get("job_id")]
    if jobs:
        out["executor_jobs"] = dg.MetadataValue.text(", ".join(jobs))
    details = report.executor_details or {}
    if details.get("tool") == "dataproc":  # which job, on which cluster of the pool
        for key, name in (("job_id", "dataproc_job_id"), ("cluster", "dataproc_cluster"),
                          ("request_id", "dataproc_request_id"),
                          ("driver_output", "dataproc_driver_output")):
            if details.get(key):
                out[name] = dg.MetadataValue.text(str(details[key]))
        out["executor_runs_on"] = dg.MetadataValue.text(
            f"{redact(executor.runs_on())}: cluster {details.get('cluster')}")
    return out
