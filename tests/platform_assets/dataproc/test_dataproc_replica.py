"""A replica whose target runs its copies on Dataproc, end to end on real parts:

change sensor -> run -> the real JobControllerClient -> the local JobController -> real
DistCp between two real HDFS clusters (or our engine as a PySpark job into a GCS bucket on
fake-gcs-server) -> the destination verified by our engine -> ``copy_finished`` recorded.
And the outcomes that matter in production: the job lands on the cluster whose labels match;
a cluster in ERROR is retried; a job in ERROR fails with the driver's error; a job cancelled
on the cluster fails without retry; a lost SubmitJob answer and a second run re-attach.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from platform_assets.definitions import build_definitions
from platform_assets.runner import apply_sensor_result
from replicator import api
from replicator.filesystems.registry import resolve
from replicator.options import CopyOptions
from tests.fixtures.dataproc import POOL_LABELS, STAGING_BUCKET, DataprocRegion

SENSOR = "replication_change_sensor"

SPEC = """\
version: 1
platform:
  state_path: state/replicator.db
  marker: _SUCCESS.json
  notifier: {{kind: jsonl, outbox: outbox/notifications.jsonl}}
  retries: {{max_retries: {retries}, delay_s: {delay}}}
  dataproc: {{staging: "gs://{staging}/replication", poll_interval_s: 0.3, timeout_s: 600}}
clusters:
  onprem: {{uri: "{onprem}"}}
  dr:
    uri: "{dr}"
    executor:
      kind: dataproc
      project: {project}
      region: {region}
      endpoint: "{endpoint}"
      cluster_labels: {{pool: dr-copy}}
      job: distcp
datasets:
  events:
    source: {{cluster: onprem, path: warehouse/events}}
    partitions: "dt=*"
    targets: [{{cluster: dr, path: events}}]
    exclude: ["*.tmp"]
