"""A local Dataproc JobController: SubmitJob, GetJob and CancelJob over real gRPC,
serving the messages of ``google.cloud.dataproc_v1`` (proto-plus ``serialize`` /
``deserialize`` stand in for generated stubs).

Behaviour modelled on the service:
* placement by ``cluster_labels``: the job goes to a cluster of the pool whose labels
  include all of them (NOT_FOUND when none does); ``cluster_name`` pins one;
* ``request_id`` idempotency: a repeated request id returns the job already created;
  a job id used before, with another request id, is ALREADY_EXISTS;
* each GetJob moves a job one step along its script (default PENDING -> RUNNING -> DONE),
  recording ``status_history``; ERROR carries ``details``.

Test controls: ``next_scripts`` (states for the next jobs), ``fail_next_submit_after_create``
(create the job, then answer UNAVAILABLE, as a lost response), ``submit_requests`` (every
request as received), ``created`` (jobs actually created).
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from google.cloud import dataproc_v1
from google.protobuf import timestamp_pb2

SERVICE = "google.cloud.dataproc.v1.JobController"
State = dataproc_v1.JobStatus.State


@dataclass
class Cluster:
    name: str
    labels: dict[str, str]
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class _Entry:
    job: dataproc_v1.Job
    script: list[str]
    step: int = 0


class JobControllerServer:
    def __init__(self, project_id: str, region: str, clusters: list[Cluster],
                 staging_bucket: str = "dataproc-staging-test") -> None:
        self.project_id = project_id
        self.region = region
        self.clusters = clusters
        self.staging_bucket = staging_bucket
        self.next_scripts: deque[list[str]] = deque()
        self.default_script = ["PENDING", "RUNNING", "DONE"]
        self.fail_next_submit_after_create = 0
        self.submit_requests: list[dataproc_v1.SubmitJobRequest] = []
        self.get_calls = 0
        self.created: list[str] = []
        self._jobs: dict[str, _Entry] = {}
        self._by_request: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "SubmitJob": grpc.unary_unary_rpc_method_handler(
                self._submit, request_deserializer=dataproc_v1.SubmitJobRequest.deserialize,
                response_serializer=dataproc_v1.Job.serialize),
            "GetJob": grpc.unary_unary_rpc_method_handler(
                self._get, request_deserializer=dataproc_v1.GetJobRequest.deserialize,
                response_serializer=dataproc_v1.Job.serialize),
            "CancelJob": grpc.unary_unary_rpc_method_handler(
                self._cancel, request_deserializer=dataproc_v1.CancelJobRequest.deserialize,
                response_serializer=dataproc_v1.Job.serialize),
        })
        server.add_generic_rpc_handlers((handler,))
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    # ------------------------------------------------------------------ helpers
    def _check_scope(self, project_id: str, region: str, context: grpc.ServicerContext) -> None:
        if project_id != self.project_id or region != self.region:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"no such project/region {project_id}/{region}")

    def _place(self, job: dataproc_v1.Job, context: grpc.ServicerContext) -> Cluster:
        wanted = dict(job.placement.cluster_labels)
        for c in self.clusters:
            if job.placement.cluster_name and c.name != job.placement.cluster_name:
                continue
            if all(c.labels.get(k) == v for k, v in wanted.items()):
                return c
        context.abort(grpc.StatusCode.NOT_FOUND, f"no cluster matches labels {wanted}")
        raise AssertionError  # abort raises

    @staticmethod
    def _now() -> timestamp_pb2.Timestamp:
        ts = timestamp_pb2.Timestamp()
        ts.GetCurrentTime()
        return ts

    def _set_state(self, job: dataproc_v1.Job, state: str) -> None:
        if job.status.state != State.STATE_UNSPECIFIED:
            job.status_history.append(job.status)
        details = "Job failed with message [exit code 1]" if state == "ERROR" else ""
        job.status = dataproc_v1.JobStatus(state=State[state], details=details,
                                           state_start_time=self._now())
        job.done = state in ("DONE", "ERROR", "CANCELLED")

    # ------------------------------------------------------------------ RPCs
    def _submit(self, request: dataproc_v1.SubmitJobRequest, context: grpc.ServicerContext) -> dataproc_v1.Job:
        with self._lock:
            self.submit_requests.append(dataproc_v1.SubmitJobRequest(request))
            self._check_scope(request.project_id, request.region, context)
            if request.request_id and request.request_id in self._by_request:
                return self._jobs[self._by_request[request.request_id]].job
            job = dataproc_v1.Job(request.job)
            if not (job.hadoop_job or job.pyspark_job or job.spark_job):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job type not set")
            job_id = job.reference.job_id or str(uuid.uuid4())
            if job_id in self._jobs:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"job {job_id} already exists")
            cluster = self._place(job, context)
            job.reference = dataproc_v1.JobReference(project_id=self.project_id, job_id=job_id)
            job.placement = dataproc_v1.JobPlacement(cluster_name=cluster.name,
                                                     cluster_uuid=cluster.uuid,
                                                     cluster_labels=job.placement.cluster_labels)
            job.job_uuid = str(uuid.uuid4())
            job.driver_output_resource_uri = (
                f"gs://{self.staging_bucket}/google-cloud-dataproc-metainfo/{cluster.uuid}"
                f"/jobs/{job_id}/driveroutput")
            job.driver_control_files_uri = (
                f"gs://{self.staging_bucket}/google-cloud-dataproc-metainfo/{cluster.uuid}/jobs/{job_id}/")
            script = self.next_scripts.popleft() if self.next_scripts else list(self.default_script)
            self._set_state(job, script[0])
            self._jobs[job_id] = _Entry(job, script)
            if request.request_id:
                self._by_request[request.request_id] = job_id
            self.created.append(job_id)
            if self.fail_next_submit_after_create > 0:
                self.fail_next_submit_after_create -= 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset (job was created)")
            return job

    def _entry(self, project_id: str, region: str, job_id: str,
               context: grpc.ServicerContext) -> _Entry:
        self._check_scope(project_id, region, context)
        entry = self._jobs.get(job_id)
        if entry is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"job {job_id} not found")
        return entry  # type: ignore[return-value]

    def _get(self, request: dataproc_v1.GetJobRequest, context: grpc.ServicerContext) -> dataproc_v1.Job:
        with self._lock:
            self.get_calls += 1
            entry = self._entry(request.project_id, request.region, request.job_id, context)
            if not entry.job.done and entry.step + 1 < len(entry.script):
                entry.step += 1
                self._set_state(entry.job, entry.script[entry.step])
            return entry.job

    def _cancel(self, request: dataproc_v1.CancelJobRequest, context: grpc.ServicerContext) -> dataproc_v1.Job:
        with self._lock:
            entry = self._entry(request.project_id, request.region, request.job_id, context)
            if not entry.job.done:
                entry.script = [*entry.script[: entry.step + 1], "CANCEL_PENDING", "CANCELLED"]
            return entry.job

    def job(self, job_id: str) -> dataproc_v1.Job:
        return self._jobs[job_id].job
