"""A local Dataproc JobController that runs the jobs it is given, for tests and demos.

SubmitJob, GetJob, CancelJob and ListJobs over real gRPC, serving the messages of
``google.cloud.dataproc_v1`` (proto-plus ``serialize``/``deserialize`` stand in for
generated stubs), so the real ``JobControllerClient`` (and dagster-gcp's
``PipesDataprocJobClient``) talk to it as to the service.

Behaviour modelled on the service:

* placement by ``cluster_labels``: the job goes to a RUNNING cluster of the pool whose labels
  include all of them (``cluster_name`` pins one). No cluster with those labels: NOT_FOUND;
  matching clusters none of which is RUNNING (e.g. in ERROR): FAILED_PRECONDITION, as the
  service refuses jobs for a cluster that cannot accept them;
* ``request_id`` idempotency: a repeated request id returns the job already created; a job id
  used before, with another request id, is ALREADY_EXISTS; no job id given: the server makes
  one, equal to the job's UUID (what the service does, and what ``PipesDataprocJobClient``
  relies on when it polls ``GetJob(job_uuid)``);
* jobs really run, one child process each, on the cluster's "image" (this machine):
  a ``hadoop_job`` runs its ``main_class`` (e.g. ``org.apache.hadoop.tools.DistCp``) in a
  JVM with the ``hadoop`` Maven bundle on the classpath, the job's ``properties`` as ``-D``
  generic options and the cluster's own Hadoop properties (the local MapReduce runner, so
  real DistCp against real HDFS); a ``pyspark_job`` runs ``spark-submit --master local[2]``
  with the job's main file and arguments (PYTHONPATH holds this repository, as an
  initialization action would install the replicator wheel). ``file_uris`` are fetched
  into the job's working directory. Exit 0: DONE; otherwise ERROR, with ``details``
  naming the exit code and the driver's last error line (as Dataproc's "Job failed with
  message [...]"). CancelJob: CANCEL_PENDING, the process group is killed, CANCELLED;
* the driver's output (stdout and stderr) is written where ``driver_output_resource_uri``
  says, as Dataproc does: objects ``<uri>.000000000``, ``<uri>.000000001``, ... in the
  staging bucket on a GCS endpoint (fake-gcs-server; ``gcs_endpoint``), a new chunk every
  ``chunk_interval_s`` while the job runs, so a client can follow it.

Test controls: ``next_scripts`` (states for the next jobs instead of running them),
``fail_next_submit_after_create`` (create the job, then answer UNAVAILABLE: a lost
response), ``submit_requests`` (every request as received), ``created`` (jobs created).

    python -m scripts.dataproc serve --project P --region R --gcs http://127.0.0.1:N \\
        --cluster dr-copy-1:pool=dr-copy --cluster adhoc-1:pool=adhoc
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import grpc
from google.cloud import dataproc_v1
from google.protobuf import timestamp_pb2

from replicator.executors.distcp import LOG4J
from scripts.jvm import java_tool  # the same log records as our DistCp executor

SERVICE = "google.cloud.dataproc.v1.JobController"
State = dataproc_v1.JobStatus.State
REPO = Path(__file__).resolve().parents[1]
TERMINAL = ("DONE", "ERROR", "CANCELLED")


@dataclass
class Cluster:
    name: str
    labels: dict[str, str]
    state: str = "RUNNING"  # RUNNING | ERROR | ... (only RUNNING clusters take jobs)
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    hadoop_properties: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # the image's environment


@dataclass
class _Entry:
    job: dataproc_v1.Job
    script: list[str] | None  # scripted states (tests of the client); None: the job runs
    cluster: Cluster
    step: int = 0
    proc: subprocess.Popen | None = None
    cancel: bool = False


def _now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


class JobControllerServer:
    def __init__(self, project_id: str, region: str, clusters: list[Cluster],
                 staging_bucket: str = "dataproc-staging-test", *,
                 gcs_endpoint: str | None = None, work_dir: str | Path | None = None,
                 java_heap: str = "384m", chunk_interval_s: float = 0.5) -> None:
        self.project_id = project_id
        self.region = region
        self.clusters = clusters
        self.staging_bucket = staging_bucket
        self.gcs_endpoint = gcs_endpoint.rstrip("/") if gcs_endpoint else None
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="dataproc-"))
        self.java_heap = java_heap
        self.chunk_interval_s = chunk_interval_s
        self.next_scripts: deque[list[str]] = deque()
        self.default_script: list[str] | None = None  # None: jobs run for real
        self.fail_next_submit_after_create = 0
        self.submit_requests: list[dataproc_v1.SubmitJobRequest] = []
        self.get_calls = 0
        self.created: list[str] = []
        self._jobs: dict[str, _Entry] = {}
        self._by_request: dict[str, str] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._server: grpc.Server | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
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
            "ListJobs": grpc.unary_unary_rpc_method_handler(
                self._list, request_deserializer=dataproc_v1.ListJobsRequest.deserialize,
                response_serializer=dataproc_v1.ListJobsResponse.serialize),
        })
        server.add_generic_rpc_handlers((handler,))
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        if self.gcs_endpoint:
            self._ensure_bucket()
        return self.endpoint

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        with self._lock:
            running = [e for e in self._jobs.values() if e.proc is not None]
            for e in running:
                e.cancel = True
                _kill(e.proc)
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None
        for t in self._threads:
            t.join(timeout=30)

    def cluster(self, name: str) -> Cluster:
        return next(c for c in self.clusters if c.name == name)

    def job(self, job_id: str) -> dataproc_v1.Job:
        with self._lock:
            return dataproc_v1.Job(self._jobs[job_id].job)

    def wait_job(self, job_id: str, timeout: float = 600.0) -> dataproc_v1.Job:
        """Until the job is in a final state (for tests and demos)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job.done:
                return job
            time.sleep(0.1)
        raise TimeoutError(f"job {job_id} still running after {timeout}s")

    # ------------------------------------------------------------------ helpers
    def _check_scope(self, project_id: str, region: str, context: grpc.ServicerContext) -> None:
        if project_id != self.project_id or region != self.region:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"no such project/region {project_id}/{region}")

    def _place(self, job: dataproc_v1.Job, context: grpc.ServicerContext) -> Cluster:
        wanted = dict(job.placement.cluster_labels)
        matching = [c for c in self.clusters
                    if (not job.placement.cluster_name or c.name == job.placement.cluster_name)
                    and all(c.labels.get(k) == v for k, v in wanted.items())]
        if not matching:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no cluster matches labels {wanted}")
        running = [c for c in matching if c.state == "RUNNING"]
        if not running:
            states = ", ".join(f"'{c.name}' is in state {c.state}" for c in matching)
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"Unable to submit job: cluster {states} and cannot accept jobs")
        return running[0]

    def _set_state(self, job: dataproc_v1.Job, state: str, details: str = "") -> None:
        if job.status.state != State.STATE_UNSPECIFIED:
            job.status_history.append(job.status)
        if state == "ERROR" and not details:
            details = "Job failed with message [exit code 1]"
        job.status = dataproc_v1.JobStatus(state=State[state], details=details,
                                           state_start_time=_now())
        job.done = state in TERMINAL

    # ------------------------------------------------------------------ RPCs
    def _submit(self, request: dataproc_v1.SubmitJobRequest,
                context: grpc.ServicerContext) -> dataproc_v1.Job:
        with self._lock:
            self.submit_requests.append(dataproc_v1.SubmitJobRequest(request))
            self._check_scope(request.project_id, request.region, context)
            if request.request_id and request.request_id in self._by_request:
                return self._jobs[self._by_request[request.request_id]].job
            job = dataproc_v1.Job(request.job)
            if not (job.hadoop_job or job.pyspark_job or job.spark_job):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job type not set")
            job.job_uuid = str(uuid.uuid4())
            job_id = job.reference.job_id or job.job_uuid
            if job_id in self._jobs:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"job {job_id} already exists")
            cluster = self._place(job, context)
            job.reference = dataproc_v1.JobReference(project_id=self.project_id, job_id=job_id)
            job.placement = dataproc_v1.JobPlacement(cluster_name=cluster.name,
                                                     cluster_uuid=cluster.uuid,
                                                     cluster_labels=job.placement.cluster_labels)
            base = f"google-cloud-dataproc-metainfo/{cluster.uuid}/jobs/{job_id}"
            job.driver_output_resource_uri = f"gs://{self.staging_bucket}/{base}/driveroutput"
            job.driver_control_files_uri = f"gs://{self.staging_bucket}/{base}/"
            if self.next_scripts:
                script: list[str] | None = self.next_scripts.popleft()
            else:
                script = list(self.default_script) if self.default_script else None
            entry = _Entry(job, script, cluster)
            self._set_state(job, script[0] if script else "PENDING")
            self._jobs[job_id] = entry
            if request.request_id:
                self._by_request[request.request_id] = job_id
            self.created.append(job_id)
            if script is None:
                t = threading.Thread(target=self._run, args=(entry,), name=f"job-{job_id}",
                                     daemon=True)
                self._threads.append(t)
                t.start()
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

    def _get(self, request: dataproc_v1.GetJobRequest,
             context: grpc.ServicerContext) -> dataproc_v1.Job:
        with self._lock:
            self.get_calls += 1
            entry = self._entry(request.project_id, request.region, request.job_id, context)
            if entry.script is not None and not entry.job.done \
                    and entry.step + 1 < len(entry.script):
                entry.step += 1
                self._set_state(entry.job, entry.script[entry.step])
            return entry.job

    def _list(self, request: dataproc_v1.ListJobsRequest,
              context: grpc.ServicerContext) -> dataproc_v1.ListJobsResponse:
        """ListJobs with the service's ``filter`` (``labels.K = V`` and ``status.state =
        ACTIVE|NON_ACTIVE`` terms joined by AND), one page, newest first."""
        terms = []
        for term in (t.strip() for t in request.filter.split(" AND ") if t.strip()):
            field_, eq, value = (x.strip() for x in term.partition("="))
            if not eq or not (field_.startswith("labels.") or field_ == "status.state"):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad filter term {term!r}")
            terms.append((field_, value))

        def matches(job: dataproc_v1.Job) -> bool:
            for field_, value in terms:
                if field_ == "status.state":
                    if (value == "ACTIVE") == job.done:
                        return False
                elif job.labels.get(field_.removeprefix("labels.")) != value:
                    return False
            return True

        with self._lock:
            self._check_scope(request.project_id, request.region, context)
            jobs = [dataproc_v1.Job(self._jobs[j].job) for j in reversed(self.created)
                    if matches(self._jobs[j].job)]
        return dataproc_v1.ListJobsResponse(jobs=jobs)

    def _cancel(self, request: dataproc_v1.CancelJobRequest,
                context: grpc.ServicerContext) -> dataproc_v1.Job:
        with self._lock:
            entry = self._entry(request.project_id, request.region, request.job_id, context)
            if entry.job.done:
                return entry.job
            if entry.script is not None:
                entry.script = [*entry.script[: entry.step + 1], "CANCEL_PENDING", "CANCELLED"]
                return entry.job
            entry.cancel = True
            self._set_state(entry.job, "CANCEL_PENDING")
            if entry.proc is not None:
                _kill(entry.proc)
            return entry.job

    # ------------------------------------------------------------------ running jobs
    def _run(self, entry: _Entry) -> None:
        job_id = entry.job.reference.job_id
        work = self.work_dir / job_id
        work.mkdir(parents=True, exist_ok=True)
        out_path = work / "driveroutput"
        try:
            cmd, env = self._command(entry, work)
        except Exception as exc:  # the job cannot start: it fails, with why
            out_path.write_text(f"ERROR: {exc}\n")
            self._upload_chunks(entry, out_path, 0, 0)
            with self._lock:
                self._set_state(entry.job, "ERROR", f"Job failed with message [{exc}]")
            return
        with self._lock:
            if entry.cancel:
                self._set_state(entry.job, "CANCELLED")
                return
            self._set_state(entry.job, "SETUP_DONE")
            with open(out_path, "wb") as out:
                entry.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                              cwd=work, env=env, start_new_session=True)
            self._set_state(entry.job, "RUNNING")
        sent, index = 0, 0
        while entry.proc.poll() is None:
            time.sleep(self.chunk_interval_s)
            sent, index = self._upload_chunks(entry, out_path, sent, index)
        code = entry.proc.wait()
        self._upload_chunks(entry, out_path, sent, index)
        with self._lock:
            if entry.cancel:
                self._set_state(entry.job, "CANCELLED")
            elif code == 0:
                self._set_state(entry.job, "DONE")
            else:
                why = _last_error(out_path.read_text(errors="replace"))
                self._set_state(entry.job, "ERROR",
                                f"Job failed with message [exit code {code}{': ' + why if why else ''}]")

    def _command(self, entry: _Entry, work: Path) -> tuple[list[str], dict[str, str]]:
        job, cluster = entry.job, entry.cluster
        env = dict(os.environ)
        env.update(cluster.env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        if self.gcs_endpoint:
            env.setdefault("STORAGE_EMULATOR_HOST", self.gcs_endpoint)
        if job.hadoop_job:
            hj = job.hadoop_job
            for uri in hj.file_uris:
                self._fetch(uri, work)
            from scripts.maven import classpath

            (work / "log4j.properties").write_text(LOG4J)
            props = {
                "mapreduce.framework.name": "local",
                "mapreduce.jobtracker.staging.root.dir": str(work / "staging"),
                "mapreduce.cluster.local.dir": str(work / "local"),
                "hadoop.tmp.dir": str(work / "tmp"),
            }
            props.update(cluster.hadoop_properties)
            props.update(dict(hj.properties))
            jars = [str(self._fetch(u, work)) for u in hj.jar_file_uris]
            cp = os.pathsep.join([str(work), *jars, classpath("hadoop")])
            if not hj.main_class:
                raise ValueError("hadoop_job: only main_class jobs are supported here")
            cmd = [java_tool("java"), f"-Xmx{self.java_heap}", "-Dlog4j.configuration=log4j.properties",
                   "-cp", cp, hj.main_class, *[f"-D{k}={v}" for k, v in props.items()],
                   *hj.args]
            return cmd, env
        if job.pyspark_job:
            pj = job.pyspark_job
            main = self._fetch(pj.main_python_file_uri, work)
            py_files = [str(self._fetch(u, work)) for u in pj.python_file_uris]
            for uri in pj.file_uris:
                self._fetch(uri, work)
            submit = Path(sys.executable).parent / "spark-submit"
            conf = {"spark.ui.enabled": "false", "spark.driver.memory": "512m",
                    "spark.local.dir": str(work / "spark-local")}
            conf.update(dict(pj.properties))
            cmd = [str(submit), "--master", "local[2]"]
            for k, v in conf.items():
                cmd += ["--conf", f"{k}={v}"]
            if py_files:
                cmd += ["--py-files", ",".join(py_files)]
            cmd += [str(main), *pj.args]
            env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            env["PYSPARK_PYTHON"] = sys.executable
            env["PYSPARK_DRIVER_PYTHON"] = sys.executable
            return cmd, env
        raise ValueError("only hadoop_job and pyspark_job run here")

    def _fetch(self, uri: str, work: Path) -> Path:
        """A job's file URI into its working directory (file:// or gs:// on the emulator)."""
        parts = urlsplit(uri)
        name = unquote(parts.path.rstrip("/").rsplit("/", 1)[-1])
        if parts.scheme == "file":
            src = Path(unquote(parts.path))
            if not src.exists():
                raise FileNotFoundError(f"{uri} not found")
            return src
        if parts.scheme == "gs" and self.gcs_endpoint:
            import requests

            r = requests.get(f"{self.gcs_endpoint}/storage/v1/b/{quote(parts.netloc, safe='')}/o/"
                             f"{quote(parts.path.lstrip('/'), safe='')}", params={"alt": "media"},
                             timeout=60)
            if r.status_code == 404:
                raise FileNotFoundError(f"{uri} not found")
            r.raise_for_status()
            (work / name).write_bytes(r.content)
            return work / name
        raise ValueError(f"cannot fetch {uri!r} (file:// or gs:// only)")

    def _ensure_bucket(self) -> None:
        import requests

        r = requests.post(f"{self.gcs_endpoint}/storage/v1/b", json={"name": self.staging_bucket},
                          timeout=30)
        if r.status_code not in (200, 409):
            raise RuntimeError(f"could not create the staging bucket: {r.status_code} {r.text}")

    def _upload_chunks(self, entry: _Entry, path: Path, sent: int, index: int) -> tuple[int, int]:
        """New driver output since ``sent`` bytes as the next ``driveroutput.NNNNNNNNN``."""
        if not self.gcs_endpoint:
            return sent, index
        import requests

        with open(path, "rb") as f:
            f.seek(sent)
            data = f.read()
        if not data:
            return sent, index
        key = urlsplit(entry.job.driver_output_resource_uri).path.lstrip("/") + f".{index:09d}"
        with contextlib.suppress(requests.RequestException):
            r = requests.post(f"{self.gcs_endpoint}/upload/storage/v1/b/{self.staging_bucket}/o",
                              params={"uploadType": "media", "name": key}, data=data,
                              headers={"Content-Type": "text/plain"}, timeout=60)
            if r.ok:
                return sent + len(data), index + 1
        return sent, index


def _kill(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _last_error(text: str) -> str:
    """The driver's last error line (DistCp's ``ERROR ...``, a Python exception, ...)."""
    found = ""
    for line in text.splitlines():
        s = line.strip()
        if s.startswith(("ERROR", "Exception", "Error:", "replicator:")) or \
                (s.split(":", 1)[0].endswith(("Error", "Exception")) and ":" in s):
            found = s
    return found[:500]


# ---------------------------------------------------------------------------- CLI
def _parse_cluster(text: str) -> Cluster:
    name, _, labels = text.partition(":")
    pairs = dict(p.split("=", 1) for p in labels.split(",") if p)
    return Cluster(name, pairs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.dataproc",
                                     description="a local Dataproc JobController that runs jobs")
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="serve until interrupted; prints the endpoint as JSON")
    serve.add_argument("--project", required=True)
    serve.add_argument("--region", required=True)
    serve.add_argument("--gcs", help="GCS endpoint for driver output (fake-gcs-server)")
    serve.add_argument("--bucket", default="dataproc-staging")
    serve.add_argument("--cluster", action="append", default=[], type=_parse_cluster,
                       help="NAME:k=v,k=v (repeat)")
    args = parser.parse_args(argv)
    server = JobControllerServer(args.project, args.region, args.cluster, args.bucket,
                                 gcs_endpoint=args.gcs)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    print(json.dumps({"endpoint": server.start()}), flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