"""


def make_spec(tmp_path: Path, dataproc: DataprocRegion, onprem: str, dr: str, *,
              retries: int = 0, delay: int = 0) -> Path:
    path = tmp_path / "replication.yaml"
    path.write_text(SPEC.format(retries=retries, delay=delay, staging=STAGING_BUCKET,
                                onprem=onprem, dr=dr, project=dataproc.project,
                                region=dataproc.region, endpoint=dataproc.endpoint))
    return path


def put(tmp_path: Path, uri: str, files: dict[str, bytes]) -> None:
    local = tmp_path / f"seed-{abs(hash(uri))}"
    for rel, data in files.items():
        p = local / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        old = time.time() - 600
        os.utime(p, (old, old))
    report = api.copy(str(local), uri, CopyOptions(state_path=str(tmp_path / "seed.db")))
    assert report.ok, report.failures


def tick(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.SensorResult:
    ctx = dg.build_sensor_context(instance=instance, cursor=None, definitions=defs)
    result = defs.resolve_sensor_def(SENSOR)(ctx)
    assert isinstance(result, dg.SensorResult)
    return result


def materializations(instance: dg.DagsterInstance, key: dg.AssetKey) -> list[dg.AssetMaterialization]:
    records = instance.fetch_materializations(key, limit=100).records
    return [r.asset_materialization for r in records if r.asset_materialization]


def step_failures(instance: dg.DagsterInstance, run_id: str) -> list[dg.EventLogEntry]:
    return [e for e in instance.all_logs(run_id)
            if e.dagster_event and e.dagster_event.event_type_value == "STEP_FAILURE"]


@pytest.fixture
def clusters(hdfs_cluster, hdfs_cluster_b):
    return hdfs_cluster.uri(hdfs_cluster.fresh_dir("onprem")), \
        hdfs_cluster_b.uri(hdfs_cluster_b.fresh_dir("dr"))


def test_sensor_run_dataproc_distcp_verified_copy_finished(tmp_path, dataproc, instance,
                                                          clusters) -> None:
    onprem, dr = clusters
    files = {"dt=2026-11-20/part-0.parquet": os.urandom(150_000),
             "dt=2026-11-20/part-1.parquet": b"tiny",
             "dt=2026-11-20/skip.tmp": b"never copied",
             "dt=2026-11-21/part-0.parquet": os.urandom(20_000)}
    put(tmp_path, f"{onprem}/warehouse/events", files)
    defs = build_definitions(make_spec(tmp_path, dataproc, onprem, dr))
    created = len(dataproc.server.created)

    result = tick(defs, instance)
    assert sorted(r.partition_key for r in result.run_requests) == ["dt=2026-11-20", "dt=2026-11-21"]
    launched = apply_sensor_result(defs, instance, result, sensor_name=SENSOR)
    assert [r.success for r in launched] == [True, True]

    new_jobs = dataproc.server.created[created:]
    assert len(new_jobs) == 2  # one Dataproc job per partition
    for job_id in new_jobs:
        job = dataproc.server.job(job_id)
        assert job.placement.cluster_name == "dr-copy-1"  # the labelled cluster, not adhoc-1
        assert dict(job.placement.cluster_labels) == POOL_LABELS
        assert job.hadoop_job.main_class == "org.apache.hadoop.tools.DistCp"
        assert job.status.state.name == "DONE"

    (m1, _m2) = sorted(materializations(instance, dg.AssetKey(["dr", "events"])),
                      key=lambda m: m.partition)
    meta = m1.metadata
    assert m1.partition == "dt=2026-11-20"
    assert meta["verified"].value is True and meta["copy_finished"].value > 0
    assert meta["executor"].value == "dataproc-distcp"
    assert meta["dataproc_cluster"].value == "dr-copy-1"
    assert meta["files_copied"].value == 2  # DistCp's counters: the .tmp file filtered out
    assert meta["dataproc_job_id"].value in new_jobs

    # byte-identical to the source (our verify: CRC32C on both sides), the filtered file absent
    for part in ("dt=2026-11-20", "dt=2026-11-21"):
        v = api.verify(f"{onprem}/warehouse/events/{part}", f"{dr}/events/{part}",
                       CopyOptions(state_path=str(tmp_path / "v.db"), exclude=("*.tmp", "_SUCCESS.json")))
        assert v.identical, v.to_dict()
    fs, root = resolve(f"{dr}/events/dt=2026-11-20")
    assert fs.stat(fs.join(root, "skip.tmp")) is None
    assert fs.stat(fs.join(root, "_SUCCESS.json")) is not None  # the marker, written last

    # the driver output went into the Dagster log as it came
    logs = [e.user_message for e in instance.all_logs(launched[0].run_id) if e.user_message]
    assert any("driver]" in m and "DistCp" in m for m in logs)

    # a second run of the same partition and version re-attaches to the job that did it
    again = defs.resolve_implicit_job_def_def_for_assets([dg.AssetKey(["dr", "events"])])
    res = again.execute_in_process(instance=instance, partition_key="dt=2026-11-20")
    assert res.success
    assert len(dataproc.server.created) == created + 2  # no new job
    last = materializations(instance, dg.AssetKey(["dr", "events"]))
    assert {m.metadata["dataproc_job_id"].value for m in last if m.partition == "dt=2026-11-20"} \
        == {meta["dataproc_job_id"].value}


def _run_partition(defs: dg.Definitions, instance: dg.DagsterInstance, partition: str):
    job = defs.resolve_implicit_job_def_def_for_assets([dg.AssetKey(["dr", "events"])])
    return job.execute_in_process(instance=instance, partition_key=partition, raise_on_error=False)


def _add(instance: dg.DagsterInstance, partition: str) -> None:
    instance.add_dynamic_partitions("events_copies", [partition])


def test_a_done_job_whose_copy_does_not_verify_is_not_reattached_on_retry(
        tmp_path, dataproc, instance, clusters) -> None:
    """Review finding: a DistCp job that ended DONE but whose destination does not verify
    (here it copied nothing; in production files lost or damaged since) failed the step as
    retryable, and every retry, and every later run of that version, re-attached to the same
    DONE job and failed the same way. Now a DONE job whose copy does not verify is spent and
    the retry submits a new generation (failed before: one job, the retries all failed)."""
    onprem, dr = clusters
    files = {"dt=1/a.bin": os.urandom(5000)}
    put(tmp_path, f"{onprem}/warehouse/events", files)
    defs = build_definitions(make_spec(tmp_path, dataproc, onprem, dr, retries=1))
    _add(instance, "dt=1")
    server = dataproc.server
    created = len(server.created)
    server.next_scripts.append(["PENDING", "RUNNING", "DONE"])  # DONE, nothing copied
    res = _run_partition(defs, instance, "dt=1")
    logs = [e.user_message for e in instance.all_logs(res.run_id) if e.user_message]
    assert res.success, "\n".join(logs[-30:])
    assert len(server.created) == created + 2  # the retry ran a real DistCp job
    fs, root = resolve(f"{dr}/events/dt=1/a.bin")
    with fs.open_read(root) as f:
        assert f.read() == files["dt=1/a.bin"]


def test_cluster_in_error_is_retried_and_lands_once_it_runs(tmp_path, dataproc, instance,
                                                            clusters) -> None:
    onprem, dr = clusters
    put(tmp_path, f"{onprem}/warehouse/events", {"dt=1/a.bin": os.urandom(5000)})
    defs = build_definitions(make_spec(tmp_path, dataproc, onprem, dr, retries=2, delay=2))
    _add(instance, "dt=1")
    server = dataproc.server
    server.cluster("dr-copy-1").state = "ERROR"
    asked = len(server.submit_requests)

    def recover() -> None:  # the cluster comes back after the first refused submission
        deadline = time.monotonic() + 120
        while len(server.submit_requests) == asked and time.monotonic() < deadline:
            time.sleep(0.05)
        server.cluster("dr-copy-1").state = "RUNNING"

    t = threading.Thread(target=recover)
    t.start()
    res = _run_partition(defs, instance, "dt=1")
    t.join()
    assert res.success
    fails = step_failures(instance, res.run_id)
    assert len(fails) == 0  # a retried attempt is a STEP_UP_FOR_RETRY, not a failure
    retried = [e for e in instance.all_logs(res.run_id) if e.dagster_event
               and e.dagster_event.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retried) == 1
    sent = server.submit_requests[asked:]
    assert len(sent) >= 2 and len({r.request_id for r in sent}) == 1  # same request, once created


def test_job_in_error_fails_with_the_drivers_error_and_is_not_retried(tmp_path, dataproc, instance,
                                                                     clusters, hdfs_cluster_b) -> None:
    onprem, dr = clusters
    put(tmp_path, f"{onprem}/warehouse/events", {"dt=1/sub/a.bin": os.urandom(5000)})
    # the destination's partition directory is a file: DistCp cannot write under it
    put(tmp_path, f"{dr}/events", {"dt=1": b"in the way"})
    defs = build_definitions(make_spec(tmp_path, dataproc, onprem, dr, retries=2))
    _add(instance, "dt=1")
    created = len(dataproc.server.created)
    res = _run_partition(defs, instance, "dt=1")
    assert not res.success
    (failure,) = step_failures(instance, res.run_id)  # not retried
    message = failure.dagster_event.event_specific_data.error.message
    assert "ended in ERROR" in message and "driver output" in message
    job = dataproc.server.job(dataproc.server.created[created])
    assert job.status.state.name == "ERROR" and job.status.details.split("[")[1][:9] == "exit code"
    assert len(dataproc.server.created) == created + 1
    assert materializations(instance, dg.AssetKey(["dr", "events"])) == []


def test_job_cancelled_on_the_cluster_fails_without_retry(tmp_path, dataproc, instance,
                                                          clusters) -> None:
    onprem, dr = clusters
    put(tmp_path, f"{onprem}/warehouse/events", {"dt=1/a.bin": os.urandom(5000)})
    defs = build_definitions(make_spec(tmp_path, dataproc, onprem, dr, retries=2))
    _add(instance, "dt=1")
    server = dataproc.server
    created = len(server.created)

    def cancel_when_running() -> None:  # an operator cancels it in the console
        from replicator.executors.dataproc import make_client

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if len(server.created) > created and server.job(server.created[created]).status.state.name == "RUNNING":
                make_client(dataproc.region, api_endpoint=dataproc.endpoint, insecure=True).cancel_job(
                    project_id=dataproc.project, region=dataproc.region, job_id=server.created[created])
                return
            time.sleep(0.02)

    t = threading.Thread(target=cancel_when_running)
    t.start()
    res = _run_partition(defs, instance, "dt=1")
    t.join()
    assert not res.success
    (failure,) = step_failures(instance, res.run_id)
    assert "was cancelled" in failure.dagster_event.event_specific_data.error.message
    assert server.job(server.created[created]).status.state.name == "CANCELLED"
    assert len(server.created) == created + 1


def test_lost_submit_answer_reattaches_to_the_one_job(tmp_path, dataproc, instance, clusters) -> None:
    onprem, dr = clusters
    put(tmp_path, f"{onprem}/warehouse/events", {"dt=1/a.bin": os.urandom(5000)})
    defs = build_definitions(make_spec(tmp_path, dataproc, onprem, dr))
    _add(instance, "dt=1")
    server = dataproc.server
    created, asked = len(server.created), len(server.submit_requests)
    server.fail_next_submit_after_create = 1  # the job is created, the answer is lost
    res = _run_partition(defs, instance, "dt=1")
    assert res.success
    sent = server.submit_requests[asked:]
    assert len(sent) == 2 and sent[0].request_id == sent[1].request_id
    assert len(server.created) == created + 1  # one job ran


PIPES_SPEC = """\
version: 1
platform:
  state_path: state/replicator.db
  marker: _SUCCESS.json
  notifier: {{kind: jsonl, outbox: outbox/notifications.jsonl}}
  retries: {{max_retries: 0, delay_s: 0}}
  dataproc: {{staging: "gs://{staging}/replication", poll_interval_s: 0.5, timeout_s: 900}}
