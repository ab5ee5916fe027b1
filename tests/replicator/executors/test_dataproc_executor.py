"""Dataproc through the real google-cloud-dataproc client against a local JobController
(gRPC): the exact Job message, state handling, and request_id idempotency."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

pytest.importorskip("google.cloud.dataproc_v1")
pytest.importorskip("grpc")

from google.api_core import exceptions as gexc
from google.cloud import dataproc_v1

from replicator.errors import UsageError
from replicator.executors.dataproc import (
    DataprocSubmitter,
    DataprocTimeout,
    distcp_args,
    distcp_filter_patterns,
    job_id_for,
    make_client,
    request_id_for,
    source_fingerprint,
)
from replicator.options import CopyOptions
from tests.replicator.executors.dataproc_server import Cluster, JobControllerServer

PROJECT, REGION = "data-platform-prod", "europe-west1"
POOL = {"pool": "replication", "env": "prod"}
SRC = "hdfs://nn1.dc1:8020/warehouse/sales.db/orders/dt=2026-11-20"
DST = "gs://dp-lake-replica/warehouse/sales.db/orders/dt=2026-11-20"


@pytest.fixture(scope="module")
def server() -> Iterator[JobControllerServer]:
    srv = JobControllerServer(PROJECT, REGION, [
        Cluster("adhoc-1", {"pool": "adhoc", "env": "prod"}),
        Cluster("repl-7", {"pool": "replication", "env": "prod", "size": "large"}),
        Cluster("repl-dev", {"pool": "replication", "env": "dev"}),
    ])
    srv.default_script = ["PENDING", "RUNNING", "DONE"]  # these tests follow scripted states
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def submitter(server: JobControllerServer) -> DataprocSubmitter:
    server.next_scripts.clear()
    return DataprocSubmitter(
        PROJECT, REGION, cluster_labels=POOL, api_endpoint=f"127.0.0.1:{server.port}",
        insecure=True, job_labels={"team": "data-platform"},
        poll_initial_s=0.01, poll_max_s=0.05, timeout_s=30,
    )


def _rid(*extra: str) -> str:
    return request_id_for("sales.orders", "dt=2026-11-20", "fp-0123", *extra)


def _requests_for(server: JobControllerServer, request_id: str) -> list[dataproc_v1.SubmitJobRequest]:
    return [r for r in server.submit_requests if r.request_id == request_id]


def test_distcp_job_message_is_exact_and_done_is_success(server: JobControllerServer,
                                                          submitter: DataprocSubmitter) -> None:
    opts = CopyOptions(delete=True, workers=20, bandwidth_mbps=400.0,
                       preserve=frozenset({"times", "perms"}), exclude=("*.bak",))
    rid = _rid("distcp")
    result = submitter.submit_distcp(SRC, DST, opts, request_id=rid,
                                     filters_uri="gs://dp-ops/distcp-filters/sales.orders.txt",
                                     labels={"dataset": "sales-orders"})

    job_id = job_id_for(rid, "replicator-distcp")
    expected = dataproc_v1.SubmitJobRequest(
        project_id=PROJECT, region=REGION, request_id=rid,
        job=dataproc_v1.Job(
            reference=dataproc_v1.JobReference(project_id=PROJECT, job_id=job_id),
            placement=dataproc_v1.JobPlacement(cluster_labels=POOL),
            labels={"team": "data-platform", "dataset": "sales-orders"},
            hadoop_job=dataproc_v1.HadoopJob(
                main_class="org.apache.hadoop.tools.DistCp",
                args=["-update", "-delete", "-ppt", "-m", "20", "-bandwidth", "20",
                      "-filters", "sales.orders.txt", "-direct", SRC, DST],
                file_uris=["gs://dp-ops/distcp-filters/sales.orders.txt"],
                properties={"dfs.checksum.combine.mode": "COMPOSITE_CRC"},
            ),
        ),
    )
    sent = _requests_for(server, rid)
    assert len(sent) == 1
    assert sent[0] == expected  # the whole message, field for field

    assert result.ok and result.state == "DONE"
    assert result.job_id == job_id and result.request_id == rid
    assert result.cluster_name == "repl-7"  # the only cluster carrying all pool labels
    job = server.job(job_id)
    assert result.driver_output_resource_uri == job.driver_output_resource_uri
    assert result.driver_output_resource_uri.startswith("gs://") and job_id in result.driver_output_resource_uri
    assert result.states_seen == ["PENDING", "RUNNING", "DONE"]


def test_pyspark_job_runs_our_spark_executor(server: JobControllerServer,
                                             submitter: DataprocSubmitter) -> None:
    opts = CopyOptions(workers=64, checksum=True, include=("*.parquet",), min_age_s=300,
                       marker="_SUCCESS.json")
    rid = _rid("spark")
    result = submitter.submit_spark_copy(
        SRC, DST, opts, request_id=rid,
        main_python_file_uri="gs://dp-ops/replicator/0.1.0/spark.py",
        python_file_uris=["gs://dp-ops/replicator/0.1.0/replicator.zip"],
        properties={"spark.executor.memory": "4g"}, state="/var/lib/replicator/state.db",
    )
    assert result.ok
    (sent,) = _requests_for(server, rid)
    assert sent.job.placement.cluster_labels == POOL
    assert sent.job.reference.job_id == job_id_for(rid, "replicator-spark")
    assert sent.job.pyspark_job == dataproc_v1.PySparkJob(
        main_python_file_uri="gs://dp-ops/replicator/0.1.0/spark.py",
        python_file_uris=["gs://dp-ops/replicator/0.1.0/replicator.zip"],
        args=["copy", SRC, DST, "--executor", "spark", "--workers", "64", "--preserve", "times",
              "--retries", "3", "--max-delete", "50%", "--json", "-q", "--checksum",
              "--include", "*.parquet", "--min-age", "300", "--marker", "_SUCCESS.json",
              "--state", "/var/lib/replicator/state.db"],
        properties={"spark.speculation": "false", "spark.task.maxFailures": "4",
                    "spark.executor.memory": "4g"},
    )
    assert not sent.job.hadoop_job  # exactly one job type


@pytest.mark.parametrize(("script", "state", "ok"), [
    (["PENDING", "SETUP_DONE", "RUNNING", "DONE"], "DONE", True),
    (["PENDING", "RUNNING", "ERROR"], "ERROR", False),
    (["PENDING", "RUNNING", "CANCEL_PENDING", "CANCELLED"], "CANCELLED", False),
    # a restartable job's failed attempt is not the end of it
    (["RUNNING", "ATTEMPT_FAILURE", "RUNNING", "DONE"], "DONE", True),
])
def test_terminal_states(server: JobControllerServer, submitter: DataprocSubmitter,
                         script: list[str], state: str, ok: bool) -> None:
    server.next_scripts.append(script)
    result = submitter.submit_distcp(SRC, DST, request_id=_rid("states", *script))
    assert result.state == state and result.ok is ok
    assert result.states_seen == script  # every transition, from the submit answer on
    assert result.driver_output_resource_uri  # where to read why
    if state == "ERROR":
        assert result.details and "exit code" in result.details


def test_lost_submit_response_is_retried_with_same_request_id_and_runs_once(
        server: JobControllerServer, submitter: DataprocSubmitter) -> None:
    rid = _rid("lost-response")
    created_before = len(server.created)
    server.fail_next_submit_after_create = 1  # the job is created, the answer is lost
    result = submitter.submit_distcp(SRC, DST, request_id=rid)
    assert result.ok
    sent = _requests_for(server, rid)
    assert len(sent) == 2 and sent[0] == sent[1]  # the client retried the same request
    assert len(server.created) == created_before + 1  # one job ran


def test_repeated_submission_returns_the_existing_job(server: JobControllerServer,
                                                      submitter: DataprocSubmitter) -> None:
    rid = _rid("repeat")
    first = submitter.submit_distcp(SRC, DST, request_id=rid)
    n = len(server.created)
    second = submitter.submit_distcp(SRC, DST, request_id=rid)  # e.g. a retried Dagster step
    assert len(server.created) == n
    assert second.job_uuid == first.job_uuid and second.ok
    # a deliberate new attempt (new fingerprint or attempt number) is a new job
    third = submitter.submit_distcp(SRC, DST, request_id=_rid("repeat", "attempt-2"))
    assert len(server.created) == n + 1 and third.job_uuid != first.job_uuid


def test_existing_job_id_is_followed_not_restarted(server: JobControllerServer,
                                                   submitter: DataprocSubmitter) -> None:
    rid = _rid("expired")
    first = submitter.submit_distcp(SRC, DST, request_id=rid)
    server._by_request.pop(rid)  # the server forgot the request id (it expires)
    n = len(server.created)
    again = submitter.submit_distcp(SRC, DST, request_id=rid)  # ALREADY_EXISTS -> GetJob
    assert len(server.created) == n and again.job_uuid == first.job_uuid and again.ok


def test_no_cluster_in_pool_and_timeout_then_cancel(server: JobControllerServer) -> None:
    endpoint = f"127.0.0.1:{server.port}"
    nowhere = DataprocSubmitter(PROJECT, REGION, cluster_labels={"pool": "gpu"},
                                api_endpoint=endpoint, insecure=True, poll_initial_s=0.01)
    with pytest.raises(gexc.NotFound, match="no cluster matches"):
        nowhere.submit_distcp(SRC, DST, request_id=_rid("nowhere"))

    slow = DataprocSubmitter(PROJECT, REGION, cluster_labels=POOL, api_endpoint=endpoint,
                             insecure=True, poll_initial_s=0.01, poll_max_s=0.02, timeout_s=0.2)
    server.next_scripts.append(["PENDING", "RUNNING"])  # never finishes by itself
    rid = _rid("slow")
    with pytest.raises(DataprocTimeout):
        slow.submit_distcp(SRC, DST, request_id=rid)
    job_id = job_id_for(rid, "replicator-distcp")
    slow.cancel(job_id)
    result = slow.wait(job_id, rid)
    assert result.state == "CANCELLED" and not result.ok


def test_client_is_the_real_gapic_client(server: JobControllerServer) -> None:
    client = make_client(REGION, api_endpoint=f"127.0.0.1:{server.port}", insecure=True)
    assert isinstance(client, dataproc_v1.JobControllerClient)
    with pytest.raises(gexc.NotFound):
        client.get_job(project_id=PROJECT, region=REGION, job_id="nope")


# ---------------------------------------------------------------------------- argument building
def test_distcp_refuses_what_it_cannot_honour_and_option_injection() -> None:
    for bad in (CopyOptions(include=("*.csv",)), CopyOptions(min_age_s=60),
                CopyOptions(marker="_DONE"), CopyOptions(copy_links=True)):
        with pytest.raises(UsageError, match="distcp cannot honour"):
            distcp_args(SRC, DST, bad)
    with pytest.raises(UsageError, match="filters file"):
        distcp_args(SRC, DST, CopyOptions(exclude=("*.tmp",)))
    for uri in ("-delete", "/local/path", "hdfs://nn/a b", "hdfs://nn/x\n-update", ""):
        with pytest.raises(UsageError):
            distcp_args(uri, DST, CopyOptions())
    with pytest.raises(UsageError):
        distcp_args(SRC, DST, CopyOptions(), filters_file="-update")
    # no preserve: no -p (a bare -p would mean every attribute); hdfs -> hdfs is not -direct
    assert distcp_args(SRC, "hdfs://nn2/x", CopyOptions(preserve=frozenset(), workers=3)) == \
        ["-update", "-m", "3", SRC, "hdfs://nn2/x"]
    with pytest.raises(UsageError, match="label"):
        DataprocSubmitter(PROJECT, REGION, cluster_labels={"Pool": "x"}, api_endpoint="x", insecure=True)


def test_filter_patterns_mirror_our_filters() -> None:
    root = "hdfs://nn1/data"
    patterns = distcp_filter_patterns(root, ["*.bak", "staging/**", "logs"])
    # Java regex: \Q..\E quotes the root; check them with Python's re after unquoting
    py = [re.compile(p.replace(f"\\Q{root}\\E", re.escape(root))) for p in patterns]

    def excluded(path: str) -> bool:
        return any(p.fullmatch(path) for p in py)

    assert excluded(f"{root}/a/b/x.bak") and excluded(f"{root}/x.bak")
    assert excluded(f"{root}/staging/a/b.csv")
    assert excluded(f"{root}/logs") and excluded(f"{root}/a/logs/x.txt")  # a directory's tree
    assert excluded(f"{root}/a/part-0.parquet._COPYING_")  # writers' temporaries
    assert excluded(f"{root}/a/_temporary/0/part-0")
    assert not excluded(f"{root}/a/b/x.csv")
    assert not excluded(f"{root}/a/staging/b.csv")  # a pattern with '/' is anchored at the root
    assert not excluded("hdfs://other/data/x.csv")


def test_ids_are_stable_and_valid() -> None:
    a = request_id_for("ds", "dt=1", "fp")
    assert a == request_id_for("ds", "dt=1", "fp") != request_id_for("ds", "dt=2", "fp")
    assert re.fullmatch(r"[0-9a-f]{40}", a)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,100}", job_id_for(a, "sales.orders / dt=1"))
    fp = source_fingerprint([("a", 1, 2), ("b", 3, 4)])
    assert fp == source_fingerprint([("b", 3, 4), ("a", 1, 2)]) != source_fingerprint([("a", 1, 3), ("b", 3, 4)])
    with pytest.raises(UsageError):
        request_id_for("")
