"""The local JobController runs what it is given: real DistCp between two real HDFS clusters,
on the cluster the labels choose, with the driver output in GCS as Dataproc writes it."""

from __future__ import annotations

import os

import pytest
from google.api_core import exceptions as gexc

from replicator import api
from replicator.executors.dataproc import DataprocSubmitter, request_id_for
from replicator.executors.distcp import parse_counters
from replicator.options import CopyOptions
from tests.fixtures.dataproc import POOL_LABELS, DataprocRegion
from tests.platform_assets.dataproc.test_dataproc_replica import put


def _submitter(dataproc: DataprocRegion, labels=None) -> DataprocSubmitter:
    return DataprocSubmitter(dataproc.project, dataproc.region,
                             cluster_labels=labels or POOL_LABELS,
                             api_endpoint=dataproc.endpoint, insecure=True,
                             poll_initial_s=0.2, poll_max_s=0.5, timeout_s=300)


def _driver_output(job) -> str:
    from google.cloud import storage

    bucket, _, key = job.driver_output_resource_uri[5:].partition("/")
    blobs = sorted(storage.Client().list_blobs(bucket, prefix=key + "."), key=lambda b: b.name)
    return "".join(b.download_as_bytes().decode() for b in blobs)


def test_distcp_job_really_copies_between_clusters(tmp_path, dataproc, hdfs_cluster,
                                                  hdfs_cluster_b) -> None:
    files = {"a/part-0": os.urandom(100_000), "b.csv": b"x,y\n1,2\n"}
    src, dst = hdfs_cluster.uri(hdfs_cluster.fresh_dir("dp")), hdfs_cluster_b.uri(hdfs_cluster_b.fresh_dir("dp"))
    put(tmp_path, src, files)
    result = _submitter(dataproc).submit_distcp(
        src, dst, CopyOptions(workers=2), request_id=request_id_for("t", src))
    job = dataproc.server.job(result.job_id)
    out = _driver_output(job)
    assert result.ok, out[-3000:]
    assert result.cluster_name == "dr-copy-1"  # the cluster with the pool's labels
    assert parse_counters(out)["DistCp Counters"]["Files Copied"] == 2  # DistCp's own word
    v = api.verify(src, dst, CopyOptions(state_path=str(tmp_path / "v.db")))
    assert v.identical and v.files_compared == 2


def test_cluster_in_error_refuses_and_a_failing_job_reports_the_drivers_error(
        tmp_path, dataproc, hdfs_cluster) -> None:
    dataproc.server.cluster("dr-copy-1").state = "ERROR"
    with pytest.raises(gexc.FailedPrecondition, match="ERROR"):
        _submitter(dataproc).submit_distcp("hdfs://127.0.0.1:1/x", "hdfs://127.0.0.1:1/y",
                                           request_id=request_id_for("t", "err-cluster"))
    dataproc.server.cluster("dr-copy-1").state = "RUNNING"
    missing = hdfs_cluster.uri(hdfs_cluster.fresh_dir("nothing-here"))
    result = _submitter(dataproc).submit_distcp(missing, missing + "-copy",
                                                request_id=request_id_for("t", missing))
    assert result.state == "ERROR" and not result.ok
    assert "exit code" in result.details and "doesn't exist" in result.details  # DistCp's own message