clusters:
  onprem: {{uri: "{onprem}"}}
  lake:
    uri: "gs://dp-lake"
    executor:
      kind: dataproc
      project: {project}
      region: {region}
      endpoint: "{endpoint}"
      cluster_labels: {{pool: dr-copy}}
      job: replicator
datasets:
  events:
    source: {{cluster: onprem, path: warehouse/events}}
    partitions: "dt=*"
    targets: [{{cluster: lake, path: events}}]
"""


def _pipes_job(tmp_path: Path, dataproc: DataprocRegion, instance: dg.DagsterInstance,
               onprem: str, files: dict[str, bytes]):
    """The ``lake/events`` replica's job on the PIPES_SPEC (bucket made, source seeded)."""
    import requests

    r = requests.post(f"{dataproc.gcs_url}/storage/v1/b", json={"name": "dp-lake"}, timeout=10)
    assert r.status_code in (200, 409)
    put(tmp_path, f"{onprem}/warehouse/events", files)
    spec = tmp_path / "replication.yaml"
    spec.write_text(PIPES_SPEC.format(staging=STAGING_BUCKET, onprem=onprem,
                                      project=dataproc.project, region=dataproc.region,
                                      endpoint=dataproc.endpoint))
    defs = build_definitions(spec)
    instance.add_dynamic_partitions("events_copies", ["dt=1"])
    return defs.resolve_implicit_job_def_def_for_assets([dg.AssetKey(["lake", "events"])])


def test_replicator_job_runs_our_engine_on_spark_and_reports_through_pipes(
        tmp_path, dataproc, instance, clusters) -> None:
    onprem, _ = clusters
    files = {"dt=1/part-0.parquet": os.urandom(120_000), "dt=1/b/c.csv": b"a,b\n"}
    created = len(dataproc.server.created)
    job = _pipes_job(tmp_path, dataproc, instance, onprem, files)
    res = job.execute_in_process(instance=instance, partition_key="dt=1", raise_on_error=False)
    logs = [e.user_message for e in instance.all_logs(res.run_id) if e.user_message]
    assert res.success, "\n".join(logs[-30:])

    (job_id,) = dataproc.server.created[created:]
    dp_job = dataproc.server.job(job_id)
    assert dp_job.pyspark_job.main_python_file_uri.endswith("dataproc_job.py")
    assert "--dagster-pipes-context" in dp_job.pyspark_job.args  # Pipes bootstrap, by the client
    assert dp_job.placement.cluster_name == "dr-copy-1"
    (m,) = materializations(instance, dg.AssetKey(["lake", "events"]))
    assert m.metadata["executor"].value == "dataproc-replicator"
    assert m.metadata["files_copied"].value == 2  # the engine's report, sent back through Pipes
    assert m.metadata["verified"].value is True
    assert any("replicator" in msg for msg in logs if "copied" in msg or "copy" in msg)
    v = api.verify(f"{onprem}/warehouse/events/dt=1", "gs://dp-lake/events/dt=1",
                   CopyOptions(state_path=str(tmp_path / "v.db"), exclude=("_SUCCESS.json",)))
    assert v.identical and v.files_compared == 2


def test_a_replicator_job_that_failed_under_an_earlier_run_is_not_handed_to_the_next(
        tmp_path, dataproc, instance, clusters) -> None:
    """Review finding: the replicator job's request id was (dataset, target, partition,
    fingerprint) only, and the server keeps a request id's job for good, so once a job of that
    key had ended in ERROR every later run got that failed job back: the partition could not
    be copied until its source changed. A later run now submits a new generation (failed
    before: one job created, the second run failed with the first job's error). The jobs
    are scripted (no spark-submit): what matters is which job each run gets."""
    onprem, _ = clusters
    job = _pipes_job(tmp_path, dataproc, instance, onprem, {"dt=1/a.csv": b"a,b\n"})
    server = dataproc.server
    created, asked = len(server.created), len(server.submit_requests)
    server.next_scripts.append(["PENDING", "RUNNING", "ERROR"])  # e.g. the image was broken
    first = job.execute_in_process(instance=instance, partition_key="dt=1", raise_on_error=False)
    assert not first.success
    # the next job "succeeds" without copying (scripted): this run must submit it, not get
    # the failed one back; our verify then finds the destination empty
    server.next_scripts.append(["PENDING", "RUNNING", "DONE"])
    second = job.execute_in_process(instance=instance, partition_key="dt=1", raise_on_error=False)
    assert len(server.created) == created + 2  # a new job, not the failed one again
    assert len({q.request_id for q in server.submit_requests[asked:]}) == 2
    (failure,) = step_failures(instance, second.run_id)
    message = str(failure.dagster_event.event_specific_data.error)  # with its causes
    assert "ended in ERROR" not in message and "differs from the source" in message
    assert server.job(server.created[-1]).labels["dagster-run-id"] == second.run_id


RUN_ONE = """\
import sys
import dagster as dg
from platform_assets.definitions import build_definitions

defs = build_definitions(sys.argv[1])
job = defs.resolve_implicit_job_def_def_for_assets([dg.AssetKey(["dr", "events"])])
with dg.DagsterInstance.get() as instance:
    instance.add_dynamic_partitions("events_copies", ["dt=1"])
    res = job.execute_in_process(instance=instance, partition_key="dt=1", raise_on_error=False)
    print("RUN", res.run_id, res.success, flush=True)
"""


def test_a_terminated_dagster_run_cancels_its_dataproc_job(tmp_path, dataproc, dagster_home,
                                                         clusters) -> None:
    import signal
    import subprocess
    import sys

    onprem, dr = clusters
    put(tmp_path, f"{onprem}/warehouse/events", {"dt=1/a.bin": os.urandom(5000)})
    spec = make_spec(tmp_path, dataproc, onprem, dr)
    server = dataproc.server
    created = len(server.created)
    script = tmp_path / "run_one.py"
    script.write_text(RUN_ONE)
    log = tmp_path / "run.log"
    repo = Path(__file__).resolve().parents[3]
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(script), str(spec)], cwd=repo, stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(repo)})
    try:
        deadline = time.monotonic() + 300
        while not (len(server.created) > created
                   and server.job(server.created[created]).status.state.name == "RUNNING"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # what the run launcher does to terminate a run
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    job = server.wait_job(server.created[created], timeout=120)
    text = log.read_text()
    assert job.status.state.name == "CANCELLED", text[-3000:]
    assert "cancelling job" in text
    assert len(server.created) == created + 1


def test_a_done_replicator_job_whose_copy_no_longer_verifies_is_not_handed_to_the_next_run(
        tmp_path, dataproc, instance, clusters) -> None:
    """Review finding: a ``job: replicator`` job that ended DONE was re-used by every later
    run of the same (replica, partition, fingerprint), even when its copy did not verify (or
    the replica was damaged or removed since): each run got the DONE job back and failed
    "differs from the source" until the source changed (the distcp kind had this fixed; this
    kind had not: before, the second run created no job). Scripted jobs (no spark-submit)."""
    onprem, _ = clusters
    job = _pipes_job(tmp_path, dataproc, instance, onprem, {"dt=1/a.csv": b"a,b\n"})
    server = dataproc.server
    created = len(server.created)
    server.next_scripts.append(["PENDING", "RUNNING", "DONE"])  # "succeeds" without copying
    first = job.execute_in_process(instance=instance, partition_key="dt=1", raise_on_error=False)
    assert not first.success and len(server.created) == created + 1
    server.next_scripts.append(["PENDING", "RUNNING", "DONE"])
    second = job.execute_in_process(instance=instance, partition_key="dt=1", raise_on_error=False)
    assert len(server.created) == created + 2  # a new generation, not the spent DONE job
    assert server.job(server.created[-1]).labels["dagster-run-id"] == second.run_id
